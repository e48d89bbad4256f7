package authz

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// Outcomes, the values of the outcome label.
const (
	OutcomeAllowed = "allowed"
	OutcomeDenied  = "denied"
	// OutcomeError: the policy could not decide (policy_error,
	// policy_timeout, policy_undefined, policy_bad_result) or Gatehouse
	// failed (internal_error); the request was denied (fail closed).
	OutcomeError = "error"
)

// ReasonOther replaces, in the reason label, a reason past the
// MetricsOptions.MaxReasons distinct ones a custom policy may add, or one
// longer than maxReasonBytes: a policy cannot grow the label set without
// bound. The decision log still holds the real reason.
const ReasonOther = "other"

// DefaultMaxReasons is MetricsOptions.MaxReasons' default.
const DefaultMaxReasons = 64

const maxReasonBytes = 128

// stageSampleMask: per-stage durations are measured on one check in 16
// (rand&mask == 0), so the clock reads they cost stay off most checks.
const stageSampleMask = 15

// Stages of a check, the values of the stage label.
const (
	stageClientIP = iota
	stageToken
	stagePolicy
	numStages
)

var stageNames = [numStages]string{"client_ip", "token", "policy"}

// MetricsOptions configures Metrics.
type MetricsOptions struct {
	// Registerer receives the metrics; required.
	Registerer prometheus.Registerer
	// MaxReasons bounds the distinct reasons, beyond Gatehouse's own, that
	// get their own reason label value; later ones count as "other".
	// 0 means DefaultMaxReasons.
	MaxReasons int
}

// Metrics are the ext_authz handler's Prometheus metrics:
//
//	gatehouse_decisions_total{outcome, status, reason}
//	gatehouse_check_duration_seconds (histogram)
//	gatehouse_check_stage_duration_seconds{stage} (histogram, sampled 1 in 16)
//	gatehouse_checks_in_flight
//	gatehouse_shadow_evaluations_total{result}
//	gatehouse_shadow_disagreements_total{active, shadow}
//	gatehouse_authorization_audit_total{rule}
//
// Recording a decision costs no allocation: the counter of each
// (outcome, status, reason) is resolved once and kept.
type Metrics struct {
	decisions *prometheus.CounterVec
	duration  prometheus.Histogram
	stages    [numStages]prometheus.Observer
	// inFlight is read by a GaugeFunc at scrape time: an integer atomic
	// add per check instead of a Gauge's float compare-and-swap loop.
	inFlight atomic.Int64

	shadowEvals     *prometheus.CounterVec
	shadowDisagree  *prometheus.CounterVec
	shadowDropped   prometheus.Counter
	shadowCompared  prometheus.Counter
	shadowEvalError prometheus.Counter

	// audit counts authorization audit rule matches by rule name; names
	// past maxReasons count as "other". auditSeen is guarded by mu.
	audit     *prometheus.CounterVec
	auditSeen map[string]prometheus.Counter

	// children maps a decision's labels to its counter; copy on write
	// under mu, read without a lock.
	children   atomic.Pointer[map[decisionKey]prometheus.Counter]
	mu         sync.Mutex
	known      map[string]bool
	extra      map[string]bool // admitted reasons beyond known
	maxReasons int
}

type decisionKey struct {
	outcome string
	status  int
	reason  string
}

// NewMetrics registers the handler's metrics on opts.Registerer.
func NewMetrics(opts MetricsOptions) (*Metrics, error) {
	if opts.MaxReasons <= 0 {
		opts.MaxReasons = DefaultMaxReasons
	}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_decisions_total",
			Help: "Checks answered, by outcome (allowed, denied, error), HTTP status and reason (the decision log's reason; custom reasons beyond a bound are \"other\").",
		}, []string{"outcome", "status", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_check_duration_seconds",
			Help:    "Time to answer one check, from receipt to response, in seconds.",
			Buckets: latencyBuckets,
		}),
		shadowEvals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_shadow_evaluations_total",
			Help: "Checks offered to the shadow policy, by result: compared, error (the shadow could not decide), dropped (queue full).",
		}, []string{"result"}),
		shadowDisagree: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_shadow_disagreements_total",
			Help: "Checks on which the shadow policy's outcome differs from the active one's, by both outcomes.",
		}, []string{"active", "shadow"}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_authorization_audit_total",
			Help: "Checks matched by an authorization audit rule, by rule name (names past the reason bound are \"other\"). Audit rules never change the decision.",
		}, []string{"rule"}),
		auditSeen:  map[string]prometheus.Counter{},
		known:      knownReasons(),
		extra:      map[string]bool{},
		maxReasons: opts.MaxReasons,
	}
	stage := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gatehouse_check_stage_duration_seconds",
		Help:    "Time spent in each stage of a check (client_ip, token, policy), measured on one check in 16.",
		Buckets: latencyBuckets,
	}, []string{"stage"})
	for i, name := range stageNames {
		m.stages[i] = stage.WithLabelValues(name)
	}
	// Exposed from the start (as 0), like the other counters.
	m.audit.WithLabelValues(ReasonOther)
	m.shadowCompared = m.shadowEvals.WithLabelValues("compared")
	m.shadowEvalError = m.shadowEvals.WithLabelValues("error")
	m.shadowDropped = m.shadowEvals.WithLabelValues("dropped")
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_checks_in_flight",
		Help: "Checks being decided right now.",
	}, func() float64 { return float64(m.inFlight.Load()) })
	for _, c := range []prometheus.Collector{m.decisions, m.duration, stage, inFlight, m.shadowEvals, m.shadowDisagree, m.audit} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	children := map[decisionKey]prometheus.Counter{}
	m.children.Store(&children)
	// Resolve the common answers now, so that they show as 0 from the
	// first scrape and the first checks take the fast path.
	for _, k := range []decisionKey{
		{OutcomeAllowed, 200, policy.ReasonTokenValid},
		{OutcomeAllowed, 200, policy.ReasonTrustedIP},
		{OutcomeDenied, 401, policy.ReasonTokenMissing},
		{OutcomeDenied, 401, "token_" + jwt.ErrExpired},
		{OutcomeError, 403, policy.ReasonError},
	} {
		m.counter(k.outcome, k.status, k.reason)
	}
	return m, nil
}

// latencyBuckets span tens of microseconds (the native decision) to seconds
// (a custom policy at its evaluation deadline).
var latencyBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5,
}

// knownReasons are the reasons Gatehouse itself gives: always their own
// label value, never counted against MaxReasons.
func knownReasons() map[string]bool {
	known := map[string]bool{}
	for _, r := range []string{
		ReasonBadRequest, ReasonRequestTooLarge, ReasonInternal,
		policy.ReasonError, policy.ReasonUndefined, policy.ReasonBadResult, policy.ReasonTimeout,
		policy.ReasonTrustedIP, policy.ReasonTokenValid, policy.ReasonTokenMissing, "token_invalid",
		policy.ReasonNoMatchingRule,
		"", // a boolean policy result carries no reason
	} {
		known[r] = true
	}
	for _, e := range []string{
		jwt.ErrMalformed, jwt.ErrTooLarge, jwt.ErrExpired, jwt.ErrNotYetValid, jwt.ErrIssuedInFuture,
		jwt.ErrBadSignature, jwt.ErrUnknownKey, jwt.ErrUnknownIssuer, jwt.ErrBadIssuer, jwt.ErrBadAudience,
		jwt.ErrAlgNotAllowed, jwt.ErrKeysUnavailable,
	} {
		known["token_"+e] = true
	}
	return known
}

// counter returns the counter of one decision; the fast path is one map
// read without a lock or allocation.
func (m *Metrics) counter(outcome string, status int, reason string) prometheus.Counter {
	if c, ok := (*m.children.Load())[decisionKey{outcome, status, reason}]; ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	label := m.reasonLabel(reason)
	c := m.decisions.WithLabelValues(outcome, strconv.Itoa(status), label)
	if label != reason {
		// Not cached: the raw reasons behind "other" are unbounded.
		return c
	}
	old := *m.children.Load()
	next := make(map[decisionKey]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[decisionKey{outcome, status, reason}] = c
	m.children.Store(&next)
	return c
}

// auditCounter is the audit counter of rule, bounded as reasons are.
func (m *Metrics) auditCounter(rule string) prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.auditSeen[rule]; ok {
		return c
	}
	label := rule
	if len(m.auditSeen) >= m.maxReasons || len(rule) > maxReasonBytes {
		label = ReasonOther
	}
	c := m.audit.WithLabelValues(label)
	if label == rule {
		m.auditSeen[rule] = c
	}
	return c
}

// reasonLabel bounds the reason label (see ReasonOther). m.mu is held.
func (m *Metrics) reasonLabel(reason string) string {
	switch {
	case m.known[reason] || m.extra[reason]:
		return reason
	case len(reason) > maxReasonBytes || len(m.extra) >= m.maxReasons:
		return ReasonOther
	}
	m.extra[reason] = true
	return reason
}

// begin counts a check in flight and decides whether its stages are timed.
func (m *Metrics) begin(out *outcome, start time.Time) {
	if m == nil {
		return
	}
	m.inFlight.Add(1)
	if rand.Uint32()&stageSampleMask == 0 {
		out.timing, out.lapAt = true, start
	}
}

// lap ends stage i of a timed check.
func (out *outcome) lap(i int) {
	if !out.timing {
		return
	}
	now := time.Now()
	out.laps[i] = now.Sub(out.lapAt)
	out.lapAt = now
}

// observe records one answered check.
func (m *Metrics) observe(out *outcome, status int, allowed bool, took time.Duration) {
	if m == nil {
		return
	}
	m.inFlight.Add(-1)
	m.duration.Observe(took.Seconds())
	m.counter(outcomeOf(out, allowed), status, out.reason).Inc()
	for _, rule := range out.decision.Audit {
		m.auditCounter(rule).Inc()
	}
	if out.timing {
		for i, d := range out.laps {
			if d > 0 {
				m.stages[i].Observe(d.Seconds())
			}
		}
	}
}

// outcomeOf names the outcome label of a check.
func outcomeOf(out *outcome, allowed bool) string {
	switch {
	case allowed:
		return OutcomeAllowed
	case out.err != nil && out.reason != ReasonBadRequest && out.reason != ReasonRequestTooLarge:
		return OutcomeError
	}
	return OutcomeDenied
}
