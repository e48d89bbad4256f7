// Package connlimit caps the open connections of an HTTP listener without
// letting the cap be held by connections that do nothing.
//
// netutil.LimitListener blocks Accept at the cap: 64 idle keep-alive
// connections, or 64 clients that send half a request header, then keep the
// kubelet's probes waiting in the kernel's backlog until a timeout frees a
// slot, and a pod can be made unready (and restarted) by anyone who reaches
// the port. Listener never blocks Accept. At the cap it makes room by closing
// the connection that is doing least: the longest-idle keep-alive
// connection first, then the longest-stalled one still sending its request
// header, then one whose request has run longer than ActiveGrace (a reader
// too slow to take its answer); only when every connection is busy with a
// fresh request is the new one closed. A probe opens a new connection per
// probe and sends its request at once, so it is never the one closed unless
// the cap's worth of connections arrives after it, within its own round trip.
package connlimit

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultActiveGrace is how long a request may run before its connection can
// be closed to make room at the cap.
const DefaultActiveGrace = 10 * time.Second

// Options configures a Listener.
type Options struct {
	// Max is the number of open connections; required, at least 1.
	Max int
	// ActiveGrace: a connection whose request has run longer can be closed
	// at the cap. Default DefaultActiveGrace.
	ActiveGrace time.Duration
}

// Listener wraps a net.Listener (see the package comment). Install its
// ConnState method as the http.Server's ConnState: the states tell it which
// connections are idle, reading a header or serving a request.
type Listener struct {
	net.Listener
	opts Options

	mu    sync.Mutex
	conns map[*conn]struct{}

	evicted, refused atomic.Uint64
}

// New wraps l.
func New(l net.Listener, opts Options) *Listener {
	if opts.Max < 1 {
		opts.Max = 1
	}
	if opts.ActiveGrace <= 0 {
		opts.ActiveGrace = DefaultActiveGrace
	}
	return &Listener{Listener: l, opts: opts, conns: make(map[*conn]struct{}, opts.Max+1)}
}

type conn struct {
	net.Conn
	l *Listener
	// Guarded by l.mu.
	state http.ConnState
	since time.Time // when the connection entered state
	gone  bool      // removed from l.conns
}

func (c *conn) Close() error {
	c.l.remove(c)
	return c.Conn.Close()
}

// Accept returns the next connection, making room for it at the cap.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		c := &conn{Conn: nc, l: l, state: http.StateNew, since: now}
		l.mu.Lock()
		var victim *conn
		if len(l.conns) >= l.opts.Max {
			victim = l.victimLocked(now)
			if victim == nil {
				l.mu.Unlock()
				// Every connection is serving a fresh request: this one
				// waits for nothing, it is closed.
				l.refused.Add(1)
				_ = nc.Close()
				continue
			}
			delete(l.conns, victim)
			victim.gone = true
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			_ = victim.Conn.Close() // the server's read or write fails, and it cleans up
		}
		return c, nil
	}
}

// victimLocked picks the connection to close: the longest idle, else the
// longest reading its first header, else the longest-running request past
// ActiveGrace; nil when there is none.
func (l *Listener) victimLocked(now time.Time) *conn {
	var idle, reading, active *conn
	for c := range l.conns {
		switch c.state {
		case http.StateIdle:
			if idle == nil || c.since.Before(idle.since) {
				idle = c
			}
		case http.StateNew:
			if reading == nil || c.since.Before(reading.since) {
				reading = c
			}
		case http.StateActive:
			if now.Sub(c.since) > l.opts.ActiveGrace && (active == nil || c.since.Before(active.since)) {
				active = c
			}
		}
	}
	switch {
	case idle != nil:
		return idle
	case reading != nil:
		return reading
	}
	return active
}

// ConnState records the connection's state; set it as http.Server.ConnState.
func (l *Listener) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	if state == http.StateClosed || state == http.StateHijacked {
		l.remove(c)
		return
	}
	l.mu.Lock()
	c.state, c.since = state, time.Now()
	l.mu.Unlock()
}

func (l *Listener) remove(c *conn) {
	l.mu.Lock()
	if !c.gone {
		c.gone = true
		delete(l.conns, c)
	}
	l.mu.Unlock()
}

// Stats are the listener's counts since it was created.
type Stats struct {
	// Open is the number of connections open now.
	Open int
	// Evicted counts connections closed to make room at the cap.
	Evicted uint64
	// Refused counts connections closed at once because every open one was
	// serving a fresh request.
	Refused uint64
}

// Stats returns the current counts.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	return Stats{Open: open, Evicted: l.evicted.Load(), Refused: l.refused.Load()}
}
