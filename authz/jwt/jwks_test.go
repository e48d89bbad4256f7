package jwt

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

func corpProvider(uri string) Provider {
	return Provider{Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSURI: uri}
}

func TestRotationAcceptedAfterOneRefetch(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	srv := newJWKSServer(t, jwksJSON(t, k1))
	v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("hits after start = %d, want 1", n)
	}
	ctx := context.Background()
	check(t, v.Verify(ctx, bearer(sign(t, k1, claimsFor(corpIssuer, "api", time.Now()), nil))), "")

	// The issuer rotates: k2 appears.
	srv.set(http.StatusOK, jwksJSON(t, k1, k2), false)
	check(t, v.Verify(ctx, bearer(sign(t, k2, claimsFor(corpIssuer, "api", time.Now()), nil))), "")
	if n := srv.hits.Load(); n != 2 {
		t.Fatalf("hits after rotation = %d, want 2 (one refetch)", n)
	}
	if s := v.Stats(); s.UnknownKidRefetches != 1 {
		t.Fatalf("UnknownKidRefetches = %d, want 1", s.UnknownKidRefetches)
	}
}

func TestUnknownKidFloodIsRateLimited(t *testing.T) {
	k1 := newECKey(t, "k1")
	srv := newJWKSServer(t, jwksJSON(t, k1))
	v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.uri())}})
	waitReady(t, v)

	claims := claimsFor(corpIssuer, "api", time.Now())
	const requests, workers = 1000, 50
	tokens := make(chan string, requests)
	for range requests {
		kid := fmt.Sprintf("forged-%x", rand.Uint64())
		// The signature is never checked: the kid is unknown first.
		tokens <- rawToken(t, map[string]any{"alg": "ES256", "kid": kid}, claims, make([]byte, 64))
	}
	close(tokens)
	var wg sync.WaitGroup
	errs := make(chan string, requests)
	for range workers {
		wg.Go(func() {
			for tok := range tokens {
				if res := v.Verify(context.Background(), bearer(tok)); res == nil || res.Error != ErrUnknownKey {
					errs <- fmt.Sprintf("%+v", res)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("forged kid: want unknown_key, got %s", e)
	}
	if n := srv.hits.Load(); n > 2 {
		t.Fatalf("JWKS server hit %d times during a flood of %d forged kids, want <= 2", n, requests)
	}
	if s := v.Stats(); s.UnknownKidRefetches != 1 {
		t.Fatalf("UnknownKidRefetches = %d, want 1", s.UnknownKidRefetches)
	}
}

// TestFirstFetchFailsThenRecovers: the JWKS is unusable at start in several
// ways; Ready stays false and tokens fail closed with keys_unavailable until
// the server serves a good set, then Ready turns true.
func TestFirstFetchFailsThenRecovers(t *testing.T) {
	key := newECKey(t, "k1")
	good := jwksJSON(t, key)
	symmetricOnly, err := os.ReadFile("testdata/jwks_symmetric_only.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		status int
		body   []byte
		slow   bool
	}{
		{"503", http.StatusServiceUnavailable, []byte("down"), false},
		{"garbage", http.StatusOK, []byte("<html>not json</html>"), false},
		{"oversize", http.StatusOK, oversizeJWKS(t, good, 8<<10), false},
		{"symmetric keys only", http.StatusOK, symmetricOnly, false},
		{"slow", http.StatusOK, good, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t, tc.body)
			srv.set(tc.status, tc.body, tc.slow)
			p := corpProvider(srv.uri())
			p.MaxJWKSBytes = 4 << 10
			p.FetchTimeout = 300 * time.Millisecond
			v := newVerifier(t, Options{Providers: []Provider{p}})

			eventually(t, 10*time.Second, "two failed fetches", func() bool { return v.Stats().FetchFailures >= 2 })
			if v.Ready() {
				t.Fatal("Ready with no usable key set")
			}
			token := sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)
			check(t, v.Verify(context.Background(), bearer(token)), ErrKeysUnavailable)

			srv.set(http.StatusOK, good, false)
			waitReady(t, v)
			check(t, v.Verify(context.Background(), bearer(token)), "")
		})
	}
}

// TestRefreshFailureKeepsLastGood: after a good start, every way a refresh
// can fail keeps the last good keys verifying.
func TestRefreshFailureKeepsLastGood(t *testing.T) {
	key := newECKey(t, "k1")
	good := jwksJSON(t, key)
	garbage, err := os.ReadFile("testdata/jwks_garbage.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		status int
		body   []byte
		slow   bool
		gone   bool
	}{
		{"503", http.StatusServiceUnavailable, nil, false, false},
		{"500", http.StatusInternalServerError, []byte(`{"keys":[]}`), false, false},
		{"server gone", 0, nil, false, true},
		{"garbage", http.StatusOK, garbage, false, false},
		{"empty key set", http.StatusOK, []byte(`{"keys":[]}`), false, false},
		{"oversize", http.StatusOK, oversizeJWKS(t, good, 8<<10), false, false},
		{"slow", http.StatusOK, good, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t, good)
			p := corpProvider(srv.uri())
			p.MaxJWKSBytes = 4 << 10
			p.FetchTimeout = 300 * time.Millisecond
			p.RefreshInterval = time.Second
			v := newVerifier(t, Options{CacheSize: -1, Providers: []Provider{p}})
			waitReady(t, v)
			token := sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)
			check(t, v.Verify(context.Background(), bearer(token)), "")

			before := v.Stats().FetchFailures
			if tc.gone {
				srv.Close()
			} else {
				srv.set(tc.status, tc.body, tc.slow)
			}
			eventually(t, 10*time.Second, "a failed refresh", func() bool { return v.Stats().FetchFailures > before })
			if !v.Ready() {
				t.Fatal("Ready turned false after a failed refresh")
			}
			check(t, v.Verify(context.Background(), bearer(token)), "")
			if s := v.Stats(); s.Providers[0].Keys != 1 {
				t.Fatalf("keys after failed refresh = %d, want the last good 1", s.Providers[0].Keys)
			}
			// The failure is kept for the admin Status.
			if p := v.Stats().Providers[0]; p.LastError == "" || p.LastErrorAt.IsZero() {
				t.Fatalf("last error not kept: %+v", p)
			}
		})
	}
}

// oversizeJWKS pads a valid JWKS past size with an extra member, so only the
// size limit can reject it.
func oversizeJWKS(t *testing.T, jwks []byte, size int) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(jwks, &doc); err != nil {
		t.Fatal(err)
	}
	doc["padding"] = strings.Repeat("x", size)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackgroundRefreshPicksUpNewKeys(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	srv := newJWKSServer(t, jwksJSON(t, k1))
	p := corpProvider(srv.uri())
	p.RefreshInterval = time.Second
	v := newVerifier(t, Options{Providers: []Provider{p}})
	waitReady(t, v)
	srv.set(http.StatusOK, jwksJSON(t, k1, k2), false)
	eventually(t, 10*time.Second, "refresh to 2 keys", func() bool { return v.Stats().Providers[0].Keys == 2 })
	if s := v.Stats(); s.UnknownKidRefetches != 0 {
		t.Fatalf("UnknownKidRefetches = %d, want 0 (periodic refresh only)", s.UnknownKidRefetches)
	}
}

func TestDiscovery(t *testing.T) {
	key := newEdKey(t, "k1")
	cases := []struct {
		name      string
		docIssuer func(srvURL string) string
		wantReady bool
	}{
		{"issuer matches", func(u string) string { return u }, true},
		{"issuer mismatch", func(string) string { return "https://evil.example.com" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var srvURL string
			mux := http.NewServeMux()
			mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(map[string]string{"issuer": tc.docIssuer(srvURL), "jwks_uri": srvURL + "/keys"})
			})
			mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(jwksJSON(t, key)) })
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			srvURL = srv.URL

			v := newVerifier(t, Options{Providers: []Provider{
				{Name: "oidc", Issuer: srv.URL, Audiences: []string{"api"}, Discovery: true},
			}})
			token := sign(t, key, claimsFor(srv.URL, "api", time.Now()), nil)
			if tc.wantReady {
				waitReady(t, v)
				check(t, v.Verify(context.Background(), bearer(token)), "")
				return
			}
			eventually(t, 10*time.Second, "a failed discovery", func() bool { return v.Stats().FetchFailures >= 1 })
			if v.Ready() {
				t.Fatal("Ready although the discovery document names another issuer")
			}
			check(t, v.Verify(context.Background(), bearer(token)), ErrKeysUnavailable)
		})
	}
}

func TestCAFile(t *testing.T) {
	key := newECKey(t, "k1")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(jwksJSON(t, key))
	}))
	t.Cleanup(srv.Close)
	caFile := writeFile(t, t.TempDir(), "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	t.Run("trusted via ca_file", func(t *testing.T) {
		p := corpProvider(srv.URL + "/jwks.json")
		p.CAFile = caFile
		v := newVerifier(t, Options{Providers: []Provider{p}})
		waitReady(t, v)
	})
	t.Run("untrusted without ca_file", func(t *testing.T) {
		v := newVerifier(t, Options{Providers: []Provider{corpProvider(srv.URL + "/jwks.json")}})
		eventually(t, 10*time.Second, "a failed TLS fetch", func() bool { return v.Stats().FetchFailures >= 1 })
		if v.Ready() {
			t.Fatal("Ready with an untrusted certificate")
		}
	})
	t.Run("bad ca_file fails New", func(t *testing.T) {
		p := corpProvider(srv.URL + "/jwks.json")
		p.CAFile = writeFile(t, t.TempDir(), "ca.pem", []byte("not pem"))
		if _, err := New(context.Background(), Options{Providers: []Provider{p}}); err == nil || !strings.Contains(err.Error(), "ca_file") {
			t.Fatalf("New: err = %v, want a ca_file error", err)
		}
	})
}

func TestJWKSFile(t *testing.T) {
	key := newRSAKey(t, "k1", jwa.RS256)
	dir := t.TempDir()
	cases := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"good file", writeFile(t, dir, "good.json", jwksJSON(t, key)), ""},
		{"missing file", dir + "/missing.json", "no such file"},
		{"garbage file", "testdata/jwks_garbage.json", "parse JWKS"},
		{"symmetric keys only", "testdata/jwks_symmetric_only.json", "no usable"},
		{"weak RSA key", "testdata/jwks_rsa_1024.json", "no usable"},
		{"oversize file", writeFile(t, dir, "big.json", oversizeJWKS(t, jwksJSON(t, key), 8<<10)), "exceeds max_jwks_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Options{Providers: []Provider{{Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: tc.path, MaxJWKSBytes: 4 << 10}}}
			cfg.Logger = testLogger(t)
			v, err := New(context.Background(), cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if !v.Ready() {
				t.Fatal("jwks_file provider not Ready after New")
			}
			check(t, v.Verify(context.Background(), bearer(sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil))), "")
		})
	}
}

func TestCacheControlBounds(t *testing.T) {
	tr := &boundedTransport{defaultMaxAge: 10 * time.Minute, floor: time.Minute, ceiling: time.Hour}
	cases := []struct {
		cacheControl string
		want         string
	}{
		{"", "max-age=600"},
		{"public, max-age=300", "max-age=300"},
		{"max-age=5", "max-age=60"},
		{"no-cache", "max-age=60"},
		{"no-store, max-age=900", "max-age=60"},
		{"max-age=604800", "max-age=3600"},
		{"max-age=99999999999999999999", "max-age=600"},
		{"max-age=-1", "max-age=600"},
	}
	for _, tc := range cases {
		t.Run(tc.cacheControl, func(t *testing.T) {
			h := http.Header{"Expires": {"Thu, 01 Jan 2099 00:00:00 GMT"}}
			if tc.cacheControl != "" {
				h.Set("Cache-Control", tc.cacheControl)
			}
			tr.boundCacheControl(h)
			if got := h.Get("Cache-Control"); got != tc.want {
				t.Fatalf("Cache-Control = %q, want %q", got, tc.want)
			}
			if h.Get("Expires") != "" {
				t.Fatal("Expires kept: httprc would use it")
			}
		})
	}
}

// TestRedirectToAnotherHost: a JWKS fetch follows a redirect within its own
// origin, but one to another origin (here another port on 127.0.0.1) only
// when redirect_hosts lists the target; the refused target is never asked.
func TestRedirectToAnotherHost(t *testing.T) {
	key := newECKey(t, "k1")
	other := newJWKSServer(t, jwksJSON(t, key))
	otherURL, err := url.Parse(other.URL)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/local.json", http.StatusFound)
		case "/local.json":
			_, _ = w.Write(jwksJSON(t, key))
		case "/cross":
			http.Redirect(w, r, other.uri(), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(front.Close)
	_, frontPort, _ := strings.Cut(strings.TrimPrefix(front.URL, "http://"), ":")

	cases := []struct {
		name          string
		path          string
		redirectHosts []string
		wantReady     bool
	}{
		{"same origin", "/same", nil, true},
		{"another port, not listed", "/cross", nil, false},
		{"another port, listed with its port", "/cross", []string{otherURL.Host}, true},
		{"another port, host listed without port", "/cross", []string{otherURL.Hostname()}, true},
		{"another port, another port listed", "/cross", []string{"127.0.0.1:" + frontPort}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := other.hits.Load()
			p := corpProvider(front.URL + tc.path)
			p.RedirectHosts = tc.redirectHosts
			v := newVerifier(t, Options{Providers: []Provider{p}})
			token := sign(t, key, claimsFor(corpIssuer, "api", time.Now()), nil)
			if tc.wantReady {
				waitReady(t, v)
				check(t, v.Verify(context.Background(), bearer(token)), "")
				return
			}
			eventually(t, 10*time.Second, "a refused redirect", func() bool { return v.Stats().FetchFailures >= 1 })
			if v.Ready() {
				t.Fatal("Ready with keys from a host redirect_hosts does not list")
			}
			check(t, v.Verify(context.Background(), bearer(token)), ErrKeysUnavailable)
			if n := other.hits.Load() - before; n != 0 {
				t.Fatalf("the refused host was asked %d times", n)
			}
		})
	}
}

// TestRotationOldTokensWorkUntilTheirKeyLeaves: through a rotation k1 ->
// {k1, k2} -> k2, tokens signed by k1 keep verifying (cold and from the
// cache) while k1 is in the set, tokens signed by k2 verify from the moment
// it appears, and k1's tokens stop the moment a refresh drops k1.
func TestRotationOldTokensWorkUntilTheirKeyLeaves(t *testing.T) {
	for _, cacheSize := range []int{0, -1} {
		t.Run(fmt.Sprintf("cache_size %d", cacheSize), func(t *testing.T) {
			k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
			srv := newJWKSServer(t, jwksJSON(t, k1))
			p := corpProvider(srv.uri())
			p.RefreshInterval = time.Second
			v := newVerifier(t, Options{CacheSize: cacheSize, Providers: []Provider{p}})
			waitReady(t, v)
			ctx := context.Background()
			old := bearer(sign(t, k1, claimsFor(corpIssuer, "api", time.Now()), nil))
			check(t, v.Verify(ctx, old), "")

			srv.set(http.StatusOK, jwksJSON(t, k1, k2), false)
			check(t, v.Verify(ctx, bearer(sign(t, k2, claimsFor(corpIssuer, "api", time.Now()), nil))), "")
			for range 3 {
				check(t, v.Verify(ctx, old), "")
			}
			check(t, v.Verify(ctx, bearer(sign(t, k1, claimsFor(corpIssuer, "api", time.Now()), nil))), "")

			srv.set(http.StatusOK, jwksJSON(t, k2), false)
			eventually(t, 10*time.Second, "a refresh without k1", func() bool {
				return v.providers[0].keys.Load().byKID["k1"] == nil
			})
			check(t, v.Verify(ctx, old), ErrUnknownKey)
			check(t, v.Verify(ctx, bearer(sign(t, k2, claimsFor(corpIssuer, "api", time.Now()), nil))), "")
		})
	}
}
