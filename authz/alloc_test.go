package authz

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// TestAllocationBudget holds the hot paths to the allocation budget
// written in docs/performance.md. Allocation counts are deterministic for a
// given build (unlike times), so this is a regression test, not a timing.
func TestAllocationBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	req := checkReq("GET", "/orders/42?expand=items", map[string]string{
		"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "3f1c", "x-forwarded-proto": "https",
		"x-tenant-id": "acme", "x-env": "prod",
	}, "")
	trusted := checkReq("GET", "/orders/42", map[string]string{"user-agent": "scanner/1.0"}, "")
	trusted.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"
	rules := config.HeaderRules{
		Require:     []config.HeaderMatch{{Name: "x-tenant-id"}},
		Deny:        []config.HeaderMatch{{Name: "x-debug"}, {Name: "user-agent", Regex: "(?i)sqlmap|nikto"}},
		AllowValues: []config.HeaderValues{{Name: "x-env", Values: []string{"prod", "staging"}}},
	}
	valid := fixedTokens{&gjwt.Result{Valid: true, Provider: "corp", Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}}
	docsDir := policyDir(t, map[string]string{"p.rego": testutil.DocsPolicy})
	docsReq := checkReq("GET", "/people?lang=en&lang=fr&page=2", map[string]string{"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "3f1c"}, "")
	cases := []struct {
		name   string
		paths  []string
		tokens TokenVerifier
		req    *authv3.CheckRequest
		budget float64
	}{
		{"trusted ip", nil, nil, trusted, 11},
		{"valid token, header rules", nil, valid, req, 18},
		{"no token (401)", nil, nil, req, 29},
		// Custom Rego: OPA's evaluation of the policy, plus the input parts it reads.
		{"docs policy (custom Rego)", []string{docsDir}, nil, docsReq, 131},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := benchServer(t, withBypass(cidrs(10), rules), tc.paths, tc.tokens)
			ctx := context.Background()
			got := testing.AllocsPerRun(200, func() { _, _ = s.Check(ctx, tc.req) })
			if got > tc.budget {
				t.Errorf("%.0f allocations per Check, budget %.0f: find what was added to the hot path, or raise the budget in docs/performance.md with a reason", got, tc.budget)
			}
		})
	}
}
