package forwardauth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// BenchmarkForwardAuth measures a warm-token check through the forward-auth
// HTTP endpoint (real loopback HTTP, real policy, resolver and verifier with
// the token in the verified cache) against "baseline", a no-op Go HTTP server
// answering 200, with the same client, in the same run. Compare as a ratio:
// `make bench` prints it (issue 10's target is at most 2.0x). "mapping_only"
// is the endpoint with a Checker that allows at once: what the HTTP mapping
// itself adds to the baseline, apart from Check. cpu-ns/op is the process CPU
// time (client and server both) per request.
func BenchmarkForwardAuth(b *testing.B) {
	s := newStack(b)
	token := "Bearer " + s.token(b, "alice", time.Hour)
	h := newHandler(b, Options{Checker: s.server, Mode: ModeTraefik})
	noop := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	allowAll := newHandler(b, Options{Checker: &recorder{resp: identityAllow("alice")}, Mode: ModeTraefik})
	headers := map[string]string{
		"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/orders/42?expand=items", "X-Forwarded-Host": "api.example.com",
		"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7", "Authorization": token,
		"User-Agent": "curl/8.5", "Accept": "*/*", "X-Request-Id": "3f1c",
	}
	for _, tc := range []struct {
		name    string
		handler http.Handler
	}{
		{"baseline", noop},
		{"mapping_only", allowAll},
		{"warm_token", h},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			client := srv.Client()
			req, err := http.NewRequest("GET", srv.URL+"/authz", nil)
			if err != nil {
				b.Fatal(err)
			}
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			do := func() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || (tc.name != "baseline" && resp.Header.Get("X-Jwt-Sub") != "alice") {
					b.Fatalf("status %d, x-jwt-sub %q: the check must allow", resp.StatusCode, resp.Header.Get("X-Jwt-Sub"))
				}
			}
			do() // warm: connection open, token verified and cached
			b.ReportAllocs()
			cpu0 := cpuTime()
			n := 0
			for b.Loop() {
				do()
				n++
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
		})
	}
}

// identityAllow is an OK CheckResponse setting x-jwt-sub, as a warm token's.
func identityAllow(sub string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{header("x-jwt-sub", sub, false)},
		}},
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
