package test

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// newSigners returns one key per algorithm the provider accepts, and an
// outsider: a key nobody published, claiming the RSA key's kid.
func newSigners(t *testing.T) map[string]*testutil.Key {
	t.Helper()
	rs := testutil.NewKey(t, jwa.RS256, "rsa-1")
	return map[string]*testutil.Key{
		"RS256":    rs,
		"PS256":    testutil.NewKey(t, jwa.PS256, "ps-1"),
		"ES256":    testutil.NewKey(t, jwa.ES256, "ec-1"),
		"EdDSA":    testutil.NewKey(t, jwa.EdDSA, "ed-1"),
		"outsider": testutil.NewKey(t, jwa.RS256, "rsa-1"),
	}
}

// publicJWKS is the key set of every signer but the outsider.
func publicJWKS(t *testing.T, signers map[string]*testutil.Key) []byte {
	t.Helper()
	var keys []*testutil.Key
	for name, k := range signers {
		if name != "outsider" {
			keys = append(keys, k)
		}
	}
	return testutil.JWKS(t, keys...)
}

// TestHostileTokens sends each token through the real server, which fetches
// its keys from a real JWKS server on loopback, and checks the answer.
func TestHostileTokens(t *testing.T) {
	signers := newSigners(t)
	jwksBody := publicJWKS(t, signers)
	jwks := testutil.NewJWKSServer(t, jwksBody)
	attackerJWKS := testutil.JWKS(t, signers["outsider"].WithKid(t, "attacker-1"))
	// The attacker's key server, named in a jku header: it must never be asked.
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write(attackerJWKS)
	}))
	defer attacker.Close()

	g := startGatehouse(t, fmt.Sprintf(`jwt:
  providers:
    - name: corp
      issuer: %s
      audiences: [orders-api]
      jwks_uri: %s
`, issuer, jwks.URL), true)
	c := g.client(t)

	now := time.Now().Unix()
	claims := func(mod map[string]any) map[string]any {
		c := map[string]any{"iss": issuer, "aud": "orders-api", "sub": "alice", "iat": now, "nbf": now, "exp": now + 600}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	valid := signers["RS256"].Sign(t, claims(nil), nil)
	parts := strings.Split(valid, ".")

	// HS256 keyed with the RSA public key's PEM: the algorithm-confusion attack.
	pubDER, _ := x509.MarshalPKIXPublicKey(&signers["RS256"].Priv.(*rsa.PrivateKey).PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hsInput := testutil.B64JSON(map[string]any{"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}) + "." + testutil.B64JSON(claims(nil))
	mac := hmac.New(sha256.New, pubPEM)
	mac.Write([]byte(hsInput))
	confused := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	flipped := []byte(parts[2])
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}

	cases := []struct {
		name   string
		token  string
		where  string // "header" (default) or "query"
		status int
		reason string
	}{
		{"valid RS256", valid, "", 200, ""},
		{"valid PS256", signers["PS256"].Sign(t, claims(nil), nil), "", 200, ""},
		{"valid ES256", signers["ES256"].Sign(t, claims(nil), nil), "", 200, ""},
		{"valid EdDSA", signers["EdDSA"].Sign(t, claims(nil), nil), "", 200, ""},
		{"expired", signers["ES256"].Sign(t, claims(map[string]any{"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200}), nil), "", 401, "token_expired"},
		{"not yet valid", signers["ES256"].Sign(t, claims(map[string]any{"nbf": now + 3600}), nil), "", 401, "token_not_yet_valid"},
		{"wrong issuer", signers["ES256"].Sign(t, claims(map[string]any{"iss": "https://evil.example"}), nil), "", 401, "token_unknown_issuer"},
		{"wrong audience", signers["ES256"].Sign(t, claims(map[string]any{"aud": "billing-api"}), nil), "", 401, "token_bad_audience"},
		{"no audience", signers["ES256"].Sign(t, claims(map[string]any{"aud": nil}), nil), "", 401, "token_bad_audience"},
		{"tampered payload", parts[0] + "." + testutil.B64JSON(claims(map[string]any{"sub": "admin"})) + "." + parts[2], "", 401, "token_bad_signature"},
		{"bad signature", parts[0] + "." + parts[1] + "." + string(flipped), "", 401, "token_bad_signature"},
		{"alg none", testutil.B64JSON(map[string]any{"alg": "none", "kid": "rsa-1"}) + "." + testutil.B64JSON(claims(nil)) + ".", "", 401, "token_alg_not_allowed"},
		{"HS256 with the RSA public key", confused, "", 401, "token_alg_not_allowed"},
		{"unknown kid", signers["outsider"].WithKid(t, "nope-1").Sign(t, claims(nil), nil), "", 401, "token_unknown_key"},
		{"kid with path characters", signers["outsider"].WithKid(t, "../../../../etc/passwd").Sign(t, claims(nil), nil), "", 401, "token_unknown_key"},
		{"signed by an outsider with a known kid", signers["outsider"].Sign(t, claims(nil), nil), "", 401, "token_bad_signature"},
		{"jku pointing at another server", signers["outsider"].WithKid(t, "attacker-1").Sign(t, claims(nil), map[string]any{jws.JWKSetURLKey: attacker.URL}), "", 401, "token_unknown_key"},
		{"truncated in the payload", valid[:len(parts[0])+1+len(parts[1])/2], "", 401, "token_malformed"},
		{"garbage", "%%%garbage%%%", "", 401, "token_malformed"},
		{"oversize", signers["ES256"].Sign(t, claims(map[string]any{"pad": strings.Repeat("x", 9000)}), nil), "", 401, "token_too_large"},
		{"token in a query parameter when not configured", valid, "query", 401, "token_missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			headers := map[string]string{"authorization": "Bearer " + tc.token}
			path := "/orders"
			if tc.where == "query" {
				headers = nil
				path = "/orders?access_token=" + tc.token
			}
			d := decide(t, c, envoyRequest("198.51.100.7", "api.example.com", path, headers))
			if d.status != tc.status || d.reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q (%s)", d.status, d.reason, tc.status, tc.reason, d.body)
			}
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Fatalf("the jku server received %d requests; it must never be contacted", n)
	}
	if strings.Contains(g.settledLog(t), parts[2]) {
		t.Fatal("a token signature appeared in the log")
	}
}
