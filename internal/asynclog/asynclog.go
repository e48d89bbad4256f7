// Package asynclog takes log writes off the request path: each record is
// copied into a bounded queue and written by one background goroutine, in
// batches, so a check never makes a write system call and never waits for
// stdout. When the queue is full a record written with Write is dropped,
// never blocking the caller, and the loss is counted and reported.
package asynclog

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Writer.
type Options struct {
	// Queue is the number of records that may wait; default 8192.
	Queue int
	// BatchBytes is how much is gathered into one write; default 64 KiB.
	BatchBytes int
	// ReportDropped is called from the background goroutine at most once per
	// ReportEvery with the number of records dropped since the last call
	// (nil: not reported, only counted).
	ReportDropped func(n uint64)
	// ReportEvery defaults to 10s.
	ReportEvery time.Duration
	// FlushEvery is how often the background goroutine wakes to write what
	// has been queued; default 20ms. Writers never wake it: a send on a
	// channel nobody waits on costs no system call, and one write per tick
	// carries every record of the tick.
	FlushEvery time.Duration
}

// Writer is an io.Writer for whole log records (slog handlers write one
// record per Write call). It is safe for concurrent use.
type Writer struct {
	out     io.Writer
	queue   chan *[]byte
	pool    sync.Pool
	batch   int
	report  func(uint64)
	every   time.Duration
	flushEv time.Duration
	dropped atomic.Uint64
	closed  atomic.Bool
	closing sync.Once
	stop    chan struct{}
	done    chan struct{}
}

// New starts a Writer writing to out. Close it to flush.
func New(out io.Writer, opts Options) *Writer {
	if opts.Queue <= 0 {
		opts.Queue = 8192
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 64 << 10
	}
	if opts.ReportEvery <= 0 {
		opts.ReportEvery = 10 * time.Second
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 20 * time.Millisecond
	}
	w := &Writer{
		out:     out,
		queue:   make(chan *[]byte, opts.Queue),
		batch:   opts.BatchBytes,
		report:  opts.ReportDropped,
		every:   opts.ReportEvery,
		flushEv: opts.FlushEvery,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.pool.New = func() any { b := make([]byte, 0, 512); return &b }
	go w.run()
	return w
}

// Write queues a copy of p, or drops it (counted) when the queue is full. It
// never blocks and never fails.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed.Load() {
		w.dropped.Add(1)
		return len(p), nil
	}
	buf := w.copyOf(p)
	select {
	case w.queue <- buf:
	default:
		w.dropped.Add(1)
		w.pool.Put(buf)
	}
	return len(p), nil
}

func (w *Writer) copyOf(p []byte) *[]byte {
	buf := w.pool.Get().(*[]byte)
	*buf = append((*buf)[:0], p...)
	return buf
}

// Blocking returns a writer into the same queue that waits for room instead
// of dropping: for operational records, which are rare and must not be
// lost, and which must not interleave with the batches inside one line.
func (w *Writer) Blocking() io.Writer { return blocking{w} }

type blocking struct{ w *Writer }

func (b blocking) Write(p []byte) (int, error) {
	if b.w.closed.Load() {
		return b.w.out.Write(p) // closed: write through
	}
	select {
	case b.w.queue <- b.w.copyOf(p):
	case <-b.w.stop:
		return b.w.out.Write(p)
	}
	return len(p), nil
}

// Dropped returns the number of records dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Close writes what is queued and stops the background goroutine. Records
// written with Write after Close are dropped; Blocking writes go straight
// to the output.
func (w *Writer) Close() error {
	w.closing.Do(func() {
		w.closed.Store(true)
		close(w.stop)
	})
	<-w.done
	return nil
}

func (w *Writer) run() {
	defer close(w.done)
	flushTick := time.NewTicker(w.flushEv)
	defer flushTick.Stop()
	reportTick := time.NewTicker(w.every)
	defer reportTick.Stop()
	var reported uint64
	pending := make([]byte, 0, w.batch)
	flush := func() {
		if len(pending) > 0 {
			_, _ = w.out.Write(pending)
			pending = pending[:0]
		}
	}
	// drain writes out everything queued now, in batches of whole records:
	// another process sharing the stream never sees a line cut in two.
	drain := func() {
		for {
			select {
			case buf := <-w.queue:
				if len(pending)+len(*buf) > w.batch {
					flush()
				}
				pending = append(pending, *buf...)
				w.pool.Put(buf)
			default:
				flush()
				return
			}
		}
	}
	report := func() {
		if d := w.dropped.Load(); d != reported && w.report != nil {
			w.report(d - reported)
			reported = d
		}
	}
	for {
		select {
		case <-flushTick.C:
			drain()
		case <-reportTick.C:
			report()
		case <-w.stop:
			drain()
			report()
			return
		}
	}
}
