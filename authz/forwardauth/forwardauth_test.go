package forwardauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// recorder is a Checker that keeps the CheckRequest and answers resp.
type recorder struct {
	got  *authv3.CheckRequest
	resp *authv3.CheckResponse
	err  error
}

func (c *recorder) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	c.got = req
	if c.err != nil {
		return nil, c.err
	}
	if c.resp != nil {
		return c.resp, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
}

func newHandler(t testing.TB, opts Options) *Handler {
	t.Helper()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// subrequest builds a subrequest as a proxy at 192.0.2.10 sends it.
func subrequest(method, target string, headers map[string]string, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	r.RemoteAddr = "192.0.2.10:41000"
	for k, v := range headers {
		if strings.EqualFold(k, "host") {
			r.Host = v
			continue
		}
		r.Header.Add(k, v)
	}
	return r
}

// TestMapping: each mode's subrequest becomes the CheckRequest Envoy's gRPC
// filter would send for the original request, or a 400 naming what is wrong.
func TestMapping(t *testing.T) {
	traefik := map[string]string{
		"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/orders/42?expand=items", "X-Forwarded-Host": "api.example.com",
		"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer abc", "Host": "gatehouse:8282",
		"Connection": "keep-alive",
	}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(out, kv[i])
			} else {
				out[kv[i]] = kv[i+1]
			}
		}
		return out
	}
	nginx := map[string]string{
		"X-Original-URL": "https://api.example.com/orders/42?expand=items", "X-Original-Method": "POST",
		"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Real-IP": "203.0.113.7", "Authorization": "Bearer abc", "Host": "gatehouse:8282",
	}
	cases := []struct {
		name         string
		opts         Options
		method       string
		target       string
		headers      map[string]string
		body         string
		status       int      // 0: mapped (the Checker was called)
		detail       string   // 400/413: fragment of the reason
		wantMethod   string   // mapped:
		wantPath     string   // path with query
		wantHost     string   // host and :authority
		wantScheme   string   // scheme and :scheme ("" absent)
		wantXFF      string   // x-forwarded-for the policy sees ("" absent)
		wantBody     string   // request.http.body
		absent       []string // headers the policy must not see
		wantHeaders  map[string]string
		wantNotFound bool
	}{
		{name: "traefik", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz", headers: traefik,
			wantMethod: "POST", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7",
			absent:      []string{"x-forwarded-method", "x-forwarded-uri", "host", "connection"},
			wantHeaders: map[string]string{"authorization": "Bearer abc", "x-forwarded-host": "api.example.com", "x-forwarded-proto": "https"}},
		{name: "traefik keeps the encoded path as sent", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Uri", "//admin/%2e%2e/x"), wantMethod: "POST", wantPath: "//admin/%2e%2e/x", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7"},
		{name: "traefik with a forwarded body", opts: Options{Mode: ModeTraefik}, method: "POST", target: "/authz",
			headers: with(traefik, "Content-Type", "application/json"), body: `{"a":1}`,
			wantMethod: "POST", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7", wantBody: `{"a":1}`},
		{name: "traefik body over the limit", opts: Options{Mode: ModeTraefik, MaxBodyBytes: 4}, method: "POST", target: "/authz",
			headers: traefik, body: `{"a":1}`, status: 413, detail: "forward_auth.max_body_bytes"},
		{name: "traefik without X-Forwarded-Uri", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Uri", ""), status: 400, detail: "missing X-Forwarded-Uri"},
		{name: "traefik without method and host", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Method", "", "X-Forwarded-Host", ""), status: 400, detail: "missing X-Forwarded-Method, X-Forwarded-Host"},
		{name: "traefik absolute uri", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Uri", "http://evil/x"), status: 400, detail: "X-Forwarded-Uri is not a request path"},
		{name: "traefik bad method", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Method", "GE T"), status: 400, detail: "X-Forwarded-Method is not an HTTP method"},
		{name: "traefik host with a slash", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Host", "api.example.com/admin"), status: 400, detail: "host"},
		{name: "traefik host with a question mark", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Host", "api.example.com?"), status: 400, detail: "X-Forwarded-Host is not one valid host"},
		{name: "traefik uri with a tab", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz",
			headers: with(traefik, "X-Forwarded-Uri", "/a\tb"), status: 400, detail: "white space"},
		{name: "traefik ignores a path under the prefix", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz/anything?x=1", headers: traefik,
			wantMethod: "POST", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7"},
		{name: "outside the prefix", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authzx", headers: traefik, wantNotFound: true},
		{name: "root is outside the prefix", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/", headers: traefik, wantNotFound: true},

		{name: "nginx with X-Original-URL", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: nginx,
			wantMethod: "POST", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "198.51.100.1, 203.0.113.7",
			absent: []string{"x-original-url", "x-original-method", "x-original-uri", "host"}, wantHeaders: map[string]string{"x-real-ip": "203.0.113.7"}},
		{name: "nginx URL with a port", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "http://api.example.com:8080/?q=1"),
			wantMethod: "POST", wantPath: "/?q=1", wantHost: "api.example.com:8080", wantScheme: "http", wantXFF: "198.51.100.1, 203.0.113.7"},
		{name: "nginx URL with an IPv6 host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "http://[2001:db8::1]:8080/a"),
			wantMethod: "POST", wantPath: "/a", wantHost: "[2001:db8::1]:8080", wantScheme: "http", wantXFF: "198.51.100.1, 203.0.113.7"},
		{name: "nginx URL with a fully qualified host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com./a"),
			wantMethod: "POST", wantPath: "/a", wantHost: "api.example.com.", wantScheme: "https", wantXFF: "198.51.100.1, 203.0.113.7"},
		// The URL is $scheme://$http_host$request_uri: a Host the client wrote
		// can end the authority early. Each is refused, never read as "/".
		{name: "nginx URL without a path", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "http://api.example.com:8080?q=1"), status: 400, detail: "X-Original-URL"},
		{name: "nginx host ending in ?", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com?/admin"), status: 400, detail: "X-Original-URL"},
		{name: "nginx host ending in #", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com#/admin"), status: 400, detail: "X-Original-URL"},
		{name: "nginx host with a backslash", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", `https://api.example.com\/admin`), status: 400, detail: "X-Original-URL"},
		{name: "nginx host with an escape", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com.%2e/admin"), status: 400, detail: "X-Original-URL"},
		{name: "nginx host with two ports", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com:1:2/admin"), status: 400, detail: "X-Original-URL"},
		{name: "nginx host with an empty label", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api..example.com/admin"), status: 400, detail: "X-Original-URL"},
		{name: "nginx header not UTF-8", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Note", "caf\xe9"), status: 400, detail: "UTF-8"},
		{name: "nginx client X-Original-URL against the proxy's X-Original-URI", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", "http://api.example.com/healthz", "X-Original-URI", "/admin", "X-Forwarded-Host", "api.example.com"), status: 400, detail: "different request targets"},
		{name: "nginx X-Original-URL and X-Original-URI agreeing", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers:    with(nginx, "X-Original-URL", "http://API.example.com/admin?x=1", "X-Original-URI", "/admin?x=1", "X-Forwarded-Host", "api.example.com:80"),
			wantMethod: "POST", wantPath: "/admin?x=1", wantHost: "API.example.com", wantScheme: "http", wantXFF: "198.51.100.1, 203.0.113.7"},
		{name: "nginx X-Forwarded-Host against the URL's host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Forwarded-Host", "other.example.com"), status: 400, detail: "different hosts"},
		{name: "nginx X-Original-URI with a bad X-Forwarded-Host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", "", "X-Original-URI", "/admin", "X-Forwarded-Host", "api.example.com#"), status: 400, detail: "X-Forwarded-Host is not one valid host"},
		{name: "nginx URL keeps a double slash path", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: with(nginx, "X-Original-URL", "https://api.example.com//admin/x"),
			wantMethod: "POST", wantPath: "//admin/x", wantHost: "api.example.com", wantScheme: "https", wantXFF: "198.51.100.1, 203.0.113.7"},
		{name: "nginx X-Original-URI with X-Forwarded-Host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers:    with(nginx, "X-Original-URL", "", "X-Original-URI", "/a?b=c", "X-Forwarded-Host", "api.example.com"),
			wantMethod: "POST", wantPath: "/a?b=c", wantHost: "api.example.com", wantXFF: "198.51.100.1, 203.0.113.7"},
		{name: "nginx X-Original-URI without a host", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", "", "X-Original-URI", "/a"), status: 400, detail: "needs X-Forwarded-Host"},
		{name: "nginx without any URI", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", ""), status: 400, detail: "neither X-Original-URL nor X-Original-URI"},
		{name: "nginx unparsable URL", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", "/orders"), status: 400, detail: "X-Original-URL is not an absolute"},
		{name: "nginx URL with userinfo", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-URL", "https://a@api.example.com/"), status: 400, detail: "X-Original-URL"},
		{name: "nginx without method", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Original-Method", ""), status: 400, detail: "X-Original-Method is missing"},
		{name: "nginx x-real-ip replaces x-forwarded-for", opts: Options{Mode: ModeNGINX, ClientHeader: ClientHeaderRealIP}, method: "GET", target: "/authz", headers: nginx,
			wantMethod: "POST", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7"},
		{name: "nginx x-real-ip missing", opts: Options{Mode: ModeNGINX, ClientHeader: ClientHeaderRealIP}, method: "GET", target: "/authz",
			headers: with(nginx, "X-Real-IP", ""), status: 400, detail: "X-Real-IP is missing"},
		{name: "nginx mode ignores traefik headers", opts: Options{Mode: ModeNGINX}, method: "GET", target: "/authz", headers: traefik, status: 400, detail: "X-Original"},
		{name: "traefik mode ignores nginx headers", opts: Options{Mode: ModeTraefik}, method: "GET", target: "/authz", headers: nginx, status: 400, detail: "missing X-Forwarded-Method"},

		{name: "envoy strips the prefix", opts: Options{Mode: ModeEnvoy}, method: "DELETE", target: "/authz/orders/42?expand=items",
			headers:    map[string]string{"Host": "api.example.com", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Envoy-External-Address": "203.0.113.7"},
			wantMethod: "DELETE", wantPath: "/orders/42?expand=items", wantHost: "api.example.com", wantScheme: "https", wantXFF: "203.0.113.7",
			wantHeaders: map[string]string{"x-envoy-external-address": "203.0.113.7"}},
		{name: "envoy prefix alone is the root", opts: Options{Mode: ModeEnvoy}, method: "GET", target: "/authz?x=1", headers: map[string]string{"Host": "api.example.com"},
			wantMethod: "GET", wantPath: "/?x=1", wantHost: "api.example.com"},
		{name: "envoy custom prefix", opts: Options{Mode: ModeEnvoy, PathPrefix: "/ext/"}, method: "GET", target: "/ext/%61dmin", headers: map[string]string{"Host": "api.example.com"},
			wantMethod: "GET", wantPath: "/%61dmin", wantHost: "api.example.com"},
		{name: "envoy root prefix", opts: Options{Mode: ModeEnvoy, PathPrefix: "/"}, method: "GET", target: "/orders", headers: map[string]string{"Host": "api.example.com"},
			wantMethod: "GET", wantPath: "/orders", wantHost: "api.example.com"},
		{name: "envoy host with an escape", opts: Options{Mode: ModeEnvoy}, method: "GET", target: "/authz/a", headers: map[string]string{"Host": "api.example.com.%2e"}, status: 400, detail: "Host is not one valid host"},
		{name: "envoy outside the prefix", opts: Options{Mode: ModeEnvoy}, method: "GET", target: "/orders", headers: map[string]string{"Host": "api.example.com"}, wantNotFound: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tc.opts.Checker = rec
			h := newHandler(t, tc.opts)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, subrequest(tc.method, tc.target, tc.headers, tc.body))
			switch {
			case tc.wantNotFound:
				if w.Code != 404 || rec.got != nil {
					t.Fatalf("status %d, checked %v; want 404 without a check", w.Code, rec.got != nil)
				}
				return
			case tc.status != 0:
				if w.Code != tc.status || rec.got != nil {
					t.Fatalf("status %d (checked: %v), want %d without a check: %s", w.Code, rec.got != nil, tc.status, w.Body)
				}
				if !strings.Contains(w.Body.String(), tc.detail) {
					t.Errorf("body %s does not name %q", w.Body, tc.detail)
				}
				return
			}
			if w.Code != 200 || rec.got == nil {
				t.Fatalf("status %d, want the check's 200: %s", w.Code, w.Body)
			}
			a := rec.got.GetAttributes()
			hr := a.GetRequest().GetHttp()
			if got := a.GetSource().GetAddress().GetSocketAddress(); got.GetAddress() != "192.0.2.10" || got.GetPortValue() != 41000 {
				t.Errorf("source = %v, want the proxy 192.0.2.10:41000", got)
			}
			hd := hr.GetHeaders()
			if hr.GetMethod() != tc.wantMethod || hd[":method"] != tc.wantMethod {
				t.Errorf("method = %q / %q, want %q", hr.GetMethod(), hd[":method"], tc.wantMethod)
			}
			if hr.GetPath() != tc.wantPath || hd[":path"] != tc.wantPath {
				t.Errorf("path = %q / %q, want %q", hr.GetPath(), hd[":path"], tc.wantPath)
			}
			if hr.GetHost() != tc.wantHost || hd[":authority"] != tc.wantHost {
				t.Errorf("host = %q / %q, want %q", hr.GetHost(), hd[":authority"], tc.wantHost)
			}
			if hr.GetScheme() != tc.wantScheme || hd[":scheme"] != tc.wantScheme {
				t.Errorf("scheme = %q / %q, want %q", hr.GetScheme(), hd[":scheme"], tc.wantScheme)
			}
			if xff, ok := hd["x-forwarded-for"]; xff != tc.wantXFF || ok != (tc.wantXFF != "") {
				t.Errorf("x-forwarded-for = %q (present %v), want %q", xff, ok, tc.wantXFF)
			}
			if hr.GetBody() != tc.wantBody {
				t.Errorf("body = %q, want %q", hr.GetBody(), tc.wantBody)
			}
			for _, name := range tc.absent {
				if v, ok := hd[name]; ok {
					t.Errorf("header %q = %q must not reach the policy", name, v)
				}
			}
			for k, v := range tc.wantHeaders {
				if hd[k] != v {
					t.Errorf("header %q = %q, want %q", k, hd[k], v)
				}
			}
			for k := range hd {
				if k != strings.ToLower(k) {
					t.Errorf("header name %q is not lower-case", k)
				}
			}
			if hr.GetId() == "" || hr.GetProtocol() != "HTTP/1.1" || a.GetRequest().GetTime() == nil {
				t.Errorf("id %q, protocol %q, time %v: Envoy always sets them", hr.GetId(), hr.GetProtocol(), a.GetRequest().GetTime())
			}
		})
	}
}

func header(k, v string, appendValue bool) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapperspb.Bool(appendValue)}
}

func withDecisionID(resp *authv3.CheckResponse, id string) *authv3.CheckResponse {
	resp.DynamicMetadata, _ = structpb.NewStruct(map[string]any{"decision_id": id})
	return resp
}

// TestResponse: the CheckResponse becomes the answer each proxy understands;
// nothing but an OK status is a 2xx.
func TestResponse(t *testing.T) {
	allow := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				header("x-jwt-sub", "alice", false), header("x-tag", "a", false), header("x-tag", "b", true),
				header("content-length", "99", false), header("bad name", "x", false),
			},
			HeadersToRemove: []string{"x-jwt-payload", "authorization"},
		}},
	}
	deny401 := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_UNAUTHENTICATED), Message: "token_missing"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			// The server also puts the decision id on denials itself: one value reaches the proxy.
			Headers: []*corev3.HeaderValueOption{header("www-authenticate", `Bearer realm="gatehouse"`, false), header("content-type", "application/json", false), header("x-gatehouse-decision-id", "d-2", false)},
			Body:    `{"reason":"token_missing"}`,
		}},
	}
	redirect := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Found},
			Headers: []*corev3.HeaderValueOption{header("location", "https://login.example.com/", false)},
		}},
	}
	cases := []struct {
		name    string
		mode    string
		resp    *authv3.CheckResponse
		err     error
		status  int
		headers map[string][]string // nil value: must be absent
		body    string
	}{
		{"allow with identity headers", ModeTraefik, allow, nil, 200,
			map[string][]string{"X-Jwt-Sub": {"alice"}, "X-Tag": {"a", "b"}, "X-Envoy-Auth-Headers-To-Remove": nil, "X-Gatehouse-Decision-Id": nil}, ""},
		{"allow in envoy mode says what to remove", ModeEnvoy, allow, nil, 200,
			map[string][]string{"X-Jwt-Sub": {"alice"}, "X-Envoy-Auth-Headers-To-Remove": {"x-jwt-payload,authorization"}}, ""},
		{"allow with a decision id", ModeNGINX, withDecisionID(proto(allow), "d-1"), nil, 200,
			map[string][]string{"X-Gatehouse-Decision-Id": {"d-1"}, "X-Jwt-Sub": {"alice"}}, ""},
		{"deny 401 with challenge and body", ModeNGINX, withDecisionID(proto(deny401), "d-2"), nil, 401,
			map[string][]string{"Www-Authenticate": {`Bearer realm="gatehouse"`}, "X-Gatehouse-Decision-Id": {"d-2"}}, `{"reason":"token_missing"}`},
		{"deny redirect", ModeTraefik, redirect, nil, 302, map[string][]string{"Location": {"https://login.example.com/"}}, ""},
		{"deny without a denied response", ModeTraefik, &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}}, nil, 403, nil, ""},
		{"deny with a 2xx status", ModeTraefik, &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK}}},
		}, nil, 403, nil, ""},
		{"deny with an allow-shaped body", ModeTraefik, &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{header("x-jwt-sub", "alice", false)}}},
		}, nil, 403, map[string][]string{"X-Jwt-Sub": nil}, ""},
		{"no response at all", ModeTraefik, nil, nil, 403, nil, ""},
		{"check error", ModeTraefik, nil, errors.New("boom"), 500, map[string][]string{"Content-Type": {"application/json"}}, `"reason":"internal_error"`},
	}
	traefik := map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/", "X-Forwarded-Host": "a", "X-Forwarded-Proto": "https"}
	nginx := map[string]string{"X-Original-URL": "https://a/", "X-Original-Method": "GET"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{resp: tc.resp, err: tc.err}
			if tc.resp == nil && tc.err == nil {
				rec.resp = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_INTERNAL)}}
			}
			h := newHandler(t, Options{Checker: rec, Mode: tc.mode})
			hd := map[string]string{"Host": "a"}
			switch tc.mode {
			case ModeTraefik:
				hd = traefik
			case ModeNGINX:
				hd = nginx
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, subrequest("GET", "/authz", hd, ""))
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			for k, want := range tc.headers {
				got := w.Header().Values(k)
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if v := w.Header().Values("Content-Length"); len(v) > 0 {
				t.Errorf("a policy must not set framing headers: %q", v)
			}
			if tc.body != "" && !strings.Contains(w.Body.String(), tc.body) {
				t.Errorf("body %q, want %q", w.Body, tc.body)
			}
		})
	}
}

func proto(r *authv3.CheckResponse) *authv3.CheckResponse {
	// A shallow copy is enough: withDecisionID only sets DynamicMetadata.
	return &authv3.CheckResponse{Status: r.Status, HttpResponse: r.HttpResponse}
}

func TestNewRefusesBadOptions(t *testing.T) {
	rec := &recorder{}
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no checker", Options{Mode: ModeNGINX}, "Checker"},
		{"no mode", Options{Checker: rec}, "forward_auth.mode"},
		{"unknown mode", Options{Checker: rec, Mode: "haproxy"}, "forward_auth.mode"},
		{"relative prefix", Options{Checker: rec, Mode: ModeEnvoy, PathPrefix: "authz"}, "forward_auth.path_prefix"},
		{"prefix with query", Options{Checker: rec, Mode: ModeEnvoy, PathPrefix: "/a?b"}, "forward_auth.path_prefix"},
		{"real ip outside nginx mode", Options{Checker: rec, Mode: ModeTraefik, ClientHeader: ClientHeaderRealIP}, "forward_auth.nginx_client_header"},
		{"unknown client header", Options{Checker: rec, Mode: ModeNGINX, ClientHeader: "forwarded"}, "forward_auth.nginx_client_header"},
		{"negative body", Options{Checker: rec, Mode: ModeNGINX, MaxBodyBytes: -1}, "forward_auth.max_body_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
