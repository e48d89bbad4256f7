package forwardauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	gojwt "github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/policy"
)

const testIssuer = "https://issuer.forwardauth.test"

// stack is the real decision path: embedded default policy, client IP
// resolver and JWT verifier, behind an authz.Server.
type stack struct {
	server *authz.Server
	key    jwk.Key
}

// newStack builds it for: tokens from testIssuer for orders-api (sub copied
// to x-jwt-sub), the forward-auth proxy as one trusted hop, 10.0.0.0/8
// trusted, scanners denied, /admin on admin.example.com needing a ticket.
func newStack(t testing.TB) *stack {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.FromRaw(priv)
	if err != nil {
		t.Fatal(err)
	}
	_ = key.Set(jwk.KeyIDKey, "k1")
	_ = key.Set(jwk.AlgorithmKey, jwa.EdDSA)
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	raw, _ := json.Marshal(set)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.JWT.Providers = []config.JWTProvider{{
		Name: "corp", Issuer: testIssuer, Audiences: []string{"orders-api"}, JWKSFile: jwks,
		ClaimToHeaders: []config.ClaimToHeader{{Claim: "sub", Header: "x-jwt-sub"}},
	}}
	cfg.ClientIP = config.ClientIP{Source: "xff", XFFTrustedHops: 1}
	cfg.Bypass.TrustedCIDRs = []string{"10.0.0.0/8"}
	cfg.Headers.Deny = []config.HeaderMatch{{Name: "user-agent", Regex: "(?i)sqlmap|nikto"}}
	cfg.Headers.RulesFor = []config.ScopedHeaderRule{{Host: "admin.example.com", PathPrefix: "/admin", Require: []config.HeaderMatch{{Name: "x-admin-ticket"}}}}

	ctx := context.Background()
	rules := cfg.Rules()
	engine, err := policy.New(ctx, policy.Options{Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := clientip.New(cfg.ClientIP.Options())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jwt.New(ctx, cfg.JWT.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Close)
	for deadline := time.Now().Add(10 * time.Second); !tokens.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("JWKS file never loaded")
		}
	}
	s, err := authz.New(authz.Options{Policy: engine, ClientIP: resolver, Tokens: tokens, ParseBody: true})
	if err != nil {
		t.Fatal(err)
	}
	return &stack{server: s, key: key}
}

func (s *stack) token(t testing.TB, sub string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	tok, err := gojwt.NewBuilder().Issuer(testIssuer).Audience([]string{"orders-api"}).Subject(sub).
		IssuedAt(now.Add(-time.Minute)).Expiration(now.Add(ttl)).Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gojwt.Sign(tok, gojwt.WithKey(jwa.EdDSA, s.key))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// origin is an original request as the client sent it to the proxy.
type origin struct {
	method, host, uri string
	client            string // the client's address, appended to X-Forwarded-For by the proxy
	headers           map[string]string
}

// outcome is what the proxy does with an answer.
type outcome struct {
	status    int
	identity  string // x-jwt-sub for the upstream
	challenge string // WWW-Authenticate for the client
	body      string
}

const proxyAddr = "192.0.2.10" // the proxy calling Gatehouse: the peer

// viaGRPC asks as Envoy's gRPC filter would, the proxy being Envoy's peer
// (the same topology: one trusted hop in front of the client).
func viaGRPC(t *testing.T, s *stack, o origin) outcome {
	t.Helper()
	h := map[string]string{":authority": o.host, ":method": o.method, ":path": o.uri, ":scheme": "https", "x-forwarded-proto": "https"}
	for k, v := range o.headers {
		h[strings.ToLower(k)] = v
	}
	h["x-forwarded-for"] = appendXFF(h["x-forwarded-for"], o.client)
	resp, err := s.server.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: proxyAddr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 41000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: o.method, Host: o.host, Path: o.uri, Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := outcome{status: 200}
	if d := resp.GetDeniedResponse(); d != nil {
		out.status, out.body = int(d.GetStatus().GetCode()), d.GetBody()
		for _, hv := range d.GetHeaders() {
			if hv.GetHeader().GetKey() == "www-authenticate" {
				out.challenge = hv.GetHeader().GetValue()
			}
		}
		return out
	}
	for _, hv := range resp.GetOkResponse().GetHeaders() {
		if hv.GetHeader().GetKey() == "x-jwt-sub" {
			out.identity = hv.GetHeader().GetValue()
		}
	}
	return out
}

func appendXFF(prior, addr string) string {
	if prior == "" {
		return addr
	}
	return prior + ", " + addr
}

// subrequestFor builds the subrequest each proxy sends for o.
func subrequestFor(mode string, o origin) *httptestRequest {
	h := map[string]string{}
	for k, v := range o.headers {
		h[k] = v
	}
	xff := appendXFF(h["X-Forwarded-For"], o.client)
	delete(h, "X-Forwarded-For")
	h["X-Forwarded-For"] = xff
	switch mode {
	case ModeTraefik:
		h["X-Forwarded-Method"], h["X-Forwarded-Uri"], h["X-Forwarded-Host"], h["X-Forwarded-Proto"] = o.method, o.uri, o.host, "https"
		h["Host"] = "gatehouse:8282"
		return &httptestRequest{"GET", "/authz", h}
	case ModeNGINX:
		h["X-Original-URL"], h["X-Original-Method"] = "https://"+o.host+o.uri, o.method
		h["X-Forwarded-Proto"] = "https"
		h["Host"] = "gatehouse:8282"
		return &httptestRequest{"GET", "/authz", h}
	default:
		h["Host"], h["X-Forwarded-Proto"] = o.host, "https"
		return &httptestRequest{o.method, "/authz" + o.uri, h}
	}
}

type httptestRequest struct {
	method, target string
	headers        map[string]string
}

func viaHTTP(t *testing.T, h *Handler, mode string, o origin) outcome {
	t.Helper()
	sr := subrequestFor(mode, o)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, subrequest(sr.method, sr.target, sr.headers, ""))
	out := outcome{status: w.Code, challenge: w.Header().Get("WWW-Authenticate")}
	if w.Header().Get(HeaderDecisionID) == "" {
		t.Errorf("%s: no %s on a %d: the Check's decision id must reach the proxy", mode, HeaderDecisionID, w.Code)
	}
	if w.Code == 200 {
		out.identity = w.Header().Get("X-Jwt-Sub")
	} else {
		out.body = w.Body.String()
	}
	return out
}

// TestSameDecisions: one decision table, through the gRPC Check and through
// each forward-auth mode, on the real policy, resolver and verifier. Every
// route must give the table's outcome, and the same body.
func TestSameDecisions(t *testing.T) {
	s := newStack(t)
	valid := "Bearer " + s.token(t, "alice", 10*time.Minute)
	expired := "Bearer " + s.token(t, "alice", -10*time.Minute)
	const user = "198.51.100.7"
	cases := []struct {
		name     string
		o        origin
		status   int
		identity string
		reason   string // in the denial body
	}{
		{"no token", origin{"GET", "api.example.com", "/orders", user, nil}, 401, "", "token_missing"},
		{"valid token", origin{"GET", "api.example.com", "/orders?x=1", user, map[string]string{"Authorization": valid}}, 200, "alice", ""},
		{"valid token, post", origin{"POST", "api.example.com", "/orders", user, map[string]string{"Authorization": valid}}, 200, "alice", ""},
		{"expired token", origin{"GET", "api.example.com", "/orders", user, map[string]string{"Authorization": expired}}, 401, "", "expired"},
		{"garbage token", origin{"GET", "api.example.com", "/orders", user, map[string]string{"Authorization": "Bearer x.y.z"}}, 401, "", "malformed"},
		{"trusted client", origin{"GET", "api.example.com", "/orders", "10.1.2.3", nil}, 200, "", ""},
		{"forged x-forwarded-for", origin{"GET", "api.example.com", "/orders", user, map[string]string{"X-Forwarded-For": "10.1.2.3"}}, 401, "", "token_missing"},
		{"forged identity header", origin{"GET", "api.example.com", "/orders", "10.1.2.3", map[string]string{"X-Jwt-Sub": "admin"}}, 200, "", ""},
		{"scanner", origin{"GET", "api.example.com", "/orders", user, map[string]string{"Authorization": valid, "User-Agent": "sqlmap/1.7"}}, 403, "", "header_denied:user-agent"},
		{"scoped rule by host and path", origin{"GET", "admin.example.com", "/admin/users", user, map[string]string{"Authorization": valid}}, 403, "", "header_required:x-admin-ticket"},
		{"scoped rule, encoded path", origin{"GET", "admin.example.com", "/%61dmin/users", user, map[string]string{"Authorization": valid}}, 403, "", "header_required:x-admin-ticket"},
		{"scoped rule satisfied", origin{"GET", "admin.example.com", "/admin/users", user, map[string]string{"Authorization": valid, "X-Admin-Ticket": "T-1"}}, 200, "alice", ""},
		{"scoped rule, other host", origin{"GET", "api.example.com", "/admin/users", user, map[string]string{"Authorization": valid}}, 200, "alice", ""},
		// In envoy mode the bad escape is in the subrequest's own target, which
		// Go's HTTP server answers 400 before the handler runs (the end-to-end
		// tests see it); the other modes carry it in a header.
		{"bad percent-encoding", origin{"GET", "api.example.com", "/orders/%zz", user, map[string]string{"Authorization": valid}}, 400, "", "bad_request"},
		// A path the upstream may read otherwise is refused before any
		// decision, the trusted network's bypass included.
		{"fragment", origin{"GET", "api.example.com", "/healthz#/../admin", "10.1.2.3", nil}, 400, "", "bad_request"},
		{"overlong UTF-8", origin{"GET", "api.example.com", "/public/\xc0\xae\xc0\xae/admin", "10.1.2.3", nil}, 400, "", "bad_request"},
		{"encoded overlong UTF-8", origin{"GET", "api.example.com", "/public/%c0%ae%c0%ae/admin", "10.1.2.3", nil}, 400, "", "bad_request"},
	}
	notViaEnvoy := map[string]bool{"bad percent-encoding": true}
	handlers := map[string]*Handler{}
	for _, mode := range []string{ModeTraefik, ModeNGINX, ModeEnvoy} {
		handlers[mode] = newHandler(t, Options{Checker: s.server, Mode: mode})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := viaGRPC(t, s, tc.o)
			if want.status != tc.status || want.identity != tc.identity || !strings.Contains(want.body, tc.reason) {
				t.Fatalf("gRPC Check: %+v, want status %d identity %q reason %q", want, tc.status, tc.identity, tc.reason)
			}
			for _, mode := range []string{ModeTraefik, ModeNGINX, ModeEnvoy} {
				if mode == ModeEnvoy && notViaEnvoy[tc.name] {
					continue
				}
				got := viaHTTP(t, handlers[mode], mode, tc.o)
				if got != want {
					t.Errorf("%s: %+v\nwant (gRPC) %+v", mode, got, want)
				}
			}
		})
	}
}

// TestSecondCredentialIsRefused: a second Authorization header, however its
// scheme is separated from its token, makes the request's credential
// ambiguous: 401 through every front end, though one of the two is valid.
func TestSecondCredentialIsRefused(t *testing.T) {
	s := newStack(t)
	valid := "Bearer " + s.token(t, "alice", 10*time.Minute)
	other := s.token(t, "mallory", 10*time.Minute)
	for _, second := range []string{"Bearer\t" + other, "Bearer  " + other, "Basic bWFsbG9yeTpwdw==", "bearer"} {
		o := origin{"GET", "api.example.com", "/orders", "198.51.100.7", map[string]string{"Authorization": valid + "," + second}}
		if got := viaGRPC(t, s, o); got.status != 401 {
			t.Errorf("gRPC, second credential %q: %+v, want 401", second, got)
		}
		for _, mode := range []string{ModeTraefik, ModeNGINX, ModeEnvoy} {
			h := newHandler(t, Options{Checker: s.server, Mode: mode})
			sr := subrequestFor(mode, origin{o.method, o.host, o.uri, o.client, map[string]string{"Authorization": valid}})
			r := subrequest(sr.method, sr.target, sr.headers, "")
			r.Header.Add("Authorization", second) // a second header line, as the client sent it
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 401 {
				t.Errorf("%s, second credential %q: %d %s, want 401", mode, second, w.Code, w.Body)
			}
		}
	}
}
