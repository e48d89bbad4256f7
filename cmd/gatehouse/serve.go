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
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/forwardauth"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/connlimit"
	"github.com/gatehouse-dev/gatehouse/internal/version"
	"github.com/gatehouse-dev/gatehouse/opaenvoy"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// configError marks failures caused by the configuration (exit code 2).
type configError struct {
	file string
	err  error
}

func (e *configError) Error() string {
	if e.file == "" {
		return e.err.Error()
	}
	return fmt.Sprintf("config %s: %v", e.file, e.err)
}

func (e *configError) Unwrap() error { return e.err }

// parts are the pieces serve wires together.
type parts struct {
	policy *policy.Engine
	tokens *liveTokens
	authz  *authz.Server
	limits authz.Limits
	// forwardAuth is nil when listen.forward_auth is off.
	forwardAuth *forwardauth.Handler
	// draining is set on SIGTERM, before in-flight checks finish: /readyz
	// answers 503 from then on, as gRPC health answers NOT_SERVING.
	draining atomic.Bool
	// alsoReady, when set, is one more readiness condition (gatehouse run:
	// every OPA bundle activated once).
	alsoReady func() bool
	// bundles, when set, reports OPA's bundles for the admin Status
	// (gatehouse run).
	bundles func() []opaenvoy.BundleState
	// telemetry: metrics registry, shadow policy (cmd/gatehouse/metrics.go).
	*telemetry
}

// buildOptions are what build needs beside the configuration.
type buildOptions struct {
	// file is the configuration file, named in configuration errors.
	file string
	// jwksClient fetches the JWT providers' key sets; nil for the default
	// transport. `gatehouse validate` gives one that cannot dial.
	jwksClient *http.Client
	// engine, when set, is the policy engine to use instead of one built
	// from cfg.Policy (gatehouse run: policies from OPA's plugin manager).
	engine *policy.Engine
	// events, when set, receives every decided check (gatehouse run: OPA's
	// decision log plugin).
	events *authz.DecisionEvents
}

// build makes every part the configuration describes, without listening:
// whatever the configuration gets wrong fails here, as a *configError, which
// is why `gatehouse validate` runs exactly this. The JWT providers start
// fetching their key sets in the background (Close the tokens to stop them).
func build(ctx context.Context, cfg *config.Config, bo buildOptions, logger *slog.Logger, decisions io.Writer) (*parts, error) {
	file := bo.file
	rules := cfg.Rules()
	engine, err := bo.engine, error(nil)
	if engine == nil {
		engine, err = policy.New(ctx, policy.Options{
			Paths:       cfg.Policy.Paths,
			Decision:    cfg.Policy.Decision,
			RegoVersion: cfg.Policy.RegoVersion,
			Rules:       &rules,
			EvalTimeout: cfg.Policy.EvalTimeout.D(),
			Logger:      logger.With("component", "policy"),

			StrictBuiltinErrors: cfg.Policy.StrictBuiltinErrors,
			AllowNet:            cfg.Policy.AllowNet,
		})
	}
	if err != nil {
		return nil, &configError{file, err}
	}
	if len(cfg.Policy.AllowNet) == 1 && cfg.Policy.AllowNet[0] == policy.AllowAnyHost {
		logger.Warn("policy.allow_net is \"*\": policies may reach any host with http.send and net.lookup_ip_addr, including the cloud metadata address and internal services; list the hosts they need instead")
	}
	resolver, err := clientip.New(cfg.ClientIP.Options())
	if err != nil {
		return nil, &configError{file, err}
	}
	jwtOpts := cfg.JWT.Options()
	jwtOpts.Logger = logger.With("component", "jwt")
	jwtOpts.HTTPClient = bo.jwksClient
	tokens, err := jwt.New(ctx, jwtOpts)
	if err != nil {
		return nil, &configError{file, err}
	}
	limits := authz.Limits{
		MaxHeaders:     cfg.Limits.MaxHeaders,
		MaxHeaderBytes: cfg.Limits.MaxHeaderBytes,
		MaxPathBytes:   cfg.Limits.MaxPathBytes,
		MaxQueryParams: cfg.Limits.MaxQueryParams,
		MaxJSONDepth:   cfg.Limits.MaxJSONDepth,
	}
	opts := authz.Options{
		Policy:     engine,
		ClientIP:   resolver,
		FailStatus: cfg.Policy.FailStatus,
		DryRun:     cfg.Policy.DryRun,
		ParseBody:  *cfg.Policy.ParseBody,

		MaxParseBodyBytes: cfg.Policy.MaxParseBodyBytes,
		Limits:            limits,
		Logger:            logger.With("component", "authz"),
	}
	if len(cfg.JWT.Providers) > 0 {
		opts.Tokens = tokens
	}
	if *cfg.Log.Decisions {
		opts.DecisionLog = decisions
		opts.DecisionLogDebug = cfg.Log.Level == "debug"
	}
	live := newLiveTokens(tokens)
	tel, err := newTelemetry(ctx, cfg, file, logger, engine, live)
	if err != nil {
		tokens.Close()
		return nil, err
	}
	opts.Metrics, opts.Shadow = tel.authz, tel.shadow
	opts.DecisionEvents = bo.events
	server, err := authz.New(opts)
	if err != nil {
		tokens.Close()
		return nil, err
	}
	p := &parts{policy: engine, tokens: live, authz: server, limits: limits, telemetry: tel}
	if cfg.Listen.ForwardAuth != "" {
		p.forwardAuth, err = forwardauth.New(forwardauth.Options{
			Checker:      server,
			Mode:         cfg.ForwardAuth.Mode,
			PathPrefix:   cfg.ForwardAuth.PathPrefix,
			ClientHeader: cfg.ForwardAuth.NGINXClientHeader,
			MaxBodyBytes: int64(cfg.ForwardAuth.MaxBodyBytes),
			Logger:       logger.With("component", "forward_auth"),
		})
		if err != nil {
			tokens.Close()
			return nil, &configError{file, err}
		}
	}
	return p, nil
}

func (p *parts) ready() bool {
	return !p.draining.Load() && p.policy.Ready() && p.tokens.Ready() && (p.alsoReady == nil || p.alsoReady())
}

// serveOptions are what serve needs beside the configuration.
type serveOptions struct {
	configFile string // the configuration file, named in configuration errors
	// overrides are the command line's settings, applied again to every
	// reload of configFile.
	overrides   func(*config.Config)
	addressFile string // where to write the bound addresses; "" for nowhere
	// run is set by `gatehouse run`, the OPA-Envoy drop-in (run.go).
	run *runParts
}

// writeAddressFile writes the bound addresses (listener name -> host:port) as
// a JSON object to path, through a temporary file in the same directory and a
// rename, so a reader never sees a partial file. Later listeners add keys.
func writeAddressFile(path string, addrs map[string]string) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return fmt.Errorf("address file %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("address file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("address file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("address file %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("address file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("address file %s: %w", path, err)
	}
	return nil
}

// serve runs the gRPC and HTTP listeners until ctx is done, then stops
// gracefully: health turns NOT_SERVING, in-flight checks finish (bounded by
// grpc.shutdown_grace), and the listeners close.
func serve(ctx context.Context, cfg *config.Config, opts serveOptions, logger *slog.Logger, decisions io.Writer) error {
	file := opts.configFile
	bo := buildOptions{file: file}
	if opts.run != nil {
		bo.engine, bo.events = opts.run.engine, opts.run.events
	}
	p, err := build(ctx, cfg, bo, logger, decisions)
	if err != nil {
		return err
	}
	defer p.tokens.Close()
	defer startGCTuner(cfg, logger).Stop()
	if opts.run != nil {
		if err := opts.run.start(ctx, p); err != nil {
			return &configError{file, err}
		}
		defer opts.run.stop()
	}

	grpcNetwork, grpcAddr := "tcp", cfg.Listen.GRPC
	if opts.run != nil && opts.run.grpcNetwork != "" {
		grpcNetwork, grpcAddr = opts.run.grpcNetwork, opts.run.grpcAddr
	}
	grpcLis, err := net.Listen(grpcNetwork, grpcAddr)
	if err != nil {
		return &configError{file, fmt.Errorf("listen.grpc: %w", err)}
	}
	httpLis, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		grpcLis.Close()
		return &configError{file, fmt.Errorf("listen.http: %w", err)}
	}

	adminLis, err := net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return &configError{file, fmt.Errorf("listen.admin: %w", err)}
	}
	admin := newAdminGRPC(p)

	var grpcOpts []grpc.ServerOption
	if opts.run != nil && opts.run.maxSendMsgBytes > 0 {
		grpcOpts = append(grpcOpts, grpc.MaxSendMsgSize(opts.run.maxSendMsgBytes))
	}
	gs := grpc.NewServer(append(grpcOpts,
		grpc.MaxRecvMsgSize(cfg.GRPC.MaxRecvMsgBytes),
		// Oversized header sets are refused before they are decoded.
		grpc.ForceServerCodecV2(authz.Codec(p.limits)),
		// Checks run on long-lived workers whose stacks have already grown
		// to what a check needs; a goroutine per stream would grow (copy)
		// its stack on every check. When every worker is busy (more
		// concurrent checks than workers, a slow policy), grpc-go starts a
		// goroutine as before.
		grpc.NumStreamWorkers(uint32(max(64, 4*runtime.GOMAXPROCS(0)))),
		grpc.ChainUnaryInterceptor(p.grpc.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(p.grpc.StreamInterceptor()),
	)...)
	authv3.RegisterAuthorizationServer(gs, p.authz)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	if opts.run == nil || opts.run.reflection {
		reflection.Register(gs)
	}
	p.grpc.Init(gs)

	// The ops listener serves probes and scrapes: small requests, quick
	// answers. Timeouts and a connection cap keep idle or slow clients from
	// holding the descriptors that checks need; at the cap, the idle and
	// stalled connections make room (internal/connlimit), so that no number
	// of them can keep the kubelet's probes out and get the pod restarted.
	opsLis := connlimit.New(httpLis, connlimit.Options{Max: cfg.Listen.HTTPMaxConns})
	hsrv := &http.Server{
		Handler:           opsHandler(p, cfg, opts.run),
		ConnState:         opsLis.ConnState,
		ReadHeaderTimeout: 3 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// The ops endpoints answer OPTIONS themselves, as any other method.
		DisableGeneralOptionsHandler: true,
	}
	httpLis = opsLis
	fa, faLis, err := forwardAuthServer(cfg, p, logger)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		adminLis.Close()
		return &configError{file, err}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- admin.Serve(adminLis) }()
	p.telemetry.run(ctx, cfg, logger)
	go func() {
		if err := hsrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	listening := []any{"grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "admin", adminLis.Addr().String()}
	if fa != nil {
		go func() {
			if err := fa.Serve(faLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		listening = append(listening, "forward_auth", faLis.Addr().String(), "forward_auth_mode", cfg.ForwardAuth.Mode)
	}
	go watchReadiness(ctx, p, hs, logger)
	if *cfg.Policy.Watch && len(cfg.Policy.Paths) > 0 {
		go func() {
			if err := p.policy.Watch(ctx); err != nil && ctx.Err() == nil {
				logger.Error("policy watch stopped; edits will not be picked up until restart", "error", err.Error())
			}
		}()
	}
	build := version.Get()
	logger.Info("listening", append(listening,
		"policy_revision", p.policy.Revision(), "dry_run", cfg.Policy.DryRun,
		"version", build.Version, "revision", build.Revision)...)
	// abort stops everything at once, for a failure while serving.
	abort := func(err error) error {
		cancel()
		gs.Stop()
		admin.Stop()
		hsrv.Close()
		if fa != nil {
			fa.Close()
		}
		return err
	}
	if opts.configFile != "" && opts.run == nil && *cfg.Policy.Watch {
		// The configuration file reloads as policy files do (policy.watch).
		rl, err := newConfigReloader(opts.configFile, opts.overrides, cfg, p, logger, p.telemetry.registry)
		if err != nil {
			return abort(err)
		}
		go rl.watch(ctx)
	}
	if opts.run != nil {
		if err := opts.run.serveDiagnostic(hsrv, errc); err != nil {
			return abort(&configError{file, err})
		}
		opts.run.listening()
	}
	if opts.addressFile != "" {
		addrs := map[string]string{"grpc": grpcLis.Addr().String(), "http": httpLis.Addr().String(), "admin": adminLis.Addr().String()}
		if fa != nil {
			addrs["forward_auth"] = faLis.Addr().String()
		}
		if opts.run != nil {
			for i, a := range opts.run.diagnosticBound {
				addrs[fmt.Sprintf("diagnostic%d", i)] = a
			}
		}
		if err := writeAddressFile(opts.addressFile, addrs); err != nil {
			// Whoever asked for the file waits on it: stop rather than serve
			// on ports nobody can learn.
			return abort(err)
		}
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		return abort(err)
	}

	logger.Info("shutting down", "grace", cfg.GRPC.ShutdownGrace.D().String())
	p.draining.Store(true) // /readyz 503
	hs.Shutdown()          // every service NOT_SERVING, so Envoy's health checks drain us
	// Forward-auth subrequests in flight finish within the same grace.
	faDone := make(chan struct{})
	go func() {
		defer close(faDone)
		if fa == nil {
			return
		}
		fctx, fcancel := context.WithTimeout(context.Background(), cfg.GRPC.ShutdownGrace.D())
		defer fcancel()
		if fa.Shutdown(fctx) != nil {
			fa.Close()
		}
	}()
	admin.Stop() // admin calls are operators' questions, not traffic to drain
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.GRPC.ShutdownGrace.D()):
		logger.Warn("grace period over, cancelling in-flight checks")
		gs.Stop()
	}
	<-faDone
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	_ = hsrv.Shutdown(sctx)
	logger.Info("stopped")
	return nil
}

// forwardAuthServer is the forward-auth listener and server for the handler
// build made; both are nil when listen.forward_auth is off.
func forwardAuthServer(cfg *config.Config, p *parts, logger *slog.Logger) (*http.Server, net.Listener, error) {
	if p.forwardAuth == nil {
		return nil, nil, nil
	}
	lis, err := net.Listen("tcp", cfg.Listen.ForwardAuth)
	if err != nil {
		return nil, nil, fmt.Errorf("listen.forward_auth: %w", err)
	}
	srv := &http.Server{
		Handler:           p.forwardAuth,
		ReadHeaderTimeout: forwardauth.ReadHeaderTimeout,
		ReadTimeout:       forwardauth.ReadTimeout,
		WriteTimeout:      forwardauth.WriteTimeout,
		IdleTimeout:       forwardauth.IdleTimeout,
		MaxHeaderBytes:    forwardauth.MaxHeaderBytes,
		// "OPTIONS *" would otherwise be answered 200 by net/http itself,
		// with no decision and no log line; the handler refuses it (404).
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(logger.With("component", "forward_auth").Handler(), slog.LevelWarn),
	}
	return srv, lis, nil
}

// watchReadiness keeps the gRPC health status in step with readiness: SERVING
// only once policies are loaded and every JWT provider has its keys.
func watchReadiness(ctx context.Context, p *parts, hs *health.Server, logger *slog.Logger) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	was := false
	for {
		now := p.ready()
		if now != was {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if now {
				st = healthpb.HealthCheckResponse_SERVING
			}
			hs.SetServingStatus("", st)
			hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
			logger.Info("readiness changed", "ready", now)
			was = now
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// opsHandler serves /healthz (the process is alive) and /readyz (policies
// loaded and JWKS fetched), /metrics and, with ops.pprof, /debug/pprof/.
func opsHandler(p *parts, cfg *config.Config, run *runParts) http.Handler {
	mux := http.NewServeMux()
	if run != nil {
		run.opsRoutes(mux)
	}
	p.telemetry.opsRoutes(mux, cfg)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body := map[string]any{
			"ready":           p.ready(),
			"policy_loaded":   p.policy.Ready(),
			"policy_revision": p.policy.Revision(),
			"jwks_ready":      p.tokens.Ready(),
			"draining":        p.draining.Load(),
		}
		w.Header().Set("Content-Type", "application/json")
		if !p.ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}
