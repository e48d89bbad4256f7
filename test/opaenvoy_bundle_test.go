package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// bundleServer serves bundles built with OPA's bundle package on loopback,
// as a bundle service would; a resource it does not have, or every resource
// while it is down, answers 503.
type bundleServer struct {
	*httptest.Server
	mu       sync.Mutex
	bundles  map[string][]byte
	down     bool
	requests atomic.Int64
}

func newBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	s := &bundleServer{bundles: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		b, ok := s.bundles[r.URL.Path]
		down := s.down
		s.mu.Unlock()
		if down || !ok {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) set(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundles[path] = b
}

func (s *bundleServer) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// bundleSigner signs bundles with an RSA key; publicPEM goes into OPA's keys.
type bundleSigner struct {
	privatePEM, publicPEM string
}

func newBundleSigner(t *testing.T) *bundleSigner {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &bundleSigner{
		privatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		publicPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

// bundleSpec is one bundle to build: its manifest revision and roots, its
// modules (path -> source) and data.
type bundleSpec struct {
	revision string
	roots    []string
	modules  map[string]string
	data     map[string]any
	// signer signs it (nil: unsigned); tamper changes a module after
	// signing, so the signature no longer matches.
	signer *bundleSigner
	tamper bool
}

// build writes the bundle as a .tar.gz with OPA's bundle writer.
func (spec bundleSpec) build(t *testing.T) []byte {
	t.Helper()
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: spec.revision, Roots: &spec.roots},
		Data:     spec.data,
	}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	for path, src := range spec.modules {
		// A module that does not parse is still shipped: the bundle plugin
		// must refuse it, not the test.
		parsed, _ := ast.ParseModuleWithOpts(path, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: path, Path: path, Raw: []byte(src), Parsed: parsed})
	}
	if spec.signer != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(spec.signer.privatePEM, "RS256", ""), "release", false); err != nil {
			t.Fatal(err)
		}
	}
	if spec.tamper {
		b.Modules[0].Raw = append(b.Modules[0].Raw, []byte("\nallow if true\n")...)
		b.Modules[0].Parsed = nil
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// metric returns the value of the series whose name and labels start with
// prefix (e.g. `gatehouse_policy_reloads_total{policy="active",result="failure"}`),
// or -1 when there is none.
func metric(t *testing.T, g *gatehouse, prefix string) float64 {
	t.Helper()
	code, body := g.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + `\S* (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const bundlePolicy = `package envoy.authz

default allow := false

allow if input.parsed_path[0] in data.users.allowed
`

// TestOPAEnvoyBundles: policy and data delivered as two bundles by a
// bundle service through OPA's bundle plugin, the policy bundle signed and
// verified with OPA's keys: not ready and denying (fail closed) until both
// are activated; a new revision replaces the old while checks run, none
// failing or going back; a tampered signature and a policy that does not
// compile are refused, the last good revision kept and the failure counted;
// with persist, a restart while the service is down serves the last
// activated bundles from disk.
func TestOPAEnvoyBundles(t *testing.T) {
	signer := newBundleSigner(t)
	srv := newBundleServer(t)
	persist := t.TempDir()
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `services:
  - name: acme
    url: %s
keys:
  release:
    algorithm: RS256
    key: |
%s
bundles:
  authz:
    service: acme
    resource: /bundles/authz.tar.gz
    persist: true
    signing: {keyid: release}
    polling: {min_delay_seconds: 1, max_delay_seconds: 1}
  users:
    service: acme
    resource: /bundles/users.tar.gz
    persist: true
    polling: {min_delay_seconds: 1, max_delay_seconds: 1}
persistence_directory: %s
plugins:
  envoy_ext_authz_grpc: {}
`, srv.URL, indent(signer.publicPEM, "      "), persist), 0o644); err != nil {
		t.Fatal(err)
	}
	authz := func(rev string) bundleSpec {
		return bundleSpec{revision: rev, roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": bundlePolicy}, signer: signer}
	}
	users := func(rev string, allowed ...string) bundleSpec {
		return bundleSpec{revision: rev, roots: []string{"users"}, data: map[string]any{"users": map[string]any{"allowed": allowed}}}
	}
	// The users bundle is there; the policy bundle not yet.
	srv.set("/bundles/users.tar.gz", users("u1", "a").build(t))

	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
	c := g.client(t)
	check := func(path string) decision {
		return decide(t, c, envoyRequest("10.1.2.3", "api.example.com", path, nil))
	}
	eventually(t, 20*time.Second, "the users bundle requested", func() bool { return srv.requests.Load() >= 2 })
	if code, body := g.get("/readyz"); code != 503 {
		t.Errorf("/readyz before the policy bundle: %d %s, want 503", code, body)
	}
	if code, body := g.get("/health?bundles"); code != 500 || !strings.Contains(body, "authz") {
		t.Errorf("/health?bundles before the policy bundle: %d %s, want 500 naming authz", code, body)
	}
	if code, _ := g.get("/health"); code != 200 {
		t.Errorf("/health: %d, want 200 (the server is up)", code)
	}
	if d := check("/a"); d.allowed || d.status != 403 {
		t.Errorf("before the policy bundle: %+v, want a 403 denial (fail closed)", d)
	}

	srv.set("/bundles/authz.tar.gz", authz("r1").build(t))
	eventually(t, 20*time.Second, "ready once both bundles are activated", func() bool {
		code, _ := g.get("/readyz")
		return code == 200
	})
	if code, body := g.get("/health?bundles"); code != 200 {
		t.Errorf("/health?bundles: %d %s", code, body)
	}
	if d := check("/a"); !d.allowed {
		t.Errorf("/a with u1: %+v, want allowed", d)
	}
	// The admin Status names the bundles the policy revision was built from.
	st := adminStatus(t, g)
	if got := bundleRevisions(st); got != "authz=r1 users=u1" {
		t.Errorf("admin Status bundles: %s, want authz=r1 users=u1\n%+v", got, st.Bundles)
	}
	for _, b := range st.Bundles {
		if b.ActivatedAt == "" || b.Error != "" {
			t.Errorf("admin Status bundle %+v: want an activation time and no error", b)
		}
	}
	if code, out, errOut := ctl(t, "status", "--addr", g.adminAddr); code != 0 {
		t.Errorf("gatehousectl status: exit %d\n%s\n%s", code, out, errOut)
	} else if err := contains(out, "bundle:    authz  revision=r1  activated=", "bundle:    users  revision=u1  activated="); err != nil {
		t.Error(err)
	}
	if d := check("/b"); d.allowed {
		t.Errorf("/b with u1: %+v, want denied", d)
	}

	// Replace the data while checks run: every check answers, /a stays
	// allowed, and once a caller sees /b allowed it never sees it denied.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failures, checks atomic.Int64
	var firstFailure atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstFailure.CompareAndSwap(nil, err.Error())
	}
	for range 4 {
		wg.Go(func() {
			switched := false
			for ctx.Err() == nil {
				for _, path := range []string{"/a", "/b"} {
					d, err := tryDecide(ctx, c, envoyRequest("10.1.2.3", "api.example.com", path, nil))
					if ctx.Err() != nil {
						return
					}
					checks.Add(1)
					switch {
					case err != nil:
						fail(err)
					case path == "/a" && !d.allowed:
						fail(fmt.Errorf("/a denied: %+v", d))
					case path == "/b" && d.allowed:
						switched = true
					case path == "/b" && switched:
						fail(fmt.Errorf("/b denied after it was allowed: %+v", d))
					}
				}
			}
		})
	}
	srv.set("/bundles/users.tar.gz", users("u2", "a", "b").build(t))
	eventually(t, 20*time.Second, "the u2 data in effect", func() bool { return check("/b").allowed })
	time.Sleep(200 * time.Millisecond) // a few hundred checks on u2 as well
	cancel()
	wg.Wait()
	if failures.Load() > 0 || checks.Load() < 100 {
		t.Fatalf("%d of %d checks failed during the switch (first: %v)", failures.Load(), checks.Load(), firstFailure.Load())
	}

	// Refused activations keep u2 + r1 in force.
	failing := `gatehouse_policy_reloads_total{policy="active",result="failure"}`
	for _, bad := range []struct {
		name string
		spec bundleSpec
	}{
		{"tampered signature", bundleSpec{revision: "r2", roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": strings.Replace(bundlePolicy, `"a"`, `"x"`, 1)}, signer: signer, tamper: true}},
		{"unsigned", bundleSpec{revision: "r3", roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": bundlePolicy}}},
		{"does not compile", bundleSpec{revision: "r4", roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": "package envoy.authz\nallow if { input.x ==  }\n"}, signer: signer}},
	} {
		before := metric(t, g, failing)
		srv.set("/bundles/authz.tar.gz", bad.spec.build(t))
		eventually(t, 20*time.Second, bad.name+" refused and counted", func() bool { return metric(t, g, failing) > before })
		if d := check("/b"); !d.allowed {
			t.Errorf("after %s: /b %+v, want still allowed by the last good revision", bad.name, d)
		}
		if code, _ := g.get("/readyz"); code != 200 {
			t.Errorf("after %s: /readyz %d, want still ready", bad.name, code)
		}
	}
	if err := contains(g.logText(), "policy activation failed, keeping revision", "bundle authz"); err != nil {
		t.Error(err)
	}
	// The Status shows the failure beside the revision still in force.
	st = adminStatus(t, g)
	if got := bundleRevisions(st); got != "authz=r1 users=u2" {
		t.Errorf("admin Status bundles after the refusals: %s, want authz=r1 users=u2", got)
	}
	for _, b := range st.Bundles {
		if (b.Name == "authz") != (b.Error != "") {
			t.Errorf("admin Status bundle %+v: want an error on authz only", b)
		}
	}
	if code, out, _ := ctl(t, "status", "--addr", g.adminAddr); code != 0 || !strings.Contains(out, "last attempt FAILED (serving the revision above): ") {
		t.Errorf("gatehousectl status: exit %d, want the failed attempt shown:\n%s", code, out)
	}

	// persist: the service is down, a new process serves from disk.
	srv.setDown(true)
	g.stop(t)
	g2, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
	eventually(t, 20*time.Second, "ready from the persisted bundles", func() bool {
		code, _ := g2.get("/readyz")
		return code == 200
	})
	c2 := g2.client(t)
	if d := decide(t, c2, envoyRequest("10.1.2.3", "api.example.com", "/b", nil)); !d.allowed {
		t.Errorf("from the persisted bundles: /b %+v, want allowed (u2)", d)
	}
}

// statusBundle is a bundle in `gatehousectl status --json`.
type statusBundle struct {
	Name        string `json:"name"`
	Revision    string `json:"revision"`
	ActivatedAt string `json:"activated_at"`
	Error       string `json:"error"`
}

type statusBundles struct {
	Bundles []statusBundle `json:"bundles"`
}

// adminStatus is the admin Status's bundles, through gatehousectl.
func adminStatus(t *testing.T, g *gatehouse) statusBundles {
	t.Helper()
	code, out, errOut := ctl(t, "status", "--json", "--addr", g.adminAddr)
	var st statusBundles
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("gatehousectl status --json: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	return st
}

// bundleRevisions is "name=revision ..." in the Status's order.
func bundleRevisions(st statusBundles) string {
	var parts []string
	for _, b := range st.Bundles {
		parts = append(parts, b.Name+"="+b.Revision)
	}
	return strings.Join(parts, " ")
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}
