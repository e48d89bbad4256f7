// Package loadgen drives an ext_authz gRPC server with Envoy-shaped
// CheckRequests from N concurrent streams, through go-control-plane's
// compiled Authorization client (no reflection: the client must not spend
// the CPU the benchmark measures), and reports the throughput, the latency
// percentiles and the decisions it got back.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// Options says what to send, where, how hard and for how long.
type Options struct {
	// Target is the server's host:port.
	Target string
	// Streams is the number of checks in flight at once (default 16).
	Streams int
	// Conns is the number of HTTP/2 connections the streams share (default 1).
	Conns int
	// Duration bounds the run; zero runs until Next ends it.
	Duration time.Duration
	// Template is the request every check sends; each stream works on its own copy.
	Template *authv3.CheckRequest
	// Next, when set, prepares the stream's copy of Template for the next check
	// (e.g. puts the next token of a pool in it) and reports whether there is
	// one; false ends the run. It is called from every stream concurrently.
	Next func(req *authv3.CheckRequest) bool
	// CallTimeout bounds one check (default 10s).
	CallTimeout time.Duration
	// Started, when set, is called just before the first timed check, and
	// Finished just after the last answer: the caller reads the server's CPU
	// time there, so that connection set-up and tear-down stay out of it.
	Started, Finished func()
}

// Result is what one run measured.
type Result struct {
	// Checks counts the checks that got an answer.
	Checks int64
	// Errors counts the checks that failed at the gRPC level.
	Errors int64
	// FirstError is the first such failure, for the report.
	FirstError string
	// Elapsed runs from the first check sent to the last answer received.
	Elapsed time.Duration
	// P50 and P99 are latency percentiles of the answered checks.
	P50, P99 time.Duration
	// Outcomes counts the answers by HTTP status: 200 for an allow, the
	// denied response's status (403 when it sets none) for a deny.
	Outcomes map[int]int64
}

// PerSecond is the throughput of answered checks.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Checks) / r.Elapsed.Seconds()
}

// Outcome maps a CheckResponse to the HTTP status Envoy would act on: 200 for
// an allow, the denied response's status for a deny (Envoy's default 403 when
// none is set).
func Outcome(resp *authv3.CheckResponse) int {
	if resp.GetStatus().GetCode() == 0 {
		return 200
	}
	if code := int(resp.GetDeniedResponse().GetStatus().GetCode()); code != 0 {
		return code
	}
	return 403
}

// stream is what one worker collected; merged after the run.
type stream struct {
	latencies []time.Duration
	outcomes  map[int]int64
	errors    int64
	firstErr  error
}

// Run connects, runs the checks and closes the connections. A gRPC error on a
// check is counted, not fatal: the caller decides whether a run with errors
// is worth reporting.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Template == nil {
		return Result{}, errors.New("loadgen: no Template request")
	}
	if o.Streams <= 0 {
		o.Streams = 16
	}
	if o.Conns <= 0 {
		o.Conns = 1
	}
	if o.Conns > o.Streams {
		o.Conns = o.Streams
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	clients := make([]authv3.AuthorizationClient, o.Conns)
	for i := range clients {
		conn, err := grpc.NewClient(o.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: connect %s: %w", o.Target, err)
		}
		defer conn.Close()
		conn.Connect()
		clients[i] = authv3.NewAuthorizationClient(conn)
	}
	// One check per connection before the clock starts, so connection set-up
	// is not part of the run.
	for _, c := range clients {
		cctx, cancel := context.WithTimeout(ctx, o.CallTimeout)
		_, err := c.Check(cctx, o.Template)
		cancel()
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: first check on %s: %w", o.Target, err)
		}
	}

	var stop atomic.Bool
	streams := make([]stream, o.Streams)
	var wg sync.WaitGroup
	if o.Started != nil {
		o.Started()
	}
	start := time.Now()
	if o.Duration > 0 {
		t := time.AfterFunc(o.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for i := range streams {
		wg.Add(1)
		go func(s *stream, client authv3.AuthorizationClient) {
			defer wg.Done()
			req := proto.Clone(o.Template).(*authv3.CheckRequest)
			s.outcomes = make(map[int]int64, 2)
			s.latencies = make([]time.Duration, 0, 4096)
			for !stop.Load() && ctx.Err() == nil {
				if o.Next != nil && !o.Next(req) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, o.CallTimeout)
				t0 := time.Now()
				resp, err := client.Check(cctx, req)
				lat := time.Since(t0)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return // cancelled by the caller: not the server's failure
					}
					s.errors++
					if s.firstErr == nil {
						s.firstErr = err
					}
					continue
				}
				s.latencies = append(s.latencies, lat)
				s.outcomes[Outcome(resp)]++
			}
		}(&streams[i], clients[i%len(clients)])
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start), Outcomes: map[int]int64{}}
	if o.Finished != nil {
		o.Finished()
	}
	var all []time.Duration
	for _, s := range streams {
		all = append(all, s.latencies...)
		res.Errors += s.errors
		if s.firstErr != nil && res.FirstError == "" {
			res.FirstError = s.firstErr.Error()
		}
		for code, n := range s.outcomes {
			res.Outcomes[code] += n
		}
	}
	res.Checks = int64(len(all))
	slices.Sort(all)
	res.P50, res.P99 = Percentile(all, 50), Percentile(all, 99)
	return res, ctx.Err()
}

// Percentile returns the p-th percentile (nearest rank) of sorted latencies,
// zero for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}
