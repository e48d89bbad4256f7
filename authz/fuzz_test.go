package authz

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// FuzzCheck sends hostile request shapes through the whole handler with the
// embedded default policy and a trusted network that no fuzzed peer is in.
// Whatever arrives, Check answers a CheckResponse (never an error) and never
// allows: nothing in the request can forge trust.
//
// "Never a panic" cannot be seen from outside Check, which recovers every
// panic into an internal_error denial. So the fuzz watches below that safety
// net: the handler's logger fails the fuzz on any error record (the recover
// logs "panic in Check" at error level), and an internal_error answer fails
// it too, whatever produced it.
func FuzzCheck(f *testing.F) {
	f.Add("/orders?x=1", "application/json", `{"a": 1}`, "10.1.2.3, 198.51.100.7", "X-Forwarded-For", "198.51.100.7", "Bearer abc.def.ghi")
	f.Add("/%zz", "multipart/form-data; boundary=x", "--x\r\n", "", "x-envoy-external-address", "::ffff:198.51.100.7", "")
	f.Add("//admin/../x", "application/x-www-form-urlencoded", "a=%zz", "garbage", "", "[2001:db9::1]:80", "Bearer "+string(make([]byte, 100)))
	cfg := config.Default()
	cfg.Bypass.TrustedCIDRs = []string{"10.0.0.0/8"}
	// X-Forwarded-For is believed only behind a proxy in 192.0.2.0/24.
	cfg.ClientIP = config.ClientIP{Source: "xff", TrustedProxies: []string{"192.0.2.0/24"}}
	engine, err := policy.New(context.Background(), policy.Options{Rules: ptrTo(cfg.Rules())})
	if err != nil {
		f.Fatal(err)
	}
	resolver, err := clientip.New(cfg.ClientIP.Options())
	if err != nil {
		f.Fatal(err)
	}
	failures := &errorRecorder{}
	s, err := New(Options{Policy: engine, ClientIP: resolver, ParseBody: true, Logger: slog.New(failures)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path, contentType, body, xff, headerName, peer, authorization string) {
		if trustedPeer(peer) {
			return // a peer in 10.0.0.0/8 or behind 192.0.2.0/24 is trusted by construction
		}
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: peer}}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Path: path, Body: body,
				Headers: map[string]string{"content-type": contentType, "x-forwarded-for": xff, headerName: xff, "authorization": authorization},
			}},
		}}
		before := failures.count.Load()
		resp, err := s.Check(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("Check must always answer: %v", err)
		}
		if failures.count.Load() != before || resp.GetStatus().GetMessage() == ReasonInternal {
			t.Fatalf("Check failed internally (a recovered panic or an internal error): %s; response %v", failures.last(), resp)
		}
		if resp.GetStatus().GetCode() == 0 {
			t.Fatalf("allowed a request from untrusted peer %q: %v", peer, resp)
		}
	})
}

// errorRecorder is a slog.Handler that counts error records and keeps the
// last one, so a fuzz target sees what Check's recover only logs.
type errorRecorder struct {
	count atomic.Int64
	mu    sync.Mutex
	msg   string
}

func (r *errorRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (r *errorRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.msg = b.String()
	r.mu.Unlock()
	r.count.Add(1)
	return nil
}

func (r *errorRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *errorRecorder) WithGroup(string) slog.Handler      { return r }

func (r *errorRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msg
}

// trustedPeer reports whether peer parses to an address in 10.0.0.0/8 (the
// bypass) or 192.0.2.0/24 (the trusted proxies).
func trustedPeer(peer string) bool {
	r, _ := clientip.New(clientip.Options{Source: "peer"})
	addr := r.Resolve(peer, nil).Addr
	if !addr.IsValid() || !addr.Is4() {
		return false
	}
	a := addr.As4()
	return a[0] == 10 || (a[0] == 192 && a[1] == 0 && a[2] == 2)
}
