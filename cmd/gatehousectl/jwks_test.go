package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// startJWKSServe runs `jwks serve` in-process and returns its base URL and a
// stop function that reports the exit code.
func startJWKSServe(t *testing.T, args ...string) (baseURL string, stop func() int, stdout *testutil.LockedBuffer) {
	t.Helper()
	portFile := filepath.Join(t.TempDir(), "addr")
	ctx, cancel := context.WithCancel(context.Background())
	stdout = &testutil.LockedBuffer{}
	stderr := &testutil.LockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"jwks", "serve", "--port-file", portFile}, args...), stdout, stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(portFile)
		if err == nil && strings.HasSuffix(string(data), "\n") {
			baseURL = "http://" + strings.TrimSpace(string(data))
			break
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("jwks serve exited with %d before listening: %s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("jwks serve did not write its port file")
		}
	}
	stopped := false
	stop = func() int {
		if stopped {
			return exitOK
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatal("jwks serve did not stop")
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return baseURL, stop, stdout
}

func getJWKS(t *testing.T, url string) jwk.Set {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if strings.Contains(string(body), `"d":`) {
		t.Fatalf("served private key material: %s", body)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("GET %s: not a JWKS: %v", url, err)
	}
	return set
}

func TestJWKSServe(t *testing.T) {
	keyFile, jwksFile := generateKeys(t, "ES256", "k1")
	baseURL, stop, stdout := startJWKSServe(t, "--jwks", jwksFile)

	set := getJWKS(t, baseURL+"/.well-known/jwks.json")
	if _, ok := set.LookupKeyID("k1"); !ok {
		t.Fatal("k1 not served")
	}

	// Rotation: the file is re-read on every request.
	r := runCLI(t, "jwks", "generate", "--alg", "EdDSA", "--kid", "k2", "--out-private", keyFile+".2", "--out-jwks", jwksFile, "--append")
	r.wantCode(t, exitOK)
	set = getJWKS(t, baseURL+"/")
	if _, ok := set.LookupKeyID("k2"); !ok || set.Len() != 2 {
		t.Fatalf("after rotation %d keys served", set.Len())
	}

	resp, err := http.Get(baseURL + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /elsewhere: %d", resp.StatusCode)
	}

	if code := stop(); code != exitOK {
		t.Errorf("exit code on stop = %d", code)
	}
	if want := baseURL + "/.well-known/jwks.json\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
}

func TestJWKSServePrivateFileServesPublicHalf(t *testing.T) {
	keyFile, _ := generateKeys(t, "RS256", "r1")
	baseURL, _, _ := startJWKSServe(t, "--jwks", keyFile)
	set := getJWKS(t, baseURL+"/.well-known/jwks.json")
	k, _ := set.Key(0)
	if set.Len() != 1 || k.KeyID() != "r1" {
		t.Errorf("served %d keys, kid %q", set.Len(), k.KeyID())
	}
}

func TestJWKSServeRefuses(t *testing.T) {
	_, jwksFile := generateKeys(t, "ES256", "k1")
	secret := filepath.Join(t.TempDir(), "oct.json")
	if err := os.WriteFile(secret, []byte(`{"kty":"oct","k":"c2VjcmV0","kid":"s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{name: "all interfaces", args: []string{"--jwks", jwksFile, "--addr", "0.0.0.0:0"}, wantStderr: "non-loopback"},
		{name: "empty host", args: []string{"--jwks", jwksFile, "--addr", ":0"}, wantStderr: "non-loopback"},
		{name: "public address", args: []string{"--jwks", jwksFile, "--addr", "192.0.2.1:8080"}, wantStderr: "non-loopback"},
		{name: "hostname", args: []string{"--jwks", jwksFile, "--addr", "example.com:80"}, wantStderr: "non-loopback"},
		{name: "missing jwks flag", args: nil, wantStderr: "--jwks is required"},
		{name: "missing file", args: []string{"--jwks", "/nonexistent/jwks.json"}, wantStderr: "no such file"},
		{name: "symmetric key", args: []string{"--jwks", secret}, wantStderr: "symmetric"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"jwks", "serve"}, tc.args...)...)
			r.wantCode(t, exitError)
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
		})
	}
}
