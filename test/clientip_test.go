package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// envoyRequest builds a CheckRequest as Envoy sends it: source is the peer
// of the calling Envoy, headers lower-cased (here possibly not, to check
// normalisation), pseudo-headers included.
func envoyRequest(peer, host, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":method": "GET", ":path": path, ":scheme": "https"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: peer, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 41000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: host, Path: path, Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

type decision struct {
	allowed bool
	status  int
	reason  string
	body    string
}

func decide(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := tryDecide(ctx, c, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return d
}

// tryDecide is decide for goroutines: it reports a failed call instead of
// failing the test.
func tryDecide(ctx context.Context, c authv3.AuthorizationClient, req *authv3.CheckRequest) (decision, error) {
	resp, err := c.Check(ctx, req)
	if err != nil {
		return decision{}, err
	}
	d := decision{allowed: resp.GetStatus().GetCode() == 0, status: 200, reason: resp.GetStatus().GetMessage()}
	if den := resp.GetDeniedResponse(); den != nil {
		d.status = int(den.GetStatus().GetCode())
		d.body = den.GetBody()
	}
	return d, nil
}

// TestClientIPSpoofing: the trusted-IP bypass through the real server, for
// each client IP source. Allowed means the bypass applied (no JWT providers
// are configured, so anything else is a 401).
func TestClientIPSpoofing(t *testing.T) {
	const bypass = "bypass:\n  trusted_cidrs: [10.0.0.0/8, \"2001:db8::/32\"]\n"
	servers := map[string]string{
		"peer":     "client_ip:\n  source: peer\n",
		"xff1":     "client_ip:\n  source: xff\n  xff_trusted_hops: 1\n",
		"xff2":     "client_ip:\n  source: xff\n  xff_trusted_hops: 2\n",
		"proxies":  "client_ip:\n  source: xff\n  trusted_proxies: [192.0.2.0/24]\n",
		"external": "client_ip:\n  source: envoy_external_address\n",
	}
	clients := map[string]authv3.AuthorizationClient{}
	for name, cfg := range servers {
		clients[name] = startGatehouse(t, cfg+bypass, true).client(t)
	}
	huge := strings.Repeat("10.1.2.3, ", 20000) + "198.51.100.7, 192.0.2.1"

	cases := []struct {
		name, server, peer string
		headers            map[string]string
		allowed            bool
		fallback           string // expected client_ip_fallback in the denial body
	}{
		{"trusted client via peer", "peer", "10.1.2.3", nil, true, ""},
		{"forged leftmost xff from untrusted peer", "peer", "198.51.100.7", map[string]string{"x-forwarded-for": "10.1.2.3"}, false, ""},
		{"forged external address ignored in peer mode", "peer", "198.51.100.7", map[string]string{"x-envoy-external-address": "10.1.2.3"}, false, ""},
		{"ipv4-mapped peer", "peer", "::ffff:10.1.2.3", nil, true, ""},
		{"ipv6 peer", "peer", "2001:db8::5", nil, true, ""},
		{"ipv6 peer outside", "peer", "2001:db9::5", nil, false, ""},

		{"one hop: client behind the load balancer", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 192.0.2.1"}, true, ""},
		{"one hop: forged leftmost entry", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 198.51.100.7, 192.0.2.1"}, false, ""},
		{"one hop: mixed-case header name", "xff1", "192.0.2.1", map[string]string{"X-Forwarded-For": "10.1.2.3, 192.0.2.1"}, true, ""},
		{"one hop: too few entries", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "192.0.2.1"}, false, "xff_too_few_entries"},
		{"one hop: empty xff", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": ""}, false, "xff_missing"},
		{"one hop: garbage entry", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, not-an-ip, 192.0.2.1"}, false, "xff_invalid_entry"},
		{"one hop: ipv6 with brackets and port", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "[2001:db8::7]:443, 192.0.2.1"}, true, ""},
		{"one hop: ipv4-mapped entry", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": "::ffff:10.1.2.3, 192.0.2.1"}, true, ""},
		{"one hop: oversized xff", "xff1", "192.0.2.1", map[string]string{"x-forwarded-for": huge}, false, ""},

		{"two hops: right walk", "xff2", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 192.0.2.2, 192.0.2.1"}, true, ""},
		{"two hops: forged entry left of the client", "xff2", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 198.51.100.7, 192.0.2.2, 192.0.2.1"}, false, ""},
		{"two hops: too few entries", "xff2", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3"}, false, "xff_too_few_entries"},

		{"trusted proxies skipped", "proxies", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 192.0.2.9, 192.0.2.1"}, true, ""},
		{"untrusted peer with forged xff", "proxies", "198.51.100.7", map[string]string{"x-forwarded-for": "10.1.2.3"}, false, ""},
		{"untrusted entry stops the walk", "proxies", "192.0.2.1", map[string]string{"x-forwarded-for": "10.1.2.3, 198.51.100.7, 192.0.2.1"}, false, ""},

		{"external address set by envoy", "external", "198.51.100.7", map[string]string{"x-envoy-external-address": "10.1.2.3"}, true, ""},
		{"external address missing", "external", "198.51.100.7", nil, false, "external_address_missing"},
		{"external address garbage", "external", "198.51.100.7", map[string]string{"x-envoy-external-address": "10.1.2.3.4"}, false, "external_address_invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(t, clients[tc.server], envoyRequest(tc.peer, "api.example.com", "/orders", tc.headers))
			if d.allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (%+v)", d.allowed, tc.allowed, d)
			}
			if tc.allowed && d.reason != "" {
				t.Errorf("allowed with grpc message %q", d.reason)
			}
			if !tc.allowed && d.status != 401 {
				t.Errorf("status = %d, want 401 (no token, not trusted): %+v", d.status, d)
			}
			if tc.fallback != "" && !strings.Contains(d.body, tc.fallback) {
				t.Errorf("the denial must name the fallback %q: %s", tc.fallback, d.body)
			}
		})
	}
}

// TestHeaderRules: each rule kind through the real server, for trusted
// clients and for clients with a valid token.
func TestHeaderRules(t *testing.T) {
	key, jwksFile := keyPair(t, "EdDSA", "ed-1")
	cfg := fmt.Sprintf(`jwt:
  providers:
    - name: corp
      issuer: %s
      audiences: [orders-api]
      jwks_file: %s
bypass:
  trusted_cidrs: [10.0.0.0/8]
headers:
  require: [{name: X-Tenant-ID}]
  deny: [{name: x-debug}, {name: user-agent, regex: "(?i)sqlmap|nikto"}]
  allow_values: [{name: x-env, values: [prod, staging]}]
  rules_for: [{host: admin.example.com, path_prefix: /admin, require: [{name: x-admin-ticket}]}]
`, issuer, jwksFile)
	c := startGatehouse(t, cfg, true).client(t)
	token := "Bearer " + mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	withToken := func(h map[string]string) map[string]string {
		out := map[string]string{"authorization": token, "x-tenant-id": "acme"}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	const user = "198.51.100.7"
	cases := []struct {
		name, peer, host, path string
		headers                map[string]string
		status                 int
		reason                 string
	}{
		{"valid token with required header", user, "api.example.com", "/", withToken(nil), 200, ""},
		{"required header missing", user, "api.example.com", "/", map[string]string{"authorization": token}, 403, "header_required:x-tenant-id"},
		{"required header, other case", user, "api.example.com", "/", map[string]string{"authorization": token, "X-TENANT-ID": "acme"}, 200, ""},
		{"denied header present", user, "api.example.com", "/", withToken(map[string]string{"x-debug": "1"}), 403, "header_denied:x-debug"},
		{"denied user agent by regex", user, "api.example.com", "/", withToken(map[string]string{"user-agent": "SQLMap/1.7"}), 403, "header_denied:user-agent"},
		{"harmless user agent", user, "api.example.com", "/", withToken(map[string]string{"user-agent": "curl/8"}), 200, ""},
		{"allowed value", user, "api.example.com", "/", withToken(map[string]string{"x-env": "staging"}), 200, ""},
		{"value not allowed", user, "api.example.com", "/", withToken(map[string]string{"x-env": "dev"}), 403, "header_value_not_allowed:x-env"},
		{"repeated header all allowed", user, "api.example.com", "/", withToken(map[string]string{"x-env": "prod,staging"}), 200, ""},
		{"repeated header one not allowed", user, "api.example.com", "/", withToken(map[string]string{"x-env": "prod, dev"}), 403, "header_value_not_allowed:x-env"},
		{"scoped rule applies", user, "admin.example.com", "/admin/users", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule satisfied", user, "admin.example.com:443", "/admin/users", withToken(map[string]string{"x-admin-ticket": "T-1"}), 200, ""},
		{"scoped rule, encoded letter", user, "admin.example.com", "/%61dmin/users", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule, encoded slash", user, "admin.example.com", "/admin%2Fusers", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule, matrix parameter", user, "admin.example.com", "/admin;x=1/users", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule, upper case", user, "admin.example.com", "/ADMIN/users", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule, dot segment", user, "admin.example.com", "/public/../admin/users", withToken(nil), 403, "header_required:x-admin-ticket"},
		{"scoped rule other host", user, "api.example.com", "/admin/users", withToken(nil), 200, ""},
		{"scoped rule other path", user, "admin.example.com", "/public", withToken(nil), 200, ""},
		{"no token", user, "api.example.com", "/", map[string]string{"x-tenant-id": "acme"}, 401, "token_missing"},
		{"trusted client without token or tenant", "10.1.2.3", "api.example.com", "/", nil, 200, ""},
		{"trusted client still hits deny rules", "10.1.2.3", "api.example.com", "/", map[string]string{"user-agent": "nikto"}, 403, "header_denied:user-agent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(t, c, envoyRequest(tc.peer, tc.host, tc.path, tc.headers))
			if d.status != tc.status || (tc.reason != "" && d.reason != tc.reason) {
				t.Fatalf("got %d %q, want %d %q (%s)", d.status, d.reason, tc.status, tc.reason, d.body)
			}
			if tc.reason != "" && !strings.Contains(d.body, tc.reason) {
				t.Errorf("the denial body must name the rule: %s", d.body)
			}
		})
	}
}
