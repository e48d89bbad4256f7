package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeAuthz is a tiny ext_authz server: it allows when the request carries
// "x-allow: yes", fails with a gRPC error on "x-grpc-error", blocks until the
// deadline on "x-stall", and otherwise denies with 401, a body and headers.
// It records every request it receives.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu   sync.Mutex
	got  []*authv3.CheckRequest
	addr string
}

var _ authv3.AuthorizationServer = (*fakeAuthz)(nil)

func (f *fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, proto.Clone(req).(*authv3.CheckRequest))
	f.mu.Unlock()
	headers := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	switch {
	case headers["x-grpc-error"] != "":
		return nil, status.Error(codes.Internal, "fake failure")
	case headers["x-stall"] != "":
		<-ctx.Done()
		return nil, ctx.Err()
	case headers["x-allow"] == "yes":
		md, _ := structpb.NewStruct(map[string]any{"user": "alice"})
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{{
					Header: &corev3.HeaderValue{Key: "x-user", Value: "alice"},
					Append: wrapperspb.Bool(false),
				}},
				HeadersToRemove: []string{"x-user-id"},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
					Header:       &corev3.HeaderValue{Key: "x-decision", Value: "allow"},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}},
				QueryParametersToSet:    []*corev3.QueryParameter{{Key: "tenant", Value: "acme"}},
				QueryParametersToRemove: []string{"debug"},
			}},
			DynamicMetadata: md,
		}, nil
	default:
		md, _ := structpb.NewStruct(map[string]any{"reason": "token_missing"})
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated), Message: "token missing"},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{{
					Header: &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer realm="test"`},
					Append: wrapperspb.Bool(false),
				}},
				Body: "no token\n",
			}},
			DynamicMetadata: md,
		}, nil
	}
}

func (f *fakeAuthz) requests() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.got...)
}

func (f *fakeAuthz) last(t *testing.T) *authv3.CheckRequest {
	t.Helper()
	got := f.requests()
	if len(got) == 0 {
		t.Fatal("server received no request")
	}
	return got[len(got)-1]
}

// startFakeAuthz serves a fakeAuthz on 127.0.0.1:0 for the test's lifetime.
func startFakeAuthz(t *testing.T) *fakeAuthz {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAuthz{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func TestCheckAllowedSendsEnvoyShapedRequest(t *testing.T) {
	srv := startFakeAuthz(t)
	r := runCLI(t, "check", "--addr", srv.addr,
		"--method", "POST", "--path", "/orders/7?expand=items", "--host", "api.example.com", "--scheme", "https",
		"-H", "X-Allow: yes", "-H", "X-Multi: a", "-H", "x-multi:b", "-H", "Content-Type:  application/json ",
		"--token", "tok123", "--source-ip", "203.0.113.7:41000", "--dest-ip", "10.0.0.5",
		"--body", `{"qty":2}`, "--principal", "spiffe://cluster.local/ns/default/sa/web",
		"--context-extension", "route=orders", "--context-extension", "team=shop")
	r.wantCode(t, exitOK)

	for _, want := range []string{
		"ALLOWED\n",
		"grpc status:    OK\n",
		"headers to add (upstream request):\n  x-user: alice  [append=false]\n",
		"headers to remove (upstream request):\n  x-user-id\n",
		"response headers to add (client response):\n  x-decision: allow  [append_action=OVERWRITE_IF_EXISTS_OR_ADD]\n",
		"query parameters to set:\n  tenant=acme\n",
		"query parameters to remove:\n  debug\n",
		`"user": "alice"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "http status") {
		t.Errorf("an allow printed an HTTP status:\n%s", r.stdout)
	}

	req := srv.last(t)
	http := req.GetAttributes().GetRequest().GetHttp()
	wantHeaders := map[string]string{
		":authority":        "api.example.com",
		":method":           "POST",
		":path":             "/orders/7?expand=items",
		":scheme":           "https",
		"x-allow":           "yes",
		"x-multi":           "a,b",
		"content-type":      "application/json",
		"authorization":     "Bearer tok123",
		"content-length":    "9",
		"x-forwarded-proto": "https",
	}
	for k, v := range wantHeaders {
		if http.GetHeaders()[k] != v {
			t.Errorf("header %q = %q, want %q", k, http.GetHeaders()[k], v)
		}
	}
	for k := range http.GetHeaders() {
		if k != strings.ToLower(k) {
			t.Errorf("header name %q is not lower-case", k)
		}
	}
	if len(http.GetHeaders()["x-request-id"]) != 36 {
		t.Errorf("x-request-id = %q, want a UUID", http.GetHeaders()["x-request-id"])
	}
	if http.GetId() == "" {
		t.Error("request id is empty")
	}
	if http.GetMethod() != "POST" || http.GetPath() != "/orders/7?expand=items" || http.GetHost() != "api.example.com" ||
		http.GetScheme() != "https" || http.GetProtocol() != "HTTP/1.1" || http.GetBody() != `{"qty":2}` || http.GetSize() != 9 {
		t.Errorf("http attributes = %v", http)
	}
	if http.GetQuery() != "" || http.GetFragment() != "" {
		t.Errorf("query/fragment must stay empty as Envoy leaves them, got %q %q", http.GetQuery(), http.GetFragment())
	}
	src := req.GetAttributes().GetSource()
	if a := src.GetAddress().GetSocketAddress(); a.GetAddress() != "203.0.113.7" || a.GetPortValue() != 41000 {
		t.Errorf("source address = %v", a)
	}
	if src.GetPrincipal() != "spiffe://cluster.local/ns/default/sa/web" {
		t.Errorf("source principal = %q", src.GetPrincipal())
	}
	if a := req.GetAttributes().GetDestination().GetAddress().GetSocketAddress(); a.GetAddress() != "10.0.0.5" || a.GetPortValue() != 443 {
		t.Errorf("destination address = %v, want 10.0.0.5:443", a)
	}
	wantExt := map[string]string{"route": "orders", "team": "shop"}
	if got := req.GetAttributes().GetContextExtensions(); !reflect.DeepEqual(got, wantExt) {
		t.Errorf("context extensions = %v, want %v", got, wantExt)
	}
}

func TestCheckDenied(t *testing.T) {
	srv := startFakeAuthz(t)
	r := runCLI(t, "check", "--addr", srv.addr, "--path", "/admin")
	r.wantCode(t, exitNo)
	for _, want := range []string{
		"DENIED\n",
		"grpc status:    UNAUTHENTICATED: token missing\n",
		"http status:    401 Unauthorized\n",
		"headers (sent to the client):\n  www-authenticate: Bearer realm=\"test\"  [append=false]\n",
		"body:\n  no token\n",
		`"reason": "token_missing"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
		}
	}
	if r.stderr != "" {
		t.Errorf("a denial wrote to stderr: %q", r.stderr)
	}
	// Defaults: GET / on example.com from 127.0.0.1 to 127.0.0.1:80.
	req := srv.last(t)
	h := req.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()[":method"] != "GET" || h.GetHeaders()[":authority"] != "example.com" || h.GetHeaders()[":scheme"] != "http" {
		t.Errorf("default pseudo-headers = %v", h.GetHeaders())
	}
	if _, ok := h.GetHeaders()["content-length"]; ok || h.GetSize() != 0 {
		t.Errorf("a bodiless request has content-length %q / size %d", h.GetHeaders()["content-length"], h.GetSize())
	}
	if a := req.GetAttributes().GetSource().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" {
		t.Errorf("default source = %v", a)
	}
	if a := req.GetAttributes().GetDestination().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 80 {
		t.Errorf("default destination = %v", a)
	}
}

func TestCheckJSONOutput(t *testing.T) {
	srv := startFakeAuthz(t)
	wantKeys := []string{"allowed", "body", "dynamic_metadata", "error_response", "grpc_code", "grpc_message",
		"headers", "headers_to_remove", "http_status", "query_parameters_to_remove", "query_parameters_to_set",
		"response_headers_to_add"}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string // the whole expected object
	}{
		{
			name:     "allowed",
			args:     []string{"-H", "x-allow: yes"},
			wantCode: exitOK,
			want: `{"allowed":true,"grpc_code":"OK","grpc_message":"","error_response":false,"http_status":0,
				"headers":[{"key":"x-user","value":"alice","append":false,"append_action":"APPEND_IF_EXISTS_OR_ADD"}],
				"headers_to_remove":["x-user-id"],
				"response_headers_to_add":[{"key":"x-decision","value":"allow","append":null,"append_action":"OVERWRITE_IF_EXISTS_OR_ADD"}],
				"query_parameters_to_set":[{"key":"tenant","value":"acme"}],"query_parameters_to_remove":["debug"],
				"body":"","dynamic_metadata":{"user":"alice"}}`,
		},
		{
			name:     "denied",
			args:     nil,
			wantCode: exitNo,
			want: `{"allowed":false,"grpc_code":"UNAUTHENTICATED","grpc_message":"token missing","error_response":false,"http_status":401,
				"headers":[{"key":"www-authenticate","value":"Bearer realm=\"test\"","append":false,"append_action":"APPEND_IF_EXISTS_OR_ADD"}],
				"headers_to_remove":[],"response_headers_to_add":[],"query_parameters_to_set":[],"query_parameters_to_remove":[],
				"body":"no token\n","dynamic_metadata":{"reason":"token_missing"}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"check", "--json", "--addr", srv.addr}, tc.args...)...)
			r.wantCode(t, tc.wantCode)
			var got, want map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range got {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if !reflect.DeepEqual(keys, wantKeys) {
				t.Errorf("keys = %v, want %v", keys, wantKeys)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func TestCheckRequestFile(t *testing.T) {
	srv := startFakeAuthz(t)
	const reqJSON = `{"attributes": {
		"source": {"address": {"socketAddress": {"address": "198.51.100.9", "portValue": 5555}}},
		"request": {"http": {"id": "42", "method": "DELETE", "path": "/items/1", "host": "h.test",
			"headers": {":method": "DELETE", ":path": "/items/1", ":authority": "h.test", "x-allow": "yes"}}}}}`
	file := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(file, []byte(reqJSON), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		runCLI(t, "check", "--addr", srv.addr, "--request", file).wantCode(t, exitOK)
		h := srv.last(t).GetAttributes().GetRequest().GetHttp()
		if h.GetId() != "42" || h.GetMethod() != "DELETE" || h.GetHeaders()["x-allow"] != "yes" {
			t.Errorf("server got %v", h)
		}
		if _, added := h.GetHeaders()["x-request-id"]; added {
			t.Error("a --request file was modified before sending")
		}
	})
	t.Run("stdin", func(t *testing.T) {
		runCLIStdin(t, reqJSON, "check", "--addr", srv.addr, "--request", "-").wantCode(t, exitOK)
		if a := srv.last(t).GetAttributes().GetSource().GetAddress().GetSocketAddress(); a.GetPortValue() != 5555 {
			t.Errorf("source = %v", a)
		}
	})
	t.Run("round trip of --dry-run", func(t *testing.T) {
		before := len(srv.requests())
		dry := runCLI(t, "check", "--dry-run", "--addr", srv.addr, "-H", "x-allow: yes", "--path", "/dry")
		dry.wantCode(t, exitOK)
		if len(srv.requests()) != before {
			t.Fatal("--dry-run sent the request")
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal([]byte(dry.stdout), &req); err != nil {
			t.Fatalf("--dry-run output is not a protojson CheckRequest: %v\n%s", err, dry.stdout)
		}
		runCLIStdin(t, dry.stdout, "check", "--addr", srv.addr, "--request", "-").wantCode(t, exitOK)
		if got := srv.last(t); !proto.Equal(got, &req) {
			t.Errorf("replayed request differs:\n%v\n%v", got, &req)
		}
	})
	t.Run("print-request goes to stderr and still sends", func(t *testing.T) {
		r := runCLI(t, "check", "--print-request", "--json", "--addr", srv.addr, "-H", "x-allow: yes")
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stderr, `":authority": "example.com"`) {
			t.Errorf("stderr lacks the request:\n%s", r.stderr)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Errorf("stdout is not just the JSON result: %v", err)
		}
	})
}

func TestCheckErrors(t *testing.T) {
	srv := startFakeAuthz(t)
	// A port that was free a moment ago: nothing listens there now.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := lis.Addr().String()
	lis.Close()

	badJSON := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badJSON, []byte(`{"attributes": {"nope": 1}}`), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{name: "unreachable server", args: []string{"--addr", deadAddr, "--timeout", "2s"}, wantStderr: "Unavailable"},
		{name: "grpc error from server", args: []string{"--addr", srv.addr, "-H", "x-grpc-error: 1"}, wantStderr: "fake failure"},
		{name: "timeout", args: []string{"--addr", srv.addr, "-H", "x-stall: 1", "--timeout", "200ms"}, wantStderr: "DeadlineExceeded"},
		{name: "header without colon", args: []string{"--addr", srv.addr, "-H", "x-allow yes"}, wantStderr: "want 'name: value'"},
		{name: "pseudo-header via -H", args: []string{"--addr", srv.addr, "-H", ":path: /x"}, wantStderr: "pseudo-headers"},
		{name: "bad source ip", args: []string{"--addr", srv.addr, "--source-ip", "nope"}, wantStderr: "--source-ip"},
		{name: "bad context extension", args: []string{"--addr", srv.addr, "--context-extension", "novalue"}, wantStderr: "key=value"},
		{name: "missing request file", args: []string{"--addr", srv.addr, "--request", "/nonexistent/req.json"}, wantStderr: "--request"},
		{name: "malformed request file", args: []string{"--addr", srv.addr, "--request", badJSON}, wantStderr: "not a protojson CheckRequest"},
		{name: "request file with shaping flags", args: []string{"--addr", srv.addr, "--request", badJSON, "--method", "PUT"}, wantStderr: "--method cannot be combined"},
		{name: "tls and insecure", args: []string{"--addr", srv.addr, "--tls", "--insecure"}, wantStderr: "conflicts"},
		{name: "missing ca file", args: []string{"--addr", srv.addr, "--ca-file", "/nonexistent/ca.pem"}, wantStderr: "--ca-file"},
		{name: "positional argument", args: []string{"--addr", srv.addr, "extra"}, wantStderr: "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := runCLI(t, append([]string{"check"}, tc.args...)...)
			r.wantCode(t, exitError)
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("an error wrote to stdout: %q", r.stdout)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestBuildCheckRequest(t *testing.T) {
	ids := requestIDs{streamID: "7", requestID: "00000000-0000-4000-8000-000000000000"}
	base := requestSpec{method: "GET", path: "/", host: "example.com", scheme: "http", sourceAddr: "127.0.0.1"}
	tests := []struct {
		name    string
		edit    func(*requestSpec)
		check   func(t *testing.T, req *authv3.CheckRequest)
		wantErr string
	}{
		{
			name: "host header becomes the authority",
			edit: func(s *requestSpec) { s.headers = []string{"Host: other.test"} },
			check: func(t *testing.T, req *authv3.CheckRequest) {
				h := req.GetAttributes().GetRequest().GetHttp()
				if h.GetHost() != "other.test" || h.GetHeaders()[":authority"] != "other.test" {
					t.Errorf("host %q authority %q", h.GetHost(), h.GetHeaders()[":authority"])
				}
				if _, ok := h.GetHeaders()["host"]; ok {
					t.Error("a separate host header was kept")
				}
			},
		},
		{
			name:    "host header conflicting with --host",
			edit:    func(s *requestSpec) { s.headers, s.hostSet = []string{"host: a.test"}, true },
			wantErr: "conflicts with --host",
		},
		{
			name: "token joins an existing authorization header",
			edit: func(s *requestSpec) { s.headers, s.token = []string{"Authorization: Basic eA=="}, "t" },
			check: func(t *testing.T, req *authv3.CheckRequest) {
				if got := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]; got != "Basic eA==,Bearer t" {
					t.Errorf("authorization = %q", got)
				}
			},
		},
		{
			name: "user x-request-id and x-forwarded-proto win",
			edit: func(s *requestSpec) { s.headers = []string{"x-request-id: mine", "X-Forwarded-Proto: https"} },
			check: func(t *testing.T, req *authv3.CheckRequest) {
				h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
				if h["x-request-id"] != "mine" || h["x-forwarded-proto"] != "https" {
					t.Errorf("headers %v", h)
				}
			},
		},
		{
			name: "ipv6 source with port, bare ipv6 destination",
			edit: func(s *requestSpec) { s.sourceAddr, s.destAddr = "[2001:db8::1]:8443", "::1" },
			check: func(t *testing.T, req *authv3.CheckRequest) {
				src := req.GetAttributes().GetSource().GetAddress().GetSocketAddress()
				dst := req.GetAttributes().GetDestination().GetAddress().GetSocketAddress()
				if src.GetAddress() != "2001:db8::1" || src.GetPortValue() != 8443 || dst.GetAddress() != "::1" || dst.GetPortValue() != 80 {
					t.Errorf("source %v destination %v", src, dst)
				}
			},
		},
		{
			name: "ids are used as given",
			edit: func(*requestSpec) {},
			check: func(t *testing.T, req *authv3.CheckRequest) {
				h := req.GetAttributes().GetRequest().GetHttp()
				if h.GetId() != "7" || h.GetHeaders()["x-request-id"] != ids.requestID {
					t.Errorf("id %q x-request-id %q", h.GetId(), h.GetHeaders()["x-request-id"])
				}
			},
		},
		{name: "bad scheme", edit: func(s *requestSpec) { s.scheme = "ftp" }, wantErr: "--scheme"},
		{name: "bad header name", edit: func(s *requestSpec) { s.headers = []string{"x y: z"} }, wantErr: "invalid header name"},
		{name: "empty path", edit: func(s *requestSpec) { s.path = "" }, wantErr: "--path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			tc.edit(&spec)
			req, err := buildCheckRequest(spec, ids)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, req)
		})
	}
}

func TestResultFromCheckResponse(t *testing.T) {
	tests := []struct {
		name        string
		resp        *authv3.CheckResponse
		wantAllowed bool
		wantStatus  int
		wantNote    string
	}{
		{name: "unset status allows", resp: &authv3.CheckResponse{}, wantAllowed: true},
		{
			name:       "denied without http status is 403",
			resp:       &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}},
			wantStatus: 403,
		},
		{
			name: "status decides over the oneof",
			resp: &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{
				DeniedResponse: &authv3.DeniedHttpResponse{Body: "x"}}},
			wantAllowed: true,
			wantNote:    "Envoy allows",
		},
		{
			name: "error_response",
			resp: &authv3.CheckResponse{
				Status:       &rpcstatus.Status{Code: int32(codes.Unavailable)},
				HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{Body: "down"}}},
			wantStatus: 403,
			wantNote:   "failure_mode_allow",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := resultFromCheckResponse(tc.resp)
			if r.Allowed != tc.wantAllowed || r.HTTPStatus != tc.wantStatus {
				t.Errorf("allowed %t status %d, want %t %d", r.Allowed, r.HTTPStatus, tc.wantAllowed, tc.wantStatus)
			}
			notes := strings.Join(r.notes, "\n")
			if tc.wantNote != "" && !strings.Contains(notes, tc.wantNote) {
				t.Errorf("notes %q, want %q", notes, tc.wantNote)
			}
		})
	}
}
