package clientip

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// FuzzResolve: whatever the headers hold, the resolved address is the peer or
// an address that literally appears in the header the mode reads, peer mode
// never looks at headers at all, and the X-Forwarded-For walk picks exactly
// what referenceXFF (the documented rule, written the plain way: split,
// reverse, count) picks. Without that last check a resolver that trusted one
// hop too many, or the leftmost entry, would still pass: its answer is an
// address of the header too.
func FuzzResolve(f *testing.F) {
	f.Add("192.0.2.1", "10.1.2.3, 192.0.2.1", "10.9.9.9", uint8(1))
	f.Add("[2001:db8::1]:443", "::ffff:10.1.2.3, , garbage", "", uint8(2))
	f.Add("", strings.Repeat("1.1.1.1,", 100), "not-an-ip", uint8(0))
	f.Add("10.0.0.1", "[::1]:80,10.0.0.1", "2001:db8::9", uint8(3))
	// Chains of trusted proxies around the MaxXFFEntries bound.
	f.Add("10.0.0.1", strings.Repeat("10.0.0.7, ", MaxXFFEntries)+"10.0.0.1", "", uint8(0))
	f.Add("10.0.0.1", strings.Repeat("10.0.0.7, ", MaxXFFEntries-1)+"10.0.0.1", "", uint8(0))
	f.Add("10.0.0.1", strings.Repeat("10.0.0.7, ", MaxXFFEntries), "", uint8(0))
	peerR, _ := New(Options{Source: SourcePeer})
	extR, _ := New(Options{Source: SourceEnvoyExternal})
	proxyNets := []string{"10.0.0.0/8", "2001:db8::/32"}
	proxiesR, err := New(Options{Source: SourceXFF, TrustedProxies: proxyNets})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, peer, xff, ext string, hops uint8) {
		headers := map[string]string{"x-forwarded-for": xff, "x-envoy-external-address": ext}
		peerAddr, peerOK := ipset.ParseAddr(peer)

		if got := peerR.Resolve(peer, headers); got.Addr != peerAddr || got.Source != SourcePeer || peerOK != got.Addr.IsValid() {
			t.Fatalf("peer mode: %+v for peer %q", got, peer)
		}
		if got := extR.Resolve(peer, headers); got.Addr.IsValid() && got.Addr != peerAddr {
			if a, ok := ipset.ParseAddr(ext); !ok || a != got.Addr || got.Source != SourceEnvoyExternal {
				t.Fatalf("external mode invented %v from %q", got.Addr, ext)
			}
		}
		xffR, err := New(Options{Source: SourceXFF, XFFTrustedHops: int(hops % 8)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := xffR.Resolve(peer, headers), referenceXFF(peer, xff, int(hops%8), nil); got != want {
			t.Fatalf("xff_trusted_hops %d: peer %q xff %q resolved %+v, the rule says %+v", hops%8, peer, xff, got, want)
		}
		if got, want := proxiesR.Resolve(peer, headers), referenceXFF(peer, xff, 0, proxyNets); got != want {
			t.Fatalf("trusted_proxies %v: peer %q xff %q resolved %+v, the rule says %+v", proxyNets, peer, xff, got, want)
		}
		for _, r := range []*Resolver{xffR, proxiesR} {
			got := r.Resolve(peer, headers)
			if !got.Addr.IsValid() || got.Addr == peerAddr {
				continue
			}
			found := false
			for _, entry := range strings.Split(xff, ",") {
				if a, ok := ipset.ParseAddr(entry); ok && a == got.Addr {
					found = true
				}
			}
			if !found || got.Source != SourceXFF {
				t.Fatalf("xff mode resolved %v (%s), which is neither the peer %q nor an entry of %q", got.Addr, got.Source, peer, xff)
			}
		}
	})
}

// referenceXFF is the rule of docs/client-ip.md written plainly, for
// FuzzResolve to compare the allocation-free scanner against: drop a
// rightmost entry equal to the peer (Envoy appended it), then walk from the
// peer leftwards; a position is a trusted proxy when it is one of the first
// hops positions or lies in proxies; the first position that is not is the
// client. Entries past MaxXFFEntries (counted from the right, the dropped one
// included), garbage on the way, or too few entries fall back to the peer.
func referenceXFF(peer, xff string, hops int, proxies []string) Result {
	peerAddr, _ := ipset.ParseAddr(peer)
	if strings.TrimSpace(xff) == "" {
		return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackXFFMissing}
	}
	if !peerAddr.IsValid() {
		return Result{Source: SourcePeer}
	}
	var nets []netip.Prefix
	for _, p := range proxies {
		nets = append(nets, netip.MustParsePrefix(p))
	}
	trusted := func(pos int, a netip.Addr) bool {
		if pos < hops {
			return true
		}
		for _, n := range nets {
			if n.Contains(a) {
				return true
			}
		}
		return false
	}
	entries := strings.Split(xff, ",")
	for i := range entries {
		entries[i] = strings.TrimSpace(entries[i])
	}
	dropped := 0
	if last, ok := ipset.ParseAddr(entries[len(entries)-1]); ok && last == peerAddr {
		entries, dropped = entries[:len(entries)-1], 1
	}
	addr, source := peerAddr, SourcePeer
	for pos := 0; ; pos++ {
		if !trusted(pos, addr) {
			return Result{Addr: addr, Source: source}
		}
		if pos >= len(entries) {
			if pos < hops {
				return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackXFFTooFewEntries}
			}
			return Result{Addr: addr, Source: source}
		}
		if pos+1+dropped > MaxXFFEntries {
			return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackXFFInvalidEntry}
		}
		next, ok := ipset.ParseAddr(entries[len(entries)-1-pos])
		if !ok {
			return Result{Addr: peerAddr, Source: SourcePeer, Fallback: FallbackXFFInvalidEntry}
		}
		addr, source = next, SourceXFF
	}
}
