package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/policy"
)

func TestPolicyTest(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		notStdout  []string
		wantStderr string
	}{
		{
			name:     "a failing test fails the run",
			args:     []string{"testdata/rego/mixed"},
			wantCode: exitNo,
			wantStdout: []string{
				"data.example.authz_test.test_allows_with_header: PASS (",
				"data.example.authz_test.test_allows_without_header: FAIL (",
				"  at testdata/rego/mixed/authz_test.rego:10\n",
				"\n1 passed, 1 failed\n",
			},
			notStdout: []string{"embedded/"},
		},
		{
			name:       "all pass, skipped counted",
			args:       []string{"testdata/rego/passing"},
			wantCode:   exitOK,
			wantStdout: []string{"data.example.authz_test.test_denies_without_header: PASS", "SKIPPED", "\n2 passed, 0 failed, 1 skipped\n"},
			notStdout:  []string{"checking x-allow", " at "},
		},
		{
			name:       "verbose shows print output",
			args:       []string{"testdata/rego/passing", "-v"},
			wantCode:   exitOK,
			wantStdout: []string{"  | checking x-allow\n", "  at testdata/rego/passing/authz_test.rego:5\n"},
		},
		{
			name:       "run filter, flags after the directory",
			args:       []string{"testdata/rego/mixed", "--run", "with_header$"},
			wantCode:   exitOK,
			wantStdout: []string{"\n1 passed, 0 failed\n"},
			notStdout:  []string{"test_allows_without_header"},
		},
		{
			name:       "no test matched is a failure",
			args:       []string{"testdata/rego/mixed", "--run", "nothing_matches"},
			wantCode:   exitNo,
			wantStdout: []string{"0 passed, 0 failed (no tests ran)"},
		},
		{
			name:       "compile error names file and line",
			args:       []string{"testdata/rego/broken"},
			wantCode:   exitError,
			wantStderr: "testdata/rego/broken/bad.rego:5",
		},
		{
			name:       "v0 syntax needs --v0",
			args:       []string{"testdata/rego/v0"},
			wantCode:   exitError,
			wantStderr: "testdata/rego/v0/legacy.rego:5",
		},
		{
			name:       "v0 syntax with --v0",
			args:       []string{"--v0", "testdata/rego/v0"},
			wantCode:   exitOK,
			wantStdout: []string{"data.legacy.test_alice: PASS", "1 passed, 0 failed"},
		},
		{name: "no paths", args: nil, wantCode: exitError, wantStderr: "at least one"},
		{name: "bad regex", args: []string{"testdata/rego/mixed", "--run", "("}, wantCode: exitError, wantStderr: "--run"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"policy", "test"}, tc.args...)...)
			r.wantCode(t, tc.wantCode)
			for _, want := range tc.wantStdout {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
				}
			}
			for _, not := range tc.notStdout {
				if strings.Contains(r.stdout, not) {
					t.Errorf("stdout contains %q:\n%s", not, r.stdout)
				}
			}
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
		})
	}
}

func TestWriteTestResults(t *testing.T) {
	var b strings.Builder
	err := writeTestResults(&b, []policy.TestResult{
		{Package: "p", Name: "test_a", Pass: true, Duration: time.Millisecond},
		{Package: "p", Name: "test_b", Err: os.ErrNotExist, Location: "p_test.rego:3"},
	}, false)
	if err != errTestsFailed {
		t.Errorf("err = %v, want errTestsFailed", err)
	}
	for _, want := range []string{"data.p.test_a: PASS (1ms)\n", "data.p.test_b: ERROR (0s)\n  at p_test.rego:3\n  error: file does not exist\n", "1 passed, 1 failed\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output does not contain %q:\n%s", want, b.String())
		}
	}
}

func writeInput(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "input.json")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyEval(t *testing.T) {
	allowInput := writeInput(t, `{"attributes": {"request": {"http": {"method": "GET", "path": "/", "headers": {"x-allow": "yes"}}}}}`)
	denyInput := writeInput(t, `{"attributes": {"request": {"http": {"method": "GET", "path": "/", "headers": {}}}}}`)
	badInput := writeInput(t, `{"attributes": `)

	t.Run("allowed", func(t *testing.T) {
		r := runCLI(t, "policy", "eval", "--input", allowInput, "--policy", "testdata/rego/eval")
		r.wantCode(t, exitOK)
		for _, want := range []string{"ALLOWED\n", "reason:         ok\n", "revision:       ", "headers to add (upstream request):\n  x-user: alice\n",
			"headers to remove (upstream request):\n  x-debug\n", "query parameters to set:\n  tenant=acme\n", `"user": "alice"`} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "grpc status") {
			t.Errorf("eval printed a gRPC status:\n%s", r.stdout)
		}
	})
	t.Run("denied", func(t *testing.T) {
		r := runCLI(t, "policy", "eval", "--input", denyInput, "--policy", "testdata/rego/eval")
		r.wantCode(t, exitNo)
		for _, want := range []string{"DENIED\n", "http status:    401 Unauthorized\n", "reason:         token_missing\n",
			"headers (sent to the client):\n  www-authenticate: Bearer\n", "body:\n  who are you?\n"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("json from stdin", func(t *testing.T) {
		data, _ := os.ReadFile(denyInput)
		r := runCLIStdin(t, string(data), "policy", "eval", "--json", "--input", "-", "--policy", "testdata/rego/eval")
		r.wantCode(t, exitNo)
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("%v\n%s", err, r.stdout)
		}
		rev, _ := got["revision"].(string)
		if rev == "" {
			t.Errorf("no revision: %v", got)
		}
		want := map[string]any{
			"allowed": false, "http_status": float64(401), "body": "who are you?", "reason": "token_missing", "bypass": false,
			"revision": rev, "headers": []any{map[string]any{"key": "www-authenticate", "value": "Bearer", "append": nil}},
			"headers_to_remove": []any{}, "response_headers_to_add": []any{}, "query_parameters_to_set": []any{},
			"query_parameters_to_remove": []any{}, "dynamic_metadata": map[string]any{},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %v\nwant %v", got, want)
		}
	})
	t.Run("embedded default policy", func(t *testing.T) {
		r := runCLI(t, "policy", "eval", "--input", denyInput)
		r.wantCode(t, exitNo)
		if !strings.Contains(r.stdout, "DENIED\n") || !strings.Contains(r.stdout, "reason:") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})

	errTests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{name: "undefined decision", args: []string{"--input", denyInput, "--policy", "testdata/rego/eval", "--decision", "envoy/authz/nothing"}, wantStderr: "policy_undefined"},
		{name: "bad result type", args: []string{"--input", denyInput, "--policy", "testdata/rego/eval", "--decision", "envoy.authz.wrong_type"}, wantStderr: "policy_bad_result"},
		{name: "broken policy", args: []string{"--input", denyInput, "--policy", "testdata/rego/broken"}, wantStderr: "bad.rego:5"},
		{name: "malformed input", args: []string{"--input", badInput, "--policy", "testdata/rego/eval"}, wantStderr: "--input"},
		{name: "missing input", args: []string{"--policy", "testdata/rego/eval"}, wantStderr: "--input is required"},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"policy", "eval"}, tc.args...)...)
			r.wantCode(t, exitError)
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
		})
	}
}
