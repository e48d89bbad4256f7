package main

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/policy"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/authorizationpolicy/golden from the converter's output")

// apRequest is one request an Istio page describes, and the decision the
// converted rules must reach for it.
type apRequest struct {
	name    string
	facts   policy.Facts
	allowed bool
	status  int    // of a denial
	reason  string // the decision's reason
	audit   []string
}

// req builds the facts of a request to the gateway: port 443, host
// httpbin.example, no token, no mTLS identity, unless opts say otherwise.
func req(method, path string, opts ...func(*policy.Facts)) policy.Facts {
	f := policy.Facts{Method: method, Path: path, Host: "httpbin.example", Port: 443, Headers: map[string]string{}, Peer: "10.0.0.9"}
	for _, o := range opts {
		o(&f)
	}
	return f
}

// token presents a valid token with these claims (JSON).
func token(claims string) func(*policy.Facts) {
	return func(f *policy.Facts) {
		f.Token = &policy.TokenFacts{Valid: true, Provider: "p", Claims: []byte(claims)}
	}
}

// anyToken presents a valid token that no identity condition of the fixtures
// asks for.
var anyToken = token(`{"iss":"https://issuer.example","sub":"alice"}`)

func badToken(reason string) func(*policy.Facts) {
	return func(f *policy.Facts) { f.Token = &policy.TokenFacts{Error: reason, Provider: "p"} }
}

func principal(p string) func(*policy.Facts) {
	return func(f *policy.Facts) { f.SourcePrincipal = p }
}

func header(name, value string) func(*policy.Facts) {
	return func(f *policy.Facts) { f.Headers[strings.ToLower(name)] = value }
}

func peer(ip string) func(*policy.Facts) { return func(f *policy.Facts) { f.Peer = ip } }

func client(ip string) func(*policy.Facts) {
	return func(f *policy.Facts) { f.ClientIP = netip.MustParseAddr(ip) }
}

func port(p uint32) func(*policy.Facts) { return func(f *policy.Facts) { f.Port = p } }

func allowedBy(rule string) (bool, int, string) { return true, 0, "rule_allowed:" + rule }
func deniedBy(rule string) (bool, int, string)  { return false, 403, "rule_denied:" + rule }

func r(name string, f policy.Facts, outcome func() (bool, int, string), audit ...string) apRequest {
	a, s, reason := outcome()
	return apRequest{name: name, facts: f, allowed: a, status: s, reason: reason, audit: audit}
}

func allowedByRule(rule string) func() (bool, int, string) {
	return func() (bool, int, string) { return allowedBy(rule) }
}

func deniedByRule(rule string) func() (bool, int, string) {
	return func() (bool, int, string) { return deniedBy(rule) }
}

func tokenValid() (bool, int, string)     { return true, 0, policy.ReasonTokenValid }
func tokenMissing() (bool, int, string)   { return false, 401, policy.ReasonTokenMissing }
func noMatchingRule() (bool, int, string) { return false, 403, policy.ReasonNoMatchingRule }

// TestConvertAuthorizationPolicy converts the examples of Istio's
// authorization tasks and reference pages, holds the output to a golden file,
// loads it with the configuration loader, and decides the requests those
// pages describe with the converted rules.
func TestConvertAuthorizationPolicy(t *testing.T) {
	const (
		productpageSA = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
		curlSA        = "spiffe://cluster.local/ns/default/sa/curl"
	)
	google := token(`{"iss":"https://accounts.google.com","sub":"1234"}`)
	tests := []struct {
		file     string
		notes    []string
		requests []apRequest
	}{
		{
			file: "allow-nothing.yaml",
			requests: []apRequest{
				r("GET /productpage without a token: 401, a token could not help but is asked for", req("GET", "/productpage"), tokenMissing),
				r("GET /productpage with a token: 403", req("GET", "/productpage", anyToken), noMatchingRule),
			},
		},
		{
			file: "http-bookinfo.yaml",
			notes: []string{
				"default/productpage-viewer: selector/targetRef not converted",
				"Gatehouse applies the converted rules to every request the gateway forwards to it",
				"default/allow-nothing: an ALLOW policy without rules allows nothing by itself; other ALLOW rules are converted",
			},
			requests: []apRequest{
				r("GET /productpage from any user", req("GET", "/productpage"), allowedByRule("default.productpage-viewer.0")),
				r("POST /productpage with a token", req("POST", "/productpage", anyToken), noMatchingRule),
				r("POST /productpage without a token", req("POST", "/productpage"), tokenMissing),
				r("GET /details from productpage: the first allow rule names it", req("GET", "/details/0", principal(productpageSA)), allowedByRule("default.productpage-viewer.0")),
			},
		},
		{
			file: "details-viewer.yaml",
			requests: []apRequest{
				r("GET /details from productpage's service account", req("GET", "/details/0", principal(productpageSA)), allowedByRule("default.details-viewer.0")),
				r("GET /details from another service account", req("GET", "/details/0", principal(curlSA), anyToken), noMatchingRule),
				r("POST /details from productpage", req("POST", "/details/0", principal(productpageSA), anyToken), noMatchingRule),
			},
		},
		{
			file: "deny.yaml",
			requests: []apRequest{
				r("GET /ip with x-token: admin", req("GET", "/ip", header("x-token", "admin")), allowedByRule("foo.allow-path-ip.0")),
				r("GET /get with x-token: admin: no allow rule", req("GET", "/get", header("x-token", "admin"), anyToken), noMatchingRule),
				r("GET /ip with x-token: guest", req("GET", "/ip", header("x-token", "guest")), deniedByRule("foo.deny-method-get.0")),
				r("GET /ip without x-token", req("GET", "/ip", anyToken), deniedByRule("foo.deny-method-get.0")),
				r("POST /ip without x-token: only GET is denied", req("POST", "/ip"), allowedByRule("foo.allow-path-ip.0")),
			},
		},
		{
			file:  "deny-only.yaml",
			notes: []string{"no ALLOW rule: Istio then allows every request no DENY rule matches; Gatehouse, as without an authorization section, still needs a valid token"},
			requests: []apRequest{
				r("GET with x-token: admin", req("GET", "/get", header("x-token", "admin"), anyToken), tokenValid),
				r("GET with x-token: guest", req("GET", "/get", header("x-token", "guest"), anyToken), deniedByRule("foo.deny-method-get.0")),
				r("POST without x-token", req("POST", "/post", anyToken), tokenValid),
				r("GET with x-token: admin, no token", req("GET", "/get", header("x-token", "admin")), tokenMissing),
			},
		},
		{
			file: "jwt.yaml",
			notes: []string{
				`skipped RequestAuthentication "jwt-example"`,
				"request principals and request.auth conditions read the verified token",
				"request.auth.claims conditions",
			},
			requests: []apRequest{
				r("a token of the sample issuer in group1", req("GET", "/headers", token(`{"iss":"testing@secure.istio.io","sub":"testing@secure.istio.io","groups":["group1","group2"]}`)), allowedByRule("foo.require-jwt.0")),
				r("a token without the groups claim", req("GET", "/headers", token(`{"iss":"testing@secure.istio.io","sub":"testing@secure.istio.io"}`)), noMatchingRule),
				r("a token of another issuer in group1", req("GET", "/headers", token(`{"iss":"other@example.com","sub":"testing@secure.istio.io","groups":["group1"]}`)), noMatchingRule),
				r("no token", req("GET", "/headers"), tokenMissing),
				r("an invalid token", req("GET", "/headers", badToken("expired")), func() (bool, int, string) { return false, 401, "token_expired" }),
			},
		},
		{
			file:  "ingress-ipblocks.yaml",
			notes: []string{"ipBlocks and source.ip become peer_cidrs", "istio-system/ingress-policy: selector/targetRef not converted"},
			requests: []apRequest{
				r("from 1.2.3.4", req("GET", "/headers", peer("1.2.3.4")), allowedByRule("istio-system.ingress-policy.0")),
				r("from 5.6.7.8", req("GET", "/headers", peer("5.6.7.8")), allowedByRule("istio-system.ingress-policy.0")),
				r("from 9.9.9.9 with a token", req("GET", "/headers", peer("9.9.9.9"), anyToken), noMatchingRule),
			},
		},
		{
			file:  "ingress-remote-deny.yaml",
			notes: []string{"remoteIpBlocks and remote.ip become client_cidrs"},
			requests: []apRequest{
				r("the denied client", req("GET", "/headers", client("203.0.113.7"), anyToken), deniedByRule("istio-system.ingress-policy.0")),
				r("another client", req("GET", "/headers", client("198.51.100.1"), anyToken), tokenValid),
			},
		},
		{
			file:  "dry-run.yaml",
			notes: []string{`foo/deny-path-headers: istio.io/dry-run: "true": converted as audit rules`},
			requests: []apRequest{
				r("GET /headers: not enforced, audited", req("GET", "/headers", anyToken), tokenValid, "foo.deny-path-headers.0"),
				r("GET /get: not audited", req("GET", "/get", anyToken), tokenValid),
			},
		},
		{
			file: "reference-httpbin.yaml",
			requests: []apRequest{
				r("GET /info from curl with a Google token", req("GET", "/info/x", principal(curlSA), google), allowedByRule("foo.httpbin.0.0.0")),
				r("POST /data from namespace test with a Google token", req("POST", "/data", principal("spiffe://cluster.local/ns/test/sa/any"), google), allowedByRule("foo.httpbin.0.1.1")),
				r("POST /info from curl", req("POST", "/info", principal(curlSA), google), noMatchingRule),
				r("GET /info from namespace prod", req("GET", "/info", principal("spiffe://cluster.local/ns/prod/sa/any"), google), noMatchingRule),
				r("GET /info from curl, another issuer", req("GET", "/info", principal(curlSA), anyToken), noMatchingRule),
				r("GET /info from curl without a token", req("GET", "/info", principal(curlSA)), tokenMissing),
			},
		},
		{
			file: "reference-deny-dev.yaml",
			requests: []apRequest{
				r("POST from dev", req("POST", "/post", principal("spiffe://cluster.local/ns/dev/sa/x"), anyToken), deniedByRule("foo.httpbin.0")),
				r("GET from dev", req("GET", "/get", principal("spiffe://cluster.local/ns/dev/sa/x"), anyToken), tokenValid),
				r("POST from prod", req("POST", "/post", principal("spiffe://cluster.local/ns/prod/sa/x"), anyToken), tokenValid),
			},
		},
		{
			file: "reference-allow-all.yaml",
			requests: []apRequest{
				r("any request", req("DELETE", "/anything"), allowedByRule("foo.allow-all.0")),
				r("an invalid token is still refused", req("GET", "/", badToken("")), func() (bool, int, string) { return false, 401, "token_invalid" }),
			},
		},
		{
			file: "reference-deny-all.yaml",
			requests: []apRequest{
				r("with a token", req("GET", "/", anyToken), deniedByRule("foo.deny-all.0")),
				r("without", req("GET", "/"), deniedByRule("foo.deny-all.0")),
			},
		},
		{
			file: "reference-require-jwt-except-healthz.yaml",
			requests: []apRequest{
				r("/healthz without a token", req("GET", "/healthz"), allowedByRule("foo.require-jwt.1")),
				r("/get without a token", req("GET", "/get"), deniedByRule("foo.deny-anonymous.0")),
				r("/get with a token", req("GET", "/get", anyToken), allowedByRule("foo.require-jwt.0")),
				r("/HEALTHZ without a token: a deny rule reads not_paths narrowly", req("GET", "/HEALTHZ"), deniedByRule("foo.deny-anonymous.0")),
				r("/healthz/../admin without a token: an ambiguous path is denied", req("GET", "/healthz/../admin"), deniedByRule("foo.deny-anonymous.0")),
			},
		},
		{
			file: "reference-audit.yaml",
			requests: []apRequest{
				r("/user-profile-info is audited", req("GET", "/user-profile-info", anyToken), tokenValid, "bar.httpbin-audit.0"),
				r("/ is not", req("GET", "/", anyToken), tokenValid),
			},
		},
		{
			file: "reference-path-templates.yaml",
			requests: []apRequest{
				r("/foo/buzz/bar/a/b", req("GET", "/foo/buzz/bar/a/b"), allowedByRule("foo.path-templates.0")),
				r("/users/42", req("GET", "/users/42"), allowedByRule("foo.path-templates.0")),
				r("/foo/bar/a", req("GET", "/foo/bar/a", anyToken), noMatchingRule),
				r("/users/42/keys", req("GET", "/users/42/keys", anyToken), noMatchingRule),
				r("/users/", req("GET", "/users/", anyToken), noMatchingRule),
			},
		},
		{
			file: "conditions.yaml",
			requests: func() []apRequest {
				claims := `{"iss":"issuer@foo.com","sub":"104958560606","aud":["my-audience"],"azp":"123456789012.my-svc.com","nested1":{"nested2":"some-value"}}`
				all := []func(*policy.Facts){header("User-Agent", "Mozilla/5.0"), peer("10.2.3.4"), client("192.0.2.10"), principal("spiffe://cluster.local/ns/default/sa/productpage"), token(claims)}
				with := func(extra ...func(*policy.Facts)) []func(*policy.Facts) {
					return append(append([]func(*policy.Facts){}, all...), extra...)
				}
				return []apRequest{
					r("every condition holds", req("GET", "/", with()...), allowedByRule("foo.conditions.0")),
					r("port 8080", req("GET", "/", with(port(8080))...), noMatchingRule),
					r("another user agent", req("GET", "/", with(header("User-Agent", "curl/8.5"))...), noMatchingRule),
					r("another nested claim", req("GET", "/", with(token(strings.Replace(claims, "some-value", "other", 1)))...), noMatchingRule),
					r("another audience", req("GET", "/", with(token(strings.Replace(claims, "my-audience", "other", 1)))...), noMatchingRule),
					r("a peer outside the blocks", req("GET", "/", with(peer("10.3.0.1"))...), noMatchingRule),
					r("x-debug from inside 10/8", req("GET", "/", with(header("x-debug", "1"))...), allowedByRule("foo.conditions.0")),
					r("x-debug from outside 10/8", req("GET", "/", with(header("x-debug", "1"), peer("172.16.0.1"))...), deniedByRule("foo.not-conditions.0")),
				}
			}(),
		},
		{
			file: "service-accounts.yaml",
			requests: []apRequest{
				r("curl to 9000", req("GET", "/", principal(curlSA), port(9000)), allowedByRule("foo.tcp-policy.0")),
				r("curl of another trust domain to 9001", req("GET", "/", principal("spiffe://other.example/ns/default/sa/curl"), port(9001)), allowedByRule("foo.tcp-policy.0")),
				r("curl2 to 9000", req("GET", "/", principal("spiffe://cluster.local/ns/default/sa/curl2"), port(9000), anyToken), noMatchingRule),
				r("curl to 9002", req("GET", "/", principal(curlSA), port(9002), anyToken), noMatchingRule),
			},
		},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			path := filepath.Join("testdata", "authorizationpolicy", tc.file)
			res := runCLI(t, "convert", "authorizationpolicy", path)
			res.wantCode(t, exitOK)
			for _, n := range tc.notes {
				if !strings.Contains(res.stderr, n) {
					t.Errorf("stderr lacks the note %q:\n%s", n, res.stderr)
				}
			}
			golden := filepath.Join("testdata", "authorizationpolicy", "golden", tc.file)
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(res.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestConvertAuthorizationPolicy -update once, and review the files)", err)
			}
			if res.stdout != string(want) {
				t.Errorf("output differs from %s:\n got:\n%s\nwant:\n%s", golden, res.stdout, want)
			}
			engine := engineFor(t, res.stdout)
			for _, rq := range tc.requests {
				d, err := engine.Decide(context.Background(), &rq.facts, nil)
				if err != nil {
					t.Fatalf("%s: %v", rq.name, err)
				}
				if d.Allowed != rq.allowed || d.Reason != rq.reason || (!d.Allowed && d.HTTPStatus != rq.status) {
					t.Errorf("%s: allowed %v, %d %s; want allowed %v, %d %s", rq.name, d.Allowed, d.HTTPStatus, d.Reason, rq.allowed, rq.status, rq.reason)
				}
				if !reflect.DeepEqual(d.Audit, rq.audit) {
					t.Errorf("%s: audit %v, want %v", rq.name, d.Audit, rq.audit)
				}
			}
		})
	}
}

// engineFor loads the converted configuration as the server does, next to a
// JWT provider, and builds the native decision from it.
func engineFor(t *testing.T, out string) *policy.Engine {
	t.Helper()
	cfg, err := config.Parse([]byte(out), t.TempDir())
	if err != nil {
		t.Fatalf("the converted configuration does not load: %v\n%s", err, out)
	}
	rules := cfg.Rules()
	e, err := policy.New(context.Background(), policy.Options{Rules: &rules})
	if err != nil {
		t.Fatalf("the converted rules do not compile: %v\n%s", err, out)
	}
	if !e.Native() {
		t.Fatal("want the native decision")
	}
	return e
}

// TestConvertAuthorizationPolicyNextToJWT: the block loads next to the rest of
// a configuration (here the jwt section the RequestAuthentication converter
// prints).
func TestConvertAuthorizationPolicyNextToJWT(t *testing.T) {
	res := runCLI(t, "convert", "authorizationpolicy", "testdata/authorizationpolicy/jwt.yaml")
	res.wantCode(t, exitOK)
	jwt := "jwt:\n  providers:\n    - name: jwt-example\n      issuer: testing@secure.istio.io\n      allow_any_audience: true\n      jwks_uri: https://issuer.invalid/jwks.json\n"
	cfg, err := config.Parse([]byte(jwt+res.stdout), t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, jwt+res.stdout)
	}
	if got := cfg.Authorization.Rules; len(got) != 1 || got[0].Name != "foo.require-jwt.0" ||
		!reflect.DeepEqual(got[0].RequestPrincipals, []string{"testing@secure.istio.io/testing@secure.istio.io"}) ||
		!reflect.DeepEqual(got[0].Claims, []config.ClaimCondition{{Path: []string{"groups"}, Values: []string{"group1"}}}) {
		t.Fatalf("rules: %+v", got)
	}
}

// TestConvertAuthorizationPolicyMerges: conditions of one Istio rule on one
// Gatehouse field merge only where the result is exact.
func TestConvertAuthorizationPolicyMerges(t *testing.T) {
	const head = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: m, namespace: ns}\nspec:\n  action: DENY\n  rules:\n"
	tests := []struct {
		name, rules string
		want        config.AuthorizationRule
	}{
		{
			name:  "the same principals twice",
			rules: "  - from: [{source: {principals: [a/ns/x/sa/y]}}]\n    when: [{key: source.principal, values: [a/ns/x/sa/y]}]\n",
			want:  config.AuthorizationRule{Name: "ns.m.0", Action: "deny", Principals: []string{"a/ns/x/sa/y"}},
		},
		{
			name:  "ports intersected",
			rules: "  - to: [{operation: {ports: [\"80\", \"443\"]}}]\n    when: [{key: destination.port, values: [\"443\", \"8443\"]}]\n",
			want:  config.AuthorizationRule{Name: "ns.m.0", Action: "deny", Ports: []int{443}},
		},
		{
			name:  "not_ lists united",
			rules: "  - from: [{source: {notIpBlocks: [10.0.0.0/8]}}]\n    when: [{key: source.ip, notValues: [192.168.0.0/16]}]\n",
			want:  config.AuthorizationRule{Name: "ns.m.0", Action: "deny", NotPeerCIDRs: []string{"10.0.0.0/8", "192.168.0.0/16"}},
		},
		{
			name:  "values and notValues of one key",
			rules: "  - when: [{key: request.auth.audiences, values: [\"api*\"], notValues: [api-internal]}, {key: \"request.headers[x-a]\", values: [\"1\"]}, {key: \"request.headers[x-a]\", notValues: [\"2\"]}]\n",
			want: config.AuthorizationRule{Name: "ns.m.0", Action: "deny", Audiences: []string{"api*"}, NotAudiences: []string{"api-internal"},
				Headers: []config.HeaderCondition{{Name: "x-a", Values: []string{"1"}}, {Name: "x-a", NotValues: []string{"2"}}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLIStdin(t, head+tc.rules, "convert", "authorizationpolicy", "-")
			res.wantCode(t, exitOK)
			cfg, err := config.Parse([]byte(res.stdout), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Authorization.Rules) != 1 || !reflect.DeepEqual(cfg.Authorization.Rules[0], tc.want) {
				t.Fatalf("got %+v\nwant %+v\n%s", cfg.Authorization.Rules, tc.want, res.stdout)
			}
		})
	}
}

// TestConvertAuthorizationPolicyRefuses: what Gatehouse cannot enforce
// exactly fails with exit 2, naming the policy, the rule and the field, and
// prints nothing on stdout.
func TestConvertAuthorizationPolicyRefuses(t *testing.T) {
	const head = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n"
	tests := []struct {
		name, file, stdin string
		want              []string
	}{
		{name: "CUSTOM", file: "custom.yaml", want: []string{"foo/ext-authz spec.action: CUSTOM delegates the decision to an external authorizer"}},
		{name: "connection.sni", file: "connection-sni.yaml", want: []string{"foo/sni rules[0].when[0] key connection.sni: the TLS server name is not in the CheckRequest"}},
		{name: "experimental key", file: "experimental-key.yaml", want: []string{"foo/mysql rules[0].when[0] key experimental.envoy.filters.network.mysql_proxy[db.table]: experimental keys"}},
		{name: "a template Istio rejects", file: "bad-template.yaml", want: []string{`foo/templates rules[1].to[0].operation.paths[0]: "/foo/{*}.txt" has segment "{*}.txt"`}},
		{name: "unknown when key", file: "unknown-when-key.yaml", want: []string{"foo/typo rules[0].when[0] key request.auth.claim[groups]: not a when key Istio knows"}},
		{name: "destination.ip", stdin: head + "  rules: [{when: [{key: destination.ip, values: [10.0.0.1]}]}]\n", want: []string{"ns/p rules[0].when[0] key destination.ip: Gatehouse has no rule on the destination address"}},
		{name: "provider without CUSTOM", stdin: head + "  action: DENY\n  provider: {name: x}\n  rules: [{}]\n", want: []string{"ns/p spec.provider"}},
		{name: "an empty path", stdin: head + "  rules: [{to: [{operation: {paths: [\"\"]}}]}]\n", want: []string{`ns/p rules[0].to[0].operation.paths[0]: "" is empty`}},
		{name: "an empty header value", stdin: head + "  rules: [{when: [{key: \"request.headers[x-a]\", values: [\"\"]}]}]\n", want: []string{"ns/p rules[0].when[0] key request.headers[x-a]", "is empty"}},
		{name: "a when without values", stdin: head + "  rules: [{when: [{key: source.ip}]}]\n", want: []string{"ns/p rules[0].when[0] key source.ip: neither values nor notValues"}},
		{name: "a method wildcard", stdin: head + "  rules: [{to: [{operation: {methods: [\"*\"]}}]}]\n", want: []string{`ns/p rules[0].to[0].operation.methods[0]: "*" is not an HTTP method`}},
		{name: "a port that is not one", stdin: head + "  rules: [{to: [{operation: {ports: [\"http\"]}}]}]\n", want: []string{`ns/p rules[0].to[0].operation.ports[0]: "http" is not a port`}},
		{name: "a bad CIDR", stdin: head + "  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]\n", want: []string{"ns/p rules[0].from[0].source.ipBlocks[0]"}},
		{name: "an unknown source field", stdin: head + "  rules: [{from: [{source: {principals: [a], sourceLabels: [b]}}]}]\n", want: []string{"ns/p rules[0].from[0].source.sourceLabels: not a field this converter knows"}},
		{name: "an unknown spec field", stdin: head + "  action: ALLOW\n  rulez: []\n", want: []string{"ns/p spec.rulez: not a field this converter knows"}},
		{name: "an empty source", stdin: head + "  rules: [{from: [{source: {}}]}]\n", want: []string{"ns/p rules[0].from[0].source: has no field set"}},
		{name: "two principal lists that must both hold", stdin: head + "  rules: [{from: [{source: {principals: [a/ns/x/sa/y]}}], when: [{key: source.principal, values: [\"*/sa/z\"]}]}]\n",
			want: []string{"ns/p rules[0].when[0] key source.principal values: Gatehouse's principals would have to hold both", "would widen the rule"}},
		{name: "disjoint ports", stdin: head + "  rules: [{to: [{operation: {ports: [\"80\"]}}], when: [{key: destination.port, values: [\"443\"]}]}]\n", want: []string{"ns/p rules[0].when[0] key destination.port values: the ports [80] and [443] must both match"}},
		{name: "a serviceAccount wildcard", stdin: head + "  rules: [{from: [{source: {serviceAccounts: [\"default/*\"]}}]}]\n", want: []string{`ns/p rules[0].from[0].source.serviceAccounts[0]: "default/*" is not <namespace>/<serviceaccount>`}},
		{name: "a dry-run value that is not a boolean", stdin: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: ns, annotations: {istio.io/dry-run: maybe}}\nspec: {action: DENY, rules: [{}]}\n", want: []string{`ns/p metadata.annotations: istio.io/dry-run: "maybe" is not true or false`}},
		{name: "another API version", stdin: "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {}\n", want: []string{"p: apiVersion security.istio.io/v1alpha1"}},
		{name: "a name a rule cannot take", stdin: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: \"a:b\", namespace: ns}\nspec: {rules: [{}]}\n", want: []string{"ns/a:b metadata: the namespace and name make the rule names"}},
		{name: "two policies with one name", stdin: head + "  rules: [{}]\n---\n" + head + "  rules: [{}]\n", want: []string{"two rules would be named ns.p.0"}},
		{name: "several problems, all listed", stdin: head + "  action: CUSTOM\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: q, namespace: ns}\nspec:\n  rules: [{when: [{key: connection.sni, values: [a]}]}]\n",
			want: []string{"2 problem(s); nothing was converted", "ns/p spec.action: CUSTOM", "ns/q rules[0].when[0] key connection.sni"}},
		{name: "no AuthorizationPolicy", stdin: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", want: []string{"no security.istio.io AuthorizationPolicy found"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			arg := "-"
			if tc.file != "" {
				arg = filepath.Join("testdata", "authorizationpolicy", "refused", tc.file)
			}
			res := runCLIStdin(t, tc.stdin, "convert", "authorizationpolicy", arg)
			res.wantCode(t, exitError)
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if res.stdout != "" {
				t.Errorf("nothing may be printed on stdout on error, got:\n%s", res.stdout)
			}
		})
	}
}

// TestConvertAuthorizationPolicyCommandLine: dispatch, usage and arguments.
func TestConvertAuthorizationPolicyCommandLine(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"convert", "authorizationpolicy", "--help"}, exitOK, "Usage: gatehousectl convert authorizationpolicy FILE", ""},
		{"convert help lists both", []string{"convert", "--help"}, exitOK, "Usage: gatehousectl convert authorizationpolicy FILE", ""},
		{"no file", []string{"convert", "authorizationpolicy"}, exitError, "", "want one FILE (or - for standard input), got none"},
		{"two files", []string{"convert", "authorizationpolicy", "a.yaml", "b.yaml"}, exitError, "", `unexpected argument "b.yaml"`},
		{"missing file", []string{"convert", "authorizationpolicy", "testdata/authorizationpolicy/absent.yaml"}, exitError, "", "absent.yaml"},
		{"unknown conversion", []string{"convert", "peerauthentication", "x.yaml"}, exitError, "", "the ones available are requestauthentication and authorizationpolicy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, tc.args...)
			res.wantCode(t, tc.code)
			if !strings.Contains(res.stdout, tc.stdout) || !strings.Contains(res.stderr, tc.stderr) {
				t.Fatalf("stdout:\n%s\nstderr:\n%s", res.stdout, res.stderr)
			}
		})
	}
}
