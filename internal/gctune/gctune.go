// Package gctune gives the Go garbage collector a minimum heap goal.
//
// With the runtime's default (GOGC=100) the heap may grow to twice the live
// heap before a collection. Gatehouse's live heap is small (the compiled
// policy, the token cache) and its allocation rate is steady (a few KiB per
// check), so with the default it collects every few megabytes of garbage and
// the collector's fixed work per cycle becomes a large share of the CPU a
// check costs. The tuner raises GOGC while the heap is small, so that the
// heap goal is MinHeap rather than twice a few megabytes, and lets it fall
// back to the runtime's default once the default goal reaches MinHeap: the
// heap goal is max(MinHeap, the default's). That is a floor under memory use
// bought with CPU, never a ceiling raised: a growing heap gets the default
// behaviour, and a memory limit (GOMEMLIMIT) still applies.
//
// The runtime's heap goal is live + (live + stacks + globals) x GOGC/100
// (the GC roots count since Go 1.18), so after every collection the tuner
// reads all three (runtime/metrics) and sets GOGC through debug.SetGCPercent
// when the right value has moved by more than a tenth. Leaving the stacks
// out would multiply them by GOGC: many goroutines deep in OPA's evaluator
// would push the goal far past the floor. It is re-armed by a finalizer, the usual way to run code after
// each collection without polling.
package gctune

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultPercent is the runtime's GOGC default, the tuner's lowest setting.
const DefaultPercent = 100

// MaxPercent caps the GOGC the tuner sets, so a nearly empty heap does not
// get an absurd setting.
const MaxPercent = 2000

// Options configures a Tuner.
type Options struct {
	// MinHeap is the heap goal's floor in bytes. Zero disables the tuner.
	MinHeap uint64
	// Heap reads the live heap and the GC roots (scannable stacks plus
	// globals) in bytes; nil reads runtime/metrics. Tests replace it.
	Heap func() (live, roots uint64)
	// SetPercent sets GOGC and returns the previous value; nil is
	// debug.SetGCPercent. Tests replace it.
	SetPercent func(int) int
}

// Tuner adjusts GOGC after each collection. Stop it to restore the setting it
// found.
type Tuner struct {
	opts     Options
	mu       sync.Mutex // serializes tune and Stop
	stopped  atomic.Bool
	previous int // GOGC before Start
	percent  int // GOGC as last set
	tunes    atomic.Int64
}

// Start tunes once now and after every collection. It returns nil (and does
// nothing) when MinHeap is zero.
func Start(opts Options) *Tuner {
	if opts.MinHeap == 0 {
		return nil
	}
	if opts.Heap == nil {
		opts.Heap = readHeap
	}
	if opts.SetPercent == nil {
		opts.SetPercent = debug.SetGCPercent
	}
	t := &Tuner{opts: opts}
	t.previous = opts.SetPercent(DefaultPercent)
	t.percent = DefaultPercent
	t.tune()
	t.arm()
	return t
}

// Percent is the GOGC the tuner set last.
func (t *Tuner) Percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.percent
}

// Tunes counts the tuner's runs (one per collection, plus the first).
func (t *Tuner) Tunes() int64 { return t.tunes.Load() }

// Stop ends the tuning and restores the GOGC found at Start.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Swap(true) {
		return
	}
	t.opts.SetPercent(t.previous)
}

// sentinel is an object whose finalizer runs after the collection that finds
// it unreachable. It holds a pointer so that it is not a tiny allocation
// (tiny objects share a block and may never be finalized).
type sentinel struct {
	t *Tuner
	_ [2]uintptr
}

// arm registers a sentinel to tune after the next collection; each run arms
// the next, until Stop.
func (t *Tuner) arm() {
	s := &sentinel{t: t}
	runtime.SetFinalizer(s, func(s *sentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.tune()
		s.t.arm()
	})
}

// tune sets GOGC for the live heap now.
func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	t.tunes.Add(1)
	live, roots := t.opts.Heap()
	want := Percent(t.opts.MinHeap, live, roots)
	// Small moves are not worth the runtime's recomputation.
	if want != t.percent && math.Abs(float64(want-t.percent)) > float64(t.percent)/10 {
		t.opts.SetPercent(want)
		t.percent = want
	}
}

// runtimeHeapMinimum is the Go runtime's smallest heap goal at GOGC=100; it
// scales with GOGC.
const runtimeHeapMinimum = 4 << 20

// Percent is the GOGC that puts the runtime's heap goal,
// live + (live + roots) x GOGC/100, at minHeap, within [DefaultPercent,
// MaxPercent], and low enough that the runtime's own minimum goal
// (4 MiB x GOGC/100) stays under minHeap. An unknown live heap (0: no
// collection yet) gets the default.
func Percent(minHeap, live, roots uint64) int {
	if live == 0 || minHeap <= live {
		return DefaultPercent
	}
	limit := min(float64(MaxPercent), float64(minHeap)*100/runtimeHeapMinimum)
	p := float64(minHeap-live) * 100 / float64(live+roots)
	switch {
	case p <= DefaultPercent || limit <= DefaultPercent:
		return DefaultPercent
	case p >= limit:
		return int(limit)
	}
	return int(p)
}

// heapSamples are what readHeap reads: the heap the last collection marked
// live, and the stacks and globals it scanned.
var heapSamples = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// readHeap reads the live heap and the GC roots from runtime/metrics; a
// metric the runtime does not have reads as 0.
func readHeap() (live, roots uint64) {
	s := make([]metrics.Sample, len(heapSamples))
	for i, name := range heapSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return v(0), v(1) + v(2)
}
