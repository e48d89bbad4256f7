package policy

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// native is the configured decision compiled from Rules: the decision
// data.gatehouse.authz.decision specifies in Rego, evaluated by Go with
// everything that can be prepared (CIDR sets, lower-cased names, compiled
// regexes, normalised hosts and prefixes) prepared once per revision. The
// differential tests prove it answers exactly as the Rego does.
type native struct {
	trusted     *ipset.Set
	bypassPaths []string
	global      headerRules
	scoped      []compiledScope
	noProviders bool
	// authz is the authorization section; nil without one.
	authz *authzRules
}

type headerRules struct {
	deny    []matchRule
	require []matchRule
	allow   []allowRule
}

type matchRule struct {
	name string
	re   matcher // nil: no regex
	// Reasons, precomputed: deny uses denied; require uses required/invalid.
	denied, required, invalid string
}

type allowRule struct {
	name   string
	values []string
	reason string
}

type compiledScope struct {
	host   string // normalised; "" = any host
	prefix string // lower-cased; "" = any path
	rules  headerRules
}

// compileNative prepares r. Every regex must compile (configuration
// validation already said which one does not).
func compileNative(r Rules) (*native, error) {
	trusted, err := ipset.New(r.TrustedCIDRs)
	if err != nil {
		return nil, fmt.Errorf("bypass.trusted_cidrs: %w", err)
	}
	n := &native{trusted: trusted, bypassPaths: r.BypassPaths, noProviders: len(r.Providers) == 0}
	if r.Authorization.AllowNothing || len(r.Authorization.Rules) > 0 {
		if n.authz, err = compileAuthorization(r.Authorization, r.SpaceDelimitedClaims); err != nil {
			return nil, err
		}
	}
	if n.global, err = compileHeaderRules(r.Require, r.Deny, r.AllowValues); err != nil {
		return nil, err
	}
	for _, s := range r.RulesFor {
		rules, err := compileHeaderRules(s.Require, s.Deny, s.AllowValues)
		if err != nil {
			return nil, err
		}
		sc := compiledScope{prefix: strings.ToLower(s.PathPrefix), rules: rules}
		if s.Host != "" {
			sc.host = NormalizeHost(strings.ToLower(s.Host))
		}
		n.scoped = append(n.scoped, sc)
	}
	return n, nil
}

func compileHeaderRules(require, deny []HeaderMatch, allow []HeaderValues) (headerRules, error) {
	var hr headerRules
	for _, lists := range []struct {
		in  []HeaderMatch
		out *[]matchRule
	}{{deny, &hr.deny}, {require, &hr.require}} {
		for _, m := range lists.in {
			name := strings.ToLower(m.Name)
			mr := matchRule{
				name:     name,
				denied:   KindHeaderDenied + ":" + name,
				required: KindHeaderRequired + ":" + name,
				invalid:  KindHeaderInvalid + ":" + name,
			}
			if m.Regex != "" {
				re, err := compileMatcher(m.Regex)
				if err != nil {
					return hr, fmt.Errorf("header %s: regex: %w", name, err)
				}
				mr.re = re
			}
			*lists.out = append(*lists.out, mr)
		}
	}
	for _, a := range allow {
		name := strings.ToLower(a.Name)
		hr.allow = append(hr.allow, allowRule{name: name, values: a.Values, reason: KindHeaderValueNotAllowed + ":" + name})
	}
	return hr, nil
}

// trace records the steps decide takes, for Explain. A nil *trace records
// nothing and costs nothing: the hot path passes nil, and builds no detail.
type trace struct{ steps []Step }

func (t *trace) step(name, outcome, detail string) {
	if t != nil {
		t.steps = append(t.steps, Step{Name: name, Outcome: outcome, Detail: detail})
	}
}

// decide is the configured decision for f, recording its steps in tr when
// tr is not nil. It follows policy/rego/gatehouse/authz.rego (and
// authorization.rego) step by step; keep them in step (the differential tests
// fail otherwise).
func (n *native) decide(f *Facts, tr *trace) Decision {
	var q *authzRequest
	if n.authz != nil {
		q = n.authz.request(f)
	}
	d := n.decideSteps(f, q, tr)
	if q != nil {
		d.Audit = n.authz.auditMatches(q, tr)
	}
	return d
}

func (n *native) decideSteps(f *Facts, q *authzRequest, tr *trace) Decision {
	host := ""
	if f.Host != "" {
		host = NormalizeHost(f.Host)
	}
	// scopes are the indexes of the rules_for entries that apply.
	var scopes []int
	if len(n.scoped) > 0 {
		lowerPath := strings.ToLower(f.Path)
		ambiguous := pathAmbiguous(f.Path)
		for i := range n.scoped {
			if n.scoped[i].matches(host, lowerPath, ambiguous) {
				scopes = append(scopes, i)
				if tr != nil {
					detail := n.scoped[i].describe()
					if ambiguous && n.scoped[i].prefix != "" {
						detail += " (ambiguous path: every path scope applies)"
					}
					tr.step("rules_for scope", "applies", detail)
				}
			}
		}
	}

	// 1. Header deny rules, for everyone.
	if reason, ok := n.global.denyViolation(f.Headers); ok {
		tr.step("headers.deny", StepDeny, reason)
		return n.denied(f, 403, reason, "")
	}
	for _, i := range scopes {
		if reason, ok := n.scoped[i].rules.denyViolation(f.Headers); ok {
			if tr != nil {
				tr.step("rules_for "+n.scoped[i].describe()+" deny", StepDeny, reason)
			}
			return n.denied(f, 403, reason, "")
		}
	}
	tr.step("headers.deny", StepPass, "")
	// 2. Authorization deny rules, for everyone: a deny is explicit, the
	// trusted networks included.
	if q != nil {
		if r := n.authz.deny.first(q); r != nil {
			tr.step(r.step, StepDeny, r.reason)
			return n.denied(f, 403, r.reason, "")
		}
		if len(n.authz.deny.rules) > 0 {
			tr.step("authorization deny rules", StepPass, "none matches")
		}
	}
	// 3. Trusted client IP (and bypass path).
	switch {
	case !f.ClientIP.IsValid():
		tr.step("bypass.trusted_cidrs", StepSkip, "no client IP")
	case !n.trusted.Contains(f.ClientIP):
		if tr != nil {
			tr.step("bypass.trusted_cidrs", StepPass, f.ClientIP.String()+" is not trusted")
		}
	case !n.bypassPathOK(f.Path):
		if tr != nil {
			tr.step("bypass.paths", StepPass, f.ClientIP.String()+" is trusted but the path is not a bypass path")
		}
	default:
		if tr != nil {
			tr.step("bypass.trusted_cidrs", StepAllow, f.ClientIP.String()+" is trusted")
		}
		return Decision{Allowed: true, Bypass: true, Reason: ReasonTrustedIP}
	}
	// 4. A presented token must be valid: an invalid one is never an
	// identity, and is refused even where a rule needs none.
	if f.Token != nil && !f.Token.Valid {
		return n.invalidToken(f, host, tr)
	}
	// 5. With allow rules, one must match: otherwise 401 when no token was
	// presented (one could help), 403 when a valid one was.
	var allowedBy *authzRule
	if q != nil && n.authz.enforceAllow {
		allowedBy = n.authz.allow.first(q)
		if tr != nil {
			n.authz.explainAllow(q, allowedBy, tr)
		}
		if allowedBy == nil {
			if f.Token == nil {
				return n.tokenMissing(f, host, tr)
			}
			return n.denied(f, 403, ReasonNoMatchingRule, "")
		}
	} else {
		if f.Token == nil {
			return n.tokenMissing(f, host, tr)
		}
		tr.step("token", StepPass, "valid")
	}
	// 6. require / allow_values: global, then each matching scope.
	if reason, ok := n.global.headerViolation(f.Headers); ok {
		tr.step("headers.require/allow_values", StepDeny, reason)
		return n.denied(f, 403, reason, "")
	}
	tr.step("headers.require/allow_values", StepPass, "")
	for _, i := range scopes {
		if reason, ok := n.scoped[i].rules.headerViolation(f.Headers); ok {
			if tr != nil {
				tr.step("rules_for "+n.scoped[i].describe()+" require/allow_values", StepDeny, reason)
			}
			return n.denied(f, 403, reason, "")
		}
	}
	// 7. Allowed.
	if allowedBy != nil {
		tr.step("decision", StepAllow, allowedBy.reason)
		return Decision{Allowed: true, Reason: allowedBy.reason}
	}
	tr.step("decision", StepAllow, ReasonTokenValid)
	return Decision{Allowed: true, Reason: ReasonTokenValid}
}

func (n *native) tokenMissing(f *Facts, host string, tr *trace) Decision {
	if n.noProviders {
		tr.step("token", StepDeny, "no JWT providers are configured")
	} else {
		tr.step("token", StepDeny, "no token presented")
	}
	return n.denied(f, 401, ReasonTokenMissing, "Bearer realm="+quote(realm(host)))
}

func (n *native) invalidToken(f *Facts, host string, tr *trace) Decision {
	reason, desc := "token_invalid", "invalid"
	if f.Token.Error != "" {
		reason, desc = "token_"+f.Token.Error, f.Token.Error
	}
	tr.step("token", StepDeny, reason)
	challenge := "Bearer realm=" + quote(realm(host)) + `, error="invalid_token", error_description=` + quote(desc)
	return n.denied(f, 401, reason, challenge)
}

func (n *native) bypassPathOK(path string) bool {
	if len(n.bypassPaths) == 0 {
		return true
	}
	if pathAmbiguous(path) {
		return false
	}
	for _, p := range n.bypassPaths {
		if pathHasPrefix(path, p) {
			return true
		}
	}
	return false
}

func (s *compiledScope) matches(host, lowerPath string, ambiguous bool) bool {
	if s.host != "" && s.host != host {
		return false
	}
	if s.prefix == "" || ambiguous || pathHasPrefix(lowerPath, s.prefix) {
		return true
	}
	// A prefix ending in "/" also covers the path without it.
	return strings.HasSuffix(s.prefix, "/") && lowerPath == s.prefix[:len(s.prefix)-1]
}

func (hr *headerRules) denyViolation(headers map[string]string) (string, bool) {
	for i := range hr.deny {
		r := &hr.deny[i]
		if v, ok := headers[r.name]; ok && (r.re == nil || r.re.MatchString(v)) {
			return r.denied, true
		}
	}
	return "", false
}

func (hr *headerRules) headerViolation(headers map[string]string) (string, bool) {
	for i := range hr.require {
		r := &hr.require[i]
		v, ok := headers[r.name]
		if !ok {
			return r.required, true
		}
		if r.re != nil && !r.re.MatchString(v) {
			return r.invalid, true
		}
	}
	for i := range hr.allow {
		r := &hr.allow[i]
		if v, ok := headers[r.name]; ok && hasDisallowedValue(v, r.values) {
			return r.reason, true
		}
	}
	return "", false
}

// hasDisallowedValue: some comma-separated element of value, with spaces and
// tabs trimmed (what HTTP strips around list elements, nothing more), is not
// one of allowed.
func hasDisallowedValue(value string, allowed []string) bool {
	if contains(allowed, value) {
		return false
	}
	for part := range strings.SplitSeq(value, ",") {
		if !contains(allowed, strings.Trim(part, " \t")) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// pathHasPrefix compares whole segments (lib.path_has_prefix).
func pathHasPrefix(path, prefix string) bool {
	if path == prefix {
		return true
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return len(path) > len(prefix) && path[len(prefix)] == '/' && strings.HasPrefix(path, prefix)
}

// pathAmbiguous is lib.path_ambiguous, the regex
// (^|/)\.\.?($|/)|//|\\|%|; written out: a dot segment, "//", a backslash,
// any percent-escape or ";".
func pathAmbiguous(path string) bool {
	if strings.ContainsAny(path, `\%;`) || strings.Contains(path, "//") {
		return true
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// NormalizeHost is lib.normalize_host on an already lower-cased or raw host:
// lower-cased, without port or trailing dot; "[v6]:port" keeps the brackets.
func NormalizeHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			return strings.ToLower(h[:i+1])
		}
	}
	h, _, _ = strings.Cut(h, ":")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

func realm(host string) string {
	if host == "" {
		return "gatehouse"
	}
	return host
}

// quote is lib.quote: an RFC 9110 quoted-string.
func quote(s string) string {
	if strings.ContainsAny(s, `\"`) {
		s = strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`)
	}
	return `"` + s + `"`
}

var contentTypeJSON = Header{Key: "content-type", Value: "application/json"}

// denied is the Rego denied(status, reason, headers): a JSON body naming the
// reason (and the client IP fallback, and why a token is missing when no
// providers exist), content-type and, for 401, WWW-Authenticate.
func (n *native) denied(f *Facts, status int, reason, challenge string) Decision {
	headers := []Header{contentTypeJSON}
	if challenge != "" {
		headers = append(headers, Header{Key: "www-authenticate", Value: challenge})
	}
	return Decision{
		HTTPStatus: status,
		Reason:     reason,
		Headers:    headers,
		Body:       denialBody(status, reason, f.ClientIPFallback, reason == ReasonTokenMissing && n.noProviders),
	}
}

// denialBody is json.marshal of {error, reason[, client_ip_fallback][, detail]}
// exactly as OPA writes it: keys sorted, Go's JSON escaping.
func denialBody(status int, reason, fallback string, noProviders bool) string {
	word := "denied"
	switch status {
	case 401:
		word = "unauthorized"
	case 403:
		word = "forbidden"
	}
	var b strings.Builder
	b.Grow(64 + len(reason) + len(fallback))
	b.WriteByte('{')
	if fallback != "" {
		b.WriteString(`"client_ip_fallback":`)
		writeJSONString(&b, fallback)
		b.WriteByte(',')
	}
	if noProviders {
		b.WriteString(`"detail":"no JWT providers are configured",`)
	}
	b.WriteString(`"error":"`)
	b.WriteString(word)
	b.WriteString(`","reason":`)
	writeJSONString(&b, reason)
	b.WriteByte('}')
	return b.String()
}

// writeJSONString writes s as encoding/json does (HTML-safe escaping), with a
// fast path for the plain ASCII that reasons and fallbacks are made of.
func writeJSONString(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			b.Write(q)
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}
