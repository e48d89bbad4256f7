package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Step is one step of a decision as Explain reports it: for the native
// decision, each rule in the order decide applies them; for a custom Rego
// policy, each rule OPA's trace shows was evaluated.
type Step struct {
	// Name says what was checked ("header deny rules", "trusted client IP",
	// or a Rego rule such as data.envoy.authz.allow at policy.rego:7).
	Name string
	// Outcome is what the step found: "pass", "deny", "allow", "skip",
	// "fired" or "not fired" (Rego).
	Outcome string
	// Detail adds the reason or the value compared, when there is one.
	Detail string
}

// Step outcomes.
const (
	StepPass     = "pass"
	StepDeny     = "deny"
	StepAllow    = "allow"
	StepSkip     = "skip"
	StepFired    = "fired"
	StepNotFired = "not fired"
)

// maxTraceSteps bounds the steps a Rego explanation keeps: a policy that
// iterates over a large data set would otherwise return one per iteration.
const maxTraceSteps = 200

// Explain decides like Decide and also says how: the steps that fired.
// It has no side effects on the Engine's counters. The decision is the one
// Decide would return for the same facts and input.
func (e *Engine) Explain(ctx context.Context, facts *Facts, input InputBuilder) (Decision, []Step, error) {
	rev := e.current.Load()
	if rev.native {
		d, steps := rev.rules.explain(facts)
		d.Revision = rev.hash
		return d, steps, nil
	}
	in, err := input.BuildInput(rev.need)
	if err != nil {
		return Decision{Revision: rev.hash}, nil, err
	}
	if rev.rules != nil && rev.need.Child(inputKeyGatehouse).Child("decision") != nil {
		d := rev.rules.decide(facts)
		in.Insert(ast.InternedTerm(inputKeyGatehouse), ast.NewTerm(ast.NewObject(
			ast.Item(ast.InternedTerm("decision"), ast.NewTerm(d.value())))))
	}
	tracer := topdown.NewBufferTracer()
	d, err := e.evalOpts(ctx, rev, in, rego.EvalQueryTracer(tracer))
	return d, traceSteps(*tracer), err
}

// traceSteps summarises an OPA trace as the rules that were evaluated, in
// first-evaluation order, each "fired" when its body succeeded at least once.
// A rule OPA's rule index ruled out for this input is not evaluated, so it
// does not appear.
func traceSteps(events []*topdown.Event) []Step {
	type seen struct {
		idx   int
		fired bool
	}
	var steps []Step
	index := map[string]*seen{}
	for _, ev := range events {
		rule, ok := ev.Node.(*ast.Rule)
		if !ok {
			continue
		}
		name := rule.Head.Ref().String()
		if rule.Module != nil {
			name = rule.Path().String()
		}
		if rule.Default {
			name = "default " + name
		}
		if loc := rule.Location; loc != nil {
			name += " at " + fmt.Sprintf("%s:%d", loc.File, loc.Row)
		}
		s := index[name]
		if s == nil {
			if len(steps) >= maxTraceSteps {
				continue
			}
			s = &seen{idx: len(steps)}
			index[name] = s
			steps = append(steps, Step{Name: name, Outcome: StepNotFired})
		}
		if ev.Op == topdown.ExitOp && !s.fired {
			s.fired = true
			steps[s.idx].Outcome = StepFired
		}
	}
	return steps
}

// explain is decide, recording each step. It follows decide line by line
// (and so policy/rego/gatehouse/authz.rego); a test proves both return the
// same Decision for every case of the differential table.
func (n *native) explain(f *Facts) (Decision, []Step) {
	var steps []Step
	step := func(name, outcome, detail string) {
		steps = append(steps, Step{Name: name, Outcome: outcome, Detail: detail})
	}
	host := ""
	if f.Host != "" {
		host = normalizeHost(f.Host)
	}
	var scopes []int
	if len(n.scoped) > 0 {
		lowerPath := strings.ToLower(f.Path)
		ambiguous := pathAmbiguous(f.Path)
		for i := range n.scoped {
			if n.scoped[i].matches(host, lowerPath, ambiguous) {
				scopes = append(scopes, i)
				detail := n.scoped[i].describe()
				if ambiguous && n.scoped[i].prefix != "" {
					detail += " (ambiguous path: every path scope applies)"
				}
				step("rules_for scope", "applies", detail)
			}
		}
	}

	// 1. Header deny rules.
	if reason, ok := n.global.denyViolation(f.Headers); ok {
		step("headers.deny", StepDeny, reason)
		return n.denied(f, 403, reason, ""), steps
	}
	for _, i := range scopes {
		if reason, ok := n.scoped[i].rules.denyViolation(f.Headers); ok {
			step("rules_for "+n.scoped[i].describe()+" deny", StepDeny, reason)
			return n.denied(f, 403, reason, ""), steps
		}
	}
	step("headers.deny", StepPass, "")
	// 2. Trusted client IP.
	switch {
	case !f.ClientIP.IsValid():
		step("bypass.trusted_cidrs", StepSkip, "no client IP")
	case !n.trusted.Contains(f.ClientIP):
		step("bypass.trusted_cidrs", StepPass, f.ClientIP.String()+" is not trusted")
	case !n.bypassPathOK(f.Path):
		step("bypass.paths", StepPass, f.ClientIP.String()+" is trusted but the path is not a bypass path")
	default:
		step("bypass.trusted_cidrs", StepAllow, f.ClientIP.String()+" is trusted")
		return Decision{Allowed: true, Bypass: true, Reason: ReasonTrustedIP}, steps
	}
	// 3. Token.
	if f.Token == nil {
		detail := "no token presented"
		if n.noProviders {
			detail = "no JWT providers are configured"
		}
		step("token", StepDeny, detail)
		return n.denied(f, 401, ReasonTokenMissing, "Bearer realm="+quote(realm(host))), steps
	}
	if !f.Token.Valid {
		reason, desc := "token_invalid", "invalid"
		if f.Token.Error != "" {
			reason, desc = "token_"+f.Token.Error, f.Token.Error
		}
		step("token", StepDeny, reason)
		challenge := "Bearer realm=" + quote(realm(host)) + `, error="invalid_token", error_description=` + quote(desc)
		return n.denied(f, 401, reason, challenge), steps
	}
	step("token", StepPass, "valid")
	// 4. require / allow_values.
	if reason, ok := n.global.headerViolation(f.Headers); ok {
		step("headers.require/allow_values", StepDeny, reason)
		return n.denied(f, 403, reason, ""), steps
	}
	step("headers.require/allow_values", StepPass, "")
	for _, i := range scopes {
		if reason, ok := n.scoped[i].rules.headerViolation(f.Headers); ok {
			step("rules_for "+n.scoped[i].describe()+" require/allow_values", StepDeny, reason)
			return n.denied(f, 403, reason, ""), steps
		}
	}
	// 5. Allowed.
	step("decision", StepAllow, ReasonTokenValid)
	return Decision{Allowed: true, Reason: ReasonTokenValid}, steps
}

// describe names a rules_for entry by its host and prefix.
func (s *scopedRules) describe() string {
	var parts []string
	if s.host != "" {
		parts = append(parts, "host="+s.host)
	}
	if s.prefix != "" {
		parts = append(parts, "path_prefix="+s.prefix)
	}
	if len(parts) == 0 {
		return "(every request)"
	}
	return strings.Join(slices.Clip(parts), " ")
}
