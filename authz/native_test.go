package authz

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// The native decision must answer exactly as its Rego specification
// (policy/rego/gatehouse/authz.rego) in every field: allowed, status,
// reason, headers, body, bypass. These tests run the same requests through
// two real servers that differ only in who decides: the engine without
// policy paths (native), and the engine with a one-line policy path that
// delegates to the embedded Rego decision (OPA). Same facts, same input
// builder, same response mapping.

// recorder keeps the last Decision its engine returned.
type recorder struct {
	e    *policy.Engine
	mu   sync.Mutex
	last policy.Decision
}

func (r *recorder) Decide(ctx context.Context, f *policy.Facts, in policy.InputBuilder) (policy.Decision, error) {
	d, err := r.e.Decide(ctx, f, in)
	r.mu.Lock()
	r.last = d
	r.mu.Unlock()
	return d, err
}

// Explain records like Decide, so a test can hold Explain's decision
// against Check's.
func (r *recorder) Explain(ctx context.Context, f *policy.Facts, in policy.InputBuilder) (policy.Decision, []policy.Step, error) {
	d, steps, err := r.e.Explain(ctx, f, in)
	r.mu.Lock()
	r.last = d
	r.mu.Unlock()
	return d, steps, err
}

type pair struct {
	native, rego       *Server
	nativeRec, regoRec *recorder
}

// regoShim is a custom policy that answers the embedded default decision:
// with a policy path set, OPA evaluates the Rego specification.
func regoShim(t testing.TB) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "shim.rego"), []byte("package envoy.authz\n\nallow := data.gatehouse.authz.decision\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newPair(t testing.TB, rules policy.Rules, ipOpts clientip.Options, tokens TokenVerifier, shim string) *pair {
	t.Helper()
	resolver, err := clientip.New(ipOpts)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(paths []string) (*Server, *recorder) {
		e, err := policy.New(context.Background(), policy.Options{Paths: paths, Rules: &rules})
		if err != nil {
			t.Fatal(err)
		}
		if (len(paths) == 0) != e.Native() {
			t.Fatalf("paths %v: Native() = %v", paths, e.Native())
		}
		rec := &recorder{e: e}
		s, err := New(Options{Policy: rec, ClientIP: resolver, Tokens: tokens, ParseBody: true})
		if err != nil {
			t.Fatal(err)
		}
		return s, rec
	}
	p := &pair{}
	p.native, p.nativeRec = mk(nil)
	p.rego, p.regoRec = mk([]string{shim})
	return p
}

// compare runs req through both servers and fails on any difference.
func (p *pair) compare(t testing.TB, req *authv3.CheckRequest) policy.Decision {
	t.Helper()
	ctx := context.Background()
	nResp, err := p.native.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rResp, err := p.rego.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	nd, rd := p.nativeRec.last, p.regoRec.last
	nd.Revision, rd.Revision = "", ""
	if !reflect.DeepEqual(nd, rd) {
		t.Fatalf("native and Rego decisions differ\nnative: %+v\nrego:   %+v", nd, rd)
	}
	if n, r := responseShape(nResp), responseShape(rResp); n != r {
		t.Fatalf("responses differ\nnative: %s\nrego:   %s", n, r)
	}
	return nd
}

// responseShape is the response without the per-check decision id.
func responseShape(resp *authv3.CheckResponse) string {
	var b strings.Builder
	b.WriteString(resp.GetStatus().String())
	if d := resp.GetDeniedResponse(); d != nil {
		b.WriteString(d.GetStatus().String() + d.GetBody())
		for _, h := range d.GetHeaders() {
			if h.GetHeader().GetKey() != DecisionIDHeader {
				b.WriteString(h.String())
			}
		}
	}
	if ok := resp.GetOkResponse(); ok != nil {
		b.WriteString(ok.String())
	}
	return b.String()
}

var diffRules = policy.Rules{
	TrustedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"},
	Require:      []policy.HeaderMatch{{Name: "X-Tenant-ID", Regex: "^[a-z]+$"}},
	Deny:         []policy.HeaderMatch{{Name: "x-debug"}, {Name: "User-Agent", Regex: "(?i)sqlmap|nikto"}},
	AllowValues:  []policy.HeaderValues{{Name: "x-env", Values: []string{"prod", "staging"}}},
	RulesFor: []policy.ScopedRules{
		{Host: "Admin.Example.com:443", PathPrefix: "/admin", Require: []policy.HeaderMatch{{Name: "x-admin-ticket"}}},
		{PathPrefix: "/internal/", Deny: []policy.HeaderMatch{{Name: "x-external"}}, AllowValues: []policy.HeaderValues{{Name: "x-role", Values: []string{"ops"}}}},
		{Host: "[2001:db8::1]", Require: []policy.HeaderMatch{{Name: "x-v6"}}},
	},
	Providers: []string{"corp"},
}

func TestNativeMatchesRegoTable(t *testing.T) {
	shim := regoShim(t)
	valid := &gjwt.Result{Valid: true, Provider: "corp", Claims: []byte(`{"sub": "alice"}`), Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}
	expired := &gjwt.Result{Provider: "corp", Error: "expired"}
	oddError := &gjwt.Result{Error: `we"ird\<err>`}
	bypassPaths := diffRules
	bypassPaths.BypassPaths = []string{"/healthz", "/metrics/"}
	noProviders := policy.Rules{TrustedCIDRs: []string{"10.0.0.0/8"}}

	type tc struct {
		name    string
		rules   policy.Rules
		ip      clientip.Options
		tok     *gjwt.Result
		peer    string
		method  string
		path    string
		host    string
		headers map[string]string
		want    string // reason, to make sure the table covers each branch
	}
	base := map[string]string{"x-tenant-id": "acme"}
	cases := []tc{
		{name: "valid token", tok: valid, headers: base, want: "token_valid"},
		{name: "no token", headers: base, want: "token_missing"},
		{name: "expired token", tok: expired, headers: base, want: "token_expired"},
		{name: "token error needing escapes", tok: oddError, host: "API.Example.com.:8443", want: `token_we"ird\<err>`},
		{name: "invalid token without error", tok: &gjwt.Result{}, want: "token_invalid"},
		{name: "deny rule beats bypass", peer: "10.1.2.3", headers: map[string]string{"x-debug": "1"}, want: "header_denied:x-debug"},
		{name: "deny regex", tok: valid, headers: map[string]string{"x-tenant-id": "acme", "user-agent": "SQLMap/1.0"}, want: "header_denied:user-agent"},
		{name: "deny regex no match", tok: valid, headers: map[string]string{"x-tenant-id": "acme", "user-agent": "curl"}, want: "token_valid"},
		{name: "trusted ip", peer: "10.1.2.3", want: "trusted_ip"},
		{name: "trusted v6", peer: "2001:db8::5", want: "trusted_ip"},
		{name: "require missing", tok: valid, want: "header_required:x-tenant-id"},
		{name: "require regex", tok: valid, headers: map[string]string{"x-tenant-id": "ACME"}, want: "header_invalid:x-tenant-id"},
		{name: "allow values ok", tok: valid, headers: map[string]string{"x-tenant-id": "a", "x-env": "prod, staging"}, want: "token_valid"},
		{name: "allow values nbsp", tok: valid, headers: map[string]string{"x-tenant-id": "a", "x-env": "prod\u00a0"}, want: "header_value_not_allowed:x-env"},
		{name: "allow values tab", tok: valid, headers: map[string]string{"x-tenant-id": "a", "x-env": "\tprod"}, want: "token_valid"},
		{name: "scoped require", tok: valid, host: "admin.example.com", path: "/admin/users", headers: base, want: "header_required:x-admin-ticket"},
		{name: "scoped host with port and dot", tok: valid, host: "ADMIN.example.com.:8443", path: "/admin", headers: base, want: "header_required:x-admin-ticket"},
		{name: "scope other host", tok: valid, host: "api.example.com", path: "/admin", headers: base, want: "token_valid"},
		{name: "scope prefix without slash", tok: valid, path: "/internal", headers: map[string]string{"x-tenant-id": "a", "x-external": "1"}, want: "header_denied:x-external"},
		{name: "scope prefix case", tok: valid, path: "/INTERNAL/x", headers: map[string]string{"x-tenant-id": "a", "x-role": "dev"}, want: "header_value_not_allowed:x-role"},
		{name: "ambiguous path gets every scope", tok: valid, host: "admin.example.com", path: "/public/%2e%2e/admin", headers: base, want: "header_required:x-admin-ticket"},
		{name: "v6 host scope", tok: valid, host: "[2001:DB8::1]:443", headers: base, want: "header_required:x-v6"},
		{name: "bypass path ok", rules: bypassPaths, peer: "10.1.2.3", path: "/healthz/live", want: "trusted_ip"},
		{name: "bypass path narrow", rules: bypassPaths, peer: "10.1.2.3", path: "/metrics", want: "token_missing"},
		{name: "bypass path ambiguous", rules: bypassPaths, peer: "10.1.2.3", path: "/healthz/../admin", want: "token_missing"},
		{name: "no providers", rules: noProviders, want: "token_missing"},
		{name: "xff fallback in body", ip: clientip.Options{Source: "xff", XFFTrustedHops: 1}, headers: map[string]string{"x-tenant-id": "a"}, want: "token_missing"},
		{name: "no host at all", host: "-", tok: expired, want: "token_expired"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules := diffRules
			if c.rules.TrustedCIDRs != nil || c.rules.Providers != nil {
				rules = c.rules
			}
			p := newPair(t, rules, c.ip, fixedTokens{c.tok}, shim)
			req := diffRequest(c.peer, c.path, c.host, c.headers)
			d := p.compare(t, req)
			if d.Reason != c.want {
				t.Errorf("reason = %q, want %q", d.Reason, c.want)
			}
			// Explain (native: the step-recording mirror of decide; Rego:
			// traced) must reach exactly the decision Check did.
			for name, s := range map[string]struct {
				srv *Server
				rec *recorder
			}{"native": {p.native, p.nativeRec}, "rego": {p.rego, p.regoRec}} {
				x, err := s.srv.Explain(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				got := s.rec.last
				got.Revision = ""
				if !reflect.DeepEqual(got, d) {
					t.Errorf("%s: Explain decided %+v, Check decided %+v", name, got, d)
				}
				if x.Reason != c.want || len(x.Steps) == 0 {
					t.Errorf("%s: explanation reason %q (want %q), %d steps", name, x.Reason, c.want, len(x.Steps))
				}
			}
		})
	}
}

func diffRequest(peer, path, host string, headers map[string]string) *authv3.CheckRequest {
	if peer == "" {
		peer = "203.0.113.9"
	}
	if path == "" {
		path = "/orders/1?x=1"
	}
	h := map[string]string{":method": "GET", ":path": path}
	switch host {
	case "":
		host = "api.example.com"
	case "-":
		host = ""
	}
	if host != "" {
		h[":authority"] = host
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: peer}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: path, Host: host, Headers: h,
		}},
	}}
}

// headerTokens is a verifier whose verdict the request carries, so one
// server pair serves every fuzzed token state: x-test-token absent is no
// token, "valid" a valid one, anything else an invalid one with that error.
type headerTokens struct{}

func (headerTokens) Verify(_ context.Context, req gjwt.Request) *gjwt.Result {
	v, ok := req.Headers["x-test-token"]
	switch {
	case !ok:
		return nil
	case v == "valid":
		return &gjwt.Result{Valid: true, Provider: "corp", Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}}
	}
	return &gjwt.Result{Provider: "corp", Error: v}
}

func (headerTokens) IdentityHeaders() []string { return []string{"x-jwt-sub"} }

// FuzzNativeMatchesRego: random requests and token verdicts over rule sets
// with scopes, bypass paths and none; the two deciders never disagree in any
// field, and the native Explain agrees with both.
func FuzzNativeMatchesRego(f *testing.F) {
	f.Add("/admin/x", "admin.example.com", "10.1.2.3", "acme", "prod", "", "", "", uint8(0))
	f.Add("//a/./b;c", "[::1]:80", "2001:db8::1", "", "prod ,x", "sqlmap", "1", "valid", uint8(1))
	f.Add("/internal", "API.example.com.", "203.0.113.9", "Acme", "\u00a0prod", "", "", "expired", uint8(2))
	f.Add("/healthz", "", "10.9.9.9", "", "", "", "", "", uint8(1))
	shim := regoShim(f)
	withPaths := diffRules
	withPaths.BypassPaths = []string{"/healthz", "/metrics/"}
	withPaths.RulesFor = append([]policy.ScopedRules{{Host: "api.example.com.", PathPrefix: "/a/", Deny: []policy.HeaderMatch{{Name: "x-debug", Regex: "^1$"}}}}, diffRules.RulesFor...)
	pairs := []*pair{
		newPair(f, diffRules, clientip.Options{}, headerTokens{}, shim),
		newPair(f, withPaths, clientip.Options{Source: "xff", XFFTrustedHops: 1}, headerTokens{}, shim),
		newPair(f, policy.Rules{TrustedCIDRs: []string{"0.0.0.0/1"}}, clientip.Options{}, headerTokens{}, shim),
	}
	f.Fuzz(func(t *testing.T, path, host, peer, tenant, env, agent, debug, token string, variant uint8) {
		headers := map[string]string{}
		for k, v := range map[string]string{"x-tenant-id": tenant, "x-env": env, "user-agent": agent, "x-debug": debug, "x-forwarded-for": agent} {
			if v != "" {
				headers[k] = v
			}
		}
		if token != "" {
			headers["x-test-token"] = token
		}
		p := pairs[int(variant)%len(pairs)]
		req := diffRequest(peer, path, host, headers)
		d := p.compare(t, req)
		// Explain's step-recording mirror of decide reaches the same decision.
		if _, err := p.native.Explain(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		got := p.nativeRec.last
		got.Revision = ""
		if !reflect.DeepEqual(got, d) {
			t.Fatalf("native Explain decided %+v, Check decided %+v", got, d)
		}
	})
}
