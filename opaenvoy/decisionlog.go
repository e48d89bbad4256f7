package opaenvoy

import (
	"context"
	"encoding/json"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"

	"github.com/gatehouse-dev/gatehouse/authz"
)

var _ authz.DecisionEventSink = (*Runtime)(nil)

// LogDecision hands one decided check to OPA's decision log plugin, as
// OPA-Envoy does: the decision path, the input, the result, the bundles'
// revisions, the instance's labels (added by the plugin), masked by
// system.log.mask and dropped by system.log.drop as configured, then
// uploaded in OPA's event format, gzip-compressed and batched, or written to
// the console. Without decision_logs it does nothing.
func (r *Runtime) LogDecision(ctx context.Context, ev authz.DecisionEvent) error {
	plugin := logs.Lookup(r.manager)
	if plugin == nil {
		return nil
	}
	info := &server.Info{
		DecisionID: ev.ID,
		Path:       r.ext.Decision,
		Timestamp:  ev.Time.UTC(),
		Bundles:    map[string]server.BundleInfo{},
		Error:      ev.Err,
		Metrics:    checkMetrics{Metrics: metrics.NoOp(), handlerNs: ev.Duration.Nanoseconds()},
	}
	for name, rev := range r.bundlesOf(ev.Revision) {
		info.Bundles[name] = server.BundleInfo{Revision: rev}
	}
	if ev.Input != nil {
		info.InputAST = ev.Input
		input, err := ast.JSON(ev.Input)
		if err != nil {
			return err
		}
		info.Input = &input
	}
	if ev.Result != nil {
		var result any = ev.Result
		info.Results = &result
	}
	return plugin.Log(ctx, info)
}

// checkMetrics are an event's metrics: the check's whole duration, under
// the name OPA-Envoy gives it (timer_server_handler_ns).
type checkMetrics struct {
	metrics.Metrics
	handlerNs int64
}

// All is what the decision log plugin reads.
func (m checkMetrics) All() map[string]any {
	return map[string]any{"timer_server_handler_ns": m.handlerNs}
}

// MarshalJSON encodes All.
func (m checkMetrics) MarshalJSON() ([]byte, error) {
	return json.Marshal(m.All())
}
