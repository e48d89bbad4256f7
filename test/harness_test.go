// Package test holds Gatehouse's end-to-end tests: they build the gatehouse
// and gatehousectl binaries, start the server on free loopback ports, drive it
// over gRPC and with gatehousectl, and stop it.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatehouse-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"gatehouse", "gatehousectl"} {
		cmd := osexec.Command("go", "build", "-o", filepath.Join(dir, name), "../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gatehouse is one running server process.
type gatehouse struct {
	cmd      *osexec.Cmd
	grpcAddr string
	httpAddr string
	faAddr   string // the forward-auth listener, when listen.forward_auth is set
	mu       sync.Mutex
	log      bytes.Buffer
	exited   chan struct{}
	exitErr  error
}

// logText returns everything the server has logged so far.
func (g *gatehouse) logText() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

// startGatehouse runs the server with the config text (written to a temp
// file; "" for no config) on free loopback ports and waits until it listens.
// With waitReady it also waits for /readyz.
func startGatehouse(t *testing.T, configYAML string, waitReady bool, extraArgs ...string) *gatehouse {
	t.Helper()
	args := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
	if configYAML != "" {
		p := filepath.Join(t.TempDir(), "gatehouse.yaml")
		if err := os.WriteFile(p, []byte(configYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", p)
	}
	args = append(args, extraArgs...)
	g := &gatehouse{cmd: osexec.Command(filepath.Join(binDir, "gatehouse"), args...), exited: make(chan struct{})}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.log.WriteString(line + "\n")
			g.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
				listening <- rec
			}
		}
		g.exitErr = g.cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() { g.stop(t) })
	select {
	case rec := <-listening:
		g.grpcAddr, _ = rec["grpc"].(string)
		g.httpAddr, _ = rec["http"].(string)
		g.faAddr, _ = rec["forward_auth"].(string)
	case <-g.exited:
		t.Fatalf("gatehouse exited before listening: %v\n%s", g.exitErr, g.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("gatehouse did not start listening\n%s", g.logText())
	}
	if waitReady {
		eventually(t, 20*time.Second, "gatehouse ready", func() bool {
			code, _ := g.get(t, "/readyz")
			return code == 200
		})
	}
	return g
}

// stop sends SIGTERM and waits for a clean exit.
func (g *gatehouse) stop(t *testing.T) {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(20 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
		t.Errorf("gatehouse did not stop on SIGTERM\n%s", g.logText())
	}
}

func (g *gatehouse) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + g.httpAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// client returns a gRPC ext_authz client for the server.
func (g *gatehouse) client(t *testing.T) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(g.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// ctl runs gatehousectl and returns its exit code, stdout and stderr.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, filepath.Join(binDir, "gatehousectl"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *osexec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gatehousectl %v: %v", args, err)
	}
	return code, stdout.String(), stderr.String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	// Write then rename, as editors and ConfigMap updates do, so the watcher
	// never sees a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func contains(haystack string, needles ...string) error {
	for _, n := range needles {
		if !strings.Contains(haystack, n) {
			return fmt.Errorf("missing %q in:\n%s", n, haystack)
		}
	}
	return nil
}

func exec(t *testing.T, name string, args ...string) *osexec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return osexec.CommandContext(ctx, name, args...)
}
