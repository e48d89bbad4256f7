package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/test/bench/loadgen"
)

// startNoop serves the no-op server in-process on a free loopback port.
func startNoop(t *testing.T) string {
	t.Helper()
	lis := testutil.Listen(t)
	gs := newServer()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func request() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/people", Host: "api.test",
			Headers: map[string]string{":path": "/people", "authorization": "Bearer t0"},
		}},
		MetadataContext: &corev3.Metadata{},
	}}
}

// TestLoadgenAgainstNoop is a short smoke run of the load generator against
// the no-op server: both ends of the harness, no timed assertion.
func TestLoadgenAgainstNoop(t *testing.T) {
	addr := startNoop(t)
	var started, finished atomic.Bool
	res, err := loadgen.Run(context.Background(), loadgen.Options{
		Target: addr, Streams: 4, Conns: 2, Duration: 300 * time.Millisecond, Template: request(),
		Started:  func() { started.Store(true) },
		Finished: func() { finished.Store(!finished.Load() && started.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checks == 0 || res.Errors != 0 {
		t.Fatalf("checks %d, errors %d (%s); want some checks and no errors", res.Checks, res.Errors, res.FirstError)
	}
	if res.Outcomes[200] != res.Checks || len(res.Outcomes) != 1 {
		t.Errorf("outcomes %v: the no-op server must allow all %d checks", res.Outcomes, res.Checks)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.PerSecond() <= 0 {
		t.Errorf("p50 %v, p99 %v, %v/s: want 0 < p50 <= p99 and a throughput", res.P50, res.P99, res.PerSecond())
	}
	if !started.Load() || !finished.Load() {
		t.Errorf("Started/Finished hooks: started %v, finished once after start %v", started.Load(), finished.Load())
	}
}

// TestLoadgenRunsSourceDry: without a duration, the run sends exactly what
// Next supplies, each prepared request reaching the server.
func TestLoadgenRunsSourceDry(t *testing.T) {
	addr := startNoop(t)
	const n = 57
	var handed atomic.Int64
	res, err := loadgen.Run(context.Background(), loadgen.Options{
		Target: addr, Streams: 8, Template: request(),
		Next: func(req *authv3.CheckRequest) bool {
			if handed.Add(1) > n {
				return false
			}
			req.Attributes.Request.Http.Headers["authorization"] = "Bearer distinct"
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checks != n || res.Errors != 0 {
		t.Fatalf("checks %d, errors %d; want exactly %d and none", res.Checks, res.Errors, n)
	}
}

// flaky allows its first check and fails every later one.
type flaky struct{ calls atomic.Int64 }

func (f *flaky) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if f.calls.Add(1) == 1 {
		return &authv3.CheckResponse{}, nil
	}
	return nil, status.Error(codes.Unavailable, "flaky")
}

// TestLoadgenCountsErrors: a failed check is counted and reported, not
// mistaken for an answer.
func TestLoadgenCountsErrors(t *testing.T) {
	addr := testutil.ServeAuthorization(t, &flaky{})
	res, err := loadgen.Run(context.Background(), loadgen.Options{Target: addr, Streams: 2, Duration: 100 * time.Millisecond, Template: request()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Checks != 0 || !strings.Contains(res.FirstError, "flaky") {
		t.Fatalf("checks %d, errors %d, first %q; want only errors, the first named", res.Checks, res.Errors, res.FirstError)
	}
}

func TestLoadgenUnreachable(t *testing.T) {
	addr := testutil.ClosedAddr(t) // nothing listens: the first check fails
	_, err := loadgen.Run(context.Background(), loadgen.Options{Target: addr, Streams: 1, Duration: time.Millisecond, Template: request(), CallTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("a run against a closed port reported no error")
	}
}
