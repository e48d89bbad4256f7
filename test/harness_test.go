// Package test holds Gatehouse's end-to-end tests: they build the gatehouse
// and gatehousectl binaries, start the server on free loopback ports, drive it
// over gRPC and with gatehousectl, and stop it.
package test

import (
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
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

var binDir string

// The build identity the binaries are linked with, as `make build` links
// them (-X .../internal/version.version and .revision): TestBuildIdentity
// finds it in --version, /metrics, the admin Status and the log.
const (
	e2eVersion  = "v0.0.0-e2e"
	e2eRevision = "0123456789abcdef0123456789abcdef01234567"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatehouse-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"gatehouse", "gatehousectl"} {
		ldflags := "-X github.com/gatehouse-dev/gatehouse/internal/version.version=" + e2eVersion +
			" -X github.com/gatehouse-dev/gatehouse/internal/version.revision=" + e2eRevision
		cmd := osexec.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(dir, name), "../cmd/"+name)
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
	log      testutil.LockedBuffer
	exited   chan struct{}
	exitErr  error // set before exited is closed

	// adminAddr is the admin gRPC listener (listen.admin).
	adminAddr string
	// configPath is the configuration file it was started with ("" none).
	configPath string
}

// logText returns everything the server has logged so far.
func (g *gatehouse) logText() string { return g.log.String() }

// settledLog is the server's log once the decision lines of the checks made
// so far have been written: the decision log is written on a short tick, so
// a test that asserts what the log does NOT hold must first wait for what it
// holds. It waits for at least one decision line and four polls without
// growth (several of the writer's 20ms ticks).
func (g *gatehouse) settledLog(t *testing.T) string {
	t.Helper()
	prev := ""
	stable := 0
	eventually(t, 10*time.Second, "the decision log to be written", func() bool {
		cur := g.logText()
		if cur == prev && strings.Contains(cur, `"msg":"decision"`) {
			stable++
		} else {
			stable = 0
		}
		prev = cur
		return stable >= 4
	})
	return prev
}

// startGatehouse runs the server with the config text (written to a temp
// file; "" for no config) on free loopback ports and waits until it listens:
// the server writes its bound addresses to --address-file. With waitReady it
// also waits for /readyz.
func startGatehouse(t *testing.T, configYAML string, waitReady bool, extraArgs ...string) *gatehouse {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addresses.json")
	args := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--address-file", addrFile, "--admin-addr", "127.0.0.1:0"}
	configPath := ""
	if configYAML != "" {
		p := filepath.Join(dir, "gatehouse.yaml")
		configPath = p
		if err := os.WriteFile(p, []byte(configYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", p)
	}
	args = append(args, extraArgs...)
	g := &gatehouse{cmd: osexec.Command(filepath.Join(binDir, "gatehouse"), args...), exited: make(chan struct{}), configPath: configPath}
	g.cmd.Stderr = &g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait reaps the process and copies the last of its output; only this
	// goroutine writes exitErr, and only before closing exited.
	go func() {
		g.exitErr = g.cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() { g.stop(t) })

	var addrs map[string]string
	deadline := time.After(30 * time.Second)
	for addrs == nil {
		select {
		case <-g.exited:
			t.Fatalf("gatehouse exited before listening: %v\n%s", g.exitErr, g.logText())
		case <-deadline:
			t.Fatalf("gatehouse did not write %s\n%s", addrFile, g.logText())
		case <-time.After(20 * time.Millisecond):
		}
		// The file appears whole (written aside, then renamed) or not at all.
		if b, err := os.ReadFile(addrFile); err == nil {
			if err := json.Unmarshal(b, &addrs); err != nil {
				t.Fatalf("address file %s: %v: %q", addrFile, err, b)
			}
		}
	}
	g.grpcAddr, g.httpAddr, g.faAddr = addrs["grpc"], addrs["http"], addrs["forward_auth"]
	g.adminAddr = addrs["admin"]
	if g.grpcAddr == "" || g.httpAddr == "" {
		t.Fatalf("address file lacks grpc or http: %v", addrs)
	}
	if waitReady {
		eventually(t, 20*time.Second, "gatehouse ready", func() bool {
			code, _ := g.get("/readyz")
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

// get fetches path from the ops listener; a transport error is status 0 with
// the error as body. It touches no testing.T, so goroutines may call it.
func (g *gatehouse) get(path string) (int, string) {
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

// grpcHealth asks the server's gRPC health service about service ("" for the
// server as a whole).
func (g *gatehouse) grpcHealth(t *testing.T, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(g.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("grpc health %q: %v", service, err)
	}
	return resp.GetStatus()
}

// ctl runs gatehousectl and returns its exit code, stdout and stderr; it
// fails the test when the binary cannot run at all (test goroutine only).
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	code, stdout, stderr, err := runCtl(args...)
	if err != nil {
		t.Fatalf("gatehousectl %v: %v", args, err)
	}
	return code, stdout, stderr
}

// runCtl is ctl for goroutines: it reports a failure to run instead of
// failing the test.
func runCtl(args ...string) (code int, stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, filepath.Join(binDir, "gatehousectl"), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var ee *osexec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errOut.String(), nil
	}
	return 0, out.String(), errOut.String(), err
}

// eventually polls cond until it holds or the deadline passes (test
// goroutine only).
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, within, what, cond)
}

// writeFile replaces path atomically, as editors and ConfigMap updates do.
func writeFile(t *testing.T, path, body string) {
	t.Helper()
	testutil.WriteAtomic(t, path, body)
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
