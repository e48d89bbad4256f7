package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/test/bench/loadgen"
)

func TestRowFillAndRatios(t *testing.T) {
	var noop, gh, broken row
	noop = row{Scenario: "warm token", Server: serverNoop}
	noop.fill(loadgen.Result{Checks: 10000, Elapsed: 2 * time.Second, P50: time.Millisecond, P99: 4 * time.Millisecond, Outcomes: map[int]int64{200: 10000}}, 400*time.Millisecond, 500*time.Millisecond, 20<<20)
	gh = row{Scenario: "warm token", Server: serverGatehouse}
	gh.fill(loadgen.Result{Checks: 5000, Elapsed: 2 * time.Second, P50: 2 * time.Millisecond, P99: 6 * time.Millisecond, Outcomes: map[int]int64{200: 5000}}, 600*time.Millisecond, 300*time.Millisecond, 30<<20)
	broken = row{Scenario: "no token", Server: serverGatehouse, Problem: "answered 200 to the scenario's request, want 401"}
	noop.Round, gh.Round, broken.Round = 1, 1, 1
	rep := report{Runs: []row{noop, gh, broken}, Settings: map[string]string{"streams": "16"}}
	rep.computeRatios()
	rep.summarize()
	if len(rep.Rows) != 3 {
		t.Fatalf("one round: want the 3 runs as rows, got %d", len(rep.Rows))
	}

	g := rep.Rows[1]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"cpu µs/check", g.CPUMicros, 120},
		{"noop cpu µs/check", rep.Rows[0].CPUMicros, 40},
		{"client cpu µs/check", g.ClientCPUMicros, 60},
		{"noop's client cpu µs/check", rep.Rows[0].ClientCPUMicros, 50},
		{"cpu ratio", g.CPURatio, 3},
		{"throughput ratio", g.ThroughputRatio, 0.5},
		{"p99 ratio", g.P99Ratio, 1.5},
		{"checks/s", g.PerSecond, 2500},
		{"rss MiB", g.RSSMiB, 30},
		{"noop's own ratio", rep.Rows[0].CPURatio, 1},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if rep.Rows[2].CPURatio != 0 {
		t.Errorf("a scenario without a no-op row got a ratio %v", rep.Rows[2].CPURatio)
	}
	if got := rep.problems(); len(got) != 1 || !strings.Contains(got[0], "no token / gatehouse / round 1: answered 200") {
		t.Errorf("problems() = %q", got)
	}

	var out bytes.Buffer
	rep.writeTable(&out)
	for _, want := range []string{
		"| scenario | server | checks/s | p50 ms | p99 ms | server CPU µs/check | CPU vs no-op |",
		"| warm token | no-op | 5000 | 1.00 | 4.00 | 40.0 | 1.00x | 1.00x | 1.00x | 20.0 |",
		"| warm token | gatehouse | 2500 | 2.00 | 6.00 | 120.0 | 3.00x | 0.50x | 1.50x | 30.0 |",
		"| no token | gatehouse | failed: answered 200 to the scenario's request, want 401 |",
		"The load generator, on the same CPUs, spent 50 to 60 µs of CPU per check.",
	} {
		if !strings.Contains(out.String(), want+"") {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRoundsMedian: with several rounds, each is divided by the no-op run of
// its own round, and the table row is the median round with the range.
func TestRoundsMedian(t *testing.T) {
	run := func(server string, round int, cpuMicros float64) row {
		return row{Scenario: "warm token", Server: server, Round: round, Checks: 1000, CPUMicros: cpuMicros, PerSecond: 1000}
	}
	rep := report{Runs: []row{
		run(serverNoop, 1, 40), run(serverGatehouse, 1, 120), // 3x
		run(serverNoop, 2, 20), run(serverGatehouse, 2, 100), // 5x: slow round for the no-op
		run(serverNoop, 3, 50), run(serverGatehouse, 3, 200), // 4x
	}}
	rep.Runs[5].Problem = "2 checks answered 401, want 200"
	rep.computeRatios()
	rep.summarize()
	if len(rep.Rows) != 2 {
		t.Fatalf("want one row per server, got %d", len(rep.Rows))
	}
	n, g := rep.Rows[0], rep.Rows[1]
	if n.Server != serverNoop || n.CPUMicros != 40 || n.Rounds != 3 || n.CPURatioMax != n.CPURatioMin {
		t.Errorf("no-op row: %+v; want the median CPU (40) and no range", n)
	}
	if g.Round != 3 || g.CPURatio != 4 || g.CPURatioMin != 3 || g.CPURatioMax != 5 {
		t.Errorf("gatehouse row: round %d ratio %v range %v-%v; want round 3, 4x, 3-5", g.Round, g.CPURatio, g.CPURatioMin, g.CPURatioMax)
	}
	if !strings.Contains(g.Problem, "401") {
		t.Errorf("a problem in a round must mark the row: %q", g.Problem)
	}
	var out bytes.Buffer
	rep.writeTable(&out)
	if !strings.Contains(out.String(), "| 4.00x (3.00-5.00) |") {
		t.Errorf("table lacks the ratio range:\n%s", out.String())
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if got := cpuModel([]byte(info)); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel([]byte("processor\t: 0\n")); got != "unknown CPU" {
		t.Errorf("cpuModel without a model name = %q", got)
	}
}
