//go:build unix

package jwt

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRefetchWaitBoundedWhenTheReadHangs: a jwks_file read ignores contexts; when it
// blocks (here a FIFO with no writer), a check waiting on the unknown-kid
// reread still returns after fetch_timeout, fail closed, and the read
// completes in the background for later checks.
func TestRefetchWaitBoundedWhenTheReadHangs(t *testing.T) {
	known, rotated := newECKey(t, "k1"), newECKey(t, "k2")
	path := writeFile(t, t.TempDir(), "jwks.json", jwksJSON(t, known))
	v := newVerifier(t, Options{Providers: []Provider{{
		Name: "corp", Issuer: corpIssuer, Audiences: []string{"api"}, JWKSFile: path,
		FetchTimeout: 200 * time.Millisecond,
	}}})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}

	unknown := bearer(sign(t, rotated, claimsFor(corpIssuer, "api", time.Now()), nil))
	check(t, verifyWithin(t, 30*time.Second, context.Background(), v, unknown), ErrUnknownKey)
	if n := v.Stats().UnknownKidRefetches; n != 1 {
		t.Fatalf("UnknownKidRefetches = %d, want 1", n)
	}
	check(t, verifyWithin(t, 30*time.Second, context.Background(), v,
		bearer(sign(t, known, claimsFor(corpIssuer, "api", time.Now()), nil))), "")

	// Unblock the read: the new set arrives for the checks after it.
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(jwksJSON(t, known, rotated)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	eventually(t, 10*time.Second, "the reread set", func() bool { return v.Stats().Providers[0].Keys == 2 })
	check(t, v.Verify(context.Background(), unknown), "")
}
