package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// compileActivation compiles modules as OPA's plugin manager would and pairs
// them with data.
func compileActivation(t *testing.T, revision string, modules map[string]string, data string) Activation {
	t.Helper()
	parsed := map[string]*ast.Module{}
	for name, src := range modules {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		parsed[name] = m
	}
	c := ast.NewCompiler()
	if c.Compile(parsed); c.Failed() {
		t.Fatal(c.Errors)
	}
	return Activation{Compiler: c, Data: ast.MustParseTerm(data).Value.(ast.Object), Revision: revision}
}

// TestActivation: an engine awaiting activation is not ready and denies
// (fail closed) until the first Activate; then it decides with the activated
// modules and data, and a failed activation keeps the last good revision and
// is reported.
func TestActivation(t *testing.T) {
	ctx := context.Background()
	e, err := NewAwaitingActivation(ctx, Options{Decision: "istio/authz/allow"})
	if err != nil {
		t.Fatal(err)
	}
	in := mustInput(t, `{"user": "alice"}`)
	if e.Ready() {
		t.Error("ready before any activation")
	}
	if _, err := e.Eval(ctx, in); evalReason(t, err) != ReasonUndefined {
		t.Errorf("before activation: err %v, want %s", err, ReasonUndefined)
	}
	if err := e.Reload(ctx); err == nil {
		t.Error("Reload of an engine awaiting activation succeeded")
	}

	policy := map[string]string{"authz.rego": `package istio.authz
default allow := false
allow if input.user in data.users`}
	if err := e.Activate(ctx, compileActivation(t, "r1", policy, `{"users": ["alice"]}`)); err != nil {
		t.Fatal(err)
	}
	if !e.Ready() || e.Revision() != "r1" {
		t.Fatalf("after activation: ready %v revision %q", e.Ready(), e.Revision())
	}
	d, err := e.Eval(ctx, in)
	if err != nil || !d.Allowed || d.Revision != "r1" {
		t.Fatalf("r1: %+v, %v; want allowed by r1", d, err)
	}

	if err := e.Activate(ctx, compileActivation(t, "r2", policy, `{"users": ["bob"]}`)); err != nil {
		t.Fatal(err)
	}
	if d, err := e.Eval(ctx, in); err != nil || d.Allowed || d.Revision != "r2" {
		t.Fatalf("r2: %+v, %v; want denied by r2", d, err)
	}

	if err := e.Activate(ctx, Activation{Revision: "broken"}); err == nil {
		t.Fatal("an activation without a compiler succeeded")
	}
	if e.Revision() != "r2" || e.LastReloadError() == nil {
		t.Errorf("after a failed activation: revision %q, last error %v; want r2 kept and the error", e.Revision(), e.LastReloadError())
	}
	if err := e.Activate(ctx, compileActivation(t, "r3", policy, `{"users": ["alice"]}`)); err != nil {
		t.Fatal(err)
	}
	if e.LastReloadError() != nil {
		t.Errorf("the last error survived a good activation: %v", e.LastReloadError())
	}
}
