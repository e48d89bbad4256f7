package jwt

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

func benchVerifier(b *testing.B, cacheSize int, keys ...*testKey) *Verifier {
	b.Helper()
	file := writeFile(b, b.TempDir(), "jwks.json", jwksJSON(b, keys...))
	v, err := New(context.Background(), Options{CacheSize: cacheSize, Providers: []Provider{{
		Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: file,
		ClaimToHeaders: []ClaimToHeader{{Claim: "sub", Header: "x-user"}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	return v
}

// BenchmarkVerifyCold measures a full verification (parse, key lookup,
// signature, claims) with the cache disabled.
func BenchmarkVerifyCold(b *testing.B) {
	for _, key := range []*testKey{newRSAKey(b, "rsa", jwa.RS256), newECKey(b, "ec"), newEdKey(b, "ed")} {
		b.Run(key.Alg.String(), func(b *testing.B) {
			v := benchVerifier(b, -1, key)
			req := bearer(sign(b, key, claimsFor(corpIssuer, "api", time.Now()), nil))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if res := v.Verify(ctx, req); !res.Valid {
					b.Fatal(res.Error)
				}
			}
		})
	}
}

// BenchmarkVerifyWarm measures a verified-token cache hit.
func BenchmarkVerifyWarm(b *testing.B) {
	key := newRSAKey(b, "rsa", jwa.RS256)
	v := benchVerifier(b, 0, key)
	req := bearer(sign(b, key, claimsFor(corpIssuer, "api", time.Now()), nil))
	ctx := context.Background()
	if res := v.Verify(ctx, req); !res.Valid {
		b.Fatal(res.Error)
	}
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		if res := v.Verify(ctx, req); !res.Valid {
			b.Fatal(res.Error)
		}
	}
}

// BenchmarkVerifyWarmParallel measures cache hits from every CPU, where a
// single cache lock would show: with one token (every check of one client
// hits one entry) and with 64.
func BenchmarkVerifyWarmParallel(b *testing.B) {
	for _, tokens := range []int{1, 64} {
		b.Run(fmt.Sprintf("tokens=%d", tokens), func(b *testing.B) { benchVerifyWarmParallel(b, tokens) })
	}
}

func benchVerifyWarmParallel(b *testing.B, tokens int) {
	key := newECKey(b, "ec")
	v := benchVerifier(b, 0, key)
	reqs := make([]Request, tokens)
	for i := range reqs {
		c := claimsFor(corpIssuer, "api", time.Now())
		c["jti"] = fmt.Sprint(i)
		reqs[i] = bearer(sign(b, key, c, nil))
		v.Verify(context.Background(), reqs[i])
	}
	b.ReportAllocs()
	reportCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if res := v.Verify(context.Background(), reqs[i%len(reqs)]); !res.Valid {
				b.Error(res.Error)
				return
			}
			i++
		}
	})
}

// BenchmarkTokenCacheGet measures the cache alone: a hit among 64 hot
// entries of a full-size cache, from one goroutine, and from every CPU on
// one entry and on 64.
func BenchmarkTokenCacheGet(b *testing.B) {
	c, err := newTokenCache(DefaultCacheSize, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.close)
	keys := make([]cacheKey, 64)
	e := &verified{expiresAt: time.Now().Add(time.Hour)}
	for i := range keys {
		keys[i] = sha256.Sum256([]byte(fmt.Sprint(i)))
		c.add(keys[i], e)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		reportCPU(b)
		i := 0
		for b.Loop() {
			if c.get(keys[i%len(keys)]) == nil {
				b.Fatal("miss")
			}
			i++
		}
	})
	for _, hot := range []int{1, len(keys)} {
		b.Run(fmt.Sprintf("parallel/keys=%d", hot), func(b *testing.B) {
			b.ReportAllocs()
			reportCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if c.get(keys[i%hot]) == nil {
						b.Error("miss")
						return
					}
					i++
				}
			})
		})
	}
}

// reportCPU adds a cpu-ns/op metric: the process's CPU time over the
// benchmark divided by b.N. Call it first; the figure is taken at cleanup.
func reportCPU(b *testing.B) {
	start, ok := processCPU()
	if !ok {
		return
	}
	b.Cleanup(func() {
		end, _ := processCPU()
		if b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	})
}
