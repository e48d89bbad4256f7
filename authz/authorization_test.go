package authz

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// claimTokens is a verifier whose verdict the request carries: no
// x-test-claims header is no token, "invalid" an expired one, anything else
// a valid token with those JSON claims.
type claimTokens struct{}

func (claimTokens) Verify(_ context.Context, req gjwt.Request) *gjwt.Result {
	v, ok := req.Headers["x-test-claims"]
	switch {
	case !ok:
		return nil
	case v == "invalid":
		return &gjwt.Result{Provider: "corp", Error: "expired"}
	}
	return &gjwt.Result{Valid: true, Provider: "corp", Claims: []byte(v), Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}
}

func (claimTokens) IdentityHeaders() []string { return []string{"x-jwt-sub"} }

// routeRules is a route table using every field of the authorization
// section, as a platform team would write it.
var routeRules = policy.Rules{
	TrustedCIDRs:         []string{"10.0.0.0/8"},
	Providers:            []string{"corp"},
	SpaceDelimitedClaims: map[string][]string{"corp": {"scope"}},
	Authorization: policy.Authorization{Rules: []policy.AuthzRule{
		{Name: "no-admin-from-outside", Action: policy.ActionDeny, Paths: []string{"/admin*"}, NotClientCIDRs: []string{"172.16.0.0/16"}},
		{Name: "no-debug", Action: policy.ActionDeny, Headers: []policy.HeaderCondition{{Name: "x-debug", Values: []string{"*"}}}},
		{Name: "watch-deletes", Action: policy.ActionAudit, Methods: []string{"DELETE"}},
		{Name: "public", Paths: []string{"/healthz", "/static/*"}, Methods: []string{"GET"}},
		{Name: "orders-read", Methods: []string{"GET"}, Paths: []string{"/orders", "/orders/{*}"}, RequestPrincipals: []string{"*"}},
		{Name: "orders-write", Methods: []string{"POST", "DELETE"}, Paths: []string{"/orders/{**}"}, Claims: []policy.ClaimCondition{{Path: []string{"scope"}, Values: []string{"orders:write"}}}},
		{Name: "admin", Paths: []string{"/admin/*"}, Claims: []policy.ClaimCondition{{Path: []string{"realm_access", "roles"}, Values: []string{"admin"}}}},
		{Name: "partner", Hosts: []string{"partner.example.com", "partner.example.com:*"}, RequestPrincipals: []string{"https://partner.example.com/*"}, Audiences: []string{"partner-api"}, Presenters: []string{"partner-*"}},
		{Name: "internal", Paths: []string{"/internal/*"}, Principals: []string{"cluster.local/ns/billing/sa/*"}, Namespaces: []string{"billing"}, Ports: []int{8443}, PeerCIDRs: []string{"192.0.2.0/24"}},
		{Name: "not-legacy", NotPaths: []string{"/legacy/*"}, NotHosts: []string{"old.example.com"}, NotMethods: []string{"TRACE"}, NotPorts: []int{8081},
			NotPeerCIDRs: []string{"198.51.100.0/24"}, NotPrincipals: []string{"*/sa/blocked"}, NotNamespaces: []string{"quarantine"},
			NotRequestPrincipals: []string{"*/mallory"}, NotAudiences: []string{"test"}, NotPresenters: []string{"evil"},
			Claims:  []policy.ClaimCondition{{Path: []string{"groups"}, NotValues: []string{"suspended"}}},
			Headers: []policy.HeaderCondition{{Name: "x-tenant", Values: []string{"acme"}, NotValues: []string{"acme-test"}}}},
	}},
}

func routeRequest(method, host, path, peer, principal string, port uint32, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": host}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: principal, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: peer, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.9.9.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: host, Headers: h,
		}},
	}}
}

// TestAuthorizationThroughServers: the route table through three real
// servers that differ only in who decides: natively; OPA on the Rego
// specification; and OPA on a custom policy that answers the native decision
// it reads at input.gatehouse.decision. The real input builder and facts feed
// all three, so every field the rules read (method, host, path, destination
// port, peer, mTLS principal, client IP, claims, headers) must reach both the
// facts and the input the same way.
func TestAuthorizationThroughServers(t *testing.T) {
	p := newPair(t, routeRules, clientip.Options{Source: "xff", XFFTrustedHops: 1}, claimTokens{}, regoShim(t))
	offered := t.TempDir()
	if err := os.WriteFile(filepath.Join(offered, "offered.rego"), []byte("package envoy.authz\n\nallow := input.gatehouse.decision\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third := newPair(t, routeRules, clientip.Options{Source: "xff", XFFTrustedHops: 1}, claimTokens{}, offered)

	user := `{"iss": "https://issuer.example.com", "sub": "alice", "scope": "orders:read orders:write", "groups": ["staff"]}`
	reader := `{"iss": "https://issuer.example.com", "sub": "bob", "scope": "orders:read"}`
	admin := `{"iss": "https://issuer.example.com", "sub": "carol", "realm_access": {"roles": ["admin"]}}`
	partner := `{"iss": "https://partner.example.com", "sub": "p1", "aud": ["partner-api"], "azp": "partner-app"}`
	const out, office, lan = "203.0.113.9", "172.16.5.5", "10.1.2.3"
	type tc struct {
		name                     string
		method, host, path, peer string
		principal                string
		port                     uint32
		xff                      string
		headers                  map[string]string
		want                     string
		audit                    []string
	}
	cases := []tc{
		{name: "public health", method: "GET", path: "/healthz", want: "rule_allowed:public"},
		{name: "public asset", method: "GET", path: "/static/app.js", want: "rule_allowed:public"},
		{name: "public path, wrong method, no token", method: "POST", path: "/healthz", want: "token_missing"},
		// An ambiguous path is read narrowly by allow rules and widely by
		// deny rules: "/static/%2e%2e/admin" may be /admin upstream.
		{name: "public path, ambiguous", method: "GET", path: "/static/%2e%2e/admin", want: "rule_denied:no-admin-from-outside"},
		{name: "public path, escaped dot", method: "GET", path: "/static/%2e%2e/orders", want: "rule_denied:no-admin-from-outside"},
		{name: "public path, harmless escape", method: "GET", path: "/static/a%20b.css", want: "rule_allowed:public"},
		{name: "escaped letters reach the deny rule", method: "GET", path: "/%61dmin/users", headers: map[string]string{"x-test-claims": admin}, want: "rule_denied:no-admin-from-outside"},
		{name: "escaped letters never reach an allow rule", method: "GET", xff: office, path: "/%61dmin/users", headers: map[string]string{"x-test-claims": admin}, want: "no_matching_rule"},
		{name: "read with a token", method: "GET", path: "/orders/7", headers: map[string]string{"x-test-claims": reader}, want: "rule_allowed:orders-read"},
		{name: "read without a token", method: "GET", path: "/orders/7", want: "token_missing"},
		{name: "read with an invalid token", method: "GET", path: "/healthz", headers: map[string]string{"x-test-claims": "invalid"}, want: "token_expired"},
		{name: "write with the scope", method: "POST", path: "/orders/7/items", headers: map[string]string{"x-test-claims": user}, want: "rule_allowed:orders-write"},
		{name: "write without the scope", method: "POST", path: "/orders/7", headers: map[string]string{"x-test-claims": reader}, want: "no_matching_rule"},
		{name: "delete audited", method: "DELETE", path: "/orders/7", headers: map[string]string{"x-test-claims": user}, want: "rule_allowed:orders-write", audit: []string{"watch-deletes"}},
		{name: "admin group", method: "GET", path: "/admin/users", xff: office, headers: map[string]string{"x-test-claims": admin}, want: "rule_allowed:admin"},
		{name: "admin from outside denied", method: "GET", path: "/admin/users", xff: out, headers: map[string]string{"x-test-claims": admin}, want: "rule_denied:no-admin-from-outside"},
		{name: "admin deny holds for trusted networks", method: "GET", path: "/ADMIN", xff: lan, want: "rule_denied:no-admin-from-outside"},
		{name: "trusted network bypass", method: "GET", path: "/orders", xff: lan, want: "trusted_ip"},
		{name: "deny header", method: "GET", path: "/healthz", headers: map[string]string{"x-debug": "1"}, want: "rule_denied:no-debug"},
		{name: "partner", method: "GET", host: "partner.example.com:443", path: "/v1/x", headers: map[string]string{"x-test-claims": partner}, want: "rule_allowed:partner"},
		{name: "partner token elsewhere", method: "GET", host: "api.example.com", path: "/v1/x", headers: map[string]string{"x-test-claims": partner}, want: "no_matching_rule"},
		{name: "internal by mTLS", method: "GET", path: "/internal/run", peer: "192.0.2.10", principal: "spiffe://cluster.local/ns/billing/sa/jobs", port: 8443, want: "rule_allowed:internal"},
		{name: "internal wrong namespace", method: "GET", path: "/internal/run", peer: "192.0.2.10", principal: "spiffe://cluster.local/ns/web/sa/jobs", port: 8443, headers: map[string]string{"x-test-claims": user}, want: "no_matching_rule"},
		{name: "negations hold", method: "GET", path: "/v2/anything", port: 8080, headers: map[string]string{"x-test-claims": user, "x-tenant": "acme"}, want: "rule_allowed:not-legacy"},
		{name: "negation: legacy path", method: "GET", path: "/legacy/x", port: 8080, headers: map[string]string{"x-test-claims": user, "x-tenant": "acme"}, want: "no_matching_rule"},
		{name: "negation: suspended group", method: "GET", path: "/v2/x", port: 8080, headers: map[string]string{"x-test-claims": `{"iss": "i", "sub": "s", "groups": ["suspended"]}`, "x-tenant": "acme"}, want: "no_matching_rule"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host, peer, xff := c.host, c.peer, c.xff
			if host == "" {
				host = "api.example.com"
			}
			if peer == "" {
				peer = "192.0.2.1"
			}
			if xff == "" {
				xff = out
			}
			headers := map[string]string{"x-forwarded-for": xff}
			for k, v := range c.headers {
				headers[k] = v
			}
			req := routeRequest(c.method, host, c.path, peer, c.principal, c.port, headers)
			d := p.compare(t, req)
			if d.Reason != c.want || !reflect.DeepEqual(d.Audit, c.audit) {
				t.Fatalf("reason %q audit %v, want %q %v", d.Reason, d.Audit, c.want, c.audit)
			}
			// The custom policy answering input.gatehouse.decision gives the
			// same response as the native server.
			tResp, err := third.rego.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			nResp, err := p.native.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := responseShape(tResp), responseShape(nResp); a != b {
				t.Fatalf("input.gatehouse.decision policy answered\n%s\nnative\n%s", a, b)
			}
			// An allow by a public rule without a token sets no identity.
			if d.Allowed && c.headers["x-test-claims"] == "" {
				for _, h := range nResp.GetOkResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-jwt-sub" {
						t.Fatalf("identity header on an anonymous allow: %v", h)
					}
				}
			}
		})
	}
}

// TestAuditIsLoggedAndCounted: an audit rule never changes the decision; its
// name goes into the decision log line and gatehouse_authorization_audit_total.
func TestAuditIsLoggedAndCounted(t *testing.T) {
	var logs testutil.LockedBuffer
	m, err := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rules := routeRules
	c := startServer(t, policy.Options{Rules: &rules}, Options{Tokens: claimTokens{}, DecisionLog: &logs, Metrics: m})
	user := `{"iss": "https://issuer.example.com", "sub": "alice", "scope": "orders:write"}`
	for _, method := range []string{"DELETE", "POST"} {
		resp := check(t, c, routeRequest(method, "api.example.com", "/orders/7", "192.0.2.1", "", 0, map[string]string{"x-test-claims": user}))
		if resp.GetStatus().GetCode() != 0 {
			t.Fatalf("%s denied: %v", method, resp.GetDeniedResponse())
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"reason":"rule_allowed:orders-write"`) || !strings.Contains(lines[0], `"audit":["watch-deletes"]`) {
		t.Fatalf("decision log:\n%s", logs.String())
	}
	if strings.Contains(lines[1], `"audit"`) {
		t.Errorf("the POST matched no audit rule: %s", lines[1])
	}
	if got := promtest.ToFloat64(m.audit.WithLabelValues("watch-deletes")); got != 1 {
		t.Errorf("gatehouse_authorization_audit_total{rule=watch-deletes} = %v, want 1", got)
	}
}
