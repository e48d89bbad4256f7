package compat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

// TestComparatorCatchesDifferences proves the differential test can fail:
// Gatehouse's real answers to a few corpus cases pass unchanged, and each
// mutation of one field of the answer or of the input is reported.
func TestComparatorCatchesDifferences(t *testing.T) {
	suites, err := corpus.LoadSuites(suitesDir)
	if err != nil {
		t.Fatal(err)
	}
	anchors := docAnchors(t)
	echoDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(echoDir, "echo.rego"), []byte(corpus.EchoPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	echo := startGatehouse(t, echoDir, corpus.Config{Path: corpus.EchoPath})
	servers := map[string]*gatehouse{}
	for _, s := range suites {
		switch s.Name {
		case "result_keys", "attributes_types", "internal_errors", "path_query":
			dir := filepath.Join(t.TempDir(), "policy")
			if err := s.WritePolicyDir(dir); err != nil {
				t.Fatal(err)
			}
			servers[s.Name] = startGatehouse(t, dir, s.Config)
		}
	}

	// answer runs one corpus case through Gatehouse.
	answer := func(t *testing.T, suite, name string) (caseContext, corpus.Case, corpus.Answer, *authv3.CheckResponse, *authv3.CheckResponse) {
		t.Helper()
		for _, s := range suites {
			if s.Name != suite {
				continue
			}
			gh := servers[suite]
			if gh == nil {
				t.Fatalf("no server started for suite %s", suite)
			}
			rec, err := corpus.ReadRecording(recordedDir, suite)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range s.Cases {
				if c.Name != name {
					continue
				}
				var req authv3.CheckRequest
				if err := protojson.Unmarshal(c.Request, &req); err != nil {
					t.Fatal(err)
				}
				return caseContext{cfg: s.Config, anchors: anchors}, c, rec.Cases[i], gh.check(t, &req), echo.check(t, &req)
			}
		}
		t.Fatalf("no case %s/%s", suite, name)
		return caseContext{}, corpus.Case{}, corpus.Answer{}, nil, nil
	}

	ok := func(resp *authv3.CheckResponse) *authv3.OkHttpResponse { return resp.GetOkResponse() }
	denied := func(resp *authv3.CheckResponse) *authv3.DeniedHttpResponse { return resp.GetDeniedResponse() }
	header := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	// editInput rewrites the input the echo policy returned.
	editInput := func(edit func(in map[string]any)) func(*authv3.CheckResponse) {
		return func(resp *authv3.CheckResponse) {
			f := resp.DynamicMetadata.Fields["input"]
			in, err := decodeJSON([]byte(f.GetStringValue()))
			if err != nil {
				t.Fatal(err)
			}
			edit(in.(map[string]any))
			b, _ := json.Marshal(in)
			resp.DynamicMetadata.Fields["input"] = structpb.NewStringValue(string(b))
		}
	}
	http := func(in map[string]any) map[string]any { return httpOf(in) }

	cases := []struct {
		suite, name string
		differs     []string                    // replaces the case's differs, when set
		answer      func(*authv3.CheckResponse) // mutates Gatehouse's answer; nil: unchanged
		input       func(*authv3.CheckResponse) // mutates the echoed input; nil: unchanged
		want        string                      // a substring of one problem; "" = no problem
	}{
		{suite: "result_keys", name: "everything_allow"},
		{suite: "result_keys", name: "status_401"},
		{suite: "attributes_types", name: "rich_request"},
		{suite: "internal_errors", name: "undefined"},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { ok(r).Headers = append(ok(r).Headers, header("x-extra", "1")) }},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { ok(r).Headers[0].Header.Value += "!" }},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { ok(r).HeadersToRemove = nil }},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { ok(r).ResponseHeadersToAdd[0].Header.Key = "x-other" }},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) {
				ok(r).QueryParametersToSet = append(ok(r).QueryParametersToSet, &corev3.QueryParameter{Key: "a", Value: "b"})
			}},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) {
				ok(r).QueryParametersToRemove = append(ok(r).QueryParametersToRemove, "x")
			}},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { r.DynamicMetadata.Fields["user"] = structpb.NewStringValue("mallory") }},
		{suite: "result_keys", name: "everything_allow", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { r.Status.Code = 7 }},
		{suite: "result_keys", name: "status_401", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { denied(r).Status.Code = typev3.StatusCode_Forbidden }},
		{suite: "result_keys", name: "status_401", want: "decision differs",
			answer: func(r *authv3.CheckResponse) { denied(r).Body = "other" }},
		{suite: "result_keys", name: "status_401", want: "decision differs",
			answer: func(r *authv3.CheckResponse) {
				hs := denied(r).Headers
				for i, h := range hs {
					if h.GetHeader().GetKey() == "www-authenticate" {
						denied(r).Headers = append(hs[:i:i], hs[i+1:]...)
						break
					}
				}
			}},
		{suite: "result_keys", name: "status_401", want: "#diff-encoding",
			answer: func(r *authv3.CheckResponse) { denied(r).Headers[0].Append = nil }},
		{suite: "result_keys", name: "status_401", want: "#diff-decision-id",
			answer: func(r *authv3.CheckResponse) { delete(r.DynamicMetadata.Fields, "decision_id") }},
		{suite: "attributes_types", name: "rich_request", want: `request.http.size: OPA-Envoy 1234567890123 (json.Number), Gatehouse "1234567890123" (string)`,
			input: editInput(func(in map[string]any) { http(in)["size"] = "1234567890123" })},
		{suite: "attributes_types", name: "rich_request", want: "input.attributes.request.time",
			input: editInput(func(in map[string]any) {
				in["attributes"].(map[string]any)["request"].(map[string]any)["time"] = "2026-01-02T03:04:05.123456789Z"
			})},
		{suite: "attributes_types", name: "rich_request", want: "socketAddress.protocol",
			input: editInput(func(in map[string]any) {
				dst := in["attributes"].(map[string]any)["destination"].(map[string]any)
				dst["address"].(map[string]any)["socketAddress"].(map[string]any)["protocol"] = "UDP"
			})},
		{suite: "attributes_types", name: "rich_request", want: "input.parsed_body",
			input: editInput(func(in map[string]any) { delete(in, "parsed_body") })},
		{suite: "attributes_types", name: "rich_request", want: "#diff-gatehouse-facts",
			input: editInput(func(in map[string]any) { delete(in, "client_ip") })},
		{suite: "internal_errors", name: "undefined", want: "#diff-fail-closed",
			answer: func(r *authv3.CheckResponse) { r.Status.Code, r.HttpResponse = 0, &authv3.CheckResponse_OkResponse{} }},
		{suite: "path_query", name: "plain", differs: []string{"diff-fragment"}, want: `"diff-fragment" not observed`},
	}
	for _, tc := range cases {
		label := tc.suite + "/" + tc.name + " " + tc.want
		t.Run(label, func(t *testing.T) {
			cc, c, ans, got, echoed := answer(t, tc.suite, tc.name)
			got, echoed = proto.Clone(got).(*authv3.CheckResponse), proto.Clone(echoed).(*authv3.CheckResponse)
			if tc.answer != nil {
				tc.answer(got)
			}
			if tc.input != nil {
				tc.input(echoed)
			}
			if tc.differs != nil {
				c.Differs = tc.differs
			}
			problems, _, err := compareCase(cc, c, ans, got, echoed)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(problems) > 0 {
					t.Fatalf("Gatehouse's unchanged answer must pass: %s", strings.Join(problems, "\n"))
				}
				return
			}
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Fatalf("mutation not reported as %q; problems: %q", tc.want, problems)
		})
	}
}
