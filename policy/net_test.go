package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// TestAllowNet: the network built-ins reach only the hosts policy.allow_net
// lists (the URL's host, without its port, as OPA compares it); with no list
// they reach nothing, and the key server on loopback is never contacted.
func TestAllowNet(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	const sendPolicy = `package envoy.authz

allow := http.send({"method": "GET", "url": input.url, "cache": false, "timeout": "5s"}).body.ok
`
	const lookupPolicy = `package envoy.authz

allow := count(net.lookup_ip_addr(input.host)) > 0
`
	cases := []struct {
		name     string
		allowNet []string
		policy   string
		input    string
		allowed  bool
		errText  string // the evaluation error holds it ("" for no error)
		hits     int64  // requests the server receives
	}{
		{"listed host", []string{"127.0.0.1"}, sendPolicy, `{"url": "http://127.0.0.1:` + port + `"}`, true, "", 1},
		{"any host", []string{AllowAnyHost}, sendPolicy, `{"url": "http://127.0.0.1:` + port + `"}`, true, "", 1},
		{"not configured allows any host, as OPA", nil, sendPolicy, `{"url": "http://127.0.0.1:` + port + `"}`, true, "", 1},
		{"empty list allows nothing", []string{}, sendPolicy, `{"url": "http://127.0.0.1:` + port + `"}`, false, "disallowed host: 127.0.0.1", 0},
		{"another name for a listed address", []string{"127.0.0.1"}, sendPolicy, `{"url": "http://localhost:` + port + `"}`, false, "disallowed host: localhost", 0},
		{"ports are not matched", []string{"127.0.0.1"}, sendPolicy, `{"url": "http://` + testutil.ClosedAddr(t) + `"}`, false, "connection refused", 0},
		{"lookup of an unlisted name", []string{"127.0.0.1"}, lookupPolicy, `{"host": "localhost"}`, false, "disallowed host: localhost", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			e, _ := newTestEngine(t, map[string]string{"policy.rego": tc.policy}, Options{AllowNet: tc.allowNet, StrictBuiltinErrors: true})
			d, err := e.Eval(context.Background(), mustInput(t, tc.input))
			if d.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (err %v)", d.Allowed, tc.allowed, err)
			}
			switch {
			case tc.errText == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.errText != "" && (err == nil || !strings.Contains(err.Error(), tc.errText)):
				t.Fatalf("error %v, want one containing %q", err, tc.errText)
			case tc.errText != "" && evalReason(t, err) != ReasonError:
				t.Fatalf("reason %q, want %q", evalReason(t, err), ReasonError)
			}
			if got := hits.Load() - before; got != tc.hits {
				t.Fatalf("the server received %d requests, want %d", got, tc.hits)
			}
		})
	}
}

// TestAllowNetWarning: a policy calling network built-ins with no host
// allowed is reported when it loads, naming the key to set; with hosts listed
// (or no such call) nothing is said.
func TestAllowNetWarning(t *testing.T) {
	cases := []struct {
		name     string
		policy   string
		allowNet []string
		warn     string // "" for none
	}{
		{"http.send with no host allowed", "package envoy.authz\n\nallow if http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200\n", []string{}, "policy.allow_net allows no host"},
		{"lookup inside a function, no host allowed", "package envoy.authz\n\nips(h) := net.lookup_ip_addr(h)\n\nallow if count(ips(\"x\")) > 0\n", []string{}, "policy.allow_net allows no host"},
		{"http.send without allow_net", "package envoy.authz\n\nallow if http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200\n", nil, "policy.allow_net is not set"},
		{"http.send with a host listed", "package envoy.authz\n\nallow if http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200\n", []string{"127.0.0.1"}, ""},
		{"http.send with any host, explicitly", "package envoy.authz\n\nallow if http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200\n", []string{AllowAnyHost}, ""},
		{"no network built-in", "package envoy.authz\n\nallow := true\n", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.LockedBuffer
			newTestEngine(t, map[string]string{"policy.rego": tc.policy}, Options{AllowNet: tc.allowNet, Logger: logs.TextLogger(slog.LevelInfo)})
			for _, w := range []string{"policy.allow_net allows no host", "policy.allow_net is not set"} {
				if got := logs.Contains(w); got != (w == tc.warn) {
					t.Fatalf("warning %q logged = %v, want %v\n%s", w, got, w == tc.warn, logs.String())
				}
			}
		})
	}
}
