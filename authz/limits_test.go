package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// TestUnreadableQueryIsBadRequest: a query Go cannot read whole must never be
// read in part: a policy denying parsed_query.admin
// would otherwise allow "?admin=1" followed by 10,000 "&".
func TestUnreadableQueryIsBadRequest(t *testing.T) {
	cases := []struct{ name, path string }{
		{"bad escape", "/a?x=%zz&admin=1"},
		{"semicolon", "/a?admin=1;x=2"},
		{"too many parameters", "/a?admin=1" + strings.Repeat("&", 10_000)},
		{"just over the limit", "/a?" + strings.Repeat("a=1&", DefaultLimits.MaxQueryParams) + "b=2"},
		{"bad escape from :path", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httpReq(tc.path, nil, "")
			if tc.path == "" {
				req = httpReq("", map[string]string{":path": "/a?%"}, "")
			}
			_, err := newRequest(req, &DefaultLimits)
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("want errBadRequest, got %v", err)
			}
			if strings.Contains(err.Error(), "zz") {
				t.Errorf("error quotes the query: %v", err)
			}
		})
	}
	t.Run("at the limit parses", func(t *testing.T) {
		r, err := newRequest(httpReq("/a?"+strings.Repeat("a=1&", DefaultLimits.MaxQueryParams-1)+"b=2", nil, ""), &DefaultLimits)
		if err != nil || len(r.query["a"]) != DefaultLimits.MaxQueryParams-1 {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLimits(t *testing.T) {
	many := map[string]string{}
	for i := range DefaultLimits.MaxHeaders + 1 {
		many[fmt.Sprintf("x-h%d", i)] = "v"
	}
	cases := []struct {
		name   string
		req    *authv3.CheckRequest
		status int
	}{
		{"too many headers", httpReq("/", many, ""), 431},
		{"too many header bytes", httpReq("/", map[string]string{"x-big": strings.Repeat("a", DefaultLimits.MaxHeaderBytes)}, ""), 431},
		{"path too long", httpReq("/"+strings.Repeat("a", DefaultLimits.MaxPathBytes), nil, ""), 414},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newRequest(tc.req, &DefaultLimits)
			var le *limitError
			if !errors.As(err, &le) || le.Status != tc.status {
				t.Fatalf("err = %v, want a limit error with status %d", err, tc.status)
			}
		})
	}
	t.Run("JSON nested too deep", func(t *testing.T) {
		deep := strings.Repeat("[", DefaultLimits.MaxJSONDepth+1) + strings.Repeat("]", DefaultLimits.MaxJSONDepth+1)
		r, err := newRequest(httpReq("/", map[string]string{"content-type": "application/json"}, deep), &DefaultLimits)
		if err == nil {
			_, err = buildInput(r, clientip.Result{}, nil, DefaultMaxParseBodyBytes)
		}
		if !errors.Is(err, errBadRequest) {
			t.Fatalf("want errBadRequest, got %v", err)
		}
		ok := strings.Repeat("[", DefaultLimits.MaxJSONDepth) + `"[[[["` + strings.Repeat("]", DefaultLimits.MaxJSONDepth)
		r, _ = newRequest(httpReq("/", map[string]string{"content-type": "application/json"}, ok), &DefaultLimits)
		if _, err := buildInput(r, clientip.Result{}, nil, DefaultMaxParseBodyBytes); err != nil {
			t.Fatalf("depth at the limit (brackets in strings not counted) refused: %v", err)
		}
	})
	t.Run("through Check", func(t *testing.T) {
		s := newNativeServer(t, policy.Rules{})
		resp, err := s.Check(context.Background(), httpReq("/", many, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 431 {
			t.Fatalf("status = %d, want 431", got)
		}
		if !strings.Contains(resp.GetDeniedResponse().GetBody(), ReasonRequestTooLarge) {
			t.Errorf("body = %s", resp.GetDeniedResponse().GetBody())
		}
	})
}

// TestHeaderCaseMergeIsDeterministic: names differing only in case (from a
// non-Envoy client) merge in one order, so the same request always gets the
// same decision, whatever Go's map order.
func TestHeaderCaseMergeIsDeterministic(t *testing.T) {
	headers := map[string]string{"X-Forwarded-For": "10.0.0.1", "x-forwarded-for": "203.0.113.9", "X-FORWARDED-FOR": "198.51.100.1"}
	want := "198.51.100.1,10.0.0.1,203.0.113.9" // sorted by original name: X-FORWARDED-FOR < X-Forwarded-For < x-forwarded-for
	for range 50 {
		r, err := newRequest(httpReq("/", headers, ""), &DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.headers["x-forwarded-for"]; got != want {
			t.Fatalf("merged = %q, want %q", got, want)
		}
	}
}

// TestOnePath: the decision's path and parsed_path come from one place:
// http.path, or :path when that is empty.
func TestOnePath(t *testing.T) {
	cases := []struct {
		name, path, pseudo, wantRaw string
		wantParsed                  string
	}{
		{"http.path", "/admin/x?q=1", "/other", "/admin/x", `["admin", "x"]`},
		{":path when http.path is empty", "", "/admin?q=1", "/admin", `["admin"]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newRequest(httpReq(tc.path, map[string]string{":path": tc.pseudo}, ""), &DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			in, err := buildInput(r, clientip.Result{}, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := get(t, in, "request_path"); got.String() != fmt.Sprintf("%q", tc.wantRaw) {
				t.Errorf("request_path = %v, want %q", got, tc.wantRaw)
			}
			if got := get(t, in, "parsed_path"); got == nil || got.Compare(mustTerm(t, tc.wantParsed)) != 0 {
				t.Errorf("parsed_path = %v, want %s", got, tc.wantParsed)
			}
		})
	}
}

// TestAmbiguousTargetsAreRefused: a path or host that the upstream may read
// differently from Gatehouse is a 400 before any decision: a fragment (cut
// by one reader, a character to another), bytes that are not UTF-8 raw or
// once decoded (an overlong "." is a dot segment to a lenient decoder), a
// header_map value that is not UTF-8, a host that is not one host[:port].
func TestAmbiguousTargetsAreRefused(t *testing.T) {
	withHost := func(host string) *authv3.CheckRequest {
		r := httpReq("/a", nil, "")
		r.Attributes.Request.Http.Host = host
		return r
	}
	rawHeader := httpReq("/a", nil, "")
	rawHeader.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-note", RawValue: []byte("caf\xe9")}}}
	cases := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"fragment in http.path", httpReq("/healthz#/../admin", nil, "")},
		{"fragment in :path", httpReq("", map[string]string{":path": "/healthz#/../../admin"}, "")},
		{"fragment only", httpReq("", map[string]string{":path": "#/admin"}, "")},
		{"overlong dot, raw", httpReq("/public/\xc0\xae\xc0\xae/admin", nil, "")},
		{"overlong dot, encoded", httpReq("/public/%c0%ae%c0%ae/admin", nil, "")},
		{"header_map raw value", rawHeader},
		{"host with ?", withHost("api.example.com?")},
		{"host with #", withHost("api.example.com#")},
		{"host with a backslash", withHost(`api.example.com\`)},
		{"host with an escape", withHost("api.example.com.%2e")},
		{"host with userinfo", withHost("me@api.example.com")},
		{"host with two ports", withHost("api.example.com:1:2")},
		{"host port out of range", withHost("api.example.com:65536")},
		{"unbracketed IPv6", withHost("2001:db8::1")},
		{"authority with #", httpReq("/a", map[string]string{":authority": "api.example.com#"}, "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newRequest(tc.req, &DefaultLimits)
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("err = %v, want errBadRequest", err)
			}
		})
	}
	for _, host := range []string{"api.example.com", "API.example.com.", "api.example.com:8443", "10.0.0.1:80", "[2001:db8::1]", "[2001:db8::1]:443", "svc_a.ns"} {
		if _, err := newRequest(withHost(host), &DefaultLimits); err != nil {
			t.Errorf("host %q refused: %v", host, err)
		}
	}
	if _, err := newRequest(httpReq("/caf%C3%A9/%23x", nil, ""), &DefaultLimits); err != nil {
		t.Errorf("UTF-8 and an encoded '#' refused: %v", err)
	}
}
