package asynclog

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// gate is an output that blocks until released, to fill the queue.
type gate struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	release chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	return g.buf.Write(p)
}

func TestWriterKeepsOrderAndWholeRecords(t *testing.T) {
	out := &gate{release: make(chan struct{})}
	close(out.release)
	w := New(out, Options{Queue: 1000, BatchBytes: 100})
	var want strings.Builder
	for i := range 500 {
		line := fmt.Sprintf("record %03d\n", i)
		want.WriteString(line)
		w.Write([]byte(line))
	}
	w.Close()
	if got := out.buf.String(); got != want.String() {
		t.Fatalf("output differs:\n%s", got)
	}
	if w.Dropped() != 0 {
		t.Fatalf("dropped %d", w.Dropped())
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	out := &gate{release: make(chan struct{})}
	var reported []uint64
	var mu sync.Mutex
	w := New(out, Options{Queue: 4, ReportDropped: func(n uint64) { mu.Lock(); reported = append(reported, n); mu.Unlock() }})
	// The first record is taken by the writer goroutine, which then blocks
	// in out.Write; 4 more fill the queue; the rest must be dropped without
	// blocking this goroutine.
	for i := range 100 {
		w.Write([]byte(fmt.Sprintf("r%d\n", i)))
	}
	if d := w.Dropped(); d < 90 {
		t.Fatalf("dropped = %d, want >= 90 (queue of 4)", d)
	}
	close(out.release)
	w.Close()
	mu.Lock()
	defer mu.Unlock()
	var sum uint64
	for _, n := range reported {
		sum += n
	}
	if sum != w.Dropped() {
		t.Fatalf("reported %v, dropped %d: every loss must be reported", reported, w.Dropped())
	}
	if n := strings.Count(out.buf.String(), "\n"); uint64(n)+w.Dropped() != 100 {
		t.Fatalf("written %d + dropped %d != 100", n, w.Dropped())
	}
}

func TestBlockingNeverDrops(t *testing.T) {
	out := &gate{release: make(chan struct{})}
	w := New(out, Options{Queue: 2})
	done := make(chan struct{})
	go func() {
		for i := range 20 {
			w.Blocking().Write([]byte(fmt.Sprintf("op%d\n", i)))
		}
		close(done)
	}()
	close(out.release)
	<-done
	w.Close()
	if n := strings.Count(out.buf.String(), "\n"); n != 20 {
		t.Fatalf("wrote %d operational records, want 20", n)
	}
	w.Write([]byte("late\n")) // after Close: dropped, no panic
	if w.Dropped() != 1 {
		t.Fatalf("dropped = %d", w.Dropped())
	}
}

func BenchmarkWrite(b *testing.B) {
	w := New(discard{}, Options{})
	defer w.Close()
	line := []byte(`{"time":"2026-11-22T01:00:00Z","level":"INFO","msg":"decision","decision_id":"3f1c","allowed":true}` + "\n")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(line)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
