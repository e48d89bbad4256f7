package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/test/bench/loadgen"
)

// Server names as they appear in the table.
const (
	serverNoop      = "no-op"
	serverGatehouse = "gatehouse"
	serverOPAEnvoy  = "opa-envoy"
)

// runScenario runs sc against each server in turn, each a fresh process, and
// returns a row per server. An error means the harness itself could not go
// on (a server did not start); a wrong answer is recorded in the row.
func runScenario(ctx context.Context, s settings, work string, bins map[string]string, sc scenario) ([]row, error) {
	dir := filepath.Join(work, strings.ReplaceAll(sc.name, " ", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names := []string{serverNoop, serverGatehouse}
	if bins[serverOPAEnvoy] != "" && (sc.opaPolicy != "" || sc.opaConfig != "") {
		names = append(names, serverOPAEnvoy)
	}
	serviceURL := ""
	if sc.opaConfig != "" {
		services, err := startOPAServices(sc.opaModule)
		if err != nil {
			return nil, err
		}
		defer services.Close()
		serviceURL = services.URL
	}
	rounds := s.rounds
	if sc.fixedCount {
		rounds = 1 // a run of the whole pool is long, and RSS is not noisy
	}
	var rows []row
	// The servers alternate within each round, so a burst of load from
	// elsewhere on the machine hits one round, not one server.
	for round := 1; round <= rounds; round++ {
		for _, name := range names {
			fmt.Fprintf(os.Stderr, "bench: %-20s %-10s round %d ", sc.name, name, round)
			srv, err := startFor(ctx, name, dir, bins, sc, serviceURL, s.profile != "")
			if err != nil {
				fmt.Fprintln(os.Stderr)
				return rows, err
			}
			r := measure(ctx, s, srv, sc, round)
			r.Round = round
			srv.stop()
			fmt.Fprintf(os.Stderr, "%8.0f checks/s %7.1f µs CPU/check %s\n", r.PerSecond, r.CPUMicros, r.Problem)
			rows = append(rows, r)
			if ctx.Err() != nil {
				return rows, ctx.Err()
			}
		}
	}
	return rows, nil
}

// startFor writes the server's configuration for the scenario, starts it and
// waits until it is ready. serviceURL is the OPA-configured scenarios'
// loopback control plane.
func startFor(ctx context.Context, name, dir string, bins map[string]string, sc scenario, serviceURL string, pprof bool) (*server, error) {
	addr, err := testutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	// Gatehouse's ops listener, OPA's REST API; unused by the no-op server.
	httpAddr, err := testutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	var args []string
	var ready func(context.Context) error
	switch {
	case name == serverNoop:
		args, ready = []string{"--addr", addr}, grpcHealthy(addr)
	case sc.opaConfig != "":
		// The same OPA configuration for both: Gatehouse as the drop-in
		// (`gatehouse run --server`), OPA-Envoy as itself. Ready once the
		// bundle is activated and the ext_authz plugin is up.
		runDir := filepath.Join(dir, name+"-run")
		if err := writeFiles(runDir, map[string]string{"config.yaml": opaConfig(sc.opaConfig, addr, serviceURL)}); err != nil {
			return nil, err
		}
		args = []string{"run", "--server", "--addr", httpAddr, "--disable-telemetry", "--log-level", "error",
			"--config-file", filepath.Join(runDir, "config.yaml")}
		if name == serverGatehouse {
			args = append(args, "--admin-addr", "127.0.0.1:0")
			if pprof {
				args = append(args, "--pprof")
			}
		}
		ready = httpHealthy("http://" + httpAddr + "/health?bundles&plugins")
	case name == serverGatehouse:
		cfg := sc.gatehouse
		if pprof {
			cfg += "ops:\n  pprof: true\n"
		}
		if err := writeFiles(dir, map[string]string{"gatehouse.yaml": cfg}, sc.policyFiles); err != nil {
			return nil, err
		}
		// The admin listener on a free port: its default (127.0.0.1:9192)
		// may be taken on a shared machine.
		args = []string{"--config", filepath.Join(dir, "gatehouse.yaml"), "--grpc-addr", addr, "--http-addr", httpAddr, "--admin-addr", "127.0.0.1:0"}
		ready = grpcHealthy(addr)
	case name == serverOPAEnvoy:
		opaDir := filepath.Join(dir, "opa-envoy")
		// Decision logs are off: the decision_logs plugin is not configured.
		config := fmt.Sprintf("plugins:\n  envoy_ext_authz_grpc:\n    addr: %s\n    path: envoy/authz/allow\n", addr)
		if err := writeFiles(opaDir, map[string]string{"config.yaml": config, "policy.rego": sc.opaPolicy}); err != nil {
			return nil, err
		}
		args = []string{"run", "--server", "--addr", httpAddr, "--disable-telemetry", "--log-level", "error",
			"--config-file", filepath.Join(opaDir, "config.yaml"), filepath.Join(opaDir, "policy.rego")}
		// OPA-Envoy has no gRPC health service; ?plugins waits for its ext_authz plugin.
		ready = httpHealthy("http://" + httpAddr + "/health?plugins")
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	srv, err := startServer(name, addr, bins[name], filepath.Join(dir, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	if err := srv.waitReady(ctx, 60*time.Second, ready); err != nil {
		srv.stop()
		return nil, err
	}
	if name == serverGatehouse && pprof {
		srv.ops = httpAddr
	}
	return srv, nil
}

// writeFiles writes each set of files (name relative to dir) under dir.
func writeFiles(dir string, sets ...map[string]string) error {
	for _, files := range sets {
		for name, body := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// measure checks that the server answers the scenario's request as expected,
// warms it up, then times a run while reading the server's CPU time.
func measure(ctx context.Context, s settings, srv *server, sc scenario, round int) row {
	r := row{Scenario: sc.name, Server: srv.name}
	want := sc.want
	if srv.name == serverNoop {
		want = 200 // the baseline allows everything
	}
	if got, err := probe(ctx, srv.addr, sc.template); err != nil {
		r.Problem = fmt.Sprintf("first check failed: %v", err)
		return r
	} else if got != want {
		r.Problem = fmt.Sprintf("answered %d to the scenario's request, want %d (server log: %s)", got, want, srv.logPath)
		return r
	}
	var next func(*authv3.CheckRequest) bool
	if sc.source != nil {
		next = sc.source(srv.name == serverNoop && !sc.fixedCount)
	}
	opts := loadgen.Options{Target: srv.addr, Streams: s.streams, Conns: s.conns, Template: sc.template, Next: next}
	if !sc.fixedCount && s.warmup > 0 {
		warm := opts
		warm.Duration = s.warmup
		if _, err := loadgen.Run(ctx, warm); err != nil {
			r.Problem = fmt.Sprintf("warm-up: %v", err)
			return r
		}
	}
	if !sc.fixedCount {
		opts.Duration = s.duration
	}
	var cpu0, cpu1, self0, self1 time.Duration
	var cpuErr error
	var profiled chan error
	opts.Started = func() {
		self0, _ = cpuTime(os.Getpid())
		cpu0, cpuErr = cpuTime(srv.pid())
		if srv.ops != "" && !sc.fixedCount {
			profiled = make(chan error, 1)
			name := fmt.Sprintf("%s-round%d.pprof", strings.ReplaceAll(sc.name, " ", "-"), round)
			go func() { profiled <- cpuProfile(ctx, srv.ops, s.duration, filepath.Join(s.profile, name)) }()
		}
	}
	opts.Finished = func() {
		if cpuErr == nil {
			cpu1, cpuErr = cpuTime(srv.pid())
		}
		self1, _ = cpuTime(os.Getpid())
	}
	res, err := loadgen.Run(ctx, opts)
	if profiled != nil {
		if err := <-profiled; err != nil {
			fmt.Fprintf(os.Stderr, "bench: profile of %s: %v\n", sc.name, err)
		}
	}
	if err != nil {
		r.Problem = fmt.Sprintf("run: %v", err)
		return r
	}
	if cpuErr != nil {
		r.Problem = fmt.Sprintf("reading CPU time: %v", cpuErr)
		return r
	}
	rss, err := rssBytes(srv.pid())
	if err != nil {
		r.Problem = fmt.Sprintf("reading RSS: %v", err)
		return r
	}
	r.fill(res, cpu1-cpu0, self1-self0, rss)
	if res.Checks == 0 {
		r.Problem = "no check answered in the timed run (token pool used up by the warm-up? raise BENCH_TOKENS)"
	}
	if res.Errors > 0 {
		r.Problem = fmt.Sprintf("%d checks failed, first: %s", res.Errors, res.FirstError)
	}
	for code, n := range res.Outcomes {
		if code != want && (sc.outcomes == nil || !sc.outcomes[code] || srv.name == serverNoop) {
			r.Problem = fmt.Sprintf("%d checks answered %d, want %d", n, code, want)
		}
	}
	if sc.outcomes != nil && srv.name != serverNoop && len(res.Outcomes) < len(sc.outcomes) {
		r.Problem = fmt.Sprintf("the mixed scenario's checks got only %v, want each of %v", res.Outcomes, sc.outcomes)
	}
	return r
}

// probe sends one check and returns the HTTP status Envoy would act on.
func probe(ctx context.Context, addr string, req *authv3.CheckRequest) (int, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return 0, err
	}
	return loadgen.Outcome(resp), nil
}

// cpuProfile saves the CPU profile of the next d (whole seconds, at least
// one) from Gatehouse's pprof endpoint on opsAddr into path.
func cpuProfile(ctx context.Context, opsAddr string, d time.Duration, path string) error {
	secs := max(int(d/time.Second), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", opsAddr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof answered %s", resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
