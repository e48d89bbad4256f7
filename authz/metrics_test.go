package authz

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReasonLabelIsBounded: reasons beyond Gatehouse's own get their own
// label value up to MaxReasons; later ones, and overlong ones, count as
// "other", while Gatehouse's reasons always keep theirs.
func TestReasonLabelIsBounded(t *testing.T) {
	m, err := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry(), MaxReasons: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"custom_a", "custom_b", "custom_c", "custom_d", strings.Repeat("x", 200), "custom_a", "token_expired", "policy_timeout", "header_denied:x-debug"} {
		m.counter(OutcomeDenied, 403, r).Inc()
	}
	cases := []struct {
		reason string
		want   float64
	}{
		{"custom_a", 2},
		{"custom_b", 1},
		{ReasonOther, 4}, // custom_c, custom_d, the overlong one, and header_denied past the bound
		{"token_expired", 1},
		{"policy_timeout", 1},
		{"custom_c", 0},
	}
	for _, tc := range cases {
		if got := testutil.ToFloat64(m.decisions.WithLabelValues(OutcomeDenied, "403", tc.reason)); got != tc.want {
			t.Errorf("reason %q: %v, want %v", tc.reason, got, tc.want)
		}
	}
	// custom_c was created as a zero series by the lookup above; every other
	// series is bounded: 2 custom + other + 2 known + custom_c + the five
	// pre-resolved common answers.
	if n := testutil.CollectAndCount(m.decisions); n != 11 {
		t.Errorf("%d series, want 11", n)
	}
}

// BenchmarkMetricsRecord is what metrics add to one check: in flight,
// duration, the decision counter and (one check in 16) the stages.
func BenchmarkMetricsRecord(b *testing.B) {
	m, err := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	// Check reads the clock for its own duration with or without metrics:
	// only what metrics add is measured here.
	start, took := time.Now(), 3*time.Microsecond
	cpu := processCPU()
	for b.Loop() {
		out := outcome{reason: "token_valid"}
		m.begin(&out, start)
		out.lap(stageClientIP)
		out.lap(stageToken)
		out.lap(stagePolicy)
		m.observe(&out, 200, true, took)
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}
