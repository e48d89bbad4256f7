package jwt

import (
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"
)

// cacheKey is the SHA-256 of the raw token; the token itself is never kept.
type cacheKey = [sha256.Size]byte

// cacheClockResolution is how stale the cache's own clock may be. The clock
// only schedules the removal of entries past their token's exp (to free
// memory); every hit is checked against the verifier's precise clock.
const cacheClockResolution = time.Second

// tokenCache holds verified tokens. It is otter's: reads take no lock (a
// hot token hit from every CPU does not serialize, unlike an LRU that moves
// the entry under a lock on each hit), eviction is S3-FIFO within the size
// bound, and each entry expires at its token's exp + clock skew. Key-set
// membership and expiry are still checked by the caller on every hit, so
// neither the coarse clock nor eviction order can serve a token too long.
type tokenCache struct {
	entries *otter.Cache[cacheKey, *verified]
	clock   *otter.CoarseClock
	// lookups counts hits and misses on striped counters, so the counting
	// does not become the shared cache line the cache avoids.
	lookups *stats.Counter
	// evicted and expired count entries removed for room and past exp.
	evicted, expired atomic.Uint64
}

func newTokenCache(size int, now func() time.Time) (*tokenCache, error) {
	clock := otter.NewCoarseClock(cacheClockResolution)
	c := &tokenCache{clock: clock, lookups: stats.NewCounter()}
	entries, err := otter.New(&otter.Options[cacheKey, *verified]{
		OnDeletion: func(e otter.DeletionEvent[cacheKey, *verified]) {
			switch e.Cause {
			case otter.CauseOverflow:
				c.evicted.Add(1)
			case otter.CauseExpiration:
				c.expired.Add(1)
			}
		},
		MaximumSize: size,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[cacheKey, *verified]) time.Duration {
			return e.Value.expiresAt.Sub(now())
		}),
		// A reading of the precise time on every hit would be a large part
		// of its cost.
		Clock: clock,
	})
	if err != nil {
		clock.Stop()
		return nil, fmt.Errorf("token cache of %d entries: %w", size, err)
	}
	c.entries = entries
	return c, nil
}

// get returns the entry for key, or nil.
func (c *tokenCache) get(key cacheKey) *verified {
	v, _ := c.entries.GetIfPresent(key)
	return v
}

// add stores value; past the size bound an entry is evicted.
func (c *tokenCache) add(key cacheKey, value *verified) {
	c.entries.Set(key, value)
}

// remove deletes key if it still holds value, so that a fresh verification
// added concurrently is kept.
func (c *tokenCache) remove(key cacheKey, value *verified) {
	c.entries.ComputeIfPresent(key, func(old *verified) (*verified, otter.ComputeOp) {
		if old == value {
			return nil, otter.InvalidateOp
		}
		return old, otter.CancelOp
	})
}

// len runs pending maintenance (evictions) and returns the entry count.
func (c *tokenCache) len() int {
	c.entries.CleanUp()
	return c.entries.EstimatedSize()
}

// close stops the cache's goroutines (periodic expiry, clock).
func (c *tokenCache) close() {
	c.entries.StopAllGoroutines()
	c.clock.Stop()
}
