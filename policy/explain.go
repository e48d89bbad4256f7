package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
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
	if rev.decidesNatively {
		var tr trace
		d := rev.configured.decide(facts, &tr)
		d.Revision = rev.hash
		return d, tr.steps, nil
	}
	in, err := rev.input(facts, input)
	if err != nil {
		return Decision{Revision: rev.hash}, nil, err
	}
	tracer := topdown.NewBufferTracer()
	d, err := e.evalOpts(ctx, rev, in, tracer)
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

// describe names a rules_for entry by its host and prefix.
func (s *compiledScope) describe() string {
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
