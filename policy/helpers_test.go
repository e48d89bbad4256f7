package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// logBuffer is a concurrency-safe log sink whose content tests can poll.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// writeFiles writes name -> content under dir, creating directories.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeAtomic replaces path the way editors and config tools do: write a
// temporary file beside it, then rename over it.
func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newTestEngine writes files into a temporary directory and builds an Engine
// over it.
func newTestEngine(t testing.TB, files map[string]string, opts Options) (*Engine, string) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	opts.Paths = []string{dir}
	e, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, dir
}

// mustInput parses a JSON input document.
func mustInput(t testing.TB, s string) ast.Value {
	t.Helper()
	v, err := InputFromJSON([]byte(s))
	if err != nil {
		t.Fatalf("InputFromJSON(%s): %v", s, err)
	}
	return v
}

// evalReason returns the EvalError reason of err, "" for nil, and fails the
// test for any other error type.
func evalReason(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ee *EvalError
	if !errors.As(err, &ee) {
		t.Fatalf("error %v (%T) is not an *EvalError", err, err)
	}
	return ee.Reason
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustContain(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}
