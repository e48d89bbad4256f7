package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Addresses of the requests. The untrusted client is outside every trusted
// CIDR; the trusted one is inside the first.
const (
	untrustedClient = "203.0.113.7"
	trustedClient   = "10.20.30.40"
	denyUserAgent   = `(?i)sqlmap|nikto`
)

// trustedCIDRs are the ten networks of the bypass. None holds untrustedClient.
var trustedCIDRs = []string{
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15",
	"192.0.2.0/24", "198.51.100.0/24", "169.254.0.0/16", "fd00::/8", "2001:db8::/32",
}

// requestShape is what varies between the scenarios' CheckRequests.
type requestShape struct {
	clientIP string
	method   string
	path     string // with the query string, as in :path
	token    string // "" for none
}

// envoyRequest builds a CheckRequest the way Envoy's ext_authz filter fills
// it for an HTTP/1.1 request through an Istio ingress gateway: peer and
// local socket addresses, the request id, method, headers (pseudo-headers
// included), path, host, scheme and protocol.
func envoyRequest(s requestShape) *authv3.CheckRequest {
	const host = "api.bench.test"
	headers := map[string]string{
		":authority":        host,
		":path":             s.path,
		":method":           s.method,
		":scheme":           "https",
		"user-agent":        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"accept":            "application/json",
		"accept-encoding":   "gzip, deflate, br",
		"x-forwarded-for":   s.clientIP,
		"x-forwarded-proto": "https",
		"x-request-id":      "6b1c7d8e-2f3a-4b5c-9d0e-1f2a3b4c5d6e",
		"x-envoy-internal":  "true",
	}
	if s.token != "" {
		headers["authorization"] = "Bearer " + s.token
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer(s.clientIP, 51234),
		Destination: peer("10.0.0.12", 8443),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       "14782193749239812334",
				Method:   s.method,
				Headers:  headers,
				Path:     s.path,
				Host:     host,
				Scheme:   "https",
				Protocol: "HTTP/1.1",
			},
		},
		MetadataContext: &corev3.Metadata{},
	}}
}

func peer(ip string, port uint32) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
	}}}
}

// fixture is what the scenarios are built from: the JWKS URL and document,
// and the pool of valid tokens.
type fixture struct {
	jwksURL string
	jwks    []byte
	tokens  []string // tokens[0] is the warm token; the rest are distinct ones
}

// scenario is one row group of the table: the same requests against each
// server, each configured to take the same decision.
type scenario struct {
	name string
	// gatehouse is Gatehouse's YAML configuration; policyFiles are written
	// beside it (the config refers to them by relative path).
	gatehouse   string
	policyFiles map[string]string
	// opaPolicy is the equivalent Rego for OPA-Envoy; "" skips OPA-Envoy.
	opaPolicy string
	// opaConfig, when set, is an OPA configuration template (opaConfig)
	// that Gatehouse runs as `gatehouse run --server` and OPA-Envoy as
	// itself, instead of gatehouse and opaPolicy; opaModule is the policy
	// of the bundle the harness's loopback bundle service serves.
	opaConfig, opaModule string
	template             *authv3.CheckRequest
	// source, when set, returns the Next function of one server's run: a fresh
	// supply of distinct tokens for each server process. With wrap the supply
	// starts over when used up instead of ending the run: for the no-op
	// server, which never reads a token, so a repeated one costs it the same.
	source func(wrap bool) func(*authv3.CheckRequest) bool
	// want is the HTTP status every check must get from a real server.
	want int
	// fixedCount runs the source dry instead of for a duration (memory).
	fixedCount bool
	// outcomes, when set, are the statuses a mixed scenario's checks may get
	// (its template still must get want).
	outcomes map[int]bool
}

// gatehouseConfig is the configuration of the configured-decision scenarios:
// one JWT provider, ten trusted CIDRs, one header deny rule.
func gatehouseConfig(f fixture) string {
	return fmt.Sprintf(`jwt:
  providers:
    - name: bench
      issuer: %s
      audiences: [%s]
      jwks_uri: %s
      claim_to_headers: [{claim: sub, header: x-jwt-sub}]
bypass:
  trusted_cidrs: [%s]
headers:
  deny: [{name: user-agent, regex: %q}]
`, benchIssuer, benchAudience, f.jwksURL, strings.Join(trustedCIDRs, ", "), denyUserAgent)
}

// opaConfiguredPolicy is the OPA-Envoy Rego equivalent of gatehouseConfig on
// Gatehouse's default policy: header deny rule (403), then the trusted-CIDR
// bypass, then a verified token (allowed with x-jwt-sub), else 401. The JWKS
// is a constant handed to io.jwt.decode_verify as its cert.
func opaConfiguredPolicy(f fixture) string {
	cidrs, _ := json.Marshal(trustedCIDRs)
	jwks, _ := json.Marshal(string(f.jwks))
	return fmt.Sprintf(`package envoy.authz

http_request := input.attributes.request.http

client_ip := input.attributes.source.address.socketAddress.address

trusted_cidrs := %s

jwks := %s

header_denied if regex.match(%s, http_request.headers["user-agent"])

trusted if {
	some cidr in trusted_cidrs
	net.cidr_contains(cidr, client_ip)
}

bearer := t if {
	auth := http_request.headers.authorization
	startswith(auth, "Bearer ")
	t := substring(auth, 7, -1)
}

claims := c if {
	[valid, _, c] := io.jwt.decode_verify(bearer, {"cert": jwks, "iss": %q, "aud": %q})
	valid
}

allow := {"allowed": false, "http_status": 403} if {
	header_denied
} else := {"allowed": true} if {
	trusted
} else := {"allowed": true, "headers": {"x-jwt-sub": claims.sub}} if {
	claims
} else := {"allowed": false, "http_status": 401}
`, cidrs, jwks, "`"+denyUserAgent+"`", benchIssuer, benchAudience)
}

// distinct returns a source handing each server process its own walk over
// tokens: every check carries a token that server has not seen.
func distinct(tokens []string) func(wrap bool) func(*authv3.CheckRequest) bool {
	bearer := make([]string, len(tokens))
	for i, t := range tokens {
		bearer[i] = "Bearer " + t
	}
	return func(wrap bool) func(*authv3.CheckRequest) bool {
		var next atomic.Int64
		return func(req *authv3.CheckRequest) bool {
			i := next.Add(1) - 1
			if i >= int64(len(bearer)) {
				if !wrap {
					return false
				}
				i %= int64(len(bearer))
			}
			req.Attributes.Request.Http.Headers["authorization"] = bearer[i]
			return true
		}
	}
}

// scenarios returns every scenario, in the order of the table. memoryTokens
// of f.tokens[1:] go to the memory scenario; the cold scenario walks the same
// pool (each server process starts afresh, so a token is new to each).
func scenarios(f fixture) []scenario {
	cfg, opa := gatehouseConfig(f), opaConfiguredPolicy(f)
	warm := f.tokens[0]
	return []scenario{
		{
			name: "warm token", gatehouse: cfg, opaPolicy: opa, want: 200,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people/42?fields=name", token: warm}),
		},
		{
			name: "cold token", gatehouse: cfg, opaPolicy: opa, want: 200,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people/42?fields=name", token: warm}),
			source:   distinct(f.tokens[1:]),
		},
		{
			name: "trusted IP", gatehouse: cfg, opaPolicy: opa, want: 200,
			template: envoyRequest(requestShape{clientIP: trustedClient, method: "GET", path: "/people/42?fields=name"}),
		},
		{
			name: "no token", gatehouse: cfg, opaPolicy: opa, want: 401,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people/42?fields=name"}),
		},
		{
			name:        "docs policy",
			gatehouse:   "policy:\n  paths: [./policy]\n",
			policyFiles: map[string]string{"policy/authz.rego": testutil.DocsPolicy},
			opaPolicy:   testutil.DocsPolicy, want: 200,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people?lang=en&lang=fr&page=2", token: warm}),
		},
		{
			name:      "docs policy, bundle",
			opaConfig: bundleFedConfig, opaModule: testutil.DocsPolicy, want: 200,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people?lang=en&lang=fr&page=2", token: warm}),
		},
		{
			name:      "docs policy, bundle, decision log upload",
			opaConfig: decisionLogConfig, opaModule: testutil.DocsPolicy, want: 200,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people?lang=en&lang=fr&page=2", token: warm}),
		},
		{
			name: "route table, 200 rules, mixed", gatehouse: routeTableConfig(f), want: 200,
			template: routeTemplate(warm),
			source:   mixed(warm),
			outcomes: map[int]bool{200: true, 401: true, 403: true},
		},
		{
			name: memoryScenario(len(f.tokens) - 1), gatehouse: cfg, opaPolicy: opa, want: 200, fixedCount: true,
			template: envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people/42?fields=name", token: warm}),
			source:   distinct(f.tokens[1:]),
		},
	}
}

// routeServices is the number of services in the route-table scenario: five
// rules each, 200 rules in all.
const routeServices = 40

// routeTableConfig is gatehouseConfig plus an authorization section of a
// gateway with routeServices services: per service a deny rule for its
// internal paths from outside the trusted networks, a public health and
// static path, reads for any signed-in user, writes for one principal, and
// an admin path for another.
func routeTableConfig(f fixture) string {
	var b strings.Builder
	b.WriteString(gatehouseConfig(f))
	b.WriteString("authorization:\n  rules:\n")
	for i := range routeServices {
		fmt.Fprintf(&b, `    - {name: s%[1]d-internal, action: deny, hosts: [svc%[1]d.bench.test, "svc%[1]d.bench.test:*"], paths: ["/internal/*"], not_client_cidrs: [10.0.0.0/8]}
    - {name: s%[1]d-public, hosts: [svc%[1]d.bench.test, "svc%[1]d.bench.test:*"], methods: [GET], paths: [/healthz, "/static/*"]}
    - {name: s%[1]d-read, hosts: [svc%[1]d.bench.test, "svc%[1]d.bench.test:*"], methods: [GET], paths: [/people, "/people/{*}"], request_principals: ["*"]}
    - {name: s%[1]d-write, hosts: [svc%[1]d.bench.test, "svc%[1]d.bench.test:*"], methods: [POST, PUT, DELETE], paths: ["/people/{**}"], request_principals: ["%[2]s/writer"]}
    - {name: s%[1]d-admin, hosts: [svc%[1]d.bench.test, "svc%[1]d.bench.test:*"], paths: ["/admin/*"], request_principals: ["%[2]s/admin"]}
`, i, benchIssuer)
	}
	return b.String()
}

// routeTemplate is the route-table scenario's first request: a signed-in read.
func routeTemplate(warm string) *authv3.CheckRequest {
	req := envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/people/42?fields=name", token: warm})
	req.Attributes.Request.Http.Host = "svc0.bench.test"
	req.Attributes.Request.Http.Headers[":authority"] = "svc0.bench.test"
	return req
}

// routeShape is one request of the route-table mix.
type routeShape struct {
	method, host, path string
	token              bool
}

// routeMix is the route-table scenario's requests, in the proportions of a
// gateway's traffic: mostly signed-in reads, then public paths, anonymous
// requests (401), denied internal paths (403) and writes without the right
// principal (403), over several services.
func routeMix() []routeShape {
	var mix []routeShape
	for _, svc := range []int{0, 7, 19, 33} {
		host := fmt.Sprintf("svc%d.bench.test", svc)
		mix = append(mix,
			routeShape{"GET", host, "/people/42?fields=name", true},
			routeShape{"GET", host, "/people?page=2", true},
			routeShape{"GET", host, "/people/7", true},
			routeShape{"GET", host, "/healthz", false},
			routeShape{"GET", host, "/static/app.js", false},
			routeShape{"GET", host, "/people/42", false},
			routeShape{"GET", host, "/internal/jobs", true},
			routeShape{"DELETE", host, "/people/42", true},
		)
	}
	return mix
}

// mixed returns a source that cycles every stream through routeMix with the
// warm token where a shape carries one.
func mixed(warm string) func(wrap bool) func(*authv3.CheckRequest) bool {
	mix := routeMix()
	return func(bool) func(*authv3.CheckRequest) bool {
		var next atomic.Int64
		return func(req *authv3.CheckRequest) bool {
			s := mix[(next.Add(1)-1)%int64(len(mix))]
			h := req.Attributes.Request.Http
			h.Method, h.Path, h.Host = s.method, s.path, s.host
			h.Headers[":method"], h.Headers[":path"], h.Headers[":authority"] = s.method, s.path, s.host
			if s.token {
				h.Headers["authorization"] = "Bearer " + warm
			} else {
				delete(h.Headers, "authorization")
			}
			return true
		}
	}
}

// memoryScenario names the memory scenario after its token count, e.g.
// "memory, 100k tokens".
func memoryScenario(tokens int) string {
	if tokens%1000 == 0 {
		return fmt.Sprintf("memory, %dk tokens", tokens/1000)
	}
	return fmt.Sprintf("memory, %d tokens", tokens)
}
