package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		minHeap, live, roots uint64
		want                 int
	}{
		{48 * mib, 0, 0, DefaultPercent},              // no collection yet: the default
		{48 * mib, 8 * mib, 0, 500},                   // 8 + 8 x 5 = 48 MiB
		{48 * mib, 12 * mib, 0, 300},                  // 12 + 12 x 3
		{48 * mib, 8 * mib, 2 * mib, 400},             // 8 + (8 + 2) x 4: the roots count
		{24 * mib, 1 * mib, 34 * mib, DefaultPercent}, // deep stacks: the default goal is past the floor already
		{48 * mib, 24 * mib, 0, DefaultPercent},       // 2 x live reaches the floor
		{48 * mib, 100 * mib, 0, DefaultPercent},      // a large heap: the runtime's default
		{48 * mib, 1 * mib, 0, 1200},                  // capped: 4 MiB x 12 = the floor
		{1024 * mib, 1 * mib, 0, MaxPercent},          // capped at MaxPercent
		{2 * mib, 1 * mib, 0, DefaultPercent},         // a floor under the runtime's minimum
		{48 * mib, 47 * mib / 2, 0, 104},              // just over the default
	} {
		if got := Percent(tc.minHeap, tc.live, tc.roots); got != tc.want {
			t.Errorf("Percent(%d MiB, live %.1f MiB, roots %.1f MiB) = %d, want %d", tc.minHeap/mib, float64(tc.live)/mib, float64(tc.roots)/mib, got, tc.want)
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

func (f *fake) heap() (uint64, uint64) { f.mu.Lock(); defer f.mu.Unlock(); return f.live, 0 }
func (f *fake) setLive(n uint64)       { f.mu.Lock(); defer f.mu.Unlock(); f.live = n }
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
	tu := Start(Options{MinHeap: 48 * mib, Heap: f.heap, SetPercent: f.set})
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
	if live, _ := readHeap(); live == 0 {
		t.Fatal("runtime/metrics reports no live heap after a collection")
	}
	tu := Start(Options{MinHeap: 256 << 20})
	waitTunes(t, tu, 2)
	if p := tu.Percent(); p <= DefaultPercent {
		live, roots := readHeap()
		t.Fatalf("GOGC %d with a live heap of %d bytes (roots %d) and a 256 MiB floor, want above the default", p, live, roots)
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

// TestDeepStacksDoNotRaiseTheGoal: with many goroutines on deep stacks (the
// GC roots), the goal the tuner leads to stays near max(floor, the
// default's goal); counting only the live heap would multiply the stacks by
// the raised GOGC.
func TestDeepStacksDoNotRaiseTheGoal(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	release := make(chan struct{})
	var ready sync.WaitGroup
	var deep func(n int) int
	deep = func(n int) int {
		var pad [1024]byte
		pad[n%len(pad)] = byte(n)
		if n == 0 {
			ready.Done()
			<-release
			return int(pad[0])
		}
		return deep(n-1) + int(pad[n%len(pad)])
	}
	for range 500 {
		ready.Add(1)
		go deep(48) // about 50 KiB of stack each: 25 MiB of roots
	}
	ready.Wait()
	defer close(release)
	runtime.GC()
	runtime.GC()
	live, roots := readHeap()
	if roots < 10<<20 {
		t.Fatalf("roots %d bytes: the goroutines' stacks are not counted", roots)
	}
	const floor = 24 << 20
	tu := Start(Options{MinHeap: floor})
	defer tu.Stop()
	waitTunes(t, tu, 3)
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	goal := s[0].Value.Uint64()
	live, roots = readHeap()
	want := max(uint64(floor), live+(live+roots))
	if float64(goal) > 1.25*float64(want) {
		t.Fatalf("heap goal %d MiB with GOGC %d (live %d MiB, roots %d MiB), want about max(floor, default goal) = %d MiB",
			goal>>20, tu.Percent(), live>>20, roots>>20, want>>20)
	}
}
