package authz

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// DefaultDecisionEventQueue bounds the checks waiting to become decision
// events unless DecisionEventsOptions.QueueSize says otherwise.
const DefaultDecisionEventQueue = 8192

// DecisionEvent is one decided check as OPA's decision log records it: the
// whole input document the policy could read (not only the lean part it
// did), and the decision rule's result.
type DecisionEvent struct {
	ID       string
	Time     time.Time
	Input    ast.Object
	Result   map[string]any // the decision in OPA-Envoy's result object form; nil when evaluation failed
	Revision string         // the policy revision that decided
	// Err is the evaluation's failure (the check was denied, fail closed).
	Err      error
	Reason   string
	Duration time.Duration
}

// DecisionEventSink receives decision events (OPA's decision log plugin,
// opaenvoy.Runtime). Log may be slow (masking, drop policies); it is never
// called on the request path.
type DecisionEventSink interface {
	LogDecision(ctx context.Context, ev DecisionEvent) error
}

// DecisionEventsOptions configures DecisionEvents.
type DecisionEventsOptions struct {
	Sink DecisionEventSink // required
	// QueueSize bounds the checks waiting; past it checks are not logged
	// (counted). Default DefaultDecisionEventQueue.
	QueueSize int
	// Workers build events and call Sink concurrently; default GOMAXPROCS.
	Workers int
}

// DecisionEvents turns decided checks into DecisionEvents off the request
// path: Check offers what it already holds to a bounded queue (never
// waiting); workers build the full input and hand the event to the sink. A
// full queue or a failing sink costs the event, never a check.
type DecisionEvents struct {
	opts    DecisionEventsOptions
	queue   chan eventJob
	results *prometheus.CounterVec
	closed  atomic.Bool
	wg      sync.WaitGroup
	once    sync.Once
	stop    chan struct{}
}

// eventJob is one check's outcome. The request is no longer touched by
// Check once offered, so a worker may read it (as the shadow's does).
type eventJob struct {
	out  outcome
	took time.Duration
	at   time.Time
}

// NewDecisionEvents returns DecisionEvents; start the workers with Run.
func NewDecisionEvents(opts DecisionEventsOptions) (*DecisionEvents, error) {
	if opts.Sink == nil {
		return nil, errors.New("authz: decision events: a sink is required")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultDecisionEventQueue
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	d := &DecisionEvents{opts: opts, queue: make(chan eventJob, opts.QueueSize), stop: make(chan struct{})}
	d.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_decision_events_total",
		Help: "Decided checks offered to the OPA decision log plugin, by result: logged, dropped (queue full), failed (the plugin refused it).",
	}, []string{"result"})
	for _, r := range []string{"logged", "dropped", "failed"} {
		d.results.WithLabelValues(r)
	}
	return d, nil
}

// Collector is gatehouse_decision_events_total{result}, to register.
func (d *DecisionEvents) Collector() prometheus.Collector { return d.results }

// offer queues a decided check; it never blocks.
func (d *DecisionEvents) offer(out *outcome, took time.Duration) {
	if d == nil || d.closed.Load() {
		return
	}
	select {
	case d.queue <- eventJob{out: *out, took: took, at: time.Now()}:
	default:
		d.results.WithLabelValues("dropped").Inc()
	}
}

// Run starts the workers; they stop after Close, once the queue is empty.
func (d *DecisionEvents) Run(ctx context.Context) {
	for range d.opts.Workers {
		d.wg.Go(func() {
			for {
				select {
				case job := <-d.queue:
					d.log(ctx, job)
				case <-d.stop:
					for {
						select {
						case job := <-d.queue:
							d.log(ctx, job)
						default:
							return
						}
					}
				}
			}
		})
	}
}

// Close stops taking checks, waits until the queued ones are handed to the
// sink, and returns.
func (d *DecisionEvents) Close() {
	d.once.Do(func() {
		d.closed.Store(true)
		close(d.stop)
	})
	d.wg.Wait()
}

func (d *DecisionEvents) log(ctx context.Context, job eventJob) {
	out := &job.out
	ev := DecisionEvent{ID: out.id, Time: job.at, Revision: out.decision.Revision, Err: out.err, Reason: out.reason, Duration: job.took}
	if out.req != nil {
		in, err := out.req.BuildInput(policy.NeedAll())
		if err == nil {
			ev.Input = in
		}
	}
	if out.err == nil && out.req != nil {
		ev.Result = resultObject(out.decision)
	}
	if err := d.opts.Sink.LogDecision(ctx, ev); err != nil {
		d.results.WithLabelValues("failed").Inc()
		return
	}
	d.results.WithLabelValues("logged").Inc()
}

// resultObject is the decision in OPA-Envoy's result object form, with the
// keys the policy set (a boolean result becomes {"allowed": ...}).
func resultObject(dec policy.Decision) map[string]any {
	r := map[string]any{"allowed": dec.Allowed}
	headers := func(key string, hs []policy.Header) {
		if len(hs) == 0 {
			return
		}
		m := map[string]any{}
		for _, h := range hs {
			switch prev := m[h.Key].(type) {
			case nil:
				m[h.Key] = h.Value
			case string:
				m[h.Key] = []any{prev, h.Value}
			case []any:
				m[h.Key] = append(prev, h.Value)
			}
		}
		r[key] = m
	}
	list := func(key string, l []string) {
		if len(l) > 0 {
			items := make([]any, len(l))
			for i, s := range l {
				items[i] = s
			}
			r[key] = items
		}
	}
	headers("headers", dec.Headers)
	headers("response_headers_to_add", dec.ResponseHeadersToAdd)
	headers("query_parameters_to_set", dec.QueryParametersToSet)
	list("request_headers_to_remove", dec.RequestHeadersToRemove)
	list("query_parameters_to_remove", dec.QueryParametersToRemove)
	if dec.Body != "" {
		r["body"] = dec.Body
	}
	if dec.HTTPStatus != 0 {
		r["http_status"] = dec.HTTPStatus
	}
	if dec.DynamicMetadata != nil {
		r["dynamic_metadata"] = dec.DynamicMetadata
	}
	return r
}
