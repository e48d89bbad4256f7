package ipset

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		cidrs   []string
		wantErr string
	}{
		{name: "bad CIDR", cidrs: []string{"10.0.0.0/8", "10.0.0/8"}, wantErr: `entry 1 "10.0.0/8": not a CIDR`},
		{name: "prefix too long", cidrs: []string{"10.0.0.0/33"}, wantErr: `entry 0 "10.0.0.0/33": not a CIDR`},
		{name: "hostname", cidrs: []string{"example.com"}, wantErr: `entry 0 "example.com": not an IP address or CIDR`},
		{name: "empty entry", cidrs: []string{""}, wantErr: `entry 0 "": not an IP address or CIDR`},
		{name: "short mapped prefix", cidrs: []string{"::ffff:0.0.0.0/95"}, wantErr: "IPv4-mapped prefix shorter than /96"},
		{name: "prefix with zone", cidrs: []string{"fe80::%eth0/64"}, wantErr: "not a CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cidrs)
			if err == nil {
				t.Fatalf("New(%q) = %v, want error containing %q", tc.cidrs, s, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New(%q) error %q does not contain %q", tc.cidrs, err, tc.wantErr)
			}
		})
	}
}

func TestLen(t *testing.T) {
	s := mustSet(t, "10.0.0.0/8", "10.1.2.3/8", " 10.0.0.0/8 ", "::ffff:10.0.0.0/104", "192.0.2.1", "192.0.2.1/32", "2001:db8::/32", "2001:db8:0:1::/32")
	// All 10/8 spellings collapse, both host forms of 192.0.2.1 collapse, and
	// both 2001:db8::/32 spellings collapse.
	if got := s.Len(); got != 3 {
		t.Fatalf("Len() = %d, want 3", got)
	}
	var nilSet *Set
	if nilSet.Len() != 0 {
		t.Fatal("nil set Len() != 0")
	}
	if (&Set{}).Len() != 0 {
		t.Fatal("zero set Len() != 0")
	}
}

func TestContains(t *testing.T) {
	s := mustSet(t,
		"10.0.0.0/8",
		"192.168.1.0/24",
		"203.0.113.7",           // bare IPv4: a /32
		"2001:db8::/32",         // IPv6 network
		"2001:db8:ffff::1",      // bare IPv6: a /128 (inside the /32 anyway)
		"fd00::/8",              // ULA
		"::ffff:172.16.0.0/108", // IPv4-mapped: stored as 172.16.0.0/12
		"100.64.0.1/10",         // host bits set: masked to 100.64.0.0/10
	)
	tests := []struct {
		addr string
		want bool
	}{
		{"10.0.0.0", true},
		{"10.255.255.255", true},
		{"11.0.0.0", false},
		{"9.255.255.255", false},
		{"192.168.1.77", true},
		{"192.168.2.1", false},
		{"203.0.113.7", true},
		{"203.0.113.8", false},
		{"2001:db8::1", true},
		{"2001:db9::1", false},
		{"fd12:3456::1", true},
		{"fe80::1", false},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"172.32.0.0", false},
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"100.128.0.0", false},
		// IPv4-mapped addresses match IPv4 networks.
		{"::ffff:10.1.2.3", true},
		{"::ffff:11.1.2.3", false},
		{"::ffff:172.20.0.1", true},
		// Ports, brackets, zones and whitespace (ContainsString parses).
		{"10.1.2.3:8080", true},
		{"[2001:db8::1]:443", true},
		{"[::ffff:10.1.2.3]:443", true},
		{"[2001:db8::1]", true},
		{"fd00::1%eth0", true},
		{" 10.1.2.3 ", true},
		// Garbage is never contained.
		{"", false},
		{"unknown", false},
		{"10.1.2", false},
		{"10.1.2.3.4", false},
		{"010.1.2.3", false},
		{"10.0.0.0/8", false},
		{"_hidden", false},
		{strings.Repeat("1", 100), false},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			if got := s.ContainsString(tc.addr); got != tc.want {
				t.Fatalf("ContainsString(%q) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
}

func TestContainsEdges(t *testing.T) {
	var nilSet *Set
	if nilSet.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("nil set contains an address")
	}
	if (&Set{}).Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("zero set contains an address")
	}
	empty := mustSet(t)
	if empty.ContainsString("10.0.0.1") {
		t.Fatal("empty set contains an address")
	}
	all4 := mustSet(t, "0.0.0.0/0")
	if !all4.ContainsString("198.51.100.1") || !all4.ContainsString("::ffff:198.51.100.1") {
		t.Fatal("0.0.0.0/0 does not contain an IPv4 address")
	}
	if all4.ContainsString("2001:db8::1") {
		t.Fatal("0.0.0.0/0 contains an IPv6 address")
	}
	all6 := mustSet(t, "::/0")
	if !all6.ContainsString("2001:db8::1") {
		t.Fatal("::/0 does not contain an IPv6 address")
	}
	// IPv4-mapped addresses are IPv4: an IPv6 network does not hold them, the
	// IPv4-mapped range written as such does.
	if all6.ContainsString("::ffff:10.0.0.1") {
		t.Fatal("::/0 contains an IPv4-mapped address, which Gatehouse treats as IPv4")
	}
	if !mustSet(t, "::ffff:0:0/96").ContainsString("10.0.0.1") {
		t.Fatal("::ffff:0:0/96 (all of IPv4) does not contain 10.0.0.1")
	}
	if mustSet(t, "10.0.0.0/8").Contains(netip.Addr{}) {
		t.Fatal("the invalid address is contained")
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.9.8.7/8", "10.0.0.0/8"},
		{" 10.0.0.0/8\t", "10.0.0.0/8"},
		{"192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::1/32", "2001:db8::/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:10.1.2.3", "10.1.2.3/32"},
		{"::ffff:0:0/96", "0.0.0.0/0"},
		{"fe80::1%eth0", "fe80::1/128"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePrefix(tc.in)
			if err != nil {
				t.Fatalf("ParsePrefix(%q): %v", tc.in, err)
			}
			if p.String() != tc.want {
				t.Fatalf("ParsePrefix(%q) = %s, want %s", tc.in, p, tc.want)
			}
		})
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in, want string // want "" means not an address
	}{
		{"10.1.2.3", "10.1.2.3"},
		{" 10.1.2.3 ", "10.1.2.3"},
		{"10.1.2.3:8080", "10.1.2.3"},
		{"2001:db8::1", "2001:db8::1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"::ffff:10.1.2.3", "10.1.2.3"},
		{"[::ffff:10.1.2.3]:80", "10.1.2.3"},
		{"fe80::1%eth0", "fe80::1"},
		{"[fe80::1%eth0]:443", "fe80::1"},
		{"", ""},
		{"   ", ""},
		{"unknown", ""},
		{"_obfuscated", ""},
		{"example.com", ""},
		{"example.com:80", ""},
		{"10.1.2.3:http", ""},
		{"10.1.2.3:99999", ""},
		{"2001:db8::1:443:x", ""},
		{"[2001:db8::1", ""},
		{"2001:db8::1]", ""},
		{"010.1.2.3", ""},
		{"10.1.2.3, 10.1.2.4", ""},
		{"\"10.1.2.3\"", ""},
		{strings.Repeat("a", 65), ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			addr, ok := ParseAddr(tc.in)
			if tc.want == "" {
				if ok {
					t.Fatalf("ParseAddr(%q) = %s, want no address", tc.in, addr)
				}
				return
			}
			if !ok || addr.String() != tc.want {
				t.Fatalf("ParseAddr(%q) = %s, %v; want %s", tc.in, addr, ok, tc.want)
			}
			if addr.Is4In6() || addr.Zone() != "" {
				t.Fatalf("ParseAddr(%q) = %s is not canonical", tc.in, addr)
			}
		})
	}
}

func TestConcurrentContains(t *testing.T) {
	s := mustSet(t, "10.0.0.0/8", "2001:db8::/32")
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 1000 {
				if !s.ContainsString("10.1.2.3") || s.ContainsString("11.1.2.3") {
					t.Error("wrong answer under concurrency")
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func mustSet(t testing.TB, cidrs ...string) *Set {
	t.Helper()
	s, err := New(cidrs)
	if err != nil {
		t.Fatalf("New(%q): %v", cidrs, err)
	}
	return s
}

// cidrs returns n distinct networks: a mix of /16, /24 and /32 IPv4 and /48
// IPv6, as a large allow-list read from data would be.
func cidrs(n int) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		switch i % 4 {
		case 0:
			out = append(out, fmt.Sprintf("10.%d.0.0/16", i%256))
		case 1:
			out = append(out, fmt.Sprintf("172.%d.%d.0/24", 16+i%16, (i/16)%256))
		case 2:
			out = append(out, fmt.Sprintf("198.%d.%d.%d", 18+i%2, (i/2)%256, (i/512)%256))
		default:
			out = append(out, fmt.Sprintf("2001:db8:%x::/48", i%65536))
		}
	}
	return out
}

func BenchmarkContains(b *testing.B) {
	for _, n := range []int{10, 10000} {
		s := mustSet(b, cidrs(n)...)
		for _, probe := range []struct{ name, addr string }{
			{"hit_v4", "10.3.2.1"},
			{"miss_v4", "203.0.113.9"},
			{"miss_v6", "2001:db9::1"},
		} {
			addr := netip.MustParseAddr(probe.addr)
			b.Run(fmt.Sprintf("cidrs_%d/%s", n, probe.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = s.Contains(addr)
				}
			})
		}
	}
}

func BenchmarkContainsString(b *testing.B) {
	s := mustSet(b, cidrs(10000)...)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.ContainsString("203.0.113.9")
	}
}

func BenchmarkNew(b *testing.B) {
	list := cidrs(10000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(list); err != nil {
			b.Fatal(err)
		}
	}
}
