package jwt

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

// verifyWithin runs Verify and fails the test if it has not returned after
// limit: a liveness bound against a hang, far above the deadlines under
// test, not a measurement.
func verifyWithin(t *testing.T, limit time.Duration, ctx context.Context, v *Verifier, req Request) *Result {
	t.Helper()
	done := make(chan *Result, 1)
	go func() { done <- v.Verify(ctx, req) }()
	select {
	case res := <-done:
		return res
	case <-time.After(limit):
		t.Fatalf("Verify still blocked after %s", limit)
		return nil
	}
}

// TestUnknownKidRefetchIsBounded: a check whose kid is unknown waits for the
// refetch it triggers no longer than its own context or fetch_timeout, even
// while the JWKS server hangs, and checks with known keys keep flowing
// meanwhile.
func TestUnknownKidRefetchIsBounded(t *testing.T) {
	cases := []struct {
		name         string
		fetchTimeout time.Duration
		reqTimeout   time.Duration // 0: no deadline on the request
	}{
		{"request deadline, long fetch_timeout", time.Hour, 200 * time.Millisecond},
		{"no request deadline, short fetch_timeout", 300 * time.Millisecond, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			known, rotated := newECKey(t, "k1"), newECKey(t, "k2")
			srv := newJWKSServer(t, jwksJSON(t, known))
			p := corpProvider(srv.uri())
			p.FetchTimeout = tc.fetchTimeout
			v := newVerifier(t, Options{CacheSize: -1, Providers: []Provider{p}})
			waitReady(t, v)
			srv.set(http.StatusOK, jwksJSON(t, known, rotated), true) // hangs until the client gives up

			reqCtx := func() context.Context {
				if tc.reqTimeout == 0 {
					return context.Background()
				}
				ctx, cancel := context.WithTimeout(context.Background(), tc.reqTimeout)
				t.Cleanup(cancel)
				return ctx
			}
			unknown := bearer(sign(t, rotated, claimsFor(corpIssuer, "api", time.Now()), nil))
			check(t, verifyWithin(t, 30*time.Second, reqCtx(), v, unknown), ErrUnknownKey)
			if n := v.Stats().UnknownKidRefetches; n != 1 {
				t.Fatalf("UnknownKidRefetches = %d, want 1", n)
			}

			// Known keys verify while the refetch may still hang; a second
			// unknown kid is bounded the same way.
			valid := bearer(sign(t, known, claimsFor(corpIssuer, "api", time.Now()), nil))
			var wg sync.WaitGroup
			results := make(chan *Result, 32)
			for range cap(results) {
				wg.Go(func() { results <- v.Verify(context.Background(), valid) })
			}
			check(t, verifyWithin(t, 30*time.Second, reqCtx(), v, unknown), ErrUnknownKey)
			wg.Wait()
			close(results)
			for res := range results {
				check(t, res, "")
			}
			if !v.Ready() {
				t.Fatal("not Ready while a refetch hangs: the last good keys are still there")
			}
		})
	}
}
