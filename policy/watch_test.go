package policy

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
	// Let the watcher register before the test writes.
	time.Sleep(100 * time.Millisecond)
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

	// A broken write is logged and the last good revision keeps deciding.
	testutil.WriteAtomic(t, policyFile, "package envoy.authz\n\nallow := {\n")
	testutil.Eventually(t, watchDeadline, "the reload failure to be logged", func() bool {
		return strings.Contains(logs.String(), "policy reload failed, keeping revision "+good)
	})
	mustContain(t, logs.String(), "policy.rego:")
	if e.Revision() != good || !allowed(t, e) {
		t.Errorf("revision %s (want %s) after a broken write", e.Revision(), good)
	}

	// A data file in a new subdirectory is picked up too (plain write, no rename).
	testutil.WriteFiles(t, dir, map[string]string{"policy.rego": "package envoy.authz\n\nallow := data.flags.open\n"})
	if err := os.MkdirAll(filepath.Join(dir, "flags"), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * watchDebounce) // let the new directory be watched
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
