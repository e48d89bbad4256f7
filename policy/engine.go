// Package policy evaluates Gatehouse's Rego policy. It loads modules and data
// files, compiles and prepares the decision query once per revision, evaluates
// it per request against an input already in AST form, reads the OPA-Envoy
// result, and swaps in new revisions on reload only once they are known good.
// It knows nothing of gRPC or Envoy's protobuf types.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// DefaultDecision is OPA-Envoy's default decision path.
const DefaultDecision = "envoy/authz/allow"

// DefaultEvalTimeout bounds one Rego evaluation unless Options.EvalTimeout
// says otherwise.
const DefaultEvalTimeout = time.Second

// nativeDecisions are the decision paths whose answer, without policy paths,
// is the embedded default decision, which the native decision computes.
var nativeDecisions = []string{"data.envoy.authz.allow", "data.gatehouse.authz.decision"}

// Options configures an Engine.
type Options struct {
	// Paths are files or directories of .rego modules and .json/.yaml/.yml
	// data files, loaded as `opa run` loads them (data files are namespaced
	// by directory; "a.b:path" loads path under data.a.b). Empty means the
	// embedded default policy.
	Paths []string
	// Decision is the rule path, like "envoy/authz/allow" or
	// "envoy.authz.allow"; empty means "envoy/authz/allow".
	Decision string
	// RegoVersion is the syntax of the modules under Paths: "v1" (default) or
	// "v0" for policies written before OPA 1.0.
	RegoVersion string
	// Rules are the configured decision's settings, placed at
	// data.gatehouse.config. Without Paths (the embedded default policy), the
	// decision is computed natively from them, without OPA (see Decide).
	Rules *Rules
	// Config is placed at data.gatehouse.config when Rules is nil, merged
	// with the data files; a value set by both is an error.
	Config map[string]any
	// Logger receives reload outcomes and warnings; nil discards them.
	Logger *slog.Logger
	// StrictBuiltinErrors makes a built-in function's error (a bad regex, a
	// malformed token given to io.jwt.decode) fail the whole evaluation, a
	// denial with ReasonError. Off by default, as in OPA and OPA-Envoy, where
	// such an error only makes its expression undefined.
	StrictBuiltinErrors bool
	// EvalTimeout bounds one evaluation (a policy looping over a large data
	// set, a slow http.send): past it the evaluation is cut off and the
	// request denied with ReasonTimeout. The client's own deadline applies
	// too when shorter. 0 means DefaultEvalTimeout; negative, none.
	EvalTimeout time.Duration
	// AllowNet lists the hosts the network built-ins (http.send,
	// net.lookup_ip_addr, remote JSON schema references) may reach: host
	// names or IP addresses, compared with the URL's host without its port,
	// as OPA's capabilities allow_net. nil (not configured) allows every
	// host, as OPA and OPA-Envoy do, so their policies run unchanged, and
	// a policy that calls a network built-in is reported when it loads; an
	// empty, non-nil list allows none (a call fails as a built-in error);
	// AllowAnyHost alone allows every host without the report.
	AllowNet []string
}

// AllowAnyHost, as the only entry of Options.AllowNet, lets the network
// built-ins reach any host (OPA's default).
const AllowAnyHost = "*"

// Engine evaluates the current revision of a policy. It is safe for
// concurrent use; Eval never blocks on a reload.
type Engine struct {
	paths    []string
	decision ast.Ref
	version  ast.RegoVersion
	config   map[string]any
	logger   *slog.Logger
	strict   bool
	rules    *Rules
	timeout  time.Duration
	allowNet []string // OPA's form: nil allows any host, empty none
	netUnset bool     // Options.AllowNet was nil: any host, reported

	// external: revisions come from Activate only (NewAwaitingActivation).
	external bool

	reloadMu sync.Mutex // serializes builds; Eval does not take it
	current  atomic.Pointer[revision]
	// watching is closed once Watch has registered its watches (Watching).
	watching     chan struct{}
	watchingOnce sync.Once
	// stats are the reload and evaluation counters (policy/metrics.go).
	stats engineStats
}

// revision is one compiled, prepared policy. It is immutable once built.
type revision struct {
	hash  string
	query *query
	cidrs *cidrCache
	// txn is the read transaction every evaluation of the revision uses.
	txn storage.Transaction
	// configured is the configured decision compiled natively (nil without
	// Options.Rules). When decidesNatively is set, it decides instead of OPA.
	configured      *native
	decidesNatively bool
	// need is the part of the input the policy can read.
	need *Need
	// offerDecision: the policy reads input.gatehouse.decision, which the
	// native decision computes (configured is set).
	offerDecision bool
	// network: the modules call network built-ins, which wait on the
	// evaluation's context (evalOpts gives it the deadline).
	network bool
	// userModules counts the modules read from policy.paths.
	userModules int
	// loadedAt is when this revision was built.
	loadedAt time.Time
	// placeholder: no policy was activated yet (NewAwaitingActivation); the
	// revision denies every request and the engine is not ready.
	placeholder bool
}

// New loads, compiles and prepares the first revision. A policy that does not
// parse or compile is an error naming file:line:col.
func New(ctx context.Context, opts Options) (*Engine, error) {
	decision, err := parseDecisionPath(opts.Decision)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	version, err := parseRegoVersion(opts.RegoVersion)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	e := newEngine(opts, decision, version)
	rev, _, err := e.build(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	e.current.Store(rev)
	e.logger.Info("policy loaded", "revision", rev.hash, "decision", e.decision.String(),
		"rego_version", e.version.String(), "paths", e.paths)
	return e, nil
}

// newEngine is an Engine for opts without a revision yet.
func newEngine(opts Options, decision ast.Ref, version ast.RegoVersion) *Engine {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Engine{
		watching: make(chan struct{}),
		paths:    append([]string(nil), opts.Paths...),
		decision: decision,
		version:  version,
		config:   opts.Config,
		logger:   logger,
		strict:   opts.StrictBuiltinErrors,
		timeout:  opts.EvalTimeout,
		allowNet: opaAllowNet(opts.AllowNet),
		netUnset: opts.AllowNet == nil,
	}
	if e.timeout == 0 {
		e.timeout = DefaultEvalTimeout
	}
	if opts.Rules != nil {
		rules := *opts.Rules
		e.rules = &rules
		e.config = rules.Data()
	}
	return e
}

// Revision returns the short content hash of the active revision's modules,
// data and options.
func (e *Engine) Revision() string {
	if rev := e.current.Load(); rev != nil {
		return rev.hash
	}
	return ""
}

// Ready reports whether a revision is active. An Engine returned by New
// always has one, and a failed reload never removes it; one returned by
// NewAwaitingActivation has one from its first Activate on.
func (e *Engine) Ready() bool {
	rev := e.current.Load()
	return rev != nil && !rev.placeholder
}

// Reload builds a new revision from the same options, validates it and swaps
// it in. On failure the active revision stays, the failure is logged with the
// compiler's file:line:col, and the error is returned. An unchanged policy is
// not recompiled.
func (e *Engine) Reload(ctx context.Context) error {
	if e.external {
		return errors.New("policy reload: this engine's policy is activated from bundles, not read from paths")
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.current.Load()
	rev, changed, err := e.build(ctx, old.hash)
	if err != nil {
		e.logger.Error("policy reload failed, keeping revision "+old.hash, "revision", old.hash, "error", err)
		e.stats.reloadFailed(err)
		return fmt.Errorf("policy reload: %w", err)
	}
	if !changed {
		e.logger.Debug("policy unchanged", "revision", old.hash)
		e.stats.reloads[reloadUnchanged].Add(1)
		return nil
	}
	e.stats.reloadSucceeded()
	e.current.Store(rev)
	e.logger.Info("policy reloaded", "old_revision", old.hash, "revision", rev.hash)
	return nil
}

// SetRules replaces the configured decision's rules (a configuration
// reload: bypass, header rules, authorization): the revision they make is
// built and validated completely, with the policy files as they are now, and
// swapped in only then. On failure the active revision and rules stay and
// the error says why. Unchanged rules are not rebuilt.
func (e *Engine) SetRules(ctx context.Context, rules Rules) error {
	if e.external {
		return errors.New("policy: this engine's policy is activated from bundles; its rules come with them")
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.current.Load()
	prevRules, prevConfig := e.rules, e.config
	e.rules, e.config = &rules, rules.Data()
	rev, changed, err := e.build(ctx, old.hash)
	if err != nil {
		e.rules, e.config = prevRules, prevConfig
		return fmt.Errorf("rules: %w", err)
	}
	if !changed {
		return nil
	}
	e.current.Store(rev)
	e.logger.Info("policy rules replaced", "old_revision", old.hash, "revision", rev.hash)
	return nil
}

// build loads and hashes the sources; when the hash differs from current it
// compiles and prepares a new revision. changed is false (and rev nil) when
// the sources are identical to current.
func (e *Engine) build(ctx context.Context, current string) (rev *revision, changed bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	src, err := loadSources(e.paths, e.version, e.config, false, embedFor(e.paths), false)
	if err != nil {
		return nil, false, err
	}
	// Nothing lost: a reload that finds no module where the active revision
	// had some (files deleted, a volume unmounted, a swap caught half way)
	// is a failed reload, not an empty policy that denies everything.
	if old := e.current.Load(); old != nil && old.userModules > 0 && src.user == 0 {
		return nil, false, fmt.Errorf("policy.paths %s hold no .rego module any more (deleted?); restore them, or restart to run without", strings.Join(e.paths, ", "))
	}
	hash, err := revisionHash(src, e.version, e.decision)
	if err != nil {
		return nil, false, err
	}
	if hash == current {
		return nil, false, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}

	data, err := ast.InterfaceToValue(src.data)
	if err != nil {
		return nil, false, fmt.Errorf("data: %w", err)
	}
	obj, ok := data.(ast.Object)
	if !ok {
		return nil, false, errors.New("data: not an object")
	}
	// The store hands out AST values, so data is converted once here and not
	// per evaluation, and a list read from data is the same *ast.Array every
	// time (which is what the CIDR cache keys on).
	store := inmem.NewFromASTObject(obj)
	// One read transaction for the revision's life: its store is never
	// written after this (a reload builds a new store), and reads through an
	// in-memory read transaction are safe from any goroutine, so no check
	// pays for opening and closing one.
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("data: %w", err)
	}

	debug := e.logger.Enabled(ctx, slog.LevelDebug)
	compiler := newCompiler(e.version, debug, e.allowNet)
	if compiler.Compile(src.modules); compiler.Failed() {
		return nil, false, withLocations(compiler.Errors)
	}
	e.warnNetwork(src.modules, hash)
	if len(compiler.GetRules(e.decision)) == 0 {
		if _, err := obj.Find(e.decision[1:]); err != nil {
			e.logger.Warn("no rule defines the decision; every request will be denied as "+ReasonUndefined,
				"decision", e.decision.String(), "revision", hash)
		}
	}

	cidrs := newCIDRCache()
	qo := queryOptions{
		decision: e.decision,
		compiler: compiler,
		store:    store,
		txn:      txn,
		builtins: map[string]*topdown.Builtin{cidrContainsName: cidrs.builtin()},
		// As in OPA and OPA-Envoy, a built-in error makes its expression
		// undefined unless strict mode is on; then it fails the evaluation
		// (ReasonError, deny).
		strict: e.strict,
	}
	if debug {
		qo.printHook = printLogger{e.logger}
	}
	q, err := prepareQuery(qo)
	if err != nil {
		return nil, false, fmt.Errorf("prepare %s: %w", e.decision, withLocations(err))
	}
	rev = &revision{hash: hash, query: q, cidrs: cidrs, txn: txn, need: inputNeed(compiler, len(e.paths) > 0), network: len(networkCalls(src.modules)) > 0, userModules: src.user, loadedAt: time.Now()}
	if e.rules != nil {
		if rev.configured, err = compileNative(*e.rules); err != nil {
			return nil, false, err
		}
		rev.decidesNatively = len(e.paths) == 0 && slices.Contains(nativeDecisions, e.decision.String())
		rev.offerDecision = rev.need.Child(inputKeyGatehouse).Child("decision") != nil
	}
	return rev, true, nil
}

// newCompiler returns a compiler that knows Gatehouse's built-in. print() is
// compiled in only when debug logging is on, so it costs nothing otherwise.
// allowNet is OPA's capabilities allow_net (nil: any host; empty: none); the
// evaluation reads it from the compiler.
func newCompiler(version ast.RegoVersion, enablePrint bool, allowNet []string) *ast.Compiler {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, cidrContainsBuiltin())
	caps.AllowNet = allowNet
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithDefaultRegoVersion(version).
		WithEnablePrintStatements(enablePrint)
}

// InputBuilder builds the OPA input document for one request. need says
// which parts the active policy can read: a top-level key k for which
// need.Child(k) is nil may be left out (need is nil-safe).
type InputBuilder interface {
	BuildInput(need *Need) (ast.Object, error)
}

// Decide answers one request. Without policy paths the configured decision
// runs natively on facts: no input is built and OPA does not run. With a
// custom policy, input builds only what the policy can read, and OPA
// evaluates it; the natively computed configured decision is offered as
// input.gatehouse.decision when the policy reads it. An error from input is
// returned as is (the caller knows its kinds); an evaluation failure is an
// *EvalError, and the Decision carries the revision that evaluated.
func (e *Engine) Decide(ctx context.Context, facts *Facts, input InputBuilder) (Decision, error) {
	rev := e.current.Load()
	if rev.decidesNatively {
		d := rev.configured.decide(facts, nil)
		d.Revision = rev.hash
		return d, nil
	}
	in, err := rev.input(facts, input)
	if err != nil {
		return Decision{Revision: rev.hash}, err
	}
	return e.eval(ctx, rev, in)
}

// input builds the custom policy's input: what it reads, plus the natively
// computed configured decision when it reads input.gatehouse.decision.
func (rev *revision) input(facts *Facts, input InputBuilder) (ast.Object, error) {
	in, err := input.BuildInput(rev.need)
	if err != nil {
		return nil, err
	}
	if rev.offerDecision {
		d := rev.configured.decide(facts, nil)
		in.Insert(ast.InternedTerm(inputKeyGatehouse), ast.NewTerm(ast.NewObject(
			ast.Item(ast.InternedTerm("decision"), ast.NewTerm(d.value())))))
	}
	return in, nil
}

// Native reports whether the active revision decides natively.
func (e *Engine) Native() bool { return e.current.Load().decidesNatively }

// Eval evaluates the decision for input with OPA, whatever the revision (the
// native decision is not used: Eval is the Rego specification's answer).
// input is the policy input document as an AST value (see InputFromJSON, or
// build it with ast.NewObject). The request's ctx bounds the evaluation. A
// failed evaluation returns an *EvalError and a Decision that is zero apart
// from Revision; the caller must deny (fail closed).
func (e *Engine) Eval(ctx context.Context, input ast.Value) (Decision, error) {
	return e.eval(ctx, e.current.Load(), input)
}

func (e *Engine) eval(ctx context.Context, rev *revision, input ast.Value) (Decision, error) {
	d, err := e.evalOpts(ctx, rev, input, nil)
	if err != nil {
		e.stats.evalFailed(err)
	}
	return d, err
}

// evalOpts evaluates rev's query for input; tracer, when not nil, receives
// OPA's trace events (Explain).
func (e *Engine) evalOpts(ctx context.Context, rev *revision, input ast.Value, tracer topdown.QueryTracer) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{Revision: rev.hash}, &EvalError{Reason: ctxReason(err), Err: err}
	}
	var deadline time.Time
	if e.timeout > 0 {
		deadline = time.Now().Add(e.timeout)
	}
	if rev.network && e.timeout > 0 {
		// A built-in waiting on the network makes no cancellation checks:
		// it must see the deadline in its context.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	cancel := newEvalCancel(ctx, deadline)
	if rev.network {
		// And once such a built-in gives up (its failure may be a plain
		// built-in error that the evaluation goes on from), the next
		// expression must stop, not the 8th.
		defer context.AfterFunc(ctx, cancel.Cancel)()
	}
	value, defined, err := rev.query.eval(ctx, input, cancel, tracer)
	if err != nil {
		reason := ReasonError
		switch ctxErr := ctx.Err(); {
		case cancel.TimedOut():
			reason = ReasonTimeout
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		case ctxErr != nil:
			reason = ctxReason(ctxErr)
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return Decision{Revision: rev.hash}, &EvalError{Reason: reason, Err: err}
	}
	if !defined {
		return Decision{Revision: rev.hash}, &EvalError{Reason: ReasonUndefined,
			Err: fmt.Errorf("%s is undefined", e.decision)}
	}
	d, err := parseResult(value)
	if err != nil {
		return Decision{Revision: rev.hash}, &EvalError{Reason: ReasonBadResult, Err: fmt.Errorf("%s: %w", e.decision, err)}
	}
	d.Revision = rev.hash
	return d, nil
}

// ctxReason tells a deadline (the evaluation took too long) from a request
// the client gave up on.
func ctxReason(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	return ReasonError
}

// parseDecisionPath turns "envoy/authz/allow", "envoy.authz.allow" or
// "data.envoy.authz.allow" into the ref data.envoy.authz.allow.
func parseDecisionPath(s string) (ast.Ref, error) {
	p := strings.TrimSpace(s)
	if p == "" {
		p = DefaultDecision
	}
	sep := "."
	if strings.Contains(p, "/") {
		sep = "/"
	}
	p = strings.Trim(p, sep)
	if p == "data" {
		return nil, fmt.Errorf("decision %q: names the whole data document; name a rule such as envoy/authz/allow", s)
	}
	p = strings.TrimPrefix(p, "data"+sep)
	if p == "" {
		return nil, fmt.Errorf("decision %q: empty path", s)
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for seg := range strings.SplitSeq(p, sep) {
		if seg == "" {
			return nil, fmt.Errorf("decision %q: empty path segment", s)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	return ref, nil
}

// parseRegoVersion maps the RegoVersion option to OPA's constant.
func parseRegoVersion(s string) (ast.RegoVersion, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "v1", "1":
		return ast.RegoV1, nil
	case "v0", "0":
		return ast.RegoV0, nil
	}
	return ast.RegoUndefined, fmt.Errorf("rego version %q: want v0 or v1", s)
}

// printLogger sends Rego print() output to the debug log.
type printLogger struct{ logger *slog.Logger }

// Print implements print.Hook.
func (p printLogger) Print(pctx print.Context, msg string) error {
	p.logger.DebugContext(pctx.Context, "rego print", "location", pctx.Location.String(), "message", msg)
	return nil
}
