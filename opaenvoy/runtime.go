package opaenvoy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// Activator takes the policy revisions the plugin manager activates: the
// policy engine.
type Activator interface {
	Activate(ctx context.Context, a policy.Activation) error
	ActivationFailed(err error)
}

// Options configures a Runtime.
type Options struct {
	// Config is OPA's configuration as JSON (see Load); CheckConfig must
	// accept it.
	Config []byte
	// ID names this instance in decision logs and status reports ("" for a
	// random one, as OPA does).
	ID string
	// Paths are the command line's policy and data files and directories,
	// loaded as `opa run` loads them; with BundleMode each is a bundle.
	Paths      []string
	BundleMode bool
	// Ignore are --ignore's file name patterns.
	Ignore []string
	// Watch is --watch: Paths are loaded again when a file under them
	// changes.
	Watch bool
	// RegoVersion is the syntax of the modules that do not say (bundles'
	// manifests may): RegoV1 by default, RegoV0 with --v0-compatible.
	RegoVersion ast.RegoVersion
	// Policy receives every activation.
	Policy Activator
	// Logger receives the plugin manager's and plugins' messages.
	Logger *slog.Logger
	// Console is where decision_logs.console and status.console write, in
	// OPA's format; nil for stderr.
	Console io.Writer
	// ConsoleFormat is --log-format: json (default), json-pretty or text.
	ConsoleFormat string
	// Registerer takes the plugins' Prometheus metrics (status.prometheus,
	// bundle loading); nil for none.
	Registerer prometheus.Registerer
}

// Runtime is OPA's plugin manager with the plugins OPA's configuration asks
// for (discovery, bundles, decision logs, status) and OPA-Envoy's ext_authz
// plugin, feeding Gatehouse's policy engine on every activation.
type Runtime struct {
	manager *plugins.Manager
	ext     ExtAuthz
	plugin  *extAuthzPlugin
	policy  Activator
	logger  *slog.Logger
	// paths, bundleMode, ignore and version are how the command line's
	// paths are loaded, again on every change with --watch.
	paths      []string
	bundleMode bool
	ignore     []string
	version    ast.RegoVersion
	// watcher watches paths (--watch; nil without) from Start until Stop,
	// which calls stopWatch.
	watcher   *fsnotify.Watcher
	stopWatch context.CancelFunc
	// bundles are the active bundles' revisions (name -> revision), replaced
	// whole on every activation.
	bundles atomic.Pointer[map[string]string]
	// failMu guards failed, the bundle errors last reported to Policy, so
	// that one failure is reported once, not on every poll, and activated,
	// when the bundle plugin last activated each bundle.
	failMu    sync.Mutex
	failed    map[string]string
	activated map[string]time.Time
	// activations counts the revisions handed to Policy.
	activations atomic.Int64
	// byRevision maps a policy revision (content hash) to the bundle
	// revisions it was built from, for the decision log.
	byRevision sync.Map
	// logPaths are the decision log's mask and drop documents; logRules
	// whether the current compiler's rules define them (decisionlog.go).
	logPaths logPaths
	logRules atomic.Pointer[logRules]
}

// New reads the configuration, loads the command line's files, builds the
// plugin manager and its plugins and activates the files; nothing is
// downloaded before Start. An unsupported key, a policy that does not compile
// or a plugin configuration OPA refuses is an error.
func New(ctx context.Context, opts Options) (_ *Runtime, err error) {
	if opts.Policy == nil {
		return nil, errors.New("opaenvoy: no policy to activate")
	}
	var conf map[string]any
	if err := json.Unmarshal(opts.Config, &conf); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	rawExt, err := CheckConfig(conf)
	if err != nil {
		return nil, err
	}
	ext, err := ParseExtAuthz(rawExt)
	if err != nil {
		return nil, err
	}
	lp, err := parseLogPaths(conf)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	version := opts.RegoVersion
	if version == ast.RegoUndefined {
		version = ast.RegoV1
	}
	id := opts.ID
	if id == "" {
		id = randomID()
	}
	r := &Runtime{
		ext: ext, policy: opts.Policy, logger: logger, failed: map[string]string{}, activated: map[string]time.Time{},
		paths: opts.Paths, bundleMode: opts.BundleMode, ignore: opts.Ignore, version: version,
		logPaths: lp,
	}
	if opts.Watch && len(opts.Paths) > 0 {
		// Watching starts before the paths are first read, so that no change
		// between the two is missed.
		if r.watcher, err = newWatcher(opts.Paths); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				r.closeWatcher()
			}
		}()
	}
	r.bundles.Store(&map[string]string{})

	files, bundles, err := loadPaths(opts.Paths, opts.BundleMode, opts.Ignore, version)
	if err != nil {
		return nil, err
	}
	console := logging.New()
	if opts.Console != nil {
		console.SetOutput(opts.Console)
	}
	switch opts.ConsoleFormat {
	case "text":
		console.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json-pretty":
		console.SetFormatter(&logrus.JSONFormatter{PrettyPrint: true})
	default:
		console.SetFormatter(&logrus.JSONFormatter{})
	}
	mopts := []func(*plugins.Manager){
		plugins.InitFiles(files),
		plugins.InitBundles(bundles),
		plugins.Logger(&slogLogger{logger: logger}),
		plugins.ConsoleLogger(console),
		plugins.WithParserOptions(ast.ParserOptions{RegoVersion: version}),
		plugins.WithEnableVersionCheck(false),
		plugins.WithEnableTelemetry(false),
	}
	if opts.Registerer != nil {
		mopts = append(mopts, plugins.WithPrometheusRegister(opts.Registerer))
	}
	// The store is written by the bundle plugin only; every activation is
	// copied out of it (activate), so no reader holds a transaction open.
	manager, err := plugins.New(opts.Config, id, inmem.New(), mopts...)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	r.manager = manager
	for _, w := range manager.Config.Warnings {
		logger.Warn("configuration: " + w)
	}
	manager.RegisterCompilerTrigger(r.compilerUpdated)
	if err := manager.Init(ctx); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	factory := &extAuthzFactory{runtime: r}
	disco, err := discovery.New(manager, discovery.Factories(map[string]plugins.Factory{
		PluginName: factory, LegacyPluginName: factory,
	}), discovery.BootConfig(conf))
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	manager.Register(discovery.Name, disco)
	if bp := bundleplugin.Lookup(manager); bp != nil {
		bp.Register("gatehouse", r.bundleStatus)
	}
	// The files (and --bundle directories) were compiled by Init, whose
	// commit may already have activated them: if not, activate them now, as
	// OPA serves them before any bundle arrives.
	if r.activations.Load() > 0 {
		return r, nil
	}
	if err := storage.Txn(ctx, manager.Store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		return r.activate(ctx, txn)
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// ExtAuthz is the plugins.envoy_ext_authz_grpc configuration.
func (r *Runtime) ExtAuthz() ExtAuthz { return r.ext }

// Manager is OPA's plugin manager.
func (r *Runtime) Manager() *plugins.Manager { return r.manager }

// Start starts the plugins: discovery, bundle downloads, decision log and
// status uploads; and with Watch, watching the paths.
func (r *Runtime) Start(ctx context.Context) error {
	if err := r.manager.Start(ctx); err != nil {
		return err
	}
	if r.watcher != nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r.stopWatch = cancel
		go r.watch(wctx, r.watcher)
	}
	return nil
}

// Stop stops watching and the plugins; the decision log plugin uploads what
// it buffered within ctx's deadline.
func (r *Runtime) Stop(ctx context.Context) {
	if r.stopWatch != nil {
		r.stopWatch()
	} else {
		r.closeWatcher()
	}
	r.manager.Stop(ctx)
}

// closeWatcher releases a watcher that was never started.
func (r *Runtime) closeWatcher() {
	if r.watcher != nil {
		r.watcher.Close()
	}
}

// Serving marks OPA-Envoy's plugin OK (its gRPC listener is up), or not
// ready again when it stops, for /health?plugins.
func (r *Runtime) Serving(up bool) {
	state := plugins.StateNotReady
	if up {
		state = plugins.StateOK
	}
	r.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: state})
}

// BundlesActivated reports whether every configured bundle (and the
// discovery bundle) has been activated at least once: readiness, as OPA's
// /health?bundles.
func (r *Runtime) BundlesActivated() bool {
	return bundlesReady(r.manager.PluginStatus())
}

// Bundles returns the active bundles' revisions by bundle name.
func (r *Runtime) Bundles() map[string]string { return *r.bundles.Load() }

// BundleState is one bundle as the admin Status reports it.
type BundleState struct {
	Name string
	// Revision is the active bundle's manifest revision: the one the
	// active policy revision was built from.
	Revision string
	// ActivatedAt is when the bundle plugin last activated it (zero for a
	// --bundle path, activated at start).
	ActivatedAt time.Time
	// Error is why the last download, verification or activation failed;
	// empty when it succeeded.
	Error string
}

// BundleStates returns every bundle that is active or that the bundle
// plugin has tried to activate, by name.
func (r *Runtime) BundleStates() []BundleState {
	active := r.Bundles()
	r.failMu.Lock()
	defer r.failMu.Unlock()
	names := make([]string, 0, len(active)+len(r.failed))
	for name := range active {
		names = append(names, name)
	}
	for name := range r.failed {
		if _, ok := active[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	states := make([]BundleState, 0, len(names))
	for _, name := range names {
		states = append(states, BundleState{Name: name, Revision: active[name], ActivatedAt: r.activated[name], Error: r.failed[name]})
	}
	return states
}

// bundlesOf returns the bundle revisions policy revision rev was built from
// (the active ones when rev is unknown).
func (r *Runtime) bundlesOf(rev string) map[string]string {
	if b, ok := r.byRevision.Load(rev); ok {
		return b.(map[string]string)
	}
	return r.Bundles()
}

// compilerUpdated is the plugin manager's compiler trigger: it runs inside
// the transaction that activated new policies or data, after the manager
// compiled them, so the store holds exactly what the compiler was built for.
func (r *Runtime) compilerUpdated(txn storage.Transaction) {
	// The error is counted and logged by the engine, which keeps its last
	// good revision.
	_ = r.activate(context.Background(), txn)
}

// activate copies the store's data and the manager's compiler into a new
// policy revision, through txn, and hands it to the engine.
func (r *Runtime) activate(ctx context.Context, txn storage.Transaction) error {
	compiler := r.manager.GetCompiler()
	if compiler == nil {
		err := errors.New("the plugin manager has no compiled policy")
		r.policy.ActivationFailed(err)
		return err
	}
	raw, err := r.manager.Store.Read(ctx, txn, storage.Path{})
	if err != nil {
		err = fmt.Errorf("read data: %w", err)
		r.policy.ActivationFailed(err)
		return err
	}
	// InterfaceToValue builds new values all the way down: nothing of the
	// store, which the next activation writes, stays reachable.
	value, err := ast.InterfaceToValue(raw)
	if err != nil {
		err = fmt.Errorf("data: %w", err)
		r.policy.ActivationFailed(err)
		return err
	}
	data, ok := value.(ast.Object)
	if !ok {
		err := errors.New("data: not an object")
		r.policy.ActivationFailed(err)
		return err
	}
	revisions := map[string]string{}
	if names, err := bundle.ReadBundleNamesFromStore(ctx, r.manager.Store, txn); err == nil {
		for _, name := range names {
			if rev, err := bundle.ReadBundleRevisionFromStore(ctx, r.manager.Store, txn, name); err == nil {
				revisions[name] = rev
			}
		}
	}
	hash, err := revisionHash(ctx, r.manager.Store, txn, data)
	if err != nil {
		r.policy.ActivationFailed(err)
		return err
	}
	if err := r.policy.Activate(ctx, policy.Activation{Compiler: compiler, Data: data, Revision: hash}); err != nil {
		return err
	}
	r.bundles.Store(&revisions)
	r.byRevision.Store(hash, revisions)
	r.activations.Add(1)
	r.logger.Info("bundles activated", "revision", hash, "bundles", revisions)
	return nil
}

// revisionHash names an activation by its content: every policy's source
// and the data.
func revisionHash(ctx context.Context, store storage.Store, txn storage.Transaction, data ast.Object) (string, error) {
	ids, err := store.ListPolicies(ctx, txn)
	if err != nil {
		return "", fmt.Errorf("list policies: %w", err)
	}
	h := sha256.New()
	slices.Sort(ids)
	for _, id := range ids {
		src, err := store.GetPolicy(ctx, txn, id)
		if err != nil {
			return "", fmt.Errorf("policy %s: %w", id, err)
		}
		fmt.Fprintf(h, "module %s %d\x00", id, len(src))
		h.Write(src)
	}
	h.Write([]byte("data\x00"))
	h.Write([]byte(data.String()))
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// bundleStatus is the bundle plugin's listener, called after each download
// and activation attempt of a bundle. A bundle that failed (download,
// signature, compilation) is reported to the engine once per distinct error:
// the engine keeps its revision, and counts and logs the failure.
func (r *Runtime) bundleStatus(st bundleplugin.Status) {
	msg := ""
	if st.Code != "" || len(st.Errors) > 0 {
		msg = st.Message
		for _, e := range st.Errors {
			msg += "; " + e.Error()
		}
	}
	r.failMu.Lock()
	prev := r.failed[st.Name]
	r.failed[st.Name] = msg
	if !st.LastSuccessfulActivation.IsZero() {
		r.activated[st.Name] = st.LastSuccessfulActivation
	}
	r.failMu.Unlock()
	if msg != "" && msg != prev {
		r.policy.ActivationFailed(fmt.Errorf("bundle %s (active revision %q): %s", st.Name, st.ActiveRevision, msg))
	}
}

// bundlesReady is OPA's /health?bundles: the discovery plugin, when there
// is one, and the bundle plugin report OK (each configured bundle activated).
func bundlesReady(statuses map[string]*plugins.Status) bool {
	for _, name := range []string{discovery.Name, bundleplugin.Name} {
		if st, ok := statuses[name]; ok && st != nil && st.State != plugins.StateOK {
			return false
		}
	}
	return true
}

// loadPaths reads the command line's paths as `opa run` does: files and
// directories of modules and data, or with bundleMode each path a bundle.
func loadPaths(paths []string, bundleMode bool, ignore []string, version ast.RegoVersion) (loader.Result, map[string]*bundle.Bundle, error) {
	var files loader.Result
	if len(paths) == 0 {
		return files, nil, nil
	}
	filter := func(abspath string, info os.FileInfo, depth int) bool {
		for _, pattern := range ignore {
			if loader.GlobExcludeName(pattern, 1)(abspath, info, depth) {
				return true
			}
		}
		return false
	}
	if bundleMode {
		bundles := map[string]*bundle.Bundle{}
		for _, p := range paths {
			b, err := loader.NewFileLoader().WithRegoVersion(version).WithFilter(filter).AsBundle(p)
			if err != nil {
				return files, nil, fmt.Errorf("bundle %s: %w", p, err)
			}
			bundles[p] = b
		}
		return files, bundles, nil
	}
	res, err := loader.NewFileLoader().WithRegoVersion(version).Filtered(paths, filter)
	if err != nil {
		return files, nil, fmt.Errorf("load: %w", err)
	}
	return *res, nil, nil
}

// randomID is a version 4 UUID, as OPA names an instance without one.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
