package clientip

import (
	"fmt"
	"strings"
	"testing"
)

func BenchmarkResolve(b *testing.B) {
	tenCIDRs := make([]string, 10)
	for i := range tenCIDRs {
		tenCIDRs[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	benchmarks := []struct {
		name    string
		cfg     Options
		peer    string
		headers map[string]string
	}{
		// authz passes attributes.source.address.socketAddress.address: no port.
		{name: "peer", cfg: Options{}, peer: "192.0.2.5",
			headers: map[string]string{"x-forwarded-for": "203.0.113.10, 192.0.2.5"}},
		{name: "peer_with_port", cfg: Options{}, peer: "192.0.2.5:51234"},
		{name: "xff_hops_2", cfg: Options{Source: "xff", XFFTrustedHops: 2}, peer: "192.0.2.5",
			headers: map[string]string{"x-forwarded-for": "56.5.6.7, 72.9.5.6, 98.1.2.3, 192.0.2.5"}},
		{name: "xff_trusted_proxies_10", cfg: Options{Source: "xff", TrustedProxies: tenCIDRs}, peer: "10.1.1.1",
			headers: map[string]string{"x-forwarded-for": "56.5.6.7, 72.9.5.6, 10.3.2.3, 10.1.1.1"}},
		{name: "xff_ipv6", cfg: Options{Source: "xff", XFFTrustedHops: 1}, peer: "2001:db8:ffff::1",
			headers: map[string]string{"x-forwarded-for": "2001:db8:1::77, 2001:db8:ffff::1"}},
		{name: "xff_oversized_1MiB", cfg: Options{Source: "xff", TrustedProxies: []string{"10.0.0.0/8"}}, peer: "10.1.1.1",
			headers: map[string]string{"x-forwarded-for": strings.Repeat("10.9.9.9, ", 1<<20/10) + "10.1.1.1"}},
		{name: "envoy_external_address", cfg: Options{Source: "envoy_external_address"}, peer: "10.1.1.1",
			headers: map[string]string{"x-envoy-external-address": "72.9.5.6"}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			r := mustNew(b, bm.cfg)
			b.ReportAllocs()
			for b.Loop() {
				_ = r.Resolve(bm.peer, bm.headers)
			}
		})
	}
}
