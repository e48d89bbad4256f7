package policy

import "strings"

// Rules are the settings of the configured decision: the trusted-IP bypass,
// the header rules and the JWT provider names. The embedded Rego policy reads
// them at data.gatehouse.config (see Data); the native decision compiles them
// once per revision. Header names may be given in any case.
type Rules struct {
	// TrustedCIDRs are the client networks that skip authentication.
	TrustedCIDRs []string
	// BypassPaths, when set, limits the bypass to these path prefixes.
	BypassPaths []string
	// Require, Deny and AllowValues apply to every request.
	Require     []HeaderMatch
	Deny        []HeaderMatch
	AllowValues []HeaderValues
	// RulesFor apply to one host and/or path prefix each.
	RulesFor []ScopedRules
	// Providers are the JWT provider names; with none, a missing token is
	// explained in the denial's body.
	Providers []string
	// SpaceDelimitedClaims are, per provider, the claims whose string value
	// the authorization rules read as a space-separated list (default
	// DefaultSpaceDelimitedClaims).
	SpaceDelimitedClaims map[string][]string
	// Authorization is the authorization section (route rules).
	Authorization Authorization
}

// HeaderMatch names a header and, optionally, a regular expression its value
// must match (require) or that makes the request denied (deny).
type HeaderMatch struct{ Name, Regex string }

// HeaderValues lists the values a header may take when present.
type HeaderValues struct {
	Name   string
	Values []string
}

// ScopedRules are header rules for requests to Host (any when empty) under
// PathPrefix (any when empty).
type ScopedRules struct {
	Host, PathPrefix string
	Require, Deny    []HeaderMatch
	AllowValues      []HeaderValues
}

// Data returns the document the Rego policy sees at data.gatehouse.config,
// with header names and hosts lower-cased (Envoy lower-cases request header
// names) and every list present, so Rego never guards against a missing key.
func (r Rules) Data() map[string]any {
	scoped := []any{}
	for _, s := range r.RulesFor {
		m := headerRulesData(s.Require, s.Deny, s.AllowValues)
		m["host"] = strings.ToLower(s.Host)
		m["path_prefix"] = s.PathPrefix
		scoped = append(scoped, m)
	}
	headers := headerRulesData(r.Require, r.Deny, r.AllowValues)
	headers["rules_for"] = scoped
	return map[string]any{
		"bypass": map[string]any{
			"trusted_cidrs": anys(r.TrustedCIDRs),
			"paths":         anys(r.BypassPaths),
		},
		"headers":       headers,
		"jwt":           map[string]any{"providers": anys(r.Providers), "space_delimited_claims": spaceDelimitedData(r.SpaceDelimitedClaims)},
		"authorization": r.Authorization.data(),
	}
}

func spaceDelimitedData(m map[string][]string) map[string]any {
	out := map[string]any{}
	for provider, claims := range m {
		out[provider] = anys(claims)
	}
	return out
}

// data is the section as data.gatehouse.config.authorization: every key of
// every rule present, so the Rego never guards against a missing one.
func (a Authorization) data() map[string]any {
	rules := []any{}
	for _, r := range a.Rules {
		action := r.Action
		if action == "" {
			action = ActionAllow
		}
		m := map[string]any{"name": r.Name, "action": action}
		for k, v := range map[string][]string{
			"hosts": r.Hosts, "not_hosts": r.NotHosts, "methods": r.Methods, "not_methods": r.NotMethods,
			"paths": r.Paths, "not_paths": r.NotPaths,
			"peer_cidrs": r.PeerCIDRs, "not_peer_cidrs": r.NotPeerCIDRs, "client_cidrs": r.ClientCIDRs, "not_client_cidrs": r.NotClientCIDRs,
			"principals": r.Principals, "not_principals": r.NotPrincipals, "namespaces": r.Namespaces, "not_namespaces": r.NotNamespaces,
			"request_principals": r.RequestPrincipals, "not_request_principals": r.NotRequestPrincipals,
			"audiences": r.Audiences, "not_audiences": r.NotAudiences, "presenters": r.Presenters, "not_presenters": r.NotPresenters,
		} {
			m[k] = anys(v)
		}
		for k, v := range map[string][]int{"ports": r.Ports, "not_ports": r.NotPorts} {
			ports := []any{}
			for _, p := range v {
				ports = append(ports, p)
			}
			m[k] = ports
		}
		claims := []any{}
		for _, c := range r.Claims {
			claims = append(claims, map[string]any{"path": anys(c.Path), "values": anys(c.Values), "not_values": anys(c.NotValues)})
		}
		m["claims"] = claims
		headers := []any{}
		for _, h := range r.Headers {
			headers = append(headers, map[string]any{"name": strings.ToLower(h.Name), "values": anys(h.Values), "not_values": anys(h.NotValues)})
		}
		m["headers"] = headers
		rules = append(rules, m)
	}
	return map[string]any{"allow_nothing": a.AllowNothing, "rules": rules}
}

func headerRulesData(require, deny []HeaderMatch, allow []HeaderValues) map[string]any {
	return map[string]any{
		"require":      matchesData(require),
		"deny":         matchesData(deny),
		"allow_values": allowValuesData(allow),
	}
}

func matchesData(ms []HeaderMatch) []any {
	out := []any{}
	for _, m := range ms {
		e := map[string]any{"name": strings.ToLower(m.Name)}
		if m.Regex != "" {
			e["regex"] = m.Regex
		}
		out = append(out, e)
	}
	return out
}

func allowValuesData(as []HeaderValues) []any {
	out := []any{}
	for _, a := range as {
		out = append(out, map[string]any{"name": strings.ToLower(a.Name), "values": anys(a.Values)})
	}
	return out
}

func anys(ss []string) []any {
	out := make([]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}
