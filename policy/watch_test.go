package policy

import (
	"context"
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

const watchDeadline = 3 * watchPoll // generous: events arrive in ~watchDebounce

func allowPolicy(allow bool) string {
	if allow {
		return "package envoy.authz\n\nallow := true\n"
	}
	return "package envoy.authz\n\nallow := false\n"
}

// startWatch runs Watch until the test ends and checks it returns nil.
func startWatch(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return after cancellation")
		}
	})
	// A write after this is seen: the watches are registered.
	select {
	case <-e.Watching():
	case err := <-done:
		t.Fatalf("Watch returned before watching: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Watch never started watching")
	}
}

func allowed(t *testing.T, e *Engine) bool {
	t.Helper()
	d, err := e.Eval(context.Background(), mustInput(t, `{}`))
	return err == nil && d.Allowed
}

func TestWatchDirectory(t *testing.T) {
	var logs testutil.LockedBuffer
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": allowPolicy(false)})
	e, err := New(context.Background(), Options{Paths: []string{dir}, Logger: logs.TextLogger(slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, e)
	policyFile := filepath.Join(dir, "policy.rego")

	testutil.WriteAtomic(t, policyFile, allowPolicy(true))
	testutil.Eventually(t, watchDeadline, "the new policy to allow", func() bool { return allowed(t, e) })
	good := e.Revision()

	// A broken write fails its reload, and the last good revision keeps
	// deciding; the failure is logged, naming the file.
	testutil.WriteAtomic(t, policyFile, "package envoy.authz\n\nallow := {\n")
	testutil.Eventually(t, watchDeadline, "the reload to fail", func() bool { return e.LastReloadError() != nil })
	if msg := e.LastReloadError().Err.Error(); !strings.Contains(msg, "policy.rego:") {
		t.Errorf("the reload error does not name the file and line: %s", msg)
	}
	mustContain(t, logs.String(), "policy reload failed, keeping revision "+good)
	if e.Revision() != good || !allowed(t, e) {
		t.Errorf("revision %s (want %s) after a broken write", e.Revision(), good)
	}

	// A data file in a new subdirectory is picked up too (plain write, no rename).
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": "package envoy.authz\n\nallow := data.flags.open\n"})
	if err := os.MkdirAll(filepath.Join(dir, "flags"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The reload of that policy (which also watches the new directory) is
	// a new revision; the data file is written after it.
	testutil.Eventually(t, watchDeadline, "the data-driven policy to load", func() bool {
		return e.Revision() != good && e.LastReloadError() == nil
	})
	testutil.WriteFiles(t, dir, map[string]string{"flags/data.json": `{"open": false}`})
	testutil.Eventually(t, watchDeadline, "the data-driven policy to deny", func() bool { return !allowed(t, e) })
	testutil.WriteFiles(t, dir, map[string]string{"flags/data.json": `{"open": true}`})
	testutil.Eventually(t, watchDeadline, "the data change to allow", func() bool { return allowed(t, e) })
}

func TestWatchExplicitFile(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": allowPolicy(false)})
	policyFile := filepath.Join(dir, "policy.rego")
	e, err := New(context.Background(), Options{Paths: []string{policyFile}})
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, e)
	testutil.WriteAtomic(t, policyFile, allowPolicy(true))
	testutil.Eventually(t, watchDeadline, "the new policy to allow", func() bool { return allowed(t, e) })
}

// TestWatchConfigMapSwap mimics a Kubernetes ConfigMap volume: the files are
// symlinks through "..data" to a timestamped directory, and an update swaps
// the ..data symlink atomically to a new directory.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, map[string]string{"..2024_01_01_00_00_00.1/policy.rego": allowPolicy(false)})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2024_01_01_00_00_00.1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/policy.rego", filepath.Join(dir, "policy.rego")))

	e, err := New(context.Background(), Options{Paths: []string{dir}})
	if err != nil {
		t.Fatalf("New over a ConfigMap layout (files must not load twice): %v", err)
	}
	if allowed(t, e) {
		t.Fatal("initial policy allows")
	}
	startWatch(t, e)

	testutil.WriteFiles(t, dir, map[string]string{"..2024_01_01_00_00_00.2/policy.rego": allowPolicy(true)})
	must(os.Symlink("..2024_01_01_00_00_00.2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2024_01_01_00_00_00.1")))
	testutil.Eventually(t, watchDeadline, "the swapped policy to allow", func() bool { return allowed(t, e) })
}

// reasonPolicy allows with a reason naming the version, so a test can tell
// which revision decided.
func reasonPolicy(version string) string {
	return "package envoy.authz\n\nallow := {\"allowed\": true, \"reason\": \"" + version + "\"}\n"
}

// decidedBy returns the reason of the decision on an empty input ("" when
// evaluation fails) and the revision that made it.
func decidedBy(t *testing.T, e *Engine) (reason, revision string) {
	t.Helper()
	d, err := e.Eval(context.Background(), mustInput(t, `{}`))
	if err != nil {
		return "", d.Revision
	}
	return d.Reason, d.Revision
}

// TestWatchFaults: what operators and Kubernetes do to a policy directory
// while the server runs. A change that leaves no loadable policy (a broken
// file, a missing directory, every file deleted) is logged and the last good
// revision keeps deciding. Repairing it takes effect without a restart.
func TestWatchFaults(t *testing.T) {
	type layout struct {
		dir  string // the directory watched (policy.paths)
		root string // where the fault happens
	}
	plain := func(t *testing.T) layout {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{"policy.rego": reasonPolicy("v1")})
		return layout{dir, dir}
	}
	// A ConfigMap volume: policy.rego -> ..data/policy.rego, ..data -> a
	// timestamped directory; an update swaps the ..data symlink.
	configMap := func(t *testing.T) layout {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{"..v1/policy.rego": reasonPolicy("v1")})
		mustDo(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
		mustDo(t, os.Symlink("..data/policy.rego", filepath.Join(dir, "policy.rego")))
		return layout{dir, dir}
	}
	swapData := func(t *testing.T, dir, version, body string) {
		testutil.WriteFiles(t, dir, map[string]string{".." + version + "/policy.rego": body})
		mustDo(t, os.Symlink(".."+version, filepath.Join(dir, "..data_tmp")))
		mustDo(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	// nested: the watched path is a subdirectory, so it can be deleted and
	// recreated under a parent the test keeps.
	nested := func(t *testing.T) layout {
		root := t.TempDir()
		dir := filepath.Join(root, "policies")
		testutil.WriteFiles(t, dir, map[string]string{"policy.rego": reasonPolicy("v1")})
		return layout{dir, root}
	}
	const broken = "package envoy.authz\n\nallow := {\n"
	cases := []struct {
		name   string
		setup  func(t *testing.T) layout
		fault  func(t *testing.T, l layout)
		repair func(t *testing.T, l layout)
		// emptied: the fault leaves a valid empty policy instead of a failed
		// reload.
		emptied bool
	}{
		{
			name:  "replaced by a broken file",
			setup: plain,
			fault: func(t *testing.T, l layout) { testutil.WriteAtomic(t, filepath.Join(l.dir, "policy.rego"), broken) },
			repair: func(t *testing.T, l layout) {
				testutil.WriteAtomic(t, filepath.Join(l.dir, "policy.rego"), reasonPolicy("v2"))
			},
		},
		{
			name:  "deleted",
			setup: plain,
			fault: func(t *testing.T, l layout) { mustDo(t, os.Remove(filepath.Join(l.dir, "policy.rego"))) },
			repair: func(t *testing.T, l layout) {
				testutil.WriteAtomic(t, filepath.Join(l.dir, "policy.rego"), reasonPolicy("v2"))
			},
		},
		{
			name:   "ConfigMap swap to a broken policy",
			setup:  configMap,
			fault:  func(t *testing.T, l layout) { swapData(t, l.dir, "broken", broken) },
			repair: func(t *testing.T, l layout) { swapData(t, l.dir, "v2", reasonPolicy("v2")) },
		},
		{
			name:  "directory deleted and recreated",
			setup: nested,
			fault: func(t *testing.T, l layout) { mustDo(t, os.RemoveAll(l.dir)) },
			repair: func(t *testing.T, l layout) {
				testutil.WriteFiles(t, l.dir, map[string]string{"policy.rego": reasonPolicy("v2")})
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.LockedBuffer
			l := tc.setup(t)
			e, err := New(context.Background(), Options{Paths: []string{l.dir}, Logger: logs.TextLogger(slog.LevelInfo)})
			if err != nil {
				t.Fatal(err)
			}
			reason, goodRev := decidedBy(t, e)
			if reason != "v1" {
				t.Fatalf("initial decision reason %q, want v1", reason)
			}
			startWatch(t, e)

			tc.fault(t, l)
			if tc.emptied {
				testutil.Eventually(t, watchDeadline, "the empty policy to deny as undefined", func() bool {
					_, err := e.Eval(context.Background(), mustInput(t, `{}`))
					return err != nil && evalReason(t, err) == ReasonUndefined
				})
				mustContain(t, logs.String(), "no rule defines the decision")
			} else {
				testutil.Eventually(t, watchDeadline, "the reload to fail", func() bool { return e.LastReloadError() != nil })
				mustContain(t, logs.String(), "policy reload failed")
				if reason, rev := decidedBy(t, e); reason != "v1" || rev != goodRev {
					t.Fatalf("after the fault: reason %q revision %s, want the last good v1 (%s)\n%s", reason, rev, goodRev, logs.String())
				}
			}
			if !e.Ready() {
				t.Fatal("a failed reload must not make the engine unready")
			}

			tc.repair(t, l)
			testutil.Eventually(t, watchDeadline, "the repaired policy to decide", func() bool {
				reason, _ := decidedBy(t, e)
				return reason == "v2"
			})
		})
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatchReloadStorm: 100 rewrites in about a second while checks run
// (run with -race). Every decision comes whole from one revision (its
// allowed and its reason agree), no evaluation fails, and once the storm is
// over the last write decides.
func TestWatchReloadStorm(t *testing.T) {
	const rewrites = 100
	policyFor := func(i int) string {
		allow := i%2 == 0
		return fmt.Sprintf("package envoy.authz\n\nallow := {\"allowed\": %v, \"reason\": \"rev-%d-%v\"}\n", allow, i, allow)
	}
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.rego")
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": policyFor(0)})
	e, err := New(context.Background(), Options{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, e)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := mustInput(t, `{}`)
	var wg sync.WaitGroup
	var evals atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				d, err := e.Eval(context.Background(), in)
				if err != nil {
					errs <- fmt.Errorf("evaluation failed during the storm: %w", err)
					return
				}
				if !strings.HasSuffix(d.Reason, fmt.Sprintf("-%v", d.Allowed)) {
					errs <- fmt.Errorf("torn decision: allowed %v with reason %q (revision %s)", d.Allowed, d.Reason, d.Revision)
					return
				}
				evals.Add(1)
			}
		})
	}
	for i := 1; i < rewrites; i++ {
		testutil.WriteAtomic(t, policyFile, policyFor(i))
		time.Sleep(10 * time.Millisecond)
	}
	last := fmt.Sprintf("rev-%d-%v", rewrites-1, (rewrites-1)%2 == 0)
	testutil.Eventually(t, watchDeadline, "the last write to decide", func() bool {
		reason, _ := decidedBy(t, e)
		return reason == last
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if evals.Load() == 0 {
		t.Error("no evaluations ran during the storm")
	}
}
