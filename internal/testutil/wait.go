package testutil

import (
	"testing"
	"time"
)

// pollInterval is how often Eventually and WaitFor look again.
const pollInterval = 20 * time.Millisecond

// Eventually polls cond until it holds, failing the test with what when it
// still does not after within. Call it from the test goroutine only.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !WaitFor(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// WaitFor polls cond until it holds (true) or within passes (false). It never
// touches a testing.TB, so any goroutine may call it.
func WaitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
	return true
}
