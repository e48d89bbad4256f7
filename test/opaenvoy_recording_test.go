package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
)

// recordEnv names an OPA-Envoy binary to record the quick start's answers
// with (OPA_ENVOY_RECORD=/path/to/opa-envoy go test ./test/ -run
// TestOPAEnvoyQuickStart): the test then runs it with the same arguments,
// configuration and policy, asks it the same requests, and rewrites the
// recording before comparing Gatehouse with it. CI never runs OPA-Envoy.
const recordEnv = "OPA_ENVOY_RECORD"

// recording is OPA-Envoy's answers to a set of requests, by case name.
type recording struct {
	// OPAEnvoy is the version that answered (`opa-envoy version`).
	OPAEnvoy string                    `json:"opa_envoy"`
	Answers  map[string]recordedAnswer `json:"answers"`
}

// recordedAnswer is a CheckResponse as Envoy acts on it, with what is
// random per decision (the decision id) left out, and the fingerprint of
// what was asked: a recording of another configuration, policy or request
// is stale and refused.
type recordedAnswer struct {
	Fingerprint     string            `json:"fingerprint"`
	Allowed         bool              `json:"allowed"`
	HTTPStatus      int               `json:"http_status"`
	Headers         map[string]string `json:"headers,omitempty"`
	Body            string            `json:"body,omitempty"`
	DynamicMetadata map[string]any    `json:"dynamic_metadata,omitempty"`
}

// answerOf reduces resp to a recordedAnswer, as Envoy acts on it: the OK
// or denied response's headers, the status Envoy answers and the body, and dynamic_metadata without decision_id
// (Gatehouse's DecisionIDHeader is left out too: it carries the same id).
func answerOf(t *testing.T, resp *authv3.CheckResponse) recordedAnswer {
	t.Helper()
	a := recordedAnswer{Allowed: resp.GetStatus().GetCode() == 0, HTTPStatus: 200, Headers: map[string]string{}}
	headers := resp.GetOkResponse().GetHeaders()
	if !a.Allowed {
		// Envoy answers 403 to a denial without a denied_response, which is
		// how OPA-Envoy denies for a boolean decision (Gatehouse always
		// sends one: docs/policies.md#diff-encoding).
		a.HTTPStatus = 403
	}
	if den := resp.GetDeniedResponse(); den != nil {
		a.HTTPStatus = int(den.GetStatus().GetCode())
		a.Body = den.GetBody()
		headers = den.GetHeaders()
	}
	for _, h := range headers {
		if h.GetHeader().GetKey() != authz.DecisionIDHeader {
			a.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
	}
	if len(a.Headers) == 0 {
		a.Headers = nil
	}
	if md := resp.GetDynamicMetadata(); md != nil {
		b, err := protojson.Marshal(md)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &a.DynamicMetadata); err != nil {
			t.Fatal(err)
		}
		delete(a.DynamicMetadata, "decision_id")
		if len(a.DynamicMetadata) == 0 {
			a.DynamicMetadata = nil
		}
	}
	return a
}

// fingerprint names what was asked: the files of dir and the request.
func fingerprint(t *testing.T, dir string, req *authv3.CheckRequest) string {
	t.Helper()
	h := sha256.New()
	for _, name := range []string{"config.yaml", "policy.rego"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\x00", name, len(b))
		h.Write(b)
	}
	// protojson's output varies on purpose; its decoded value re-encoded by
	// encoding/json (sorted keys) does not.
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if b, err = json.Marshal(v); err != nil {
		t.Fatal(err)
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// quickStartRecording returns OPA-Envoy's recorded answers to requests
// (by case name) for the quick start in dir, recording them first when
// recordEnv names a binary. A missing or stale recording fails the test.
func quickStartRecording(t *testing.T, dir string, requests map[string]*authv3.CheckRequest) recording {
	t.Helper()
	path := filepath.Join(dir, "recorded-opa-envoy.json")
	if bin := os.Getenv(recordEnv); bin != "" {
		rec := recordQuickStart(t, bin, dir, requests)
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the recording of OPA-Envoy's answers: %v (record it with %s=/path/to/opa-envoy)", err, recordEnv)
	}
	var rec recording
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for name, req := range requests {
		a, ok := rec.Answers[name]
		if !ok || a.Fingerprint != fingerprint(t, dir, req) {
			t.Fatalf("%s: case %q is missing or was recorded for another configuration, policy or request: record again with %s=/path/to/opa-envoy", path, name, recordEnv)
		}
	}
	return rec
}

// recordQuickStart runs OPA-Envoy binary bin as the quick start's sidecar
// runs it, its ports free loopback ones (the ext_authz listener through
// --set, as startRun does for Gatehouse), and asks it requests.
func recordQuickStart(t *testing.T, bin, dir string, requests map[string]*authv3.CheckRequest) recording {
	t.Helper()
	out, err := osexec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	version := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok && version == "" {
			version = strings.TrimSpace(v)
		}
	}
	addrs := make([]string, 3)
	for i := range addrs {
		if addrs[i], err = testutil.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	grpcAddr, httpAddr, diagAddr := addrs[0], addrs[1], addrs[2]
	cmd := osexec.Command(bin, "run", "--server", "--config-file="+filepath.Join(dir, "config.yaml"),
		"--addr="+httpAddr, "--diagnostic-addr="+diagAddr, "--disable-telemetry",
		"--set=plugins.envoy_ext_authz_grpc.addr="+grpcAddr, filepath.Join(dir, "policy.rego"))
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	eventually(t, 30*time.Second, "OPA-Envoy's /health?plugins", func() bool {
		code, _ := httpGet("http://" + diagAddr + "/health?plugins")
		return code == 200
	})
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	rec := recording{OPAEnvoy: version, Answers: map[string]recordedAnswer{}}
	names := make([]string, 0, len(requests))
	for name := range requests {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.Check(ctx, requests[name])
		cancel()
		if err != nil {
			t.Fatalf("OPA-Envoy: %s: %v\n%s", name, err, log.String())
		}
		a := answerOf(t, resp)
		a.Fingerprint = fingerprint(t, dir, requests[name])
		rec.Answers[name] = a
	}
	return rec
}
