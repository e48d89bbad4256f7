package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/test/bench/loadgen"
)

// row is one server's measurement in one scenario.
type row struct {
	Scenario  string  `json:"scenario"`
	Server    string  `json:"server"`
	Checks    int64   `json:"checks"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"checks_per_second"`
	P50Millis float64 `json:"p50_ms"`
	P99Millis float64 `json:"p99_ms"`
	CPUMicros float64 `json:"server_cpu_us_per_check"`
	// ClientCPUMicros is the load generator's (this process's) CPU per
	// check: it shares the machine's CPUs with the server, so throughput
	// and latency follow the sum of the two.
	ClientCPUMicros float64          `json:"client_cpu_us_per_check,omitempty"`
	RSSMiB          float64          `json:"rss_mib"`
	Outcomes        map[string]int64 `json:"outcomes,omitempty"`
	Errors          int64            `json:"errors"`
	// The ratios to the no-op server of the same scenario in the same run;
	// zero when there is no no-op row to divide by.
	CPURatio        float64 `json:"cpu_ratio_to_noop,omitempty"`
	ThroughputRatio float64 `json:"throughput_ratio_to_noop,omitempty"`
	P99Ratio        float64 `json:"p99_ratio_to_noop,omitempty"`
	// Problem says why the row is not to be trusted; "" when it is.
	Problem string `json:"problem,omitempty"`
	// Round numbers the repetitions of a scenario (BENCH_ROUNDS), from 1.
	Round int `json:"round"`
	// Rounds, CPURatioMin and CPURatioMax describe the rounds a table row
	// is the median of; the range is set only for more than one round.
	Rounds      int     `json:"rounds,omitempty"`
	CPURatioMin float64 `json:"cpu_ratio_min,omitempty"`
	CPURatioMax float64 `json:"cpu_ratio_max,omitempty"`
}

// fill sets the row's measurements from a load generator result and the
// server's CPU time and RSS.
func (r *row) fill(res loadgen.Result, cpu, clientCPU time.Duration, rss int64) {
	r.Checks = res.Checks
	r.Seconds = res.Elapsed.Seconds()
	r.PerSecond = res.PerSecond()
	r.P50Millis = float64(res.P50) / float64(time.Millisecond)
	r.P99Millis = float64(res.P99) / float64(time.Millisecond)
	if res.Checks > 0 {
		r.CPUMicros = float64(cpu) / float64(time.Microsecond) / float64(res.Checks)
		r.ClientCPUMicros = float64(clientCPU) / float64(time.Microsecond) / float64(res.Checks)
	}
	r.RSSMiB = float64(rss) / (1 << 20)
	r.Errors = res.Errors
	r.Outcomes = map[string]int64{}
	for code, n := range res.Outcomes {
		r.Outcomes[strconv.Itoa(code)] = n
	}
}

// machine describes where the figures come from.
type machine struct {
	CPUs         int    `json:"cpus"`
	CPUModel     string `json:"cpu_model"`
	GoVersion    string `json:"go_version"`
	Kernel       string `json:"kernel,omitempty"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

// report is everything one run produced; it is the JSON file.
type report struct {
	Started  time.Time         `json:"started"`
	Machine  machine           `json:"machine"`
	Settings map[string]string `json:"settings"`
	Versions map[string]string `json:"versions"`
	// Runs is every measurement; Rows is the table: per scenario and
	// server, the round with the median CPU ratio.
	Runs []row `json:"runs"`
	Rows []row `json:"rows"`
}

func reportSettings(s settings) map[string]string {
	return map[string]string{
		"duration": s.duration.String(), "warmup": s.warmup.String(),
		"streams": strconv.Itoa(s.streams), "conns": strconv.Itoa(s.conns),
		"tokens": strconv.Itoa(s.tokens), "rounds": strconv.Itoa(s.rounds),
	}
}

// computeRatios divides each run by the no-op run of the same scenario and
// round.
func (rep *report) computeRatios() {
	type key struct {
		scenario string
		round    int
	}
	base := map[key]row{}
	for _, r := range rep.Runs {
		if r.Server == serverNoop && r.Problem == "" {
			base[key{r.Scenario, r.Round}] = r
		}
	}
	for i := range rep.Runs {
		r := &rep.Runs[i]
		b, ok := base[key{r.Scenario, r.Round}]
		if !ok || r.Checks == 0 {
			continue
		}
		r.CPURatio = ratio(r.CPUMicros, b.CPUMicros)
		r.ThroughputRatio = ratio(r.PerSecond, b.PerSecond)
		r.P99Ratio = ratio(r.P99Millis, b.P99Millis)
	}
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// summarize fills Rows from Runs: for each scenario and server, in the
// order they ran, the round with the median CPU ratio (the no-op server's:
// median CPU per check), with the range of the ratios over the rounds. A
// problem in any round marks the row.
func (rep *report) summarize() {
	type key struct{ scenario, server string }
	var order []key
	groups := map[key][]row{}
	for _, r := range rep.Runs {
		k := key{r.Scenario, r.Server}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	rep.Rows = rep.Rows[:0]
	for _, k := range order {
		g := slices.Clone(groups[k])
		by := func(r row) float64 {
			if r.Server == serverNoop {
				return r.CPUMicros
			}
			return r.CPURatio
		}
		slices.SortStableFunc(g, func(a, b row) int { return cmp.Compare(by(a), by(b)) })
		med := g[(len(g)-1)/2]
		med.Rounds = len(g)
		if len(g) > 1 && med.CPURatio > 0 {
			med.CPURatioMin, med.CPURatioMax = med.CPURatio, med.CPURatio
			for _, r := range g {
				if r.CPURatio > 0 {
					med.CPURatioMin, med.CPURatioMax = min(med.CPURatioMin, r.CPURatio), max(med.CPURatioMax, r.CPURatio)
				}
			}
		}
		for _, r := range g {
			if med.Problem == "" && r.Problem != "" {
				med.Problem = fmt.Sprintf("round %d: %s", r.Round, r.Problem)
			}
		}
		rep.Rows = append(rep.Rows, med)
	}
}

// problems lists the runs that are not to be trusted.
func (rep *report) problems() []string {
	var out []string
	for _, r := range rep.Runs {
		if r.Problem != "" {
			out = append(out, fmt.Sprintf("%s / %s / round %d: %s", r.Scenario, r.Server, r.Round, r.Problem))
		}
	}
	return out
}

// writeTable prints the rows as one Markdown table (so it pastes into
// docs/performance.md), then the conditions of the run.
func (rep *report) writeTable(w io.Writer) {
	var b bytes.Buffer
	fmt.Fprintln(&b, "| scenario | server | checks/s | p50 ms | p99 ms | server CPU µs/check | CPU vs no-op | checks/s vs no-op | p99 vs no-op | RSS MiB |")
	fmt.Fprintln(&b, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rep.Rows {
		if r.Problem != "" && r.Checks == 0 {
			fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | | | | |\n", r.Scenario, r.Server, r.Problem)
			continue
		}
		mark := ""
		if r.Problem != "" {
			mark = " (!)"
		}
		cpuRatio := times(r.CPURatio)
		if r.CPURatioMax > r.CPURatioMin {
			cpuRatio += fmt.Sprintf(" (%.2f-%.2f)", r.CPURatioMin, r.CPURatioMax)
		}
		fmt.Fprintf(&b, "| %s | %s%s | %.0f | %.2f | %.2f | %.1f | %s | %s | %s | %.1f |\n",
			r.Scenario, r.Server, mark, r.PerSecond, r.P50Millis, r.P99Millis, r.CPUMicros,
			cpuRatio, times(r.ThroughputRatio), times(r.P99Ratio), r.RSSMiB)
	}
	_, _ = w.Write(b.Bytes())
	m := rep.Machine
	fmt.Fprintf(w, "\n%d CPUs (%s), %s; load average %s at the start, %s at the end.\n",
		m.CPUs, m.CPUModel, m.GoVersion, m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(w, "%s streams over %s connection(s), %s timed after %s of warm-up per scenario and server; memory scenario: %s distinct tokens.\n",
		rep.Settings["streams"], rep.Settings["conns"], rep.Settings["duration"], rep.Settings["warmup"], rep.Settings["tokens"])
	lo, hi := 0.0, 0.0
	for _, r := range rep.Rows {
		if c := r.ClientCPUMicros; c > 0 {
			if lo == 0 || c < lo {
				lo = c
			}
			hi = max(hi, c)
		}
	}
	if hi > 0 {
		fmt.Fprintf(w, "The load generator, on the same CPUs, spent %.0f to %.0f µs of CPU per check.\n", lo, hi)
	}
	if rep.Settings["rounds"] != "" && rep.Settings["rounds"] != "1" {
		fmt.Fprintf(w, "Each row is the median of %s rounds (the memory scenario: one), the CPU ratio's range over the rounds in parentheses.\n", rep.Settings["rounds"])
	}
	for _, name := range []string{serverGatehouse, serverOPAEnvoy} {
		if v := rep.Versions[name]; v != "" {
			fmt.Fprintf(w, "%s %s\n", name, v)
		}
	}
}

func times(x float64) string {
	if x == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", x)
}

func (rep *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadAvg()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(data)
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg is the 1, 5 and 15 minute load averages: how busy the machine
// was, so a reader can judge the noise.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// versions names what was measured: Gatehouse's commit and OPA-Envoy's version.
func versions(ctx context.Context, root, opaEnvoy string) map[string]string {
	v := map[string]string{}
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		v[serverGatehouse] = strings.TrimSpace(string(out))
	}
	if opaEnvoy != "" {
		if out, err := exec.CommandContext(ctx, opaEnvoy, "version").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if rest, ok := strings.CutPrefix(line, "Version:"); ok {
					v[serverOPAEnvoy] = strings.TrimSpace(rest)
				}
			}
		}
	}
	return v
}
