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
