package authz

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	gojwt "github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"google.golang.org/genproto/googleapis/rpc/code"

	gjwt "github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// startServer runs a real gRPC server on loopback with a real policy engine
// and returns a client for it.
func startServer(t *testing.T, popts policy.Options, sopts Options) authv3.AuthorizationClient {
	t.Helper()
	ctx := context.Background()
	engine, err := policy.New(ctx, popts)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	sopts.Policy = engine
	srv, err := New(sopts)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.AuthorizationClient(t, testutil.ServeAuthorization(t, srv))
}

func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, files)
	return dir
}

func check(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check returned a gRPC error (must always answer a CheckResponse): %v", err)
	}
	return resp
}

func checkReq(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "api.example.com"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "api.example.com", Scheme: "http", Headers: h, Body: body,
		}},
	}}
}

func headerMap(opts []*corev3.HeaderValueOption) map[string][]string {
	m := map[string][]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = append(m[o.GetHeader().GetKey()], o.GetHeader().GetValue())
	}
	return m
}

func TestCompatPathQuery(t *testing.T) {
	c := startServer(t, policy.Options{Paths: []string{"testdata/compat/path_query"}}, Options{ParseBody: true})
	cases := []struct {
		name, method, path string
		allowed            bool
	}{
		{"matching path and query", "GET", "/people?lang=en", true},
		{"other language", "GET", "/people?lang=fr", false},
		{"two languages", "GET", "/people?lang=en&lang=fr", false},
		{"sub path", "GET", "/people/1?lang=en", false},
		{"wrong method", "POST", "/people?lang=en", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := check(t, c, checkReq(tc.method, tc.path, nil, ""))
			if got := resp.GetStatus().GetCode() == int32(code.Code_OK); got != tc.allowed {
				t.Fatalf("allowed = %v, want %v (%v)", got, tc.allowed, resp)
			}
			if !tc.allowed {
				// A boolean false is PERMISSION_DENIED with a 403 and no body, as in OPA-Envoy.
				d := resp.GetDeniedResponse()
				if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) || d.GetStatus().GetCode() != 403 || d.GetBody() != "" {
					t.Fatalf("denial = %v", resp)
				}
			}
		})
	}
}

func TestCompatObjectResult(t *testing.T) {
	c := startServer(t, policy.Options{Paths: []string{"testdata/compat/object"}, Decision: "envoy/authz/result"}, Options{})

	t.Run("allowed", func(t *testing.T) {
		resp := check(t, c, checkReq("GET", "/people", map[string]string{"x-role": "admin"}, ""))
		if resp.GetStatus().GetCode() != 0 {
			t.Fatalf("want allowed: %v", resp)
		}
		ok := resp.GetOkResponse()
		h := headerMap(ok.GetHeaders())
		if strings.Join(h["x-ext-auth-allow"], ",") != "yes" || strings.Join(h["x-validated-by"], ",") != "security-checkpoint,gatehouse" {
			t.Errorf("headers = %v", h)
		}
		for _, o := range ok.GetHeaders() {
			first := o.GetHeader().GetValue() != "gatehouse"
			if o.GetAppend() == nil || o.GetAppend().GetValue() == first {
				t.Errorf("header %s=%s: append must be set explicitly, false for the first value: %v", o.GetHeader().GetKey(), o.GetHeader().GetValue(), o.GetAppend())
			}
		}
		if got := headerMap(ok.GetResponseHeadersToAdd()); strings.Join(got["x-foo"], "") != "bar" {
			t.Errorf("response_headers_to_add = %v", got)
		}
		if got := strings.Join(ok.GetHeadersToRemove(), ","); got != "one-auth-header,another-auth-header" {
			t.Errorf("headers_to_remove = %s", got)
		}
		if q := ok.GetQueryParametersToSet(); len(q) != 1 || q[0].GetKey() != "lang" || q[0].GetValue() != "en" {
			t.Errorf("query_parameters_to_set = %v", q)
		}
		if got := strings.Join(ok.GetQueryParametersToRemove(), ","); got != "debug" {
			t.Errorf("query_parameters_to_remove = %s", got)
		}
		md := resp.GetDynamicMetadata().AsMap()
		if md["role"] != "admin" || md["score"] != 7.0 {
			t.Errorf("dynamic_metadata = %v", md)
		}
	})
	t.Run("denied 401 with body", func(t *testing.T) {
		resp := check(t, c, checkReq("GET", "/people", nil, ""))
		d := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() == 0 || d.GetStatus().GetCode() != 401 || d.GetBody() != "Authentication Failed" {
			t.Fatalf("denial = %v", resp)
		}
		if h := headerMap(d.GetHeaders()); strings.Join(h["x-denied-by"], "") != "policy" {
			t.Errorf("denied headers = %v", h)
		}
		if resp.GetDynamicMetadata().AsMap()["role"] != "none" {
			t.Errorf("dynamic metadata must travel on denials too: %v", resp.GetDynamicMetadata())
		}
	})
	t.Run("denied 403", func(t *testing.T) {
		resp := check(t, c, checkReq("GET", "/people", map[string]string{"x-role": "guest"}, ""))
		if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 403 || d.GetBody() != "Unauthorized Request" {
			t.Fatalf("denial = %v", resp)
		}
	})
}

func hs256(t *testing.T, claims map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(gojwt.HS256, []byte("secret")))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// TestCompatV0Policy runs a pre-1.0 OPA-Envoy policy unchanged, with
// policy.rego_version: v0, including io.jwt.decode_verify and parsed_body.
func TestCompatV0Policy(t *testing.T) {
	c := startServer(t, policy.Options{Paths: []string{"testdata/compat/v0_jwt"}, RegoVersion: "v0"}, Options{ParseBody: true})
	now := time.Now().Unix()
	guest := hs256(t, map[string]any{"role": "guest", "sub": "YWxpY2U", "nbf": now - 60, "exp": now + 600})
	admin := hs256(t, map[string]any{"role": "admin", "sub": "YWxpY2U", "nbf": now - 60, "exp": now + 600})
	expired := hs256(t, map[string]any{"role": "admin", "sub": "YWxpY2U", "nbf": now - 600, "exp": now - 60})
	cases := []struct {
		name, method, path, token, body string
		allowed                         bool
	}{
		{"guest reads", "GET", "/people/1", guest, "", true},
		{"guest cannot write", "POST", "/people", guest, `{"firstname": "Bob"}`, false},
		{"admin writes someone else", "POST", "/people", admin, `{"firstname": "Bob"}`, true},
		{"admin cannot write self", "POST", "/people", admin, `{"firstname": "Alice"}`, false},
		{"expired token", "GET", "/people/1", expired, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := check(t, c, checkReq(tc.method, tc.path, map[string]string{"authorization": "Bearer " + tc.token, "content-type": "application/json"}, tc.body))
			if got := resp.GetStatus().GetCode() == 0; got != tc.allowed {
				t.Fatalf("allowed = %v, want %v", got, tc.allowed)
			}
		})
	}
}

// TestFailClosed: every way a policy can fail to decide is a denial with the
// configured status and a reason, never a gRPC error.
func TestFailClosed(t *testing.T) {
	cases := []struct {
		name, policy, reason string
	}{
		{"undefined decision", "package envoy.authz\n\nallow if input.never\n", policy.ReasonUndefined},
		{"wrong result type", "package envoy.authz\n\nallow := \"yes\"\n", policy.ReasonBadResult},
		{"allowed not a bool", "package envoy.authz\n\nallow := {\"allowed\": 1}\n", policy.ReasonBadResult},
		{"bad header type", "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x\": 1}}\n", policy.ReasonBadResult},
		{"runtime error", "package envoy.authz\n\nallow := x if { x := 1 / count(input.parsed_path[0]) > 0 }\n", policy.ReasonUndefined},
		{"conflicting outputs", "package envoy.authz\n\nallow := true if input.parsed_path\nallow := false if input.version\n", policy.ReasonError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, map[string]string{"p.rego": tc.policy})
			c := startServer(t, policy.Options{Paths: []string{dir}}, Options{FailStatus: 503})
			resp := check(t, c, checkReq("GET", "/", nil, ""))
			d := resp.GetDeniedResponse()
			if resp.GetStatus().GetCode() == 0 || d.GetStatus().GetCode() != 503 {
				t.Fatalf("want a 503 denial, got %v", resp)
			}
			if resp.GetStatus().GetMessage() != tc.reason || !strings.Contains(d.GetBody(), tc.reason) {
				t.Fatalf("reason: status message %q, body %q, want %q", resp.GetStatus().GetMessage(), d.GetBody(), tc.reason)
			}
		})
	}
}

func TestBadBodyIs400(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package envoy.authz\n\nallow := true\n"})
	c := startServer(t, policy.Options{Paths: []string{dir}}, Options{ParseBody: true})
	resp := check(t, c, checkReq("POST", "/", map[string]string{"content-type": "application/json"}, "{not json"))
	if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 400 || !strings.Contains(d.GetBody(), "not valid JSON") {
		t.Fatalf("want 400 naming the problem, got %v", resp)
	}
}

// TestDryRun: whatever the policy says (deny, undefined, unparsable body),
// dry run allows, still strips identity headers, and logs what would have
// happened.
func TestDryRun(t *testing.T) {
	cases := []struct {
		name, policy string
		req          *authv3.CheckRequest
		reason       string
	}{
		{"denial", "package envoy.authz\n\nallow := {\"allowed\": false, \"reason\": \"nope\"}\n", checkReq("GET", "/", nil, ""), "nope"},
		{"undefined", "package envoy.authz\n\nallow if input.never\n", checkReq("GET", "/", nil, ""), policy.ReasonUndefined},
		{"bad body", "package envoy.authz\n\nallow := true\n", checkReq("POST", "/", map[string]string{"content-type": "application/json"}, "{"), ReasonBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.LockedBuffer
			dir := policyDir(t, map[string]string{"p.rego": tc.policy})
			c := startServer(t, policy.Options{Paths: []string{dir}}, Options{
				DryRun: true, ParseBody: true, Tokens: fixedTokens{nil},
				DecisionLog: &logs,
			})
			resp := check(t, c, tc.req)
			if resp.GetStatus().GetCode() != 0 {
				t.Fatalf("dry run must allow: %v", resp)
			}
			if rm := strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ","); !strings.Contains(rm, "x-jwt-sub") {
				t.Errorf("identity headers must still be stripped in dry run: %q", rm)
			}
			for _, want := range []string{`"dry_run":true`, `"policy_allowed":false`, `"reason":"` + tc.reason + `"`} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("decision log lacks %s: %s", want, logs.String())
				}
			}
		})
	}
}

func TestHTTPStatusEnvoyCannotSend(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package envoy.authz\n\nallow := {\"allowed\": false, \"http_status\": 299}\n"})
	c := startServer(t, policy.Options{Paths: []string{dir}}, Options{FailStatus: 403})
	resp := check(t, c, checkReq("GET", "/", nil, ""))
	if resp.GetStatus().GetCode() == 0 {
		t.Fatalf("a denial with an odd status must stay a denial: %v", resp)
	}
}

// fixedTokens is a TokenVerifier returning a fixed result, to pin the
// identity-header mapping independently of JWKS plumbing (covered in
// authz/jwt and test/).
type fixedTokens struct{ res *gjwt.Result }

func (f fixedTokens) Verify(context.Context, gjwt.Request) *gjwt.Result { return f.res }
func (f fixedTokens) IdentityHeaders() []string                         { return []string{"x-jwt-sub", "x-jwt-payload"} }

func TestIdentityHeaders(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-jwt-sub\": \"forged-by-policy\"}}\n"})
	valid := &gjwt.Result{Valid: true, Provider: "corp", Claims: []byte(`{"sub": "alice"}`),
		Headers: []gjwt.Header{{Key: "x-jwt-sub", Value: "alice"}}, RemoveHeaders: []string{"authorization"}}
	c := startServer(t, policy.Options{Paths: []string{dir}}, Options{Tokens: fixedTokens{valid}})
	resp := check(t, c, checkReq("GET", "/", map[string]string{"x-jwt-sub": "mallory", "x-jwt-payload": "forged"}, ""))
	ok := resp.GetOkResponse()
	var last *corev3.HeaderValueOption
	for _, o := range ok.GetHeaders() {
		if o.GetHeader().GetKey() == "x-jwt-sub" {
			last = o
		}
	}
	if last == nil || last.GetHeader().GetValue() != "alice" || last.GetAppend() == nil || last.GetAppend().GetValue() {
		t.Fatalf("x-jwt-sub must be set last to the verified claim with append=false: %v", ok.GetHeaders())
	}
	remove := strings.Join(ok.GetHeadersToRemove(), ",")
	if !strings.Contains(remove, "x-jwt-payload") || !strings.Contains(remove, "authorization") || strings.Contains(remove, "x-jwt-sub") {
		t.Fatalf("headers_to_remove = %s: must strip unset identity headers and the token, not the one being set", remove)
	}

	// Without a valid token every identity header is stripped.
	c = startServer(t, policy.Options{Paths: []string{dir}}, Options{Tokens: fixedTokens{nil}})
	resp = check(t, c, checkReq("GET", "/", map[string]string{"x-jwt-sub": "mallory"}, ""))
	remove = strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ",")
	if !strings.Contains(remove, "x-jwt-sub") || !strings.Contains(remove, "x-jwt-payload") {
		t.Fatalf("headers_to_remove = %s", remove)
	}
}

// recordingTokens returns a fixed result and keeps the request it was given.
type recordingTokens struct {
	res  *gjwt.Result
	mu   sync.Mutex
	last gjwt.Request
}

func (r *recordingTokens) Verify(_ context.Context, req gjwt.Request) *gjwt.Result {
	r.mu.Lock()
	r.last = req
	r.mu.Unlock()
	return r.res
}
func (r *recordingTokens) IdentityHeaders() []string { return nil }

// TestTokenDetailAtDebug: the verifier's Detail reaches the decision log's
// jwt group at debug level only; the raw query reaches the verifier, so
// forward_token: false can remove a token parameter by its raw spelling.
func TestTokenDetailAtDebug(t *testing.T) {
	tok := &recordingTokens{res: &gjwt.Result{Provider: "corp", Error: "bad_signature", Detail: "token has no kid and its signature verifies with none of the 3 keys that fit RS256"}}
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var logs testutil.LockedBuffer
		c := startServer(t, policy.Options{}, Options{Tokens: tok,
			DecisionLog: &logs, DecisionLogDebug: level == slog.LevelDebug})
		check(t, c, checkReq("GET", "/p?access_%74oken=x&a=1", nil, ""))
		// check returned after the decision line was written (the log is a
		// plain writer here, written before Check answers): read it once.
		logged := strings.Contains(logs.String(), `"detail":"token has no kid`)
		if logged != (level == slog.LevelDebug) {
			t.Errorf("level %v: detail logged = %v: %s", level, logged, logs.String())
		}
		tok.mu.Lock()
		raw := tok.last.RawQuery
		tok.mu.Unlock()
		if raw != "access_%74oken=x&a=1" {
			t.Errorf("RawQuery = %q", raw)
		}
	}
}
