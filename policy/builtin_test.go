package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

func TestCIDRContains(t *testing.T) {
	// Strict built-in errors, so a bad list is an evaluation error rather
	// than an undefined decision (both deny; TestEvalFailures covers the
	// default).
	arrays, _ := newTestEngine(t, map[string]string{
		"policy.rego": "package envoy.authz\n\nallow := gatehouse.cidr_contains(input.cidrs, input.ip)\n",
	}, Options{StrictBuiltinErrors: true})
	sets, _ := newTestEngine(t, map[string]string{
		"policy.rego": "package envoy.authz\n\nallow := gatehouse.cidr_contains({c | some c in input.cidrs}, input.ip)\n",
	}, Options{StrictBuiltinErrors: true})
	v4v6 := []any{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"}
	tests := []struct {
		name   string
		cidrs  []any
		ip     any
		want   bool
		reason string
	}{
		{name: "v4 in range", cidrs: v4v6, ip: "10.1.2.3", want: true},
		{name: "v4 outside", cidrs: v4v6, ip: "11.1.2.3", want: false},
		{name: "bare address", cidrs: v4v6, ip: "192.0.2.7", want: true},
		{name: "bare address neighbour", cidrs: v4v6, ip: "192.0.2.8", want: false},
		{name: "v6 in range", cidrs: v4v6, ip: "2001:db8:1::5", want: true},
		{name: "v6 outside", cidrs: v4v6, ip: "2001:db9::1", want: false},
		{name: "v4-mapped v6 address", cidrs: v4v6, ip: "::ffff:10.9.8.7", want: true},
		{name: "v4-mapped v6 prefix", cidrs: []any{"::ffff:10.0.0.0/104"}, ip: "10.200.0.1", want: true},
		{name: "garbage address", cidrs: v4v6, ip: "not-an-ip", want: false},
		{name: "empty address", cidrs: v4v6, ip: "", want: false},
		{name: "empty list", cidrs: []any{}, ip: "10.0.0.1", want: false},
		{name: "bad cidr fails closed", cidrs: []any{"10.0.0.0/8", "10.0.0.0/33"}, ip: "10.0.0.1", reason: ReasonError},
		{name: "garbage entry fails closed", cidrs: []any{"corp-network"}, ip: "10.0.0.1", reason: ReasonError},
		{name: "non-string entry", cidrs: []any{"10.0.0.0/8", 7}, ip: "10.0.0.1", reason: ReasonError},
		{name: "non-string ip", cidrs: v4v6, ip: 10, reason: ReasonError},
	}
	for _, tc := range tests {
		for kind, e := range map[string]*Engine{"array": arrays, "set": sets} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				b, err := json.Marshal(map[string]any{"cidrs": tc.cidrs, "ip": tc.ip})
				if err != nil {
					t.Fatal(err)
				}
				d, err := e.Eval(context.Background(), mustInput(t, string(b)))
				if reason := evalReason(t, err); reason != tc.reason {
					t.Fatalf("reason = %q (err %v), want %q", reason, err, tc.reason)
				}
				if err == nil && d.Allowed != tc.want {
					t.Errorf("Allowed = %v, want %v", d.Allowed, tc.want)
				}
			})
		}
	}

	t.Run("literal of the wrong type is a compile error", func(t *testing.T) {
		dir := t.TempDir()
		testutil.WriteFiles(t, dir, map[string]string{
			"policy.rego": "package envoy.authz\n\nallow := gatehouse.cidr_contains([1, 2], input.ip)\n",
		})
		_, err := New(context.Background(), Options{Paths: []string{dir}})
		if err == nil {
			t.Fatal("New succeeded")
		}
		mustContain(t, err.Error(), "policy.rego:3", "rego_type_error", "gatehouse.cidr_contains")
	})
}

// cidrFiles is a policy bypassing a trusted list of n /24 networks from data,
// the way the default policy reads data.gatehouse.config.bypass.trusted_cidrs.
func cidrFiles(tb testing.TB, n int) map[string]string {
	tb.Helper()
	cidrs := make([]string, n)
	for i := range cidrs {
		cidrs[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	b, err := json.Marshal(map[string]any{"trusted_cidrs": cidrs})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]string{
		"policy.rego": `package envoy.authz

allow if gatehouse.cidr_contains(data.net.trusted_cidrs, input.client_ip)
`,
		"net/data.json": string(b),
	}
}

func TestCIDRCompiledOncePerRevision(t *testing.T) {
	e, _ := newTestEngine(t, cidrFiles(t, 10000), Options{})
	ctx := context.Background()
	hit := mustInput(t, `{"client_ip": "10.39.15.1"}`)
	miss := mustInput(t, `{"client_ip": "192.0.2.1"}`)
	for range 50 {
		if d, err := e.Eval(ctx, hit); err != nil || !d.Allowed {
			t.Fatalf("hit: %+v, %v", d, err)
		}
		if _, err := e.Eval(ctx, miss); evalReason(t, err) != ReasonUndefined {
			t.Fatalf("miss: %v", err)
		}
	}
	// Every miss would add an entry (the bound is far above 100 calls), so a
	// single entry means one compilation. That the hit is by identity, not by
	// comparing 10,000 strings, shows in BenchmarkCIDRContains: the 10 and
	// 10,000 cases cost the same.
	rev := e.current.Load()
	if n := rev.cidrs.Len(); n != 1 {
		t.Errorf("cache holds %d sets, want 1: the list was compiled more than once", n)
	}

	// An unchanged policy is not rebuilt, so its compiled sets survive a reload.
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if e.current.Load() != rev {
		t.Error("an unchanged policy was rebuilt")
	}
}

func TestCIDRCacheEqualValues(t *testing.T) {
	// A list rebuilt per evaluation is a new value each time; equal content
	// must still share one compiled set.
	e, _ := newTestEngine(t, map[string]string{
		"policy.rego": `package envoy.authz

allow if gatehouse.cidr_contains([c | some c in data.net.trusted_cidrs], input.client_ip)
`,
		"net/data.json": `{"trusted_cidrs": ["10.0.0.0/8", "172.16.0.0/12"]}`,
	}, Options{})
	for range 20 {
		if d, err := e.Eval(context.Background(), mustInput(t, `{"client_ip": "172.16.3.4"}`)); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	}
	if n := e.current.Load().cidrs.Len(); n != 1 {
		t.Errorf("cache holds %d sets, want 1", n)
	}
}
