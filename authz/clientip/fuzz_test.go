package clientip

import (
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// FuzzResolve: whatever the headers hold, the resolved address is the peer or
// an address that literally appears in the header the mode reads, and peer
// mode never looks at headers at all.
func FuzzResolve(f *testing.F) {
	f.Add("192.0.2.1", "10.1.2.3, 192.0.2.1", "10.9.9.9", uint8(1))
	f.Add("[2001:db8::1]:443", "::ffff:10.1.2.3, , garbage", "", uint8(2))
	f.Add("", strings.Repeat("1.1.1.1,", 100), "not-an-ip", uint8(0))
	f.Add("10.0.0.1", "[::1]:80,10.0.0.1", "2001:db8::9", uint8(3))
	peerR, _ := New(Options{Source: SourcePeer})
	extR, _ := New(Options{Source: SourceEnvoyExternal})
	proxiesR, err := New(Options{Source: SourceXFF, TrustedProxies: []string{"10.0.0.0/8", "2001:db8::/32"}})
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
