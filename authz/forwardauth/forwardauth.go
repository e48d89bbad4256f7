// Package forwardauth serves Gatehouse's decisions to HTTP forward-auth
// proxies: Traefik's forwardAuth and Caddy's forward_auth, NGINX's
// auth_request and ingress-nginx's auth-url, and Envoy's ext_authz HTTP
// service. Each subrequest is mapped into the CheckRequest Envoy's gRPC
// filter would send for the original request, decided by the same Check (so
// the same policy, token verification and client-IP rules apply, with one code
// path), and the CheckResponse is mapped back to HTTP: 200 with the identity
// and policy headers to allow, the policy's status, headers and body to deny.
// docs/forward-auth.md shows each proxy's configuration.
package forwardauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gatehouse-dev/gatehouse/authz"
)

// Modes: which proxy sends the subrequests (forward_auth.mode). The mode is
// configured, never guessed from the request: a guess is a header a client
// could send.
const (
	// ModeTraefik reads the original request from X-Forwarded-Method, -Uri,
	// -Host, -Proto and -For (Traefik forwardAuth, Caddy forward_auth).
	ModeTraefik = "traefik"
	// ModeNGINX reads X-Original-URL (or X-Original-URI with
	// X-Forwarded-Host) and X-Original-Method (NGINX auth_request,
	// ingress-nginx auth-url).
	ModeNGINX = "nginx"
	// ModeEnvoy takes the original method and path from the subrequest itself,
	// behind the path prefix (Envoy ext_authz http_service).
	ModeEnvoy = "envoy"
)

// Client headers for ModeNGINX (forward_auth.nginx_client_header): where the
// client_ip rules find the forwarded addresses.
const (
	// ClientHeaderXFF: X-Forwarded-For as NGINX sends it
	// ($proxy_add_x_forwarded_for appends the client's address).
	ClientHeaderXFF = "x-forwarded-for"
	// ClientHeaderRealIP: X-Real-IP (NGINX's $remote_addr) is the only
	// forwarded address offered to the client_ip rules; a missing one is a 400.
	ClientHeaderRealIP = "x-real-ip"
)

// Defaults for zero Options values.
const (
	// DefaultPathPrefix is where the listener answers (Envoy's path_prefix).
	DefaultPathPrefix = "/authz"
	// DefaultMaxBodyBytes bounds a forwarded request body (Traefik
	// forwardBody, Envoy with_request_body); larger is a 413.
	DefaultMaxBodyBytes = 1 << 20
)

// Server limits for the forward-auth listener, used by cmd/gatehouse: proxies
// keep connections open, subrequests are small and answered at once.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 120 * time.Second
	// MaxHeaderBytes fits large cookies and tokens (Envoy's default is 60 KiB
	// of headers, NGINX's 4 x 8 KiB).
	MaxHeaderBytes = 256 << 10
)

// Response headers Gatehouse sets.
const (
	// HeaderDecisionID carries the decision id (the decision log's) on every
	// answer, allow or deny, when the Checker provides one.
	HeaderDecisionID = authz.DecisionIDHeader
	// headerEnvoyRemove is Envoy's HTTP ext_authz way of saying
	// headers_to_remove: a comma-separated list of upstream request headers.
	headerEnvoyRemove = "x-envoy-auth-headers-to-remove"
	// metadataDecisionID is the key of the decision id in the CheckResponse's
	// dynamic_metadata.
	metadataDecisionID = "decision_id"
)

// Reasons for answers the handler gives without a decision (never an allow).
const (
	// ReasonBodyTooLarge: the forwarded body is over MaxBodyBytes (413).
	ReasonBodyTooLarge = "body_too_large"
)

// Checker decides one CheckRequest; *authz.Server implements it.
type Checker interface {
	Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

var _ Checker = (*authz.Server)(nil)

// Options configures a Handler.
type Options struct {
	// Checker decides; required.
	Checker Checker
	// Mode is ModeTraefik, ModeNGINX or ModeEnvoy; required.
	Mode string
	// PathPrefix is answered, and every path under it; others are 404.
	// Default DefaultPathPrefix. In ModeEnvoy it is stripped to give the
	// original path.
	PathPrefix string
	// ClientHeader (ModeNGINX only) is ClientHeaderXFF (default) or
	// ClientHeaderRealIP.
	ClientHeader string
	// MaxBodyBytes bounds a forwarded body. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives refused subrequests; nil discards.
	Logger *slog.Logger
}

// Handler is the forward-auth HTTP endpoint.
type Handler struct {
	opts   Options
	prefix string // PathPrefix without a trailing slash ("/" becomes "")
}

// New validates opts and returns a Handler. Errors name the configuration key.
func New(opts Options) (*Handler, error) {
	if opts.Checker == nil {
		return nil, errors.New("forwardauth: a Checker is required")
	}
	switch opts.Mode {
	case ModeTraefik, ModeNGINX, ModeEnvoy:
	default:
		return nil, fmt.Errorf("forward_auth.mode: %q is not one of %s, %s, %s", opts.Mode, ModeTraefik, ModeNGINX, ModeEnvoy)
	}
	if opts.PathPrefix == "" {
		opts.PathPrefix = DefaultPathPrefix
	}
	if !strings.HasPrefix(opts.PathPrefix, "/") || strings.ContainsAny(opts.PathPrefix, "?#") {
		return nil, fmt.Errorf("forward_auth.path_prefix: %q must be a path starting with / (default %s)", opts.PathPrefix, DefaultPathPrefix)
	}
	switch opts.ClientHeader {
	case "":
		opts.ClientHeader = ClientHeaderXFF
	case ClientHeaderXFF:
	case ClientHeaderRealIP:
		if opts.Mode != ModeNGINX {
			return nil, fmt.Errorf("forward_auth.nginx_client_header: %q only applies to forward_auth.mode nginx", opts.ClientHeader)
		}
	default:
		return nil, fmt.Errorf("forward_auth.nginx_client_header: %q is not %s or %s", opts.ClientHeader, ClientHeaderXFF, ClientHeaderRealIP)
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("forward_auth.max_body_bytes: must not be negative (default %d)", DefaultMaxBodyBytes)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{opts: opts, prefix: strings.TrimSuffix(opts.PathPrefix, "/")}, nil
}

// ServeHTTP answers one forward-auth subrequest.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.matches(r.RequestURI) {
		http.NotFound(w, r)
		return
	}
	req, err := h.checkRequest(r)
	if err != nil {
		// Fail closed: a subrequest that cannot be mapped is refused, never
		// decided on partial facts and never allowed.
		status, reason := http.StatusBadRequest, authz.ReasonBadRequest
		if errors.Is(err, errBodyTooLarge) {
			status, reason = http.StatusRequestEntityTooLarge, ReasonBodyTooLarge
		}
		h.opts.Logger.Warn("forward-auth subrequest refused",
			"status", status, "reason", reason, "detail", err.Error(), "mode", h.opts.Mode, "remote", r.RemoteAddr)
		writeError(w, status, reason, err.Error())
		return
	}
	resp, err := h.opts.Checker.Check(r.Context(), req)
	if err != nil {
		// Fail closed: no decision is a denial (a proxy reads any non-2xx as
		// one; NGINX turns it into a 500).
		h.opts.Logger.Error("forward-auth check failed, denying", "error", err.Error(), "remote", r.RemoteAddr)
		writeError(w, http.StatusInternalServerError, authz.ReasonInternal, "")
		return
	}
	h.write(w, resp)
}

// matches reports whether the request target is the prefix or under it.
func (h *Handler) matches(target string) bool {
	path, _, _ := strings.Cut(target, "?")
	if h.prefix == "" {
		return strings.HasPrefix(path, "/")
	}
	return path == h.prefix || strings.HasPrefix(path, h.prefix+"/")
}

// write maps the CheckResponse to the HTTP answer the proxies understand.
func (h *Handler) write(w http.ResponseWriter, resp *authv3.CheckResponse) {
	hdr := w.Header()
	if id := resp.GetDynamicMetadata().GetFields()[metadataDecisionID].GetStringValue(); id != "" {
		hdr.Set(HeaderDecisionID, id)
	}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		ok := resp.GetOkResponse()
		setHeaders(hdr, ok.GetHeaders())
		if h.opts.Mode == ModeEnvoy && len(ok.GetHeadersToRemove()) > 0 {
			// Envoy's HTTP ext_authz removes these from the upstream request:
			// client-sent copies of identity headers, a token not forwarded.
			hdr.Set(headerEnvoyRemove, strings.Join(ok.GetHeadersToRemove(), ","))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	den := resp.GetDeniedResponse()
	status := int(den.GetStatus().GetCode())
	if status < 300 || status > 599 {
		// Fail closed: a denial must never look like success to the proxy
		// (no denied response, or a 2xx status in it).
		status = http.StatusForbidden
	}
	setHeaders(hdr, den.GetHeaders())
	w.WriteHeader(status)
	_, _ = w.Write([]byte(den.GetBody()))
}

// setHeaders applies Envoy's header options to the answer: append adds a
// value, otherwise the name's values are replaced.
func setHeaders(hdr http.Header, opts []*corev3.HeaderValueOption) {
	for _, o := range opts {
		name, value := o.GetHeader().GetKey(), o.GetHeader().GetValue()
		if !writable(name) {
			continue
		}
		key := canonicalName(name)
		if o.GetAppend().GetValue() {
			hdr[key] = append(hdr[key], value)
		} else {
			hdr[key] = []string{value}
		}
	}
}

// canonicalName is http.CanonicalHeaderKey without an allocation for the
// identity headers Gatehouse sets on nearly every answer.
func canonicalName(name string) string {
	switch name {
	case "x-jwt-sub":
		return "X-Jwt-Sub"
	case "x-jwt-payload":
		return "X-Jwt-Payload"
	case "www-authenticate":
		return "Www-Authenticate"
	case "content-type":
		return "Content-Type"
	case authz.DecisionIDHeader:
		return "X-Gatehouse-Decision-Id"
	}
	return http.CanonicalHeaderKey(name)
}

// writable: a header name the policy may set on the answer. Framing headers
// belong to the HTTP server, pseudo-headers have no HTTP/1 form.
func writable(name string) bool {
	switch strings.ToLower(name) {
	case "", "content-length", "transfer-encoding", "connection", "host":
		return false
	}
	return validToken(name)
}

func writeError(w http.ResponseWriter, status int, reason, detail string) {
	body := map[string]string{
		"error":  strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_")),
		"reason": reason,
	}
	if detail != "" {
		body["detail"] = detail
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
