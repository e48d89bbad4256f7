package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/grpcmetrics"
	"github.com/gatehouse-dev/gatehouse/internal/version"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// telemetry is what serve adds for operators: the metrics registry and the
// metrics of each part, and the shadow policy.
type telemetry struct {
	registry *prometheus.Registry
	authz    *authz.Metrics
	grpc     *grpcmetrics.Metrics
	// shadowPolicy and shadow are nil without policy.shadow.paths.
	shadowPolicy *policy.Engine
	shadow       *authz.Shadow
}

// newTelemetry builds the registry (no global one: every metric is
// registered here), registers each part's metrics, and builds the shadow
// policy when one is configured.
func newTelemetry(ctx context.Context, cfg *config.Config, file string, logger *slog.Logger, engine *policy.Engine, tokens interface{ Collector() prometheus.Collector }) (*telemetry, error) {
	reg := prometheus.NewRegistry()
	t := &telemetry{registry: reg}
	var err error
	if t.authz, err = authz.NewMetrics(authz.MetricsOptions{Registerer: reg, MaxReasons: cfg.Ops.MaxReasonLabels}); err != nil {
		return nil, err
	}
	if t.grpc, err = grpcmetrics.New(reg); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		engine.Collector("active"),
		tokens.Collector(),
		buildInfo(version.Get()),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	sh := cfg.Policy.Shadow
	if len(sh.Paths) == 0 {
		return t, nil
	}
	decision := sh.Decision
	if decision == "" {
		decision = cfg.Policy.Decision
	}
	rules := cfg.Rules()
	if t.shadowPolicy, err = policy.New(ctx, policy.Options{
		Paths:       sh.Paths,
		Decision:    decision,
		RegoVersion: cfg.Policy.RegoVersion,
		Rules:       &rules,
		EvalTimeout: cfg.Policy.EvalTimeout.D(),
		Logger:      logger.With("component", "policy", "policy", "shadow"),

		StrictBuiltinErrors: cfg.Policy.StrictBuiltinErrors,
	}); err != nil {
		return nil, &configError{file, err}
	}
	if err := reg.Register(t.shadowPolicy.Collector("shadow")); err != nil {
		return nil, err
	}
	if t.shadow, err = authz.NewShadow(authz.ShadowOptions{
		Policy:    t.shadowPolicy,
		Sample:    *sh.Sample,
		QueueSize: sh.QueueSize,
		Metrics:   t.authz,
		Logger:    logger.With("component", "shadow"),
	}); err != nil {
		return nil, &configError{file, err}
	}
	return t, nil
}

// buildInfo is gatehouse_build_info: always 1, the build's identity in its
// labels, so a dashboard can join it to any other series by instance and
// show which release and commit each replica runs.
func buildInfo(b version.Info) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_build_info",
		Help: "The running Gatehouse build: version, VCS revision and Go version in the labels; always 1.",
		ConstLabels: prometheus.Labels{
			"version":   b.Version,
			"revision":  b.Revision,
			"goversion": b.GoVersion,
		},
	}, func() float64 { return 1 })
}

// run starts the shadow worker and watches the shadow policy's files, until
// ctx is done.
func (t *telemetry) run(ctx context.Context, cfg *config.Config, logger *slog.Logger) {
	if t.shadow == nil {
		return
	}
	go t.shadow.Run(ctx)
	if *cfg.Policy.Watch {
		go func() {
			if err := t.shadowPolicy.Watch(ctx); err != nil && ctx.Err() == nil {
				logger.Error("shadow policy watch stopped", "error", err.Error())
			}
		}()
	}
}

// opsRoutes adds /metrics and, with ops.pprof, /debug/pprof/ to the ops mux.
func (t *telemetry) opsRoutes(mux *http.ServeMux, cfg *config.Config) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{
		// A failing collector must not hide the others.
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes are few; a bound keeps a scrape storm off the checks' CPU.
		MaxRequestsInFlight: 2,
	}))
	if !cfg.Ops.PProf {
		return
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
