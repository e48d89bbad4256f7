package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const allowIfHeader = `package envoy.authz

default allow := false

allow if input.attributes.request.http.headers["x-allow"] == "yes"
`

const allowIfOtherHeader = `package envoy.authz

default allow := false

allow if input.attributes.request.http.headers["x-other"] == "yes"
`

// TestDefaultsDenyWithReason: no config at all runs the embedded default
// policy, which denies an unauthenticated request with a clear reason.
func TestDefaultsDenyWithReason(t *testing.T) {
	g := startGatehouse(t, "", true)
	code, out, errOut := ctl(t, "check", "--addr", g.grpcAddr, "--path", "/orders")
	if code != 1 {
		t.Fatalf("exit code %d, want 1 (denied)\n%s\n%s", code, out, errOut)
	}
	if err := contains(out, "DENIED", "401"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "decision log line", func() bool {
		return strings.Contains(g.logText(), `"msg":"decision"`)
	})
	if err := contains(g.logText(), `"allowed":false`, `"reason":"token_missing"`, `"policy_revision"`, `"duration_ms"`, `"decision_id"`); err != nil {
		t.Fatal(err)
	}

	if code, body := g.get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	if code, body := g.get("/readyz"); code != 200 || !strings.Contains(body, `"policy_loaded":true`) {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		if st := g.grpcHealth(t, svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("grpc health %q = %v, want SERVING", svc, st)
		}
	}
}

// TestPolicyHotReload: a policy changed on disk takes effect without a
// restart; a broken edit keeps the last good revision and logs file and line.
func TestPolicyHotReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "authz.rego")
	writeFile(t, file, allowIfHeader)
	// The policy takes a second: give it more than the default 1s deadline.
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n  eval_timeout: 10s\n", dir), true)

	decide := func(header string) int {
		code, _, _ := ctl(t, "check", "--addr", g.grpcAddr, "-H", header+": yes")
		return code
	}
	if c := decide("x-allow"); c != 0 {
		t.Fatalf("x-allow: exit %d, want 0", c)
	}
	if c := decide("x-other"); c != 1 {
		t.Fatalf("x-other: exit %d, want 1", c)
	}

	writeFile(t, file, allowIfOtherHeader)
	eventually(t, 15*time.Second, "the edited policy to take effect", func() bool {
		return decide("x-other") == 0 && decide("x-allow") == 1
	})

	writeFile(t, file, "package envoy.authz\n\nallow if {\n  input.attributes.request.http.method ==\n}\n")
	eventually(t, 15*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(g.logText(), "authz.rego:")
	})
	if c := decide("x-other"); c != 0 {
		t.Fatalf("after a broken edit the last good policy must keep deciding; exit %d", c)
	}
	if code, _ := g.get("/readyz"); code != 200 {
		t.Fatalf("a broken reload must not make the server unready")
	}

	writeFile(t, file, allowIfHeader)
	eventually(t, 15*time.Second, "the repaired policy to take effect", func() bool {
		return decide("x-allow") == 0 && decide("x-other") == 1
	})
}

// TestGracefulStop: SIGTERM stops the server cleanly with exit code 0.
func TestGracefulStop(t *testing.T) {
	g := startGatehouse(t, "", true)
	g.stop(t)
	if g.exitErr != nil {
		t.Fatalf("exit: %v\n%s", g.exitErr, g.logText())
	}
	if err := contains(g.logText(), `"msg":"shutting down"`, `"msg":"stopped"`); err != nil {
		t.Fatal(err)
	}
}

// TestConfigErrorsAtStartup: bad configuration exits 2 with the file, the key
// and the fix.
func TestConfigErrorsAtStartup(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	if err := os.Mkdir(broken, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "p.rego"), []byte("package envoy.authz\n\nallow if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, yaml string
		args       []string
		want       []string
	}{
		{"unknown key", "listen:\n  grcp: \":1\"\n", nil, []string{"gatehouse.yaml", "line 2", `unknown key "grcp" under listen`, "grpc"}},
		{"missing policy path", "policy:\n  paths: [./nope]\n", nil, []string{"gatehouse.yaml", "policy.paths[0]", "does not exist"}},
		{"bad address flag", "", []string{"--grpc-addr", "nowhere"}, []string{"listen.grpc", "host:port"}},
		{"policy that does not compile", fmt.Sprintf("policy:\n  paths: [%q]\n", broken), nil, []string{"gatehouse.yaml", "p.rego:"}},
		{"bad client ip source", "client_ip:\n  source: leftmost\n", nil, []string{"client_ip.source"}},
		{"forward auth without mode", "listen:\n  forward_auth: 127.0.0.1:0\n", nil, []string{"gatehouse.yaml", "forward_auth.mode", "required"}},
		{"forward auth unknown mode", "listen:\n  forward_auth: 127.0.0.1:0\nforward_auth:\n  mode: haproxy\n", nil, []string{"gatehouse.yaml", "forward_auth.mode", `"haproxy"`, "traefik, nginx, envoy"}},
		{"forward auth x-real-ip outside nginx mode", "listen:\n  forward_auth: 127.0.0.1:0\nforward_auth:\n  mode: traefik\n  nginx_client_header: x-real-ip\n", nil, []string{"forward_auth.nginx_client_header", "nginx"}},
		{"jwt provider without audiences", "jwt:\n  providers:\n    - name: corp\n      issuer: https://i.example\n      jwks_file: ./j.json\n", nil, []string{"audiences", "allow_any_audience"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
			if tc.yaml != "" {
				p := filepath.Join(t.TempDir(), "gatehouse.yaml")
				if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", p)
			}
			args = append(args, tc.args...)
			cmd := exec(t, filepath.Join(binDir, "gatehouse"), args...)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("want exit code 2, got %v\n%s", err, out)
			}
			if err := contains(string(out), tc.want...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGracefulStopFinishesInFlight: a check in progress when SIGTERM arrives
// still gets its decision.
func TestGracefulStopFinishesInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		time.Sleep(time.Second)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	defer slow.Close()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "slow.rego"), fmt.Sprintf(`package envoy.authz

allow if http.send({"method": "GET", "url": %q, "cache": false}).body.ok
`, slow.URL))
	// The policy takes a second: give it more than the default 1s deadline.
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n  eval_timeout: 10s\n  allow_net: [127.0.0.1]\n", dir), true)

	type result struct {
		code int
		out  string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, out, _, err := runCtl("check", "--addr", g.grpcAddr, "--timeout", "10s")
		done <- result{code, out, err}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the check never reached the policy")
	}
	g.stop(t)
	r := <-done
	if r.err != nil {
		t.Fatalf("gatehousectl: %v", r.err)
	}
	if r.code != 0 || !strings.Contains(r.out, "ALLOWED") {
		t.Fatalf("in-flight check was not finished: exit %d\n%s", r.code, r.out)
	}
	if g.exitErr != nil {
		t.Fatalf("exit: %v", g.exitErr)
	}
}
