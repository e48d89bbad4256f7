package test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// opsConns opens n connections to addr. idle ones make one request and stay
// open (keep-alive); stalled ones send half a request header and stop.
func opsConns(t *testing.T, addr string, n int, idle bool) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d of %d: %v", len(conns)+1, n, err)
		}
		conns = append(conns, c)
		if !idle {
			if _, err := io.WriteString(c, "GET /readyz HTTP/1.1\r\nHost: x\r\nX-Half: "); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// The answer may not come: at the cap, a newer connection can make
		// this one give up its slot. Either way it leaves an open socket.
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 512)
		_, _ = c.Read(buf)
		_ = c.SetDeadline(time.Time{})
	}
	return conns
}

// closedByServer counts the connections the server has closed.
func closedByServer(conns []net.Conn) int {
	n := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := io.Copy(io.Discard, c) // drains an answer, returns nil at EOF
		if err == nil || strings.Contains(err.Error(), "reset") {
			n++
		}
	}
	return n
}

// probe is the kubelet: a new connection, one GET, at most a second.
func probe(addr, path string) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return &net.AddrError{Err: resp.Status, Addr: path}
	}
	return nil
}

// TestOpsListenerCannotStarveChecks: idle connections to the ops listener
// must not use up the descriptors that checks need. The server runs under a
// 100-descriptor limit while 200 connections are opened to its ops port: it
// must hold no more than its cap (64) of them, and checks on a fresh gRPC
// connection still work.
func TestOpsListenerCannotStarveChecks(t *testing.T) {
	g := startGatehouse(t, "bypass:\n  trusted_cidrs: [127.0.0.0/8]\n", true)
	limit := unix.Rlimit{Cur: 100, Max: 100}
	if err := unix.Prlimit(g.cmd.Process.Pid, unix.RLIMIT_NOFILE, &limit, nil); err != nil {
		t.Skipf("cannot lower the server's descriptor limit here: %v", err)
	}
	conns := opsConns(t, g.httpAddr, 200, true)
	if closed := closedByServer(conns); closed < len(conns)-64 {
		t.Fatalf("the server closed %d of %d ops connections: it holds more than its cap of 64", closed, len(conns))
	}
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := g.client(t).Check(ctx, envoyRequest("127.0.0.1", "api.example.com", "/", nil))
		cancel()
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("check %d with %d ops connections: %v %v", i, len(conns), resp, err)
		}
	}
}

// TestOpsProbesSurviveIdleAndStalledConnections: anyone who reaches the ops
// port could hold its connection cap with idle keep-alive connections or
// half-sent headers, and make /readyz unanswerable until timeouts expire:
// the pod unready, then restarted. With 100 idle and 100 stalled connections
// open, and more arriving, every probe is answered within a second, and
// checks are unaffected.
func TestOpsProbesSurviveIdleAndStalledConnections(t *testing.T) {
	g := startGatehouse(t, "bypass:\n  trusted_cidrs: [127.0.0.0/8]\n", true)
	idle := opsConns(t, g.httpAddr, 100, true)
	stalled := opsConns(t, g.httpAddr, 100, false)
	for round := range 3 {
		for i := range 5 {
			for _, path := range []string{"/readyz", "/healthz"} {
				if err := probe(g.httpAddr, path); err != nil {
					t.Fatalf("round %d, probe %d %s with %d idle and %d stalled connections: %v", round, i, path, len(idle), len(stalled), err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := g.client(t).Check(ctx, envoyRequest("127.0.0.1", "api.example.com", "/", nil))
			cancel()
			if err != nil || resp.GetStatus().GetCode() != 0 {
				t.Fatalf("check beside the ops connections: %v %v", resp, err)
			}
		}
		// The attack goes on: more stalled headers arrive between rounds.
		stalled = append(stalled, opsConns(t, g.httpAddr, 50, false)...)
	}
	// The cap held: the server closed the surplus instead of serving it.
	if closed := closedByServer(append(idle, stalled...)); closed < len(idle)+len(stalled)-64 {
		t.Fatalf("the server closed %d of %d connections: more than 64 are open", closed, len(idle)+len(stalled))
	}
}
