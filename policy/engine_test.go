package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

func TestRegoVersion(t *testing.T) {
	tests := []struct {
		name    string
		version string
		wantErr []string // substrings; nil means New succeeds
	}{
		{name: "v0 policy under v1 fails", version: "", wantErr: []string{"policy.rego:6:1", "`if` keyword is required"}},
		{name: "v0 policy under explicit v1 fails", version: "v1", wantErr: []string{"policy.rego:6"}},
		{name: "v0 policy under v0 works", version: "v0"},
		{name: "unknown version", version: "v3", wantErr: []string{"v3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(context.Background(), Options{Paths: []string{"testdata/v0"}, RegoVersion: tc.version})
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("New succeeded, want an error")
				}
				mustContain(t, err.Error(), tc.wantErr...)
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for method, want := range map[string]bool{"GET": true, "POST": false} {
				in := mustInput(t, fmt.Sprintf(`{"attributes": {"request": {"http": {"method": %q}}}}`, method))
				d, err := e.Eval(context.Background(), in)
				if err != nil {
					t.Fatalf("Eval: %v", err)
				}
				if d.Allowed != want {
					t.Errorf("%s: Allowed = %v, want %v", method, d.Allowed, want)
				}
			}
		})
	}
}

func TestBrokenPolicies(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{file: "parse_error.rego", want: []string{"parse_error.rego:5:1", "rego_parse_error"}},
		{file: "compile_error.rego", want: []string{"compile_error.rego:4:2", "rego_type_error", "no_such_function"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, err := New(context.Background(), Options{Paths: []string{filepath.Join("testdata/broken", tc.file)}})
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			mustContain(t, err.Error(), tc.want...)
		})
	}
}

func TestDataAndConfig(t *testing.T) {
	config := map[string]any{
		"bypass": map[string]any{"trusted_ips": []string{"10.9.9.9"}, "paths": []string{"/healthz"}},
	}
	e, err := New(context.Background(), Options{Paths: []string{"testdata/data"}, Config: config})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tests := []struct {
		name  string
		input string
		want  bool
	}{
		{name: "user from acl/users.json at data.acl", input: `{"user": "bob"}`, want: true},
		{name: "unknown user", input: `{"user": "mallory"}`, want: false},
		{name: "config at data.gatehouse.config", input: `{"client_ip": "10.9.9.9"}`, want: true},
		{name: "root yaml at data.tiers", input: `{"tier": "platinum"}`, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.Eval(context.Background(), mustInput(t, tc.input))
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if d.Allowed != tc.want {
				t.Errorf("Allowed = %v, want %v", d.Allowed, tc.want)
			}
		})
	}

	t.Run("config merges with data files", func(t *testing.T) {
		e, _ := newTestEngine(t, map[string]string{
			"policy.rego": "package envoy.authz\n\nallow if {\n\tdata.gatehouse.config.from_file\n" +
				"\tdata.gatehouse.config.bypass.paths[0] == \"/healthz\"\n}\n",
			"gatehouse/config/extra.json": `{"from_file": true}`,
		}, Options{Config: config})
		d, err := e.Eval(context.Background(), mustInput(t, `{}`))
		if err != nil || !d.Allowed {
			t.Fatalf("Eval = %+v, %v; want allowed", d, err)
		}
	})

	t.Run("config conflicting with a data file", func(t *testing.T) {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{
			"policy.rego":                "package envoy.authz\n\nallow := true\n",
			"gatehouse/config/data.json": `{"bypass": {"paths": ["/other"]}}`,
		})
		_, err := New(context.Background(), Options{Paths: []string{dir}, Config: config})
		if err == nil {
			t.Fatal("New succeeded, want a conflict error")
		}
		mustContain(t, err.Error(), "data.gatehouse.config.bypass.paths")
	})
}

func TestDecisionPath(t *testing.T) {
	files := map[string]string{"policy.rego": "package my.authz\n\nverdict := {\"allowed\": true, \"reason\": \"custom\"}\n"}
	for _, path := range []string{"my/authz/verdict", "my.authz.verdict", "data.my.authz.verdict", "/my/authz/verdict"} {
		t.Run(path, func(t *testing.T) {
			e, _ := newTestEngine(t, files, Options{Decision: path})
			d, err := e.Eval(context.Background(), mustInput(t, `{}`))
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if !d.Allowed || d.Reason != "custom" {
				t.Errorf("decision = %+v", d)
			}
		})
	}
	t.Run("missing decision warns", func(t *testing.T) {
		var logs testutil.LockedBuffer
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, files)
		e, err := New(context.Background(), Options{Paths: []string{dir}, Logger: logs.TextLogger(slog.LevelInfo)})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		mustContain(t, logs.String(), "no rule defines the decision", "data.envoy.authz.allow")
		if _, err := e.Eval(context.Background(), mustInput(t, `{}`)); evalReason(t, err) != ReasonUndefined {
			t.Errorf("Eval err = %v, want %s", err, ReasonUndefined)
		}
	})
}

func TestEmbeddedDefault(t *testing.T) {
	e, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatalf("New with the embedded policy: %v", err)
	}
	if e.Revision() == "" || !e.Ready() {
		t.Errorf("Revision %q, Ready %v", e.Revision(), e.Ready())
	}
	// The decision itself belongs to the embedded policy's own tests; here it
	// must only be a decision or one of the documented failures.
	if _, err := e.Eval(context.Background(), mustInput(t, `{}`)); err != nil {
		switch reason := evalReason(t, err); reason {
		case ReasonUndefined, ReasonBadResult, ReasonError:
		default:
			t.Errorf("reason %q", reason)
		}
	}
	if err := e.Watch(context.Background()); err != nil {
		t.Errorf("Watch without paths = %v, want nil at once", err)
	}
}

func TestReload(t *testing.T) {
	var logs testutil.LockedBuffer
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.rego")
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": "package envoy.authz\n\nallow := false\n"})
	e, err := New(context.Background(), Options{Paths: []string{dir}, Logger: logs.TextLogger(slog.LevelInfo)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx := context.Background()
	in := mustInput(t, `{}`)
	first := e.Revision()

	// Unchanged: same revision, nothing logged as reloaded.
	if err := e.Reload(ctx); err != nil || e.Revision() != first {
		t.Fatalf("Reload unchanged = %v, revision %s -> %s", err, first, e.Revision())
	}

	// Broken: the error names file and line, the old revision keeps deciding.
	broken, err := os.ReadFile("testdata/broken/compile_error.rego")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteAtomic(t, policyFile, string(broken))
	err = e.Reload(ctx)
	if err == nil {
		t.Fatal("Reload of a broken policy succeeded")
	}
	mustContain(t, err.Error(), "policy.rego:4:2", "no_such_function")
	mustContain(t, logs.String(), "policy reload failed, keeping revision "+first, "policy.rego:4:2")
	if e.Revision() != first {
		t.Errorf("revision changed to %s after a failed reload", e.Revision())
	}
	if d, err := e.Eval(ctx, in); err != nil || d.Allowed || d.Revision != first {
		t.Errorf("Eval after failed reload = %+v, %v", d, err)
	}

	// Good again: a new revision with the new decision.
	testutil.WriteAtomic(t, policyFile, "package envoy.authz\n\nallow := true\n")
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	second := e.Revision()
	if second == first {
		t.Fatal("revision did not change")
	}
	if d, err := e.Eval(ctx, in); err != nil || !d.Allowed || d.Revision != second {
		t.Errorf("Eval after reload = %+v, %v", d, err)
	}
	mustContain(t, logs.String(), "policy reloaded", "old_revision="+first, "revision="+second)

	// A cancelled context aborts the reload and keeps the revision.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	testutil.WriteAtomic(t, policyFile, "package envoy.authz\n\nallow := false\n")
	if err := e.Reload(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Reload with cancelled ctx = %v", err)
	}
	if e.Revision() != second {
		t.Errorf("revision changed on a cancelled reload")
	}
}

func TestEvalHonoursContext(t *testing.T) {
	// Three nested loops over 3,000 items never finish on their own.
	e, _ := newTestEngine(t, map[string]string{"policy.rego": `package envoy.authz

xs := numbers.range(1, 3000)

allow if {
	some i in xs
	some j in xs
	some k in xs
	i + j + k < 0
}
`}, Options{})

	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.Eval(ctx, mustInput(t, `{}`))
		if evalReason(t, err) != ReasonError || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("deadline during evaluation", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := e.Eval(ctx, mustInput(t, `{}`))
		if evalReason(t, err) != ReasonTimeout || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v", err)
		}
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Errorf("evaluation ran %s past its deadline", elapsed)
		}
	})
	t.Run("New with cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := New(ctx, Options{Paths: []string{"testdata/v0"}, RegoVersion: "v0"}); !errors.Is(err, context.Canceled) {
			t.Errorf("New = %v, want context.Canceled", err)
		}
	})
}

func TestConcurrentEvalDuringReload(t *testing.T) {
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.rego")
	policyFor := func(allow bool) string {
		return fmt.Sprintf("package envoy.authz\n\nallow := {\"allowed\": %v, \"reason\": \"r-%v\"}\n", allow, allow)
	}
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": policyFor(false)})
	e, err := New(context.Background(), Options{Paths: []string{dir}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Each revision decides one way; remember which, to check every decision
	// against the revision that made it.
	var expect sync.Map
	expect.Store(e.Revision(), false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := mustInput(t, `{"attributes": {"request": {"http": {"method": "GET"}}}}`)
	var wg sync.WaitGroup
	var evals atomic.Int64
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				d, err := e.Eval(context.Background(), in)
				if err != nil {
					errs <- err
					return
				}
				want, ok := expect.Load(d.Revision)
				if !ok || want.(bool) != d.Allowed || d.Reason != fmt.Sprintf("r-%v", d.Allowed) {
					errs <- fmt.Errorf("revision %s decided %+v, want allowed=%v", d.Revision, d, want)
					return
				}
				evals.Add(1)
			}
		})
	}
	for i := range 8 {
		allow := i%2 == 0
		testutil.WriteAtomic(t, policyFile, policyFor(allow))
		// Record the expectation before the swap can be observed.
		src, err := loadSources(e.paths, e.version, e.config, false, embedFor(e.paths), false)
		if err != nil {
			t.Fatal(err)
		}
		hash, err := revisionHash(src, e.version, e.decision)
		if err != nil {
			t.Fatal(err)
		}
		expect.Store(hash, allow)
		if err := e.Reload(context.Background()); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if evals.Load() == 0 {
		t.Error("no evaluations ran")
	}
}

func TestInputFromJSON(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
	}{
		{in: `{"a": [1, 2.5, "x", null, true]}`},
		{in: `{"big": 12345678901234567890}`},
		{in: `{"a": 1} {"b": 2}`, wantErr: true},
		{in: `{"a": `, wantErr: true},
		{in: ``, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			v, err := InputFromJSON([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && strings.TrimSpace(v.String()) == "" {
				t.Error("empty value")
			}
		})
	}
}

// TestSetRules: new rules take effect at once, in one new revision; rules
// that fail to compile leave the active revision and its rules in place.
func TestSetRules(t *testing.T) {
	ctx := context.Background()
	rules := Rules{Providers: []string{"corp"}}
	e, err := New(ctx, Options{Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	facts := &Facts{Path: "/healthz", Method: "GET", Headers: map[string]string{}}
	decide := func() Decision {
		d, err := e.Decide(ctx, facts, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := decide(); d.Reason != ReasonTokenMissing {
		t.Fatalf("before: %q", d.Reason)
	}
	first := e.Revision()
	public := rules
	public.Authorization.Rules = []AuthzRule{{Name: "health", Action: ActionAllow, Paths: []string{"/healthz"}}}
	if err := e.SetRules(ctx, public); err != nil {
		t.Fatal(err)
	}
	if d := decide(); d.Reason != "rule_allowed:health" || e.Revision() == first {
		t.Fatalf("after: %q, revision %s (was %s)", d.Reason, e.Revision(), first)
	}
	good := e.Revision()
	broken := public
	broken.Require = []HeaderMatch{{Name: "x-a", Regex: "("}}
	if err := e.SetRules(ctx, broken); err == nil {
		t.Fatal("rules with a broken regex were accepted")
	}
	if d := decide(); d.Reason != "rule_allowed:health" || e.Revision() != good {
		t.Fatalf("after a failed replacement: %q, revision %s (want %s)", d.Reason, e.Revision(), good)
	}
	// The last good rules are the ones a policy file reload builds on.
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := decide(); d.Reason != "rule_allowed:health" {
		t.Fatalf("after a reload: %q", d.Reason)
	}
}
