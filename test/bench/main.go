// Command bench is Gatehouse's end-to-end benchmark harness (`make bench`).
//
// It builds Gatehouse and a no-op ext_authz server (test/bench/noop), starts
// each on free loopback ports, drives it with the same Envoy-shaped
// CheckRequests from a load generator (test/bench/loadgen), reads the
// server's CPU time from /proc/<pid>/stat around each run and its RSS from
// /proc/<pid>/status after it, and prints one table: per scenario and server,
// checks/s, latency percentiles, server CPU per check, and that CPU as a
// ratio to the no-op server's in the same run. With OPA_ENVOY=<binary> it
// also runs OPA-Envoy on an equivalent Rego policy. The results also go to a
// JSON file. See docs/performance.md.
//
// Settings come from the environment (BENCH_DURATION, BENCH_WARMUP,
// BENCH_STREAMS, BENCH_CONNS, BENCH_TOKENS, BENCH_ROUNDS, BENCH_SCENARIOS, BENCH_JSON,
// OPA_ENVOY), each overridable by the flag of the same name.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// settings are the knobs of a run.
type settings struct {
	duration  time.Duration
	warmup    time.Duration
	streams   int
	conns     int
	tokens    int
	rounds    int
	scenarios string // comma-separated name filter; "" runs all
	jsonPath  string
	opaEnvoy  string
	profile   string // directory for Gatehouse's CPU profiles; "" takes none
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := parseSettings(os.Args[1:], os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(ctx, s); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseSettings reads the flags, whose defaults come from the environment.
func parseSettings(args []string, getenv func(string) string) (settings, error) {
	var s settings
	var errs []error
	envDur := func(key string, def time.Duration) time.Duration {
		if v := getenv(key); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 5s", key, v))
			}
			return d
		}
		return def
	}
	envInt := func(key string, def int) int {
		if v := getenv(key); v != "" {
			var n int
			if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive number", key, v))
			}
			return n
		}
		return def
	}
	envStr := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&s.duration, "duration", envDur("BENCH_DURATION", 5*time.Second), "timed run per scenario and server (BENCH_DURATION)")
	fs.DurationVar(&s.warmup, "warmup", envDur("BENCH_WARMUP", time.Second), "untimed run before each timed one (BENCH_WARMUP)")
	fs.IntVar(&s.streams, "streams", envInt("BENCH_STREAMS", 16), "concurrent checks in flight (BENCH_STREAMS)")
	fs.IntVar(&s.conns, "conns", envInt("BENCH_CONNS", 1), "HTTP/2 connections the streams share (BENCH_CONNS)")
	fs.IntVar(&s.tokens, "tokens", envInt("BENCH_TOKENS", 100000), "distinct tokens of the memory scenario, also the pool of the cold one (BENCH_TOKENS)")
	fs.IntVar(&s.rounds, "rounds", envInt("BENCH_ROUNDS", 1), "repeat each scenario, servers alternating, and report the median (BENCH_ROUNDS)")
	fs.StringVar(&s.scenarios, "scenarios", envStr("BENCH_SCENARIOS", ""), "comma-separated scenario names (or their prefixes) to run, e.g. 'warm,docs,memory' (BENCH_SCENARIOS; default all)")
	fs.StringVar(&s.jsonPath, "json", envStr("BENCH_JSON", "bin/bench.json"), "write the results as JSON to `file` (BENCH_JSON), relative to the repository")
	fs.StringVar(&s.opaEnvoy, "opa-envoy", envStr("OPA_ENVOY", ""), "OPA-Envoy `binary` to run beside Gatehouse (OPA_ENVOY)")
	fs.StringVar(&s.profile, "profile", envStr("BENCH_PROFILE", ""), "write Gatehouse's CPU profile of each timed run into `dir` (BENCH_PROFILE); profiling costs CPU, so ratios of such a run are not figures")
	if len(errs) > 0 {
		return s, errors.Join(errs...)
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if s.duration <= 0 {
		return s, errors.New("-duration must be positive")
	}
	if s.streams <= 0 || s.conns <= 0 || s.tokens <= 0 || s.rounds <= 0 {
		return s, errors.New("-streams, -conns, -tokens and -rounds must be positive")
	}
	return s, nil
}

// selected reports whether the scenario filter names the scenario: a
// filter entry matches the names it is a prefix of, ignoring case.
func (s settings) selected(name string) bool {
	if s.scenarios == "" {
		return true
	}
	for _, want := range strings.Split(s.scenarios, ",") {
		want = strings.ToLower(strings.TrimSpace(want))
		if want != "" && strings.HasPrefix(strings.ToLower(name), want) {
			return true
		}
	}
	return false
}

// repoRoot is the directory of the module's go.mod, found upwards from the
// working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/gatehouse-dev/gatehouse\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the Gatehouse repository (no go.mod of github.com/gatehouse-dev/gatehouse above the working directory)")
		}
		dir = parent
	}
}

// build compiles a package of the repository into dir.
func build(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

func run(ctx context.Context, s settings) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if s.opaEnvoy != "" {
		if s.opaEnvoy, err = filepath.Abs(s.opaEnvoy); err != nil {
			return err
		}
		if _, err := os.Stat(s.opaEnvoy); err != nil {
			return fmt.Errorf("OPA_ENVOY: %w", err)
		}
	}
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return err
	}
	keepWork := false // the server logs are kept when something went wrong
	defer func() {
		if keepWork {
			fmt.Fprintf(os.Stderr, "bench: server configurations and logs kept in %s\n", work)
			return
		}
		os.RemoveAll(work)
	}()

	fmt.Fprintln(os.Stderr, "bench: building gatehouse and the no-op server")
	// The binaries by server name.
	bins := map[string]string{serverGatehouse: filepath.Join(work, "gatehouse"), serverNoop: filepath.Join(work, "noop")}
	if err := build(ctx, root, "./cmd/gatehouse", bins[serverGatehouse]); err != nil {
		return err
	}
	if err := build(ctx, root, "./test/bench/noop", bins[serverNoop]); err != nil {
		return err
	}
	if s.opaEnvoy != "" {
		bins[serverOPAEnvoy] = s.opaEnvoy
	}

	p, err := loadPool(filepath.Join(root, "bin", "bench", "tokens.json"), s.tokens+1, os.Stderr)
	if err != nil {
		return err
	}
	jwksSrv := serveJWKS(p.keys)
	defer jwksSrv.Close()
	f := fixture{jwksURL: jwksSrv.URL + "/.well-known/jwks.json", jwks: p.keys.jwks, tokens: p.tokens}

	rep := report{
		Started:  time.Now().UTC(),
		Machine:  describeMachine(),
		Settings: reportSettings(s),
		Versions: versions(ctx, root, s.opaEnvoy),
	}
	for _, sc := range scenarios(f) {
		if !s.selected(sc.name) {
			continue
		}
		rows, err := runScenario(ctx, s, work, bins, sc)
		rep.Runs = append(rep.Runs, rows...)
		if err != nil {
			keepWork = true
			return err
		}
	}
	if len(rep.Runs) == 0 {
		return fmt.Errorf("no scenario matched %q", s.scenarios)
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.computeRatios()
	rep.summarize()
	fmt.Println()
	rep.writeTable(os.Stdout)
	jsonPath := s.jsonPath
	if !filepath.IsAbs(jsonPath) {
		jsonPath = filepath.Join(root, jsonPath)
	}
	if err := rep.writeJSON(jsonPath); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: results written to %s\n", jsonPath)
	if bad := rep.problems(); len(bad) > 0 {
		keepWork = true
		return fmt.Errorf("some runs did not get the expected answers:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}
