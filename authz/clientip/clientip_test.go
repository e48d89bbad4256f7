package clientip

import (
	"strings"
	"testing"
)

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Options
		wantErr string // substring; "" means valid
	}{
		{name: "zero value is peer", cfg: Options{}},
		{name: "peer", cfg: Options{Source: "peer"}},
		{name: "xff with hops and proxies", cfg: Options{Source: "xff", XFFTrustedHops: 2, TrustedProxies: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:172.16.0.0/108"}}},
		{name: "envoy external address", cfg: Options{Source: "envoy_external_address"}},
		{name: "unknown source", cfg: Options{Source: "foo"}, wantErr: `client_ip.source: "foo" is not one of peer, xff, envoy_external_address`},
		{name: "source is case-sensitive", cfg: Options{Source: "XFF"}, wantErr: `client_ip.source: "XFF" is not one of`},
		{name: "negative hops", cfg: Options{Source: "xff", XFFTrustedHops: -1}, wantErr: "client_ip.xff_trusted_hops: -1 is out of range"},
		{name: "too many hops", cfg: Options{Source: "xff", XFFTrustedHops: MaxXFFEntries}, wantErr: "client_ip.xff_trusted_hops: 64 is out of range"},
		{name: "bad CIDR names index", cfg: Options{Source: "xff", TrustedProxies: []string{"10.0.0.0/8", "192.168.0.0/16", "10.0.0/8"}}, wantErr: `client_ip.trusted_proxies[2]: "10.0.0/8" is not a CIDR`},
		{name: "hostname is not an address", cfg: Options{Source: "xff", TrustedProxies: []string{"lb.internal"}}, wantErr: `client_ip.trusted_proxies[0]: "lb.internal" is not an IP address or CIDR`},
		{name: "short mapped prefix", cfg: Options{Source: "xff", TrustedProxies: []string{"::ffff:0:0/90"}}, wantErr: `client_ip.trusted_proxies[0]: "::ffff:0:0/90" is an IPv4-mapped prefix shorter than /96`},
		{name: "all proxies trusted refused", cfg: Options{Source: "xff", TrustedProxies: []string{"10.0.0.0/8", "0.0.0.0/0"}}, wantErr: `client_ip.trusted_proxies[1]: "0.0.0.0/0" trusts every address as a proxy`},
		{name: "all v6 proxies trusted refused", cfg: Options{Source: "xff", TrustedProxies: []string{"::/0"}}, wantErr: "client_ip.allow_all_proxies"},
		{name: "all proxies acknowledged", cfg: Options{Source: "xff", TrustedProxies: []string{"0.0.0.0/0", "::/0"}, AllowAllProxies: true}},
		{name: "hops without xff", cfg: Options{Source: "peer", XFFTrustedHops: 1}, wantErr: `client_ip.xff_trusted_hops: 1 has no effect with client_ip.source "peer"`},
		{name: "hops with default source", cfg: Options{XFFTrustedHops: 1}, wantErr: `has no effect with client_ip.source "peer"`},
		{name: "proxies without xff", cfg: Options{Source: "envoy_external_address", TrustedProxies: []string{"10.0.0.0/8"}}, wantErr: `client_ip.trusted_proxies: has no effect with client_ip.source "envoy_external_address"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: unexpected error %v", err)
				}
				if r == nil {
					t.Fatal("New returned a nil resolver")
				}
				return
			}
			if err == nil {
				t.Fatalf("New: want error containing %q, got none", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestResolverSource(t *testing.T) {
	r := mustNew(t, Options{})
	if got := r.Source(); got != SourcePeer {
		t.Fatalf("Source() = %q, want %q", got, SourcePeer)
	}
}

// Addresses in the tests: 203.0.113.0/24 and 198.51.100.0/24 are "the
// internet", 10.0.0.0/8 the trusted proxies, 192.0.2.0/24 peers.
func TestResolve(t *testing.T) {
	peerMode := Options{Source: "peer"}
	xff0 := Options{Source: "xff"}
	xff1 := Options{Source: "xff", XFFTrustedHops: 1}
	xff2 := Options{Source: "xff", XFFTrustedHops: 2}
	proxies := Options{Source: "xff", TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}}
	proxiesHop1 := Options{Source: "xff", XFFTrustedHops: 1, TrustedProxies: []string{"10.0.0.0/8"}}
	external := Options{Source: "envoy_external_address"}

	h := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const xffH, extH = "x-forwarded-for", "x-envoy-external-address"

	longXFF := strings.Repeat("10.9.9.9, ", 100) + "10.1.1.1"
	hugeGarbage := strings.Repeat("x", 1<<20)

	tests := []struct {
		name         string
		cfg          Options
		peer         string
		headers      map[string]string
		wantIP       string
		wantSource   string
		wantFallback string
	}{
		// peer mode: nothing the client sends matters.
		{name: "peer: plain", cfg: peerMode, peer: "192.0.2.5", wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "peer: forged xff ignored", cfg: peerMode, peer: "192.0.2.5", headers: h(xffH, "10.0.0.1"), wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "peer: forged external address ignored", cfg: peerMode, peer: "192.0.2.5", headers: h(extH, "10.0.0.1"), wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "peer: port stripped", cfg: peerMode, peer: "192.0.2.5:51234", wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "peer: ipv6 brackets and port stripped", cfg: peerMode, peer: "[2001:db8::5]:443", wantIP: "2001:db8::5", wantSource: "peer"},
		{name: "peer: ipv4-mapped unmapped", cfg: peerMode, peer: "::ffff:192.0.2.5", wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "peer: zone stripped", cfg: peerMode, peer: "fe80::1%eth0", wantIP: "fe80::1", wantSource: "peer"},
		{name: "peer: unusable", cfg: peerMode, peer: "", wantIP: "", wantSource: "peer"},
		{name: "peer: garbage", cfg: peerMode, peer: "/var/run/envoy.sock", wantIP: "", wantSource: "peer"},

		// xff, 0 hops, no trusted proxies: the peer, whatever XFF says.
		{name: "xff0: envoy-appended peer", cfg: xff0, peer: "192.0.2.5", headers: h(xffH, "203.0.113.128, 203.0.113.10, 192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "xff0: direct hit with forged xff", cfg: xff0, peer: "192.0.2.5", headers: h(xffH, "10.0.0.1"), wantIP: "192.0.2.5", wantSource: "peer"},
		{name: "xff0: missing header", cfg: xff0, peer: "192.0.2.5", wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_missing"},
		{name: "xff0: empty header", cfg: xff0, peer: "192.0.2.5", headers: h(xffH, ""), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_missing"},
		{name: "xff0: blank header", cfg: xff0, peer: "192.0.2.5", headers: h(xffH, " \t "), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_missing"},
		{name: "xff0: garbage never reached", cfg: xff0, peer: "192.0.2.5", headers: h(xffH, "garbage, unknown"), wantIP: "192.0.2.5", wantSource: "peer"},

		// xff with hops: Envoy's examples (use_remote_address: true, so Gatehouse
		// sees XFF with the peer appended).
		{name: "xff1: one proxy in front", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff1: forged entries left of client ignored", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "10.0.0.1, 203.0.113.10, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff2: envoy docs example 3", cfg: xff2, peer: "192.0.2.5", headers: h(xffH, "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff2: too few entries", cfg: xff2, peer: "192.0.2.5", headers: h(xffH, "203.0.113.1, 192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_too_few_entries"},
		{name: "xff2: only the peer's entry", cfg: xff2, peer: "192.0.2.5", headers: h(xffH, "192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_too_few_entries"},
		{name: "xff2: exactly enough", cfg: xff2, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10, 203.0.113.1, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff1: missing header", cfg: xff1, peer: "192.0.2.5", wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_missing"},

		// xff with hops behind an Envoy that does not append (use_remote_address:
		// false): Gatehouse appends the peer itself, so the count is unchanged.
		{name: "xff1: not appended, peer counts as the hop", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "10.0.0.1, 203.0.113.10"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff1: not appended and forged peer entry: same chain", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "10.0.0.1, 203.0.113.10, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "xff1: single forged entry from a direct client", cfg: xff1, peer: "203.0.113.66", headers: h(xffH, "10.0.0.1, 203.0.113.66"), wantIP: "10.0.0.1", wantSource: "xff"},

		// trusted_proxies: skipped by address, wherever they are.
		{name: "proxies: trusted peer, client left of it", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "203.0.113.10, 10.1.1.1"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies: several trusted hops skipped", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "10.0.0.1, 203.0.113.10, 10.2.2.2, 10.3.3.3, 10.1.1.1"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies: untrusted peer with forged xff gets the peer", cfg: proxies, peer: "203.0.113.66", headers: h(xffH, "10.0.0.1, 203.0.113.66"), wantIP: "203.0.113.66", wantSource: "peer"},
		{name: "proxies: untrusted peer, not appended", cfg: proxies, peer: "203.0.113.66", headers: h(xffH, "10.0.0.1"), wantIP: "203.0.113.66", wantSource: "peer"},
		{name: "proxies: trusted peer without xff", cfg: proxies, peer: "10.1.1.1", wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "xff_missing"},
		{name: "proxies: all trusted, leftmost is the client", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "10.7.7.7, 10.1.1.1"), wantIP: "10.7.7.7", wantSource: "xff"},
		{name: "proxies: ipv6 chain", cfg: proxies, peer: "[2001:db8:ffff::1]:443", headers: h(xffH, "2001:db8:1::77, 2001:db8:ffff::2, 2001:db8:ffff::1"), wantIP: "2001:db8:1::77", wantSource: "xff"},
		{name: "proxies: mapped peer and entries match ipv4 CIDRs", cfg: proxies, peer: "::ffff:10.1.1.1", headers: h(xffH, "203.0.113.10, ::ffff:10.2.3.4, 10.1.1.1"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies: mapped client is unmapped", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "::ffff:203.0.113.10"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies: ports and brackets in entries", cfg: proxies, peer: "10.1.1.1:5000", headers: h(xffH, "[2001:db8:1::77]:1234, 10.2.2.2:80, 10.1.1.1"), wantIP: "2001:db8:1::77", wantSource: "xff"},
		{name: "proxies: whitespace around entries", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "  203.0.113.10\t,   10.2.2.2 ,10.1.1.1  "), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies: no spaces", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "198.51.100.1,203.0.113.10,10.1.1.1"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "proxies+hop1: hop then trusted CIDR", cfg: proxiesHop1, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10, 10.2.2.2, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},

		// Garbage: never believed, never believe anything left of it.
		{name: "garbage: client entry is garbage", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "203.0.113.10, unknown, 10.1.1.1"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: obfuscated identifier", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "_hidden, 10.1.1.1"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: empty entry reached", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, "203.0.113.10,,10.1.1.1"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: trailing comma", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10,"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: at a counted hop", cfg: xff2, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10, bogus, 192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: hostname", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "client.example.com, 192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: left of the client is not read", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, "bogus, 203.0.113.10, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "garbage: huge entry", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, hugeGarbage+", 192.0.2.5"), wantIP: "192.0.2.5", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "garbage: huge entry never reached", cfg: xff1, peer: "192.0.2.5", headers: h(xffH, hugeGarbage+", 203.0.113.10, 192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "garbage: unusable peer", cfg: xff1, peer: "", headers: h(xffH, "203.0.113.10, 10.0.0.1"), wantIP: "", wantSource: "peer"},

		// Oversized: the walk reads at most MaxXFFEntries entries.
		{name: "oversized: client found near the right", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, strings.Repeat("198.51.100.1, ", 10000)+"203.0.113.10, 10.1.1.1"), wantIP: "203.0.113.10", wantSource: "xff"},
		{name: "oversized: all trusted past the limit", cfg: proxies, peer: "10.1.1.1", headers: h(xffH, longXFF), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "xff_invalid_entry"},
		{name: "oversized: max hops still reachable", cfg: Options{Source: "xff", XFFTrustedHops: MaxXFFEntries - 1}, peer: "192.0.2.5", headers: h(xffH, "203.0.113.10, "+strings.Repeat("198.51.100.1, ", MaxXFFEntries-2)+"192.0.2.5"), wantIP: "203.0.113.10", wantSource: "xff"},

		// envoy_external_address.
		{name: "external: used", cfg: external, peer: "10.1.1.1", headers: h(extH, "203.0.113.10"), wantIP: "203.0.113.10", wantSource: "envoy_external_address"},
		{name: "external: ipv6 and whitespace", cfg: external, peer: "10.1.1.1", headers: h(extH, " 2001:db8::10 "), wantIP: "2001:db8::10", wantSource: "envoy_external_address"},
		{name: "external: mapped", cfg: external, peer: "10.1.1.1", headers: h(extH, "::ffff:203.0.113.10"), wantIP: "203.0.113.10", wantSource: "envoy_external_address"},
		{name: "external: xff ignored", cfg: external, peer: "10.1.1.1", headers: h(extH, "203.0.113.10", xffH, "10.0.0.1"), wantIP: "203.0.113.10", wantSource: "envoy_external_address"},
		{name: "external: missing", cfg: external, peer: "10.1.1.1", headers: h(xffH, "203.0.113.10"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "external_address_missing"},
		{name: "external: empty", cfg: external, peer: "10.1.1.1", headers: h(extH, " "), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "external_address_missing"},
		{name: "external: garbage", cfg: external, peer: "10.1.1.1", headers: h(extH, "unknown"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "external_address_invalid"},
		{name: "external: two values joined", cfg: external, peer: "10.1.1.1", headers: h(extH, "10.0.0.1,203.0.113.10"), wantIP: "10.1.1.1", wantSource: "peer", wantFallback: "external_address_invalid"},
		{name: "external: missing with unusable peer", cfg: external, peer: "", wantIP: "", wantSource: "peer", wantFallback: "external_address_missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustNew(t, tc.cfg)
			got := r.Resolve(tc.peer, tc.headers)
			if got.ClientIP() != tc.wantIP || got.Source != tc.wantSource || got.Fallback != tc.wantFallback {
				t.Fatalf("Resolve(%q) = {ip %q, source %q, fallback %q}, want {ip %q, source %q, fallback %q}",
					tc.peer, got.ClientIP(), got.Source, got.Fallback, tc.wantIP, tc.wantSource, tc.wantFallback)
			}
			if got.Addr.IsValid() && (got.Addr.Is4In6() || got.Addr.Zone() != "") {
				t.Fatalf("Addr %v is not canonical", got.Addr)
			}
		})
	}
}

// TestIstioNumTrustedProxiesExample is the worked example in docs/client-ip.md,
// after Istio's "Configuring Gateway Network Topology" (numTrustedProxies: 2):
// client -> proxy1 -> proxy2 -> Istio gateway (Envoy, use_remote_address: true,
// xff_num_trusted_hops: 2) -> ext_authz -> Gatehouse.
func TestIstioNumTrustedProxiesExample(t *testing.T) {
	const (
		forged = "56.5.6.7"     // whatever the client put in XFF itself
		client = "72.9.5.6"     // the real client
		proxy1 = "98.1.2.3"     // first proxy
		proxy2 = "203.0.113.20" // second proxy: the gateway's L4 peer
	)
	xff := forged                     // client sends
	xff += ", " + client              // proxy1 appends its peer, the client
	xff += ", " + proxy1              // proxy2 appends its peer, proxy1
	gatewayXFF := xff + ", " + proxy2 // the gateway's Envoy appends its peer, proxy2
	if gatewayXFF != "56.5.6.7, 72.9.5.6, 98.1.2.3, 203.0.113.20" {
		t.Fatalf("example drifted from the docs: %q", gatewayXFF)
	}

	tests := []struct {
		name string
		cfg  Options
		want string
	}{
		// What Envoy itself resolves with xff_num_trusted_hops: 2 (Istio's
		// x-envoy-external-address 72.9.5.6).
		{name: "xff_trusted_hops 2", cfg: Options{Source: "xff", XFFTrustedHops: 2}, want: client},
		{name: "trusted_proxies instead of hops", cfg: Options{Source: "xff", TrustedProxies: []string{proxy1 + "/32", proxy2}}, want: client},
		{name: "too few hops trusts a proxy", cfg: Options{Source: "xff", XFFTrustedHops: 1}, want: proxy1},
		{name: "0 hops is the peer", cfg: Options{Source: "xff"}, want: proxy2},
		{name: "peer mode", cfg: Options{Source: "peer"}, want: proxy2},
		{name: "envoy_external_address", cfg: Options{Source: "envoy_external_address"}, want: client},
	}
	headers := map[string]string{
		"x-forwarded-for":          gatewayXFF,
		"x-envoy-external-address": client, // set by the gateway (external request)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustNew(t, tc.cfg).Resolve(proxy2+":40123", headers)
			if got.ClientIP() != tc.want || got.Fallback != "" {
				t.Fatalf("got %q (source %q, fallback %q), want %q", got.ClientIP(), got.Source, got.Fallback, tc.want)
			}
		})
	}

	// An attacker who reaches the gateway directly (bypassing proxy1 and proxy2)
	// and forges the same XFF: with hop counting Envoy and Gatehouse are both
	// fooled (hops assume the proxies cannot be bypassed); with trusted_proxies
	// Gatehouse is not.
	const attacker = "198.51.100.66"
	forgedHeaders := map[string]string{"x-forwarded-for": "56.5.6.7, 10.0.0.1, 98.1.2.3, " + attacker}
	byAddr := mustNew(t, Options{Source: "xff", TrustedProxies: []string{proxy1, proxy2}})
	if got := byAddr.Resolve(attacker, forgedHeaders); got.ClientIP() != attacker {
		t.Fatalf("trusted_proxies: forged chain resolved to %q, want the attacker %q", got.ClientIP(), attacker)
	}
}

func TestResultClientIP(t *testing.T) {
	if got := (Result{}).ClientIP(); got != "" {
		t.Fatalf("zero Result ClientIP() = %q, want empty", got)
	}
}

func TestXFFScannerBounded(t *testing.T) {
	// A walk over an all-trusted oversized header reads MaxXFFEntries+1 entries
	// at most, and allocates nothing per entry.
	r := mustNew(t, Options{Source: "xff", TrustedProxies: []string{"10.0.0.0/8"}})
	headers := map[string]string{"x-forwarded-for": strings.Repeat("10.9.9.9,", 50000) + "10.1.1.1"}
	allocs := testing.AllocsPerRun(20, func() {
		_ = r.Resolve("10.1.1.1", headers)
	})
	if allocs > 0 {
		t.Fatalf("Resolve allocated %.0f times per call on an oversized header, want 0", allocs)
	}
}

func mustNew(t testing.TB, cfg Options) *Resolver {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return r
}
