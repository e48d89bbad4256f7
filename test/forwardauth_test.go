package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// Loopback addresses the test clients connect from: the proxies append them
// to X-Forwarded-For, and only trustedClient is in bypass.trusted_cidrs.
const (
	trustedClient   = "127.0.0.5"
	untrustedClient = "127.0.0.9"
)

// proxyBinary finds a proxy for the forward-auth tests: the path in env (set
// by the Makefile, which installs the proxies), else the PATH. Missing, the
// test skips, unless GATEHOUSE_REQUIRE_PROXIES is set (CI), where it fails.
func proxyBinary(t *testing.T, name, env string, extra ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := osexec.LookPath(name); err == nil {
		return p
	}
	for _, p := range extra {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found (set %s or put it on PATH; `make test` installs it)", name, env)
	if os.Getenv("GATEHOUSE_REQUIRE_PROXIES") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// proxyProcess is a proxy started for one test and stopped after it.
type proxyProcess struct {
	cmd    *osexec.Cmd
	out    *testutil.LockedBuffer
	exited chan struct{}
}

func startProxy(t *testing.T, addr string, env []string, bin string, args ...string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{cmd: osexec.Command(bin, args...), out: &testutil.LockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	eventually(t, 60*time.Second, filepath.Base(bin)+" listening on "+addr, func() bool {
		select {
		case <-p.exited:
			t.Fatalf("%s exited:\n%s", bin, p.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return p
}

// startNGINX runs NGINX with auth_request to Gatehouse (forward_auth.mode
// nginx) in front of upstream: the plain NGINX snippet of docs/forward-auth.md.
func startNGINX(t *testing.T, gatehouse, upstream string) string {
	return startNGINXWith(t, gatehouse, upstream, "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
}

// startNGINXRealIP is NGINX with the auth location sending X-Real-IP
// ($remote_addr) and passing the client's X-Forwarded-For through untouched,
// for forward_auth.nginx_client_header: x-real-ip.
func startNGINXRealIP(t *testing.T, gatehouse, upstream string) string {
	return startNGINXWith(t, gatehouse, upstream, "proxy_set_header X-Real-IP $remote_addr;")
}

// startNGINXWith runs NGINX with clientLine (how the client address reaches
// Gatehouse) in the auth location, which sends X-Original-URL.
func startNGINXWith(t *testing.T, gatehouse, upstream, clientLine string) string {
	return startNGINXAuth(t, gatehouse, upstream, `proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      `+clientLine)
}

// startNGINXAuth runs NGINX with authLines (the proxy_set_header lines that
// describe the original request) in the auth location.
func startNGINXAuth(t *testing.T, gatehouse, upstream, authLines string) string {
	bin := proxyBinary(t, "nginx", "GATEHOUSE_NGINX", "/usr/sbin/nginx")
	dir := t.TempDir()
	addr := testutil.ClosedAddr(t) // free a moment ago: the proxy binds it from its config file
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s;
    location / {
      auth_request /_gatehouse;
      auth_request_set $gatehouse_sub $upstream_http_x_jwt_sub;
      proxy_set_header X-Jwt-Sub $gatehouse_sub;
      proxy_pass http://%[4]s;
    }
    location = /_gatehouse {
      internal;
      proxy_pass http://%[3]s/authz;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      %[5]s
    }
  }
}
`, dir, addr, gatehouse, upstream, authLines)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, addr, nil, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", file)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", p.out.String(), b)
		}
	})
	return addr
}

// startCaddy runs Caddy's forward_auth to Gatehouse (forward_auth.mode
// traefik) in front of upstream: the Caddy snippet of docs/forward-auth.md.
func startCaddy(t *testing.T, gatehouse, upstream string) string {
	bin := proxyBinary(t, "caddy", "GATEHOUSE_CADDY")
	dir := t.TempDir()
	addr := testutil.ClosedAddr(t) // free a moment ago: the proxy binds it from its config file
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	storage file_system %[1]s/data
}
http://:%[2]s {
	bind 127.0.0.1
	forward_auth %[3]s {
		uri /authz
		copy_headers X-Jwt-Sub
	}
	reverse_proxy %[4]s
}
`, dir, port, gatehouse, upstream)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	p := startProxy(t, addr, env, bin, "run", "--config", file, "--adapter", "caddyfile")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.out.String())
		}
	})
	return addr
}

// newUpstream is the app behind the proxy: it answers the identity headers
// it received, so the test sees what the proxy forwarded.
func newUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": r.Header.Values("X-Jwt-Sub"), "upstream": true, "uri": r.RequestURI, "host": r.Host})
	}))
	t.Cleanup(s.Close)
	return s
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip: the proxies see it as the client.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout:   15 * time.Second,
		// A 3xx denial must reach the test, not be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// faCase is one original request through a proxy and what must happen.
type faCase struct {
	name    string
	from    string // client address
	host    string
	path    string
	headers map[string]string
	status  int
	sub     string // x-jwt-sub the upstream receives ("" none)
	// challenge: the 401 carries WWW-Authenticate: Bearer.
	challenge bool
}

func forwardAuthCases(t *testing.T, key string) []faCase {
	valid := "Bearer " + mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	expired := "Bearer " + mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--expired")
	return []faCase{
		{"no token", untrustedClient, "api.example.com", "/orders", nil, 401, "", true},
		{"valid token", untrustedClient, "api.example.com", "/orders?x=1", map[string]string{"Authorization": valid}, 200, "alice", false},
		{"valid token, forged identity header replaced", untrustedClient, "api.example.com", "/orders", map[string]string{"Authorization": valid, "X-Jwt-Sub": "mallory"}, 200, "alice", false},
		{"expired token", untrustedClient, "api.example.com", "/orders", map[string]string{"Authorization": expired}, 401, "", true},
		{"forged x-forwarded-for from an untrusted client", untrustedClient, "api.example.com", "/orders", map[string]string{"X-Forwarded-For": trustedClient}, 401, "", true},
		{"trusted client bypass", trustedClient, "api.example.com", "/orders", nil, 200, "", false},
		{"trusted client, forged identity header dropped", trustedClient, "api.example.com", "/orders", map[string]string{"X-Jwt-Sub": "admin"}, 200, "", false},
		{"scanner", untrustedClient, "api.example.com", "/orders", map[string]string{"Authorization": valid, "User-Agent": "sqlmap/1.7"}, 403, "", false},
		{"scoped header rule by host and path", untrustedClient, "admin.example.com", "/admin/users", map[string]string{"Authorization": valid}, 403, "", false},
		{"scoped header rule satisfied", untrustedClient, "admin.example.com", "/admin/users", map[string]string{"Authorization": valid, "X-Admin-Ticket": "T-1"}, 200, "alice", false},
	}
}

func forwardAuthConfig(jwksURL, mode string, extra ...string) string {
	return jwtConfig(jwksURL) + fmt.Sprintf(`client_ip:
  source: xff
  xff_trusted_hops: 1      # the proxy calling Gatehouse is the one trusted hop
bypass:
  trusted_cidrs: [%s/32]
headers:
  deny: [{name: user-agent, regex: "(?i)sqlmap|nikto"}]
  rules_for: [{host: admin.example.com, path_prefix: /admin, require: [{name: x-admin-ticket}]}]
listen:
  forward_auth: 127.0.0.1:0
forward_auth:
  mode: %s
`, trustedClient, mode) + strings.Join(extra, "")
}

// grpcReference asks the same question over gRPC, as an Envoy in the proxy's
// place would: the proxy (127.0.0.1) is the peer and has appended the client
// to X-Forwarded-For.
func grpcReference(t *testing.T, c authv3.AuthorizationClient, tc faCase) (int, string) {
	t.Helper()
	h := map[string]string{":authority": tc.host, ":method": "GET", ":path": tc.path, ":scheme": "http"}
	for k, v := range tc.headers {
		h[strings.ToLower(k)] = v
	}
	if prior := h["x-forwarded-for"]; prior != "" {
		h["x-forwarded-for"] = prior + ", " + tc.from
	} else {
		h["x-forwarded-for"] = tc.from
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: tc.host, Path: tc.path, Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if d := resp.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode()), ""
	}
	for _, o := range resp.GetOkResponse().GetHeaders() {
		if o.GetHeader().GetKey() == "x-jwt-sub" {
			return 200, o.GetHeader().GetValue()
		}
	}
	return 200, ""
}

// through sends tc to the proxy at addr from tc.from and returns the status,
// the x-jwt-sub the upstream received, and the answer's headers.
func through(t *testing.T, addr string, tc faCase) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+tc.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = tc.host
	for k, v := range tc.headers {
		req.Header.Set(k, v)
	}
	resp, err := clientFrom(tc.from).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var echo struct {
		Sub      []string `json:"sub"`
		Upstream bool     `json:"upstream"`
	}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &echo); err != nil || !echo.Upstream {
			t.Fatalf("200 without reaching the upstream: %s", body)
		}
		if len(echo.Sub) > 1 {
			t.Fatalf("the upstream received several x-jwt-sub: %q", echo.Sub)
		}
	} else if strings.Contains(string(body), `"upstream"`) {
		t.Fatalf("a %d reached the upstream: %s", resp.StatusCode, body)
	}
	return resp.StatusCode, strings.Join(echo.Sub, ","), resp.Header
}

// TestForwardAuthThroughProxies: real NGINX (auth_request, nginx mode) and
// real Caddy (forward_auth, traefik mode) in front of an upstream app, with
// Gatehouse deciding. Every case must also give the same decision through
// the gRPC Check.
func TestForwardAuthThroughProxies(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "fa-1")
	jwks := newJWKSServer(t, jwksFile)
	cases := forwardAuthCases(t, key)
	up := newUpstream(t)
	upstream := strings.TrimPrefix(up.URL, "http://")

	for _, proxy := range []struct {
		name, mode string
		extra      string // more forward_auth keys
		start      func(t *testing.T, gatehouse, upstream string) string
	}{
		{"nginx", "nginx", "", startNGINX},
		// X-Real-IP only: the client's own X-Forwarded-For reaches Gatehouse
		// untouched and must be ignored.
		{"nginx x-real-ip", "nginx", "  nginx_client_header: x-real-ip\n", startNGINXRealIP},
		{"caddy", "traefik", "", startCaddy},
	} {
		t.Run(proxy.name, func(t *testing.T) {
			g := startGatehouse(t, forwardAuthConfig(jwks.URL, proxy.mode, proxy.extra), true)
			if g.faAddr == "" {
				t.Fatalf("no forward_auth address in the listening line:\n%s", g.logText())
			}
			addr := proxy.start(t, g.faAddr, upstream)
			grpcClient := g.client(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if st, sub := grpcReference(t, grpcClient, tc); st != tc.status || sub != tc.sub {
						t.Fatalf("gRPC Check: %d %q, want %d %q", st, sub, tc.status, tc.sub)
					}
					status, sub, hdr := through(t, addr, tc)
					if status != tc.status || sub != tc.sub {
						t.Fatalf("through %s: %d, upstream x-jwt-sub %q; want %d %q", proxy.name, status, sub, tc.status, tc.sub)
					}
					if tc.challenge && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("a 401 must carry WWW-Authenticate: Bearer, got %q", hdr.Get("WWW-Authenticate"))
					}
					// Caddy hands the whole denial to the client, so the user
					// can quote its decision id; NGINX passes only the challenge.
					if proxy.name == "caddy" && status != 200 && hdr.Get("X-Gatehouse-Decision-Id") == "" {
						t.Errorf("a denial through Caddy must carry X-Gatehouse-Decision-Id")
					}
				})
			}
		})
	}
}

// TestForwardAuthEnvoyMode: the envoy mode's subrequest (method and path on
// the subrequest behind /authz) straight to the listener, as Envoy's
// http_service sends it, against the gRPC Check; and a malformed subrequest
// in each mode is a logged 400.
func TestForwardAuthEnvoyMode(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "fa-2")
	jwks := newJWKSServer(t, jwksFile)
	g := startGatehouse(t, forwardAuthConfig(jwks.URL, "envoy"), true)
	grpcClient := g.client(t)
	// The test client is the "Envoy": it connects from 127.0.0.1, the peer.
	envoy := clientFrom("127.0.0.1")
	for _, tc := range forwardAuthCases(t, key) {
		t.Run(tc.name, func(t *testing.T) {
			st, sub := grpcReference(t, grpcClient, tc)
			if st != tc.status || sub != tc.sub {
				t.Fatalf("gRPC Check: %d %q, want %d %q", st, sub, tc.status, tc.sub)
			}
			req, err := http.NewRequest("GET", "http://"+g.faAddr+"/authz"+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			req.Header.Set("X-Forwarded-For", strings.TrimPrefix(tc.headers["X-Forwarded-For"]+", "+tc.from, ", "))
			resp, err := envoy.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("X-Jwt-Sub") != tc.sub {
				t.Fatalf("envoy mode: %d %q, want %d %q", resp.StatusCode, resp.Header.Get("X-Jwt-Sub"), tc.status, tc.sub)
			}
			if tc.status == 200 && tc.sub == "" && !strings.Contains(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), "x-jwt-sub") {
				t.Errorf("without a verified identity Envoy must be told to remove client copies: %q", resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"))
			}
			if tc.challenge && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("a 401 must carry WWW-Authenticate: Bearer, got %q", resp.Header.Get("WWW-Authenticate"))
			}
			// Every answer names its decision, the one the decision log recorded.
			id := resp.Header.Get("X-Gatehouse-Decision-Id")
			if id == "" {
				t.Fatalf("no X-Gatehouse-Decision-Id on a %d", resp.StatusCode)
			}
			eventually(t, 5*time.Second, "decision "+id+" in the log", func() bool {
				return strings.Contains(g.logText(), `"decision_id":"`+id+`"`)
			})
		})
	}

	t.Run("bad escape in the path", func(t *testing.T) {
		// Raw, because Go's client refuses to send this target.
		c, err := net.DialTimeout("tcp", g.faAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /authz/orders/%%zz HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: %s\r\nConnection: close\r\n\r\n", trustedClient)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400 (a trusted client, so anything else would be an allow)", resp.StatusCode)
		}
	})
	t.Run("outside the prefix", func(t *testing.T) {
		resp, err := envoy.Get("http://" + g.faAddr + "/orders")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	})
}

// TestForwardAuthMalformed: a subrequest without its mode's headers is a 400
// naming what is missing, logged, never an allow.
func TestForwardAuthMalformed(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		headers map[string]string
		want    string
	}{
		{"traefik", map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https"}, "missing X-Forwarded-Uri"},
		{"nginx", map[string]string{"X-Original-Method": "GET"}, "neither X-Original-URL nor X-Original-URI"},
		{"nginx", map[string]string{"X-Original-Method": "GET", "X-Original-URL": "not a url"}, "X-Original-URL is not an absolute"},
	} {
		t.Run(tc.mode+" "+tc.want, func(t *testing.T) {
			g := startGatehouse(t, "bypass:\n  trusted_cidrs: [127.0.0.0/8]\nlisten:\n  forward_auth: 127.0.0.1:0\nforward_auth:\n  mode: "+tc.mode+"\n", true)
			req, _ := http.NewRequest("GET", "http://"+g.faAddr+"/authz", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := clientFrom("127.0.0.1").Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Every client is trusted here: only the refusal stands between
			// this request and an allow.
			if resp.StatusCode != 400 || !strings.Contains(string(body), tc.want) {
				t.Fatalf("%d %s, want 400 naming %q", resp.StatusCode, body, tc.want)
			}
			eventually(t, 5*time.Second, "the refusal logged", func() bool {
				return strings.Contains(g.logText(), "forward-auth subrequest refused") && strings.Contains(g.logText(), tc.want)
			})
		})
	}
}
