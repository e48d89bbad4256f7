package authz

import (
	"context"
	"errors"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// Explainer decides like Evaluator and says how; *policy.Engine implements it.
type Explainer interface {
	Explain(ctx context.Context, facts *policy.Facts, input policy.InputBuilder) (policy.Decision, []policy.Step, error)
}

// Explanation is why a request would be allowed or denied: the answer Check
// would give, and the facts and policy steps that led to it.
type Explanation struct {
	Allowed bool
	// Status is the HTTP status of the answer (200 on allow).
	Status int
	// Outcome is OutcomeAllowed, OutcomeDenied or OutcomeError.
	Outcome string
	Reason  string
	// Error says why the policy could not decide (Outcome error), or why
	// the request was refused before it.
	Error    string
	Revision string
	Bypass   bool
	// ClientIP is the resolved client address, its source and fallback.
	ClientIP clientip.Result
	// Token is the verdict on the presented token; nil when none was.
	Token *jwt.Result
	// Steps are the policy steps that fired (policy.Step).
	Steps []policy.Step
	// Headers and Body are the denied response's (decision id excluded).
	Headers []policy.Header
	Body    string
}

// Explain decides req as Check would, without its side effects: no decision
// log line, no metrics, no shadow evaluation. Verifying a token may still
// warm the verified-token cache or trigger an unknown-kid JWKS refetch, as
// a check would. Dry run is not applied: the explanation is the policy's
// own answer.
func (s *Server) Explain(ctx context.Context, req *authv3.CheckRequest) (*Explanation, error) {
	ex, ok := s.opts.Policy.(Explainer)
	if !ok {
		return nil, errors.New("authz: the policy evaluator cannot explain its decisions")
	}
	out := outcome{}
	x := &Explanation{}
	resp := s.explain(ctx, ex, req, &out, x)
	x.Allowed = resp.GetStatus().GetCode() == 0
	x.Status = responseStatus(resp)
	x.Outcome = outcomeOf(&out, x.Allowed)
	x.Reason = out.reason
	if out.err != nil {
		x.Error = out.err.Error()
	}
	x.Revision = out.decision.Revision
	x.Bypass = out.decision.Bypass
	x.ClientIP, x.Token = out.ip, out.token
	if d := resp.GetDeniedResponse(); d != nil {
		x.Body = d.GetBody()
		for _, h := range d.GetHeaders() {
			x.Headers = append(x.Headers, policy.Header{Key: h.GetHeader().GetKey(), Value: h.GetHeader().GetValue()})
		}
	}
	return x, nil
}

// explain is decide with Explain instead of Decide: the same facts and the
// same answer, plus the steps.
func (s *Server) explain(ctx context.Context, ex Explainer, req *authv3.CheckRequest, out *outcome, x *Explanation) *authv3.CheckResponse {
	r, refused := s.establish(ctx, req, out)
	if refused != nil {
		return refused
	}
	dec, steps, err := ex.Explain(ctx, r.buildFacts(out.ip, out.token), r)
	x.Steps = steps
	return s.answer(dec, err, out)
}
