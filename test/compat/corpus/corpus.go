// Package corpus reads and writes the OPA-Envoy compatibility corpus: suites
// of policies and CheckRequests taken from OPA-Envoy's own tests and docs
// examples, and the answers the real OPA-Envoy gave to them, recorded by
// test/compat/record. The differential test in test/compat replays the same
// suites through Gatehouse and compares.
package corpus

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// EchoPath is the decision path of the echo policy: it allows every request
// and returns the input it saw, JSON-encoded, in dynamic_metadata.input. JSON
// keeps every value's type (a number stays a number, a string a string), which
// is what the input comparison needs.
const EchoPath = "gatehouse_compat/echo/allow"

// EchoPolicy is the echo policy's module. It parses as Rego v0 and v1.
const EchoPolicy = `package gatehouse_compat.echo

allow := {"allowed": true, "dynamic_metadata": {"input": json.marshal(input)}}
`

// DecisionIDPlaceholder replaces the random decision_id OPA-Envoy adds to
// every answer's dynamic_metadata, so recordings are reproducible.
const DecisionIDPlaceholder = "<decision-id>"

// Config is the OPA-Envoy configuration a suite runs under.
type Config struct {
	// Path is plugins.envoy_ext_authz_grpc.path, e.g. "envoy/authz/allow".
	Path string `json:"path"`
	// DryRun is plugins.envoy_ext_authz_grpc.dry-run.
	DryRun bool `json:"dry_run,omitempty"`
	// SkipRequestBodyParse is plugins.envoy_ext_authz_grpc.skip-request-body-parse.
	SkipRequestBodyParse bool `json:"skip_request_body_parse,omitempty"`
	// RegoVersion is "v1" (default) or "v0" (OPA-Envoy run with --v0-compatible).
	RegoVersion string `json:"rego_version,omitempty"`
}

// Case is one CheckRequest of a suite.
type Case struct {
	Name string `json:"name"`
	// Source names where the case comes from (an OPA-Envoy test or doc example).
	Source string `json:"source,omitempty"`
	// Differs lists the documented differences (ids of anchors in
	// docs/policies.md) that apply to this case beyond the global ones.
	Differs []string `json:"differs,omitempty"`
	// Request is the CheckRequest in protobuf JSON.
	Request json.RawMessage `json:"request"`
}

// Suite is a policy (with its data files), a configuration and the requests
// sent to it.
type Suite struct {
	Name   string
	Source string
	Config Config
	// Files are the policy and data files by path relative to the policy
	// directory ("policy.rego", "data.json", "x/data.json").
	Files map[string]string
	Cases []Case
}

// LoadSuites reads every *.txtar suite in dir, sorted by name.
func LoadSuites(dir string) ([]Suite, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var suites []Suite
	for _, name := range names {
		s, err := loadSuite(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		suites = append(suites, s)
	}
	return suites, nil
}

// loadSuite parses a txtar-style archive: a comment, then files introduced by
// "-- name --" lines. config.json and cases.json describe the suite; every
// file under policy/ is a policy or data file.
func loadSuite(name string) (Suite, error) {
	raw, err := os.ReadFile(name)
	if err != nil {
		return Suite{}, err
	}
	s := Suite{Name: strings.TrimSuffix(filepath.Base(name), ".txtar"), Files: map[string]string{}}
	comment, files := parseArchive(string(raw))
	s.Source = strings.TrimSpace(comment)
	cfg, ok := files["config.json"]
	if !ok {
		return Suite{}, fmt.Errorf("no config.json section")
	}
	if err := strictUnmarshal([]byte(cfg), &s.Config); err != nil {
		return Suite{}, fmt.Errorf("config.json: %w", err)
	}
	if s.Config.Path == "" {
		return Suite{}, fmt.Errorf("config.json: path is required")
	}
	cases, ok := files["cases.json"]
	if !ok {
		return Suite{}, fmt.Errorf("no cases.json section")
	}
	if err := strictUnmarshal([]byte(cases), &s.Cases); err != nil {
		return Suite{}, fmt.Errorf("cases.json: %w", err)
	}
	seen := map[string]bool{}
	for _, c := range s.Cases {
		if c.Name == "" || seen[c.Name] {
			return Suite{}, fmt.Errorf("cases.json: case name %q empty or repeated", c.Name)
		}
		seen[c.Name] = true
	}
	for path, body := range files {
		if rel, ok := strings.CutPrefix(path, "policy/"); ok {
			s.Files[rel] = body
		}
	}
	if len(s.Files) == 0 {
		return Suite{}, fmt.Errorf("no policy/ files")
	}
	return s, nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func parseArchive(s string) (comment string, files map[string]string) {
	files = map[string]string{}
	var cur string
	var buf strings.Builder
	inFile := false
	flush := func() {
		if inFile {
			files[cur] = buf.String()
		} else {
			comment = buf.String()
		}
		buf.Reset()
	}
	for _, line := range strings.SplitAfter(s, "\n") {
		trimmed := strings.TrimRight(line, "\n")
		if strings.HasPrefix(trimmed, "-- ") && strings.HasSuffix(trimmed, " --") && len(trimmed) > 6 {
			flush()
			cur, inFile = strings.TrimSpace(trimmed[3:len(trimmed)-3]), true
			continue
		}
		buf.WriteString(line)
	}
	flush()
	return comment, files
}

// Fingerprint is a hash of everything that shapes OPA-Envoy's answer to c:
// the suite's configuration, its policy and data files, and the request.
func (s Suite) Fingerprint(c Case) string {
	h := sha256.New()
	cfg, _ := json.Marshal(s.Config)
	h.Write(cfg)
	names := make([]string, 0, len(s.Files))
	for name := range s.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(h, "\x00%s\x00%d\x00%s", name, len(s.Files[name]), s.Files[name])
	}
	var req bytes.Buffer
	if err := json.Compact(&req, c.Request); err != nil {
		req.Write(c.Request)
	}
	h.Write([]byte{0})
	h.Write(req.Bytes())
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// WritePolicyDir writes the suite's policy and data files under dir.
func (s Suite) WritePolicyDir(dir string) error {
	for rel, body := range s.Files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Recording is what the real OPA-Envoy answered to one suite.
type Recording struct {
	// OPAEnvoy is the version line of the binary that answered.
	OPAEnvoy string   `json:"opa_envoy"`
	Suite    string   `json:"suite"`
	Cases    []Answer `json:"cases"`
}

// Answer is OPA-Envoy's answer to one case.
type Answer struct {
	Name string `json:"name"`
	// Fingerprint identifies what was asked (see Suite.Fingerprint): a
	// recording whose fingerprint differs from the suite's is stale.
	Fingerprint string `json:"fingerprint"`
	// Response is the CheckResponse in protobuf JSON; absent when OPA-Envoy
	// answered a gRPC error.
	Response json.RawMessage `json:"response,omitempty"`
	// Error is the gRPC error OPA-Envoy answered instead, if any.
	Error *GRPCError `json:"error,omitempty"`
	// Input is the input document OPA-Envoy built for the request, as the
	// echo policy returned it; absent when OPA-Envoy rejected the request
	// before evaluating (a 400).
	Input json.RawMessage `json:"input,omitempty"`
	// EchoResponse is the echo policy's whole answer when it was not an allow
	// carrying the input (the request was rejected before evaluation).
	EchoResponse json.RawMessage `json:"echo_response,omitempty"`
}

// GRPCError is a gRPC status returned as an error.
type GRPCError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// RecordingPath is where the recording of suite lives under dir.
func RecordingPath(dir, suite string) string {
	return filepath.Join(dir, suite+".json")
}

// ReadRecording reads one suite's recording.
func ReadRecording(dir, suite string) (Recording, error) {
	var r Recording
	raw, err := os.ReadFile(RecordingPath(dir, suite))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("%s: %w", RecordingPath(dir, suite), err)
	}
	return r, nil
}

// WriteRecording writes one suite's recording, indented for review.
func WriteRecording(dir string, r Recording) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(RecordingPath(dir, r.Suite), append(raw, '\n'), 0o644)
}
