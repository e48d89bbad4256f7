package test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// signer is a private key with the kid and alg it signs with.
type signer struct {
	kid string
	alg jwa.SignatureAlgorithm
	key any
}

func newSigners(t *testing.T) map[string]signer {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	psKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	outsider, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]signer{
		"RS256":    {"rsa-1", jwa.RS256, rsaKey},
		"PS256":    {"ps-1", jwa.PS256, psKey},
		"ES256":    {"ec-1", jwa.ES256, ecKey},
		"EdDSA":    {"ed-1", jwa.EdDSA, edKey},
		"outsider": {"rsa-1", jwa.RS256, outsider},
	}
}

// publicJWKS is the key set of every signer but the outsider.
func publicJWKS(t *testing.T, signers map[string]signer) []byte {
	t.Helper()
	set := jwk.NewSet()
	for name, s := range signers {
		if name == "outsider" {
			continue
		}
		k, err := jwk.FromRaw(s.key)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		_ = pub.Set(jwk.KeyIDKey, s.kid)
		_ = pub.Set(jwk.AlgorithmKey, s.alg)
		_ = set.AddKey(pub)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sign(t *testing.T, s signer, claims map[string]any, extraHeaders map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, s.kid)
	_ = hdr.Set(jws.TypeKey, "JWT")
	for k, v := range extraHeaders {
		if err := hdr.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestHostileTokens sends each token through the real server, which fetches
// its keys from a real JWKS server on loopback, and checks the answer.
func TestHostileTokens(t *testing.T) {
	signers := newSigners(t)
	jwksBody := publicJWKS(t, signers)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwksBody)
	}))
	defer jwks.Close()
	// The attacker's key server, named in a jku header: it must never be asked.
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write(publicJWKS(t, map[string]signer{"x": {"attacker-1", jwa.RS256, signers["outsider"].key}}))
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
	valid := sign(t, signers["RS256"], claims(nil), nil)
	parts := strings.Split(valid, ".")

	// HS256 keyed with the RSA public key's PEM: the algorithm-confusion attack.
	pubDER, _ := x509.MarshalPKIXPublicKey(&signers["RS256"].key.(*rsa.PrivateKey).PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hsInput := b64(map[string]any{"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}) + "." + b64(claims(nil))
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
		{"valid PS256", sign(t, signers["PS256"], claims(nil), nil), "", 200, ""},
		{"valid ES256", sign(t, signers["ES256"], claims(nil), nil), "", 200, ""},
		{"valid EdDSA", sign(t, signers["EdDSA"], claims(nil), nil), "", 200, ""},
		{"expired", sign(t, signers["ES256"], claims(map[string]any{"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200}), nil), "", 401, "token_expired"},
		{"not yet valid", sign(t, signers["ES256"], claims(map[string]any{"nbf": now + 3600}), nil), "", 401, "token_not_yet_valid"},
		{"wrong issuer", sign(t, signers["ES256"], claims(map[string]any{"iss": "https://evil.example"}), nil), "", 401, "token_unknown_issuer"},
		{"wrong audience", sign(t, signers["ES256"], claims(map[string]any{"aud": "billing-api"}), nil), "", 401, "token_bad_audience"},
		{"no audience", sign(t, signers["ES256"], claims(map[string]any{"aud": nil}), nil), "", 401, "token_bad_audience"},
		{"tampered payload", parts[0] + "." + b64(claims(map[string]any{"sub": "admin"})) + "." + parts[2], "", 401, "token_bad_signature"},
		{"bad signature", parts[0] + "." + parts[1] + "." + string(flipped), "", 401, "token_bad_signature"},
		{"alg none", b64(map[string]any{"alg": "none", "kid": "rsa-1"}) + "." + b64(claims(nil)) + ".", "", 401, "token_alg_not_allowed"},
		{"HS256 with the RSA public key", confused, "", 401, "token_alg_not_allowed"},
		{"unknown kid", sign(t, signer{"nope-1", jwa.RS256, signers["outsider"].key}, claims(nil), nil), "", 401, "token_unknown_key"},
		{"kid with path characters", sign(t, signer{"../../../../etc/passwd", jwa.RS256, signers["outsider"].key}, claims(nil), nil), "", 401, "token_unknown_key"},
		{"signed by an outsider with a known kid", sign(t, signers["outsider"], claims(nil), nil), "", 401, "token_bad_signature"},
		{"jku pointing at another server", sign(t, signer{"attacker-1", jwa.RS256, signers["outsider"].key}, claims(nil), map[string]any{jws.JWKSetURLKey: attacker.URL}), "", 401, "token_unknown_key"},
		{"truncated in the payload", valid[:len(parts[0])+1+len(parts[1])/2], "", 401, "token_malformed"},
		{"garbage", "%%%garbage%%%", "", 401, "token_malformed"},
		{"oversize", sign(t, signers["ES256"], claims(map[string]any{"pad": strings.Repeat("x", 9000)}), nil), "", 401, "token_too_large"},
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
	if strings.Contains(g.logText(), parts[2]) {
		t.Fatal("a token signature appeared in the log")
	}
}
