package policy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// newTestEngine writes files into a temporary directory and builds an Engine
// over it.
func newTestEngine(t testing.TB, files map[string]string, opts Options) (*Engine, string) {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, files)
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

func mustContain(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}
