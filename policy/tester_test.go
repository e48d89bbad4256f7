package policy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

func TestRunTests(t *testing.T) {
	results, err := RunTests(context.Background(), TestOptions{Paths: []string{"testdata/tests"}})
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	type outcome struct{ pass, skip bool }
	want := map[string]outcome{
		"test_get_allowed":        {pass: true},
		"test_trusted_ip_allowed": {pass: true}, // needs gatehouse.cidr_contains
		"test_post_allowed_fails": {pass: false},
		"todo_test_later":         {skip: true},
	}
	if len(results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(results), len(want), results)
	}
	for _, r := range results {
		w, ok := want[r.Name]
		if !ok {
			t.Errorf("unexpected test %s", r.Name)
			continue
		}
		if r.Pass != w.pass || r.Skip != w.skip || r.Err != nil {
			t.Errorf("%s: pass=%v skip=%v err=%v, want pass=%v skip=%v", r.Name, r.Pass, r.Skip, r.Err, w.pass, w.skip)
		}
		if r.Package != "envoy.authz_test" || !strings.Contains(r.Location, "policy_test.rego:") {
			t.Errorf("%s: package %q location %q", r.Name, r.Package, r.Location)
		}
		if r.Name == "test_get_allowed" && !strings.Contains(r.Output, "checking GET") {
			t.Errorf("print output %q", r.Output)
		}
	}

	t.Run("filter", func(t *testing.T) {
		results, err := RunTests(context.Background(), TestOptions{Paths: []string{"testdata/tests"}, Run: "trusted"})
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != 1 || results[0].Name != "test_trusted_ip_allowed" || !results[0].Pass {
			t.Errorf("results %+v", results)
		}
	})
	t.Run("compile error names file and line", func(t *testing.T) {
		_, err := RunTests(context.Background(), TestOptions{Paths: []string{filepath.Join("testdata/broken", "compile_error.rego")}})
		if err == nil {
			t.Fatal("RunTests succeeded")
		}
		mustContain(t, err.Error(), "compile_error.rego:4:2")
	})
	t.Run("v0 tests", func(t *testing.T) {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{
			"p.rego":      "package p\n\nallow { input.x == 1 }\n",
			"p_test.rego": "package p\n\ntest_allow { allow with input as {\"x\": 1} }\n",
		})
		results, err := RunTests(context.Background(), TestOptions{Paths: []string{dir}, RegoVersion: "v0"})
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != 1 || !results[0].Pass {
			t.Errorf("results %+v", results)
		}
	})
	t.Run("embedded", func(t *testing.T) {
		results, err := RunTests(context.Background(), TestOptions{IncludeEmbedded: true})
		if err != nil {
			t.Fatalf("RunTests over the embedded policy: %v", err)
		}
		if len(results) < 10 {
			t.Fatalf("only %d embedded Rego tests ran; the default policy ships with its tests", len(results))
		}
		for _, r := range results {
			if !r.Pass && !r.Skip {
				t.Errorf("embedded test %s.%s failed: %v\n%s", r.Package, r.Name, r.Err, r.Output)
			}
		}
	})
}
