package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// runResult is one in-process run of the gatehouse command line.
type runResult struct {
	code           int
	stdout, stderr string
}

// runMain runs the command line through run, as main does.
func runMain(args ...string) runResult {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return runResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// check fails t unless r has the exit code and each of the strings on its
// stream (stdout or stderr).
func (r runResult) check(t *testing.T, code int, stdout, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d", r.code, code)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q", s)
		}
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, map[string]string{
		"good/authz.rego":  "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n",
		"broken/ok.rego":   "package envoy.authz\n\ndefault allow := false\n",
		"broken/bad.rego":  "package envoy.authz\n\nallow if {\n\tinput.x ==\n}\n",
		"keys/jwks.json":   string(testutil.JWKS(t, testutil.NewKey(t, jwa.ES256, "file-1"))),
		"shadow/next.rego": "package envoy.authz\n\nallow if input.attributes.request.http.method == \"HEAD\"\n",
	})
	// A jwks_uri nobody may fetch: validate without --jwks reaches no network.
	untouched := testutil.NewJWKSServer(t, testutil.JWKS(t, testutil.NewKey(t, jwa.RS256, "uri-1")))
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", fmt.Sprintf(`policy:
  paths: [good]
  decision: envoy/authz/allow
  shadow:
    paths: [shadow]
jwt:
  providers:
    - name: corp
      issuer: https://issuer.example
      audiences: [orders]
      jwks_uri: %s/jwks.json
    - name: local
      issuer: https://local.example
      audiences: [orders]
      jwks_file: keys/jwks.json
listen:
  forward_auth: 127.0.0.1:8282
forward_auth:
  mode: nginx
`, untouched.URL))

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		wantStdout bool // false: stdout must be empty
	}{
		{
			name:       "embedded defaults",
			args:       []string{"validate"},
			stdout:     []string{"configuration OK: 0 JWT providers, policy revision ", "(native default decision)", "grpc :9191", "from embedded defaults"},
			wantStdout: true,
		},
		{
			// The form the Helm chart's init container runs.
			name: "good config",
			args: []string{"validate", "--config", good},
			stdout: []string{
				"configuration OK: 2 JWT providers, policy revision ",
				"(custom Rego from " + filepath.Join(dir, "good") + ", decision data.envoy.authz.allow)",
				", shadow policy revision ", ", forward_auth 127.0.0.1:8282 (nginx)", "; from " + good,
			},
			wantStdout: true,
		},
		{
			name:   "unknown key",
			args:   []string{"validate", "--config", write("unknown.yaml", "listen:\n  grpc: \":9191\"\n  grcp: \":1\"\n")},
			code:   2,
			stderr: []string{"gatehouse validate: config " + filepath.Join(dir, "unknown.yaml") + ": line 3: ", `unknown key "grcp" under listen`, "valid keys here are: admin, forward_auth, grpc,"},
		},
		{
			name:   "policy that does not compile",
			args:   []string{"validate", "--config", write("broken.yaml", "policy:\n  paths: [broken]\n")},
			code:   2,
			stderr: []string{"config " + filepath.Join(dir, "broken.yaml") + ": ", filepath.Join(dir, "broken", "bad.rego") + ":5:", "rego_parse_error"},
		},
		{
			name:   "missing policy directory",
			args:   []string{"validate", "--config", write("missing.yaml", "policy:\n  paths: [nope]\n")},
			code:   2,
			stderr: []string{"config " + filepath.Join(dir, "missing.yaml") + ": policy.paths[0]: ", filepath.Join(dir, "nope"), "does not exist; create it or remove it"},
		},
		{
			name:   "every jwt problem",
			args:   []string{"validate", "--config", write("jwt.yaml", "jwt:\n  providers:\n    - name: corp\n      jwks_file: keys/jwks.json\n")},
			code:   2,
			stderr: []string{"jwt.providers[0] (corp): issuer is empty; set it", "\n  jwt.providers[0] (corp): audiences is empty; list the audiences"},
		},
		{
			name:   "forward auth mode",
			args:   []string{"validate", "--config", write("fa.yaml", "listen:\n  forward_auth: 127.0.0.1:0\nforward_auth:\n  mode: haproxy\n")},
			code:   2,
			stderr: []string{"forward_auth.mode", `"haproxy"`},
		},
		{
			name:   "missing file",
			args:   []string{"validate", "--config", filepath.Join(dir, "absent.yaml")},
			code:   2,
			stderr: []string{filepath.Join(dir, "absent.yaml"), "pass --config with a readable YAML file"},
		},
		{
			name:   "a decision no rule defines is a warning",
			args:   []string{"validate", "--config", write("undefined.yaml", "policy:\n  paths: [good]\n  decision: envoy/authz/nothere\n")},
			stdout: []string{"configuration OK: 0 JWT providers"},
			stderr: []string{"level=WARN", "no rule defines the decision"},

			wantStdout: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(tc.args...)
			r.check(t, tc.code, tc.stdout, tc.stderr)
			if !tc.wantStdout && r.stdout != "" {
				t.Errorf("stdout %q, want nothing (problems go to stderr)", r.stdout)
			}
			if tc.code == 0 && strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("stdout has %d lines, want the one summary line:\n%s", strings.Count(r.stdout, "\n"), r.stdout)
			}
		})
	}
	if n := untouched.Hits(); n != 0 {
		t.Errorf("validate without --jwks fetched %s %d times", untouched.URL, n)
	}
}

// TestValidateJWKS: with --jwks each provider's key set is fetched once and
// reported; a failed fetch is an error naming the provider and the URL.
func TestValidateJWKS(t *testing.T) {
	tests := []struct {
		name   string
		status int
		code   int
		stdout []string
		stderr []string
	}{
		{
			name:   "keys served",
			status: http.StatusOK,
			stdout: []string{"jwks corp: ok, 1 usable keys (kid uri-1) from ", "configuration OK: 1 JWT provider,"},
		},
		{
			name:   "not found",
			status: http.StatusNotFound,
			code:   2,
			stderr: []string{"gatehouse validate: jwt.providers[0] (corp): JWKS from ", "/jwks.json: ", "404", "check the URL"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.NewJWKSServer(t, testutil.JWKS(t, testutil.NewKey(t, jwa.RS256, "uri-1")))
			srv.SetStatus(tc.status)
			p := filepath.Join(t.TempDir(), "gatehouse.yaml")
			cfg := fmt.Sprintf("jwt:\n  providers:\n    - name: corp\n      issuer: https://issuer.example\n      audiences: [orders]\n      jwks_uri: %s/jwks.json\n      fetch_timeout: 2s\n", srv.URL)
			if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			r := runMain("validate", "--config", p, "--jwks")
			r.check(t, tc.code, tc.stdout, tc.stderr)
			if tc.code != 0 && strings.Contains(r.stdout, "configuration OK") {
				t.Errorf("stdout says OK after a failed fetch:\n%s", r.stdout)
			}
			if srv.Hits() == 0 {
				t.Errorf("--jwks did not fetch %s", srv.URL)
			}
		})
	}
}
