package jwt

import (
	"crypto/sha256"
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// A hit moves its entry to the front of an LRU list under that list's lock,
// so a single LRU would put one lock on every verification: large caches are
// split into cacheShards independent LRUs. Small ones (tests, tiny
// deployments) stay one exact LRU, as sharding makes eviction per shard.
const (
	cacheShards         = 16
	minShardedCacheSize = 1024
)

// cacheKey is the SHA-256 of the raw token; the token itself is never kept.
type cacheKey = [sha256.Size]byte

// tokenCache is a sharded LRU of verified tokens. The capacity is split
// exactly across the shards; each evicts its own least recently used entry,
// so eviction order is LRU per shard, not global.
// Expiry and key-set membership are checked by the caller on every hit.
type tokenCache struct {
	shards []*lru.Cache[cacheKey, *verified]
	hits   atomic.Uint64
	misses atomic.Uint64
}

func newTokenCache(size int) (*tokenCache, error) {
	n := 1
	if size >= minShardedCacheSize {
		n = cacheShards
	}
	c := &tokenCache{shards: make([]*lru.Cache[cacheKey, *verified], n)}
	for i := range c.shards {
		capacity := size / n
		if i < size%n {
			capacity++
		}
		shard, err := lru.New[cacheKey, *verified](capacity)
		if err != nil {
			return nil, fmt.Errorf("token cache shard of %d entries: %w", capacity, err)
		}
		c.shards[i] = shard
	}
	return c, nil
}

func (c *tokenCache) shard(key cacheKey) *lru.Cache[cacheKey, *verified] {
	// SHA-256 output is uniform: any byte spreads keys evenly.
	return c.shards[int(key[0])%len(c.shards)]
}

// get returns the entry for key, marking it most recently used.
func (c *tokenCache) get(key cacheKey) *verified {
	v, _ := c.shard(key).Get(key)
	return v
}

// add stores value, evicting the shard's least recently used entry when full.
func (c *tokenCache) add(key cacheKey, value *verified) {
	c.shard(key).Add(key, value)
}

// remove deletes key if it still holds value, so that a fresh verification
// added concurrently is (almost always) kept; losing that race only costs
// one more verification.
func (c *tokenCache) remove(key cacheKey, value *verified) {
	s := c.shard(key)
	if cur, ok := s.Peek(key); ok && cur == value {
		s.Remove(key)
	}
}

func (c *tokenCache) len() int {
	total := 0
	for _, s := range c.shards {
		total += s.Len()
	}
	return total
}
