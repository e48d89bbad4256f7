package gctune

import (
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		minHeap, live uint64
		want          int
	}{
		{48 * mib, 0, DefaultPercent},         // no collection yet: the default
		{48 * mib, 8 * mib, 500},              // 8 MiB x 6 = 48 MiB
		{48 * mib, 12 * mib, 300},             // 12 x 4
		{48 * mib, 24 * mib, DefaultPercent},  // 2 x live reaches the floor
		{48 * mib, 100 * mib, DefaultPercent}, // a large heap: the runtime's default
		{48 * mib, 1 * mib, 1200},             // capped: 4 MiB x 12 = the floor
		{1024 * mib, 1 * mib, MaxPercent},     // capped at MaxPercent
		{2 * mib, 1 * mib, DefaultPercent},    // a floor under the runtime's minimum
		{48 * mib, 47 * mib / 2, 104},
	} {
		if got := Percent(tc.minHeap, tc.live); got != tc.want {
			t.Errorf("Percent(%d MiB, %.1f MiB) = %d, want %d", tc.minHeap/mib, float64(tc.live)/mib, got, tc.want)
		}
	}
}

// fake records the GOGC settings the tuner makes.
type fake struct {
	mu      sync.Mutex
	live    uint64
	percent int
	sets    []int
}

func (f *fake) liveHeap() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.live }
func (f *fake) setLive(n uint64) { f.mu.Lock(); defer f.mu.Unlock(); f.live = n }
func (f *fake) set(p int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.percent
	f.percent = p
	f.sets = append(f.sets, p)
	return prev
}
func (f *fake) get() int { f.mu.Lock(); defer f.mu.Unlock(); return f.percent }

// waitTunes runs collections until the tuner has run n times in all.
func waitTunes(t *testing.T, tu *Tuner, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tu.Tunes() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the tuner ran %d times, want %d: not re-armed after a collection?", tu.Tunes(), n)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

func TestTunerFollowsTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	f := &fake{live: 8 * mib, percent: 150}
	tu := Start(Options{MinHeap: 48 * mib, LiveHeap: f.liveHeap, SetPercent: f.set})
	if got := f.get(); got != 500 {
		t.Fatalf("after Start, GOGC = %d, want 500", got)
	}
	// The live heap grows: after the next collection the tuner lowers GOGC.
	f.setLive(16 * mib)
	waitTunes(t, tu, tu.Tunes()+2)
	if got := f.get(); got != 200 {
		t.Fatalf("live heap 16 MiB: GOGC = %d, want 200", got)
	}
	// A move of less than a tenth is left alone.
	f.setLive(16*mib + mib/2) // 190.9
	waitTunes(t, tu, tu.Tunes()+2)
	if got := f.get(); got != 200 {
		t.Fatalf("a small move changed GOGC to %d", got)
	}
	f.setLive(64 * mib)
	waitTunes(t, tu, tu.Tunes()+2)
	if got := f.get(); got != DefaultPercent {
		t.Fatalf("live heap 64 MiB: GOGC = %d, want the default", got)
	}
	tu.Stop()
	if got := f.get(); got != 150 {
		t.Fatalf("after Stop, GOGC = %d, want the 150 found at Start", got)
	}
	// Stopped: collections no longer tune.
	n := tu.Tunes()
	for range 3 {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if tu.Tunes() != n {
		t.Fatalf("the tuner ran after Stop")
	}
	tu.Stop() // twice is harmless
}

func TestDisabled(t *testing.T) {
	if tu := Start(Options{}); tu != nil {
		t.Fatal("MinHeap 0 started a tuner")
	}
	var tu *Tuner
	tu.Stop() // a nil tuner stops as a no-op
}

// TestRuntime runs the tuner on the real runtime: with a small live heap it
// raises GOGC, and Stop puts back what it found.
func TestRuntime(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	runtime.GC()
	if liveHeap() == 0 {
		t.Fatal("runtime/metrics reports no live heap after a collection")
	}
	tu := Start(Options{MinHeap: 256 << 20})
	waitTunes(t, tu, 2)
	if p := tu.Percent(); p <= DefaultPercent {
		t.Fatalf("GOGC %d with a live heap of %d bytes and a 256 MiB floor, want above the default", p, liveHeap())
	}
	got := debug.SetGCPercent(100)
	debug.SetGCPercent(got)
	if got != tu.Percent() {
		t.Fatalf("the runtime's GOGC is %d, the tuner says it set %d", got, tu.Percent())
	}
	tu.Stop()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("after Stop the runtime's GOGC is %d, want 100", got)
	}
}
