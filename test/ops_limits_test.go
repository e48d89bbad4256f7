package test

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpsListenerCannotStarveChecks: idle connections to the ops listener
// must not use up the descriptors that checks need (reliability finding 8).
// The server runs under a 100-descriptor limit while 200 idle connections
// are opened to its ops port; checks on a fresh gRPC connection still work.
func TestOpsListenerCannotStarveChecks(t *testing.T) {
	g := startGatehouse(t, "bypass:\n  trusted_cidrs: [127.0.0.0/8]\n", true)
	limit := unix.Rlimit{Cur: 100, Max: 100}
	if err := unix.Prlimit(g.cmd.Process.Pid, unix.RLIMIT_NOFILE, &limit, nil); err != nil {
		t.Skipf("cannot lower the server's descriptor limit here: %v", err)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.DialTimeout("tcp", g.httpAddr, 2*time.Second)
		if err != nil {
			break // the backlog is full: also fine, the point is the server's side
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // let the server accept what it will
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := g.client(t).Check(ctx, envoyRequest("127.0.0.1", "api.example.com", "/", nil))
		cancel()
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("check %d with %d idle ops connections: %v %v", i, len(conns), resp, err)
		}
	}
}
