package policy

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload results, the values of the result label of
// gatehouse_policy_reloads_total.
const (
	reloadSuccess = iota
	reloadFailure
	reloadUnchanged
)

var reloadResults = [...]string{reloadSuccess: "success", reloadFailure: "failure", reloadUnchanged: "unchanged"}

// evalReasons are the EvalError reasons, in the order of engineStats.evalErrors.
var evalReasons = [...]string{ReasonError, ReasonUndefined, ReasonBadResult, ReasonTimeout}

// engineStats are the Engine's counters, read at scrape time by the
// collector: counting costs an atomic add, and only on reloads and failed
// evaluations, never on a successful one.
type engineStats struct {
	reloads    [len(reloadResults)]atomic.Uint64
	evalErrors [len(evalReasons)]atomic.Uint64
	lastErr    atomic.Pointer[ReloadError]
}

// ReloadError is the last failed reload: when and why.
type ReloadError struct {
	At  time.Time
	Err error
}

func (s *engineStats) reloadFailed(err error) {
	s.reloads[reloadFailure].Add(1)
	s.lastErr.Store(&ReloadError{At: time.Now(), Err: err})
}

// reloadSucceeded counts a new revision and clears the last error: the
// policy on disk is good again.
func (s *engineStats) reloadSucceeded() {
	s.reloads[reloadSuccess].Add(1)
	s.lastErr.Store(nil)
}

func (s *engineStats) evalFailed(err error) {
	var ee *EvalError
	if !errors.As(err, &ee) {
		return
	}
	for i, r := range evalReasons {
		if r == ee.Reason {
			s.evalErrors[i].Add(1)
			return
		}
	}
}

// LoadedAt is when the active revision was built.
func (e *Engine) LoadedAt() time.Time {
	if rev := e.current.Load(); rev != nil {
		return rev.loadedAt
	}
	return time.Time{}
}

// LastReloadError returns the last failed reload since the last successful
// one, or nil when the policy on disk is the active revision (or unchanged).
func (e *Engine) LastReloadError() *ReloadError {
	return e.stats.lastErr.Load()
}

// Paths returns the policy paths (empty: the embedded default policy).
func (e *Engine) Paths() []string { return append([]string(nil), e.paths...) }

// DecisionPath returns the decision rule, as data.envoy.authz.allow.
func (e *Engine) DecisionPath() string { return e.decision.String() }

// Collector returns the Engine's Prometheus metrics, read at scrape time.
// prefix distinguishes engines registered on one registry ("" for the active
// policy, "shadow" for a shadow one): it becomes the policy label.
//
//	gatehouse_policy_revision_info{policy, revision}      1 for the active revision
//	gatehouse_policy_loaded_timestamp_seconds{policy}     when it was built
//	gatehouse_policy_reloads_total{policy, result}        success|failure|unchanged
//	gatehouse_policy_reload_failing{policy}               1 while the last reload failed
//	gatehouse_policy_evaluation_errors_total{policy, reason}
func (e *Engine) Collector(name string) prometheus.Collector {
	if name == "" {
		name = "active"
	}
	constLabels := prometheus.Labels{"policy": name}
	return &engineCollector{
		e:    e,
		info: prometheus.NewDesc("gatehouse_policy_revision_info", "The active policy revision (content hash); always 1.", []string{"revision"}, constLabels),
		loaded: prometheus.NewDesc("gatehouse_policy_loaded_timestamp_seconds",
			"When the active policy revision was built, in Unix seconds.", nil, constLabels),
		reloads: prometheus.NewDesc("gatehouse_policy_reloads_total",
			"Policy reloads by result: success (a new revision), failure (the last good one stays), unchanged.", []string{"result"}, constLabels),
		failing: prometheus.NewDesc("gatehouse_policy_reload_failing",
			"1 while the policy on disk fails to load (the last good revision is serving), else 0.", nil, constLabels),
		evalErrors: prometheus.NewDesc("gatehouse_policy_evaluation_errors_total",
			"Evaluations that produced no usable decision, by reason; each was a denial.", []string{"reason"}, constLabels),
	}
}

type engineCollector struct {
	e                                          *Engine
	info, loaded, reloads, failing, evalErrors *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.loaded, c.reloads, c.failing, c.evalErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, e.Revision())
	ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, float64(e.LoadedAt().UnixNano())/1e9)
	for i, r := range reloadResults {
		ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(e.stats.reloads[i].Load()), r)
	}
	failing := 0.0
	if e.stats.lastErr.Load() != nil {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, failing)
	for i, r := range evalReasons {
		ch <- prometheus.MustNewConstMetric(c.evalErrors, prometheus.CounterValue, float64(e.stats.evalErrors[i].Load()), r)
	}
}
