package test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// collector is a decision log service on loopback: it decodes OPA's uploads
// (gzip-compressed JSON arrays of events) and keeps the events by decision
// id; while down it answers 503 and keeps nothing.
type collector struct {
	*httptest.Server
	mu       sync.Mutex
	events   map[string]map[string]any
	uploads  int
	badBatch string // the first upload that was not OPA's format
	down     atomic.Bool
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{events: map[string]map[string]any{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var batch []map[string]any
		err := func() error {
			if r.Method != http.MethodPost || r.URL.Path != "/logs" || r.Header.Get("Content-Encoding") != "gzip" {
				return fmt.Errorf("%s %s Content-Encoding %q", r.Method, r.URL.Path, r.Header.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				return err
			}
			return json.NewDecoder(zr).Decode(&batch)
		}()
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil && c.badBatch == "" {
			c.badBatch = err.Error()
		}
		c.uploads++
		for _, ev := range batch {
			id, _ := ev["decision_id"].(string)
			c.events[id] = ev
		}
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *collector) event(id string) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events[id]
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// field walks nested objects of a decoded event.
func field(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// decisionID is the id Gatehouse stamps on every CheckResponse.
func decisionID(resp *authv3.CheckResponse) string {
	return resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
}

// TestOPAEnvoyDecisionLogUpload: decisions go to a decision log service
// through OPA's decision log plugin, in OPA's event format (decision id,
// path, input, result, labels, timestamp, metrics), gzip-compressed, with
// system.log.mask applied (the authorization header is gone and listed as
// erased). While the collector is down every check still answers; the
// events wait in OPA's buffer and all arrive once it is back.
func TestOPAEnvoyDecisionLogUpload(t *testing.T) {
	col := newCollector(t)
	col.down.Store(true)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "policy"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "policy", "authz.rego"), `package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
`)
	writeFile(t, filepath.Join(dir, "policy", "mask.rego"), `package system.log

mask contains "/input/attributes/request/http/headers/authorization"
`)
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `services:
  - name: collector
    url: %s
labels: {app: orders}
decision_logs:
  service: collector
  reporting: {min_delay_seconds: 1, max_delay_seconds: 1}
plugins:
  envoy_ext_authz_grpc: {path: envoy/authz/allow}
`, col.URL), 0o644); err != nil {
		t.Fatal(err)
	}
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0", filepath.Join(dir, "policy"))
	eventually(t, 20*time.Second, "ready", func() bool { code, _ := g.get("/readyz"); return code == 200 })
	c := g.client(t)

	const n = 50
	ids := make([]string, 0, n)
	for i := range n {
		req := envoyRequest("10.1.2.3", "orders.example.com", fmt.Sprintf("/orders/%d", i), map[string]string{"authorization": "Bearer secret-token"})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.Check(ctx, req)
		cancel()
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("check %d with the collector down: %v %v", i, resp.GetStatus(), err)
		}
		ids = append(ids, decisionID(resp))
	}
	eventually(t, 20*time.Second, "an upload attempted while down", func() bool {
		return metric(t, g, `gatehouse_decision_events_total{result="logged"}`) >= n
	})
	if col.count() != 0 {
		t.Fatalf("the collector kept events while down")
	}
	col.down.Store(false)
	eventually(t, 30*time.Second, "every event uploaded after the outage", func() bool { return col.count() >= n })
	col.mu.Lock()
	bad := col.badBatch
	col.mu.Unlock()
	if bad != "" {
		t.Fatalf("an upload was not OPA's format: %s", bad)
	}
	for _, id := range ids {
		if col.event(id) == nil {
			t.Fatalf("decision %s was never uploaded", id)
		}
	}

	ev := col.event(ids[7])
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"decision_id"}, ids[7]},
		{[]string{"path"}, "envoy/authz/allow"},
		{[]string{"result", "allowed"}, true},
		{[]string{"input", "attributes", "request", "http", "method"}, "GET"},
		{[]string{"input", "attributes", "request", "http", "path"}, "/orders/7"},
		{[]string{"input", "parsed_path"}, []any{"orders", "7"}},
		{[]string{"input", "attributes", "request", "http", "headers", "authorization"}, nil},
		{[]string{"erased"}, []any{"/input/attributes/request/http/headers/authorization"}},
		{[]string{"labels", "app"}, "orders"},
	}
	for _, ck := range checks {
		if got := field(ev, ck.path...); fmt.Sprint(got) != fmt.Sprint(ck.want) {
			t.Errorf("event %v = %v, want %v", ck.path, got, ck.want)
		}
	}
	for _, key := range []string{"id", "version"} {
		if s, _ := field(ev, "labels", key).(string); s == "" {
			t.Errorf("event labels.%s missing: %v", key, ev["labels"])
		}
	}
	if ts, _ := ev["timestamp"].(string); ts == "" {
		t.Errorf("no timestamp: %v", ev)
	} else if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(at) > time.Minute {
		t.Errorf("timestamp %q: %v", ts, err)
	}
	if ns, _ := field(ev, "metrics", "timer_server_handler_ns").(float64); ns <= 0 {
		t.Errorf("metrics.timer_server_handler_ns = %v, want > 0", field(ev, "metrics"))
	}
}

// TestOPAEnvoyDecisionLogInputForms: the event's input is the document
// OPA-Envoy builds (its keys only, none of Gatehouse's facts such as
// client_ip), whichever form Gatehouse hands it to OPA's plugin in: with no
// mask or drop policy (written straight as JSON), with a drop policy only
// (which must see the input: it drops one path's events), and with both
// (the input masked).
func TestOPAEnvoyDecisionLogInputForms(t *testing.T) {
	const drop = `package system.log

drop if input.input.parsed_path == ["orders", "3"]
`
	const mask = `package system.log

mask contains "/input/attributes/request/http/headers/x-secret"
`
	for _, tc := range []struct {
		name            string
		logPolicies     map[string]string
		dropped, erased bool
	}{
		{name: "no log policy"},
		{name: "drop policy", logPolicies: map[string]string{"drop.rego": drop}, dropped: true},
		{name: "drop and mask policies", logPolicies: map[string]string{"drop.rego": drop, "mask.rego": mask}, dropped: true, erased: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := newCollector(t)
			dir := t.TempDir()
			pdir := filepath.Join(dir, "policy")
			if err := os.Mkdir(pdir, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(pdir, "authz.rego"), "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n")
			for name, src := range tc.logPolicies {
				writeFile(t, filepath.Join(pdir, name), src)
			}
			config := filepath.Join(dir, "config.yaml")
			writeFile(t, config, fmt.Sprintf(`services:
  - name: collector
    url: %s
decision_logs:
  service: collector
  reporting: {min_delay_seconds: 1, max_delay_seconds: 1}
plugins:
  envoy_ext_authz_grpc: {path: envoy/authz/allow}
`, col.URL))
			g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0", pdir)
			eventually(t, 20*time.Second, "ready", func() bool { code, _ := g.get("/readyz"); return code == 200 })
			c := g.client(t)
			ids := make([]string, 5)
			for i := range ids {
				req := envoyRequest("10.1.2.3", "orders.example.com", fmt.Sprintf("/orders/%d?page=%d", i, i), map[string]string{"x-secret": "s3cret", "x-plain": "p"})
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				resp, err := c.Check(ctx, req)
				cancel()
				if err != nil || resp.GetStatus().GetCode() != 0 {
					t.Fatalf("check %d: %v %v", i, resp.GetStatus(), err)
				}
				ids[i] = decisionID(resp)
			}
			want := len(ids)
			if tc.dropped {
				want--
			}
			eventually(t, 30*time.Second, "the events uploaded", func() bool { return col.count() >= want })
			if ev := col.event(ids[3]); (ev == nil) != tc.dropped {
				t.Fatalf("event of /orders/3 uploaded = %v, want dropped = %v", ev != nil, tc.dropped)
			}
			ev := col.event(ids[2])
			if ev == nil {
				t.Fatalf("event of /orders/2 not uploaded")
			}
			in, _ := ev["input"].(map[string]any)
			for key := range in {
				switch key {
				case "attributes", "version", "parsed_path", "parsed_query", "parsed_body", "truncated_body", "source_principal":
				default:
					t.Errorf("input.%s: not a key OPA-Envoy builds (%v)", key, in[key])
				}
			}
			checks := []struct {
				path []string
				want any
			}{
				{[]string{"input", "attributes", "request", "http", "path"}, "/orders/2?page=2"},
				{[]string{"input", "attributes", "request", "http", "headers", "x-plain"}, "p"},
				{[]string{"input", "parsed_path"}, []any{"orders", "2"}},
				{[]string{"input", "parsed_query", "page"}, []any{"2"}},
				{[]string{"input", "version", "ext_authz"}, "v3"},
				{[]string{"result", "allowed"}, true},
			}
			if tc.erased {
				checks = append(checks, struct {
					path []string
					want any
				}{[]string{"input", "attributes", "request", "http", "headers", "x-secret"}, nil}, struct {
					path []string
					want any
				}{[]string{"erased"}, []any{"/input/attributes/request/http/headers/x-secret"}})
			} else {
				checks = append(checks, struct {
					path []string
					want any
				}{[]string{"input", "attributes", "request", "http", "headers", "x-secret"}, "s3cret"})
			}
			for _, ck := range checks {
				if got := field(ev, ck.path...); fmt.Sprint(got) != fmt.Sprint(ck.want) {
					t.Errorf("event %v = %v, want %v", ck.path, got, ck.want)
				}
			}
		})
	}
}
