package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const (
	benchIssuer   = "https://issuer.bench.test"
	benchAudience = "bench-api"
	benchKID      = "bench-rs256"
	// tokenLifetime is long so a cached pool survives many runs; a pool is
	// re-signed when less than tokenMinLeft of it remains.
	tokenLifetime = 7 * 24 * time.Hour
	tokenMinLeft  = 6 * time.Hour
	// poolFormat changes whenever the claims change, invalidating old caches.
	poolFormat = 1
)

// keys is the RS256 signing key of a run and the JWKS that publishes it.
type keys struct {
	priv *rsa.PrivateKey
	jwks []byte
}

func newKeys(priv *rsa.PrivateKey) (*keys, error) {
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": benchKID, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(priv.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
	}}})
	if err != nil {
		return nil, err
	}
	return &keys{priv: priv, jwks: jwks}, nil
}

// mint signs a valid RS256 token for sub, as an identity provider would.
func (k *keys) mint(sub string, now, exp time.Time) (string, error) {
	header := `{"alg":"RS256","kid":"` + benchKID + `","typ":"JWT"}`
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	claims, err := json.Marshal(map[string]any{
		"iss": benchIssuer, "aud": benchAudience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
		"jti": hex.EncodeToString(jti[:]), "scope": "people:read people:write",
	})
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(nil, k.priv, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// pool is a signing key and distinct valid tokens for it. Signing 2048-bit
// RSA costs milliseconds of client CPU per token, so the pool is signed once
// before any timing and cached on disk for later runs.
type pool struct {
	keys   *keys
	tokens []string
}

// poolFile is the on-disk cache of a pool.
type poolFile struct {
	Format  int      `json:"format"`
	KeyDER  []byte   `json:"key_pkcs8"`
	Expires int64    `json:"expires"`
	Tokens  []string `json:"tokens"`
}

// loadPool returns a pool of at least n tokens, from the cache file when it
// holds one that is still valid long enough, else freshly signed (and then
// written to the cache). progress receives a line for a slow signing.
func loadPool(cache string, n int, progress io.Writer) (*pool, error) {
	if p, err := readPool(cache, n, time.Now()); err == nil {
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(progress, "bench: token cache %s not usable (%v); signing a new pool\n", cache, err)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	k, err := newKeys(priv)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	exp := now.Add(tokenLifetime)
	fmt.Fprintf(progress, "bench: signing %d RS256 tokens on %d CPUs (once; cached in %s)\n", n, runtime.NumCPU(), cache)
	tokens := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.NumCPU())
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				tok, err := k.mint(fmt.Sprintf("user-%06d", i), now, exp)
				if err != nil {
					errs <- err
					return
				}
				tokens[i] = tok
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("sign tokens: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(poolFile{Format: poolFormat, KeyDER: der, Expires: exp.Unix(), Tokens: tokens})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		return nil, err
	}
	// The key is a throwaway test key, but a private key all the same.
	if err := os.WriteFile(cache, data, 0o600); err != nil {
		return nil, fmt.Errorf("token cache: %w", err)
	}
	return &pool{keys: k, tokens: tokens}, nil
}

// readPool reads a cached pool; it is an error for it to be of another
// format, too small, or to expire within tokenMinLeft of now.
func readPool(cache string, n int, now time.Time) (*pool, error) {
	data, err := os.ReadFile(cache)
	if err != nil {
		return nil, err
	}
	var f poolFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	switch {
	case f.Format != poolFormat:
		return nil, fmt.Errorf("format %d, want %d", f.Format, poolFormat)
	case len(f.Tokens) < n:
		return nil, fmt.Errorf("%d tokens, want %d", len(f.Tokens), n)
	case time.Unix(f.Expires, 0).Before(now.Add(tokenMinLeft)):
		return nil, fmt.Errorf("tokens expire at %s", time.Unix(f.Expires, 0).UTC().Format(time.RFC3339))
	}
	key, err := x509.ParsePKCS8PrivateKey(f.KeyDER)
	if err != nil {
		return nil, err
	}
	priv, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want RSA", key)
	}
	k, err := newKeys(priv)
	if err != nil {
		return nil, err
	}
	return &pool{keys: k, tokens: f.Tokens[:n]}, nil
}

// serveJWKS serves the pool's JWKS on loopback, as an identity provider's
// jwks_uri would. Close the server after the run.
func serveJWKS(k *keys) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(k.jwks)
	}))
}
