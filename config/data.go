package config

import "github.com/gatehouse-dev/gatehouse/policy"

// Rules maps the bypass, header rules and provider names onto the configured
// decision's rules (what the policy sees at data.gatehouse.config).
func (c *Config) Rules() policy.Rules {
	r := policy.Rules{
		TrustedCIDRs: c.Bypass.TrustedCIDRs,
		BypassPaths:  c.Bypass.Paths,
		Require:      matches(c.Headers.Require),
		Deny:         matches(c.Headers.Deny),
		AllowValues:  allowValues(c.Headers.AllowValues),
	}
	for _, s := range c.Headers.RulesFor {
		r.RulesFor = append(r.RulesFor, policy.ScopedRules{
			Host:        s.Host,
			PathPrefix:  s.PathPrefix,
			Require:     matches(s.Require),
			Deny:        matches(s.Deny),
			AllowValues: allowValues(s.AllowValues),
		})
	}
	for _, p := range c.JWT.Providers {
		r.Providers = append(r.Providers, p.Name)
		if r.SpaceDelimitedClaims == nil {
			r.SpaceDelimitedClaims = map[string][]string{}
		}
		if p.SpaceDelimitedClaims == nil {
			r.SpaceDelimitedClaims[p.Name] = policy.DefaultSpaceDelimitedClaims
		} else {
			r.SpaceDelimitedClaims[p.Name] = p.SpaceDelimitedClaims
		}
	}
	r.Authorization = c.Authorization.Policy()
	return r
}

func matches(ms []HeaderMatch) []policy.HeaderMatch {
	var out []policy.HeaderMatch
	for _, m := range ms {
		out = append(out, policy.HeaderMatch{Name: m.Name, Regex: m.Regex})
	}
	return out
}

func allowValues(as []HeaderValues) []policy.HeaderValues {
	var out []policy.HeaderValues
	for _, a := range as {
		out = append(out, policy.HeaderValues{Name: a.Name, Values: a.Values})
	}
	return out
}
