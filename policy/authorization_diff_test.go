package policy

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
)

// The configured decision is specified in Rego (policy/rego/gatehouse) and
// evaluated natively (native.go, authorization.go). FuzzAuthorizationMatchesRego
// generates the rules as well as the requests, from shared pools of hosts,
// paths, methods, ports, addresses, principals, claims and headers so that
// rules and requests meet, and holds the native decision (and its Explain
// mirror, and the document a custom policy reads at input.gatehouse.decision)
// equal to the Rego one in every field. TestGeneratorSetsEveryField fails
// when a field of the rule types is never set by the generator, so a field
// added later cannot go untested.
//
// Each of these one-line bugs in the native code was injected, one at a
// time, and caught by this target within `make fuzz`'s budget (FUZZ_AUTHZ,
// 10000 executions), most within a second:
//   - authzRules.request: the host not lower-cased (hosts compared with case)
//   - failure: not_methods ignored
//   - pathsHold: an allow rule matching a structurally ambiguous path
//   - pathsHold: a deny rule ignoring the decoded reading
//   - notPathsHold: a deny rule's not_paths compared without case
//   - pathPattern.match: "/files/{**}" also matching "/files"
//   - failure: ports checked against not_ports
//   - failure: peer_cidrs checked against the client IP
//   - authzRules.request: the namespace taken after "/sa/" instead of "/ns/"
//   - compilePrincipal: request principals split at the first "/"
//   - identity.anyAudience: the first audience only
//   - identity.claimMatches: space-delimited claims not split
//   - failure: a header condition's not_values ignored
//   - decideSteps: an invalid token checked after the allow rules
//   - decideSteps: deny rules after the trusted-IP bypass
//   - auditMatches: audit names in reverse order
//   - ruleSet.candidates: a structurally ambiguous path not given every rule
//   - ruleSet.candidates: the decoded path's first segment not looked up
// (Not lower-casing the raw first segment in candidates is no bug: the
// decoded segment, lower-cased, is looked up too.)

// Pools shared by the rule and request generators.
var (
	genHosts      = []string{"api.example.com", "API.Example.com", "api.example.com:*", "*.example.com", "admin.*", "*", "admin.example.com"}
	genReqHosts   = []string{"api.example.com", "API.EXAMPLE.COM", "api.example.com:8443", "admin.example.com", "x.example.com", "", "[2001:db8::1]:443"}
	genPaths      = []string{"/orders", "/orders/*", "*.json", "*", "/orders/{*}", "/orders/{*}/items", "/files/{**}", "/{*}/admin", "/admin*", "/healthz", "/ORDERS/*", "/%6frders/*"}
	genReqPaths   = []string{"/orders", "/orders/1", "/ORDERS/1", "/orders/1/items", "/orders//items", "/files/", "/files/a/b", "/files", "/x/admin", "/admin", "/admin/x", "/healthz", "/a.json", "/orders/%2e%2e/admin", "/orders/../admin", "/orders/a%20b", "//admin", "/orders;x", "/", "/%61dmin", "/%6Frders/1", "/a+b"}
	genMethods    = []string{"GET", "POST", "DELETE"}
	genPorts      = []int{8080, 8443}
	genReqPorts   = []uint32{0, 8080, 8443}
	genCIDRs      = []string{"10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"}
	genIPs        = []string{"10.1.2.3", "192.0.2.7", "203.0.113.9", "2001:db8::5", "", "not-an-ip"}
	genPrincipals = []string{"cluster.local/ns/prod/sa/web", "cluster.local/ns/prod/*", "*/sa/web", "*"}
	genReqPrin    = []string{"spiffe://cluster.local/ns/prod/sa/web", "spiffe://cluster.local/ns/dev/sa/web", "", "cluster.local/ns/prod/sa/api"}
	genNamespaces = []string{"prod", "dev", "pro*", "*"}
	genReqPrinc   = []string{"*", "https://issuer.example.com/alice", "https://issuer.example.com/*", "*/alice", "https://other.example.com/*", "alice", "*.example.com/bob"}
	genAudiences  = []string{"orders", "admin", "ord*"}
	genPresenters = []string{"web", "*", "cl*"}
	genClaimPaths = [][]string{{"groups"}, {"scope"}, {"realm_access", "roles"}, {"sub"}, {"missing"}}
	genClaimVals  = []string{"admins", "dev", "orders:write", "ops", "alice", "*", "orders:*"}
	genHeaderN    = []string{"x-tenant", "X-Env"}
	genHeaderV    = []string{"acme", "ac*", "*", "prod", "*od"}
	genIssuers    = []string{"https://issuer.example.com", "https://other.example.com", ""}
	genSubs       = []string{"alice", "bob", ""}
)

// gen draws choices from fuzz bytes, then from a generator seeded with them:
// a short input still describes a whole rule set and several requests, and
// the same input always the same ones.
type gen struct {
	b    []byte
	rest *rand.Rand
}

func newGen(b []byte) *gen {
	h := fnv.New64a()
	h.Write(b)
	return &gen{b: b, rest: rand.New(rand.NewPCG(h.Sum64(), uint64(len(b))))}
}

func (g *gen) byte() byte {
	if len(g.b) == 0 {
		return byte(g.rest.Uint32())
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *gen) n(n int) int { return int(g.byte()) % n }

// maybe is true one time in four.
func (g *gen) maybe() bool { return g.byte()%4 == 0 }

func pick[T any](g *gen, pool []T) T { return pool[g.n(len(pool))] }

func picks[T any](g *gen, pool []T) []T {
	out := []T{pick(g, pool)}
	if g.byte()%3 == 0 {
		out = append(out, pick(g, pool))
	}
	return out
}

func (g *gen) rule(i int) AuthzRule {
	r := AuthzRule{Name: "r" + string(rune('a'+i)), Action: []string{ActionAllow, ActionAllow, ActionDeny, ActionAudit}[g.n(4)]}
	set := func(dst *[]string, pool []string) {
		if g.maybe() {
			*dst = picks(g, pool)
		}
	}
	set(&r.Hosts, genHosts)
	set(&r.NotHosts, genHosts)
	set(&r.Methods, genMethods)
	set(&r.NotMethods, genMethods)
	set(&r.Paths, genPaths)
	set(&r.NotPaths, genPaths)
	if g.maybe() {
		r.Ports = picks(g, genPorts)
	}
	if g.maybe() {
		r.NotPorts = picks(g, genPorts)
	}
	set(&r.PeerCIDRs, genCIDRs)
	set(&r.NotPeerCIDRs, genCIDRs)
	set(&r.ClientCIDRs, genCIDRs)
	set(&r.NotClientCIDRs, genCIDRs)
	set(&r.Principals, genPrincipals)
	set(&r.NotPrincipals, genPrincipals)
	set(&r.Namespaces, genNamespaces)
	set(&r.NotNamespaces, genNamespaces)
	set(&r.RequestPrincipals, genReqPrinc)
	set(&r.NotRequestPrincipals, genReqPrinc)
	set(&r.Audiences, genAudiences)
	set(&r.NotAudiences, genAudiences)
	set(&r.Presenters, genPresenters)
	set(&r.NotPresenters, genPresenters)
	if g.maybe() {
		c := ClaimCondition{Path: pick(g, genClaimPaths)}
		switch g.n(3) {
		case 0:
			c.Values = picks(g, genClaimVals)
		case 1:
			c.NotValues = picks(g, genClaimVals)
		default:
			c.Values, c.NotValues = picks(g, genClaimVals), picks(g, genClaimVals)
		}
		r.Claims = append(r.Claims, c)
	}
	if g.maybe() {
		h := HeaderCondition{Name: pick(g, genHeaderN)}
		switch g.n(3) {
		case 0:
			h.Values = picks(g, genHeaderV)
		case 1:
			h.NotValues = picks(g, genHeaderV)
		default:
			h.Values, h.NotValues = picks(g, genHeaderV), picks(g, genHeaderV)
		}
		r.Headers = append(r.Headers, h)
	}
	return r
}

// rules generates a rule set: the authorization section over one of a few
// bases (none, a trusted network with header rules and scopes).
func (g *gen) rules() Rules {
	r := Rules{Providers: []string{"corp"}}
	switch g.n(3) {
	case 1:
		r.TrustedCIDRs = []string{"10.0.0.0/8"}
		r.BypassPaths = []string{"/healthz"}
	case 2:
		r.TrustedCIDRs = []string{"10.0.0.0/8", "2001:db8::/32"}
		r.Require = []HeaderMatch{{Name: "x-tenant"}}
		r.RulesFor = []ScopedRules{{PathPrefix: "/admin", Deny: []HeaderMatch{{Name: "x-env", Regex: "^dev$"}}}}
	}
	if g.n(2) == 0 {
		r.SpaceDelimitedClaims = map[string][]string{"corp": {"scope"}}
	} else {
		r.SpaceDelimitedClaims = map[string][]string{"corp": {}}
	}
	n := g.n(5)
	for i := range n {
		r.Authorization.Rules = append(r.Authorization.Rules, g.rule(i))
	}
	r.Authorization.AllowNothing = n == 0 && g.n(3) == 0
	return r
}

// facts generates a request.
func (g *gen) facts() *Facts {
	f := &Facts{
		Headers: map[string]string{},
		Path:    pick(g, genReqPaths),
		Host:    pick(g, genReqHosts),
		Method:  pick(g, genMethods),
		Port:    pick(g, genReqPorts),
		Peer:    pick(g, genIPs),
	}
	f.SourcePrincipal = pick(g, genReqPrin)
	if a, ok := netip.ParseAddr(pick(g, genIPs)); ok == nil {
		f.ClientIP = a
	}
	for _, name := range []string{"x-tenant", "x-env"} {
		if g.maybe() {
			f.Headers[name] = pick(g, []string{"acme", "prod", "dev", "", "acme,prod"})
		}
	}
	switch g.n(4) {
	case 0: // no token
	case 1:
		f.Token = &TokenFacts{Provider: "corp", Error: "expired"}
	default:
		claims := map[string]any{}
		if iss := pick(g, genIssuers); iss != "" {
			claims["iss"] = iss
		}
		if sub := pick(g, genSubs); sub != "" {
			claims["sub"] = sub
		}
		switch g.n(3) {
		case 0:
			claims["aud"] = "orders"
		case 1:
			claims["aud"] = []any{"admin", "orders", 7}
		}
		if g.n(2) == 0 {
			claims["azp"] = pick(g, []string{"web", "cli"})
		}
		if g.n(2) == 0 {
			claims["scope"] = pick(g, []string{"orders:read orders:write", "orders:write", "  "})
		}
		if g.n(2) == 0 {
			claims["groups"] = pick(g, []any{[]any{"admins", "dev"}, "admins", []any{1, "ops"}})
		}
		if g.n(2) == 0 {
			claims["realm_access"] = pick(g, []any{map[string]any{"roles": []any{"ops"}}, []any{"ops"}})
		}
		raw, _ := json.Marshal(claims)
		f.Token = &TokenFacts{Valid: true, Provider: "corp", Claims: raw}
	}
	return f
}

// inputFor is the policy input authz builds from f (authz/input.go), for the
// fields the configured decision reads; authz's own differential tests hold
// the real input builder to the same facts.
func inputFor(f *Facts) ast.Value {
	headers := map[string]any{}
	for k, v := range f.Headers {
		headers[k] = v
	}
	attrs := map[string]any{
		"request": map[string]any{"http": map[string]any{
			"headers": headers, "host": f.Host, "path": f.Path, "method": f.Method,
		}},
		"source": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": f.Peer}}},
	}
	if f.SourcePrincipal != "" {
		attrs["source"].(map[string]any)["principal"] = f.SourcePrincipal
	}
	if f.Port != 0 {
		attrs["destination"] = map[string]any{"address": map[string]any{"socketAddress": map[string]any{"portValue": f.Port}}}
	}
	in := map[string]any{"attributes": attrs, "request_path": f.Path, "client_ip": ""}
	if f.ClientIP.IsValid() {
		in["client_ip"] = f.ClientIP.String()
	}
	if f.Token != nil {
		var claims any = map[string]any{}
		if len(f.Token.Claims) > 0 {
			_ = util.UnmarshalJSON(f.Token.Claims, &claims)
		}
		in["jwt"] = map[string]any{"valid": f.Token.Valid, "provider": f.Token.Provider, "error": f.Token.Error, "claims": claims}
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		panic(err)
	}
	return v
}

// specEvaluator evaluates the embedded Rego decision with any rules: the
// modules are compiled once, the rules go into a fresh store per call.
type specEvaluator struct {
	q     *query
	cidrs *cidrCache
}

func newSpecEvaluator(t testing.TB) *specEvaluator {
	t.Helper()
	src, err := loadSources(nil, ast.RegoV1, nil, false, embedAll, false)
	if err != nil {
		t.Fatal(err)
	}
	compiler := newCompiler(ast.RegoV1, false, nil)
	if compiler.Compile(src.modules); compiler.Failed() {
		t.Fatal(compiler.Errors)
	}
	cidrs := newCIDRCache()
	q, err := prepareQuery(queryOptions{
		decision: ast.MustParseRef("data.gatehouse.authz.decision"),
		compiler: compiler,
		store:    inmem.New(),
		builtins: map[string]*topdown.Builtin{cidrContainsName: cidrs.builtin()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &specEvaluator{q: q, cidrs: cidrs}
}

func (s *specEvaluator) decide(t testing.TB, rules Rules, f *Facts) Decision {
	t.Helper()
	var data any = map[string]any{"gatehouse": map[string]any{"config": rules.Data()}}
	if err := util.RoundTrip(&data); err != nil {
		t.Fatal(err)
	}
	store := inmem.NewFromObject(data.(map[string]any))
	ctx := context.Background()
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(ctx, txn)
	q := &query{tmpl: s.q.tmpl}
	q.tmpl.WithStore(store).WithTransaction(txn)
	v, defined, err := q.eval(ctx, inputFor(f), topdown.NewCancel(), nil)
	if err != nil || !defined {
		t.Fatalf("Rego decision: defined %v, err %v\nrules: %+v\nfacts: %+v", defined, err, rules, f)
	}
	d, err := parseResult(v)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func checkSame(t *testing.T, spec *specEvaluator, rules Rules, f *Facts) Decision {
	t.Helper()
	n, err := compileNative(rules)
	if err != nil {
		t.Fatalf("compileNative: %v\nrules: %+v", err, rules)
	}
	got := n.decide(f, nil)
	want := spec.decide(t, rules, f)
	show := func() string {
		rb, _ := json.Marshal(rules.Authorization)
		fb, _ := json.Marshal(f)
		claims := ""
		if f.Token != nil {
			claims = string(f.Token.Claims)
		}
		return "rules: " + string(rb) + "\nfacts: " + string(fb) + "\nclaims: " + claims
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("native and Rego differ\nnative: %+v\nrego:   %+v\n%s", got, want, show())
	}
	if traced := n.decide(f, &trace{}); !reflect.DeepEqual(traced, got) {
		t.Fatalf("Explain's decide differs\nexplain: %+v\ndecide:  %+v\n%s", traced, got, show())
	}
	// What a custom policy reads at input.gatehouse.decision is the same
	// document the Rego decision is.
	offered, err := parseResult(got.value())
	if err != nil {
		t.Fatal(err)
	}
	if !sameOffered(offered, got) {
		t.Fatalf("input.gatehouse.decision reads back as %+v, decided %+v", offered, got)
	}
	return got
}

// sameOffered: value() carries what a policy needs (allowed, reason,
// bypass, audit, and a denial's status, headers, body).
func sameOffered(a, b Decision) bool {
	return a.Allowed == b.Allowed && a.Reason == b.Reason && a.Bypass == b.Bypass && reflect.DeepEqual(a.Audit, b.Audit) &&
		a.HTTPStatus == b.HTTPStatus && a.Body == b.Body && reflect.DeepEqual(a.Headers, b.Headers)
}

func FuzzAuthorizationMatchesRego(f *testing.F) {
	for seed := range uint64(24) {
		r := rand.New(rand.NewPCG(seed, 7))
		b := make([]byte, 48)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	spec := newSpecEvaluator(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newGen(b)
		rules := g.rules()
		// Several requests per rule set: compiling the rules is the cost.
		for range 4 {
			checkSame(t, spec, rules, g.facts())
		}
	})
}

// TestAuthorizationMatchesRego runs the generator over a fixed stream, so
// `go test` (and the race detector) exercise it too, and checks that every
// outcome occurs: a generator that never reached a branch would prove
// nothing there.
func TestAuthorizationMatchesRego(t *testing.T) {
	spec := newSpecEvaluator(t)
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]int{}
	for range 3000 {
		b := make([]byte, 160)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		g := newGen(b)
		rules := g.rules()
		for range 3 {
			d := checkSame(t, spec, rules, g.facts())
			kind, _, _ := strings.Cut(d.Reason, ":")
			seen[kind]++
			if len(d.Audit) > 0 {
				seen["audit"]++
			}
		}
	}
	for _, want := range []string{KindRuleAllowed, KindRuleDenied, ReasonNoMatchingRule, ReasonTokenMissing, "token_expired", ReasonTrustedIP, ReasonTokenValid, "audit", KindHeaderRequired} {
		if seen[want] == 0 {
			t.Errorf("no generated request was decided %s (seen: %v)", want, seen)
		}
	}
}

// TestGeneratorSetsEveryField: every field of the rule types is set by some
// generated rule set. A field added to AuthzRule, ClaimCondition,
// HeaderCondition or Authorization without a generator fails here.
func TestGeneratorSetsEveryField(t *testing.T) {
	set := map[string]bool{}
	var mark func(prefix string, v reflect.Value)
	mark = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f, name := v.Field(i), prefix+v.Type().Field(i).Name
			if !f.IsZero() {
				set[name] = true
			}
			if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct {
				for j := range f.Len() {
					mark(name+".", f.Index(j))
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, 160)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		rules := newGen(b).rules()
		mark("Authorization.", reflect.ValueOf(rules.Authorization))
	}
	var want func(prefix string, t reflect.Type)
	var missing []string
	want = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !set[prefix+f.Name] {
				missing = append(missing, prefix+f.Name)
			}
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				want(prefix+f.Name+".", f.Type.Elem())
			}
		}
	}
	want("Authorization.", reflect.TypeOf(Authorization{}))
	if len(missing) > 0 {
		t.Fatalf("the generator never sets %s: add them to gen.rule", strings.Join(missing, ", "))
	}
}
