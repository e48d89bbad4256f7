package test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestShutdownUnderLoad: SIGTERM with 1,000 checks in flight across 64
// connections, each check held inside the policy (an http.send to a local
// server that answers only when the test says so). Readiness goes off first
// (a gRPC health watch sees NOT_SERVING and /readyz answers 503 while every
// check is still held), then every check is answered with the policy's
// decision, and the process exits 0.
func TestShutdownUnderLoad(t *testing.T) {
	const (
		checks = 1000
		conns  = 64
	)
	var entered atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(slow.Close)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "slow.rego"), fmt.Sprintf(`package envoy.authz

allow if http.send({"method": "GET", "url": %q, "cache": false, "timeout": "120s"}).body.ok
`, slow.URL))
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n  allow_net: [127.0.0.1]\n  eval_timeout: 120s\ngrpc:\n  shutdown_grace: 120s\n", dir), true)

	clients := make([]authv3.AuthorizationClient, conns)
	for i := range clients {
		clients[i] = g.client(t)
	}
	// A health watch opened before SIGTERM, as a load balancer keeps one:
	// new connections are refused once the server drains.
	hconn, err := grpc.NewClient(g.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hconn.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	watch, err := healthpb.NewHealthClient(hconn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch before SIGTERM: %v %v", st, err)
	}

	type result struct {
		d   decision
		err error
	}
	results := make(chan result, checks)
	var answered atomic.Int64
	for i := range checks {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			d, err := tryDecide(ctx, clients[i%conns], envoyRequest("198.51.100.7", "api.example.com", fmt.Sprintf("/orders/%d", i), nil))
			answered.Add(1)
			results <- result{d, err}
		}()
	}
	eventually(t, 2*time.Minute, "every check to be held in the policy", func() bool { return entered.Load() == checks })

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch ended before reporting NOT_SERVING: %v", err)
		}
		if st.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}
	wcancel() // the watch is an RPC too: graceful stop waits for it
	eventually(t, 30*time.Second, "/readyz to answer 503 while draining", func() bool {
		code, body := g.get("/readyz")
		return code == 503 && strings.Contains(body, `"draining":true`)
	})
	if n := answered.Load(); n != 0 {
		t.Fatalf("%d checks were answered before they were released: readiness must go off first", n)
	}

	releaseAll()
	allowed := 0
	for range checks {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("a check in flight at SIGTERM failed: %v", r.err)
		case r.d.allowed:
			allowed++
		default:
			t.Errorf("a check in flight at SIGTERM was denied: %+v", r.d)
		}
	}
	if allowed != checks {
		t.Fatalf("%d of %d checks answered with the policy's decision", allowed, checks)
	}
	select {
	case <-g.exited:
	case <-time.After(time.Minute):
		t.Fatalf("gatehouse did not exit after draining\n%s", g.logText())
	}
	if g.exitErr != nil {
		t.Fatalf("exit: %v\n%s", g.exitErr, g.logText())
	}
}
