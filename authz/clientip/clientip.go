// Package clientip resolves the real client address of a request checked by
// Envoy's ext_authz filter: the L4 peer of the Envoy that calls Gatehouse, an
// X-Forwarded-For entry that a chain of trusted proxies vouches for, or Envoy's
// x-envoy-external-address header. Every fallback lands on the peer, never on an
// address a client could have written itself. docs/client-ip.md explains the
// modes and how xff_trusted_hops counts.
package clientip

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// Sources: where the resolved address came from (Result.Source, the policy
// input's client_ip_source) and the values of client_ip.source.
const (
	// SourcePeer is the L4 peer of the Envoy calling Gatehouse
	// (CheckRequest attributes.source.address).
	SourcePeer = "peer"
	// SourceXFF is an X-Forwarded-For entry vouched for by trusted proxies.
	SourceXFF = "xff"
	// SourceEnvoyExternal is the x-envoy-external-address header.
	SourceEnvoyExternal = "envoy_external_address"
)

// Fallbacks: why the configured source could not be used and the peer was used
// instead (Result.Fallback, the policy input's client_ip_fallback).
const (
	// FallbackXFFMissing: no X-Forwarded-For header, or a blank one.
	FallbackXFFMissing = "xff_missing"
	// FallbackXFFTooFewEntries: fewer addresses than xff_trusted_hops requires.
	FallbackXFFTooFewEntries = "xff_too_few_entries"
	// FallbackXFFInvalidEntry: the walk reached an entry that is not an IP
	// address (or went past the parse limit); nothing left of it is believed.
	FallbackXFFInvalidEntry = "xff_invalid_entry"
	// FallbackExternalAddressMissing: no x-envoy-external-address header.
	FallbackExternalAddressMissing = "external_address_missing"
	// FallbackExternalAddressInvalid: x-envoy-external-address is not one IP address.
	FallbackExternalAddressInvalid = "external_address_invalid"
)

// Header names, lower-case as Envoy sends them.
const (
	headerXFF             = "x-forwarded-for"
	headerExternalAddress = "x-envoy-external-address"
)

// MaxXFFEntries bounds the X-Forwarded-For walk: at most this many entries are
// read, from the right, whatever the header's size. A walk that would need an
// entry beyond it falls back to the peer (FallbackXFFInvalidEntry).
const MaxXFFEntries = 64

// Resolver resolves client addresses under one client_ip configuration. It is
// immutable and safe for concurrent use.
type Resolver struct {
	source      string
	trustedHops int
	proxies     *ipset.Set
}

// Result is one resolved client address.
type Result struct {
	// Addr is the client address, IPv4-mapped IPv6 unmapped and zone-free. It is
	// invalid when even the peer address is unusable.
	Addr netip.Addr
	// Source says where Addr came from: SourcePeer, SourceXFF or
	// SourceEnvoyExternal. An xff walk that stops at the untrusted peer itself
	// reports SourcePeer with no Fallback.
	Source string
	// Fallback is "" or one of the Fallback* constants: the configured source
	// could not be used, and Addr is the peer.
	Fallback string
}

// ClientIP returns Addr in canonical text form, or "" when Addr is invalid
// (netip.Addr's String would say "invalid IP", which is not an address).
func (r Result) ClientIP() string {
	if !r.Addr.IsValid() {
		return ""
	}
	return r.Addr.String()
}

// Options configures a Resolver. The zero value resolves to the peer.
type Options struct {
	// Source is SourcePeer (the default when empty), SourceXFF or
	// SourceEnvoyExternal.
	Source string
	// XFFTrustedHops is the number of trusted proxies in front of the Envoy
	// that calls Gatehouse (Envoy's xff_num_trusted_hops, Istio's
	// numTrustedProxies); SourceXFF only.
	XFFTrustedHops int
	// TrustedProxies are CIDRs (or addresses) whose X-Forwarded-For entries
	// are skipped; SourceXFF only.
	TrustedProxies []string
	// AllowAllProxies acknowledges a TrustedProxies entry that covers every
	// address (0.0.0.0/0, ::/0), which makes X-Forwarded-For fully
	// client-controlled. Without it such an entry is refused.
	AllowAllProxies bool
}

// New validates cfg and builds its Resolver. Errors name the configuration key
// (client_ip.*) and say how to fix it.
func New(cfg Options) (*Resolver, error) {
	source := strings.TrimSpace(cfg.Source)
	switch source {
	case "":
		source = SourcePeer
	case SourcePeer, SourceXFF, SourceEnvoyExternal:
	default:
		return nil, fmt.Errorf("client_ip.source: %q is not one of %s, %s, %s", cfg.Source, SourcePeer, SourceXFF, SourceEnvoyExternal)
	}
	if cfg.XFFTrustedHops < 0 || cfg.XFFTrustedHops >= MaxXFFEntries {
		return nil, fmt.Errorf("client_ip.xff_trusted_hops: %d is out of range: set the number of proxies in front of the Envoy that calls Gatehouse, 0 to %d (Istio's numTrustedProxies)", cfg.XFFTrustedHops, MaxXFFEntries-1)
	}
	for i, raw := range cfg.TrustedProxies {
		p, err := ipset.ParsePrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("client_ip.trusted_proxies[%d]: %q is %w", i, raw, err)
		}
		// A proxy range covering every address lets any client write the
		// X-Forwarded-For entry that is believed: refuse it unless the
		// operator says, in so many words, that this is intended.
		if ipset.CoversAll(p) && !cfg.AllowAllProxies {
			return nil, fmt.Errorf("client_ip.trusted_proxies[%d]: %q trusts every address as a proxy, so any client can forge X-Forwarded-For; list your load balancers' ranges, or set client_ip.allow_all_proxies: true if every peer really is a trusted proxy", i, raw)
		}
	}
	// Settings the chosen source ignores are a misunderstanding waiting to
	// become an incident ("I set trusted hops, why is every client my load
	// balancer?"): refuse them instead of ignoring them.
	if source != SourceXFF {
		if cfg.XFFTrustedHops != 0 {
			return nil, fmt.Errorf("client_ip.xff_trusted_hops: %d has no effect with client_ip.source %q: set source: xff, or remove it", cfg.XFFTrustedHops, source)
		}
		if len(cfg.TrustedProxies) != 0 {
			return nil, fmt.Errorf("client_ip.trusted_proxies: has no effect with client_ip.source %q: set source: xff, or remove it", source)
		}
	}
	proxies, err := ipset.New(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("client_ip.trusted_proxies: %w", err)
	}
	return &Resolver{source: source, trustedHops: cfg.XFFTrustedHops, proxies: proxies}, nil
}

// Source returns the configured source, "" resolved to SourcePeer.
func (r *Resolver) Source() string { return r.source }

// Resolve returns the client address of one request. peer is
// attributes.source.address's IP (a port or brackets are tolerated); headers
// are the request headers with lower-case names, repeated headers comma-joined
// as Envoy sends them.
func (r *Resolver) Resolve(peer string, headers map[string]string) Result {
	peerAddr, _ := ipset.ParseAddr(peer) // invalid when unusable
	switch r.source {
	case SourceXFF:
		xff, ok := headers[headerXFF]
		return r.fromXFF(peerAddr, xff, ok)
	case SourceEnvoyExternal:
		raw, ok := headers[headerExternalAddress]
		if !ok || strings.TrimSpace(raw) == "" {
			return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackExternalAddressMissing}
		}
		addr, ok := ipset.ParseAddr(raw)
		if !ok {
			return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackExternalAddressInvalid}
		}
		return Result{Addr: addr, Source: SourceEnvoyExternal}
	default:
		return Result{Addr: peerAddr, Source: SourcePeer}
	}
}

// fromXFF walks the proxy chain from the right. Position 0 is the peer, then
// come the X-Forwarded-For entries right to left. A position is a trusted proxy
// when it is one of the first trustedHops positions or its address is in
// trusted_proxies; the first position that is not is the client. An Envoy with
// use_remote_address: true has already appended the peer to X-Forwarded-For,
// so a rightmost entry equal to the peer is the peer's own entry and is not
// counted twice; that makes xff_trusted_hops: N pick the address Envoy picks
// with xff_num_trusted_hops: N (docs/client-ip.md).
func (r *Resolver) fromXFF(peer netip.Addr, xff string, present bool) Result {
	if !present || strings.TrimSpace(xff) == "" {
		return Result{Addr: peer, Source: SourcePeer, Fallback: FallbackXFFMissing}
	}
	if !peer.IsValid() {
		// No anchor for the chain: nothing in XFF can be vouched for.
		return Result{Source: SourcePeer}
	}
	sc := xffScanner{rest: xff}
	if entry, ok := sc.next(); ok {
		if addr, valid := ipset.ParseAddr(entry); !valid || addr != peer {
			sc.unread(entry)
		}
	}
	addr, source := peer, SourcePeer
	for pos := 0; ; pos++ {
		if pos >= r.trustedHops && !r.proxies.Contains(addr) {
			return Result{Addr: addr, Source: source}
		}
		entry, ok := sc.next()
		if !ok {
			if pos < r.trustedHops {
				return Result{Addr: peer, Source: SourcePeer, Fallback: FallbackXFFTooFewEntries}
			}
			// Every hop, the leftmost included, is a trusted proxy: the request
			// started inside the trusted network (Envoy's xff_trusted_cidrs rule).
			return Result{Addr: addr, Source: source}
		}
		if sc.read > MaxXFFEntries {
			return Result{Addr: peer, Source: SourcePeer, Fallback: FallbackXFFInvalidEntry}
		}
		next, valid := ipset.ParseAddr(entry)
		if !valid {
			// Fail closed: an address left of garbage is never believed.
			return Result{Addr: peer, Source: SourcePeer, Fallback: FallbackXFFInvalidEntry}
		}
		addr, source = next, SourceXFF
	}
}

// xffScanner yields X-Forwarded-For entries right to left without splitting
// (or copying) the header, so an oversized header costs a byte scan, not an
// allocation per entry.
type xffScanner struct {
	rest    string
	done    bool
	pending string
	hasPend bool
	read    int // entries returned so far, unread ones not counted
}

func (s *xffScanner) next() (string, bool) {
	if s.hasPend {
		s.hasPend = false
		s.read++
		return s.pending, true
	}
	if s.done {
		return "", false
	}
	var entry string
	if i := strings.LastIndexByte(s.rest, ','); i >= 0 {
		entry, s.rest = s.rest[i+1:], s.rest[:i]
	} else {
		entry, s.rest, s.done = s.rest, "", true
	}
	s.read++
	return strings.TrimSpace(entry), true
}

// unread pushes back the entry next returned last.
func (s *xffScanner) unread(entry string) {
	s.pending, s.hasPend = entry, true
	s.read--
}
