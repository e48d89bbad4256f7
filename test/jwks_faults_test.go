package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// faultConfig is a provider that refreshes every second and gives up on a
// fetch after one, with a 64 KiB size limit, plus a trusted network for the
// bypass.
func faultConfig(jwksURL string) string {
	return fmt.Sprintf(`jwt:
  providers:
    - name: corp
      issuer: %s
      audiences: [orders-api]
      jwks_uri: %s
      refresh_interval: 1s
      min_refresh_interval: 1s
      fetch_timeout: 1s
      max_jwks_bytes: 65536
bypass:
  trusted_cidrs: [10.0.0.0/8]
`, issuer, jwksURL)
}

func claimsNow() map[string]any {
	now := time.Now().Unix()
	return map[string]any{"iss": issuer, "aud": "orders-api", "sub": "alice", "iat": now, "exp": now + 600}
}

// TestJWKSUnreachableAtStart: with the key server refusing connections from
// the start, the server is not ready (/readyz 503, gRPC health NOT_SERVING),
// token checks fail closed with keys_unavailable, and the trusted-IP bypass,
// which needs no key, still works.
func TestJWKSUnreachableAtStart(t *testing.T) {
	key := testutil.NewKey(t, jwa.ES256, "k1")
	g := startGatehouse(t, faultConfig("http://"+testutil.ClosedAddr(t)+"/jwks.json"), false)
	eventually(t, 10*time.Second, "a failed first fetch to be logged", func() bool {
		return strings.Contains(g.logText(), "jwks fetch failed")
	})
	if code, body := g.get("/readyz"); code != 503 || !strings.Contains(body, `"jwks_ready":false`) {
		t.Fatalf("/readyz = %d %s, want 503 with jwks_ready false", code, body)
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		if st := g.grpcHealth(t, svc); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("grpc health %q = %v, want NOT_SERVING", svc, st)
		}
	}
	c := g.client(t)
	token := key.Sign(t, claimsNow(), nil)
	cases := []struct {
		name, peer, token string
		allowed           bool
		status            int
		reason            string
	}{
		{"token from outside", "198.51.100.7", token, false, 401, "token_keys_unavailable"},
		{"no token from outside", "198.51.100.7", "", false, 401, "token_missing"},
		{"trusted network without a token", "10.1.2.3", "", true, 200, ""},
		{"trusted network with a token", "10.1.2.3", token, true, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			headers := map[string]string{}
			if tc.token != "" {
				headers["authorization"] = "Bearer " + tc.token
			}
			d := decide(t, c, envoyRequest(tc.peer, "api.example.com", "/orders", headers))
			if d.allowed != tc.allowed || d.status != tc.status || d.reason != tc.reason {
				t.Fatalf("got allowed=%v %d %q, want allowed=%v %d %q (%s)", d.allowed, d.status, d.reason, tc.allowed, tc.status, tc.reason, d.body)
			}
		})
	}
}

// TestJWKSFaultsKeepLastGoodKeys: once the keys are fetched, every way the
// key server can fail afterwards (unreachable, slow, 500, garbage, a set over
// max_jwks_bytes, an empty set) is refused: the last good keys stay, tokens
// they signed keep working, the server stays ready, and no check waits on
// the failing fetch for longer than fetch_timeout.
func TestJWKSFaultsKeepLastGoodKeys(t *testing.T) {
	key := testutil.NewKey(t, jwa.ES256, "k1")
	good := testutil.JWKS(t, key)
	jwks := testutil.NewJWKSServer(t, good)
	g := startGatehouse(t, faultConfig(jwks.URL), true)
	c := g.client(t)
	valid := envoyRequest("198.51.100.7", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + key.Sign(t, claimsNow(), nil)})
	// A token with a kid the server has not seen makes it refetch now
	// (unknown-kid refresh) instead of at the next tick.
	stranger := testutil.NewKey(t, jwa.ES256, "k-unknown")
	unknown := envoyRequest("198.51.100.7", "api.example.com", "/orders", map[string]string{"authorization": "Bearer " + stranger.Sign(t, claimsNow(), nil)})
	if d := decide(t, c, valid); !d.allowed {
		t.Fatalf("valid token before any fault: %+v", d)
	}

	oversize := fmt.Sprintf(`{"keys": %s, "padding": %q}`, string(good[strings.Index(string(good), "["):strings.LastIndex(string(good), "]")+1]), strings.Repeat("x", 70000))
	cases := []struct {
		name  string
		fault func()
		logs  []string // the failed fetch's error holds one of these
	}{
		{"unreachable", func() { jwks.SetHangUp(true) }, []string{"EOF", "connection reset"}},
		{"slow", func() { jwks.SetDelay(time.Minute) }, []string{"Timeout exceeded", "deadline exceeded"}},
		{"500", func() { jwks.SetStatus(http.StatusInternalServerError) }, []string{"status 500"}},
		{"garbage", func() { jwks.SetBody([]byte("<html>not a key set")) }, []string{"parse JWKS"}},
		{"oversize", func() { jwks.SetBody([]byte(oversize)) }, []string{"max_jwks_bytes"}},
		{"empty set", func() { jwks.SetBody([]byte(`{"keys": []}`)) }, []string{"no usable signature verification key"}},
	}
	// fetchFailures counts the logged fetch failures caused by one fault.
	fetchFailures := func(causes []string) int {
		n := 0
		for _, line := range strings.Split(g.logText(), "\n") {
			if !strings.Contains(line, "jwks fetch failed") {
				continue
			}
			for _, c := range causes {
				if strings.Contains(line, c) {
					n++
					break
				}
			}
		}
		return n
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			failures := fetchFailures(tc.logs)
			tc.fault()
			defer jwks.Reset(good)
			// The refetch an unknown kid triggers fails (bounded by
			// fetch_timeout when slow): the stranger is refused, not let in.
			eventually(t, 20*time.Second, "a failed fetch to be logged", func() bool {
				d := decide(t, c, unknown)
				if d.allowed {
					t.Fatalf("a token signed by an unknown key was allowed during %s", tc.name)
				}
				return fetchFailures(tc.logs) > failures
			})
			if d := decide(t, c, valid); !d.allowed {
				t.Fatalf("after a %s fetch the last good keys must still verify: %+v\n%s", tc.name, d, g.logText())
			}
			if code, body := g.get("/readyz"); code != 200 {
				t.Fatalf("/readyz = %d %s: a failed refresh must not make the server unready", code, body)
			}
		})
	}
}
