// Package gctune gives the Go garbage collector a minimum heap goal.
//
// With the runtime's default (GOGC=100) the heap may grow to twice the live
// heap before a collection. Gatehouse's live heap is small (the compiled
// policy, the token cache) and its allocation rate is steady (a few KiB per
// check), so with the default it collects every few megabytes of garbage and
// the collector's fixed work per cycle becomes a large share of the CPU a
// check costs. The tuner raises GOGC while the live heap is small, so that the
// heap goal is MinHeap rather than twice a few megabytes, and lets it fall
// back to the runtime's default as the live heap grows past MinHeap/2: the
// heap goal is max(MinHeap, 2 x live heap). That is a floor under memory use
// bought with CPU, never a ceiling raised: a growing live heap gets the
// default behaviour, and a memory limit (GOMEMLIMIT) still applies.
//
// After every collection the tuner reads the live heap (runtime/metrics) and
// sets GOGC through debug.SetGCPercent when the right value has moved by more
// than a tenth. It is re-armed by a finalizer, the usual way to run code after
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
	// LiveHeap reads the live heap in bytes; nil reads runtime/metrics.
	// Tests replace it.
	LiveHeap func() uint64
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
	if opts.LiveHeap == nil {
		opts.LiveHeap = liveHeap
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
	want := Percent(t.opts.MinHeap, t.opts.LiveHeap())
	// Small moves are not worth the runtime's recomputation.
	if want != t.percent && math.Abs(float64(want-t.percent)) > float64(t.percent)/10 {
		t.opts.SetPercent(want)
		t.percent = want
	}
}

// runtimeHeapMinimum is the Go runtime's smallest heap goal at GOGC=100; it
// scales with GOGC.
const runtimeHeapMinimum = 4 << 20

// Percent is the GOGC that puts the heap goal at max(minHeap, 2 x live):
// live x (1 + GOGC/100) = minHeap, within [DefaultPercent, MaxPercent], and
// low enough that the runtime's own minimum goal (4 MiB x GOGC/100) stays
// under minHeap. An unknown live heap (0: no collection yet) gets the
// default.
func Percent(minHeap, live uint64) int {
	if live == 0 {
		return DefaultPercent
	}
	limit := min(float64(MaxPercent), float64(minHeap)*100/runtimeHeapMinimum)
	p := (float64(minHeap)/float64(live) - 1) * 100
	switch {
	case p <= DefaultPercent || limit <= DefaultPercent:
		return DefaultPercent
	case p >= limit:
		return int(limit)
	}
	return int(p)
}

var liveSample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

// liveHeap is the heap marked live by the last collection.
func liveHeap() uint64 {
	s := make([]metrics.Sample, 1)
	copy(s, liveSample)
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
