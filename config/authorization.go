package config

import (
	"fmt"
	"strings"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// Authorization is the top-level authorization section: route rules with
// Istio AuthorizationPolicy semantics, decided natively like the rest of the
// configured decision (docs/authorization.md). Absent, every decision is what
// it is without it.
type Authorization struct {
	// AllowNothing says what an Istio ALLOW policy without rules says: the
	// allow list is in force though it is empty, so every request that the
	// trusted-IP bypass does not let through is refused. It cannot be set
	// together with allow rules (they would contradict it).
	AllowNothing bool `yaml:"allow_nothing,omitempty"`
	// Rules are evaluated as Istio evaluates policies: any matching deny rule
	// denies (bypass or not); when allow rules exist, a request needs one to
	// match; audit rules only mark the request in the decision log.
	Rules []AuthorizationRule `yaml:"rules,omitempty"`
}

// AuthorizationRule is one rule. Values of one field OR, fields AND; a not_*
// field matches when none of its values does; a rule with no match field
// matches every request. Strings match as Istio matches them: exact,
// "prefix*", "*suffix", or "*" for any non-empty value.
type AuthorizationRule struct {
	// Name identifies the rule in reasons (rule_allowed:<name>,
	// rule_denied:<name>), the decision log, metrics and explain. Required,
	// unique.
	Name string `yaml:"name"`
	// Action is allow (the default), deny or audit.
	Action string `yaml:"action,omitempty"`

	// Request. Hosts compare without case against the Host header as sent,
	// port included (write "api.example.com:*" for any port, as in Istio).
	Hosts      []string `yaml:"hosts,omitempty"`
	NotHosts   []string `yaml:"not_hosts,omitempty"`
	Methods    []string `yaml:"methods,omitempty"`
	NotMethods []string `yaml:"not_methods,omitempty"`
	// Paths are exact, "prefix*", "*suffix", "*" or URI templates ("{*}" one
	// segment, "{**}" the rest, as the last segment).
	Paths    []string `yaml:"paths,omitempty"`
	NotPaths []string `yaml:"not_paths,omitempty"`
	// Ports are the destination port of the connection (the listener Envoy
	// accepted the request on).
	Ports    []int `yaml:"ports,omitempty"`
	NotPorts []int `yaml:"not_ports,omitempty"`

	// Source. PeerCIDRs match the direct peer (Istio ipBlocks), ClientCIDRs
	// the client IP resolved by client_ip (Istio remoteIpBlocks). Principals
	// and namespaces come from the mTLS identity Envoy reports
	// (cluster.local/ns/NS/sa/SA).
	PeerCIDRs      []string `yaml:"peer_cidrs,omitempty"`
	NotPeerCIDRs   []string `yaml:"not_peer_cidrs,omitempty"`
	ClientCIDRs    []string `yaml:"client_cidrs,omitempty"`
	NotClientCIDRs []string `yaml:"not_client_cidrs,omitempty"`
	Principals     []string `yaml:"principals,omitempty"`
	NotPrincipals  []string `yaml:"not_principals,omitempty"`
	Namespaces     []string `yaml:"namespaces,omitempty"`
	NotNamespaces  []string `yaml:"not_namespaces,omitempty"`

	// Identity, from a valid token only. RequestPrincipals are "<iss>/<sub>"
	// (split at the last "/", each part matched on its own).
	RequestPrincipals    []string `yaml:"request_principals,omitempty"`
	NotRequestPrincipals []string `yaml:"not_request_principals,omitempty"`
	Audiences            []string `yaml:"audiences,omitempty"`
	NotAudiences         []string `yaml:"not_audiences,omitempty"`
	Presenters           []string `yaml:"presenters,omitempty"`
	NotPresenters        []string `yaml:"not_presenters,omitempty"`
	// Claims match claim values: a string claim whole (or split on spaces
	// when its provider lists it in space_delimited_claims), a list claim
	// by any element.
	Claims []ClaimCondition `yaml:"claims,omitempty"`

	// Headers match request header values (the whole value, as sent).
	Headers []HeaderCondition `yaml:"headers,omitempty"`
}

// ClaimCondition matches the claim at Path (nested claims: one element per
// level, as Istio's request.auth.claims[a][b]).
type ClaimCondition struct {
	Path      []string `yaml:"path"`
	Values    []string `yaml:"values,omitempty"`
	NotValues []string `yaml:"not_values,omitempty"`
}

// HeaderCondition matches a request header's value.
type HeaderCondition struct {
	Name      string   `yaml:"name"`
	Values    []string `yaml:"values,omitempty"`
	NotValues []string `yaml:"not_values,omitempty"`
}

// Rule actions.
const (
	ActionAllow = policy.ActionAllow
	ActionDeny  = policy.ActionDeny
	ActionAudit = policy.ActionAudit
)

// Policy maps the section onto the policy package's rules.
func (a Authorization) Policy() policy.Authorization {
	out := policy.Authorization{AllowNothing: a.AllowNothing}
	for _, r := range a.Rules {
		out.Rules = append(out.Rules, r.Policy())
	}
	return out
}

// validate reports the first invalid rule with its key and the fix.
func (a Authorization) validate() error {
	names := map[string]int{}
	allows := 0
	for i, r := range a.Rules {
		key := fmt.Sprintf("authorization.rules[%d]", i)
		if r.Name == "" {
			return fmt.Errorf("%s.name: required; name each rule (it appears in reasons such as rule_denied:<name>, in the decision log and in explain)", key)
		}
		if !ruleNameOK(r.Name) {
			return fmt.Errorf("%s.name: %q may hold only letters, digits and - _ . / (it becomes part of a reason)", key, r.Name)
		}
		if j, dup := names[r.Name]; dup {
			return fmt.Errorf("%s.name: %q is also the name of authorization.rules[%d]; names must be unique", key, r.Name, j)
		}
		names[r.Name] = i
		if err := policy.ValidateAuthzRule(r.Policy()); err != nil {
			return fmt.Errorf("%s.%w", key, err)
		}
		if r.Action == "" || r.Action == ActionAllow {
			allows++
		}
	}
	if a.AllowNothing && allows > 0 {
		return fmt.Errorf("authorization.allow_nothing: true, but %d allow rules are listed; allow_nothing means no request is allowed by a rule (Istio's ALLOW policy without rules): remove it, or remove the allow rules", allows)
	}
	return nil
}

// Policy maps one rule onto the policy package's, with the default action.
func (r AuthorizationRule) Policy() policy.AuthzRule {
	pr := policy.AuthzRule{
		Name: r.Name, Action: r.Action,
		Hosts: r.Hosts, NotHosts: r.NotHosts, Methods: r.Methods, NotMethods: r.NotMethods,
		Paths: r.Paths, NotPaths: r.NotPaths, Ports: r.Ports, NotPorts: r.NotPorts,
		PeerCIDRs: r.PeerCIDRs, NotPeerCIDRs: r.NotPeerCIDRs, ClientCIDRs: r.ClientCIDRs, NotClientCIDRs: r.NotClientCIDRs,
		Principals: r.Principals, NotPrincipals: r.NotPrincipals, Namespaces: r.Namespaces, NotNamespaces: r.NotNamespaces,
		RequestPrincipals: r.RequestPrincipals, NotRequestPrincipals: r.NotRequestPrincipals,
		Audiences: r.Audiences, NotAudiences: r.NotAudiences, Presenters: r.Presenters, NotPresenters: r.NotPresenters,
	}
	if pr.Action == "" {
		pr.Action = ActionAllow
	}
	for _, c := range r.Claims {
		pr.Claims = append(pr.Claims, policy.ClaimCondition{Path: c.Path, Values: c.Values, NotValues: c.NotValues})
	}
	for _, h := range r.Headers {
		pr.Headers = append(pr.Headers, policy.HeaderCondition{Name: h.Name, Values: h.Values, NotValues: h.NotValues})
	}
	return pr
}

func ruleNameOK(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_./", c) >= 0) {
			return false
		}
	}
	return true
}
