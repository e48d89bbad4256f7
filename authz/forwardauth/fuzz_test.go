package forwardauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// denier denies everything and keeps the request it was asked about.
type denier struct{ got *authv3.CheckRequest }

func (d *denier) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	d.got = req
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		}},
	}, nil
}

// FuzzSubrequest: whatever the mode headers hold, a subrequest is either
// refused (4xx, no check) or mapped into a CheckRequest whose method is a
// token and whose path is an origin-form target, and a denial is never
// answered 2xx. Tested below Check: the mapping has no recover to hide behind.
func FuzzSubrequest(f *testing.F) {
	f.Add(uint8(0), "/authz", "GET", "/orders?x=1", "api.example.com", "https", "https://api.example.com/orders", "203.0.113.7", "203.0.113.7")
	f.Add(uint8(1), "/authz", "POST", "//admin/%2e%2e", "a", "http", "http://a?q", "", "")
	f.Add(uint8(2), "/authz/x?y", "DELETE", "", "", "", "ftp://x/", "1.2.3.4, 5.6.7.8", "garbage")
	f.Add(uint8(3), "/authzz", "G E T", "orders", "a b", "HTTPS", "https://@/", ",,,", "")
	f.Fuzz(func(t *testing.T, modeSel uint8, target, method, uri, host, proto, origURL, xff, realIP string) {
		modes := []Options{{Mode: ModeTraefik}, {Mode: ModeNGINX}, {Mode: ModeEnvoy}, {Mode: ModeNGINX, ClientHeader: ClientHeaderRealIP}}
		opts := modes[int(modeSel)%len(modes)]
		d := &denier{}
		opts.Checker = d
		h, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		hdr := http.Header{}
		set := func(k, v string) {
			if v != "" {
				hdr.Set(k, v)
			}
		}
		set("X-Forwarded-Method", method)
		set("X-Forwarded-Uri", uri)
		set("X-Forwarded-Host", host)
		set("X-Forwarded-Proto", proto)
		set("X-Original-Method", method)
		set("X-Original-URL", origURL)
		set("X-Original-URI", uri)
		set("X-Forwarded-For", xff)
		set("X-Real-IP", realIP)
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		r := &http.Request{
			Method: method, RequestURI: target, URL: &url.URL{Path: target}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: hdr, Host: host, RemoteAddr: "192.0.2.10:41000",
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code < 300 {
			t.Fatalf("a denying Checker was answered %d", w.Code)
		}
		if d.got == nil {
			if w.Code >= 500 {
				t.Fatalf("a refused subrequest must be a 4xx, got %d", w.Code)
			}
			return
		}
		hr := d.got.GetAttributes().GetRequest().GetHttp()
		if !validToken(hr.GetMethod()) {
			t.Fatalf("mapped method %q is not a token", hr.GetMethod())
		}
		if !strings.HasPrefix(hr.GetPath(), "/") || hr.GetHeaders()[":path"] != hr.GetPath() {
			t.Fatalf("mapped path %q / %q", hr.GetPath(), hr.GetHeaders()[":path"])
		}
		if hr.GetHost() == "" || hr.GetHeaders()[":authority"] != hr.GetHost() {
			t.Fatalf("mapped host %q / %q", hr.GetHost(), hr.GetHeaders()[":authority"])
		}
		if opts.ClientHeader == ClientHeaderRealIP && hr.GetHeaders()["x-forwarded-for"] != strings.TrimSpace(realIP) {
			t.Fatalf("x-real-ip mode: x-forwarded-for %q, want X-Real-IP %q", hr.GetHeaders()["x-forwarded-for"], realIP)
		}
		if d.got.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress() != "192.0.2.10" {
			t.Fatal("the source must be the proxy")
		}
	})
}
