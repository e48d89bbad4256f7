package jwt

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// FuzzVerify drives token extraction and parsing with arbitrary input in
// every location. It must never panic, and nothing but the genuinely signed
// seed tokens may ever be valid.
func FuzzVerify(f *testing.F) {
	rsaKey := newRSAKey(f, "rsa-1", jwa.RS256)
	ecKey := newECKey(f, "ec-1")
	file := writeFile(f, f.TempDir(), "jwks.json", jwksJSON(f, rsaKey, ecKey))
	now := time.Now()
	v, err := New(context.Background(), Options{Providers: []Provider{{
		Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: file,
		FromHeaders:  []TokenHeader{{Name: "authorization", Prefix: "Bearer "}},
		FromParams:   []string{"access_token"},
		FromCookies:  []string{"session"},
		ForwardToken: boolPtr(false),
		// One unknown-kid reread of the file per hour at most.
		MinRefreshInterval: time.Hour,
	}}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)

	good := map[string]bool{}
	for _, tok := range []string{
		sign(f, rsaKey, claimsFor(corpIssuer, "api", now), nil),
		sign(f, ecKey, claimsFor(corpIssuer, "api", now), nil),
	} {
		good[tok] = true
		f.Add(tok, uint8(0))
		f.Add(tok, uint8(1))
		f.Add(tok, uint8(2))
		f.Add(tok[:len(tok)-5], uint8(0))
		f.Add(tok+"."+tok, uint8(0))
		f.Add(strings.ReplaceAll(tok, "e", "f"), uint8(0))
		f.Add("%61ccess_token="+tok+"&access_token="+tok, uint8(4))
	}
	f.Add(rawToken(f, map[string]any{"alg": "none"}, claimsFor(corpIssuer, "api", now), nil), uint8(0))
	f.Add(rawToken(f, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claimsFor(corpIssuer, "api", now), []byte("mac")), uint8(1))
	f.Add(`{"payload":"e30","signatures":[{"protected":"e30","signature":""}]}`, uint8(0))
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.", uint8(0))
	f.Add("...", uint8(2))
	f.Add("Bearer a, Bearer b", uint8(0))
	f.Add("", uint8(0))
	f.Add("a=1&access_%74oken=x.y.z&b", uint8(4))
	f.Add("access_token=a&access_%74oken=b", uint8(4))

	f.Fuzz(func(t *testing.T, input string, where uint8) {
		var req Request
		switch where % 5 {
		case 0:
			req.Headers = map[string]string{"authorization": "Bearer " + input}
		case 1:
			req.Query = map[string][]string{"access_token": {input}}
		case 2:
			req.Headers = map[string]string{"cookie": "session=" + input}
		case 3:
			req.Headers = map[string]string{"authorization": input}
		default:
			// A whole query string, decoded as authz decodes it.
			q, err := url.ParseQuery(input)
			if err != nil {
				return
			}
			req.Query, req.RawQuery = q, input
		}
		res := v.Verify(context.Background(), req)
		if res == nil {
			return
		}
		// forward_token: false: every raw spelling of the token's parameter
		// is removed, and nothing else.
		for _, name := range res.RemoveParams {
			if decoded, err := url.QueryUnescape(name); err != nil || decoded != "access_token" {
				t.Fatalf("RemoveParams lists %q", name)
			}
		}
		if len(req.Query["access_token"]) > 0 {
			for pair := range strings.SplitSeq(req.RawQuery, "&") {
				name, _, _ := strings.Cut(pair, "=")
				if decoded, err := url.QueryUnescape(name); err == nil && decoded == "access_token" && !slices.Contains(res.RemoveParams, name) {
					t.Fatalf("raw query %q: %q not in RemoveParams %q", req.RawQuery, name, res.RemoveParams)
				}
			}
		}
		if res.Valid {
			if !good[trimOWS(strings.TrimPrefix(strings.TrimPrefix(trimOWS(input), "Bearer "), "bearer "))] && !validVariant(input, good) {
				t.Fatalf("input %q verified as valid", input)
			}
			if res.Error != "" || res.Claims == nil {
				t.Fatalf("valid result with error %q / nil claims", res.Error)
			}
			return
		}
		if res.Error == "" || res.Claims != nil || res.Headers != nil {
			t.Fatalf("invalid result %+v", *res)
		}
	})
}

// validVariant accepts the transport-level variations of a seed token that
// extraction legitimately normalizes: surrounding whitespace, the scheme's
// case, quotes around a cookie value, comma-joined repeats of other schemes.
func validVariant(input string, good map[string]bool) bool {
	for tok := range good {
		if strings.Contains(input, tok) {
			return true
		}
	}
	return false
}

// FuzzParseFast holds the one-pass parsers of the header and the claims to
// the token-by-token ones: whenever a fast path accepts, the strict parser
// accepts too, with the same result.
func FuzzParseFast(f *testing.F) {
	for _, seed := range []string{
		`{"alg":"RS256","kid":"k1","typ":"JWT"}`,
		`{"alg":"RS256","alg":"none"}`,
		`{"alg":"RS256","\u0061lg":"none"}`,
		`{"alg":"ES256","crit":["exp"]}`,
		`{"alg":"RS256","kid":null}`,
		`{"ALG":"RS256"}`,
		` { "alg" : "RS256" , "x" : {"a:b": [1, {"c": ":"}]} } `,
		`{"sub":"alice","aud":["a","b"],"exp":1700000000,"nested":{"k":"v","k":"w"}}`,
		`{"sub":"a\"b:c","sub":"x"}`,
		`{"n":1e400}`,
		`null`, `[]`, `{}`, `{"a":1}x`, `"{\"alg\":\"RS256\"}"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if alg, kid, ok := parseHeaderFast(b); ok {
			salg, skid, err := parseHeaderStrict(b)
			if err != nil || salg != alg || skid != kid {
				t.Fatalf("header %q: fast (%q, %q), strict (%q, %q, %v)", b, alg, kid, salg, skid, err)
			}
		}
		var claims map[string]any
		if json.Unmarshal(b, &claims) == nil && claims != nil && len(claims) == objectMembers(b) {
			strict, err := parseClaimsStrict(b)
			if err != nil || !reflect.DeepEqual(strict, claims) {
				t.Fatalf("claims %q: fast %v, strict %v (%v)", b, claims, strict, err)
			}
		}
		// And the other way: what the strict parser accepts, parseClaims
		// accepts with the same claims (the fast path may only decline).
		if strict, err := parseClaimsStrict(b); err == nil {
			got, err := parseClaims(b)
			if err != nil || !reflect.DeepEqual(got, strict) {
				t.Fatalf("claims %q: parseClaims %v (%v), strict %v", b, got, err, strict)
			}
		}
	})
}
