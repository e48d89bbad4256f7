package opaenvoy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/gatehouse-dev/gatehouse/authz"
)

var _ authz.DecisionEventSink = (*Runtime)(nil)

// Default decision log policy paths, as OPA's decision log plugin has them.
const (
	defaultMaskDecision = "/system/log/mask"
	defaultDropDecision = "/system/log/drop"
)

// LogDecision hands one decided check to OPA's decision log plugin, as
// OPA-Envoy does: the decision path, the input OPA-Envoy builds, the result,
// the bundles' revisions, the instance's labels (added by the plugin),
// masked by system.log.mask and dropped by system.log.drop as configured,
// then uploaded in OPA's event format, gzip-compressed and batched, or
// written to the console. Without decision_logs it does nothing.
//
// The input is handed over in the cheapest form the plugin can use. It
// evaluates the mask and drop policies on the event as Rego values, and
// masks the input as Go maps, then encodes the event as JSON. With neither
// policy (no rule and no data at either path, checked in the store
// transaction the plugin evaluates them in, so no activation can come
// between), the input is written once as JSON from the request and nothing
// reads it as Rego values; with a drop policy only, it is also built as
// Rego values; with a mask policy, as Go maps too, which the plugin edits.
func (r *Runtime) LogDecision(ctx context.Context, ev authz.DecisionEvent) error {
	plugin := logs.Lookup(r.manager)
	if plugin == nil {
		return nil
	}
	txn, err := r.manager.Store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer r.manager.Store.Abort(ctx, txn)
	info := &server.Info{
		DecisionID: ev.ID,
		Path:       r.ext.Decision,
		Timestamp:  ev.Time.UTC(),
		Bundles:    map[string]server.BundleInfo{},
		Error:      ev.Err,
		Metrics:    checkMetrics{Metrics: metrics.NoOp(), handlerNs: ev.Duration.Nanoseconds()},
		Txn:        txn,
	}
	for name, rev := range r.bundlesOf(ev.Revision) {
		info.Bundles[name] = server.BundleInfo{Revision: rev}
	}
	if ev.HasInput() {
		// An input that cannot be built (a body that does not parse, answered
		// 400) is left out of the event.
		_ = r.logInput(ctx, txn, ev, info)
	}
	if ev.Result != nil {
		var result any = ev.Result
		info.Results = &result
	}
	return plugin.Log(ctx, info)
}

// noInput is the event's input for the mask and drop policies when there
// are none to read it.
var noInput = ast.NewObject()

// logInput sets info's input in the form the decision log policies need.
func (r *Runtime) logInput(ctx context.Context, txn storage.Transaction, ev authz.DecisionEvent, info *server.Info) error {
	mask, drop := r.logPolicies(ctx, txn)
	if mask {
		in, err := ev.Input()
		if err != nil {
			return err
		}
		input, err := ast.JSON(in)
		if err != nil {
			return err
		}
		info.InputAST, info.Input = in, &input
		return nil
	}
	buf, err := ev.AppendInputJSON(nil)
	if err != nil {
		return err
	}
	info.InputAST = noInput
	if drop {
		in, err := ev.Input()
		if err != nil {
			return err
		}
		info.InputAST = in
	}
	var input any = json.RawMessage(buf)
	info.Input = &input
	return nil
}

// logPaths are the decision log policies' documents: mask_decision and
// drop_decision of the configuration read at start, as data paths.
type logPaths struct {
	mask, drop storage.Path
	// always: discovery may configure other paths at any time, so every
	// event is built for a mask policy.
	always bool
}

// parseLogPaths reads decision_logs.mask_decision and drop_decision from
// OPA's configuration (conf), with OPA's defaults.
func parseLogPaths(conf map[string]any) (logPaths, error) {
	if conf["discovery"] != nil {
		return logPaths{always: true}, nil
	}
	dl, _ := conf["decision_logs"].(map[string]any)
	path := func(key, def string) (storage.Path, error) {
		s, ok := dl[key].(string)
		if !ok || s == "" {
			s = def
		}
		p, ok := storage.ParsePathEscaped("/" + strings.TrimPrefix(s, "/"))
		if !ok {
			return nil, fmt.Errorf("decision_logs.%s: %q is not a data path", key, s)
		}
		return p, nil
	}
	var lp logPaths
	var err error
	if lp.mask, err = path("mask_decision", defaultMaskDecision); err != nil {
		return lp, err
	}
	if lp.drop, err = path("drop_decision", defaultDropDecision); err != nil {
		return lp, err
	}
	return lp, nil
}

// logRules is, for one compiler, whether its rules can define the mask or
// the drop document.
type logRules struct {
	compiler   *ast.Compiler
	mask, drop bool
}

// logPolicies reports whether a mask policy and a drop policy exist: a rule
// of the plugin manager's compiler, or data in the store under txn, at,
// below or above either path. Rules are looked at once per compiler.
func (r *Runtime) logPolicies(ctx context.Context, txn storage.Transaction) (mask, drop bool) {
	if r.logPaths.always {
		return true, true
	}
	compiler := r.manager.GetCompiler()
	rules := r.logRules.Load()
	if rules == nil || rules.compiler != compiler {
		rules = &logRules{compiler: compiler}
		if compiler != nil {
			rules.mask = rulesAt(compiler, r.logPaths.mask)
			rules.drop = rulesAt(compiler, r.logPaths.drop)
		}
		r.logRules.Store(rules)
	}
	return rules.mask || dataAt(ctx, r.manager.Store, txn, r.logPaths.mask),
		rules.drop || dataAt(ctx, r.manager.Store, txn, r.logPaths.drop)
}

// rulesAt reports whether a rule of compiler defines a document at, below
// or above path (a variable in a rule's head matches any key).
func rulesAt(compiler *ast.Compiler, path storage.Path) bool {
	for _, m := range compiler.Modules {
		pkg := m.Package.Path[1:] // after data
		for _, rule := range m.Rules {
			head := rule.Head.Ref()
			keys := make([]*ast.Term, 0, len(pkg)+len(head))
			keys = append(keys, pkg...)
			for i, t := range head {
				if v, ok := t.Value.(ast.Var); ok && i == 0 {
					t = ast.StringTerm(string(v))
				}
				keys = append(keys, t)
			}
			if overlaps(keys, path) {
				return true
			}
		}
	}
	return false
}

// overlaps reports whether the document at keys is path, or contains it,
// or is inside it.
func overlaps(keys []*ast.Term, path storage.Path) bool {
	for i := 0; i < len(keys) && i < len(path); i++ {
		// A variable, or any key that is not a string (conservatively),
		// matches any segment.
		if s, ok := keys[i].Value.(ast.String); ok && string(s) != path[i] {
			return false
		}
	}
	return true
}

// dataAt reports whether the store has a document at path under txn (an
// error other than not found counts as one: the plugin decides then).
func dataAt(ctx context.Context, store storage.Store, txn storage.Transaction, path storage.Path) bool {
	_, err := store.Read(ctx, txn, path)
	return err == nil || !storage.IsNotFound(err)
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
