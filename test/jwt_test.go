package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// newJWKSServer serves the JWKS file (as it is now) on loopback.
func newJWKSServer(t *testing.T, file string) *testutil.JWKSServer {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.NewJWKSServer(t, b)
}

// keyPair generates a key with gatehousectl and returns the private key and
// JWKS paths.
func keyPair(t *testing.T, alg, kid string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	key, jwks := filepath.Join(dir, "key.json"), filepath.Join(dir, "jwks.json")
	if code, out, errOut := ctl(t, "jwks", "generate", "--alg", alg, "--kid", kid, "--out-private", key, "--out-jwks", jwks); code != 0 {
		t.Fatalf("jwks generate: %d %s %s", code, out, errOut)
	}
	return key, jwks
}

func mint(t *testing.T, key string, args ...string) string {
	t.Helper()
	code, out, errOut := ctl(t, append([]string{"token", "--key", key}, args...)...)
	if code != 0 {
		t.Fatalf("token: %d %s %s", code, out, errOut)
	}
	return strings.TrimSpace(out)
}

const issuer = "https://issuer.e2e.test"

func jwtConfig(jwksURL string) string {
	return fmt.Sprintf(`jwt:
  providers:
    - name: corp
      issuer: %s
      audiences: [orders-api]
      jwks_uri: %s
      claim_to_headers: [{claim: sub, header: x-jwt-sub}]
      payload_header: x-jwt-payload
`, issuer, jwksURL)
}

// TestJWTEndToEnd: tokens minted with gatehousectl, keys served over HTTP on
// loopback, decisions asked with gatehousectl check.
func TestJWTEndToEnd(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "e2e-1")
	jwks := newJWKSServer(t, jwksFile)
	g := startGatehouse(t, jwtConfig(jwks.URL), true)

	valid := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	expired := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--expired")
	otherAud := mint(t, key, "--iss", issuer, "--aud", "billing-api", "--sub", "alice", "--ttl", "10m")
	otherKey, _ := keyPair(t, "ES256", "e2e-1")
	forged := mint(t, otherKey, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")

	cases := []struct {
		name  string
		args  []string
		exit  int
		want  []string
		avoid []string
	}{
		{"no token", nil, 1, []string{"401", `Bearer realm="api.example.com"`}, []string{"invalid_token"}},
		{"valid token", []string{"--token", valid, "-H", "x-jwt-sub: mallory"}, 0, []string{"ALLOWED", "x-jwt-sub", "alice", "x-jwt-payload"}, []string{"mallory"}},
		{"expired token", []string{"--token", expired}, 1, []string{"401", `error="invalid_token"`, `error_description="expired"`}, nil},
		{"wrong audience", []string{"--token", otherAud}, 1, []string{"401", "bad_audience"}, nil},
		{"signed by another key", []string{"--token", forged}, 1, []string{"401", "bad_signature"}, nil},
		{"garbage token", []string{"--token", "not.a.jwt"}, 1, []string{"401", "malformed"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"check", "--addr", g.grpcAddr, "--host", "api.example.com", "--path", "/orders"}, tc.args...)
			code, out, errOut := ctl(t, args...)
			if code != tc.exit {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.exit, out, errOut)
			}
			if err := contains(out, tc.want...); err != nil {
				t.Fatal(err)
			}
			for _, a := range tc.avoid {
				if strings.Contains(out, a) {
					t.Errorf("output must not contain %q:\n%s", a, out)
				}
			}
		})
	}
	if log := g.settledLog(t); strings.Contains(log, valid) || strings.Contains(log, expired) {
		t.Fatal("a token appeared in the server log")
	}
}

// TestJWKSDownAtStart: not ready while the JWKS cannot be fetched, ready once
// it can.
func TestJWKSDownAtStart(t *testing.T) {
	key, jwksFile := keyPair(t, "RS256", "rsa-1")
	jwks := newJWKSServer(t, jwksFile)
	jwks.SetStatus(http.StatusServiceUnavailable)
	g := startGatehouse(t, jwtConfig(jwks.URL), false)
	eventually(t, 10*time.Second, "a failed JWKS fetch", func() bool { return jwks.Hits() > 0 })
	if code, body := g.get("/readyz"); code != 503 || !strings.Contains(body, `"jwks_ready":false`) {
		t.Fatalf("/readyz with JWKS down = %d %s", code, body)
	}
	jwks.SetStatus(http.StatusOK)
	eventually(t, 60*time.Second, "ready after the JWKS came up", func() bool {
		code, _ := g.get("/readyz")
		return code == 200
	})
	token := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "bob", "--ttl", "5m")
	if code, out, _ := ctl(t, "check", "--addr", g.grpcAddr, "--token", token); code != 0 {
		t.Fatalf("valid token after recovery: exit %d\n%s", code, out)
	}
}
