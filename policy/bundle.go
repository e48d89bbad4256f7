package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Activation is a policy revision compiled outside the engine: what OPA's
// plugin manager holds after it activated its bundles and files (the
// manager's compiler and a copy of its data). The engine evaluates it as it
// evaluates a revision it built: the same direct evaluator, lean input and
// fail-closed reading of the result.
type Activation struct {
	// Compiler holds the compiled modules. It is never modified afterwards:
	// OPA's plugin manager replaces its compiler on each activation rather
	// than changing one.
	Compiler *ast.Compiler
	// Data is the whole data document. The engine owns it from now on: it
	// must not share anything with a store that is written later.
	Data ast.Object
	// Revision names the activation (a content hash); it becomes the
	// Decision's Revision and the revision metric.
	Revision string
}

// NewAwaitingActivation returns an Engine whose policy is delivered from
// outside with Activate (OPA's bundles), not read from Options.Paths. Until
// the first Activate, Ready is false and every decision is a denial with
// ReasonUndefined: fail closed, as there is no policy yet. Options.Paths and
// Options.Rules must be empty; the other options apply to every activation.
func NewAwaitingActivation(ctx context.Context, opts Options) (*Engine, error) {
	if len(opts.Paths) > 0 || opts.Rules != nil || len(opts.Config) > 0 {
		return nil, errors.New("policy: an engine awaiting activation takes its modules and data from Activate, not from paths, rules or config")
	}
	decision, err := parseDecisionPath(opts.Decision)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	version, err := parseRegoVersion(opts.RegoVersion)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	e := newEngine(opts, decision, version)
	e.external = true
	empty := ast.NewCompiler()
	if empty.Compile(nil); empty.Failed() {
		return nil, fmt.Errorf("policy: %w", empty.Errors)
	}
	rev, err := e.activation(ctx, Activation{Compiler: empty, Data: ast.NewObject(), Revision: "none"})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	rev.placeholder = true
	e.current.Store(rev)
	return e, nil
}

// Activate prepares a revision from a and swaps it in. On failure the active
// revision stays (a bundle that cannot be used keeps the last good one, as in
// OPA), the failure is counted, logged and kept for LastReloadError, and the
// error is returned.
func (e *Engine) Activate(ctx context.Context, a Activation) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.current.Load()
	rev, err := e.activation(ctx, a)
	if err != nil {
		err = fmt.Errorf("policy activation %s: %w", a.Revision, withLocations(err))
		e.ActivationFailed(err)
		return err
	}
	e.stats.reloadSucceeded()
	e.current.Store(rev)
	e.logger.Info("policy activated", "old_revision", old.hash, "revision", rev.hash, "decision", e.decision.String())
	return nil
}

// ActivationFailed records an activation that never reached the engine (a
// bundle that failed to download, verify or compile): the active revision
// stays, the failure is counted and kept for LastReloadError, and logged.
func (e *Engine) ActivationFailed(err error) {
	rev := e.current.Load()
	e.logger.Error("policy activation failed, keeping revision "+rev.hash, "revision", rev.hash, "error", err.Error())
	e.stats.reloadFailed(err)
}

// activation prepares a's decision query on a store of its own, read through
// one transaction for the revision's life (as build does: that store is never
// written).
func (e *Engine) activation(ctx context.Context, a Activation) (*revision, error) {
	if a.Compiler == nil || a.Data == nil {
		return nil, errors.New("activation without a compiler or data")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	store := inmem.NewFromASTObject(a.Data)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	cidrs := newCIDRCache()
	qo := queryOptions{
		decision: e.decision,
		compiler: a.Compiler,
		store:    store,
		txn:      txn,
		builtins: map[string]*topdown.Builtin{cidrContainsName: cidrs.builtin()},
		strict:   e.strict,
	}
	if e.logger.Enabled(ctx, slog.LevelDebug) {
		qo.printHook = printLogger{e.logger}
	}
	q, err := prepareQuery(qo)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", e.decision, err)
	}
	if len(a.Compiler.Modules) > 0 && len(a.Compiler.GetRules(e.decision)) == 0 {
		if _, err := a.Data.Find(e.decision[1:]); err != nil {
			e.logger.Warn("no rule defines the decision; every request will be denied as "+ReasonUndefined,
				"decision", e.decision.String(), "revision", a.Revision)
		}
	}
	return &revision{
		hash:     a.Revision,
		query:    q,
		cidrs:    cidrs,
		txn:      txn,
		need:     inputNeed(a.Compiler, true),
		network:  len(networkCalls(a.Compiler.Modules)) > 0,
		loadedAt: time.Now(),
	}, nil
}
