package authz

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

// logEvent is the decision event of req as the workers build it, with the
// facts a check establishes (a client IP, a verified token) set, so that
// leaving them out is tested. ok is false when Gatehouse cannot read req.
func logEvent(req *authv3.CheckRequest, maxParseBody int) (ev DecisionEvent, ok bool) {
	r, err := newRequest(req, &DefaultLimits)
	if err != nil {
		return DecisionEvent{}, false
	}
	r.buildFacts(clientip.Result{Addr: netip.MustParseAddr("198.51.100.7"), Source: clientip.SourcePeer}, &jwt.Result{Valid: true, Provider: "p", Claims: []byte(`{"sub":"alice"}`)})
	r.maxParseBody, r.maxJSONDepth = maxParseBody, DefaultLimits.MaxJSONDepth
	return DecisionEvent{req: r}, true
}

// eventJSON is ev's input both ways: Input converted as OPA's decision log
// plugin converts it (ast.JSON, then encoding/json), and AppendInputJSON;
// both decoded. An input that cannot be built is the error text, which must
// be the same too.
func eventJSON(t testing.TB, ev DecisionEvent) (viaInput, direct any) {
	t.Helper()
	decode := func(b []byte) any {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var x any
		if err := dec.Decode(&x); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, b)
		}
		if dec.More() {
			t.Fatalf("more than one JSON value: %s", b)
		}
		return x
	}
	in, err := ev.Input()
	if err != nil {
		viaInput = "error: " + err.Error()
	} else {
		x, err := ast.JSON(in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		viaInput = decode(b)
	}
	b, err := ev.AppendInputJSON([]byte("prefix"))
	if err != nil {
		return viaInput, "error: " + err.Error()
	}
	if !bytes.HasPrefix(b, []byte("prefix")) {
		t.Fatalf("AppendInputJSON did not append: %s", b)
	}
	return viaInput, decode(b[len("prefix"):])
}

// TestInputJSONMatchesInput: the decision log's input written straight as
// JSON (AppendInputJSON) is, once decoded, the document Input builds as
// Rego values, as OPA's decision log plugin would encode it: on every
// request of the OPA-Envoy corpus, with body parsing on and off, and on
// requests that reach the special cases (rebuilt and upper-case headers, a
// Struct, bytes, a body over the limit, a truncated one, strings JSON must
// escape). Neither carries Gatehouse's facts.
func TestInputJSONMatchesInput(t *testing.T) {
	type namedReq struct {
		name string
		req  *authv3.CheckRequest
	}
	var reqs []namedReq
	suites, err := corpus.LoadSuites(filepath.Join("..", "test", "compat", "testdata", "suites"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range suites {
		for _, c := range s.Cases {
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(c.Request, &req); err != nil {
				t.Fatalf("%s/%s: %v", s.Name, c.Name, err)
			}
			reqs = append(reqs, namedReq{s.Name + "/" + c.Name, &req})
		}
	}
	if len(reqs) < 100 {
		t.Fatalf("only %d corpus requests", len(reqs))
	}
	headerMap := httpReq("/a?b=c", nil, "")
	headerMap.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "X-Raw", RawValue: []byte("raw")}, {Key: "x-raw", Value: "again"}, {Key: "Content-Type", Value: "text/plain"},
	}}
	truncated := httpReq("/t", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"a":1}`)
	escapes := httpReq("/caf%C3%A9/%22q%22?k=%0A%5C%3C%3E%26&k=%E2%80%A8", map[string]string{"x-ctl": "a\x01\"\\\t<>&\u2028", "content-type": "application/x-www-form-urlencoded"}, "a=1&a=%3Cb%3E&c=")
	multipart := httpReq("/m", map[string]string{"content-type": "multipart/form-data; boundary=XYZ"},
		"--XYZ\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\":[1,2]}\r\n--XYZ\r\nContent-Disposition: form-data; name=\"s\"\r\n\r\nplain\r\n--XYZ--\r\n")
	reqs = append(reqs,
		namedReq{"rich", richRequest()},
		namedReq{"header map", headerMap},
		namedReq{"upper-case headers", httpReq("/u", map[string]string{"X-Upper": "1", "x-upper": "2", ":path": "/u"}, "")},
		namedReq{"truncated body", truncated},
		namedReq{"escapes", escapes},
		namedReq{"multipart", multipart},
		namedReq{"no attributes", &authv3.CheckRequest{}},
		namedReq{"root path", httpReq("/", nil, "")},
	)
	for _, maxParseBody := range []int{DefaultMaxParseBodyBytes, 0, 4} {
		for _, nr := range reqs {
			t.Run(fmt.Sprintf("%s/parse%d", nr.name, maxParseBody), func(t *testing.T) {
				ev, ok := logEvent(nr.req, maxParseBody)
				if !ok {
					t.Skip("refused before any input")
				}
				viaInput, direct := eventJSON(t, ev)
				if !reflect.DeepEqual(viaInput, direct) {
					t.Fatalf("AppendInputJSON differs from Input:\nInput:           %v\nAppendInputJSON: %v", viaInput, direct)
				}
				if m, ok := direct.(map[string]any); ok {
					for k := range m {
						if !containsString(opaEnvoyInputKeys, k) {
							t.Errorf("input key %q is not one OPA-Envoy builds", k)
						}
					}
					if _, ok := m["version"]; !ok {
						t.Errorf("no version key: %v", m)
					}
				}
			})
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// FuzzInputJSON: on any CheckRequest Gatehouse can read (decoded from
// fuzzed wire bytes), AppendInputJSON is Input as OPA's plugin encodes it.
func FuzzInputJSON(f *testing.F) {
	for _, req := range []*authv3.CheckRequest{richRequest(), httpReq("/a/b?x=1&y=%20", map[string]string{"content-type": "application/json"}, `{"n":[1e3,true,null,"s"]}`)} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			return
		}
		ev, ok := logEvent(&req, DefaultMaxParseBodyBytes)
		if !ok {
			return
		}
		viaInput, direct := eventJSON(t, ev)
		if !reflect.DeepEqual(viaInput, direct) {
			t.Fatalf("AppendInputJSON differs from Input:\nInput:           %v\nAppendInputJSON: %v", viaInput, direct)
		}
	})
}

// TestAppendValueJSON: Rego values the body parser or a Struct may produce,
// sets and non-string keys included, are written as ast.JSON and
// encoding/json write them.
func TestAppendValueJSON(t *testing.T) {
	for _, lit := range []string{
		`null`, `true`, `1.5e3`, `"a\"b\u0001<>"`, `[1, [2, {"x": null}], "s"]`, `{"a": {"b": [true, false]}}`,
		`{"s", "a", 1}`, `{1: "one", "2": "two"}`, `{}`, `[]`,
	} {
		t.Run(lit, func(t *testing.T) {
			v := mustTerm(t, lit)
			x, err := ast.JSON(v)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(x)
			got, err := appendValueJSON(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			if err := json.Unmarshal(want, &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &b); err != nil {
				t.Fatalf("%s: %v", got, err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("got %s, want %s", got, want)
			}
		})
	}
	if !strings.Contains(string(appendValueJSONOrNull(nil, ast.MustParseTerm(`{"a": 1}`).Value)), `"a":1`) {
		t.Fatal("appendValueJSONOrNull lost the value")
	}
}
