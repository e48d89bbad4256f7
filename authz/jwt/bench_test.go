package jwt

import (
	"context"
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
		b.Run(key.alg.String(), func(b *testing.B) {
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
	for b.Loop() {
		if res := v.Verify(ctx, req); !res.Valid {
			b.Fatal(res.Error)
		}
	}
}

// BenchmarkVerifyWarmParallel measures cache hits from every CPU, where a
// single cache lock would show.
func BenchmarkVerifyWarmParallel(b *testing.B) {
	key := newECKey(b, "ec")
	v := benchVerifier(b, 0, key)
	reqs := make([]Request, 64)
	for i := range reqs {
		c := claimsFor(corpIssuer, "api", time.Now())
		c["jti"] = fmt.Sprint(i)
		reqs[i] = bearer(sign(b, key, c, nil))
		v.Verify(context.Background(), reqs[i])
	}
	b.ReportAllocs()
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
