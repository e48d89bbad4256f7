// Package ipset matches IP addresses against a set of CIDRs compiled once, so a
// set of thousands of networks costs a handful of map lookups per address.
package ipset

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Set is an immutable, compiled set of IP prefixes. The zero value is empty.
type Set struct {
	// byLen maps a prefix length to the masked prefixes of that length; lens lists
	// the lengths present, so a lookup tries only those (at most 33 for IPv4 and
	// 129 for IPv6, in practice a few).
	byLen4, byLen6 map[int]map[netip.Prefix]struct{}
	lens4, lens6   []int
	size           int
}

// New compiles cidrs. A bare address is a host prefix (/32 or /128); an
// IPv4-mapped IPv6 prefix is stored as IPv4. Any entry that does not parse is an
// error naming it: a set with a silently dropped entry would match less than the
// operator wrote.
func New(cidrs []string) (*Set, error) {
	s := &Set{byLen4: map[int]map[netip.Prefix]struct{}{}, byLen6: map[int]map[netip.Prefix]struct{}{}}
	for i, raw := range cidrs {
		p, err := ParsePrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i, raw, err)
		}
		s.add(p)
	}
	return s, nil
}

func (s *Set) add(p netip.Prefix) {
	byLen, lens := s.byLen6, &s.lens6
	if p.Addr().Is4() {
		byLen, lens = s.byLen4, &s.lens4
	}
	m, ok := byLen[p.Bits()]
	if !ok {
		m = map[netip.Prefix]struct{}{}
		byLen[p.Bits()] = m
		*lens = append(*lens, p.Bits())
		slices.Sort(*lens)
	}
	if _, dup := m[p]; !dup {
		m[p] = struct{}{}
		s.size++
	}
}

// Len returns the number of distinct prefixes in the set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.size
}

// Contains reports whether addr lies in any prefix of the set. An invalid
// address is never contained.
func (s *Set) Contains(addr netip.Addr) bool {
	if s == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	byLen, lens := s.byLen6, s.lens6
	if addr.Is4() {
		byLen, lens = s.byLen4, s.lens4
	}
	for _, bits := range lens {
		p, err := addr.Prefix(bits)
		if err != nil {
			continue
		}
		if _, ok := byLen[bits][p]; ok {
			return true
		}
	}
	return false
}

// ContainsString parses raw with ParseAddr and reports whether it is in the set;
// anything unparsable is not.
func (s *Set) ContainsString(raw string) bool {
	addr, ok := ParseAddr(raw)
	return ok && s.Contains(addr)
}

// ParsePrefix parses a CIDR or a bare address, masks it to its network and
// unmaps IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104 becomes 10.0.0.0/8).
func ParsePrefix(raw string) (netip.Prefix, error) {
	raw = strings.TrimSpace(raw)
	if !strings.Contains(raw, "/") {
		addr, err := netip.ParseAddr(raw)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR")
		}
		addr = addr.Unmap().WithZone("")
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	p, err := netip.ParsePrefix(raw)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR (want e.g. 10.0.0.0/8 or 2001:db8::/32)")
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix shorter than /96 (write the IPv4 form, e.g. 10.0.0.0/8)")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ParseAddr parses one address as it appears in headers and socket addresses:
// surrounding spaces, an IPv6 zone, brackets and a port are stripped
// ("[2001:db8::1]:443", "10.1.2.3:8080"), and an IPv4-mapped IPv6 address is
// returned as IPv4. It reports false for anything else, including hostnames,
// "unknown" and obfuscated identifiers.
func ParseAddr(raw string) (netip.Addr, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > 64 {
		return netip.Addr{}, false
	}
	if addr, err := netip.ParseAddr(raw); err == nil {
		return addr.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(raw); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if strings.HasPrefix(raw, "[") && strings.HasSuffix(raw, "]") {
		if addr, err := netip.ParseAddr(raw[1 : len(raw)-1]); err == nil {
			return addr.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// CoversAll reports whether p holds every address of its family (0.0.0.0/0,
// ::/0, or ::ffff:0:0/96 once unmapped by ParsePrefix). Trusting such a range
// trusts everyone, which configuration must acknowledge explicitly.
func CoversAll(p netip.Prefix) bool { return p.IsValid() && p.Bits() == 0 }
