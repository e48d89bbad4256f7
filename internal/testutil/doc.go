// Package testutil holds the helpers Gatehouse's tests share across packages:
// polling until a condition holds, a concurrency-safe log buffer, signing
// keys and tokens with an httptest JWKS server whose faults a test controls,
// loopback listeners and an Authorization server on one, atomic file
// replacement, and the OPA-Envoy tutorial-style policy the benchmarks share.
//
// It is imported only by _test.go files and the test programs under test/.
// Helpers that take a testing.TB call its Fatal methods and so must run on the
// test's own goroutine; the ones meant for other goroutines (WaitFor) return a
// result instead.
package testutil
