package authz

import (
	"net/netip"
	"strings"
)

// ValidHost reports whether h is exactly one host, with an optional port: a
// DNS name (letters, digits, '-', '_', dot-separated labels, at most one
// trailing dot), an IPv4 address, or an IPv6 address in brackets, then
// optionally ':' and a port of 1 to 65535. Everything else ("api.example.com?",
// "api.example.com#", "a\\b", "a.%2e", "user@host", "a:1:2", an empty label) is
// refused by every front end before any decision: host-scoped rules compare the
// host, and a host the upstream would read otherwise must not decide.
func ValidHost(h string) bool {
	if h == "" || len(h) > 262 {
		return false
	}
	name, port := h, ""
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		rest := h[end+1:]
		if rest == "" {
			return true
		}
		if rest[0] != ':' {
			return false
		}
		return validPort(rest[1:])
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i+1:]
		if !validPort(port) {
			return false
		}
	}
	return validName(name)
}

// validName: dot-separated non-empty labels of letters, digits, '-' and '_',
// with at most one trailing dot (a fully qualified name, which host rules
// read without it).
func validName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		default:
			return false
		}
	}
	return label > 0
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n >= 1 && n <= 65535
}
