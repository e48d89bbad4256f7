package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// DefaultSpaceDelimitedClaims are the claims whose string value is read as a
// space-separated list when a provider does not say otherwise (OAuth 2.0's
// "scope", and "scp"), as Istio's RequestAuthentication does.
var DefaultSpaceDelimitedClaims = []string{"scope", "scp"}

// identity is the view of a valid token that authorization rules read: only
// a valid token is an identity; an invalid one is as good as none.
type identity struct {
	valid    bool
	iss, sub string
	azp      string
	aud      []string
	claims   map[string]any
	// split are the claim names read as space-separated lists.
	split []string
}

func newIdentity(t *TokenFacts, spaceDelimited map[string][]string) *identity {
	id := &identity{}
	if t == nil || !t.Valid || len(t.Claims) == 0 {
		return id
	}
	d := json.NewDecoder(bytes.NewReader(t.Claims))
	d.UseNumber()
	if err := d.Decode(&id.claims); err != nil {
		// Fail closed: claims that cannot be read give no identity.
		return &identity{}
	}
	id.valid = true
	id.iss, _ = id.claims["iss"].(string)
	id.sub, _ = id.claims["sub"].(string)
	id.azp, _ = id.claims["azp"].(string)
	switch a := id.claims["aud"].(type) {
	case string:
		id.aud = []string{a}
	case []any:
		for _, e := range a {
			if s, ok := e.(string); ok {
				id.aud = append(id.aud, s)
			}
		}
	}
	if sd, ok := spaceDelimited[t.Provider]; ok {
		id.split = sd
	} else {
		id.split = DefaultSpaceDelimitedClaims
	}
	return id
}

// hasPrincipal: "<iss>/<sub>" exists (both claims are non-empty strings).
func (id *identity) hasPrincipal() bool { return id.valid && id.iss != "" && id.sub != "" }

func (id *identity) anyAudience(ps []strPattern) bool {
	if !id.valid {
		return false
	}
	for _, a := range id.aud {
		if anyMatch(ps, a) {
			return true
		}
	}
	return false
}

// claimMatches: the claim at path is a string matching one of ps (or, for a
// space-delimited claim, one of its space-separated words), or a list with a
// string element matching one of ps.
func (id *identity) claimMatches(path []string, ps []strPattern) bool {
	if !id.valid {
		return false
	}
	var v any = id.claims
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	switch c := v.(type) {
	case string:
		if len(path) == 1 && slices.Contains(id.split, path[0]) {
			for w := range strings.SplitSeq(c, " ") {
				if anyMatch(ps, w) {
					return true
				}
			}
			return false
		}
		return anyMatch(ps, c)
	case []any:
		for _, e := range c {
			if s, ok := e.(string); ok && anyMatch(ps, s) {
				return true
			}
		}
	}
	return false
}
