// Package authz is Gatehouse's ext_authz handler: it receives Envoy's
// CheckRequest, establishes the facts once (client IP, token verification,
// parsed path, query and body), hands them to the policy as input, and turns
// the policy's decision into a CheckResponse.
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// DefaultMaxParseBodyBytes bounds the bodies parsed into parsed_body: a JSON
// body costs tens of times its size in memory once parsed.
const DefaultMaxParseBodyBytes = 256 << 10

// Reasons Gatehouse itself gives, beside the ones policies return.
const (
	// ReasonBadRequest: the path or body could not be parsed (400).
	ReasonBadRequest = "bad_request"
	// ReasonInternal: an unexpected failure inside Gatehouse; the request is
	// denied (fail closed).
	ReasonInternal = "internal_error"
)

// Evaluator decides on a policy input; *policy.Engine implements it.
type Evaluator interface {
	Eval(ctx context.Context, input ast.Value) (policy.Decision, error)
	// Revision names the active policy revision, logged when Eval fails.
	Revision() string
}

// TokenVerifier verifies the request's token; *jwt.Verifier implements it.
type TokenVerifier interface {
	Verify(ctx context.Context, req jwt.Request) *jwt.Result
	IdentityHeaders() []string
}

// IPResolver resolves the real client address; *clientip.Resolver implements it.
type IPResolver interface {
	Resolve(peer string, headers map[string]string) clientip.Result
}

// Options configures a Server.
type Options struct {
	Policy   Evaluator     // required
	Tokens   TokenVerifier // nil: no JWT providers, input.jwt is never set
	ClientIP IPResolver    // nil: the peer address
	// FailStatus is the HTTP status of the denial answered when the policy
	// cannot decide. Default 403.
	FailStatus int
	// DryRun evaluates and logs, but always allows.
	DryRun bool
	// ParseBody fills parsed_body for JSON, form and multipart bodies of at
	// most MaxParseBodyBytes (default DefaultMaxParseBodyBytes).
	ParseBody         bool
	MaxParseBodyBytes int
	// DecisionLog receives one record per decision; nil disables it.
	DecisionLog *slog.Logger
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

// Server implements Envoy's Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	opts           Options
	identityHeader []string
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Policy == nil {
		return nil, errors.New("authz: a policy evaluator is required")
	}
	if opts.FailStatus == 0 {
		opts.FailStatus = 403
	}
	if opts.MaxParseBodyBytes == 0 {
		opts.MaxParseBodyBytes = DefaultMaxParseBodyBytes
	}
	if !opts.ParseBody {
		opts.MaxParseBodyBytes = 0
	}
	if opts.ClientIP == nil {
		r, err := clientip.New(clientip.Options{Source: clientip.SourcePeer})
		if err != nil {
			return nil, err
		}
		opts.ClientIP = r
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts}
	if opts.Tokens != nil {
		s.identityHeader = opts.Tokens.IdentityHeaders()
	}
	return s, nil
}

// outcome is what one Check decided, for the response and the decision log.
type outcome struct {
	decision policy.Decision
	reason   string
	err      error
	ip       clientip.Result
	token    *jwt.Result
	req      *request
	// dryRunDenied: the decision was a denial that dry run turned into an allow.
	dryRunDenied bool
}

// Check answers one CheckRequest. It never returns a gRPC error for a request
// it could read: every failure is a denied CheckResponse (fail closed), so
// Envoy's failure_mode_allow never gets to decide.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	start := time.Now()
	var out outcome
	defer func() {
		// Last line of defence: a bug must not crash the server or let the
		// request through. Deny, and say why in the log.
		if r := recover(); r != nil {
			s.opts.Logger.Error("panic in Check, denying", "panic", fmt.Sprint(r))
			out = outcome{reason: ReasonInternal, err: fmt.Errorf("panic: %v", r), req: out.req}
			resp, err = s.deny(s.opts.FailStatus, ReasonInternal), nil
		}
		s.logDecision(out, resp, time.Since(start))
	}()
	resp = s.decide(ctx, req, &out)
	if s.opts.DryRun && resp.GetStatus().GetCode() != 0 {
		// Dry run: the decision is logged (policy_allowed: false), the request
		// goes through. Client copies of identity headers are still stripped.
		out.dryRunDenied = true
		resp = s.allow(policy.Decision{Allowed: true}, out.token)
	}
	return resp, nil
}

// decide establishes the facts, evaluates the policy and maps its decision;
// out collects what the decision log needs.
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, out *outcome) *authv3.CheckResponse {
	r, err := newRequest(req)
	if err != nil {
		out.err, out.reason = err, ReasonBadRequest
		return s.badRequest(err)
	}
	out.req = r
	out.ip = s.opts.ClientIP.Resolve(r.peer, r.headers)
	if s.opts.Tokens != nil {
		out.token = s.opts.Tokens.Verify(ctx, jwt.Request{Headers: r.headers, Query: r.query})
	}
	input, err := buildInput(r, out.ip, out.token, s.opts.MaxParseBodyBytes)
	if err != nil {
		out.err, out.reason = err, ReasonBadRequest
		if !errors.Is(err, errBadRequest) {
			out.reason = ReasonInternal
			return s.deny(s.opts.FailStatus, ReasonInternal)
		}
		return s.badRequest(err)
	}
	dec, err := s.opts.Policy.Eval(ctx, input)
	if err != nil {
		// Fail closed: an undefined decision, a bad result or a runtime error
		// denies with the configured status instead of a gRPC error.
		out.err, out.reason = err, policy.ReasonError
		var ee *policy.EvalError
		if errors.As(err, &ee) {
			out.reason = ee.Reason
		}
		out.decision.Revision = s.opts.Policy.Revision()
		return s.deny(s.opts.FailStatus, out.reason)
	}
	out.decision, out.reason = dec, dec.Reason
	if dec.Allowed {
		return s.allow(dec, out.token)
	}
	return s.denied(dec)
}

// logDecision writes the decision log line. The authorization header, the
// token and the query string (which may carry a token) are never logged.
func (s *Server) logDecision(out outcome, resp *authv3.CheckResponse, took time.Duration) {
	l := s.opts.DecisionLog
	if l == nil {
		return
	}
	allowed := resp.GetStatus().GetCode() == 0
	status := 200
	if d := resp.GetDeniedResponse(); d != nil {
		status = int(d.GetStatus().GetCode())
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("decision_id", strconv.FormatUint(rand.Uint64(), 16)),
		slog.Bool("allowed", allowed),
		slog.Int("status", status),
		slog.String("reason", out.reason),
		slog.String("policy_revision", out.decision.Revision),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	)
	if s.opts.DryRun {
		attrs = append(attrs, slog.Bool("dry_run", true), slog.Bool("policy_allowed", !out.dryRunDenied))
	}
	if out.decision.Bypass {
		attrs = append(attrs, slog.Bool("bypass", true))
	}
	if out.err != nil {
		attrs = append(attrs, slog.String("error", out.err.Error()))
	}
	if r := out.req; r != nil {
		http := r.check.GetAttributes().GetRequest().GetHttp()
		attrs = append(attrs,
			slog.String("request_id", r.headers["x-request-id"]),
			slog.String("method", http.GetMethod()),
			slog.String("host", http.GetHost()),
			slog.String("path", r.path),
			slog.String("client_ip", addrString(out.ip)),
			slog.String("client_ip_source", out.ip.Source),
		)
		if out.ip.Fallback != "" {
			attrs = append(attrs, slog.String("client_ip_fallback", out.ip.Fallback))
		}
	}
	if t := out.token; t != nil {
		attrs = append(attrs, slog.Group("jwt", "valid", t.Valid, "provider", t.Provider, "error", t.Error))
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "decision", attrs...)
}

func addrString(r clientip.Result) string {
	if !r.Addr.IsValid() {
		return ""
	}
	return r.Addr.String()
}
