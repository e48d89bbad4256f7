package test

import (
	"testing"
	"time"
)

// TestGCMinHeap: ops.gc_min_heap_mib raises GOGC while the live heap is
// small; 0 leaves the runtime's default; GOGC in the environment wins.
func TestGCMinHeap(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		env          map[string]string
		check        func(gogc float64) bool
		want, log    string
	}{
		{"default floor", "", nil, func(p float64) bool { return p > 100 }, "above 100", ""},
		{"off", "ops:\n  gc_min_heap_mib: 0\n", nil, func(p float64) bool { return p == 100 }, "100", ""},
		{"GOGC in the environment wins", "ops:\n  gc_min_heap_mib: 64\n", map[string]string{"GOGC": "150"},
			func(p float64) bool { return p == 150 }, "150", "GOGC is set in the environment; ops.gc_min_heap_mib is not applied"},
		{"at most half of GOMEMLIMIT", "ops:\n  gc_min_heap_mib: 512\n", map[string]string{"GOMEMLIMIT": "268435456"},
			func(p float64) bool { return p > 100 }, "above 100", "ops.gc_min_heap_mib is more than half the memory limit (GOMEMLIMIT); using half the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			g := startGatehouse(t, tc.config, true)
			var last float64
			eventually(t, 10*time.Second, "go_gc_gogc_percent "+tc.want, func() bool {
				v, ok := metricValue(g.scrape(t), "go_gc_gogc_percent", nil)
				last = v
				return ok && tc.check(v)
			})
			// Still so a little later: nothing else resets it.
			time.Sleep(200 * time.Millisecond)
			if v, _ := metricValue(g.scrape(t), "go_gc_gogc_percent", nil); !tc.check(v) {
				t.Fatalf("go_gc_gogc_percent went from %v to %v, want %s", last, v, tc.want)
			}
			if tc.log != "" {
				if err := contains(g.logText(), tc.log); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
