package authz

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

// richRequest exercises every kind of field Envoy sends: strings, 64-bit
// integers, enums, bytes, maps, a Timestamp and a Struct.
func richRequest() *authv3.CheckRequest {
	meta, _ := structpb.NewStruct(map[string]any{"tenant": "acme", "n": 3.5, "list": []any{"a", true}})
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:   &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "203.0.113.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}},
			Principal: "spiffe://cluster.local/ns/default/sa/client",
		},
		Destination: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.5", Protocol: corev3.SocketAddress_UDP, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(timestamppb.Now().AsTime().Truncate(1000)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "42", Method: "POST", Path: "/people/caf%C3%A9/1?lang=en&lang=fr&q=a+b", Host: "api.example.com",
				Scheme: "https", Protocol: "HTTP/2", Size: 1234567890123,
				Headers: map[string]string{":path": "/people", ":method": "POST", "content-type": "application/json", "x-b3": "x"},
				Body:    `{"a": [1, 2.5, "x"], "b": {"c": null}}`,
				RawBody: []byte{0, 1, 2, 255},
			},
		},
		ContextExtensions: map[string]string{"route": "orders"},
		MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": meta}},
		TlsSession:        &authv3.AttributeContext_TLSSession{Sni: "api.example.com"},
	}}
}

// TestAttributesMatchOPAEnvoy pins input.attributes to what the real
// OPA-Envoy built for every CheckRequest of the compatibility corpus
// (test/compat/testdata, recorded from the binary by test/compat/record):
// OPA-Envoy walks the message with protoreflect, so 64-bit integers and enums
// are numbers and a Timestamp is {"seconds", "nanos"}, whatever protojson
// would write.
func TestAttributesMatchOPAEnvoy(t *testing.T) {
	const corpusDir = "../test/compat/testdata"
	suites, err := corpus.LoadSuites(filepath.Join(corpusDir, "suites"))
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, s := range suites {
		rec, err := corpus.ReadRecording(filepath.Join(corpusDir, "recorded"), s.Name)
		if err != nil {
			t.Fatal(err)
		}
		recorded := map[string]corpus.Answer{}
		for _, a := range rec.Cases {
			recorded[a.Name] = a
		}
		for _, c := range s.Cases {
			in := recorded[c.Name].Input
			if in == nil {
				continue // OPA-Envoy rejected the request before building the input
			}
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(c.Request, &req); err != nil {
				t.Fatalf("%s/%s: %v", s.Name, c.Name, err)
			}
			want, err := ast.ValueFromReader(bytes.NewReader(in))
			if err != nil {
				t.Fatalf("%s/%s: recorded input: %v", s.Name, c.Name, err)
			}
			wantAttrs := want.(ast.Object).Get(ast.StringTerm("attributes"))
			if wantAttrs == nil {
				continue // no attributes at all: see #diff-no-attributes in docs/policies.md
			}
			got := messageValue(req.GetAttributes().ProtoReflect())
			if got.Compare(wantAttrs.Value) != 0 {
				t.Errorf("%s/%s: attributes differ from OPA-Envoy's\n got: %v\nwant: %v", s.Name, c.Name, got, wantAttrs.Value)
			}
			compared++
		}
	}
	// The recording must show the types this test exists for; a recording
	// made from a protojson-based build would not.
	rich := messageValue(richRequest().GetAttributes().ProtoReflect())
	for path, want := range map[string]string{
		"request.http.size":                          `1234567890123`,
		"destination.address.socketAddress.protocol": `1`,
		"request.http.rawBody":                       `"AAEC/w=="`,
		"source.address.socketAddress.portValue":     `51234`,
	} {
		if got := get(t, rich, path); got == nil || got.Compare(ast.MustParseTerm(want).Value) != 0 {
			t.Errorf("%s = %v, want %s", path, got, want)
		}
	}
	if ts, ok := get(t, rich, "request.time").(ast.Object); !ok || ts.Get(ast.StringTerm("seconds")) == nil {
		t.Errorf("request.time = %v, want {\"seconds\": ..., \"nanos\": ...}", get(t, rich, "request.time"))
	}
	if compared < 100 {
		t.Fatalf("compared %d recorded inputs, want the whole corpus (>= 100)", compared)
	}
}

func get(t *testing.T, v ast.Value, path string) ast.Value {
	t.Helper()
	cur := v
	for _, k := range strings.Split(path, ".") {
		obj, ok := cur.(ast.Object)
		if !ok {
			return nil
		}
		term := obj.Get(ast.StringTerm(k))
		if term == nil {
			return nil
		}
		cur = term.Value
	}
	return cur
}

func mustInput(t *testing.T, req *authv3.CheckRequest, ip clientip.Result, tok *jwt.Result) ast.Value {
	t.Helper()
	r, err := newRequest(req, &DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	in, err := buildInput(r, ip, tok, DefaultMaxParseBodyBytes)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func httpReq(path string, headers map[string]string, body string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: headers, Body: body},
	}}}
}

func TestBuildInput(t *testing.T) {
	peer := clientip.Result{Addr: netip.MustParseAddr("203.0.113.9"), Source: "peer"}
	cases := []struct {
		name string
		req  *authv3.CheckRequest
		ip   clientip.Result
		tok  *jwt.Result
		want map[string]string // dotted path -> Rego literal; "<absent>" for absent
	}{
		{
			name: "path and query",
			req:  httpReq("/people/caf%C3%A9/1?lang=en&lang=fr&q=a+b&empty=", map[string]string{":path": "/people"}, ""),
			want: map[string]string{
				"parsed_path":    `["people", "café", "1"]`,
				"parsed_query":   `{"lang": ["en", "fr"], "q": ["a b"], "empty": [""]}`,
				"version":        `{"ext_authz": "v3", "encoding": "protojson"}`,
				"truncated_body": `false`,
				"parsed_body":    `<absent>`,
				"jwt":            `<absent>`,
			},
		},
		{
			name: "double slash is a path, not a host",
			req:  httpReq("//admin/secret?y=1", nil, ""),
			want: map[string]string{"parsed_path": `["admin", "secret"]`, "parsed_query": `{"y": ["1"]}`},
		},
		{
			name: "encoded slash decoded",
			req:  httpReq("/a%2Fb/c", nil, ""),
			want: map[string]string{"parsed_path": `["a", "b", "c"]`},
		},
		{
			name: "body over the parse limit is left unparsed",
			req:  httpReq("/", map[string]string{"content-type": "application/json"}, `["`+strings.Repeat("x", DefaultMaxParseBodyBytes)+`"]`),
			want: map[string]string{"parsed_body": `<absent>`, "truncated_body": `false`},
		},
		{
			name: "root path",
			req:  httpReq("/", nil, ""),
			want: map[string]string{"parsed_path": `[""]`, "parsed_query": `{}`},
		},
		{
			name: "no attributes at all: absent, as in OPA-Envoy",
			req:  &authv3.CheckRequest{},
			want: map[string]string{"parsed_path": `[""]`, "attributes": `<absent>`, "client_ip": `""`, "source_principal": `<absent>`},
		},
		{
			name: "pseudo-headers and mixed-case names lower-cased",
			req:  httpReq("/", map[string]string{":authority": "api.example.com", ":method": "GET", "X-Tenant-ID": "acme"}, ""),
			want: map[string]string{"attributes.request.http.headers": `{":authority": "api.example.com", ":method": "GET", "x-tenant-id": "acme"}`},
		},
		{
			name: "json body",
			req:  httpReq("/", map[string]string{"content-type": "application/json; charset=utf-8"}, `{"a": [1, 2.5], "b": null}`),
			want: map[string]string{"parsed_body": `{"a": [1, 2.5], "b": null}`, "attributes.request.http.body": `"{\"a\": [1, 2.5], \"b\": null}"`},
		},
		{
			name: "form body",
			req:  httpReq("/", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=1&a=2&b=x%20y"),
			want: map[string]string{"parsed_body": `{"a": ["1", "2"], "b": ["x y"]}`},
		},
		{
			name: "multipart body",
			req: httpReq("/", map[string]string{"content-type": "multipart/form-data; boundary=XYZ"},
				"--XYZ\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n--XYZ--\r\n"),
			want: map[string]string{"parsed_body": `{"field": ["value"]}`},
		},
		{
			name: "multipart with a file and a json part",
			req: httpReq("/", map[string]string{"content-type": "multipart/form-data; boundary=XYZ"},
				"--XYZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"role\": \"admin\"}\r\n"+
					"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n"+
					"--XYZ\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\nsecond\r\n--XYZ--\r\n"),
			want: map[string]string{"parsed_body": `{"meta": [{"role": "admin"}, "second"], "file": ["hello"]}`},
		},
		{
			name: "multipart without a boundary: no parsed_body, the policy decides (as OPA-Envoy)",
			req:  httpReq("/", map[string]string{"content-type": "multipart/form-data"}, "x"),
			want: map[string]string{"parsed_body": `<absent>`, "truncated_body": `false`},
		},
		{
			name: "json content type with odd parameters still parses",
			req:  httpReq("/", map[string]string{"content-type": `application/json;charset="utf-8`}, `{"admin": true}`),
			want: map[string]string{"parsed_body": `{"admin": true}`},
		},
		{
			name: "text body is not parsed",
			req:  httpReq("/", map[string]string{"content-type": "text/plain"}, `{"a": 1}`),
			want: map[string]string{"parsed_body": `<absent>`},
		},
		{
			name: "partial body flagged by envoy",
			req:  httpReq("/", map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"}, `{"a": 1`),
			want: map[string]string{"truncated_body": `true`, "parsed_body": `<absent>`},
		},
		{
			name: "partial body by content-length",
			req:  httpReq("/", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"a": 1`),
			want: map[string]string{"truncated_body": `true`, "parsed_body": `<absent>`},
		},
		{
			name: "raw body",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Path: "/", Headers: map[string]string{"content-type": "application/json"}, RawBody: []byte(`{"raw": 1}`)}}}},
			want: map[string]string{"parsed_body": `{"raw": 1}`},
		},
		{
			name: "header_map when headers are encoded raw",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Path: "/", HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-a", RawValue: []byte("1")}, {Key: "x-a", Value: "2"}}}}}}},
			want: map[string]string{
				"attributes.request.http.headerMap.headers": `[{"key": "x-a", "rawValue": "MQ=="}, {"key": "x-a", "value": "2"}]`,
				"attributes.request.http.headers":           `{"x-a": "1,2"}`,
			},
		},
		{
			name: "source principal and client ip facts",
			req:  &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Principal: "spiffe://x"}}},
			ip:   clientip.Result{Addr: netip.MustParseAddr("10.1.2.3"), Source: "xff", Fallback: ""},
			want: map[string]string{"source_principal": `"spiffe://x"`, "client_ip": `"10.1.2.3"`, "client_ip_source": `"xff"`, "client_ip_fallback": `<absent>`},
		},
		{
			name: "client ip fallback",
			req:  httpReq("/", nil, ""),
			ip:   clientip.Result{Addr: netip.MustParseAddr("2001:db8::1"), Source: "peer", Fallback: "xff_too_few_entries"},
			want: map[string]string{"client_ip": `"2001:db8::1"`, "client_ip_fallback": `"xff_too_few_entries"`},
		},
		{
			name: "valid token",
			req:  httpReq("/", nil, ""),
			ip:   peer,
			tok:  &jwt.Result{Valid: true, Provider: "corp", Claims: []byte(`{"sub": "alice", "aud": ["a", "b"], "exp": 1700000000}`)},
			want: map[string]string{"jwt": `{"valid": true, "provider": "corp", "claims": {"sub": "alice", "aud": ["a", "b"], "exp": 1700000000}, "error": ""}`},
		},
		{
			name: "invalid token",
			req:  httpReq("/", nil, ""),
			tok:  &jwt.Result{Provider: "corp", Error: "expired"},
			want: map[string]string{"jwt": `{"valid": false, "provider": "corp", "claims": {}, "error": "expired"}`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := mustInput(t, tc.req, tc.ip, tc.tok)
			for path, lit := range tc.want {
				got := get(t, in, path)
				if lit == "<absent>" {
					if got != nil {
						t.Errorf("%s: want absent, got %v", path, got)
					}
					continue
				}
				want := ast.MustParseTerm(lit).Value
				if got == nil || got.Compare(want) != 0 {
					t.Errorf("%s:\n got: %v\nwant: %v", path, got, want)
				}
			}
		})
	}
}

func TestBuildInputBadRequests(t *testing.T) {
	cases := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"bad json", httpReq("/", map[string]string{"content-type": "application/json"}, `{"a": `)},
		{"trailing json", httpReq("/", map[string]string{"content-type": "application/json"}, `{} {}`)},
		{"bad form", httpReq("/", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=%zz")},
		{"multipart with an empty boundary", httpReq("/", map[string]string{"content-type": "multipart/form-data; boundary="}, "x")},
		{"multipart body without its boundary", httpReq("/", map[string]string{"content-type": "multipart/form-data; boundary=XYZ"}, "x")},
		{"bad path", httpReq("/%zz", nil, "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newRequest(tc.req, &DefaultLimits)
			if err == nil {
				_, err = buildInput(r, clientip.Result{}, nil, DefaultMaxParseBodyBytes)
			}
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("want errBadRequest, got %v", err)
			}
		})
	}
}

func BenchmarkBuildInput(b *testing.B) {
	req := richRequest()
	req.Attributes.Request.Http.Headers = map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/people/1?lang=en", ":scheme": "https",
		"user-agent": "curl/8", "accept": "*/*", "x-forwarded-for": "203.0.113.9", "x-request-id": "abc",
		"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", "x-forwarded-proto": "https",
	}
	req.Attributes.Request.Http.Body = ""
	req.Attributes.Request.Http.RawBody = nil
	b.ReportAllocs()
	for b.Loop() {
		r, err := newRequest(req, &DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := buildInput(r, clientip.Result{Source: "peer"}, nil, DefaultMaxParseBodyBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLeanInputMatchesWhole: a policy that reads parts of the input gets, for
// those parts, exactly what a policy that reads the input whole gets. The
// lean input is built from a plan of the parts (authz/lean.go); the whole
// input converts every populated field.
func TestLeanInputMatchesWhole(t *testing.T) {
	refs := [][]string{
		{"input.attributes.request.http.method"},
		{"input.attributes.request.http", "input.parsed_query"},
		{"input.attributes.request.http.headers", "input.attributes.request.http.size", "input.attributes.request.time"},
		{"input.attributes.source.address.socketAddress.portValue", "input.attributes.source.principal"},
		{"input.attributes.destination", "input.attributes.contextExtensions"},
		{"input.attributes.metadataContext.filterMetadata", "input.attributes.tlsSession.sni"},
		{"input.attributes.metadataContext", "input.attributes.request.http.rawBody"},
		{"input.attributes.request", "input.parsed_path", "input.parsed_body"},
		{`object.get(input.attributes.request.http, "nope", "absent")`, "input.attributes.source.address"},
		{"input.attributes"},
	}
	policy := func(refs []string, whole bool) string {
		p := "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-read\": json.marshal([" + strings.Join(refs, ", ") + "])}}\n"
		if whole {
			p += "\neverything := input\n"
		}
		return p
	}
	req := richRequest() // one request: its time is taken when it is built
	for _, rs := range refs {
		t.Run(strings.Join(rs, ","), func(t *testing.T) {
			var bodies [2]string
			for i, whole := range []bool{false, true} {
				dir := policyDir(t, map[string]string{"p.rego": policy(rs, whole)})
				s := benchServer(t, config.Default(), []string{dir}, nil)
				// Twice: the second input is built from the cached plan.
				for range 2 {
					resp, err := s.Check(context.Background(), req)
					if err != nil {
						t.Fatal(err)
					}
					if resp.GetOkResponse() == nil {
						t.Fatalf("whole=%v: denied: %v", whole, resp)
					}
				}
				resp, _ := s.Check(context.Background(), req)
				for _, h := range resp.GetOkResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-read" {
						bodies[i] = h.GetHeader().GetValue()
					}
				}
				if bodies[i] == "" {
					t.Fatalf("whole=%v: no x-read header in %v", whole, resp)
				}
			}
			if bodies[0] != bodies[1] {
				t.Errorf("lean input:  %s\nwhole input: %s", bodies[0], bodies[1])
			}
		})
	}
}
