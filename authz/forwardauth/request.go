package forwardauth

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// errMalformed marks a subrequest that cannot be mapped (400): the mode's
// headers are missing or unparsable. Its message never quotes a URI, which may
// carry a token in its query string.
var errMalformed = errors.New("malformed forward-auth subrequest")

// errBodyTooLarge: the subrequest body is over MaxBodyBytes (413).
var errBodyTooLarge = errors.New("request body too large")

// Mode control headers: they describe the original request to the
// authorization server and never reach the upstream, so they are not part of
// the headers the policy sees (lower-case, as in the CheckRequest).
const (
	hdrForwardedMethod = "x-forwarded-method"
	hdrForwardedURI    = "x-forwarded-uri"
	hdrForwardedHost   = "x-forwarded-host"
	hdrForwardedProto  = "x-forwarded-proto"
	hdrForwardedFor    = "x-forwarded-for"
	hdrOriginalURI     = "x-original-uri"
	hdrOriginalMethod  = "x-original-method"
	hdrOriginalURL     = "x-original-url"
	hdrRealIP          = "x-real-ip"
)

// hopByHop headers describe the subrequest's connection, not the original
// request; Envoy's connection manager drops them before ext_authz too.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
}

// commonLower maps the canonical form of common header names to lower case,
// so that the names most requests carry are not lower-cased (allocated) per
// request. Read-only.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, name := range []string{
		"accept", "accept-encoding", "accept-language", "authorization", "cache-control", "connection",
		"content-length", "content-type", "cookie", "origin", "pragma", "referer", "user-agent",
		"x-forwarded-for", "x-forwarded-host", "x-forwarded-method", "x-forwarded-port", "x-forwarded-proto",
		"x-forwarded-prefix", "x-forwarded-server", "x-forwarded-uri", "x-original-method", "x-original-uri",
		"x-original-url", "x-real-ip", "x-request-id", "x-envoy-external-address", "x-envoy-expected-rq-timeout-ms",
		"x-envoy-internal", "x-envoy-auth-partial-body", "x-auth-request-redirect", "x-sent-from", "x-scheme",
		"sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site", "upgrade-insecure-requests", "traceparent", "tracestate",
	} {
		m[http.CanonicalHeaderKey(name)] = name
	}
	return m
}()

func lowerName(name string) string {
	if l, ok := commonLower[name]; ok {
		return l
	}
	return strings.ToLower(name)
}

// controlHeaders lists, per mode, the headers that only carry the original
// request's coordinates to the authorization server.
var controlHeaders = map[string]map[string]bool{
	ModeTraefik: {hdrForwardedMethod: true, hdrForwardedURI: true},
	ModeNGINX:   {hdrOriginalURI: true, hdrOriginalMethod: true, hdrOriginalURL: true},
	ModeEnvoy:   {},
}

// original is the request the proxy is asking about, as the mode's headers
// describe it.
type original struct {
	method string
	uri    string // origin-form request target: path and query
	host   string
	scheme string // "" when the proxy does not say
}

// checkRequest maps the subrequest r into the CheckRequest Envoy's gRPC
// ext_authz filter would send for the original request: the proxy is the
// source peer, Gatehouse's listener the destination, and the headers are the
// original request's (lower-case, repeated values comma-joined, with Envoy's
// pseudo-headers). The mode decides where method, path, host and scheme come
// from; everything after this runs the gRPC Check's code path unchanged.
func (h *Handler) checkRequest(r *http.Request) (*authv3.CheckRequest, error) {
	orig, err := h.original(r)
	if err != nil {
		return nil, err
	}
	headers := make(map[string]string, len(r.Header)+4)
	skip := controlHeaders[h.opts.Mode]
	for name, values := range r.Header {
		k := lowerName(name)
		if skip[k] || hopByHop[k] || k == "host" {
			continue
		}
		for _, v := range values {
			if !utf8.ValidString(v) {
				// The gRPC front end cannot even decode such a header (proto
				// strings are UTF-8): both answer 400, neither decides.
				return nil, fmt.Errorf("%w: header %s is not valid UTF-8", errMalformed, name)
			}
		}
		headers[k] = strings.Join(values, ",")
	}
	if h.opts.Mode == ModeNGINX && h.opts.ClientHeader == ClientHeaderRealIP {
		// NGINX resolved the client itself ($remote_addr, after its realip
		// module) and said so in X-Real-IP; only that address is offered to
		// the client_ip rules. Whatever X-Forwarded-For says is not believed.
		real := strings.TrimSpace(r.Header.Get(hdrRealIP))
		if real == "" {
			return nil, fmt.Errorf("%w: X-Real-IP is missing (forward_auth.nginx_client_header is x-real-ip: set proxy_set_header X-Real-IP $remote_addr in the auth location)", errMalformed)
		}
		headers[hdrForwardedFor] = real
	}
	headers[":authority"] = orig.host
	headers[":method"] = orig.method
	headers[":path"] = orig.uri
	if orig.scheme != "" {
		headers[":scheme"] = orig.scheme
	}

	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       requestID(),
		Method:   orig.method,
		Headers:  headers,
		Path:     orig.uri,
		Host:     orig.host,
		Scheme:   orig.scheme,
		Protocol: r.Proto,
		Size:     r.ContentLength,
	}
	if r.ContentLength != 0 && r.Body != nil {
		body, err := readBody(r.Body, h.opts.MaxBodyBytes)
		if err != nil {
			return nil, err
		}
		if utf8.Valid(body) {
			httpReq.Body = string(body)
		} else {
			httpReq.RawBody = body
		}
		if r.ContentLength < 0 {
			httpReq.Size = int64(len(body))
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: localAddress(r)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: httpReq,
		},
	}}, nil
}

// original reads the original request's coordinates from the mode's headers.
// Every coordinate must come from exactly one header value, be one valid
// host[:port] and one origin-form path, and agree with any other header that
// states the same fact: a subrequest that describes the request two ways is
// refused, because the proxy routes on one reading and only that one may
// decide.
func (h *Handler) original(r *http.Request) (original, error) {
	switch h.opts.Mode {
	case ModeTraefik:
		// Traefik's forwardAuth and Caddy's forward_auth: the subrequest's own
		// method and URI are the auth endpoint's, the original's are in
		// X-Forwarded-*.
		var o original
		var err error
		if o.method, err = single(r, "X-Forwarded-Method"); err != nil {
			return o, err
		}
		if o.uri, err = single(r, "X-Forwarded-Uri"); err != nil {
			return o, err
		}
		if o.host, err = single(r, "X-Forwarded-Host"); err != nil {
			return o, err
		}
		scheme, err := single(r, "X-Forwarded-Proto")
		if err != nil {
			return o, err
		}
		o.scheme = strings.ToLower(scheme)
		if err := require(o.method, "X-Forwarded-Method", o.uri, "X-Forwarded-Uri", o.host, "X-Forwarded-Host", o.scheme, "X-Forwarded-Proto"); err != nil {
			return o, err
		}
		return o, validate(o, "X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host")
	case ModeNGINX:
		return h.originalNGINX(r)
	default: // ModeEnvoy: New accepts no other mode.
		// Envoy's http_service sends the original method, and the original
		// path behind path_prefix.
		uri := r.RequestURI
		rest := uri[len(h.prefix):] // ServeHTTP matched the prefix
		if rest == "" || rest[0] == '?' {
			rest = "/" + rest
		}
		scheme, err := single(r, "X-Forwarded-Proto")
		if err != nil {
			return original{}, err
		}
		o := original{
			method: r.Method,
			uri:    rest,
			host:   r.Host,
			scheme: strings.ToLower(scheme),
		}
		if o.host == "" {
			return o, fmt.Errorf("%w: the subrequest has no Host", errMalformed)
		}
		return o, validate(o, "method", "path", "Host")
	}
}

// originalNGINX reads NGINX's auth_request headers: X-Original-URL
// ($scheme://$http_host$request_uri), or X-Original-URI with X-Forwarded-Host
// and X-Forwarded-Proto. auth_request passes the client's own headers through
// and proxy_set_header replaces only the ones the location names, so a client
// can add the form the location does not set: when both forms are present
// they must say the same thing.
func (h *Handler) originalNGINX(r *http.Request) (original, error) {
	var o original
	method, err := single(r, "X-Original-Method")
	if err != nil {
		return o, err
	}
	rawURL, err := single(r, "X-Original-URL")
	if err != nil {
		return o, err
	}
	uri, err := single(r, "X-Original-URI")
	if err != nil {
		return o, err
	}
	fwdHost, err := single(r, "X-Forwarded-Host")
	if err != nil {
		return o, err
	}
	o.method = method
	uriHeader, hostHeader := "X-Original-URI", "X-Forwarded-Host"
	if rawURL != "" {
		scheme, host, target, ok := splitURL(rawURL)
		if !ok {
			return o, fmt.Errorf("%w: X-Original-URL is not an absolute http(s) URL of one host[:port] and a path starting with / (send $scheme://$http_host$request_uri)", errMalformed)
		}
		if uri != "" && uri != target {
			return o, fmt.Errorf("%w: X-Original-URL and X-Original-URI name different request targets (set one of them in the auth location and clear the other: proxy_set_header X-Original-URI \"\")", errMalformed)
		}
		if fwdHost != "" && !sameHost(fwdHost, host) {
			return o, fmt.Errorf("%w: X-Original-URL and X-Forwarded-Host name different hosts (set X-Forwarded-Host $http_host, or clear it: proxy_set_header X-Forwarded-Host \"\")", errMalformed)
		}
		o.scheme, o.host, o.uri = scheme, host, target
		uriHeader, hostHeader = "X-Original-URL", "X-Original-URL"
	} else {
		// Without X-Original-URL the host must be said explicitly: the
		// subrequest's own Host is the auth endpoint's unless the location
		// overrides it, and guessing wrong would skip host-scoped rules.
		scheme, err := single(r, "X-Forwarded-Proto")
		if err != nil {
			return o, err
		}
		o.uri, o.host, o.scheme = uri, fwdHost, strings.ToLower(scheme)
		if o.uri == "" {
			return o, fmt.Errorf("%w: neither X-Original-URL nor X-Original-URI is set (proxy_set_header X-Original-URL $scheme://$http_host$request_uri)", errMalformed)
		}
		if o.host == "" {
			return o, fmt.Errorf("%w: X-Original-URI without X-Original-URL needs X-Forwarded-Host (proxy_set_header X-Forwarded-Host $http_host), or send X-Original-URL", errMalformed)
		}
	}
	if o.method == "" {
		return o, fmt.Errorf("%w: X-Original-Method is missing (proxy_set_header X-Original-Method $request_method)", errMalformed)
	}
	return o, validate(o, "X-Original-Method", uriHeader, hostHeader)
}

// single returns the one value of header name. A proxy sets each of these
// once; two values are two answers to one question, and the proxy may act on
// the other one.
func single(r *http.Request, name string) (string, error) {
	vs := r.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", fmt.Errorf("%w: %s is sent more than once", errMalformed, name)
}

func require(pairs ...string) error {
	var missing []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.TrimSpace(pairs[i]) == "" {
			missing = append(missing, pairs[i+1])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s (forward_auth.mode is traefik: the proxy must send X-Forwarded-Method, -Uri, -Host and -Proto)", errMalformed, strings.Join(missing, ", "))
	}
	return nil
}

// validate holds the original request to what the gRPC front end accepts:
// a token method, one valid host[:port] (authz.ValidHost), and an origin-form
// path without white space or control characters. These are refused, never
// decided: each is a request the upstream may read differently from
// Gatehouse. A path with a '#' or one that is not UTF-8 reaches Check, which
// refuses it for every front end alike (400 bad_request, with a decision id
// and a decision log line).
func validate(o original, methodHeader, uriHeader, hostHeader string) error {
	if len(o.method) > 32 || !validToken(o.method) {
		return fmt.Errorf("%w: %s is not an HTTP method", errMalformed, methodHeader)
	}
	if !strings.HasPrefix(o.uri, "/") {
		return fmt.Errorf("%w: %s is not a request path (it must start with /)", errMalformed, uriHeader)
	}
	for i := 0; i < len(o.uri); i++ {
		if c := o.uri[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: %s contains white space or a control character", errMalformed, uriHeader)
		}
	}
	if !authz.ValidHost(o.host) {
		return fmt.Errorf("%w: %s is not one valid host[:port] (letters, digits, '-', '.', an IP address, an optional port)", errMalformed, hostHeader)
	}
	return nil
}

// sameHost compares two spellings of a host as host rules read them
// (policy.NormalizeHost): case, a trailing dot and a port aside, they must be
// one name.
func sameHost(a, b string) bool {
	return policy.NormalizeHost(a) == policy.NormalizeHost(b)
}

// splitURL splits an absolute http(s) URL into scheme, host and the request
// target by hand: url.Parse reads "//admin/x" in a path as a host, and the
// policy must see the target the upstream gets. The authority ends at the
// first '/', and the target is what NGINX's $request_uri always is: a path
// starting with '/'. "https://api.example.com?/admin" has no such split (its
// authority is not a host), so it is refused, not read as the path "/".
func splitURL(raw string) (scheme, host, uri string, ok bool) {
	scheme, rest, found := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if !found || (scheme != "http" && scheme != "https") {
		return "", "", "", false
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return "", "", "", false
	}
	host, uri = rest[:i], rest[i:]
	if !authz.ValidHost(host) {
		return "", "", "", false
	}
	return scheme, host, uri, true
}

// validToken reports whether s is an RFC 9110 token (a method or header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// readBody reads at most limit bytes; more is errBodyTooLarge.
func readBody(body io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the body: %v", errMalformed, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes (forward_auth.max_body_bytes)", errBodyTooLarge, limit)
	}
	return b, nil
}

// requestID plays the part of Envoy's stream id (request.http.id): unique per
// check, not the x-request-id header.
func requestID() string { return strconv.FormatUint(rand.Uint64(), 10) }

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "0"
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}

func localAddress(r *http.Request) *corev3.Address {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return socketAddress(a.String())
	}
	return nil
}
