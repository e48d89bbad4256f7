// Command record runs a real OPA-Envoy binary over the compatibility corpus
// and writes its answers to test/compat/testdata/recorded, for the
// differential test in test/compat to compare Gatehouse against.
//
// It never builds OPA-Envoy: pass the path of a binary you built or
// downloaded yourself.
//
//	OPA_ENVOY=/path/to/opa-envoy go run ./test/compat/record
//
// Each suite runs in its own OPA-Envoy process on a free loopback port, with
// the suite's decision path, dry-run and body-parse settings, decision logs,
// status and telemetry off. A second process runs the echo policy (see
// corpus.EchoPolicy) to record the input document OPA-Envoy built for each
// request, which is how the value types of input.attributes are pinned.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

func main() {
	bin := flag.String("opa-envoy", os.Getenv("OPA_ENVOY"), "path of the OPA-Envoy binary (default $OPA_ENVOY)")
	suites := flag.String("suites", "test/compat/testdata/suites", "directory of the corpus suites")
	out := flag.String("out", "test/compat/testdata/recorded", "directory the recordings are written to")
	only := flag.String("only", "", "record only the suite of this name")
	flag.Parse()
	if err := run(context.Background(), *bin, *suites, *out, *only); err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, suitesDir, outDir, only string) error {
	if bin == "" {
		return errors.New("no OPA-Envoy binary: set OPA_ENVOY=/path or pass -opa-envoy")
	}
	version, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", bin, err)
	}
	versionLine, _, _ := strings.Cut(string(version), "\n")
	suites, err := corpus.LoadSuites(suitesDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "record-opa-envoy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// One echo process per body-parse setting: the input does not depend on
	// the suite's policy, dry-run or Rego version.
	echoDir := filepath.Join(tmp, "echo")
	if err := os.MkdirAll(echoDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(echoDir, "echo.rego"), []byte(corpus.EchoPolicy), 0o644); err != nil {
		return err
	}
	echo := map[bool]*opaEnvoy{}
	for _, skip := range []bool{false, true} {
		p, err := start(ctx, bin, filepath.Join(tmp, fmt.Sprintf("echo-%v", skip)), echoDir,
			corpus.Config{Path: corpus.EchoPath, SkipRequestBodyParse: skip})
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		defer p.stop()
		echo[skip] = p
	}

	for _, s := range suites {
		if only != "" && s.Name != only {
			continue
		}
		rec, err := recordSuite(ctx, bin, tmp, s, echo[s.Config.SkipRequestBodyParse])
		if err != nil {
			return fmt.Errorf("suite %s: %w", s.Name, err)
		}
		rec.OPAEnvoy = versionLine
		if err := corpus.WriteRecording(outDir, rec); err != nil {
			return err
		}
		fmt.Printf("%-40s %3d cases\n", s.Name, len(rec.Cases))
	}
	return nil
}

func recordSuite(ctx context.Context, bin, tmp string, s corpus.Suite, echo *opaEnvoy) (corpus.Recording, error) {
	rec := corpus.Recording{Suite: s.Name}
	policyDir := filepath.Join(tmp, s.Name, "policy")
	if err := s.WritePolicyDir(policyDir); err != nil {
		return rec, err
	}
	p, err := start(ctx, bin, filepath.Join(tmp, s.Name), policyDir, s.Config)
	if err != nil {
		return rec, err
	}
	defer p.stop()
	for _, c := range s.Cases {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(c.Request, &req); err != nil {
			return rec, fmt.Errorf("case %s: request: %w", c.Name, err)
		}
		ans := corpus.Answer{Name: c.Name, Fingerprint: s.Fingerprint(c)}
		resp, gerr, err := p.check(ctx, &req)
		if err != nil {
			return rec, fmt.Errorf("case %s: %w", c.Name, err)
		}
		ans.Response, ans.Error = resp, gerr
		echoResp, echoErr, err := echo.check(ctx, &req)
		if err != nil {
			return rec, fmt.Errorf("case %s: echo: %w", c.Name, err)
		}
		if in := echoedInput(echoResp); in != nil {
			ans.Input = in
		} else if echoErr != nil {
			return rec, fmt.Errorf("case %s: echo answered an error: %s", c.Name, echoErr.Message)
		} else {
			ans.EchoResponse = echoResp
		}
		rec.Cases = append(rec.Cases, ans)
	}
	return rec, nil
}

// echoedInput extracts the input the echo policy returned, or nil when the
// echo answer is not an allow carrying it.
func echoedInput(resp json.RawMessage) json.RawMessage {
	var r struct {
		DynamicMetadata struct {
			Input *string `json:"input"`
		} `json:"dynamicMetadata"`
	}
	if resp == nil || json.Unmarshal(resp, &r) != nil || r.DynamicMetadata.Input == nil {
		return nil
	}
	return json.RawMessage(*r.DynamicMetadata.Input)
}

// opaEnvoy is one running OPA-Envoy process.
type opaEnvoy struct {
	policyDir string
	cmd       *exec.Cmd
	conn      *grpc.ClientConn
	client    authv3.AuthorizationClient
	log       *bytes.Buffer
}

func start(ctx context.Context, bin, dir, policyDir string, cfg corpus.Config) (*opaEnvoy, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	grpcAddr, err := testutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := testutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	// Decision logs, status and bundles are not configured, so none is sent
	// anywhere; --disable-telemetry stops the version check.
	config := map[string]any{
		"plugins": map[string]any{
			"envoy_ext_authz_grpc": map[string]any{
				"addr":                    grpcAddr,
				"path":                    cfg.Path,
				"dry-run":                 cfg.DryRun,
				"skip-request-body-parse": cfg.SkipRequestBodyParse,
			},
		},
	}
	raw, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgFile, raw, 0o644); err != nil {
		return nil, err
	}
	args := []string{"run", "--server", "--addr", httpAddr, "--config-file", cfgFile, "--disable-telemetry", "--log-level", "error"}
	if cfg.RegoVersion == "v0" {
		args = append(args, "--v0-compatible")
	}
	args = append(args, policyDir)
	cmd := exec.CommandContext(ctx, bin, args...)
	log := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &opaEnvoy{policyDir: policyDir, cmd: cmd, log: log}
	if err := waitReady(ctx, httpAddr); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w; OPA-Envoy log:\n%s", err, log.String())
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.conn, p.client = conn, authv3.NewAuthorizationClient(conn)
	return p, nil
}

// waitReady polls OPA's health endpoint, which answers 200 only once every
// plugin (the ext_authz gRPC server included) is up.
func waitReady(ctx context.Context, httpAddr string) error {
	url := "http://" + httpAddr + "/health?plugins"
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("OPA-Envoy did not become ready within 30s")
}

func (p *opaEnvoy) check(ctx context.Context, req *authv3.CheckRequest) (json.RawMessage, *corpus.GRPCError, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := p.client.Check(ctx, req)
	if err != nil {
		st, ok := status.FromError(err)
		if !ok {
			return nil, nil, err
		}
		// The policy's temporary directory changes per run.
		msg := strings.ReplaceAll(st.Message(), p.policyDir, "<policy-dir>")
		return nil, &corpus.GRPCError{Code: st.Code().String(), Message: msg}, nil
	}
	stableOrder(resp)
	if id := resp.GetDynamicMetadata().GetFields()["decision_id"]; id != nil {
		resp.DynamicMetadata.Fields["decision_id"] = structpb.NewStringValue(corpus.DecisionIDPlaceholder)
	}
	raw, err := protojson.Marshal(resp)
	if err != nil {
		return nil, nil, err
	}
	return normalizeJSON(raw), nil, nil
}

func (p *opaEnvoy) stop() {
	if p.conn != nil {
		p.conn.Close()
	}
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
}

// normalizeJSON re-encodes protojson output (whose spacing is deliberately
// unstable) in a stable form.
func normalizeJSON(raw []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// stableOrder sorts header options and query parameters by name, keeping the
// order of the values of one name: OPA-Envoy emits them in Go map order,
// which changes from run to run, and the recordings should not.
func stableOrder(resp *authv3.CheckResponse) {
	byKey := func(hs []*corev3.HeaderValueOption) {
		sort.SliceStable(hs, func(i, j int) bool { return hs[i].GetHeader().GetKey() < hs[j].GetHeader().GetKey() })
	}
	if ok := resp.GetOkResponse(); ok != nil {
		byKey(ok.Headers)
		byKey(ok.ResponseHeadersToAdd)
		q := ok.QueryParametersToSet
		sort.SliceStable(q, func(i, j int) bool { return q[i].GetKey() < q[j].GetKey() })
	}
	if d := resp.GetDeniedResponse(); d != nil {
		byKey(d.Headers)
	}
}
