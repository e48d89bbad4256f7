package authz

import (
	"context"
	"fmt"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// benchServer builds a Server on the real policy engine. With paths empty it
// runs the embedded default policy over cfg's data.
func benchServer(b testing.TB, cfg *config.Config, paths []string, tokens TokenVerifier) *Server {
	return benchServerMetrics(b, cfg, paths, tokens, true)
}

// benchServerMetrics is benchServer with metrics on or off.
func benchServerMetrics(b testing.TB, cfg *config.Config, paths []string, tokens TokenVerifier, withMetrics bool) *Server {
	b.Helper()
	engine, err := policy.New(context.Background(), policy.Options{Paths: paths, Rules: ptrTo(cfg.Rules())})
	if err != nil {
		b.Fatal(err)
	}
	resolver, err := clientip.New(cfg.ClientIP.Options())
	if err != nil {
		b.Fatal(err)
	}
	// With metrics, as in production: the allocation budget and the
	// benchmarks include recording each decision.
	var metrics *Metrics
	if withMetrics {
		if metrics, err = NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := New(Options{Policy: engine, ClientIP: resolver, Tokens: tokens, ParseBody: true, Metrics: metrics})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func cidrs(n int) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		out = append(out, fmt.Sprintf("172.%d.%d.0/24", 16+i/256%16, i%256))
		if len(out) < n {
			out = append(out, fmt.Sprintf("2001:db8:%x::/48", i))
		}
	}
	return append(out[:n-1], "10.0.0.0/8")
}

// BenchmarkCheck measures whole Check calls (input building, client IP,
// policy, response) in process. "baseline" is a policy that is just
// `allow := true`: compare the others to it as ratios, on the same machine in
// the same run.
func BenchmarkCheck(b *testing.B) {
	dir := policyDir(b, map[string]string{"p.rego": "package envoy.authz\n\nallow := true\n"})
	docsDir := policyDir(b, map[string]string{"p.rego": testutil.DocsPolicy})
	docsReq := checkReq("GET", "/people?lang=en&lang=fr&page=2", map[string]string{"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "3f1c"}, "")
	req := checkReq("GET", "/orders/42?expand=items", map[string]string{
		"user-agent": "curl/8.5", "accept": "*/*", "x-request-id": "3f1c", "x-forwarded-proto": "https",
		"x-tenant-id": "acme", "x-env": "prod",
	}, "")
	trustedReq := checkReq("GET", "/orders/42", map[string]string{"user-agent": "scanner/1.0"}, "")
	trustedReq.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"

	headerRules := config.HeaderRules{
		Require:     []config.HeaderMatch{{Name: "x-tenant-id"}},
		Deny:        []config.HeaderMatch{{Name: "x-debug"}, {Name: "user-agent", Regex: "(?i)sqlmap|nikto"}},
		AllowValues: []config.HeaderValues{{Name: "x-env", Values: []string{"prod", "staging"}}},
		RulesFor:    []config.ScopedHeaderRule{{Host: "admin.example.com", PathPrefix: "/admin", Require: []config.HeaderMatch{{Name: "x-admin-ticket"}}}},
	}
	valid := fixedTokens{&gjwt.Result{Valid: true, Provider: "corp", Claims: []byte(`{"sub": "alice", "aud": "orders-api", "exp": 2000000000}`), Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}}

	cases := []struct {
		name   string
		cfg    *config.Config
		paths  []string
		tokens TokenVerifier
		req    *authv3.CheckRequest
	}{
		{"baseline", config.Default(), []string{dir}, nil, req},
		{"default/trusted_ip/10_cidrs", withBypass(cidrs(10), config.HeaderRules{}), nil, nil, trustedReq},
		{"default/trusted_ip/10000_cidrs", withBypass(cidrs(10000), config.HeaderRules{}), nil, nil, trustedReq},
		{"default/untrusted_no_token/10000_cidrs", withBypass(cidrs(10000), config.HeaderRules{}), nil, nil, req},
		{"default/valid_token/header_rules", withBypass(cidrs(10), headerRules), nil, valid, req},
		{"custom/docs_policy", config.Default(), []string{docsDir}, nil, docsReq},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := benchServer(b, tc.cfg, tc.paths, tc.tokens)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Check(ctx, tc.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMetricsOverhead compares the native hot path with metrics off and
// on, in the same run (ratios, not absolute times, are what to compare).
func BenchmarkMetricsOverhead(b *testing.B) {
	req := checkReq("GET", "/orders/42", map[string]string{"user-agent": "curl/8.5", "x-tenant-id": "acme"}, "")
	trustedReq := checkReq("GET", "/orders/42", map[string]string{"user-agent": "scanner/1.0"}, "")
	trustedReq.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"
	valid := fixedTokens{&gjwt.Result{Valid: true, Provider: "corp", Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}}
	cfg := withBypass(cidrs(10), config.HeaderRules{Require: []config.HeaderMatch{{Name: "x-tenant-id"}}})
	for _, tc := range []struct {
		name   string
		tokens TokenVerifier
		req    *authv3.CheckRequest
	}{{"trusted_ip", nil, trustedReq}, {"valid_token", valid, req}, {"no_token", nil, req}} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/metrics=%v", tc.name, on), func(b *testing.B) {
				s := benchServerMetrics(b, cfg, nil, tc.tokens, on)
				ctx := context.Background()
				b.ReportAllocs()
				cpu := processCPU()
				for b.Loop() {
					_, _ = s.Check(ctx, tc.req)
				}
				b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

func withBypass(cidrs []string, h config.HeaderRules) *config.Config {
	c := config.Default()
	c.Bypass.TrustedCIDRs = cidrs
	c.Headers = h
	return c
}

func ptrTo[T any](v T) *T { return &v }

// routeTable is a gateway's route table of n authorization rules over n/5
// services: per service a public health path, reads for any signed-in user,
// writes needing a scope, an admin path needing a group, and a deny rule for
// an internal path from outside the office; plus an audit rule.
func routeTable(n int) *config.Config {
	cfg := withBypass(cidrs(10), config.HeaderRules{})
	cfg.JWT.Providers = []config.JWTProvider{{Name: "corp"}}
	az := &cfg.Authorization
	for i := 0; len(az.Rules) < n; i++ {
		host := fmt.Sprintf("svc%d.example.com", i)
		hosts := []string{host, host + ":*"}
		base := fmt.Sprintf("/svc%d", i)
		az.Rules = append(az.Rules,
			config.AuthorizationRule{Name: fmt.Sprintf("s%d-internal", i), Action: config.ActionDeny, Hosts: hosts, Paths: []string{base + "/internal/*"}, NotClientCIDRs: []string{"10.0.0.0/8"}},
			config.AuthorizationRule{Name: fmt.Sprintf("s%d-health", i), Hosts: hosts, Paths: []string{base + "/healthz", base + "/static/*"}, Methods: []string{"GET"}},
			config.AuthorizationRule{Name: fmt.Sprintf("s%d-read", i), Hosts: hosts, Paths: []string{base + "/items", base + "/items/{*}"}, Methods: []string{"GET"}, RequestPrincipals: []string{"*"}},
			config.AuthorizationRule{Name: fmt.Sprintf("s%d-write", i), Hosts: hosts, Paths: []string{base + "/items/{**}"}, Methods: []string{"POST", "PUT", "DELETE"},
				Claims: []config.ClaimCondition{{Path: []string{"scope"}, Values: []string{"items:write"}}}},
			config.AuthorizationRule{Name: fmt.Sprintf("s%d-admin", i), Hosts: hosts, Paths: []string{base + "/admin/*"},
				Claims: []config.ClaimCondition{{Path: []string{"groups"}, Values: []string{"admins"}}}},
		)
	}
	az.Rules = append(az.Rules[:n-1], config.AuthorizationRule{Name: "audit-deletes", Action: config.ActionAudit, Methods: []string{"DELETE"}})
	return cfg
}

// BenchmarkAuthorization: route tables of 10, 200 and 1,000 rules on the same
// mix of requests (public, scoped read and write, denied, anonymous), each a
// ratio of the 10-rule table in the same run: the index keeps the cost of a
// check nearly flat in the number of rules (target: 1,000 rules at most
// 1.15x of 10).
func BenchmarkAuthorization(b *testing.B) {
	tokens := claimTokens{}
	user := `{"iss": "https://issuer.example.com", "sub": "alice", "scope": "items:read items:write", "groups": ["staff"]}`
	mix := func(svc int) []*authv3.CheckRequest {
		host := fmt.Sprintf("svc%d.example.com", svc)
		base := fmt.Sprintf("/svc%d", svc)
		return []*authv3.CheckRequest{
			routeRequest("GET", host, base+"/healthz", "192.0.2.1", "", 8443, map[string]string{"user-agent": "kube-probe/1.30"}),
			routeRequest("GET", host, base+"/items/42", "192.0.2.1", "", 8443, map[string]string{"x-test-claims": user}),
			routeRequest("DELETE", host, base+"/items/42", "192.0.2.1", "", 8443, map[string]string{"x-test-claims": user}),
			routeRequest("GET", host, base+"/internal/jobs", "192.0.2.1", "", 8443, map[string]string{"x-test-claims": user}),
			routeRequest("GET", host, base+"/items/42", "192.0.2.1", "", 8443, nil),
			routeRequest("GET", host, base+"/admin/users", "192.0.2.1", "", 8443, map[string]string{"x-test-claims": user}),
		}
	}
	for _, tc := range []struct {
		name  string
		rules int
	}{{"baseline", 10}, {"rules_200", 200}, {"rules_1000", 1000}, {"no_rules", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := routeTable(max(tc.rules, 10))
			want := []int32{0, 0, 0, 7, 16, 7}
			if tc.rules == 0 {
				// The same requests without an authorization section: what
				// the rules add to a check.
				cfg.Authorization = config.Authorization{}
				want = []int32{16, 0, 0, 0, 16, 0}
			}
			s := benchServer(b, cfg, nil, tokens)
			// The same services in every table: the first and the last of the
			// 10-rule table's two.
			reqs := append(mix(0), mix(1)...)
			ctx := context.Background()
			for i, r := range reqs {
				resp, err := s.Check(ctx, r)
				if err != nil || resp.GetStatus().GetCode() != want[i%len(want)] {
					b.Fatalf("request %d: %v %v, want status code %d", i, resp.GetStatus(), err, want[i%len(want)])
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.Check(ctx, reqs[i]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(reqs) {
					i = 0
				}
			}
		})
	}
}
