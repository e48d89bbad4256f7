package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// Authorization is the configuration's authorization section: rules with
// Istio AuthorizationPolicy semantics. policy/rego/gatehouse/authorization.rego
// specifies them; the native decision compiles them once per revision
// (authzRules) and the differential tests hold the two equal.
type Authorization struct {
	// AllowNothing: the allow list is in force though it holds no rule
	// (Istio's ALLOW policy without rules).
	AllowNothing bool
	Rules        []AuthzRule
}

// AuthzRule is one rule; see config.AuthorizationRule for the meaning of
// each field. Action is ActionAllow, ActionDeny or ActionAudit.
type AuthzRule struct {
	Name, Action                            string
	Hosts, NotHosts, Methods, NotMethods    []string
	Paths, NotPaths                         []string
	Ports, NotPorts                         []int
	PeerCIDRs, NotPeerCIDRs                 []string
	ClientCIDRs, NotClientCIDRs             []string
	Principals, NotPrincipals               []string
	Namespaces, NotNamespaces               []string
	RequestPrincipals, NotRequestPrincipals []string
	Audiences, NotAudiences                 []string
	Presenters, NotPresenters               []string
	Claims                                  []ClaimCondition
	Headers                                 []HeaderCondition
}

// ClaimCondition matches the claim at Path.
type ClaimCondition struct {
	Path              []string
	Values, NotValues []string
}

// HeaderCondition matches the value of header Name.
type HeaderCondition struct {
	Name              string
	Values, NotValues []string
}

// Rule actions.
const (
	ActionAllow = "allow"
	ActionDeny  = "deny"
	ActionAudit = "audit"
)

// ValidateAuthzRule checks the values of one rule as Istio validates them:
// string patterns with "*" only at one end, path templates ("{*}", "{**}"
// last, each operator a whole segment), CIDRs, ports, claim paths and header
// names. The error starts with the field's key.
func ValidateAuthzRule(r AuthzRule) error {
	switch r.Action {
	case "", ActionAllow, ActionDeny, ActionAudit:
	default:
		return fmt.Errorf("action: %q is not allow, deny or audit", r.Action)
	}
	for _, f := range []struct {
		key    string
		values []string
	}{
		{"hosts", r.Hosts}, {"not_hosts", r.NotHosts},
		{"principals", r.Principals}, {"not_principals", r.NotPrincipals},
		{"namespaces", r.Namespaces}, {"not_namespaces", r.NotNamespaces},
		{"request_principals", r.RequestPrincipals}, {"not_request_principals", r.NotRequestPrincipals},
		{"audiences", r.Audiences}, {"not_audiences", r.NotAudiences},
		{"presenters", r.Presenters}, {"not_presenters", r.NotPresenters},
	} {
		for i, v := range f.values {
			if err := validPattern(v); err != nil {
				return fmt.Errorf("%s[%d]: %q %v", f.key, i, v, err)
			}
		}
	}
	for _, f := range []struct {
		key    string
		values []string
	}{{"methods", r.Methods}, {"not_methods", r.NotMethods}} {
		for i, v := range f.values {
			if v == "" || strings.ContainsAny(v, " *") {
				return fmt.Errorf("%s[%d]: %q is not an HTTP method (methods match exactly, e.g. GET)", f.key, i, v)
			}
		}
	}
	for _, f := range []struct {
		key    string
		values []string
	}{{"paths", r.Paths}, {"not_paths", r.NotPaths}} {
		for i, v := range f.values {
			if _, err := compilePathPattern(v); err != nil {
				return fmt.Errorf("%s[%d]: %q %v", f.key, i, v, err)
			}
		}
	}
	for _, f := range []struct {
		key    string
		values []int
	}{{"ports", r.Ports}, {"not_ports", r.NotPorts}} {
		for i, p := range f.values {
			if p < 1 || p > 65535 {
				return fmt.Errorf("%s[%d]: %d is not a port (1 to 65535)", f.key, i, p)
			}
		}
	}
	for _, f := range []struct {
		key    string
		values []string
	}{{"peer_cidrs", r.PeerCIDRs}, {"not_peer_cidrs", r.NotPeerCIDRs}, {"client_cidrs", r.ClientCIDRs}, {"not_client_cidrs", r.NotClientCIDRs}} {
		for i, v := range f.values {
			if _, err := ipset.ParsePrefix(v); err != nil {
				return fmt.Errorf("%s[%d]: %q is %v", f.key, i, v, err)
			}
		}
	}
	for i, c := range r.Claims {
		if len(c.Path) == 0 || slices.Contains(c.Path, "") {
			return fmt.Errorf("claims[%d].path: empty; name the claim, one element per level (e.g. [groups] or [realm_access, roles])", i)
		}
		if len(c.Values) == 0 && len(c.NotValues) == 0 {
			return fmt.Errorf("claims[%d]: set values, not_values or both (\"*\" for any non-empty value)", i)
		}
		for j, v := range append(slices.Clone(c.Values), c.NotValues...) {
			if err := validPattern(v); err != nil {
				return fmt.Errorf("claims[%d] value %d: %q %v", i, j, v, err)
			}
		}
	}
	for i, h := range r.Headers {
		if !validHeaderName(h.Name) {
			return fmt.Errorf("headers[%d].name: %q is not a header name", i, h.Name)
		}
		if len(h.Values) == 0 && len(h.NotValues) == 0 {
			return fmt.Errorf("headers[%d]: set values, not_values or both (\"*\" for present)", i)
		}
		for j, v := range append(slices.Clone(h.Values), h.NotValues...) {
			if err := validPattern(v); err != nil {
				return fmt.Errorf("headers[%d] value %d: %q %v", i, j, v, err)
			}
		}
	}
	return nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// validPattern: Istio's string match has "*" at most at one end.
func validPattern(v string) error {
	if v == "" {
		return fmt.Errorf("is empty (use \"*\" for any non-empty value)")
	}
	if v == "*" {
		return nil
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*")
	if strings.Contains(inner, "*") || (strings.HasPrefix(v, "*") && strings.HasSuffix(v, "*")) {
		return fmt.Errorf("has a '*' that is not at one end (Istio matches exact, prefix*, *suffix or *)")
	}
	return nil
}

// --- String and path patterns -------------------------------------------

type patKind uint8

const (
	patExact patKind = iota
	patPrefix
	patSuffix
	patAny      // "*": any non-empty value
	patTemplate // a path URI template
)

// strPattern is an Istio string match.
type strPattern struct {
	kind patKind
	s    string
}

func compilePattern(v string) strPattern {
	switch {
	case v == "*":
		return strPattern{kind: patAny}
	case strings.HasSuffix(v, "*"):
		return strPattern{kind: patPrefix, s: v[:len(v)-1]}
	case strings.HasPrefix(v, "*"):
		return strPattern{kind: patSuffix, s: v[1:]}
	}
	return strPattern{kind: patExact, s: v}
}

func (p strPattern) match(v string) bool {
	switch p.kind {
	case patAny:
		return v != ""
	case patPrefix:
		return strings.HasPrefix(v, p.s)
	case patSuffix:
		return strings.HasSuffix(v, p.s)
	}
	return v == p.s
}

func compilePatterns(vs []string, lower bool) []strPattern {
	out := make([]strPattern, 0, len(vs))
	for _, v := range vs {
		if lower {
			v = strings.ToLower(v)
		}
		out = append(out, compilePattern(v))
	}
	return out
}

func anyMatch(ps []strPattern, v string) bool {
	for _, p := range ps {
		if p.match(v) {
			return true
		}
	}
	return false
}

// pathPattern is a path match: an Istio string match, or a URI template.
type pathPattern struct {
	strPattern
	segs []string // template segments (after the leading "/"), "{*}" or "{**}" operators
}

// compilePathPattern validates and compiles a path value as Istio does: a
// value holding "{" or "}" is a template and must start with "/", use "{*}"
// and "{**}" only as whole segments, "{**}" only last, and no other "*".
func compilePathPattern(v string) (pathPattern, error) {
	if !strings.ContainsAny(v, "{}") {
		if err := validPattern(v); err != nil {
			return pathPattern{}, err
		}
		return pathPattern{strPattern: compilePattern(v)}, nil
	}
	if !strings.HasPrefix(v, "/") {
		return pathPattern{}, fmt.Errorf("is a path template and must start with /")
	}
	segs := strings.Split(v[1:], "/")
	for i, s := range segs {
		switch {
		case s == "{*}":
		case s == "{**}":
			if i != len(segs)-1 {
				return pathPattern{}, fmt.Errorf("has {**} before its last segment ({**} matches the rest of the path and must be last)")
			}
		case strings.ContainsAny(s, "{}*"):
			return pathPattern{}, fmt.Errorf("has segment %q: in a template, {*} and {**} must be whole segments and no other '*' is allowed", s)
		}
	}
	return pathPattern{strPattern: strPattern{kind: patTemplate}, segs: segs}, nil
}

func (p *pathPattern) match(path string) bool {
	if p.kind != patTemplate {
		return p.strPattern.match(path)
	}
	if !strings.HasPrefix(path, "/") {
		return false
	}
	rest := path[1:]
	for i, seg := range p.segs {
		if seg == "{**}" {
			return true // the rest, possibly empty, after a '/'
		}
		var cur string
		j := strings.IndexByte(rest, '/')
		last := i == len(p.segs)-1
		switch {
		case j < 0 && !last:
			return false
		case j < 0:
			cur, rest = rest, ""
		case last:
			return false // more segments than the template has
		default:
			cur, rest = rest[:j], rest[j+1:]
		}
		if seg == "{*}" {
			if cur == "" {
				return false
			}
		} else if cur != seg {
			return false
		}
	}
	return true
}

// lowered is the pattern for case-insensitive matching (the path lower-cased too).
func (p pathPattern) lowered() pathPattern {
	q := pathPattern{strPattern: strPattern{kind: p.kind, s: strings.ToLower(p.s)}}
	for _, s := range p.segs {
		q.segs = append(q.segs, strings.ToLower(s))
	}
	return q
}

// pathStructurallyAmbiguous is the Rego _structural: a dot segment, "//", a
// backslash, ";" or a percent-escape of '/', '.', '\\', '%' or ';'.
func pathStructurallyAmbiguous(path string) bool {
	if strings.ContainsAny(path, `\;`) || strings.Contains(path, "//") {
		return true
	}
	for i := 0; i+2 < len(path); i++ {
		if path[i] != '%' {
			continue
		}
		switch strings.ToLower(path[i+1 : i+3]) {
		case "2f", "2e", "5c", "25", "3b":
			return true
		}
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// --- Identity -----------------------------------------------------------

// principalPattern is a request_principals value: "*", or "<iss>/<sub>"
// split at the last "/" with each part an Istio string match, or (without a
// "/") a match on the whole principal.
type principalPattern struct {
	any      bool
	split    bool
	iss, sub strPattern
	whole    strPattern
}

func compilePrincipal(v string) principalPattern {
	if v == "*" {
		return principalPattern{any: true}
	}
	if i := strings.LastIndexByte(v, '/'); i >= 0 {
		iss, sub := v[:i], v[i+1:]
		if iss == "" || sub == "" {
			return principalPattern{whole: compilePattern(v)}
		}
		return principalPattern{split: true, iss: compilePattern(iss), sub: compilePattern(sub)}
	}
	return principalPattern{whole: compilePattern(v)}
}

func (p principalPattern) match(id *identity) bool {
	if !id.hasPrincipal() {
		return false
	}
	switch {
	case p.any:
		return true
	case p.split:
		return p.iss.match(id.iss) && p.sub.match(id.sub)
	}
	return p.whole.match(id.iss + "/" + id.sub)
}

// --- Compiled rules ------------------------------------------------------

// authzRule is one rule, compiled.
type authzRule struct {
	name   string
	action string
	reason string // rule_allowed:<name> / rule_denied:<name> / the name (audit)
	step   string // "authorization <action> <name>", explain's step name

	hosts, notHosts     []strPattern // lower-cased
	methods, notMethods []string
	// Paths: an allow rule's paths and a deny or audit rule's not_paths
	// match with case; the others are compiled lower-cased.
	paths, notPaths []pathPattern
	ports, notPorts []uint32
	// CIDR sets, nil when the field is not set.
	peer, notPeer, client, notClient *ipset.Set

	principals, notPrincipals []strPattern
	namespaces, notNamespaces []strPattern
	reqPrincipals             []principalPattern
	notReqPrincipals          []principalPattern
	audiences, notAudiences   []strPattern
	presenters, notPresenters []strPattern
	claims                    []claimCond
	headers                   []headerCond
	// identity: some condition reads the token (decoded once per request).
	identity bool
}

type claimCond struct {
	path              []string
	values, notValues []strPattern
	// What failure reports: "claims[<path>].values" / ".not_values".
	valuesFailed, notValuesFailed string
}

type headerCond struct {
	name              string // lower-case
	values, notValues []strPattern
	// What failure reports: "headers[<name>].values" / ".not_values".
	valuesFailed, notValuesFailed string
}

// authzRules is the authorization section compiled for one revision: the
// rules of each action in configuration order, and an index that finds the
// rules a request can match without scanning them all.
type authzRules struct {
	deny, allow, audit ruleSet
	// enforceAllow: allow rules exist, or allow_nothing.
	enforceAllow bool
	// spaceDelimited are the claims split on spaces, per provider.
	spaceDelimited map[string][]string
}

func compileAuthorization(a Authorization, spaceDelimited map[string][]string) (*authzRules, error) {
	az := &authzRules{enforceAllow: a.AllowNothing, spaceDelimited: spaceDelimited}
	var deny, allow, audit []*authzRule
	for i, r := range a.Rules {
		if err := ValidateAuthzRule(r); err != nil {
			return nil, fmt.Errorf("authorization.rules[%d].%w", i, err)
		}
		cr, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("authorization.rules[%d]: %w", i, err)
		}
		switch cr.action {
		case ActionDeny:
			deny = append(deny, cr)
		case ActionAudit:
			audit = append(audit, cr)
		default:
			allow = append(allow, cr)
			az.enforceAllow = true
		}
	}
	az.deny, az.allow, az.audit = newRuleSet(deny), newRuleSet(allow), newRuleSet(audit)
	return az, nil
}

func compileRule(r AuthzRule) (*authzRule, error) {
	action := r.Action
	if action == "" {
		action = ActionAllow
	}
	cr := &authzRule{name: r.Name, action: action, step: "authorization " + action + " " + r.Name}
	switch action {
	case ActionAllow:
		cr.reason = KindRuleAllowed + ":" + r.Name
	case ActionDeny:
		cr.reason = KindRuleDenied + ":" + r.Name
	default:
		cr.reason = r.Name
	}
	cr.hosts, cr.notHosts = compilePatterns(r.Hosts, true), compilePatterns(r.NotHosts, true)
	cr.methods, cr.notMethods = r.Methods, r.NotMethods
	// A permission reads paths narrowly, a restriction widely: an allow
	// rule's paths match with case, its not_paths without; a deny or audit
	// rule's paths match without case, its not_paths with it.
	allowRule := action == ActionAllow
	for _, set := range []struct {
		in   []string
		out  *[]pathPattern
		fold bool
	}{{r.Paths, &cr.paths, !allowRule}, {r.NotPaths, &cr.notPaths, allowRule}} {
		for _, v := range set.in {
			p, err := compilePathPattern(v)
			if err != nil {
				return nil, err
			}
			if set.fold {
				p = p.lowered()
			}
			*set.out = append(*set.out, p)
		}
	}
	for _, p := range r.Ports {
		cr.ports = append(cr.ports, uint32(p))
	}
	for _, p := range r.NotPorts {
		cr.notPorts = append(cr.notPorts, uint32(p))
	}
	var err error
	for _, s := range []struct {
		in  []string
		out **ipset.Set
	}{{r.PeerCIDRs, &cr.peer}, {r.NotPeerCIDRs, &cr.notPeer}, {r.ClientCIDRs, &cr.client}, {r.NotClientCIDRs, &cr.notClient}} {
		if len(s.in) > 0 {
			if *s.out, err = ipset.New(s.in); err != nil {
				return nil, err
			}
		}
	}
	cr.principals, cr.notPrincipals = compilePatterns(r.Principals, false), compilePatterns(r.NotPrincipals, false)
	cr.namespaces, cr.notNamespaces = compilePatterns(r.Namespaces, false), compilePatterns(r.NotNamespaces, false)
	for _, v := range r.RequestPrincipals {
		cr.reqPrincipals = append(cr.reqPrincipals, compilePrincipal(v))
	}
	for _, v := range r.NotRequestPrincipals {
		cr.notReqPrincipals = append(cr.notReqPrincipals, compilePrincipal(v))
	}
	cr.audiences, cr.notAudiences = compilePatterns(r.Audiences, false), compilePatterns(r.NotAudiences, false)
	cr.presenters, cr.notPresenters = compilePatterns(r.Presenters, false), compilePatterns(r.NotPresenters, false)
	for _, c := range r.Claims {
		key := "claims[" + strings.Join(c.Path, ".") + "]"
		cr.claims = append(cr.claims, claimCond{path: c.Path, values: compilePatterns(c.Values, false), notValues: compilePatterns(c.NotValues, false),
			valuesFailed: key + ".values", notValuesFailed: key + ".not_values"})
	}
	for _, h := range r.Headers {
		name := strings.ToLower(h.Name)
		cr.headers = append(cr.headers, headerCond{name: name, values: compilePatterns(h.Values, false), notValues: compilePatterns(h.NotValues, false),
			valuesFailed: "headers[" + name + "].values", notValuesFailed: "headers[" + name + "].not_values"})
	}
	cr.identity = len(r.RequestPrincipals)+len(r.NotRequestPrincipals)+len(r.Audiences)+len(r.NotAudiences)+
		len(r.Presenters)+len(r.NotPresenters)+len(r.Claims) > 0
	return cr, nil
}

// authzRequest is what the rules read of one request, prepared once.
type authzRequest struct {
	f    *Facts
	host string // lower-cased, as sent (port included)
	// The path as sent and percent-decoded (as urlquery.decode decodes), each
	// also lower-cased: the two readings an upstream may have of it.
	path, decoded           string
	lowerPath, lowerDecoded string
	// The index's keys: the host (NormalizeHost) and the first segment of
	// each lower-cased reading.
	hostKey, seg, decodedSeg string
	// structural: a dot segment, "//", "\", ";" or an escaped '/', '.',
	// '\', '%' or ';': a path whose segments the upstream may read
	// otherwise. Deny rules' path conditions hold on it, allow rules' never.
	structural bool
	principal  string // the mTLS principal without "spiffe://"
	namespace  string
	az         *authzRules
	id         *identity // decoded on first use; nil until then
	idDone     bool
	peer       netip.Addr // parsed on first use
	peerDone   bool
}

// peerIP is the direct peer's address, parsed as gatehouse.cidr_contains
// parses it; invalid when it is not an address.
func (q *authzRequest) peerIP() netip.Addr {
	if !q.peerDone {
		q.peerDone = true
		q.peer, _ = ipset.ParseAddr(q.f.Peer)
	}
	return q.peer
}

func (az *authzRules) request(f *Facts) *authzRequest {
	q := &authzRequest{f: f, host: strings.ToLower(f.Host), path: f.Path, decoded: f.Path, az: az}
	if strings.ContainsAny(f.Path, "%+") {
		if d, err := url.QueryUnescape(f.Path); err == nil {
			q.decoded = d
		}
	}
	q.lowerPath, q.lowerDecoded = strings.ToLower(q.path), strings.ToLower(q.decoded)
	q.hostKey, q.seg, q.decodedSeg = NormalizeHost(q.host), firstSeg(q.lowerPath), firstSeg(q.lowerDecoded)
	q.structural = pathStructurallyAmbiguous(f.Path)
	if p, ok := strings.CutPrefix(f.SourcePrincipal, "spiffe://"); ok {
		q.principal = p
	} else {
		q.principal = f.SourcePrincipal
	}
	if i := strings.Index(q.principal, "/ns/"); i >= 0 {
		ns := q.principal[i+4:]
		if j := strings.IndexByte(ns, '/'); j >= 0 {
			ns = ns[:j]
		}
		q.namespace = ns
	}
	return q
}

func (q *authzRequest) identity() *identity {
	if !q.idDone {
		q.idDone = true
		q.id = newIdentity(q.f.Token, q.az.spaceDelimited)
	}
	return q.id
}

// failure names the first condition of r that q does not meet ("" when r
// matches): what explain reports for an allow rule that did not match.
func (q *authzRequest) failure(r *authzRule) string {
	if len(r.hosts) > 0 && !anyMatch(r.hosts, q.host) {
		return "hosts"
	}
	if len(r.notHosts) > 0 && anyMatch(r.notHosts, q.host) {
		return "not_hosts"
	}
	if len(r.methods) > 0 && !slices.Contains(r.methods, q.f.Method) {
		return "methods"
	}
	if len(r.notMethods) > 0 && slices.Contains(r.notMethods, q.f.Method) {
		return "not_methods"
	}
	if len(r.paths) > 0 && !q.pathsHold(r) {
		return "paths"
	}
	if len(r.notPaths) > 0 && !q.notPathsHold(r) {
		return "not_paths"
	}
	if len(r.ports) > 0 && !slices.Contains(r.ports, q.f.Port) {
		return "ports"
	}
	if len(r.notPorts) > 0 && slices.Contains(r.notPorts, q.f.Port) {
		return "not_ports"
	}
	if r.peer != nil && !(q.peerIP().IsValid() && r.peer.Contains(q.peerIP())) {
		return "peer_cidrs"
	}
	if r.notPeer != nil && q.peerIP().IsValid() && r.notPeer.Contains(q.peerIP()) {
		return "not_peer_cidrs"
	}
	if r.client != nil && !(q.f.ClientIP.IsValid() && r.client.Contains(q.f.ClientIP)) {
		return "client_cidrs"
	}
	if r.notClient != nil && q.f.ClientIP.IsValid() && r.notClient.Contains(q.f.ClientIP) {
		return "not_client_cidrs"
	}
	if len(r.principals) > 0 && !anyMatch(r.principals, q.principal) {
		return "principals"
	}
	if len(r.notPrincipals) > 0 && anyMatch(r.notPrincipals, q.principal) {
		return "not_principals"
	}
	if len(r.namespaces) > 0 && !anyMatch(r.namespaces, q.namespace) {
		return "namespaces"
	}
	if len(r.notNamespaces) > 0 && anyMatch(r.notNamespaces, q.namespace) {
		return "not_namespaces"
	}
	if r.identity {
		if f := q.identityFailure(r); f != "" {
			return f
		}
	}
	for i := range r.headers {
		h := &r.headers[i]
		v, ok := q.f.Headers[h.name]
		if len(h.values) > 0 && !(ok && anyMatch(h.values, v)) {
			return h.valuesFailed
		}
		if len(h.notValues) > 0 && ok && anyMatch(h.notValues, v) {
			return h.notValuesFailed
		}
	}
	return ""
}

func (q *authzRequest) identityFailure(r *authzRule) string {
	id := q.identity()
	if len(r.reqPrincipals) > 0 && !slices.ContainsFunc(r.reqPrincipals, func(p principalPattern) bool { return p.match(id) }) {
		return "request_principals"
	}
	if len(r.notReqPrincipals) > 0 && slices.ContainsFunc(r.notReqPrincipals, func(p principalPattern) bool { return p.match(id) }) {
		return "not_request_principals"
	}
	if len(r.audiences) > 0 && !id.anyAudience(r.audiences) {
		return "audiences"
	}
	if len(r.notAudiences) > 0 && id.anyAudience(r.notAudiences) {
		return "not_audiences"
	}
	if len(r.presenters) > 0 && !(id.valid && anyMatch(r.presenters, id.azp)) {
		return "presenters"
	}
	if len(r.notPresenters) > 0 && id.valid && anyMatch(r.notPresenters, id.azp) {
		return "not_presenters"
	}
	for i := range r.claims {
		c := &r.claims[i]
		if len(c.values) > 0 && !id.claimMatches(c.path, c.values) {
			return c.valuesFailed
		}
		if len(c.notValues) > 0 && id.claimMatches(c.path, c.notValues) {
			return c.notValuesFailed
		}
	}
	return ""
}

// pathsHold: the path matches one of r.paths. A permission reads the path
// narrowly: an allow rule matches the path as sent, with case, and never a
// structurally ambiguous path (an escape such as "%61" then only ever keeps
// a path out of a rule written without it). A restriction reads it widely: a
// deny or audit rule matches when either reading (as sent, or decoded)
// matches without case, and any structurally ambiguous path.
func (q *authzRequest) pathsHold(r *authzRule) bool {
	if r.action == ActionAllow {
		return !q.structural && anyPath(r.paths, q.path)
	}
	return q.structural || anyPath(r.paths, q.lowerPath) || anyPath(r.paths, q.lowerDecoded)
}

// notPathsHold: the path matches none of r.not_paths: for an allow rule, no
// reading matches them even without case (and the path is not structurally
// ambiguous); for a deny or audit rule, some reading escapes them with case,
// or the path is structurally ambiguous.
func (q *authzRequest) notPathsHold(r *authzRule) bool {
	if r.action == ActionAllow {
		return !q.structural && !anyPath(r.notPaths, q.lowerPath) && !anyPath(r.notPaths, q.lowerDecoded)
	}
	return q.structural || !anyPath(r.notPaths, q.path) || !anyPath(r.notPaths, q.decoded)
}

func anyPath(ps []pathPattern, path string) bool {
	for i := range ps {
		if ps[i].match(path) {
			return true
		}
	}
	return false
}

// --- The index -----------------------------------------------------------

// ruleSet holds one action's rules in configuration order and indexes them
// by host and by first path segment, so that a request is matched against
// the few rules that can apply: a table of a thousand routes costs about what
// ten do.
type ruleSet struct {
	rules   []*authzRule
	byHost  map[string]*segIndex // rules whose every host is "h" or "h:*"
	anyHost segIndex             // the rest (no hosts, or wildcards)
}

type segIndex struct {
	bySeg  map[string][]int32 // positions in ruleSet.rules, ascending
	anySeg []int32
	all    []int32
}

func newRuleSet(rules []*authzRule) ruleSet {
	rs := ruleSet{rules: rules, byHost: map[string]*segIndex{}}
	for pos, r := range rules {
		hostKeys, ok := indexHosts(r)
		if !ok {
			rs.anyHost.add(int32(pos), r)
			continue
		}
		for _, h := range hostKeys {
			si := rs.byHost[h]
			if si == nil {
				si = &segIndex{}
				rs.byHost[h] = si
			}
			si.add(int32(pos), r)
		}
	}
	return rs
}

// indexHosts returns the host names (lower-case, no port) every hosts value
// of r is, when each is "h" or "h:*".
func indexHosts(r *authzRule) ([]string, bool) {
	if len(r.hosts) == 0 {
		return nil, false
	}
	var keys []string
	for _, h := range r.hosts {
		switch {
		case h.kind == patExact:
			keys = append(keys, NormalizeHost(h.s))
		case h.kind == patPrefix && strings.HasSuffix(h.s, ":") && !strings.ContainsAny(h.s[:len(h.s)-1], ":*"):
			keys = append(keys, NormalizeHost(h.s[:len(h.s)-1]))
		default:
			return nil, false
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), true
}

func (si *segIndex) add(pos int32, r *authzRule) {
	si.all = append(si.all, pos)
	segs, ok := indexSegs(r)
	if !ok {
		si.anySeg = append(si.anySeg, pos)
		return
	}
	if si.bySeg == nil {
		si.bySeg = map[string][]int32{}
	}
	for _, s := range segs {
		if l := si.bySeg[s]; len(l) == 0 || l[len(l)-1] != pos {
			si.bySeg[s] = append(l, pos)
		}
	}
}

// indexSegs returns the lower-cased first path segments r's paths all
// start with, when each is known.
func indexSegs(r *authzRule) ([]string, bool) {
	if len(r.paths) == 0 {
		return nil, false
	}
	var segs []string
	for _, p := range r.paths {
		var s string
		switch p.kind {
		case patExact:
			s = firstSeg(p.s)
		case patPrefix:
			rest, ok := strings.CutPrefix(p.s, "/")
			i := strings.IndexByte(rest, '/')
			if !ok || i < 0 {
				return nil, false
			}
			s = rest[:i]
		case patTemplate:
			if p.segs[0] == "{*}" || p.segs[0] == "{**}" {
				return nil, false
			}
			s = p.segs[0]
		default:
			return nil, false
		}
		segs = append(segs, strings.ToLower(s))
	}
	return segs, true
}

// firstSeg is the first segment of a path ("/a/b" -> "a", "/" -> "").
func firstSeg(path string) string {
	rest, _ := strings.CutPrefix(path, "/")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i]
	}
	return rest
}

// candidates calls fn with the rules q can match, in configuration order,
// until fn returns false: those of its host (and of any host) filed under
// the first segment of either reading of its path, or under none. A
// structurally ambiguous path may match any deny rule's paths, so then every
// rule of the host is a candidate.
func (rs *ruleSet) candidates(q *authzRequest, fn func(*authzRule) bool) {
	if len(rs.rules) == 0 {
		return
	}
	var lists [6][]int32
	n := 0
	seg, decodedSeg := q.seg, q.decodedSeg
	pick := func(si *segIndex) {
		if si == nil {
			return
		}
		if q.structural {
			lists[n] = si.all
			n++
			return
		}
		if l := si.bySeg[seg]; len(l) > 0 {
			lists[n] = l
			n++
		}
		if decodedSeg != seg {
			if l := si.bySeg[decodedSeg]; len(l) > 0 {
				lists[n] = l
				n++
			}
		}
		if len(si.anySeg) > 0 {
			lists[n] = si.anySeg
			n++
		}
	}
	pick(rs.byHost[q.hostKey])
	pick(&rs.anyHost)
	// Merge the ascending lists, visiting each position once.
	var at [len(lists)]int
	last := int32(-1)
	for {
		best := -1
		for i := 0; i < n; i++ {
			if at[i] < len(lists[i]) && (best < 0 || lists[i][at[i]] < lists[best][at[best]]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		pos := lists[best][at[best]]
		at[best]++
		if pos == last {
			continue
		}
		last = pos
		if !fn(rs.rules[pos]) {
			return
		}
	}
}

// first returns the first rule of rs that q matches, or nil.
func (rs *ruleSet) first(q *authzRequest) *authzRule {
	var found *authzRule
	rs.candidates(q, func(r *authzRule) bool {
		if q.failure(r) == "" {
			found = r
			return false
		}
		return true
	})
	return found
}

// auditMatches lists the names of the audit rules q matches, in order; nil
// when none does.
func (az *authzRules) auditMatches(q *authzRequest, tr *trace) []string {
	var names []string
	az.audit.candidates(q, func(r *authzRule) bool {
		if q.failure(r) == "" {
			names = append(names, r.name)
			tr.step(r.step, "matches", "")
		}
		return true
	})
	return names
}

// explainAllow records, for explain, the rule that allowed or, for each
// allow rule that did not match, the first condition it failed.
func (az *authzRules) explainAllow(q *authzRequest, matched *authzRule, tr *trace) {
	for _, r := range az.allow.rules {
		if r == matched {
			tr.step(r.step, StepAllow, "matches")
			return
		}
		tr.step(r.step, StepPass, "no match: "+q.failure(r))
	}
	tr.step("authorization allow rules", StepDeny, "no allow rule matches")
}
