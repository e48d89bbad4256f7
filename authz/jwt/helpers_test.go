package jwt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// testKey is a signing key with its public JWK (internal/testutil's).
type testKey = testutil.Key

func newRSAKey(t testing.TB, kid string, alg jwa.SignatureAlgorithm) *testKey {
	return testutil.NewKey(t, alg, kid)
}

func newECKey(t testing.TB, kid string) *testKey { return testutil.NewKey(t, jwa.ES256, kid) }

func newEdKey(t testing.TB, kid string) *testKey { return testutil.NewKey(t, jwa.EdDSA, kid) }

func makeTestKey(t testing.TB, kid string, alg jwa.SignatureAlgorithm, priv, pub any) *testKey {
	return testutil.KeyFrom(t, alg, kid, priv, pub)
}

// jwksJSON renders a JWKS holding the public keys.
func jwksJSON(t testing.TB, keys ...*testKey) []byte { return testutil.JWKS(t, keys...) }

// sign signs claims with k, setting kid to k.Kid unless headers overrides it
// (a headers value of nil removes the field).
func sign(t testing.TB, k *testKey, claims map[string]any, headers map[string]any) string {
	return k.Sign(t, claims, headers)
}

// rawToken assembles a token from JSON header, payload and raw signature
// bytes, without any signing: for alg none, forged kids and the like.
func rawToken(t testing.TB, header, claims map[string]any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

// claimsFor returns valid claims for issuer and audience.
func claimsFor(iss, aud string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss,
		"aud": aud,
		"sub": "alice",
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// jwksServer serves a JWKS whose body, status and behaviour tests change on
// the fly, and counts what it is asked.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int
	header http.Header
	slow   bool
	paths  []string
	hits   atomic.Int64
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	s.paths = append(s.paths, r.URL.RequestURI())
	body, status, slow := s.body, s.status, s.slow
	for k, vs := range s.header {
		w.Header()[k] = vs
	}
	s.mu.Unlock()
	if slow {
		// Hang until the client gives up (its fetch timeout).
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *jwksServer) set(status int, body []byte, slow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body, s.slow = status, body, slow
}

func (s *jwksServer) requestedPaths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

func (s *jwksServer) uri() string { return s.URL + "/jwks.json" }

// testLogger writes the verifier's log lines to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

func newVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	v, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, within, what, cond)
}

func waitReady(t testing.TB, v *Verifier) {
	t.Helper()
	eventually(t, 10*time.Second, "verifier ready", v.Ready)
}

func bearer(token string) Request {
	return Request{Headers: map[string]string{"authorization": "Bearer " + token}}
}

func writeFile(t testing.TB, dir, name string, body []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func boolPtr(b bool) *bool { return &b }

// check asserts a Result's validity and error code (want "" means valid,
// "nil" means no token presented).
func check(t testing.TB, res *Result, want string) {
	t.Helper()
	switch {
	case want == "nil":
		if res != nil {
			t.Fatalf("want no token presented, got %+v", *res)
		}
	case res == nil:
		t.Fatalf("want %q, got nil result (token not presented)", want)
	case want == "":
		if !res.Valid || res.Error != "" || res.Claims == nil {
			t.Fatalf("want valid, got valid=%v error=%q detail=%q", res.Valid, res.Error, res.Detail)
		}
	default:
		if res.Valid || res.Error != want || res.Claims != nil {
			t.Fatalf("want error %q, got valid=%v error=%q detail=%q", want, res.Valid, res.Error, res.Detail)
		}
	}
}
