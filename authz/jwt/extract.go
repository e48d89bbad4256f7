package jwt

import (
	"net/url"
	"slices"
	"strings"
)

// locationKind says where in the request a token is carried.
type locationKind uint8

const (
	inHeader locationKind = iota
	inParam
	inCookie
)

// location is one place a token may be carried. After unionLocations, each
// location also records which providers read it.
type location struct {
	kind   locationKind
	name   string // lower-case header name, query parameter or cookie name
	prefix string // header value prefix such as "Bearer ", matched case-insensitively

	// allowed is indexed by provider.index.
	allowed []bool
	// strip is true when a provider reading this location has
	// forward_token: false.
	strip bool
	// removeHeaders / removeParams strip the token for forward_token: false;
	// shared between requests, never modified. Cookies are never stripped:
	// removing the cookie header would drop every other cookie of the
	// request.
	removeHeaders []string
	removeParams  []string
}

// unionLocations merges every provider's locations, headers first, then
// query parameters, then cookies, each in configuration order.
func unionLocations(providers []*provider) []*location {
	var out []*location
	type locationKey struct {
		kind         locationKind
		name, prefix string
	}
	index := map[locationKey]*location{}
	add := func(p *provider, l location) {
		key := locationKey{kind: l.kind, name: l.name, prefix: strings.ToLower(l.prefix)}
		u := index[key]
		if u == nil {
			u = &location{kind: l.kind, name: l.name, prefix: l.prefix, allowed: make([]bool, len(providers))}
			switch l.kind {
			case inHeader:
				u.removeHeaders = []string{l.name}
			case inParam:
				u.removeParams = []string{l.name}
			}
			index[key] = u
			out = append(out, u)
		}
		u.allowed[p.index] = true
		u.strip = u.strip || !p.forwardToken
	}
	for _, kind := range []locationKind{inHeader, inParam, inCookie} {
		for _, p := range providers {
			for _, l := range p.locations(kind) {
				add(p, l)
			}
		}
	}
	return out
}

// paramNames returns the names to list in query_parameters_to_remove for
// the parameter l: its configured name and each raw spelling in rawQuery
// that decodes to it. Envoy matches the raw name, so "access_%74oken=..."
// must be listed as such or the token reaches the upstream.
func (l *location) paramNames(rawQuery string) []string {
	names := l.removeParams
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		name, _, _ := strings.Cut(pair, "=")
		if name == l.name || !strings.ContainsAny(name, "%+") || slices.Contains(names, name) {
			continue
		}
		if decoded, err := url.QueryUnescape(name); err == nil && decoded == l.name {
			names = appendShared(names, []string{name})
		}
	}
	return names
}

func (l *location) describe() string {
	switch l.kind {
	case inParam:
		return "query parameter " + quote(l.name)
	case inCookie:
		return "cookie " + quote(l.name)
	}
	return "header " + quote(l.name)
}

// extract returns the token carried at l. ambiguous reports more than one
// candidate (a repeated header or parameter, a duplicated cookie): verifying
// one while the upstream reads the other would be a confusion attack, so the
// caller treats it as malformed.
func (l *location) extract(req Request) (token string, ambiguous, found bool) {
	switch l.kind {
	case inHeader:
		v, ok := req.Headers[l.name]
		if !ok {
			return "", false, false
		}
		return l.fromHeader(v)
	case inParam:
		vs := req.Query[l.name]
		switch {
		case len(vs) == 0:
			return "", false, false
		case len(vs) > 1:
			return "", true, true
		}
		tok := trimOWS(vs[0])
		return tok, false, tok != ""
	default:
		v, ok := req.Headers["cookie"]
		if !ok {
			return "", false, false
		}
		return cookieValue(v, l.name)
	}
}

// fromHeader strips the prefix. Envoy and the forward-auth front end
// comma-join repeated headers, and a JWT never contains a comma, so the value
// is split on commas. A header that holds a credential of the prefix's scheme
// and anything else is ambiguous, whatever separates scheme and token:
// "Bearer <a>,Bearer\t<b>" has one exact "Bearer " prefix, but an upstream
// that splits on white space reads <b>, which was never verified; and a
// header such as Authorization carries one credential, not a list.
func (l *location) fromHeader(v string) (token string, ambiguous, found bool) {
	if strings.IndexByte(v, ',') < 0 {
		tok, ok := l.cutPrefix(v)
		return tok, false, ok
	}
	elements, ours := 0, 0
	for part := range strings.SplitSeq(v, ",") {
		if trimOWS(part) == "" {
			continue
		}
		elements++
		if tok, ok := l.cutPrefix(part); ok {
			ours++
			token, found = tok, true
		} else if l.namesScheme(part) {
			ours++
		}
	}
	switch {
	case ours == 0:
		return "", false, false
	case elements > 1:
		return "", true, true
	}
	return token, false, found
}

// namesScheme reports whether part starts with the prefix's scheme word
// ("Bearer" of "Bearer ") followed by white space or nothing: a credential
// of that scheme, however it is separated from its token. A location with
// no prefix reads every non-empty element as a token.
func (l *location) namesScheme(part string) bool {
	scheme := strings.TrimRight(l.prefix, " \t")
	part = trimOWS(part)
	if scheme == "" {
		return part != ""
	}
	if len(part) < len(scheme) || !strings.EqualFold(part[:len(scheme)], scheme) {
		return false
	}
	return len(part) == len(scheme) || part[len(scheme)] == ' ' || part[len(scheme)] == '\t'
}

func (l *location) cutPrefix(v string) (string, bool) {
	v = trimOWS(v)
	if len(v) < len(l.prefix) || !strings.EqualFold(v[:len(l.prefix)], l.prefix) {
		return "", false
	}
	tok := trimOWS(v[len(l.prefix):])
	return tok, tok != ""
}

// cookieValue finds cookie name in a Cookie header. Envoy joins several
// cookie headers with "; " (or ", " for other headers); cookie values cannot
// contain either separator, so both are accepted.
func cookieValue(header, name string) (token string, ambiguous, found bool) {
	for header != "" {
		var pair string
		if i := strings.IndexAny(header, ";,"); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, ""
		}
		k, val, ok := strings.Cut(trimOWS(pair), "=")
		if !ok || k != name {
			continue
		}
		val = trimOWS(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		if val == "" {
			continue
		}
		if found && val != token {
			return "", true, true
		}
		token, found = val, true
	}
	return token, false, found
}

// trimOWS trims HTTP optional whitespace (spaces and tabs).
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}
