package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

const (
	corpIssuer = "https://corp.example.com"
	webIssuer  = "https://web.example.com"
)

// hostileFixture is a verifier with two providers sharing one JWKS server:
// corp reads the Authorization header only, web reads a query parameter and
// a cookie only.
type hostileFixture struct {
	v                *Verifier
	jwks             *jwksServer
	rsa, pss, ec, ed *testKey
	other            *testKey // not in the JWKS
	jkuHits          *atomic.Int64
	jkuURL           string
}

func newHostileFixture(t *testing.T) *hostileFixture {
	f := &hostileFixture{
		rsa:   newRSAKey(t, "rsa-1", jwa.RS256),
		pss:   newRSAKey(t, "pss-1", jwa.PS256),
		ec:    newECKey(t, "ec-1"),
		ed:    newEdKey(t, "ed-1"),
		other: newRSAKey(t, "rsa-1", jwa.RS256), // same kid, different key
	}
	f.jwks = newJWKSServer(t, jwksJSON(t, f.rsa, f.pss, f.ec, f.ed))
	f.jkuHits = &atomic.Int64{}
	jku := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.jkuHits.Add(1)
		_, _ = w.Write(jwksJSON(t, f.other))
	}))
	t.Cleanup(jku.Close)
	f.jkuURL = jku.URL + "/evil.json"

	f.v = newVerifier(t, Options{Providers: []Provider{
		{Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSURI: f.jwks.uri()},
		{
			Name: "web", Issuer: webIssuer, AllowAnyAudience: true, JWKSURI: f.jwks.uri(),
			FromParams: []string{"access_token"}, FromCookies: []string{"session"},
		},
	}})
	waitReady(t, f.v)
	return f
}

func TestHostileTokens(t *testing.T) {
	f := newHostileFixture(t)
	now := time.Now()
	good := func() map[string]any { return claimsFor(corpIssuer, "api", now) }
	with := func(edit func(c map[string]any)) map[string]any {
		c := good()
		edit(c)
		return c
	}
	valid := sign(t, f.rsa, good(), nil)
	parts := strings.Split(valid, ".")

	rsaPublicDER, err := x509.MarshalPKIXPublicKey(&f.rsa.Priv.(*rsa.PrivateKey).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPublicDER})
	hs256 := func(secret []byte) string {
		unsigned := rawToken(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, good(), nil)
		unsigned = strings.TrimSuffix(unsigned, ".")
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(unsigned))
		return unsigned + "." + b64.EncodeToString(mac.Sum(nil))
	}
	flip := func(s string) string { // change the first character, keeping valid base64url
		if s[0] == 'A' {
			return "B" + s[1:]
		}
		return "A" + s[1:]
	}

	cases := []struct {
		name string
		req  Request
		want string // "" valid, "nil" not presented, else error code
	}{
		{"valid RS256", bearer(valid), ""},
		{"valid PS256", bearer(sign(t, f.pss, good(), nil)), ""},
		{"valid ES256", bearer(sign(t, f.ec, good(), nil)), ""},
		{"valid EdDSA", bearer(sign(t, f.ed, good(), nil)), ""},
		{"bearer scheme case-insensitive", Request{Headers: map[string]string{"authorization": "bEaReR " + valid}}, ""},
		{"audience array", bearer(sign(t, f.ec, with(func(c map[string]any) { c["aud"] = []string{"x", "api"} }), nil)), ""},
		{"expired", bearer(sign(t, f.ec, with(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() }), nil)), ErrExpired},
		{"expired within skew is valid", bearer(sign(t, f.ec, with(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() }), nil)), ""},
		{"no exp", bearer(sign(t, f.ec, with(func(c map[string]any) { delete(c, "exp") }), nil)), ErrMalformed},
		{"exp not a number", bearer(sign(t, f.ec, with(func(c map[string]any) { c["exp"] = "tomorrow" }), nil)), ErrMalformed},
		{"not yet valid", bearer(sign(t, f.ec, with(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }), nil)), ErrNotYetValid},
		{"issued in future", bearer(sign(t, f.ec, with(func(c map[string]any) { c["iat"] = now.Add(5 * time.Minute).Unix() }), nil)), ErrIssuedInFuture},
		{"wrong issuer", bearer(sign(t, f.ec, with(func(c map[string]any) { c["iss"] = "https://evil.example.com" }), nil)), ErrUnknownIssuer},
		{"issuer differs by trailing slash", bearer(sign(t, f.ec, with(func(c map[string]any) { c["iss"] = corpIssuer + "/" }), nil)), ErrUnknownIssuer},
		{"no iss", bearer(sign(t, f.ec, with(func(c map[string]any) { delete(c, "iss") }), nil)), ErrBadIssuer},
		{"wrong audience", bearer(sign(t, f.ec, with(func(c map[string]any) { c["aud"] = "other" }), nil)), ErrBadAudience},
		{"no aud claim", bearer(sign(t, f.ec, with(func(c map[string]any) { delete(c, "aud") }), nil)), ErrBadAudience},
		{"tampered payload", bearer(parts[0] + "." + b64.EncodeToString([]byte(`{"iss":"`+corpIssuer+`","aud":"api","sub":"admin","exp":9999999999}`)) + "." + parts[2]), ErrBadSignature},
		{"bad signature", bearer(parts[0] + "." + parts[1] + "." + flip(parts[2])), ErrBadSignature},
		{"signed by another key with a known kid", bearer(sign(t, f.other, good(), nil)), ErrBadSignature},
		{"alg none", bearer(rawToken(t, map[string]any{"alg": "none", "kid": "rsa-1"}, good(), nil)), ErrAlgNotAllowed},
		{"alg None", bearer(rawToken(t, map[string]any{"alg": "None"}, good(), nil)), ErrAlgNotAllowed},
		{"HS256 with RSA public key PEM as secret", bearer(hs256(rsaPublicPEM)), ErrAlgNotAllowed},
		{"HS256 with RSA public key DER as secret", bearer(hs256(rsaPublicDER)), ErrAlgNotAllowed},
		{"alg mismatch with key alg", bearer(sign(t, &testKey{Kid: "rsa-1", Alg: jwa.PS256, Priv: f.rsa.Priv}, good(), nil)), ErrAlgNotAllowed},
		{"alg incompatible with key type", bearer(sign(t, &testKey{Kid: "ec-1", Alg: jwa.ES384, Priv: newECKeyP384(t)}, good(), nil)), ErrAlgNotAllowed},
		{"unknown kid", bearer(sign(t, f.ec, good(), map[string]any{"kid": "nope"})), ErrUnknownKey},
		{"kid with path characters", bearer(sign(t, f.ec, good(), map[string]any{"kid": "../../etc/passwd"})), ErrUnknownKey},
		{"kid URL", bearer(sign(t, f.ec, good(), map[string]any{"kid": "http://127.0.0.1:1/x"})), ErrUnknownKey},
		{"no kid, exactly one key usable for ES256", bearer(sign(t, f.ec, good(), map[string]any{"kid": nil})), ""},
		{"no kid, one of two RSA keys usable for RS256 (other is PS256)", bearer(sign(t, f.rsa, good(), map[string]any{"kid": nil})), ""},
		{"jku header is ignored", bearer(sign(t, f.other, good(), map[string]any{"kid": "evil", "jku": f.jkuURL})), ErrUnknownKey},
		{"x5u and jwk headers are ignored", bearer(sign(t, f.other, good(), map[string]any{"x5u": f.jkuURL, "jwk": f.other.Pub})), ErrBadSignature},
		{"crit header", bearer(sign(t, f.ec, good(), map[string]any{"crit": []string{"exp"}})), ErrMalformed},
		{"truncated (two segments)", bearer(parts[0] + "." + parts[1]), ErrMalformed},
		{"truncated signature", bearer(valid[:len(valid)-10]), ErrBadSignature},
		{"truncated mid-payload", bearer(valid[:len(parts[0])+20]), ErrMalformed},
		{"garbage", bearer("not-a-token"), ErrMalformed},
		{"garbage with dots", bearer("a.b.c"), ErrMalformed},
		{"four segments", bearer(valid + ".x"), ErrMalformed},
		{"JSON serialization", bearer(`{"payload":"x","signatures":[]}`), ErrMalformed},
		{"padded base64", bearer(parts[0] + "=." + parts[1] + "." + parts[2]), ErrMalformed},
		{"duplicate alg header", bearer(strings.Replace(valid, parts[0], b64.EncodeToString([]byte(`{"alg":"RS256","alg":"none","kid":"rsa-1"}`)), 1)), ErrMalformed},
		{"duplicate claim", bearer(parts[0] + "." + b64.EncodeToString([]byte(`{"iss":"a","iss":"b"}`)) + "." + parts[2]), ErrMalformed},
		{"claims not an object", bearer(parts[0] + "." + b64.EncodeToString([]byte(`[1]`)) + "." + parts[2]), ErrMalformed},
		{"header field flood", bearer(rawToken(t, manyFields(20), good(), []byte("x"))), ErrMalformed},
		{"oversize header", bearer(rawToken(t, map[string]any{"alg": "RS256", "x": strings.Repeat("a", 2000)}, good(), []byte("x"))), ErrMalformed},
		{"oversize token", bearer(sign(t, f.ec, with(func(c map[string]any) { c["pad"] = strings.Repeat("x", 9000) }), nil)), ErrTooLarge},
		{"two bearer tokens", Request{Headers: map[string]string{"authorization": "Bearer " + valid + ", Bearer " + valid}}, ErrMalformed},
		// A header holding a bearer credential and anything else is two
		// credentials, whatever the separator: an upstream may read the other.
		{"basic then bearer", Request{Headers: map[string]string{"authorization": "Basic dXNlcjpwdw==, Bearer " + valid}}, ErrMalformed},
		{"bearer then bearer-tab", Request{Headers: map[string]string{"authorization": "Bearer " + valid + ",Bearer\t" + parts[0] + ".x.y"}}, ErrMalformed},
		{"bearer-tab then bearer", Request{Headers: map[string]string{"authorization": "bearer\tforged,Bearer " + valid}}, ErrMalformed},
		{"bearer then a bare scheme", Request{Headers: map[string]string{"authorization": "Bearer " + valid + ", BEARER"}}, ErrMalformed},
		{"bearer and an empty element", Request{Headers: map[string]string{"authorization": "Bearer " + valid + ", "}}, ""},
		{"bearer-tab alone is no bearer token", Request{Headers: map[string]string{"authorization": "Bearer\t" + valid}}, "nil"},
		{"two basic credentials", Request{Headers: map[string]string{"authorization": "Basic a, Basic b"}}, "nil"},
		{"basic auth only", Request{Headers: map[string]string{"authorization": "Basic dXNlcjpwdw=="}}, "nil"},
		{"empty bearer", Request{Headers: map[string]string{"authorization": "Bearer "}}, "nil"},
		{"no token", Request{Headers: map[string]string{"x-other": "y"}}, "nil"},
		{"corp token in query param (corp reads headers only)", Request{Query: map[string][]string{"access_token": {valid}}}, "nil"},
		{"corp token in cookie", Request{Headers: map[string]string{"cookie": "session=" + valid}}, "nil"},
		{"web token via configured param", Request{Query: map[string][]string{"access_token": {sign(t, f.ec, claimsFor(webIssuer, "any", now), nil)}}}, ""},
		{"web token via configured cookie", Request{Headers: map[string]string{"cookie": "a=b; session=" + sign(t, f.ed, claimsFor(webIssuer, "any", now), nil) + "; c=d"}}, ""},
		{"web token in authorization header (web reads no headers)", bearer(sign(t, f.ec, claimsFor(webIssuer, "any", now), nil)), "nil"},
		{"repeated query parameter", Request{Query: map[string][]string{"access_token": {valid, valid}}}, ErrMalformed},
		{"garbage in configured param", Request{Query: map[string][]string{"access_token": {"garbage"}}}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := f.v.Verify(context.Background(), tc.req)
			check(t, res, tc.want)
			if res != nil && strings.Contains(res.Detail, valid) {
				t.Fatalf("Detail contains the token: %q", res.Detail)
			}
		})
	}

	if n := f.jkuHits.Load(); n != 0 {
		t.Fatalf("jku/x5u server received %d requests, want 0", n)
	}
	for _, p := range f.jwks.requestedPaths() {
		if p != "/jwks.json" {
			t.Fatalf("JWKS server was asked for %q: kid or header leaked into a URL", p)
		}
	}
	// Each provider fetched once at start; all the unknown kids above share
	// corp's one rate-limited refetch.
	if n := f.jwks.hits.Load(); n > 3 {
		t.Fatalf("JWKS server hit %d times, want <= 3 (2 starts + one unknown-kid refetch)", n)
	}
}

func newECKeyP384(t *testing.T) any {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func manyFields(n int) map[string]any {
	h := map[string]any{"alg": "RS256"}
	for i := range n {
		h["f"+strings.Repeat("x", i)] = i
	}
	return h
}

func TestZeroProviders(t *testing.T) {
	v := newVerifier(t, Options{})
	if !v.Ready() {
		t.Fatal("zero providers: want Ready")
	}
	check(t, v.Verify(context.Background(), bearer("a.b.c")), "nil")
	if h := v.IdentityHeaders(); len(h) != 0 {
		t.Fatalf("IdentityHeaders = %v", h)
	}
}

// TestOneTokenPerRequest: a second, different token in another location makes
// the request malformed, so a forged token cannot ride along unverified next
// to a valid one; the same token in two locations is fine.
func TestOneTokenPerRequest(t *testing.T) {
	f := newHostileFixture(t)
	now := time.Now()
	corp := sign(t, f.rsa, claimsFor(corpIssuer, "api", now), nil)
	web := sign(t, f.rsa, claimsFor(webIssuer, "anything", now), nil)
	forgedWeb := sign(t, f.other, claimsFor(webIssuer, "anything", now), nil)
	cases := []struct {
		name string
		req  Request
		want string
	}{
		{"valid corp header plus forged web param", Request{
			Headers: map[string]string{"authorization": "Bearer " + corp},
			Query:   map[string][]string{"access_token": {forgedWeb}},
		}, ErrMalformed},
		{"forged header plus valid web cookie", Request{
			Headers: map[string]string{"authorization": "Bearer " + forgedWeb, "cookie": "session=" + web},
		}, ErrMalformed},
		{"same web token in param and cookie", Request{
			Headers: map[string]string{"cookie": "session=" + web},
			Query:   map[string][]string{"access_token": {web}},
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := f.v.Verify(context.Background(), tc.req)
			if res == nil {
				t.Fatal("no result")
			}
			if tc.want == "" && !res.Valid || res.Error != tc.want {
				t.Fatalf("got valid=%v error=%q (%s), want error %q", res.Valid, res.Error, res.Detail, tc.want)
			}
		})
	}
}

// TestTokenWithoutKidTriesEachCandidate: kid is optional (RFC 7515), so a
// token without one is tried against every key usable for its alg, as
// Envoy's jwt_authn does, bounded by maxKidlessCandidates; the real reason
// (expired, bad audience) is reported instead of unknown_key.
func TestTokenWithoutKidTriesEachCandidate(t *testing.T) {
	keys := make([]*testKey, maxKidlessCandidates+2)
	for i := range keys {
		keys[i] = newECKey(t, fmt.Sprintf("ec-%d", i))
	}
	rsa := newRSAKey(t, "rsa", jwa.RS256)
	outsider := newECKey(t, "ec-0") // not in any set
	now := time.Now()
	good := func() map[string]any { return claimsFor(corpIssuer, "api", now) }
	with := func(edit func(c map[string]any)) map[string]any {
		c := good()
		edit(c)
		return c
	}
	noKid := map[string]any{"kid": nil}

	cases := []struct {
		name       string
		set        []*testKey
		signer     *testKey
		claims     map[string]any
		want       string
		wantDetail string
	}{
		{"second of three keys", []*testKey{keys[0], keys[1], keys[2], rsa}, keys[1], good(), "", ""},
		{"last of three keys", []*testKey{keys[0], keys[1], keys[2], rsa}, keys[2], good(), "", ""},
		{"expired, signed by the second key", []*testKey{keys[0], keys[1], rsa}, keys[1],
			with(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() }), ErrExpired, "expired at"},
		{"wrong audience, signed by the second key", []*testKey{keys[0], keys[1]}, keys[1],
			with(func(c map[string]any) { c["aud"] = "other" }), ErrBadAudience, ""},
		{"signed by none of the keys", []*testKey{keys[0], keys[1], rsa}, outsider, good(), ErrBadSignature,
			"none of the 2 keys that fit ES256"},
		{"no key fits the alg", []*testKey{rsa}, keys[0], good(), ErrUnknownKey, "no key fits ES256"},
		{"the last allowed candidate", keys, keys[maxKidlessCandidates-1], good(), "", ""},
		{"past the candidate bound", keys, keys[maxKidlessCandidates], good(), ErrBadSignature,
			fmt.Sprintf("the first %d of %d tried", maxKidlessCandidates, len(keys))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, tc.set...))
			v := newVerifier(t, Options{Providers: []Provider{{Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: file}}})
			req := bearer(sign(t, tc.signer, tc.claims, noKid))
			res := v.Verify(context.Background(), req)
			check(t, res, tc.want)
			if !strings.Contains(res.Detail, tc.wantDetail) {
				t.Fatalf("Detail = %q, want it to contain %q", res.Detail, tc.wantDetail)
			}
			if tc.want != "" {
				return
			}
			// Cached like any verification: the second check is a hit.
			check(t, v.Verify(context.Background(), req), "")
			if s := v.Stats(); s.CacheHits != 1 || s.CacheMisses != 1 {
				t.Fatalf("hits=%d misses=%d, want 1/1", s.CacheHits, s.CacheMisses)
			}
		})
	}
}
