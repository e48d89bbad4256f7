package authz

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// buildInput is the whole input document for r, as a policy that reads all
// of it gets.
func buildInput(r *request, ip clientip.Result, tok *jwt.Result, maxParseBody int) (ast.Value, error) {
	r.buildFacts(ip, tok)
	r.maxParseBody, r.maxJSONDepth = maxParseBody, DefaultLimits.MaxJSONDepth
	return r.BuildInput(policy.NeedAll())
}

func mustTerm(t *testing.T, lit string) ast.Value {
	t.Helper()
	v, err := ast.ParseTerm(lit)
	if err != nil {
		t.Fatal(err)
	}
	return v.Value
}

// newNativeServer is a Server on the embedded default decision over rules
// (decided natively), with the peer as client IP and no JWT providers.
func newNativeServer(t *testing.T, rules policy.Rules) *Server {
	t.Helper()
	e, err := policy.New(context.Background(), policy.Options{Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Policy: e})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
