package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawHTTP sends request (a whole HTTP/1.1 request, written as is: hosts and
// targets Go's client refuses to send) to addr from the loopback address
// from, and returns the status and the body.
func rawHTTP(t *testing.T, addr, from, request string) (int, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// get is a raw GET with one Host header and extra header lines.
func get(target, host string, lines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, host)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// TestForwardAuthNGINXAmbiguousTargets: through a real NGINX configured as
// docs/forward-auth.md shows, in both of its forms, a request whose host or
// target can be read two ways is never decided on a reading other than the
// one the upstream serves. Each case was allowed before: a Host ending in
// '?' or '#' moved the path or the host out of its rule, a client's own
// X-Original-URL overrode the proxy's X-Original-URI, a '#' or an overlong
// UTF-8 dot moved a trusted client into the bypass, and a second
// Authorization separated by a tab went unseen.
func TestForwardAuthNGINXAmbiguousTargets(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "fa-h")
	jwks := newJWKSServer(t, jwksFile)
	valid := "Authorization: Bearer " + mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	other := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "mallory", "--ttl", "10m")
	up := newUpstream(t)
	upstream := strings.TrimPrefix(up.URL, "http://")
	conf := jwtConfig(jwks.URL) + fmt.Sprintf(`client_ip:
  source: xff
  xff_trusted_hops: 1
bypass:
  trusted_cidrs: [%s/32]
  paths: [/healthz, /public/]
headers:
  rules_for:
    - {path_prefix: /admin, require: [{name: x-admin-ticket}]}
    - {host: partner.example.com, require: [{name: x-partner-key}]}
listen:
  forward_auth: 127.0.0.1:0
forward_auth:
  mode: nginx
`, trustedClient)
	g := startGatehouse(t, conf, true)

	type hostileCase struct {
		name    string
		from    string
		request string
		want    int // 200: allowed and served; otherwise any refusal (NGINX turns a 400 into a 500)
	}
	forms := []struct {
		name  string
		lines string
		cases []hostileCase
	}{
		{"X-Original-URL", `proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`, []hostileCase{
			{"valid token, no ticket, Host ending in ?", untrustedClient, get("/admin", "api.example.com?", valid), 0},
			{"valid token, no key, Host ending in #", untrustedClient, get("/orders", "partner.example.com#", valid), 0},
			{"valid token, no key, Host ending in a backslash", untrustedClient, get("/orders", `partner.example.com\`, valid), 0},
			{"valid token, no key, Host with an escaped dot", untrustedClient, get("/orders", "partner.example.com.%2e", valid), 0},
			{"trusted, '#' into the bypass", trustedClient, get("/healthz#/../admin", "api.example.com"), 0},
			{"trusted, overlong dots into the bypass", trustedClient, get("/public/\xc0\xae\xc0\xae/admin", "api.example.com"), 0},
			{"trusted, encoded overlong dots into the bypass", trustedClient, get("/public/%c0%ae%c0%ae/admin", "api.example.com"), 0},
			{"a second Authorization after a tab", untrustedClient, get("/orders", "api.example.com", valid, "Authorization: Bearer\t"+other), 0},
			// The same routes, asked plainly, are served: the refusals above
			// are the ambiguity's, not the route's.
			{"trusted, bypass path", trustedClient, get("/healthz", "api.example.com"), 200},
			{"trusted, bypass prefix", trustedClient, get("/public/logo.png", "api.example.com"), 200},
			{"valid token and ticket", untrustedClient, get("/admin", "api.example.com", valid, "X-Admin-Ticket: T-1"), 200},
			{"valid token and key", untrustedClient, get("/orders", "partner.example.com", valid, "X-Partner-Key: k"), 200},
			{"valid token, fully qualified host and key", untrustedClient, get("/orders", "partner.example.com.", valid, "X-Partner-Key: k"), 200},
		}},
		{"X-Original-URI", `proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`, []hostileCase{
			{"trusted, client X-Original-URL into the bypass", trustedClient, get("/admin", "api.example.com", "X-Original-URL: http://api.example.com/healthz"), 0},
			{"valid token, no ticket, client X-Original-URL elsewhere", untrustedClient, get("/admin", "api.example.com", valid, "X-Original-URL: http://api.example.com/orders"), 0},
			{"valid token, no key, client X-Original-URL on another host", untrustedClient, get("/orders", "partner.example.com", valid, "X-Original-URL: http://api.example.com/orders"), 0},
			{"valid token, no key, Host ending in #", untrustedClient, get("/orders", "partner.example.com#", valid), 0},
			{"valid token, no ticket", untrustedClient, get("/admin", "api.example.com", valid), 0},
			{"valid token", untrustedClient, get("/orders", "api.example.com", valid), 200},
			{"valid token, a client X-Original-URL that agrees", untrustedClient, get("/orders", "api.example.com", valid, "X-Original-URL: http://api.example.com/orders"), 200},
		}},
	}
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			addr := startNGINXAuth(t, g.faAddr, upstream, form.lines)
			for _, tc := range form.cases {
				t.Run(tc.name, func(t *testing.T) {
					status, body := rawHTTP(t, addr, tc.from, tc.request)
					served := strings.Contains(body, `"upstream":true`)
					switch {
					case tc.want == 200 && (status != 200 || !served):
						t.Fatalf("%d %s, want 200 from the upstream", status, body)
					case tc.want != 200 && (status == 200 || served):
						t.Fatalf("%d %s: allowed, want a refusal", status, body)
					}
				})
			}
		})
	}

	t.Run("OPTIONS * is the handler's", func(t *testing.T) {
		status, body := rawHTTP(t, g.faAddr, "127.0.0.1", "OPTIONS * HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
		if status != http.StatusNotFound {
			t.Fatalf("OPTIONS *: %d %q, want the handler's 404 (net/http answers 200 on its own)", status, body)
		}
	})
}
