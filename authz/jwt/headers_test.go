package jwt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestIdentityHeaders(t *testing.T) {
	key := newEdKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, key))
	p := corpProvider(srv.uri())
	p.ForwardToken = boolPtr(false)
	p.FromHeaders = []TokenHeader{{Name: "Authorization", Prefix: "Bearer "}}
	p.FromParams = []string{"access_token"}
	p.PayloadHeader = "X-JWT-Payload"
	p.ClaimToHeaders = []ClaimToHeader{
		{Claim: "sub", Header: "X-User"},
		{Claim: "email_verified", Header: "x-verified"},
		{Claim: "level", Header: "x-level"},
		{Claim: "big", Header: "x-big"},
		{Claim: "groups", Header: "x-groups"},
		{Claim: "realm_access.roles", Header: "x-roles"},
		{Claim: "profile", Header: "x-profile"}, // object: skipped
		{Claim: "mixed", Header: "x-mixed"},     // array with a number: skipped
		{Claim: "evil", Header: "x-evil"},       // CRLF: skipped
		{Claim: "missing", Header: "x-missing"}, // absent: skipped
		{Claim: "nothing", Header: "x-nothing"}, // null: skipped
	}
	v := newVerifier(t, Options{Providers: []Provider{p}})
	waitReady(t, v)

	claims := claimsFor(corpIssuer, "api", time.Now())
	claims["email_verified"] = true
	claims["level"] = 3
	claims["big"] = 12345678901
	claims["groups"] = []string{"eng", "ops"}
	claims["realm_access"] = map[string]any{"roles": []string{"admin"}}
	claims["profile"] = map[string]any{"name": "Alice"}
	claims["mixed"] = []any{"a", 1}
	claims["evil"] = "a\r\nx-injected: 1"
	claims["nothing"] = nil
	token := sign(t, key, claims, nil)

	want := []Header{
		{"x-user", "alice"},
		{"x-verified", "true"},
		{"x-level", "3"},
		{"x-big", "12345678901"},
		{"x-groups", "eng,ops"},
		{"x-roles", "admin"},
	}
	for _, tc := range []struct {
		name       string
		req        Request
		wantHeader []string
		wantParam  []string
	}{
		{"header", bearer(token), []string{"authorization"}, nil},
		{"param", Request{Query: map[string][]string{"access_token": {token}}}, nil, []string{"access_token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // miss, then cache hit: same answer
				res := v.Verify(context.Background(), tc.req)
				check(t, res, "")
				if len(res.Headers) != len(want)+1 {
					t.Fatalf("Headers = %v, want %v plus the payload header", res.Headers, want)
				}
				if !reflect.DeepEqual(res.Headers[:len(want)], want) {
					t.Fatalf("Headers = %v, want %v", res.Headers[:len(want)], want)
				}
				payload := res.Headers[len(want)]
				if payload.Key != "x-jwt-payload" || strings.ContainsAny(payload.Value, "=+/") {
					t.Fatalf("payload header = %+v, want x-jwt-payload in unpadded base64url", payload)
				}
				raw, err := base64.RawURLEncoding.DecodeString(payload.Value)
				if err != nil {
					t.Fatal(err)
				}
				var got map[string]any
				if err := json.Unmarshal(raw, &got); err != nil || got["sub"] != "alice" {
					t.Fatalf("payload header decodes to %s (%v)", raw, err)
				}
				if !reflect.DeepEqual(res.RemoveHeaders, tc.wantHeader) || !reflect.DeepEqual(res.RemoveParams, tc.wantParam) {
					t.Fatalf("RemoveHeaders=%v RemoveParams=%v, want %v %v", res.RemoveHeaders, res.RemoveParams, tc.wantHeader, tc.wantParam)
				}
			}
		})
	}

	wantNames := []string{"x-big", "x-evil", "x-groups", "x-jwt-payload", "x-level", "x-missing", "x-mixed", "x-nothing", "x-profile", "x-roles", "x-user", "x-verified"}
	if got := v.IdentityHeaders(); !reflect.DeepEqual(got, wantNames) {
		t.Fatalf("IdentityHeaders = %v, want %v", got, wantNames)
	}
}

func TestForwardTokenDefaultKeepsToken(t *testing.T) {
	key := newEdKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, key))
	v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)
	res := v.Verify(context.Background(), bearer(sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)))
	check(t, res, "")
	if res.RemoveHeaders != nil || res.RemoveParams != nil || res.Headers != nil {
		t.Fatalf("default provider: Headers=%v RemoveHeaders=%v RemoveParams=%v, want none", res.Headers, res.RemoveHeaders, res.RemoveParams)
	}
}

func TestConfigValidation(t *testing.T) {
	base := func() Provider {
		return Provider{Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSURI: "https://corp.example.com/jwks"}
	}
	with := func(edit func(p *Provider)) []Provider {
		p := base()
		edit(&p)
		return []Provider{p}
	}
	cases := []struct {
		name string
		cfg  Options
		want string
	}{
		{"no audiences", Options{Providers: with(func(p *Provider) { p.Audiences = nil })},
			"jwt.providers[0] (corp): audiences is empty; list the audiences this service accepts, or set allow_any_audience: true"},
		{"audiences and allow_any", Options{Providers: with(func(p *Provider) { p.AllowAnyAudience = true })}, "are both set"},
		{"no name", Options{Providers: with(func(p *Provider) { p.Name = "" })}, "jwt.providers[0]: name is empty"},
		{"no issuer", Options{Providers: with(func(p *Provider) { p.Issuer = "" })}, "(corp): issuer is empty"},
		{"no key source", Options{Providers: with(func(p *Provider) { p.JWKSURI = "" })}, "set exactly one of jwks_uri, jwks_file and discovery: true (0 are set)"},
		{"two key sources", Options{Providers: with(func(p *Provider) { p.JWKSFile = "x.json" })}, "(2 are set)"},
		{"relative jwks_uri", Options{Providers: with(func(p *Provider) { p.JWKSURI = "/jwks" })}, "jwks_uri"},
		{"file scheme jwks_uri", Options{Providers: with(func(p *Provider) { p.JWKSURI = "file:///etc/passwd" })}, "jwks_uri"},
		{"discovery with non-URL issuer", Options{Providers: with(func(p *Provider) { p.JWKSURI, p.Discovery, p.Issuer = "", true, "corp" })}, "discovery needs an http(s) issuer"},
		{"HS256 algorithm", Options{Providers: with(func(p *Provider) { p.Algorithms = []string{"HS256"} })}, `algorithms: "HS256" is not accepted`},
		{"none algorithm", Options{Providers: with(func(p *Provider) { p.Algorithms = []string{"none"} })}, `algorithms: "none" is not accepted`},
		{"negative refresh", Options{Providers: with(func(p *Provider) { p.RefreshInterval = -time.Second })}, "refresh_interval is negative"},
		{"negative max_jwks_bytes", Options{Providers: with(func(p *Provider) { p.MaxJWKSBytes = -1 })}, "max_jwks_bytes is negative"},
		{"bad header name", Options{Providers: with(func(p *Provider) { p.FromHeaders = []TokenHeader{{Name: "bad header"}} })}, "from_headers[0].name"},
		{"identity header collides with token header", Options{Providers: with(func(p *Provider) {
			p.ClaimToHeaders = []ClaimToHeader{{Claim: "sub", Header: "Authorization"}}
		})}, `identity header "authorization" is also a token header`},
		{"pseudo header", Options{Providers: with(func(p *Provider) { p.PayloadHeader = ":path" })}, "payload_header"},
		{"host header", Options{Providers: with(func(p *Provider) {
			p.ClaimToHeaders = []ClaimToHeader{{Claim: "sub", Header: "host"}}
		})}, "cannot carry identity"},
		{"redirect_hosts with a URL", Options{Providers: with(func(p *Provider) { p.RedirectHosts = []string{"https://keys.example.net/"} })}, `redirect_hosts[0] "https://keys.example.net/" is not a host`},
		{"ca_file with jwks_file", Options{Providers: with(func(p *Provider) { p.JWKSURI, p.JWKSFile, p.CAFile = "", "k.json", "ca.pem" })}, "ca_file applies only"},
		{"duplicate name", Options{Providers: []Provider{base(), func() Provider { p := base(); p.Issuer = "https://other"; return p }()}}, "jwt.providers[1] (corp): name is also used by jwt.providers[0]"},
		{"duplicate issuer", Options{Providers: []Provider{base(), func() Provider { p := base(); p.Name = "other"; return p }()}}, "jwt.providers[1] (other): issuer"},
		{"negative max_token_bytes", Options{MaxTokenBytes: -1}, "jwt.max_token_bytes is negative"},
		{"negative clock_skew", Options{ClockSkew: -time.Second}, "jwt.clock_skew is negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestForwardTokenFalseStrips: with forward_token: false the upstream never
// sees the token, valid or not: every location that carried a value is
// listed for removal (by its raw query name too), while a provider that
// forwards keeps its token.
func TestForwardTokenFalseStrips(t *testing.T) {
	key := newEdKey(t, "k1")
	other := newEdKey(t, "k1") // same kid, not in the set
	file := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, key))
	v := newVerifier(t, Options{Providers: []Provider{
		{
			Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: file, ForwardToken: boolPtr(false),
			FromHeaders: []TokenHeader{{Name: "authorization", Prefix: "Bearer "}}, FromParams: []string{"access_token"},
		},
		{
			Name: "web", Issuer: webIssuer, AllowAnyAudience: true, JWKSFile: file,
			FromHeaders: []TokenHeader{{Name: "x-web-token"}}, FromParams: []string{"web_token"},
		},
	}})
	now := time.Now()
	corp := sign(t, key, claimsFor(corpIssuer, "api", now), nil)
	expired := claimsFor(corpIssuer, "api", now)
	expired["exp"] = now.Add(-time.Hour).Unix()
	corpExpired := sign(t, key, expired, nil)
	corpForged := sign(t, other, claimsFor(corpIssuer, "api", now), nil)
	web := sign(t, key, claimsFor(webIssuer, "any", now), nil)
	stranger := sign(t, key, claimsFor("https://stranger.example.com", "api", now), nil)

	// request builds a Request as authz does: decoded Query from RawQuery.
	request := func(headers map[string]string, rawQuery string) Request {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			t.Fatal(err)
		}
		return Request{Headers: headers, Query: q, RawQuery: rawQuery}
	}
	auth := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

	cases := []struct {
		name        string
		req         Request
		want        string // "" valid, else the error
		wantHeaders []string
		wantParams  []string
	}{
		{"valid corp header", request(auth(corp), ""), "", []string{"authorization"}, nil},
		{"valid corp param", request(nil, "a=1&access_token="+corp), "", nil, []string{"access_token"}},
		{"percent-encoded param name", request(nil, "a=1&access_%74oken="+corp), "", nil, []string{"access_token", "access_%74oken"}},
		{"fully encoded param name", request(nil, "%61ccess_token="+corp+"&b=2"), "", nil, []string{"access_token", "%61ccess_token"}},
		{"expired corp header", request(auth(corpExpired), ""), ErrExpired, []string{"authorization"}, nil},
		{"bad signature corp header", request(auth(corpForged), ""), ErrBadSignature, []string{"authorization"}, nil},
		{"malformed in corp header", request(auth("garbage"), ""), ErrMalformed, []string{"authorization"}, nil},
		{"malformed in corp param", request(nil, "access_%74oken=garbage"), ErrMalformed, nil, []string{"access_token", "access_%74oken"}},
		{"unknown issuer in corp header", request(auth(stranger), ""), ErrUnknownIssuer, []string{"authorization"}, nil},
		{"oversize in corp header", request(auth(strings.Repeat("a", DefaultMaxTokenBytes+1)), ""), ErrTooLarge, []string{"authorization"}, nil},
		{"repeated corp param, two spellings", request(nil, "access_token="+corp+"&access_%74oken="+corp), ErrMalformed, nil, []string{"access_token", "access_%74oken"}},
		{"same corp token in header and param", request(auth(corp), "access_token="+corp), "", []string{"authorization"}, []string{"access_token"}},
		{"corp token also in web's param", request(auth(corp), "web_token="+corp), "", []string{"authorization"}, []string{"web_token"}},
		{"corp header and web header: two tokens", request(map[string]string{"authorization": "Bearer " + corp, "x-web-token": web}, ""), ErrMalformed, []string{"authorization"}, nil},
		{"valid web header", request(map[string]string{"x-web-token": web}, ""), "", nil, nil},
		{"malformed in web param", request(nil, "web_%74oken=garbage"), ErrMalformed, nil, nil},
		{"unknown issuer in web header", request(map[string]string{"x-web-token": stranger}, ""), ErrUnknownIssuer, nil, nil},
		{"web token in corp header too", request(map[string]string{"authorization": "Bearer " + web, "x-web-token": web}, ""), "", []string{"authorization"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // miss, then cache hit for valid tokens: same answer
				res := v.Verify(context.Background(), tc.req)
				check(t, res, tc.want)
				if !reflect.DeepEqual(res.RemoveHeaders, tc.wantHeaders) || !reflect.DeepEqual(res.RemoveParams, tc.wantParams) {
					t.Fatalf("RemoveHeaders=%q RemoveParams=%q, want %q %q (%s)", res.RemoveHeaders, res.RemoveParams, tc.wantHeaders, tc.wantParams, res.Detail)
				}
			}
		})
	}
}
