package testutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// WriteAtomic replaces path the way editors and configuration tools do:
// write a temporary file beside it, then rename it over path, so a watcher
// never reads a half-written file.
func WriteAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// WriteFiles writes name -> content under dir, creating directories.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Listen returns a TCP listener on a free loopback port, closed when the
// test ends. Tests never use a fixed port and never leave loopback.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

// ClosedAddr returns a loopback host:port nobody listens on (a port bound
// and released again): a dependency that is down. Another process may take
// the port meanwhile, which on loopback in a test run is unlikely and only
// turns "refused" into a wrong answer the test reports.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// process started next to listen on (the test programs under test/, which
// have no testing.TB).
func FreeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}
