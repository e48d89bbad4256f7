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
