package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAllowNetEndToEnd: policy.allow_net through the real server. A policy
// that sends to the URL a request names (the SSRF shape allow_net exists for)
// reaches the listed host and nothing else, and the denial is the policy's
// fail-closed one.
func TestAllowNetEndToEnd(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "send.rego"), `package envoy.authz

allow if http.send({"method": "GET", "url": input.attributes.request.http.headers["x-url"], "cache": false, "timeout": "5s"}).body.ok
`)
	cases := []struct {
		name, allowNet, url string
		allowed             bool
		reason              string
		hits                int64
	}{
		{"listed host", "[127.0.0.1]", "http://127.0.0.1:" + port, true, "", 1},
		{"unlisted name for the same address", "[127.0.0.1]", "http://localhost:" + port, false, "policy_undefined", 0},
		{"no host allowed", "[]", "http://127.0.0.1:" + port, false, "policy_undefined", 0},
		{"not set: any host, as in OPA-Envoy", "", "http://localhost:" + port, true, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fmt.Sprintf("policy:\n  paths: [%q]\n", dir)
			if tc.allowNet != "" {
				cfg += "  allow_net: " + tc.allowNet + "\n"
			}
			g := startGatehouse(t, cfg, true)
			before := hits.Load()
			d := decide(t, g.client(t), envoyRequest("198.51.100.7", "api.example.com", "/", map[string]string{"x-url": tc.url}))
			if d.allowed != tc.allowed || d.reason != tc.reason {
				t.Fatalf("got allowed=%v %q, want allowed=%v %q (%s)", d.allowed, d.reason, tc.allowed, tc.reason, d.body)
			}
			if got := hits.Load() - before; got != tc.hits {
				t.Fatalf("the server received %d requests, want %d", got, tc.hits)
			}
			// The log is written on a short tick: wait for the warning.
			warning := map[string]string{"[]": "policy.allow_net allows no host", "": "policy.allow_net is not set"}[tc.allowNet]
			if warning != "" {
				eventually(t, 5*time.Second, "the warning "+warning+" in the log", func() bool {
					return strings.Contains(g.logText(), warning)
				})
			}
		})
	}
}
