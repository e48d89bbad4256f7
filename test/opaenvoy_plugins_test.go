package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeConfig writes an OPA configuration file for a test.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// usersBundle is bundlePolicy with its data: the paths users.allowed
// lists are allowed.
func usersBundle(t *testing.T, revision string, allowed ...string) []byte {
	t.Helper()
	return bundleSpec{
		revision: revision, roots: []string{"envoy", "users"},
		modules: map[string]string{"/envoy/authz.rego": bundlePolicy},
		data:    map[string]any{"users": map[string]any{"allowed": allowed}},
	}.build(t)
}

// statusCollector is a status service on loopback: it keeps the last
// status report OPA's status plugin posted.
type statusCollector struct {
	*httptest.Server
	mu      sync.Mutex
	last    map[string]any
	reports int
	bad     string // the first report that was not OPA's format
}

func newStatusCollector(t *testing.T) *statusCollector {
	t.Helper()
	c := &statusCollector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var report map[string]any
		err := json.NewDecoder(r.Body).Decode(&report)
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/status"):
			err = fmt.Errorf("%s %s", r.Method, r.URL.Path)
		case err == nil && r.Header.Get("Content-Type") != "application/json":
			err = fmt.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		if err != nil {
			if c.bad == "" {
				c.bad = err.Error()
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.reports++
		c.last = report
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *statusCollector) report() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// TestOPAEnvoyStatus: status.service uploads OPA's status reports to a
// collector on loopback (labels with the instance id, each bundle's active
// revision, each plugin's state, OPA-Envoy's included), again when a bundle
// changes; status.prometheus adds OPA's status metrics to /metrics.
func TestOPAEnvoyStatus(t *testing.T) {
	srv := newBundleServer(t)
	srv.set("/bundles/authz.tar.gz", usersBundle(t, "r1", "a"))
	control := newStatusCollector(t)
	config := writeConfig(t, fmt.Sprintf(`services:
  - name: bundles
    url: %s
  - name: control
    url: %s
labels: {app: productpage}
bundles:
  authz:
    service: bundles
    resource: /bundles/authz.tar.gz
    polling: {min_delay_seconds: 1, max_delay_seconds: 1}
status:
  service: control
  prometheus: true
plugins:
  envoy_ext_authz_grpc: {}
`, srv.URL, control.URL))
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")

	revisionReported := func(rev string) func() bool {
		return func() bool {
			r := control.report()
			return field(r, "bundles", "authz", "active_revision") == rev &&
				field(r, "plugins", "envoy_ext_authz_grpc", "state") == "OK"
		}
	}
	eventually(t, 20*time.Second, "a status report with authz r1 and OPA-Envoy's plugin OK", revisionReported("r1"))
	r := control.report()
	if id, _ := field(r, "labels", "id").(string); id == "" || field(r, "labels", "app") != "productpage" {
		t.Errorf("status labels %v: want the instance id and app=productpage", field(r, "labels"))
	}
	for _, plugin := range []string{"bundle", "status", "discovery"} {
		if st := field(r, "plugins", plugin, "state"); st != "OK" {
			t.Errorf("status report: plugin %s state %v, want OK", plugin, st)
		}
	}

	srv.set("/bundles/authz.tar.gz", usersBundle(t, "r2", "a", "b"))
	eventually(t, 20*time.Second, "a status report with authz r2", revisionReported("r2"))
	if d := decide(t, g.client(t), envoyRequest("10.1.2.3", "api.example.com", "/b", nil)); !d.allowed {
		t.Errorf("/b with r2: %+v, want allowed", d)
	}
	control.mu.Lock()
	bad := control.bad
	control.mu.Unlock()
	if bad != "" {
		t.Errorf("a status upload was not OPA's format: %s", bad)
	}

	for _, series := range []string{
		`bundle_loaded_counter{name="authz"}`,
		`last_success_bundle_activation{active_revision="r2",name="authz"}`,
		`plugin_status_gauge{name="envoy_ext_authz_grpc",status="OK"}`,
	} {
		eventually(t, 10*time.Second, series+" on /metrics", func() bool { return metric(t, g, series) > 0 })
	}
}

// longPollServer serves one bundle with long polling: a request whose
// If-None-Match is the current revision and whose Prefer asks to wait is
// held until the bundle changes (answered 200 at once) or the wait ends
// (304), as OPA's long polling expects.
type longPollServer struct {
	*httptest.Server
	mu       sync.Mutex
	revision string
	body     []byte
	changed  chan struct{} // closed and replaced on every set
	waits    atomic.Int64  // requests that asked to wait
	held     atomic.Int64  // requests being held now
	answered atomic.Int64  // held requests answered by a change
}

func newLongPollServer(t *testing.T) *longPollServer {
	t.Helper()
	s := &longPollServer{changed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		rev, body, changed := s.revision, s.body, s.changed
		s.mu.Unlock()
		wait := time.Duration(0)
		for pref := range strings.SplitSeq(r.Header.Get("Prefer"), ";") {
			var secs int
			if _, err := fmt.Sscanf(strings.TrimSpace(pref), "wait=%d", &secs); err == nil {
				wait = time.Duration(secs) * time.Second
			}
		}
		if wait > 0 {
			s.waits.Add(1)
		}
		if r.Header.Get("If-None-Match") == `"`+rev+`"` && wait > 0 {
			s.held.Add(1)
			select {
			case <-changed:
				s.held.Add(-1)
				s.answered.Add(1)
				s.mu.Lock()
				rev, body = s.revision, s.body
				s.mu.Unlock()
			case <-time.After(wait):
				s.held.Add(-1)
				w.WriteHeader(http.StatusNotModified)
				return
			case <-r.Context().Done():
				s.held.Add(-1)
				return
			}
		} else if r.Header.Get("If-None-Match") == `"`+rev+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
		w.Header().Set("ETag", `"`+rev+`"`)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *longPollServer) set(revision string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revision, s.body = revision, body
	close(s.changed)
	s.changed = make(chan struct{})
}

// TestOPAEnvoyLongPolling: with polling.long_polling_timeout_seconds, OPA's
// bundle plugin asks the bundle server to hold its request; a new bundle
// answers the held request and is in force at once, although the polling
// delay is a minute.
func TestOPAEnvoyLongPolling(t *testing.T) {
	srv := newLongPollServer(t)
	srv.set("r1", usersBundle(t, "r1", "a"))
	config := writeConfig(t, fmt.Sprintf(`services:
  - name: acme
    url: %s
bundles:
  authz:
    service: acme
    resource: /bundles/authz.tar.gz
    polling:
      min_delay_seconds: 60
      max_delay_seconds: 120
      long_polling_timeout_seconds: 30
plugins:
  envoy_ext_authz_grpc: {}
`, srv.URL))
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
	c := g.client(t)
	allowed := func(path string) bool {
		return decide(t, c, envoyRequest("10.1.2.3", "api.example.com", path, nil)).allowed
	}
	eventually(t, 20*time.Second, "ready with r1", func() bool {
		code, _ := g.get("/readyz")
		return code == 200
	})
	if !allowed("/a") || allowed("/b") {
		t.Fatalf("r1: want /a allowed and /b denied")
	}
	eventually(t, 20*time.Second, "a request held by the server", func() bool { return srv.held.Load() == 1 })

	srv.set("r2", usersBundle(t, "r2", "a", "b"))
	// The next poll is a minute away: only the held request can bring r2
	// within the wait.
	eventually(t, 20*time.Second, "r2 in force", func() bool { return allowed("/b") })
	if srv.answered.Load() < 1 || srv.waits.Load() < 1 {
		t.Errorf("held requests answered by the change: %d, requests that asked to wait: %d; want both at least 1", srv.answered.Load(), srv.waits.Load())
	}
	if st := adminStatus(t, g); bundleRevisions(st) != "authz=r2" {
		t.Errorf("admin Status bundles: %s, want authz=r2", bundleRevisions(st))
	}
}

// TestOPAEnvoyBearerCredential: services[].credentials.bearer sends the
// token (here from the environment, through OPA's ${ENV} substitution) to
// the bundle service, which refuses any other; with a wrong token the
// bundle never activates, the server is not ready and denies.
func TestOPAEnvoyBearerCredential(t *testing.T) {
	const token = "s3cret-token"
	var refused atomic.Int64
	bundles := newBundleServer(t)
	bundles.set("/bundles/authz.tar.gz", usersBundle(t, "r1", "a"))
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			refused.Add(1)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		bundles.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(guarded.Close)
	config := writeConfig(t, fmt.Sprintf(`services:
  - name: acme
    url: %s
    credentials:
      bearer:
        token: "${BUNDLE_TOKEN}"
bundles:
  authz:
    service: acme
    resource: /bundles/authz.tar.gz
    polling: {min_delay_seconds: 1, max_delay_seconds: 1}
plugins:
  envoy_ext_authz_grpc: {}
`, guarded.URL))

	t.Run("the right token", func(t *testing.T) {
		t.Setenv("BUNDLE_TOKEN", token)
		g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
		eventually(t, 20*time.Second, "ready with r1", func() bool {
			code, _ := g.get("/readyz")
			return code == 200
		})
		if d := decide(t, g.client(t), envoyRequest("10.1.2.3", "api.example.com", "/a", nil)); !d.allowed {
			t.Errorf("/a: %+v, want allowed", d)
		}
		if n := refused.Load(); n != 0 {
			t.Errorf("%d requests refused, want none", n)
		}
	})
	t.Run("a wrong token", func(t *testing.T) {
		t.Setenv("BUNDLE_TOKEN", "wrong")
		before := refused.Load()
		g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
		eventually(t, 20*time.Second, "two refused downloads", func() bool { return refused.Load() >= before+2 })
		if code, body := g.get("/health?bundles"); code != 500 || !strings.Contains(body, "authz") {
			t.Errorf("/health?bundles: %d %s, want 500 naming authz", code, body)
		}
		if d := decide(t, g.client(t), envoyRequest("10.1.2.3", "api.example.com", "/a", nil)); d.allowed || d.status != 403 {
			t.Errorf("/a without a bundle: %+v, want a 403 denial (fail closed)", d)
		}
	})
}

// TestOPAEnvoyDiscovery: the boot configuration names only a discovery
// bundle; the configuration it carries (a bundles entry) makes OPA's
// discovery plugin start the bundle plugin, whose bundle decides; a new
// discovery bundle pointing at another resource switches the policy.
func TestOPAEnvoyDiscovery(t *testing.T) {
	srv := newBundleServer(t)
	discovery := func(revision, resource string) []byte {
		return bundleSpec{
			revision: revision, roots: []string{"config"},
			data: map[string]any{"config": map[string]any{
				"bundles": map[string]any{"authz": map[string]any{
					"service": "acme", "resource": resource,
					"polling": map[string]any{"min_delay_seconds": 1, "max_delay_seconds": 1},
				}},
			}},
		}.build(t)
	}
	srv.set("/discovery.tar.gz", discovery("d1", "/bundles/one.tar.gz"))
	srv.set("/bundles/one.tar.gz", usersBundle(t, "one", "a"))
	srv.set("/bundles/two.tar.gz", usersBundle(t, "two", "b"))
	config := writeConfig(t, fmt.Sprintf(`services:
  - name: acme
    url: %s
discovery:
  service: acme
  resource: /discovery.tar.gz
  decision: config
  polling: {min_delay_seconds: 1, max_delay_seconds: 1}
plugins:
  envoy_ext_authz_grpc: {}
`, srv.URL))
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
	c := g.client(t)
	allowed := func(path string) bool {
		return decide(t, c, envoyRequest("10.1.2.3", "api.example.com", path, nil)).allowed
	}
	eventually(t, 20*time.Second, "ready with the discovered bundle", func() bool {
		code, _ := g.get("/readyz")
		return code == 200
	})
	if !allowed("/a") || allowed("/b") {
		t.Fatalf("bundle one: want /a allowed and /b denied\n%s", g.logText())
	}
	if code, body := g.get("/health?plugins"); code != 200 || body != "{}\n" {
		t.Errorf("/health?plugins: %d %q, want 200 {}", code, body)
	}

	srv.set("/discovery.tar.gz", discovery("d2", "/bundles/two.tar.gz"))
	eventually(t, 20*time.Second, "bundle two in force", func() bool { return allowed("/b") && !allowed("/a") })
	if st := adminStatus(t, g); bundleRevisions(st) != "authz=two" {
		t.Errorf("admin Status bundles: %s, want authz=two", bundleRevisions(st))
	}
}
