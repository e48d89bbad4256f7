package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/opaenvoy"
	"github.com/gatehouse-dev/gatehouse/policy"
)

const runUsage = `Usage: gatehouse run --server [OPA-Envoy's flags] [policy and data paths...]

Gatehouse as a drop-in for OPA-Envoy: the same command line, the same OPA
configuration file (services, bundles, keys, decision_logs, status,
discovery, plugins.envoy_ext_authz_grpc), run through OPA's own plugin
manager. A flag or key Gatehouse does not support is refused, naming it.
See docs/migrating-from-opa-envoy.md.

Flags (OPA's):
  -s, --server                 required: serve (OPA's interactive shell is not part of Gatehouse)
  -c, --config-file FILE       OPA's configuration file (YAML or JSON)
      --set KEY=VALUE          override a configuration value (repeatable; commas separate several)
      --set-file KEY=PATH      override a configuration value with a file's content (repeatable)
  -a, --addr ADDR              health (/health, /readyz) and /metrics listener (default localhost:8181)
      --diagnostic-addr ADDR   more listeners serving the same (repeatable)
  -b, --bundle                 load the paths as bundles
  -w, --watch                  load the paths again when a file under them changes
      --ignore PATTERN         file names to skip while loading the paths (repeatable)
      --v0-compatible          modules without a rego_version are Rego v0 (default v1)
      --v1-compatible          modules are Rego v1 (the default)
  -l, --log-level LEVEL        debug, info, warn or error (default info)
      --log-format FORMAT      json, json-pretty or text (default json)
      --shutdown-grace-period SECONDS  time in-flight checks get on SIGTERM (default 10)
      --pprof                  serve /debug/pprof/ on the --addr listener
      --skip-version-check, --disable-telemetry   accepted: Gatehouse never calls home
Flags (Gatehouse's):
      --admin-addr ADDR        admin gRPC listener (default 127.0.0.1:9192)
      --address-file PATH      write the bound listener addresses as JSON once listening
      --decision-log           also write Gatehouse's own decision log line per check
`

// runFlag is one flag of `gatehouse run`: its names, whether it takes a
// value, and what to do with it.
type runFlag struct {
	long, short string
	boolean     bool
	set         func(a *runArgs, value string) error
}

// runArgs is the parsed command line of `gatehouse run`.
type runArgs struct {
	server          bool
	configFile      string
	sets, setFiles  []string
	addrs           []string
	diagnosticAddrs []string
	bundleMode      bool
	watch           bool
	ignore          []string
	regoVersion     ast.RegoVersion
	logLevel        string
	logFormat       string
	shutdownGrace   time.Duration
	pprof           bool
	adminAddr       string
	addressFile     string
	decisionLog     bool
	paths           []string
}

// parseBool reads a boolean flag's optional value (--flag, --flag=false).
func parseBool(v string) (bool, error) {
	if v == "" {
		return true, nil
	}
	return strconv.ParseBool(v)
}

// commaList appends a StringSlice flag's values, as OPA's (pflag) do: a
// value may hold several, separated by commas.
func commaList(list *[]string, v string) {
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*list = append(*list, item)
		}
	}
}

func boolFlag(long, short string, set func(a *runArgs, on bool)) runFlag {
	return runFlag{long: long, short: short, boolean: true, set: func(a *runArgs, v string) error {
		on, err := parseBool(v)
		if err == nil {
			set(a, on)
		}
		return err
	}}
}

// runFlags are the flags `gatehouse run` takes; see runUsage.
var runFlags = []runFlag{
	boolFlag("server", "s", func(a *runArgs, on bool) { a.server = on }),
	{long: "config-file", short: "c", set: func(a *runArgs, v string) error { a.configFile = v; return nil }},
	{long: "set", set: func(a *runArgs, v string) error { a.sets = append(a.sets, v); return nil }},
	{long: "set-file", set: func(a *runArgs, v string) error { a.setFiles = append(a.setFiles, v); return nil }},
	{long: "addr", short: "a", set: func(a *runArgs, v string) error { commaList(&a.addrs, v); return nil }},
	{long: "diagnostic-addr", set: func(a *runArgs, v string) error { commaList(&a.diagnosticAddrs, v); return nil }},
	boolFlag("bundle", "b", func(a *runArgs, on bool) { a.bundleMode = on }),
	boolFlag("watch", "w", func(a *runArgs, on bool) { a.watch = on }),
	{long: "ignore", set: func(a *runArgs, v string) error { commaList(&a.ignore, v); return nil }},
	boolFlag("v0-compatible", "", func(a *runArgs, on bool) {
		if on {
			a.regoVersion = ast.RegoV0
		}
	}),
	boolFlag("v1-compatible", "", func(a *runArgs, on bool) {
		if on {
			a.regoVersion = ast.RegoV1
		}
	}),
	{long: "log-level", short: "l", set: func(a *runArgs, v string) error {
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, v) {
			return errors.New("want debug, info, warn or error")
		}
		a.logLevel = v
		return nil
	}},
	{long: "log-format", set: func(a *runArgs, v string) error {
		if !slices.Contains([]string{"json", "json-pretty", "text"}, v) {
			return errors.New("want json, json-pretty or text")
		}
		a.logFormat = v
		return nil
	}},
	{long: "shutdown-grace-period", set: func(a *runArgs, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errors.New("want a number of seconds")
		}
		a.shutdownGrace = time.Duration(n) * time.Second
		return nil
	}},
	boolFlag("pprof", "", func(a *runArgs, on bool) { a.pprof = on }),
	boolFlag("skip-version-check", "", func(*runArgs, bool) {}),
	boolFlag("disable-telemetry", "", func(*runArgs, bool) {}),
	{long: "admin-addr", set: func(a *runArgs, v string) error { a.adminAddr = v; return nil }},
	{long: "address-file", set: func(a *runArgs, v string) error { a.addressFile = v; return nil }},
	boolFlag("decision-log", "", func(a *runArgs, on bool) { a.decisionLog = on }),
}

// refusedRunFlags are OPA's `run` flags Gatehouse refuses, with why and what
// to do instead.
var refusedRunFlags = map[string]string{
	"tls-cert-file":                 "it serves OPA's REST API over TLS, which Gatehouse does not serve; the health and metrics listeners are plain HTTP (put them behind the pod network)",
	"tls-private-key-file":          "it serves OPA's REST API over TLS, which Gatehouse does not serve",
	"tls-ca-cert-file":              "it authenticates clients of OPA's REST API, which Gatehouse does not serve",
	"tls-cert-refresh-period":       "it serves OPA's REST API over TLS, which Gatehouse does not serve",
	"tls-cipher-suites":             "it serves OPA's REST API over TLS, which Gatehouse does not serve",
	"min-tls-version":               "it serves OPA's REST API over TLS, which Gatehouse does not serve",
	"authentication":                "it protects OPA's REST API, which Gatehouse does not serve; remove it",
	"authorization":                 "it protects OPA's REST API, which Gatehouse does not serve; remove it",
	"h2c":                           "the health and metrics listeners speak HTTP/1.1; remove it",
	"unix-socket-perm":              "the health and metrics listeners are TCP only",
	"watch-config":                  "the configuration is read once at start; restart to apply changes",
	"history":                       "it belongs to OPA's interactive shell",
	"format":                        "it belongs to OPA's interactive shell",
	"ready-timeout":                 "Gatehouse serves at once and reports readiness on /readyz and /health?bundles",
	"shutdown-wait-period":          "Gatehouse turns not-ready and drains on SIGTERM itself; use --shutdown-grace-period",
	"log-level-request":             "Gatehouse serves no REST API requests to log",
	"log-timestamp-format":          "Gatehouse's log timestamps are RFC 3339",
	"max-errors":                    "every compile error is reported",
	"verification-key":              "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"verification-key-id":           "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"signing-alg":                   "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"scope":                         "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"skip-verify":                   "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"exclude-files-verify":          "for a signed --bundle on the command line; configure keys and a bundles entry with signing instead",
	"optimize-store-for-read-speed": "Gatehouse always reads data as compiled values",
	"skip-known-schema-check":       "it checks OPA's REST API authorization policy, which Gatehouse does not serve",
}

// shortRefused maps the short forms of refused flags to their long names.
var shortRefused = map[string]string{"H": "history", "f": "format", "m": "max-errors"}

// parseRunArgs reads OPA-Envoy's `run` command line (after "run"): flags and
// paths in any order, as OPA's (cobra) command line allows, "--" ending the
// flags.
func parseRunArgs(args []string) (*runArgs, error) {
	a := &runArgs{logLevel: "info", logFormat: "json", shutdownGrace: 10 * time.Second}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			a.paths = append(a.paths, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			a.paths = append(a.paths, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		long := strings.HasPrefix(arg, "--")
		if !long && len(name) > 1 {
			return nil, fmt.Errorf("flag %s: combined short flags are not supported; give each one alone", arg)
		}
		var f *runFlag
		for j := range runFlags {
			if (long && runFlags[j].long == name) || (!long && runFlags[j].short != "" && runFlags[j].short == name) {
				f = &runFlags[j]
				break
			}
		}
		if f == nil {
			refused := name
			if !long {
				refused = shortRefused[name]
			}
			if why, ok := refusedRunFlags[refused]; ok {
				return nil, fmt.Errorf("flag %s: not supported: %s", arg, why)
			}
			return nil, fmt.Errorf("flag %s: unknown flag (gatehouse run --help lists the flags)", arg)
		}
		if !f.boolean && !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag %s: needs a value", arg)
			}
			i++
			value = args[i]
		}
		if err := f.set(a, value); err != nil {
			return nil, fmt.Errorf("flag %s: %w", arg, err)
		}
	}
	if !a.server {
		return nil, errors.New("--server is required: gatehouse run only serves (OPA's interactive shell is not part of Gatehouse)")
	}
	for _, p := range a.paths {
		if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
			return nil, fmt.Errorf("path %s: a URL on the command line is not supported; configure it as a service and a bundles entry", p)
		}
	}
	if len(a.addrs) == 0 {
		a.addrs = []string{"localhost:8181"} // OPA's default
	}
	for _, addr := range append(slices.Clone(a.addrs), a.diagnosticAddrs...) {
		if strings.Contains(addr, "://") {
			return nil, fmt.Errorf("address %s: the health and metrics listeners are TCP host:port only", addr)
		}
	}
	return a, nil
}

// runConfig maps the command line and plugins.envoy_ext_authz_grpc onto
// Gatehouse's configuration.
func runConfig(a *runArgs, ext opaenvoy.ExtAuthz) (*config.Config, error) {
	cfg := config.Default()
	if ext.Network == "tcp" {
		cfg.Listen.GRPC = ext.Address
	}
	cfg.Listen.HTTP = a.addrs[0]
	if a.adminAddr != "" {
		cfg.Listen.Admin = a.adminAddr
	}
	cfg.GRPC.MaxRecvMsgBytes = ext.MaxRecvMsgSize
	cfg.GRPC.ShutdownGrace = config.Duration(a.shutdownGrace)
	cfg.Policy.Decision = ext.Decision
	cfg.Policy.DryRun = ext.DryRun
	parseBody := !ext.SkipRequestBodyParse
	cfg.Policy.ParseBody = &parseBody
	watch := false // the policy comes from OPA's plugin manager
	cfg.Policy.Watch = &watch
	cfg.Log.Level = a.logLevel
	cfg.Log.Decisions = &a.decisionLog
	cfg.Ops.PProf = a.pprof
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// runParts are what `gatehouse run` adds to serve: the engine fed by OPA's
// plugin manager, the manager itself, the listeners OPA-Envoy has.
type runParts struct {
	engine          *policy.Engine
	grpcNetwork     string // "unix" for a socket; "" for listen.grpc
	grpcAddr        string
	maxSendMsgBytes int
	reflection      bool
	diagnosticAddrs []string
	// diagnosticBound are the diagnostic listeners' bound addresses.
	diagnosticBound []string
	diagnostic      []*http.Server
	runtimeOpts     opaenvoy.Options
	runtime         *opaenvoy.Runtime
	logger          *slog.Logger
	// events feeds OPA's decision log plugin; nil without decision_logs.
	events *authz.DecisionEvents
}

// LogDecision hands a decision event to OPA's decision log plugin.
func (r *runParts) LogDecision(ctx context.Context, ev authz.DecisionEvent) error {
	return r.runtime.LogDecision(ctx, ev)
}

// start builds OPA's plugin manager (activating the command line's files)
// and starts its plugins; serve calls it once the parts are built.
func (r *runParts) start(ctx context.Context, p *parts) error {
	opts := r.runtimeOpts
	opts.Policy = r.engine
	opts.Registerer = p.registry
	rt, err := opaenvoy.New(ctx, opts)
	if err != nil {
		return err
	}
	r.runtime = rt
	p.alsoReady = rt.BundlesActivated
	p.bundles = rt.BundleStates
	if r.events != nil {
		if err := p.registry.Register(r.events.Collector()); err != nil {
			return err
		}
		// The workers outlive ctx: stop drains them before the plugins stop.
		r.events.Run(context.WithoutCancel(ctx))
	}
	if err := rt.Start(ctx); err != nil {
		rt.Stop(context.Background())
		return fmt.Errorf("plugins: %w", err)
	}
	return nil
}

// listening marks OPA-Envoy's plugin up: the ext_authz listener serves.
func (r *runParts) listening() { r.runtime.Serving(true) }

// stop closes the diagnostic listeners and stops the plugins, which upload
// the decision log events they still hold.
func (r *runParts) stop() {
	for _, s := range r.diagnostic {
		_ = s.Close()
	}
	if r.runtime == nil {
		return
	}
	if r.events != nil {
		r.events.Close()
	}
	r.runtime.Serving(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.runtime.Stop(ctx)
}

// opsRoutes adds OPA's health API to the ops listener.
func (r *runParts) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, req *http.Request) { r.runtime.Health(w, req) })
}

// serveDiagnostic serves ops's handler on the --diagnostic-addr listeners
// (and the --addr listeners after the first).
func (r *runParts) serveDiagnostic(ops *http.Server, errc chan<- error) error {
	for _, addr := range r.diagnosticAddrs {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--diagnostic-addr %s: %w", addr, err)
		}
		srv := &http.Server{
			Handler:                      ops.Handler,
			ReadHeaderTimeout:            ops.ReadHeaderTimeout,
			ReadTimeout:                  ops.ReadTimeout,
			WriteTimeout:                 ops.WriteTimeout,
			IdleTimeout:                  ops.IdleTimeout,
			MaxHeaderBytes:               ops.MaxHeaderBytes,
			DisableGeneralOptionsHandler: true,
		}
		r.diagnostic = append(r.diagnostic, srv)
		r.diagnosticBound = append(r.diagnosticBound, lis.Addr().String())
		go func() {
			if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if len(r.diagnosticBound) > 0 {
		r.logger.Info("diagnostic listeners", "addresses", r.diagnosticBound)
	}
	return nil
}

// runOPAEnvoy is `gatehouse run`: OPA-Envoy's command line. Exit codes as
// run's: 0 after a clean stop, 1 when serving failed, 2 for a usage or
// configuration error.
func runOPAEnvoy(ctx context.Context, args []string, stderr io.Writer) int {
	if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
		fmt.Fprint(stderr, runUsage)
		return 0
	}
	a, err := parseRunArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: %v\n\n%s", err, runUsage)
		return 2
	}
	raw, err := opaenvoy.Load(a.configFile, a.sets, a.setFiles)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: configuration: %v\n", err)
		return 2
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		fmt.Fprintf(stderr, "gatehouse run: configuration: %v\n", err)
		return 2
	}
	rawExt, err := opaenvoy.CheckConfig(conf)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: configuration %s: %v\n", a.configFile, err)
		return 2
	}
	ext, err := opaenvoy.ParseExtAuthz(rawExt)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: configuration %s: %v\n", a.configFile, err)
		return 2
	}
	cfg, err := runConfig(a, ext)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: %v\n", err)
		return 2
	}

	logger, out := newLogger(stderr, cfg.Log.Level, a.logFormat)
	defer out.Close()
	engine, err := policy.NewAwaitingActivation(ctx, policy.Options{
		Decision:    ext.Decision,
		EvalTimeout: cfg.Policy.EvalTimeout.D(),
		Logger:      logger.With("component", "policy"),
	})
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse run: %v\n", err)
		return 2
	}
	rp := &runParts{
		engine:          engine,
		maxSendMsgBytes: ext.MaxSendMsgSize,
		reflection:      ext.EnableReflection,
		diagnosticAddrs: append(slices.Clone(a.addrs[1:]), a.diagnosticAddrs...),
		logger:          logger,
		runtimeOpts: opaenvoy.Options{
			Config:        raw,
			Paths:         a.paths,
			BundleMode:    a.bundleMode,
			Watch:         a.watch,
			Ignore:        a.ignore,
			RegoVersion:   a.regoVersion,
			Logger:        logger.With("component", "opa"),
			Console:       out,
			ConsoleFormat: a.logFormat,
		},
	}
	if _, ok := conf["decision_logs"]; ok || conf["discovery"] != nil {
		// Without decision_logs (or discovery, which may configure it), no
		// event is built at all.
		if rp.events, err = authz.NewDecisionEvents(authz.DecisionEventsOptions{Sink: rp}); err != nil {
			fmt.Fprintf(stderr, "gatehouse run: %v\n", err)
			return 2
		}
	}
	if ext.Network == "unix" {
		rp.grpcNetwork, rp.grpcAddr = "unix", ext.Address
		if !strings.HasPrefix(ext.Address, "@") {
			// As OPA-Envoy does: a socket left by an earlier run is replaced.
			_ = os.Remove(ext.Address)
		}
	}
	var decisions io.Writer = io.Discard
	if a.decisionLog {
		decisions = out
	}
	err = serve(ctx, cfg, serveOptions{configFile: a.configFile, addressFile: a.addressFile, run: rp}, logger, decisions)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "gatehouse run: %v\n", err)
			return 2
		}
		logger.Error("gatehouse stopped", "error", err.Error())
		return 1
	}
	return 0
}
