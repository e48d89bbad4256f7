package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// versionPolicy denies with a reason naming the version, so a check tells
// which revision decided.
func versionPolicy(version string) string {
	return fmt.Sprintf("package envoy.authz\n\nallow := {\"allowed\": false, \"http_status\": 403, \"reason\": %q}\n", version)
}

// readyRevision returns /readyz's status and policy_revision.
func (g *gatehouse) readyRevision(t *testing.T) (int, string) {
	t.Helper()
	code, body := g.get("/readyz")
	var r struct {
		Revision string `json:"policy_revision"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, r.Revision
}

// TestPolicyFaultsEndToEnd: what operators and Kubernetes do to the policy
// directory of a running server. A change that leaves nothing loadable keeps
// the last good revision deciding (and reported by /readyz, still ready),
// deleting every file included; the repair takes effect without a restart. (A plain broken edit is
// TestPolicyHotReload.)
func TestPolicyFaultsEndToEnd(t *testing.T) {
	const broken = "package envoy.authz\n\nallow := {\n"
	type layout struct{ watched string }
	mustDo := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A ConfigMap volume: policy.rego -> ..data/policy.rego, ..data -> a
	// timestamped directory; an update swaps ..data atomically.
	configMap := func(t *testing.T) layout {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{"..v1/policy.rego": versionPolicy("v1")})
		mustDo(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
		mustDo(t, os.Symlink("..data/policy.rego", filepath.Join(dir, "policy.rego")))
		return layout{dir}
	}
	swapData := func(t *testing.T, dir, version, body string) {
		testutil.WriteFiles(t, dir, map[string]string{".." + version + "/policy.rego": body})
		mustDo(t, os.Symlink(".."+version, filepath.Join(dir, "..data_tmp")))
		mustDo(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	nested := func(t *testing.T) layout {
		dir := filepath.Join(t.TempDir(), "policies")
		testutil.WriteFiles(t, dir, map[string]string{"policy.rego": versionPolicy("v1")})
		return layout{dir}
	}
	cases := []struct {
		name        string
		setup       func(t *testing.T) layout
		fault       func(t *testing.T, l layout)
		faultReason string // the reason while the fault lasts
		lastGood    bool   // the fault keeps the last good revision
		repair      func(t *testing.T, l layout)
	}{
		{
			name:        "ConfigMap swap to a broken policy",
			setup:       configMap,
			fault:       func(t *testing.T, l layout) { swapData(t, l.watched, "broken", broken) },
			faultReason: "v1", lastGood: true,
			repair: func(t *testing.T, l layout) { swapData(t, l.watched, "v2", versionPolicy("v2")) },
		},
		{
			name:  "ConfigMap swap to a good policy, the old directory removed",
			setup: configMap,
			fault: func(t *testing.T, l layout) {
				swapData(t, l.watched, "v3", versionPolicy("v3"))
				mustDo(t, os.RemoveAll(filepath.Join(l.watched, "..v1")))
			},
			faultReason: "v3",
			repair:      func(t *testing.T, l layout) { swapData(t, l.watched, "v2", versionPolicy("v2")) },
		},
		{
			name:        "directory deleted and recreated",
			setup:       nested,
			fault:       func(t *testing.T, l layout) { mustDo(t, os.RemoveAll(l.watched)) },
			faultReason: "v1", lastGood: true,
			repair: func(t *testing.T, l layout) {
				testutil.WriteFiles(t, l.watched, map[string]string{"policy.rego": versionPolicy("v2")})
			},
		},
		{
			name:        "policy file deleted",
			setup:       nested,
			fault:       func(t *testing.T, l layout) { mustDo(t, os.Remove(filepath.Join(l.watched, "policy.rego"))) },
			faultReason: "v1", lastGood: true,
			repair: func(t *testing.T, l layout) {
				writeFile(t, filepath.Join(l.watched, "policy.rego"), versionPolicy("v2"))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.setup(t)
			g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n", l.watched), true)
			c := g.client(t)
			req := envoyRequest("198.51.100.7", "api.example.com", "/orders", nil)
			if d := decide(t, c, req); d.reason != "v1" {
				t.Fatalf("initial decision %+v, want reason v1", d)
			}
			_, goodRev := g.readyRevision(t)

			tc.fault(t, l)
			if tc.lastGood {
				eventually(t, 20*time.Second, "the failed reload to be logged", func() bool {
					return strings.Contains(g.logText(), "policy reload failed")
				})
			} else {
				eventually(t, 20*time.Second, "the fault to take effect", func() bool {
					return decide(t, c, req).reason == tc.faultReason
				})
			}
			if d := decide(t, c, req); d.allowed || d.reason != tc.faultReason {
				t.Fatalf("during the fault: %+v, want a denial with reason %q\n%s", d, tc.faultReason, g.logText())
			}
			code, rev := g.readyRevision(t)
			if code != 200 {
				t.Fatalf("/readyz %d during the fault: a policy change must not make the server unready", code)
			}
			if tc.lastGood && rev != goodRev {
				t.Fatalf("/readyz policy_revision %s, want the last good %s", rev, goodRev)
			}

			tc.repair(t, l)
			eventually(t, 20*time.Second, "the repaired policy to decide", func() bool {
				return decide(t, c, req).reason == "v2"
			})
		})
	}
}

// TestPolicyRuntimeErrorsDeny: errors while evaluating (conflicting outputs
// of a complete rule; a division by zero with strict_builtin_errors) deny
// with fail_status and policy_error through the real server, while the same
// policy still decides the requests that do not trip it.
func TestPolicyRuntimeErrorsDeny(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.rego"), `package envoy.authz

headers := input.attributes.request.http.headers

allow := true if headers["x-conflict"]

allow := false if headers["x-conflict"]

allow := (100 / to_number(headers["x-divisor"])) > 1 if headers["x-divisor"]
`)
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n  strict_builtin_errors: true\n  fail_status: 503\n", dir), true)
	c := g.client(t)
	cases := []struct {
		name    string
		headers map[string]string
		allowed bool
		status  int
		reason  string
	}{
		{"conflicting outputs", map[string]string{"x-conflict": "1"}, false, 503, "policy_error"},
		{"division by zero", map[string]string{"x-divisor": "0"}, false, 503, "policy_error"},
		{"division that works", map[string]string{"x-divisor": "2"}, true, 200, ""},
		{"no rule applies", nil, false, 503, "policy_undefined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(t, c, envoyRequest("198.51.100.7", "api.example.com", "/", tc.headers))
			if d.allowed != tc.allowed || d.status != tc.status || d.reason != tc.reason {
				t.Fatalf("got allowed=%v %d %q, want allowed=%v %d %q (%s)", d.allowed, d.status, d.reason, tc.allowed, tc.status, tc.reason, d.body)
			}
		})
	}
}

// TestPolicyReloadStormEndToEnd: 100 rewrites of the policy in about a
// second while 16 clients keep checking. Every check is answered (no gRPC
// error), every answer comes whole from one revision (its status and its
// reason agree), and the last write decides once the storm is over.
func TestPolicyReloadStormEndToEnd(t *testing.T) {
	const rewrites = 100
	policyFor := func(i int) string {
		status := 403 + 6*(i%2) // 403 or 409
		return fmt.Sprintf("package envoy.authz\n\nallow := {\"allowed\": false, \"http_status\": %d, \"reason\": \"rev-%d-%d\"}\n", status, i, status)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	writeFile(t, file, policyFor(0))
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n", dir), true)
	c := g.client(t)
	req := envoyRequest("198.51.100.7", "api.example.com", "/", nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	checks := 0
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				d, err := tryDecide(cctx, c, req)
				ccancel()
				mu.Lock()
				checks++
				if err != nil {
					failures = append(failures, "check failed: "+err.Error())
				} else if d.allowed || !strings.HasSuffix(d.reason, fmt.Sprintf("-%d", d.status)) {
					failures = append(failures, fmt.Sprintf("torn or wrong answer: %+v", d))
				}
				mu.Unlock()
			}
		})
	}
	for i := 1; i < rewrites; i++ {
		writeFile(t, file, policyFor(i))
		time.Sleep(10 * time.Millisecond)
	}
	last := fmt.Sprintf("rev-%d-%d", rewrites-1, 403+6*((rewrites-1)%2))
	eventually(t, 20*time.Second, "the last write to decide", func() bool {
		return decide(t, c, req).reason == last
	})
	cancel()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d checks went wrong during the storm, first: %s", len(failures), checks, failures[0])
	}
	if checks == 0 {
		t.Fatal("no checks ran during the storm")
	}
	if code, _ := g.get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d after the storm", code)
	}
}
