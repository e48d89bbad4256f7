package testutil

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Key is a signing key with the kid and algorithm it signs with and its
// public JWK (kid, alg and use=sig set).
type Key struct {
	Kid  string
	Alg  jwa.SignatureAlgorithm
	Priv any
	Pub  jwk.Key
}

// NewKey generates a fresh key for alg: RSA 2048 for RS* and PS*, the
// matching NIST curve for ES256/ES384/ES512, Ed25519 for EdDSA.
func NewKey(t testing.TB, alg jwa.SignatureAlgorithm, kid string) *Key {
	t.Helper()
	var priv, pub any
	switch alg {
	case jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case jwa.ES256, jwa.ES384, jwa.ES512:
		curve := map[jwa.SignatureAlgorithm]elliptic.Curve{jwa.ES256: elliptic.P256(), jwa.ES384: elliptic.P384(), jwa.ES512: elliptic.P521()}[alg]
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case jwa.EdDSA:
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, p
	default:
		t.Fatalf("testutil.NewKey: unsupported algorithm %s", alg)
	}
	return KeyFrom(t, alg, kid, priv, pub)
}

// KeyFrom wraps an existing key pair, e.g. a second kid on the same key.
func KeyFrom(t testing.TB, alg jwa.SignatureAlgorithm, kid string, priv, pub any) *Key {
	t.Helper()
	k, err := jwk.FromRaw(pub)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: "sig"} {
		if err := k.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	return &Key{Kid: kid, Alg: alg, Priv: priv, Pub: k}
}

// JWKS renders a key set holding the public halves of keys.
func JWKS(t testing.TB, keys ...*Key) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.Pub); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sign signs claims with k. The protected header carries kid (k.Kid) and
// typ JWT; headers adds or overrides fields, and a nil value removes one
// (Sign(t, k, claims, map[string]any{"kid": nil}) signs without a kid).
func (k *Key) Sign(t testing.TB, claims map[string]any, headers map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]any{jws.KeyIDKey: k.Kid, jws.TypeKey: "JWT"}
	for name, v := range headers {
		fields[name] = v
	}
	hdr := jws.NewHeaders()
	for name, v := range fields {
		if v == nil {
			continue
		}
		if err := hdr.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(k.Alg, k.Priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// B64JSON is v as JSON in unpadded base64url, the encoding of a JWT's header
// and payload: for assembling forged tokens by hand.
func B64JSON(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// WithKid returns the same key pair under another kid: a forger's key
// claiming a trusted kid, or a key listed twice.
func (k *Key) WithKid(t testing.TB, kid string) *Key {
	t.Helper()
	pub, err := k.Pub.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	return &Key{Kid: kid, Alg: k.Alg, Priv: k.Priv, Pub: pub}
}
