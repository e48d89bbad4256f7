package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

	"github.com/gatehouse-dev/gatehouse/policy"
)

var outcomes = [...]string{OutcomeAllowed, OutcomeDenied, OutcomeError}

// DefaultShadowQueue bounds the checks waiting for the shadow policy.
const DefaultShadowQueue = 1024

// ShadowOptions configures a Shadow.
type ShadowOptions struct {
	// Policy is the candidate policy; required.
	Policy Evaluator
	// Sample is the fraction of checks offered to the candidate, in (0, 1].
	Sample float64
	// QueueSize bounds the checks waiting; when full, a check is not
	// evaluated by the shadow (counted as dropped). 0 means DefaultShadowQueue.
	QueueSize int
	// Metrics counts evaluations and disagreements; nil disables them.
	Metrics *Metrics
	// Logger receives one line per disagreement; nil discards them.
	Logger *slog.Logger
}

// Shadow evaluates a candidate policy beside the active one, on a sample of
// live checks, off the request path: Check only offers the facts it already
// established to a bounded queue (never waiting, never changing its answer),
// and one worker (Run) decides again with the candidate and compares the
// outcomes. Each disagreement is counted and logged with both decisions and
// the decision id.
type Shadow struct {
	opts  ShadowOptions
	queue chan shadowJob
}

// shadowJob is one check's facts and its active decision. The request is no
// longer touched by Check once offered, so the worker may read it.
type shadowJob struct {
	id     string
	req    *request
	active decisionSummary
}

// decisionSummary is what is compared and logged of a decision.
type decisionSummary struct {
	outcome  string
	status   int
	reason   string
	revision string
}

// NewShadow returns a Shadow; start its worker with Run.
func NewShadow(opts ShadowOptions) (*Shadow, error) {
	if opts.Policy == nil {
		return nil, errors.New("authz: shadow: a candidate policy is required")
	}
	if !(opts.Sample > 0 && opts.Sample <= 1) {
		return nil, fmt.Errorf("authz: shadow: sample %v: want a fraction in (0, 1]", opts.Sample)
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultShadowQueue
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if m := opts.Metrics; m != nil {
		// Every disagreement series exists from the start (at 0), so that
		// alerts and dashboards see a rate, not an absent series.
		for _, a := range outcomes {
			for _, s := range outcomes {
				if a != s {
					m.shadowDisagree.WithLabelValues(a, s)
				}
			}
		}
	}
	return &Shadow{opts: opts, queue: make(chan shadowJob, opts.QueueSize)}, nil
}

// offer queues a decided check for the shadow, if sampled; it never blocks.
func (sh *Shadow) offer(out *outcome) {
	if sh == nil || out.req == nil || out.decision.Revision == "" {
		// Nothing to compare: the request was refused before the policy ran.
		return
	}
	if sh.opts.Sample < 1 && rand.Float64() >= sh.opts.Sample {
		return
	}
	job := shadowJob{id: out.id, req: out.req, active: summarize(out.decision, out.err)}
	select {
	case sh.queue <- job:
	default:
		if m := sh.opts.Metrics; m != nil {
			m.shadowDropped.Inc()
		}
	}
}

// Run evaluates queued checks until ctx is done. The candidate's Engine
// bounds each evaluation with its own eval_timeout, as for the active policy.
func (sh *Shadow) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-sh.queue:
			sh.compare(ctx, job)
		}
	}
}

// compare decides job again with the candidate and reports a disagreement.
func (sh *Shadow) compare(ctx context.Context, job shadowJob) {
	dec, err := sh.opts.Policy.Decide(ctx, &job.req.facts, job.req)
	shadow := summarize(dec, err)
	if m := sh.opts.Metrics; m != nil {
		if err != nil {
			m.shadowEvalError.Inc()
		} else {
			m.shadowCompared.Inc()
		}
	}
	if shadow.outcome == job.active.outcome {
		return
	}
	if m := sh.opts.Metrics; m != nil {
		m.shadowDisagree.WithLabelValues(job.active.outcome, shadow.outcome).Inc()
	}
	attrs := []slog.Attr{
		slog.String("decision_id", job.id),
		slog.String("path", job.req.rawPath),
		job.active.attr("active"),
		shadow.attr("shadow"),
	}
	if err != nil {
		attrs = append(attrs, slog.String("shadow_error", err.Error()))
	}
	sh.opts.Logger.LogAttrs(ctx, slog.LevelInfo, "shadow disagreement", attrs...)
}

// summarize reduces a decision (or its failure) to its outcome.
func summarize(d policy.Decision, err error) decisionSummary {
	s := decisionSummary{outcome: OutcomeDenied, status: d.HTTPStatus, reason: d.Reason, revision: d.Revision}
	var ee *policy.EvalError
	switch {
	case err != nil:
		s.outcome, s.status = OutcomeError, 0
		if errors.As(err, &ee) {
			s.reason = ee.Reason
		}
	case d.Allowed:
		s.outcome, s.status = OutcomeAllowed, 200
	case s.status == 0:
		s.status = DefaultFailStatus
	}
	return s
}

func (s decisionSummary) attr(key string) slog.Attr {
	return slog.Group(key, "outcome", s.outcome, "status", s.status, "reason", s.reason, "policy_revision", s.revision)
}
