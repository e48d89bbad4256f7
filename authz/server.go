// Package authz is Gatehouse's ext_authz handler: it receives Envoy's
// CheckRequest, establishes the facts once (client IP, token verification,
// parsed path, query and body), hands them to the policy as input, and turns
// the policy's decision into a CheckResponse.
package authz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// Defaults of Options, in one place.
const (
	// DefaultMaxParseBodyBytes bounds the bodies parsed into parsed_body: a
	// JSON body costs tens of times its size in memory once parsed.
	DefaultMaxParseBodyBytes = 256 << 10
	// DefaultFailStatus is the status of a denial when the policy cannot decide.
	DefaultFailStatus = 403
)

// Reasons Gatehouse itself gives, beside the ones policies return.
const (
	// ReasonBadRequest: the path, query or body could not be parsed (400).
	ReasonBadRequest = "bad_request"
	// ReasonRequestTooLarge: the request exceeds one of the Limits (431 for
	// headers, 414 for the path).
	ReasonRequestTooLarge = "request_too_large"
	// ReasonInternal: an unexpected failure inside Gatehouse; the request is
	// denied (fail closed).
	ReasonInternal = "internal_error"
)

// DecisionIDHeader carries the decision id on denials, so that a user holding
// a 403 can quote the decision log line that explains it. The id is also in
// the CheckResponse's dynamic_metadata as "decision_id" on every answer.
const DecisionIDHeader = "x-gatehouse-decision-id"

// Evaluator decides on a request; *policy.Engine implements it.
type Evaluator interface {
	// Decide answers from facts, building the policy input from input only
	// if the policy needs one (see policy.Engine.Decide).
	Decide(ctx context.Context, facts *policy.Facts, input policy.InputBuilder) (policy.Decision, error)
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

// Limits bound what one request can make Gatehouse do. A request over a limit
// is denied before any token or policy work (fail closed): 431 for headers,
// 414 for the path, 400 for the query and body. Zero values take the
// defaults (DefaultLimits).
type Limits struct {
	// MaxHeaders bounds the number of request headers.
	MaxHeaders int
	// MaxHeaderBytes bounds the total size of header names and values.
	MaxHeaderBytes int
	// MaxPathBytes bounds the path, query string included.
	MaxPathBytes int
	// MaxQueryParams bounds the number of query parameters.
	MaxQueryParams int
	// MaxJSONDepth bounds the nesting of a JSON body (or multipart JSON part).
	MaxJSONDepth int
}

// DefaultLimits are generous beside Envoy's own defaults (100 headers,
// 60 KiB of headers), which normally refuse such requests first.
var DefaultLimits = Limits{
	MaxHeaders:     512,
	MaxHeaderBytes: 256 << 10,
	MaxPathBytes:   64 << 10,
	MaxQueryParams: 1000,
	MaxJSONDepth:   100,
}

func (l *Limits) applyDefaults() {
	d := DefaultLimits
	for _, f := range []struct{ v, def *int }{
		{&l.MaxHeaders, &d.MaxHeaders}, {&l.MaxHeaderBytes, &d.MaxHeaderBytes},
		{&l.MaxPathBytes, &d.MaxPathBytes}, {&l.MaxQueryParams, &d.MaxQueryParams},
		{&l.MaxJSONDepth, &d.MaxJSONDepth},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
}

// Options configures a Server.
type Options struct {
	Policy   Evaluator     // required
	Tokens   TokenVerifier // nil: no JWT providers, input.jwt is never set
	ClientIP IPResolver    // nil: the peer address
	// FailStatus is the HTTP status of the denial answered when the policy
	// cannot decide. Default DefaultFailStatus.
	FailStatus int
	// DryRun evaluates and logs, but always allows.
	DryRun bool
	// ParseBody fills parsed_body for JSON, form and multipart bodies of at
	// most MaxParseBodyBytes (default DefaultMaxParseBodyBytes).
	ParseBody         bool
	MaxParseBodyBytes int
	// Limits bound each request; zero fields take DefaultLimits.
	Limits Limits
	// DecisionLog receives one JSON line per decision, one Write call per
	// line (an asynclog.Writer in the server); nil disables it.
	DecisionLog io.Writer
	// DecisionLogDebug adds what only debugging needs (why a token failed).
	DecisionLogDebug bool
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Metrics records every decision (authz/metrics.go); nil disables them.
	Metrics *Metrics
	// Shadow receives a sample of decisions to evaluate with a candidate
	// policy off the request path (authz/shadow.go); nil disables it.
	Shadow *Shadow
	// DecisionEvents receives every decided check for OPA's decision log,
	// off the request path (authz/decisionevents.go); nil disables it.
	DecisionEvents *DecisionEvents
}

// Server implements Envoy's Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	opts Options
	// est are the parts that establish the facts, replaced whole by
	// SetEstablishers; each check loads them once.
	est   atomic.Pointer[establishers]
	plans plans
}

// Establishers are the parts that establish a request's facts: the token
// verifier and the client IP resolver. A configuration reload replaces them
// with SetEstablishers.
type Establishers struct {
	Tokens   TokenVerifier // nil: no JWT providers, input.jwt is never set
	ClientIP IPResolver    // required
}

type establishers struct {
	tokens         TokenVerifier
	clientIP       IPResolver
	identityHeader []string
}

// SetEstablishers swaps in e for the checks that start from now on; checks
// in flight finish with the parts they started with.
func (s *Server) SetEstablishers(e Establishers) error {
	if e.ClientIP == nil {
		return errors.New("authz: a client IP resolver is required")
	}
	est := &establishers{tokens: e.Tokens, clientIP: e.ClientIP}
	if e.Tokens != nil {
		est.identityHeader = e.Tokens.IdentityHeaders()
	}
	s.est.Store(est)
	return nil
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Policy == nil {
		return nil, errors.New("authz: a policy evaluator is required")
	}
	if opts.FailStatus == 0 {
		opts.FailStatus = DefaultFailStatus
	}
	if opts.MaxParseBodyBytes == 0 {
		opts.MaxParseBodyBytes = DefaultMaxParseBodyBytes
	}
	if !opts.ParseBody {
		opts.MaxParseBodyBytes = 0
	}
	opts.Limits.applyDefaults()
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
	if err := s.SetEstablishers(Establishers{Tokens: opts.Tokens, ClientIP: opts.ClientIP}); err != nil {
		return nil, err
	}
	return s, nil
}

// outcome is what one Check decided, for the response and the decision log.
type outcome struct {
	id       string
	decision policy.Decision
	reason   string
	err      error
	ip       clientip.Result
	token    *jwt.Result
	// est are the establishers this check started with.
	est *establishers
	req *request
	// dryRunDenied: the decision was a denial that dry run turned into an allow.
	dryRunDenied bool
	// Stage timing, on the checks Metrics samples (authz/metrics.go).
	timing bool
	lapAt  time.Time
	laps   [numStages]time.Duration
}

// Check answers one CheckRequest. It never returns a gRPC error for a request
// it could read: every failure is a denied CheckResponse (fail closed), so
// Envoy's failure_mode_allow never gets to decide.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	start := time.Now()
	out := outcome{id: newDecisionID()}
	s.opts.Metrics.begin(&out, start)
	defer func() {
		// Last line of defence: a bug must not crash the server or let the
		// request through. Deny, and say why in the log.
		if r := recover(); r != nil {
			s.opts.Logger.Error("panic in Check, denying", "panic", fmt.Sprint(r), "decision_id", out.id)
			out = outcome{id: out.id, reason: ReasonInternal, err: fmt.Errorf("panic: %v", r), req: out.req}
			resp, err = s.deny(s.opts.FailStatus, ReasonInternal), nil
		}
		s.stamp(resp, out.id)
		took := time.Since(start)
		s.logDecision(&out, resp, took)
		s.opts.Metrics.observe(&out, responseStatus(resp), resp.GetStatus().GetCode() == 0, took)
		s.opts.Shadow.offer(&out)
		s.opts.DecisionEvents.offer(&out, took)
	}()
	resp = s.decide(ctx, req, &out)
	if s.opts.DryRun && resp.GetStatus().GetCode() != 0 {
		// Dry run: the decision is logged (policy_allowed: false), the request
		// goes through. Client copies of identity headers are still stripped.
		// The policy's dynamic_metadata stays, as in OPA-Envoy.
		out.dryRunDenied = true
		resp = s.allow(policy.Decision{Allowed: true, DynamicMetadata: out.decision.DynamicMetadata}, &out)
	}
	return resp, nil
}

// decide establishes the facts, evaluates the policy and maps its decision;
// out collects what the decision log needs.
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, out *outcome) *authv3.CheckResponse {
	r, refused := s.establish(ctx, req, out)
	if refused != nil {
		return refused
	}
	dec, err := s.opts.Policy.Decide(ctx, r.buildFacts(out.ip, out.token), r)
	out.lap(stagePolicy)
	return s.answer(dec, err, out)
}

// establish reads the request and establishes the facts (client IP, token
// verdict) into out. A request that cannot be read gets its refusal.
func (s *Server) establish(ctx context.Context, req *authv3.CheckRequest, out *outcome) (*request, *authv3.CheckResponse) {
	est := s.est.Load()
	out.est = est
	r, err := newRequest(req, &s.opts.Limits)
	if err != nil {
		return nil, s.refuse(err, out)
	}
	r.maxParseBody, r.maxJSONDepth = s.opts.MaxParseBodyBytes, s.opts.Limits.MaxJSONDepth
	r.plans = &s.plans
	out.req = r
	out.ip = est.clientIP.Resolve(r.peer, r.headers)
	out.lap(stageClientIP)
	if est.tokens != nil {
		out.token = est.tokens.Verify(ctx, jwt.Request{Headers: r.headers, Query: r.query, RawQuery: r.rawQuery})
		out.lap(stageToken)
	}
	return r, nil
}

// answer maps the policy's decision, or its failure, to the CheckResponse.
func (s *Server) answer(dec policy.Decision, err error, out *outcome) *authv3.CheckResponse {
	out.decision.Revision = dec.Revision // the revision that evaluated, even on failure
	if err != nil {
		var ee *policy.EvalError
		if !errors.As(err, &ee) {
			return s.refuse(err, out)
		}
		// Fail closed: an undefined decision, a bad result, a runtime error
		// or a timeout denies with the configured status instead of a gRPC
		// error.
		out.err, out.reason = err, ee.Reason
		return s.deny(s.opts.FailStatus, out.reason)
	}
	out.decision, out.reason = dec, dec.Reason
	if dec.Allowed {
		return s.allow(dec, out)
	}
	return s.denied(dec)
}

// refuse answers a request Gatehouse cannot or will not decide on: 400 for
// an unparsable one, 431/414 for one over a limit, and the fail status for
// anything else (fail closed).
func (s *Server) refuse(err error, out *outcome) *authv3.CheckResponse {
	out.err = err
	var le *limitError
	switch {
	case errors.As(err, &le):
		out.reason = ReasonRequestTooLarge
		return deniedResponse(le.Status, ReasonRequestTooLarge, jsonContentType, errorBody(le.Status, ReasonRequestTooLarge, le.What))
	case errors.Is(err, errBadRequest):
		out.reason = ReasonBadRequest
		return s.badRequest(err)
	}
	out.reason = ReasonInternal
	return s.deny(s.opts.FailStatus, ReasonInternal)
}

// newDecisionID is a random 64-bit id in hex: unique enough to find one
// decision log line, cheap enough for every check.
func newDecisionID() string {
	const digits = "0123456789abcdef"
	var b [16]byte
	v := rand.Uint64()
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

// responseStatus is the HTTP status a CheckResponse answers: 200 for an
// allow, the denied response's status otherwise.
func responseStatus(resp *authv3.CheckResponse) int {
	if d := resp.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode())
	}
	return 200
}
