package main

import (
	"archive/tar"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
)

// The shipped Istio configuration and policy (the ConfigMaps of deploy/istio/base).
const (
	shippedConfig = "../../deploy/istio/base/config/gatehouse.yaml"
	shippedPolicy = "../../deploy/istio/base/policies/authz.rego"
	shippedJWKS   = "jwks_uri: https://issuer.example.com/.well-known/jwks.json"
	issuer        = "https://issuer.example.com"
	audience      = "httpbin"
)

// TestRunsOnReadOnlyRoot runs the image's entrypoint the way the Deployment
// does: from the image's own root, read-only, as 65532:65532 with no
// capabilities, the shipped configuration and policy mounted read-only at
// /etc/gatehouse. The JWKS is served on loopback (the only change to the
// shipped file is its jwks_uri) and the listeners bind 127.0.0.1:0 by flag.
// The image's own gatehousectl, run from the same root, asks it: a valid
// token is allowed with the identity header, no token is a 401.
func TestRunsOnReadOnlyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root: this test must run there")
		}
		t.Skip("needs root (a mount namespace, chroot, and a change of user): run `make test-image` as root, as CI does")
	}
	dir, _ := testImage(t)
	img := platformImage(t, dir, runtime.GOARCH)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	root := filepath.Join(t.TempDir(), "rootfs")
	unpack(t, img, root)
	// Mount points, as a runtime creates them before mounting.
	for _, d := range []string{"proc", "etc/gatehouse", "run/gatehouse"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":%q,"e":%q}]}`,
			b64(key.N.Bytes()), b64(big.NewInt(int64(key.E)).Bytes()))
	}))
	t.Cleanup(jwks.Close)

	// The configuration: the shipped file, its jwks_uri pointed at loopback.
	conf := filepath.Join(t.TempDir(), "config")
	shipped, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(shipped), shippedJWKS); n != 1 {
		t.Fatalf("%s has %d lines %q, want 1: update the test with the file", shippedConfig, n, shippedJWKS)
	}
	cfgText := strings.Replace(string(shipped), shippedJWKS, "jwks_uri: "+jwks.URL+"/.well-known/jwks.json", 1)
	policy, err := os.ReadFile(shippedPolicy)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(conf, "gatehouse.yaml"), cfgText)
	writeFile(t, filepath.Join(conf, "policies", "authz.rego"), string(policy))
	// The address file's directory: the one writable mount, owned by the user.
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, oci.NonrootUID, oci.NonrootUID); err != nil {
		t.Fatal(err)
	}
	binds := []bind{{Src: conf, Dst: "/etc/gatehouse", ReadOnly: true}, {Src: run, Dst: "/run/gatehouse"}}

	args := append(append([]string{}, cf.Config.Entrypoint...),
		"--config", "/etc/gatehouse/gatehouse.yaml",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--address-file", "/run/gatehouse/addresses.json")
	var serverLog bytes.Buffer
	server := sandboxCmd(t, cf, root, binds, args)
	server.Stdout, server.Stderr = &serverLog, &serverLog
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- server.Wait() }()
	t.Cleanup(func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = server.Process.Kill()
			t.Errorf("gatehouse did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("gatehouse's log:\n%s", serverLog.String())
		}
	})

	addrs := waitAddresses(t, filepath.Join(run, "addresses.json"), exited)
	waitReady(t, "http://"+addrs["http"]+"/readyz", exited)

	// It runs as the image's user, on a read-only root.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", server.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65532\t65532\t65532\t65532\n") ||
		!strings.Contains(string(status), "\nGid:\t65532\t65532\t65532\t65532\n") ||
		!strings.Contains(string(status), "\nCapEff:\t0000000000000000\n") {
		t.Errorf("gatehouse is not 65532:65532 without capabilities:\n%s", status)
	}
	if opts := rootMountOptions(t, server.Process.Pid); !strings.HasPrefix(opts, "ro") {
		t.Errorf("gatehouse's / is mounted %q, want ro", opts)
	}

	token := signToken(t, key, map[string]any{
		"iss": issuer, "aud": audience, "sub": "alice",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	tests := []struct {
		name       string
		token      string
		wantExit   int
		wantStatus int
		wantHeader string // on the upstream request, when allowed
	}{
		{name: "valid token", token: token, wantExit: 0, wantHeader: "x-jwt-sub: alice"},
		{name: "no token", wantExit: 1, wantStatus: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctlArgs := []string{"/usr/local/bin/gatehousectl", "check", "--addr", addrs["grpc"], "--host", "httpbin.example.com", "--path", "/headers", "--json"}
			if tc.token != "" {
				ctlArgs = append(ctlArgs, "--token", tc.token)
			}
			var stdout, stderr bytes.Buffer
			ctl := sandboxCmd(t, cf, root, nil, ctlArgs)
			ctl.Stdout, ctl.Stderr = &stdout, &stderr
			err := ctl.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantExit {
				t.Fatalf("gatehousectl exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantExit, stdout.String(), stderr.String())
			}
			var got struct {
				Allowed    bool `json:"allowed"`
				HTTPStatus int  `json:"http_status"`
				Headers    []struct {
					Key, Value string
				} `json:"headers"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("gatehousectl --json: %v: %s", err, stdout.String())
			}
			if got.Allowed != (tc.wantExit == 0) || got.HTTPStatus != tc.wantStatus {
				t.Errorf("allowed %v status %d, want %v %d: %s", got.Allowed, got.HTTPStatus, tc.wantExit == 0, tc.wantStatus, stdout.String())
			}
			if tc.wantHeader != "" {
				found := false
				for _, h := range got.Headers {
					found = found || h.Key+": "+h.Value == tc.wantHeader
				}
				if !found {
					t.Errorf("no %q among the headers: %s", tc.wantHeader, stdout.String())
				}
			}
		})
	}
}

// sandboxCmd is args run in the image root by the re-executed test binary
// (see enterSandbox), as the image's user with the image's environment.
func sandboxCmd(t *testing.T, cf *v1.ConfigFile, root string, binds []bind, args []string) *exec.Cmd {
	t.Helper()
	var uid, gid int
	if _, err := fmt.Sscanf(cf.Config.User, "%d:%d", &uid, &gid); err != nil {
		t.Fatalf("image user %q: %v", cf.Config.User, err)
	}
	spec, err := json.Marshal(sandbox{Root: root, Binds: binds, UID: uid, GID: gid, Env: cf.Config.Env, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{sandboxEnv + "=" + string(spec)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// platformImage is the image of the index in dir for linux/goarch.
func platformImage(t *testing.T, dir, goarch string) v1.Image {
	t.Helper()
	idx, err := oci.ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == goarch {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Skipf("the image has no linux/%s to run here", goarch)
	return nil
}

// unpack writes img's filesystem under root with its modes and owners.
func unpack(t *testing.T, img v1.Image, root string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, hdr.Name)
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("layer entry %q leaves the root", hdr.Name)
		}
		mode := hdr.FileInfo().Mode()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			// Extract flattens from the top layer down: a file can come
			// before its directory's entry, which then sets its mode.
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("layer entry %q: unexpected type %c", hdr.Name, hdr.Typeflag)
		}
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			t.Fatal(err)
		}
		// After the chown, which clears set-id bits.
		if err := os.Chmod(p, mode.Perm()|mode&(os.ModeSticky|os.ModeSetuid|os.ModeSetgid)); err != nil {
			t.Fatal(err)
		}
	}
}

// rootMountOptions is the per-mount options of / as process pid sees it.
func rootMountOptions(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options ...; the last / wins.
		if f := strings.Fields(line); len(f) > 5 && f[4] == "/" {
			opts = f[5]
		}
	}
	return opts
}

func waitAddresses(t *testing.T, file string, exited <-chan error) map[string]string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("gatehouse exited before listening: %v", err)
		case <-deadline:
			t.Fatalf("gatehouse did not write %s", file)
		case <-time.After(20 * time.Millisecond):
		}
		// Written aside and renamed: whole or absent.
		if b, err := os.ReadFile(file); err == nil {
			var addrs map[string]string
			if err := json.Unmarshal(b, &addrs); err != nil {
				t.Fatalf("%s: %v: %q", file, err, b)
			}
			if addrs["grpc"] == "" || addrs["http"] == "" {
				t.Fatalf("%s lacks grpc or http: %v", file, addrs)
			}
			return addrs
		}
	}
}

// waitReady polls /readyz, which answers 200 once the policy compiled and the
// JWKS was fetched.
func waitReady(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("gatehouse exited before ready: %v", err)
		case <-deadline:
			t.Fatalf("%s did not answer 200", url)
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
}

func writeFile(t *testing.T, p, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signToken is an RS256 JWT with kid k1, built here from the standard
// library so that the test does not share Gatehouse's token code.
func signToken(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := b64([]byte(`{"alg":"RS256","typ":"JWT","kid":"k1"}`)) + "." + b64(payload)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}
