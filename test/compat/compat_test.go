// Package compat is the differential test against OPA-Envoy: every case of
// the corpus in testdata/suites (policies and CheckRequests from OPA-Envoy's
// own tests and docs examples) runs through Gatehouse's real Check handler,
// over gRPC on loopback with the real policy engine, and Gatehouse's answer
// and input document are compared field by field with what the real
// OPA-Envoy answered (testdata/recorded, written by test/compat/record).
//
// Every difference must be one docs/policies.md documents: each is an
// explicit expectation below (differences), tied to its anchor in the docs,
// that asserts what each side does. Any other difference fails.
package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gatehouse-dev/gatehouse/authz"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

const (
	suitesDir   = "testdata/suites"
	recordedDir = "testdata/recorded"
	docPath     = "../../docs/policies.md"
)

// gatehouse is one Gatehouse authz.Server on loopback.
type gatehouse struct {
	client authv3.AuthorizationClient
}

func startGatehouse(t *testing.T, policyDir string, cfg corpus.Config) *gatehouse {
	t.Helper()
	ctx := context.Background()
	// No evaluation deadline: the test compares answers, and a loaded CI
	// machine under the race detector must not turn a slow evaluation into
	// a timeout denial.
	engine, err := policy.New(ctx, policy.Options{Paths: []string{policyDir}, Decision: cfg.Path, RegoVersion: cfg.RegoVersion, EvalTimeout: -1})
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	srv, err := authz.New(authz.Options{Policy: engine, DryRun: cfg.DryRun, ParseBody: !cfg.SkipRequestBodyParse})
	if err != nil {
		t.Fatal(err)
	}
	return &gatehouse{client: testutil.AuthorizationClient(t, testutil.ServeAuthorization(t, srv))}
}

func (g *gatehouse) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := g.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Gatehouse answered a gRPC error (it must always answer a CheckResponse): %v", err)
	}
	return resp
}

// docAnchors maps each id="..." anchor of docs/policies.md to its line.
func docAnchors(t *testing.T) map[string]int {
	t.Helper()
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]int{}
	re := regexp.MustCompile(`id="([a-z0-9-]+)"`)
	for i, line := range strings.Split(string(raw), "\n") {
		for _, m := range re.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = i + 1
		}
	}
	return anchors
}

func TestOPAEnvoyCompat(t *testing.T) {
	suites, err := corpus.LoadSuites(suitesDir)
	if err != nil {
		t.Fatal(err)
	}
	anchors := docAnchors(t)
	for id, d := range differences {
		if _, ok := anchors[id]; !ok {
			t.Errorf("difference %q has no anchor id=%q in %s", id, id, docPath)
		}
		if d.decision == nil && d.input == nil && d.untested == "" {
			t.Errorf("difference %q neither checks anything nor says why it cannot", id)
		}
	}
	for id, line := range anchors {
		if strings.HasPrefix(id, "diff-") && differences[id] == nil {
			t.Errorf("%s:%d documents difference %q, which the test does not know", docPath, line, id)
		}
	}

	recordings, err := filepath.Glob(filepath.Join(recordedDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recordings {
		name := strings.TrimSuffix(filepath.Base(r), ".json")
		if !slices.ContainsFunc(suites, func(s corpus.Suite) bool { return s.Name == name }) {
			t.Errorf("%s records suite %q, which no longer exists: delete it", r, name)
		}
	}

	echoDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(echoDir, "echo.rego"), []byte(corpus.EchoPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	echo := map[bool]*gatehouse{}
	for _, skip := range []bool{false, true} {
		echo[skip] = startGatehouse(t, echoDir, corpus.Config{Path: corpus.EchoPath, SkipRequestBodyParse: skip})
	}

	var total, identical int
	used := map[string]int{}
	for _, s := range suites {
		t.Run(s.Name, func(t *testing.T) {
			rec, err := corpus.ReadRecording(recordedDir, s.Name)
			if err != nil {
				t.Fatalf("no recording of OPA-Envoy's answers (run scripts/record-opa-envoy): %v", err)
			}
			answers := map[string]corpus.Answer{}
			for _, a := range rec.Cases {
				answers[a.Name] = a
			}
			policyDir := filepath.Join(t.TempDir(), "policy")
			if err := s.WritePolicyDir(policyDir); err != nil {
				t.Fatal(err)
			}
			gh := startGatehouse(t, policyDir, s.Config)
			for _, c := range s.Cases {
				total++
				t.Run(c.Name, func(t *testing.T) {
					ans, ok := answers[c.Name]
					if !ok {
						t.Fatalf("case %s is not recorded (run scripts/record-opa-envoy)", c.Name)
					}
					if ans.Fingerprint != s.Fingerprint(c) {
						t.Fatalf("the recording of %s is stale: the suite's configuration, policy or request changed since (run scripts/record-opa-envoy -only %s)", c.Name, s.Name)
					}
					var req authv3.CheckRequest
					if err := protojson.Unmarshal(c.Request, &req); err != nil {
						t.Fatalf("request: %v", err)
					}
					cc := caseContext{cfg: s.Config, anchors: anchors}
					got := gh.check(t, &req)
					echoed := echo[s.Config.SkipRequestBodyParse].check(t, &req)
					problems, same, err := compareCase(cc, c, ans, got, echoed)
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range problems {
						t.Error(p)
					}
					for _, id := range c.Differs {
						used[id]++
					}
					if same {
						identical++
					}
				})
			}
		})
	}
	for id, d := range differences {
		if d.untested == "" && !d.global && used[id] == 0 {
			t.Errorf("difference %q is exercised by no case of the corpus", id)
		}
	}
	t.Logf("OPA-Envoy corpus: %d cases in %d suites; %d identical to OPA-Envoy (global encoding differences aside), %d with a documented difference",
		total, len(suites), identical, total-identical)
}

// caseContext is what the expectations need to know about a case.
type caseContext struct {
	cfg     corpus.Config
	anchors map[string]int
}

// compareCase compares one case and returns every problem found (nil when
// Gatehouse matches OPA-Envoy up to the documented differences); same
// reports whether it matched without any per-case documented difference.
func compareCase(cc caseContext, c corpus.Case, ans corpus.Answer, got, echoed *authv3.CheckResponse) (problems []string, same bool, err error) {
	ref := func(id string) string { return fmt.Sprintf("%s:%d (#%s)", docPath, cc.anchors[id], id) }
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	want, err := opaEffect(ans)
	if err != nil {
		return nil, false, fmt.Errorf("recorded answer: %w", err)
	}
	have := effectOf(got)
	wantIn, haveIn, err := inputs(ans, echoed)
	if err != nil {
		return nil, false, err
	}
	for _, id := range globalDecision {
		if err := differences[id].decision(cc, want, have); err != nil {
			report("%s: %v", ref(id), err)
		}
	}
	for _, id := range globalInput {
		if err := differences[id].input(cc, wantIn, haveIn); err != nil {
			report("%s: %v", ref(id), err)
		}
	}

	decisionSame := reflect.DeepEqual(want, have)
	inputSame := jsonEqual(wantIn, haveIn)
	for _, id := range c.Differs {
		d := differences[id]
		if d == nil {
			return nil, false, fmt.Errorf("case lists unknown difference %q", id)
		}
		// An input difference may or may not change the policy's decision:
		// its decision hook runs only when the decisions differ.
		if d.decision != nil && !slices.Contains(globalDecision, id) && !(decisionSame && d.input != nil) {
			if decisionSame {
				report("%s: documented decision difference %q not observed: Gatehouse and OPA-Envoy agree (remove it from the case, and from the docs if it is gone)", ref(id), id)
			} else if err := d.decision(cc, want, have); err != nil {
				report("%s: %v", ref(id), err)
			}
		}
		if d.input != nil && !slices.Contains(globalInput, id) {
			if inputSame {
				report("%s: documented input difference %q not observed: the inputs agree", ref(id), id)
			} else if err := d.input(cc, wantIn, haveIn); err != nil {
				report("%s: %v", ref(id), err)
			}
		}
	}
	if !reflect.DeepEqual(want, have) {
		report("decision differs from OPA-Envoy's (not a documented difference):\nOPA-Envoy: %s\nGatehouse: %s", show(want), show(have))
	}
	if !jsonEqual(wantIn, haveIn) {
		report("input differs from OPA-Envoy's (not a documented difference):\n%s", inputDiff(wantIn, haveIn))
	}
	return problems, len(problems) == 0 && len(c.Differs) == 0 && decisionSame && inputSame, nil
}

// effect is a CheckResponse reduced to what Envoy acts on.
type effect struct {
	Allowed         bool
	GRPCError       string // OPA-Envoy only: the gRPC error code it answered instead
	HTTPStatus      int    // denied only
	Headers         []header
	Body            string
	ResponseHeaders []header
	HeadersToRemove []string
	QueryToSet      []header
	QueryToRemove   []string
	Metadata        any // dynamic_metadata as JSON, nil when absent or empty

	// Encoding details Envoy reads but which differ by design (#diff-encoding).
	grpcCode    int32
	grpcMessage string
	appends     []*bool // the append flag of each header option, in order
	hasHTTP     bool    // an ok_response or denied_response is present
}

type header struct{ Key, Value string }

func opaEffect(ans corpus.Answer) (*effect, error) {
	if ans.Error != nil {
		return &effect{GRPCError: ans.Error.Code}, nil
	}
	var resp authv3.CheckResponse
	if err := protojson.Unmarshal(ans.Response, &resp); err != nil {
		return nil, err
	}
	return effectOf(&resp), nil
}

// effectOf reduces a CheckResponse, either side's.
func effectOf(resp *authv3.CheckResponse) *effect {
	e := &effect{
		Allowed:     resp.GetStatus().GetCode() == 0,
		grpcCode:    resp.GetStatus().GetCode(),
		grpcMessage: resp.GetStatus().GetMessage(),
	}
	if md := resp.GetDynamicMetadata(); md != nil && len(md.GetFields()) > 0 {
		e.Metadata = toJSON(md.AsMap())
	}
	if ok := resp.GetOkResponse(); ok != nil {
		e.hasHTTP = true
		for _, h := range ok.GetHeaders() {
			e.Headers = append(e.Headers, header{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
			e.appends = append(e.appends, appendFlag(h.GetAppend()))
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			e.ResponseHeaders = append(e.ResponseHeaders, header{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
			e.appends = append(e.appends, appendFlag(h.GetAppend()))
		}
		e.HeadersToRemove = ok.GetHeadersToRemove()
		for _, q := range ok.GetQueryParametersToSet() {
			e.QueryToSet = append(e.QueryToSet, header{q.GetKey(), q.GetValue()})
		}
		e.QueryToRemove = ok.GetQueryParametersToRemove()
	}
	if d := resp.GetDeniedResponse(); d != nil {
		e.hasHTTP = true
		e.HTTPStatus = int(d.GetStatus().GetCode())
		for _, h := range d.GetHeaders() {
			e.Headers = append(e.Headers, header{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
			e.appends = append(e.appends, appendFlag(h.GetAppend()))
		}
		e.Body = d.GetBody()
	}
	if !e.Allowed && e.HTTPStatus == 0 {
		e.HTTPStatus = 403 // Envoy's default for a denial without a status
	}
	// Envoy applies header options in order, but the OPA-Envoy result is a
	// JSON object: its order is Go's map order, random. Compare as sets.
	for _, hs := range [][]header{e.Headers, e.ResponseHeaders, e.QueryToSet} {
		sort.Slice(hs, func(i, j int) bool { return hs[i].Key+"\x00"+hs[i].Value < hs[j].Key+"\x00"+hs[j].Value })
	}
	sort.Strings(e.HeadersToRemove)
	sort.Strings(e.QueryToRemove)
	if len(e.HeadersToRemove) == 0 {
		e.HeadersToRemove = nil
	}
	if len(e.QueryToRemove) == 0 {
		e.QueryToRemove = nil
	}
	return e
}

func appendFlag(b *wrapperspb.BoolValue) *bool {
	if b == nil {
		return nil
	}
	v := b.GetValue()
	return &v
}

func show(e *effect) string {
	b, _ := json.Marshal(e)
	return string(b)
}

// inputs decodes the input document each side built: OPA-Envoy's as
// recorded, Gatehouse's from its echo policy's answer. A side that rejected
// the request before evaluating has the input {"rejected": <status>}.
func inputs(ans corpus.Answer, echoed *authv3.CheckResponse) (want, have any, err error) {
	if ans.Input != nil {
		if want, err = decodeJSON(ans.Input); err != nil {
			return nil, nil, fmt.Errorf("recorded input: %w", err)
		}
	} else {
		var resp authv3.CheckResponse
		if err := protojson.Unmarshal(ans.EchoResponse, &resp); err != nil {
			return nil, nil, fmt.Errorf("recorded echo answer: %w", err)
		}
		want = map[string]any{"rejected": json.Number(fmt.Sprint(int32(resp.GetDeniedResponse().GetStatus().GetCode())))}
	}
	if in := echoed.GetDynamicMetadata().GetFields()["input"]; in != nil {
		if have, err = decodeJSON([]byte(in.GetStringValue())); err != nil {
			return nil, nil, fmt.Errorf("Gatehouse's echoed input: %w", err)
		}
	} else {
		have = map[string]any{"rejected": json.Number(fmt.Sprint(int32(echoed.GetDeniedResponse().GetStatus().GetCode())))}
	}
	return want, have, nil
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var x any
	err := dec.Decode(&x)
	return x, err
}

// toJSON converts a Go value (from structpb) to the decodeJSON form.
func toJSON(x any) any {
	b, _ := json.Marshal(x)
	v, _ := decodeJSON(b)
	return v
}

// jsonEqual compares JSON values; numbers by value (1e+10 equals
// 10000000000: Rego compares numbers by value too), every other type exactly.
func jsonEqual(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		x, okx := new(big.Rat).SetString(string(a))
		y, oky := new(big.Rat).SetString(string(b))
		return okx && oky && x.Cmp(y) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !jsonEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(a, b)
	}
}

// inputDiff lists the paths where two inputs differ.
func inputDiff(a, b any) string {
	var out []string
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		am, aok := a.(map[string]any)
		bm, bok := b.(map[string]any)
		if aok && bok {
			keys := map[string]bool{}
			for k := range am {
				keys[k] = true
			}
			for k := range bm {
				keys[k] = true
			}
			for k := range keys {
				av, ain := am[k]
				bv, bin := bm[k]
				switch {
				case !ain:
					out = append(out, fmt.Sprintf("%s.%s: OPA-Envoy has none, Gatehouse %s", path, k, compact(bv)))
				case !bin:
					out = append(out, fmt.Sprintf("%s.%s: OPA-Envoy %s, Gatehouse has none", path, k, compact(av)))
				default:
					walk(path+"."+k, av, bv)
				}
			}
			return
		}
		if !jsonEqual(a, b) {
			out = append(out, fmt.Sprintf("%s: OPA-Envoy %s (%T), Gatehouse %s (%T)", path, compact(a), a, compact(b), b))
		}
	}
	walk("input", a, b)
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func compact(x any) string {
	b, _ := json.Marshal(x)
	return string(b)
}
