package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/opaenvoy"
	"github.com/gatehouse-dev/gatehouse/policy"
	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

// bundleResource is where the loopback bundle service serves every suite's
// bundle (one service per suite).
const bundleResource = "/bundles/suite.tar.gz"

// bundleService is a bundle service on loopback serving one bundle built with
// OPA's bundle package, and counting the downloads (so that a test fed by
// it can tell it was).
type bundleService struct {
	*httptest.Server
	downloads atomic.Int64
}

// serveBundle builds policyDir as a bundle, the way `opa build` reads a
// directory (modules, and data.json files at their directory's path), with
// revision rev, and serves it.
func serveBundle(t *testing.T, policyDir string, version ast.RegoVersion, rev string) *bundleService {
	t.Helper()
	b, err := loader.NewFileLoader().WithRegoVersion(version).AsBundle(policyDir)
	if err != nil {
		t.Fatalf("bundle of %s: %v", policyDir, err)
	}
	b.Manifest.Revision = rev
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(*b); err != nil {
		t.Fatal(err)
	}
	tarball := buf.Bytes()
	s := &bundleService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != bundleResource {
			http.NotFound(w, r)
			return
		}
		s.downloads.Add(1)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(tarball)
	}))
	t.Cleanup(s.Close)
	return s
}

// startBundleFed runs the in-process path of `gatehouse run --server`:
// OPA's plugin manager with its bundle plugin, configured by an OPA
// configuration file (services, bundles, plugins.envoy_ext_authz_grpc),
// pulls the suite's policy and data from svc and activates it into the
// policy engine, which an authz.Server configured from the plugin's keys
// (path, dry-run, skip-request-body-parse) serves on loopback. It returns
// once the bundle is active.
func startBundleFed(t *testing.T, svc *bundleService, cfg corpus.Config) *gatehouse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conf := map[string]any{
		"services": []any{map[string]any{"name": "control", "url": svc.URL}},
		"bundles": map[string]any{"suite": map[string]any{
			"service": "control", "resource": bundleResource,
			// Polled as a deployment would; the bundle does not change.
			"polling": map[string]any{"min_delay_seconds": 60, "max_delay_seconds": 120},
		}},
		"plugins": map[string]any{opaenvoy.PluginName: map[string]any{
			"addr": "127.0.0.1:0", "path": cfg.Path, "dry-run": cfg.DryRun, "skip-request-body-parse": cfg.SkipRequestBodyParse,
		}},
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	version := ast.RegoV1
	if cfg.RegoVersion == "v0" {
		version = ast.RegoV0 // --v0-compatible, as OPA-Envoy was recorded
	}
	// No evaluation deadline, as in the file-fed run.
	engine, err := policy.NewAwaitingActivation(ctx, policy.Options{Decision: cfg.Path, EvalTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := opaenvoy.New(ctx, opaenvoy.Options{Config: raw, Policy: engine, RegoVersion: version})
	if err != nil {
		t.Fatalf("plugin manager: %v", err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatalf("plugins: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		stopCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		rt.Stop(stopCtx)
	})
	if !testutil.WaitFor(30*time.Second, func() bool { return rt.BundlesActivated() && engine.Ready() }) {
		t.Fatalf("the bundle was never activated (bundles: %+v)", rt.BundleStates())
	}
	if got := rt.Bundles()["suite"]; got != "compat" {
		t.Fatalf("active bundle revision %q, want the served one (compat)", got)
	}
	if svc.downloads.Load() == 0 {
		t.Fatal("active without a download from the bundle service")
	}
	ext := rt.ExtAuthz()
	srv, err := authz.New(authz.Options{Policy: engine, DryRun: ext.DryRun, ParseBody: !ext.SkipRequestBodyParse})
	if err != nil {
		t.Fatal(err)
	}
	return &gatehouse{client: testutil.AuthorizationClient(t, testutil.ServeAuthorization(t, srv))}
}

// TestOPAEnvoyCompatBundle is TestOPAEnvoyCompat with every suite's policy
// and data delivered as a bundle: built with OPA's bundle package, served
// by a bundle service on loopback, downloaded and activated by OPA's bundle
// plugin under an OPA configuration, as `gatehouse run --server` runs it
// (in process: the runtime and authz.Server that run mode wires, not a
// child process per suite). The echo policy that captures the input is
// bundle-fed too. Every answer must be OPA-Envoy's recorded one, through
// the same comparator and the same documented differences as the
// file-fed run.
func TestOPAEnvoyCompatBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("a plugin manager per suite")
	}
	suites, err := corpus.LoadSuites(suitesDir)
	if err != nil {
		t.Fatal(err)
	}
	anchors := docAnchors(t)

	echoDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(echoDir, "echo.rego"), []byte(corpus.EchoPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	echoService := serveBundle(t, echoDir, ast.RegoV1, "compat")
	echo := map[bool]*gatehouse{}
	for _, skip := range []bool{false, true} {
		echo[skip] = startBundleFed(t, echoService, corpus.Config{Path: corpus.EchoPath, SkipRequestBodyParse: skip})
	}

	var total, identical int
	for _, s := range suites {
		t.Run(s.Name, func(t *testing.T) {
			rec, err := corpus.ReadRecording(recordedDir, s.Name)
			if err != nil {
				t.Fatalf("no recording of OPA-Envoy's answers (run scripts/record-opa-envoy): %v", err)
			}
			answers := map[string]corpus.Answer{}
			for _, a := range rec.Cases {
				answers[a.Name] = a
			}
			policyDir := filepath.Join(t.TempDir(), "policy")
			if err := s.WritePolicyDir(policyDir); err != nil {
				t.Fatal(err)
			}
			version := ast.RegoV1
			if s.Config.RegoVersion == "v0" {
				version = ast.RegoV0
			}
			gh := startBundleFed(t, serveBundle(t, policyDir, version, "compat"), s.Config)
			for _, c := range s.Cases {
				total++
				t.Run(c.Name, func(t *testing.T) {
					ans, ok := answers[c.Name]
					if !ok {
						t.Fatalf("case %s is not recorded (run scripts/record-opa-envoy)", c.Name)
					}
					if ans.Fingerprint != s.Fingerprint(c) {
						t.Fatalf("the recording of %s is stale (run scripts/record-opa-envoy -only %s)", c.Name, s.Name)
					}
					var req authv3.CheckRequest
					if err := protojson.Unmarshal(c.Request, &req); err != nil {
						t.Fatalf("request: %v", err)
					}
					got := gh.check(t, &req)
					echoed := echo[s.Config.SkipRequestBodyParse].check(t, &req)
					problems, same, err := compareCase(caseContext{cfg: s.Config, anchors: anchors}, c, ans, got, echoed)
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range problems {
						t.Error(p)
					}
					if same {
						identical++
					}
				})
			}
		})
	}
	if total == 0 {
		t.Fatal("no case ran")
	}
	t.Logf("OPA-Envoy corpus, bundle-fed: %d cases in %d suites; %d identical to OPA-Envoy (global encoding differences aside), %d with a documented difference",
		total, len(suites), identical, total-identical)
}

// TestBundleFedServesTheBundle: the bundle-fed harness decides with the
// bundle it downloaded, not with anything else: a suite's policy served
// with its decision inverted answers the opposite, and a bundle service
// that never serves leaves the runtime not ready (startBundleFed would fail).
func TestBundleFedServesTheBundle(t *testing.T) {
	dir := t.TempDir()
	for name, allow := range map[string]bool{"allow": true, "deny": false} {
		t.Run(name, func(t *testing.T) {
			policyDir := filepath.Join(dir, name)
			if err := os.MkdirAll(policyDir, 0o755); err != nil {
				t.Fatal(err)
			}
			src := fmt.Sprintf("package envoy.authz\n\nallow := %t\n", allow)
			if err := os.WriteFile(filepath.Join(policyDir, "policy.rego"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			gh := startBundleFed(t, serveBundle(t, policyDir, ast.RegoV1, "compat"), corpus.Config{Path: "envoy/authz/allow"})
			var req authv3.CheckRequest
			if err := protojson.Unmarshal([]byte(`{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{":path":"/"}}}}}`), &req); err != nil {
				t.Fatal(err)
			}
			resp := gh.check(t, &req)
			if got := resp.GetStatus().GetCode() == 0; got != allow {
				t.Fatalf("allowed = %v, want %v (the bundle's decision): %v", got, allow, resp)
			}
			if code := resp.GetDeniedResponse().GetStatus().GetCode(); !allow && code != 403 {
				t.Fatalf("denied with status %d, want 403", code)
			}
		})
	}
}
