package authz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// DefaultDecisionEventQueue bounds the checks waiting to become decision
// events unless DecisionEventsOptions.QueueSize says otherwise.
const DefaultDecisionEventQueue = 8192

// DecisionEvent is one decided check as OPA's decision log records it: the
// input document OPA-Envoy builds for the request (Input, AppendInputJSON),
// and the decision rule's result.
type DecisionEvent struct {
	ID       string
	Time     time.Time
	Result   map[string]any // the decision in OPA-Envoy's result object form; nil when evaluation failed
	Revision string         // the policy revision that decided
	// Err is the evaluation's failure (the check was denied, fail closed).
	Err      error
	Reason   string
	Duration time.Duration
	// req is the check's request, nil when it could not be read. The input
	// is built from it only in the form the sink asks for.
	req *request
}

// opaEnvoyInputKeys are the input document's keys OPA-Envoy builds. The
// others (request_path, client_ip, client_ip_source, client_ip_fallback,
// jwt) are Gatehouse's facts, which OPA-Envoy neither builds nor logs.
var opaEnvoyInputKeys = []string{"attributes", "version", "parsed_path", "parsed_query", "parsed_body", "truncated_body", "source_principal"}

// HasInput reports whether the event has an input document: the request
// could be read.
func (ev *DecisionEvent) HasInput() bool { return ev.req != nil }

// Input returns the input document OPA-Envoy builds for the check, as Rego
// values: the whole document the policy could read, without Gatehouse's
// facts. It is nil when the event has none.
func (ev *DecisionEvent) Input() (ast.Object, error) {
	if ev.req == nil {
		return nil, nil
	}
	whole, err := ev.req.BuildInput(policy.NeedAll())
	if err != nil {
		return nil, err
	}
	items := make([][2]*ast.Term, 0, len(opaEnvoyInputKeys))
	for _, k := range opaEnvoyInputKeys {
		key := ast.InternedTerm(k)
		if v := whole.Get(key); v != nil {
			items = append(items, [2]*ast.Term{key, v})
		}
	}
	return ast.NewObject(items...), nil
}

// AppendInputJSON appends the document Input returns, as JSON, to buf,
// written straight from the request without building Rego values (the
// decision log's cost is mostly that document). It appends null when the
// event has none. TestInputJSONMatchesInput holds it to Input.
func (ev *DecisionEvent) AppendInputJSON(buf []byte) ([]byte, error) {
	if ev.req == nil {
		return append(buf, "null"...), nil
	}
	return ev.req.appendLogInputJSON(buf)
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
	ev := DecisionEvent{ID: out.id, Time: job.at, Revision: out.decision.Revision, Err: out.err, Reason: out.reason, Duration: job.took, req: out.req}
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

// appendLogInputJSON writes what BuildInput(policy.NeedAll()) builds for
// opaEnvoyInputKeys, as JSON: the attributes straight from the protobuf
// message (as messageValue converts it, with the rebuilt headers as
// replaceHeaders puts them), the small parts through the same helpers as
// BuildInput. Object keys are in no particular order.
func (r *request) appendLogInputJSON(buf []byte) ([]byte, error) {
	buf = append(buf, '{')
	n := 0
	key := func(k string) {
		if n > 0 {
			buf = append(buf, ',')
		}
		n++
		buf = append(buf, '"')
		buf = append(buf, k...)
		buf = append(buf, '"', ':')
	}
	if attrs := r.check.GetAttributes(); attrs != nil {
		key("attributes")
		var headers map[string]string
		if r.rebuilt {
			headers = r.headers
		}
		buf = appendMessageJSON(buf, attrs.ProtoReflect(), headers)
	}
	key("version")
	buf = append(buf, `{"encoding":"protojson","ext_authz":"v3"}`...)
	key("parsed_path")
	buf = append(buf, '[')
	for i, part := range strings.Split(strings.TrimLeft(r.path, "/"), "/") {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, part)
	}
	buf = append(buf, ']')
	key("parsed_query")
	buf = append(buf, '{')
	i := 0
	for k, vs := range r.query {
		if i > 0 {
			buf = append(buf, ',')
		}
		i++
		buf = appendJSONString(buf, k)
		buf = append(buf, ':', '[')
		for j, v := range vs {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, ']')
	}
	buf = append(buf, '}')
	truncated := r.truncated()
	key("truncated_body")
	buf = strconv.AppendBool(buf, truncated)
	if len(r.body) > 0 && len(r.body) <= r.maxParseBody && !truncated {
		body, err := parseBodyValue(r.headers["content-type"], r.body, r.maxJSONDepth)
		if err != nil {
			return nil, err
		}
		if body != nil {
			key("parsed_body")
			if buf, err = appendValueJSON(buf, body); err != nil {
				return nil, err
			}
		}
	}
	if p := r.check.GetAttributes().GetSource().GetPrincipal(); p != "" {
		key("source_principal")
		buf = appendJSONString(buf, p)
	}
	return append(buf, '}'), nil
}

// httpRequestDescriptor is the message whose headers a rebuilt request
// replaces (input.attributes.request.http).
var httpRequestDescriptor = (&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor()

// appendMessageJSON writes m as messageValue converts it. In the HTTP
// request message, headers (when not nil) replace the message's own.
func appendMessageJSON(buf []byte, m protoreflect.Message, headers map[string]string) []byte {
	if st, ok := m.Interface().(*structpb.Struct); ok {
		return appendValueJSONOrNull(buf, structValue(st))
	}
	replace := headers != nil && m.Descriptor() == httpRequestDescriptor
	buf = append(buf, '{')
	n := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if replace && fd.JSONName() == "headers" {
			return true
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		n++
		buf = appendJSONString(buf, fd.JSONName())
		buf = append(buf, ':')
		buf = appendFieldJSON(buf, fd, v, headers)
		return true
	})
	if replace {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `"headers":{`...)
		i := 0
		for k, v := range headers {
			if i > 0 {
				buf = append(buf, ',')
			}
			i++
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendFieldJSON writes a field as fieldValue converts it.
func appendFieldJSON(buf []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value, headers map[string]string) []byte {
	switch {
	case fd.IsList():
		list := v.List()
		buf = append(buf, '[')
		for i := range list.Len() {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendScalarJSON(buf, fd, list.Get(i), headers)
		}
		return append(buf, ']')
	case fd.IsMap():
		vd := fd.MapValue()
		buf = append(buf, '{')
		n := 0
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if n > 0 {
				buf = append(buf, ',')
			}
			n++
			buf = appendJSONString(buf, k.String())
			buf = append(buf, ':')
			buf = appendScalarJSON(buf, vd, mv, headers)
			return true
		})
		return append(buf, '}')
	}
	return appendScalarJSON(buf, fd, v, headers)
}

// appendScalarJSON writes a value as scalarValue converts it.
func appendScalarJSON(buf []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value, headers map[string]string) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(buf, v.Bool())
	case protoreflect.StringKind:
		return appendJSONString(buf, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(buf, v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(buf, v.Uint(), 10)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		// Rare (Envoy sends none today): the same conversion as the input's.
		return appendValueJSONOrNull(buf, scalarValue(fd, v))
	case protoreflect.BytesKind:
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, v.Bytes())
		return append(buf, '"')
	case protoreflect.EnumKind:
		return strconv.AppendInt(buf, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendMessageJSON(buf, v.Message(), headers)
	}
	return append(buf, "null"...)
}

// appendValueJSON writes a Rego value as ast.JSON converts it (sets become
// arrays), as JSON.
func appendValueJSON(buf []byte, v ast.Value) ([]byte, error) {
	switch v := v.(type) {
	case ast.Null:
		return append(buf, "null"...), nil
	case ast.Boolean:
		return strconv.AppendBool(buf, bool(v)), nil
	case ast.Number:
		return append(buf, v...), nil
	case ast.String:
		return appendJSONString(buf, string(v)), nil
	case *ast.Array:
		buf = append(buf, '[')
		for i := range v.Len() {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendValueJSON(buf, v.Elem(i).Value); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case ast.Object:
		stringKeys := true
		v.Foreach(func(k, _ *ast.Term) {
			if _, ok := k.Value.(ast.String); !ok {
				stringKeys = false
			}
		})
		if !stringKeys {
			break // ast.JSON encodes such keys (and may merge them): as it does
		}
		buf = append(buf, '{')
		n := 0
		err := v.Iter(func(k, val *ast.Term) error {
			if n > 0 {
				buf = append(buf, ',')
			}
			n++
			buf = appendJSONString(buf, string(k.Value.(ast.String)))
			buf = append(buf, ':')
			var err error
			buf, err = appendValueJSON(buf, val.Value)
			return err
		})
		if err != nil {
			return nil, err
		}
		return append(buf, '}'), nil
	}
	x, err := ast.JSON(v)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	return append(buf, b...), nil
}

// appendValueJSONOrNull is appendValueJSON for values that always convert.
func appendValueJSONOrNull(buf []byte, v ast.Value) []byte {
	out, err := appendValueJSON(buf, v)
	if err != nil {
		return append(buf, "null"...)
	}
	return out
}
