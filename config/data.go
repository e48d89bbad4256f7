package config

import "strings"

// PolicyData returns the document the policy sees at data.gatehouse.config:
// the bypass, header rules and provider names, with header names lower-cased
// (Envoy lower-cases request header names) and every list present, so Rego
// never needs to guard against a missing key.
func (c *Config) PolicyData() map[string]any {
	scoped := []any{}
	for _, r := range c.Headers.RulesFor {
		m := headerRulesData(r.Require, r.Deny, r.AllowValues)
		m["host"] = strings.ToLower(r.Host)
		m["path_prefix"] = r.PathPrefix
		scoped = append(scoped, m)
	}
	headers := headerRulesData(c.Headers.Require, c.Headers.Deny, c.Headers.AllowValues)
	headers["rules_for"] = scoped
	providers := []any{}
	for _, p := range c.JWT.Providers {
		providers = append(providers, p.Name)
	}
	return map[string]any{
		"bypass": map[string]any{
			"trusted_cidrs": strs(c.Bypass.TrustedCIDRs),
			"paths":         strs(c.Bypass.Paths),
		},
		"headers": headers,
		"jwt":     map[string]any{"providers": providers},
	}
}

func headerRulesData(require, deny []HeaderMatch, allow []HeaderValues) map[string]any {
	return map[string]any{
		"require":      matches(require),
		"deny":         matches(deny),
		"allow_values": allowValues(allow),
	}
}

func matches(ms []HeaderMatch) []any {
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

func allowValues(as []HeaderValues) []any {
	out := []any{}
	for _, a := range as {
		out = append(out, map[string]any{"name": strings.ToLower(a.Name), "values": strs(a.Values)})
	}
	return out
}

func strs(ss []string) []any {
	out := make([]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}
