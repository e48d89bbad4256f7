package test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwa"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// TestSoak is `make soak` (not part of `make test`): the real server under a
// steady load for SOAK_DURATION (default 10m) at SOAK_RATE checks per second
// (default: half the rate measured in a 10 s closed-loop run first, at most
// 500), with a mix of valid tokens from a rotating pool, expired tokens,
// forged tokens, anonymous and trusted-network requests, a policy reload
// every SOAK_RELOAD_EVERY (default 1m) and one JWKS key rotation. Every
// answer is compared with what it must be; any gRPC error or wrong decision
// fails the run. The server's VmRSS and thread count are sampled from /proc
// (the ops listener exposes no runtime figures) and reported with the
// latency percentiles.
func TestSoak(t *testing.T) {
	if os.Getenv("GATEHOUSE_SOAK") == "" {
		t.Skip("the soak runs with `make soak` (GATEHOUSE_SOAK=1)")
	}
	duration := envDuration(t, "SOAK_DURATION", 10*time.Minute)
	reloadEvery := envDuration(t, "SOAK_RELOAD_EVERY", time.Minute)

	oldKey := testutil.NewKey(t, jwa.ES256, "soak-old")
	newKey := testutil.NewKey(t, jwa.ES256, "soak-new")
	outsider := testutil.NewKey(t, jwa.ES256, "soak-old") // a forger claiming the old kid
	jwks := testutil.NewJWKSServer(t, testutil.JWKS(t, oldKey))

	dir := t.TempDir()
	policyFile := filepath.Join(dir, "soak.rego")
	generation := 1
	written := map[int]time.Time{generation: time.Now()} // when each generation was written
	writeFile(t, policyFile, soakPolicy(generation))
	cfg := fmt.Sprintf(`policy:
  paths: [%q]
jwt:
  providers:
    - name: corp
      issuer: %s
      audiences: [orders-api]
      jwks_uri: %s
      refresh_interval: 10s
      min_refresh_interval: 1s
log:
  decisions: false
`, dir, issuer, jwks.URL)
	g := startGatehouse(t, cfg, true)
	clients := make([]authv3.AuthorizationClient, 8)
	for i := range clients {
		clients[i] = g.client(t)
	}

	// The traffic: each kind with the answer it must get.
	var signing atomic.Pointer[testutil.Key]
	signing.Store(oldKey)
	var pool atomic.Pointer[[]string]
	refill := func() {
		k := signing.Load()
		toks := make([]string, 50)
		for i := range toks {
			c := claimsNow()
			c["sub"] = fmt.Sprintf("user-%d", rand.IntN(100000))
			toks[i] = k.Sign(t, c, nil)
		}
		pool.Store(&toks)
	}
	refill()
	expired := oldKey.Sign(t, map[string]any{"iss": issuer, "aud": "orders-api", "sub": "x", "exp": time.Now().Add(-time.Hour).Unix()}, nil)
	forged := outsider.Sign(t, claimsNow(), nil)
	var oldRemoved atomic.Bool   // the old key has left the server's set
	var removedAt atomic.Value   // when it left (time.Time)
	var oldKeyToken atomic.Value // a token signed by the old key, kept for after its removal
	oldKeyToken.Store(oldKey.Sign(t, claimsNow(), nil))
	type kind struct {
		name    string
		req     func() *authv3.CheckRequest
		allowed func() bool
		reason  func() string
	}
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	const outside, inside = "198.51.100.7", "10.1.2.3"
	fixed := func(v bool) func() bool { return func() bool { return v } }
	reason := func(s string) func() string { return func() string { return s } }
	kinds := []kind{
		{"valid", func() *authv3.CheckRequest {
			toks := *pool.Load()
			return envoyRequest(outside, "api.example.com", "/orders", bearer(toks[rand.IntN(len(toks))]))
		}, fixed(true), reason("")},
		{"valid", func() *authv3.CheckRequest {
			toks := *pool.Load()
			return envoyRequest(outside, "api.example.com", "/orders", bearer(toks[rand.IntN(len(toks))]))
		}, fixed(true), reason("")},
		{"expired", func() *authv3.CheckRequest { return envoyRequest(outside, "api.example.com", "/", bearer(expired)) }, fixed(false), reason("token_invalid")},
		{"forged", func() *authv3.CheckRequest { return envoyRequest(outside, "api.example.com", "/", bearer(forged)) }, fixed(false), reason("token_invalid")},
		{"anonymous", func() *authv3.CheckRequest { return envoyRequest(outside, "api.example.com", "/", nil) }, fixed(false), reason("token_missing")},
		{"trusted network", func() *authv3.CheckRequest { return envoyRequest(inside, "api.example.com", "/", nil) }, fixed(true), reason("")},
		{"old key", func() *authv3.CheckRequest {
			return envoyRequest(outside, "api.example.com", "/", bearer(oldKeyToken.Load().(string)))
		}, func() bool { return !oldRemoved.Load() }, func() string {
			if oldRemoved.Load() {
				return "token_invalid"
			}
			return ""
		}},
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  []string
		sent      atomic.Int64
		late      atomic.Int64
		gens      sync.Map
		oldDenied atomic.Int64 // old-key tokens refused after the key left the set
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		} else {
			failures = append(failures, "")
		}
	}
	one := func(c authv3.AuthorizationClient, k kind) {
		wantAllowed, wantReason := k.allowed(), k.reason()
		req := k.req()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		resp, err := c.Check(ctx, req)
		took := time.Since(start)
		cancel()
		sent.Add(1)
		if err != nil {
			fail("%s: gRPC error %v", k.name, err)
			return
		}
		allowed := resp.GetStatus().GetCode() == 0
		got := resp.GetStatus().GetMessage()
		// The policy answers one reason per family; the engine's own
		// reasons (token_expired, ...) are folded into token_invalid.
		if strings.HasPrefix(got, "token_") && got != "token_missing" {
			got = "token_invalid"
		}
		// The old key's state changes under way: an answer for either state is
		// right while the change propagates, the old state is checked after.
		if allowed != wantAllowed || got != wantReason {
			if k.name == "old key" && allowed && !wantAllowed && time.Since(removedAt.Load().(time.Time)) < 30*time.Second {
				// propagation window: the server refreshes every 10 s
			} else {
				fail("%s: allowed=%v reason=%q, want allowed=%v reason=%q", k.name, allowed, resp.GetStatus().GetMessage(), wantAllowed, wantReason)
			}
		}
		if k.name == "old key" && !allowed && wantReason != "" {
			oldDenied.Add(1)
		}
		if allowed {
			for _, h := range resp.GetOkResponse().GetHeaders() {
				if h.GetHeader().GetKey() == "x-policy-generation" {
					gens.Store(h.GetHeader().GetValue(), true)
				}
			}
		}
		mu.Lock()
		latencies = append(latencies, took)
		mu.Unlock()
	}
	removedAt.Store(time.Time{})

	rate := envInt(t, "SOAK_RATE", 0)
	maxRate := 0.0
	if rate == 0 {
		// Measure: 16 workers as fast as the server answers, 10 s.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var n atomic.Int64
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for ctx.Err() == nil {
					one(clients[w%len(clients)], kinds[n.Add(1)%int64(len(kinds))])
				}
			})
		}
		wg.Wait()
		cancel()
		maxRate = float64(n.Load()) / 10
		rate = min(int(maxRate/2), 500)
		mu.Lock()
		latencies = latencies[:0]
		mu.Unlock()
		sent.Store(0)
	}
	measured := "not measured: SOAK_RATE set"
	if maxRate > 0 {
		measured = fmt.Sprintf("measured maximum %.0f/s", maxRate)
	}
	t.Logf("soak: %s at %d checks/s (%s), policy reload every %s", duration, rate, measured, reloadEvery)

	samples := []procSample{sampleProc(t, g)}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	work := make(chan kind, 256)
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for k := range work {
				one(clients[w%len(clients)], k)
			}
		})
	}
	start := time.Now()
	// Pace by the clock, not by ticks (a ticker drops ticks when this
	// goroutine is not scheduled in time): every 10 ms send what is due.
	tick := time.NewTicker(10 * time.Millisecond)
	sample := time.NewTicker(max(duration/30, 5*time.Second))
	reload := time.NewTicker(reloadEvery)
	phaseTick := time.NewTicker(100 * time.Millisecond)
	poolTick := time.NewTicker(15 * time.Second)
	rotateAt, removeAt := duration/3, 2*duration/3
	phase := 0
	i := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			for due := int(time.Since(start).Seconds() * float64(rate)); i < due; i++ {
				select {
				case work <- kinds[i%len(kinds)]:
				default:
					late.Add(1) // every worker busy: the server fell behind the rate
				}
			}
		case <-sample.C:
			samples = append(samples, sampleProc(t, g))
		case <-reload.C:
			generation++
			writeFile(t, policyFile, soakPolicy(generation))
			written[generation] = time.Now()
		case <-poolTick.C:
			refill()
		case <-phaseTick.C:
			el := time.Since(start)
			switch {
			case phase == 0 && el >= rotateAt:
				// Publish the new key beside the old one, then sign with it.
				jwks.SetBody(testutil.JWKS(t, oldKey, newKey))
				signing.Store(newKey)
				refill()
				phase = 1
			case phase == 1 && el >= removeAt:
				// The old key leaves the set: its tokens must stop working.
				jwks.SetBody(testutil.JWKS(t, newKey))
				removedAt.Store(time.Now())
				oldRemoved.Store(true)
				phase = 2
			}
		}
	}
	tick.Stop()
	close(work)
	wg.Wait()
	samples = append(samples, sampleProc(t, g))
	elapsed := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	var genList []string
	gens.Range(func(k, _ any) bool { genList = append(genList, k.(string)); return true })
	slices.Sort(genList)
	t.Logf("soak: %d checks in %s (%.0f/s), %d not sent on time, %d wrong or failed", sent.Load(), elapsed.Round(time.Second), float64(sent.Load())/elapsed.Seconds(), late.Load(), len(failures))
	t.Logf("soak: latency p50 %s p99 %s p99.9 %s max %s", pct(0.5), pct(0.99), pct(0.999), pct(1))
	t.Logf("soak: policy generations seen %v; JWKS rotated at %s, old key removed at %s, %d old-key tokens refused after", genList, rotateAt, removeAt, oldDenied.Load())
	for _, s := range samples {
		t.Logf("soak: sample at %6s: VmRSS %6d KiB, threads %3d", s.at.Sub(samples[0].at).Round(time.Second), s.rssKiB, s.threads)
	}
	if len(failures) > 0 {
		t.Fatalf("%d checks wrong or failed, first: %s", len(failures), strings.Join(failures[:min(5, len(failures))], "\n"))
	}
	if late.Load() > 0 {
		t.Errorf("%d checks could not be sent at the rate: the server fell behind", late.Load())
	}
	// Every generation written early enough to be picked up (the watcher
	// polls every 5 s at worst) must have decided.
	for gen, at := range written {
		if at.Before(start.Add(elapsed).Add(-10*time.Second)) && !slices.Contains(genList, fmt.Sprint(gen)) {
			t.Errorf("policy generation %d never decided (seen %v)", gen, genList)
		}
	}
	if oldDenied.Load() == 0 {
		t.Error("no token signed by the removed key was refused after the rotation")
	}
	// Flat memory: after the first fifth, the resident size must not keep
	// growing (a leak per check would show as a steady climb).
	warm := samples[len(samples)/5]
	last := samples[len(samples)-1]
	if last.rssKiB > warm.rssKiB*3/2+16<<10 {
		t.Errorf("VmRSS grew from %d KiB (after warm-up) to %d KiB", warm.rssKiB, last.rssKiB)
	}
}

// soakPolicy allows valid tokens and the trusted network, marking the
// generation in a header so the soak sees each reload take effect.
func soakPolicy(generation int) string {
	return fmt.Sprintf(`package envoy.authz

trusted if gatehouse.cidr_contains(["10.0.0.0/8"], input.client_ip)

allow := {"allowed": true, "headers": {"x-policy-generation": "%d"}} if {
	input.jwt.valid
} else := {"allowed": true, "headers": {"x-policy-generation": "%d"}} if {
	not input.jwt
	trusted
} else := {"allowed": false, "http_status": 401, "reason": "token_missing"} if {
	not input.jwt
} else := {"allowed": false, "http_status": 401, "reason": concat("_", ["token", input.jwt.error])}
`, generation, generation)
}

type procSample struct {
	at      time.Time
	rssKiB  int
	threads int
}

// sampleProc reads the server's resident set size and thread count.
func sampleProc(t *testing.T, g *gatehouse) procSample {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("sampling the server: %v", err)
	}
	defer f.Close()
	s := procSample{at: time.Now()}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			s.rssKiB, _ = strconv.Atoi(fields[1])
		case "Threads:":
			s.threads, _ = strconv.Atoi(fields[1])
		}
	}
	return s
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration like 10m", name, v)
	}
	return d
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}
