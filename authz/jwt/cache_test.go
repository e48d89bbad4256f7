package jwt

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// fakeClock is a settable Options.Now.
type fakeClock struct{ unixNano atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.unixNano.Store(t.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.unixNano.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.unixNano.Add(int64(d)) }

func TestCacheHitSkipsVerification(t *testing.T) {
	key := newRSAKey(t, "k1", jwa.RS256)
	srv := newJWKSServer(t, jwksJSON(t, key))
	v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)
	ctx := context.Background()
	token := sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)

	first := v.Verify(ctx, bearer(token))
	check(t, first, "")
	if s := v.Stats(); s.CacheHits != 0 || s.CacheMisses != 1 {
		t.Fatalf("after first verify: hits=%d misses=%d, want 0/1", s.CacheHits, s.CacheMisses)
	}
	second := v.Verify(ctx, bearer(token))
	check(t, second, "")
	if s := v.Stats(); s.CacheHits != 1 || s.CacheMisses != 1 {
		t.Fatalf("after second verify: hits=%d misses=%d, want 1/1", s.CacheHits, s.CacheMisses)
	}
	var claims struct{ Sub string }
	if err := json.Unmarshal(second.Claims, &claims); err != nil || claims.Sub != "alice" || second.Provider != "corp" {
		t.Fatalf("cached result = %+v", second)
	}

	// A token of ours seen in a location its provider does not read is still
	// not presented, cache or not.
	check(t, v.Verify(ctx, Request{Headers: map[string]string{"x-token": token}}), "nil")
}

func TestCacheEntryDiesWithItsKey(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	srv := newJWKSServer(t, jwksJSON(t, k1, k2))
	p := corpProvider(srv.uri())
	p.RefreshInterval = time.Second
	v := newVerifier(t, Options{Providers: []Provider{p}})
	waitReady(t, v)
	ctx := context.Background()
	token := sign(t, k1, claimsFor(corpIssuer, "api", time.Now()), nil)
	check(t, v.Verify(ctx, bearer(token)), "")
	check(t, v.Verify(ctx, bearer(token)), "")
	if hits := v.Stats().CacheHits; hits != 1 {
		t.Fatalf("CacheHits = %d, want 1", hits)
	}

	// The issuer drops k1 (say, compromised); a background refresh sees it.
	srv.set(http.StatusOK, jwksJSON(t, k2), false)
	eventually(t, 10*time.Second, "refresh without k1", func() bool { return v.Stats().Providers[0].Keys == 1 })
	check(t, v.Verify(ctx, bearer(token)), ErrUnknownKey)
	if hits := v.Stats().CacheHits; hits != 1 {
		t.Fatalf("CacheHits = %d after key removal, want still 1", hits)
	}
}

func TestCacheDoesNotServeExpired(t *testing.T) {
	key := newECKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, key))
	start := time.Now()
	clock := newFakeClock(start)
	v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.uri())}, Now: clock.now})
	waitReady(t, v)
	ctx := context.Background()
	claims := claimsFor(corpIssuer, "api", start)
	claims["exp"] = start.Add(2 * time.Minute).Unix()
	token := sign(t, key, claims, nil)

	check(t, v.Verify(ctx, bearer(token)), "")
	check(t, v.Verify(ctx, bearer(token)), "")
	clock.advance(2*time.Minute + 30*time.Second) // inside the 60s skew
	check(t, v.Verify(ctx, bearer(token)), "")
	if hits := v.Stats().CacheHits; hits != 2 {
		t.Fatalf("CacheHits = %d, want 2", hits)
	}
	clock.advance(time.Minute) // past exp + skew
	check(t, v.Verify(ctx, bearer(token)), ErrExpired)
	check(t, v.Verify(ctx, bearer(token)), ErrExpired)
	if hits := v.Stats().CacheHits; hits != 2 {
		t.Fatalf("CacheHits = %d after expiry, want still 2", hits)
	}
}

func TestCacheOnlyValidAndBounded(t *testing.T) {
	key := newECKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, key))
	v := newVerifier(t, Options{CacheSize: 3, Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)
	ctx := context.Background()

	bad := claimsFor(corpIssuer, "wrong", time.Now())
	badToken := sign(t, key, bad, nil)
	check(t, v.Verify(ctx, bearer(badToken)), ErrBadAudience)
	check(t, v.Verify(ctx, bearer(badToken)), ErrBadAudience)
	if n := v.cache.len(); n != 0 {
		t.Fatalf("cache holds %d entries after invalid tokens, want 0", n)
	}
	for i := range 10 {
		c := claimsFor(corpIssuer, "api", time.Now())
		c["n"] = i
		check(t, v.Verify(ctx, bearer(sign(t, key, c, nil))), "")
	}
	if n := v.cache.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want its size 3", n)
	}
}

func TestCacheDisabled(t *testing.T) {
	key := newECKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, key))
	v := newVerifier(t, Options{CacheSize: -1, Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)
	token := sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)
	for range 3 {
		check(t, v.Verify(context.Background(), bearer(token)), "")
	}
	if s := v.Stats(); s.CacheHits != 0 || s.CacheMisses != 0 {
		t.Fatalf("disabled cache counted hits=%d misses=%d", s.CacheHits, s.CacheMisses)
	}
}

// TestCacheCapacity: overfilling the cache keeps it within its size.
func TestCacheCapacity(t *testing.T) {
	c, err := newTokenCache(10000, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	e := &verified{expiresAt: time.Now().Add(time.Hour)}
	for i := range 20000 {
		var key cacheKey
		key[0], key[1], key[2] = byte(i), byte(i>>8), byte(i>>16)
		c.add(key, e)
	}
	n := c.len()
	if n > 10000 || n < 9000 {
		t.Fatalf("len = %d after overfilling, want at most the size 10000 (and near it)", n)
	}
	// Every entry that left was counted as a size eviction (deletion
	// notifications may trail the cleanup a little).
	eventually(t, 10*time.Second, "the evictions to be counted", func() bool { return c.evicted.Load() == uint64(20000-n) })
}

// TestCacheEntryExpiresAtExp: an entry is dropped from the cache itself once
// its token's exp + skew passes, not only refused on lookup.
func TestCacheEntryExpiresAtExp(t *testing.T) {
	c, err := newTokenCache(100, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	var soon, later cacheKey
	soon[0], later[0] = 1, 2
	c.add(soon, &verified{expiresAt: time.Now().Add(50 * time.Millisecond)})
	c.add(later, &verified{expiresAt: time.Now().Add(time.Hour)})
	eventually(t, 10*time.Second, "the expired entry to leave the cache", func() bool { return c.len() == 1 })
	eventually(t, 10*time.Second, "the expiry to be counted", func() bool { return c.expired.Load() == 1 })
	if c.get(later) == nil {
		t.Fatal("the unexpired entry left too")
	}
}
