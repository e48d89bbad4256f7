package policy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// manyRules is a policy whose decision reads 40 helper rules, more than the
// virtual cache searches linearly.
func manyRules() string {
	var b strings.Builder
	b.WriteString("package envoy.authz\n\ndefault allow := false\n\n")
	var refs []string
	for i := range 40 {
		fmt.Fprintf(&b, "r%d if input.n > %d\n", i, i-100)
		refs = append(refs, fmt.Sprintf("r%d", i))
	}
	fmt.Fprintf(&b, "allow if {\n\t%s\n}\n", strings.Join(refs, "\n\t"))
	return b.String()
}

// TestQueryMatchesRego evaluates policies with the engine's direct evaluator
// and with OPA's rego package (what OPA and OPA-Envoy run), and requires the
// same outcome: the same value, both undefined, or both failing.
func TestQueryMatchesRego(t *testing.T) {
	cases := []struct {
		name   string
		policy string
		inputs []string
		strict bool
	}{
		{"docs policy", testutil.DocsPolicy, []string{
			`{"attributes":{"request":{"http":{"method":"GET"}}},"parsed_path":["people"],"parsed_query":{"lang":["en","fr"]}}`,
			`{"attributes":{"request":{"http":{"method":"GET"}}},"parsed_path":["people"],"parsed_query":{"lang":["en","xx"]}}`,
			`{"attributes":{"request":{"http":{"method":"GET"}}},"parsed_path":["people","42"]}`,
			`{"attributes":{"request":{"http":{"method":"GET"}}},"parsed_path":["people","x"]}`,
			`{"attributes":{"request":{"http":{"method":"DELETE"}}},"parsed_path":["people"]}`,
			`{}`,
		}, false},
		{"with replaces input and data in a nested frame", `package envoy.authz

default allow := false

admin if input.role == "admin"

limit := data.limits.max

allow if {
	not admin
	admin with input.role as "admin"
	limit == 3 with data.limits.max as 3
	not admin
}
`, []string{`{"role":"user"}`, `{"role":"admin"}`}, false},
		{"a function over many distinct arguments", `package envoy.authz

double(x) := 2 * x

allow := {"allowed": true, "headers": {"x-sum": format_int(sum([double(i) | some i in numbers.range(1, input.n)]), 10)}} if {
	double(5) == double(5)
}
`, []string{`{"n":100}`, `{"n":3}`, `{}`}, false},
		{"forty helper rules", manyRules(), []string{`{"n":0}`, `{"n":-90}`}, false},
		{"partial set", `package envoy.authz

deny contains "no user" if not input.user
deny contains "banned" if input.user == "mallory"

allow := {"allowed": count(deny) == 0, "body": concat(",", sort([m | some m in deny]))}
`, []string{`{"user":"alice"}`, `{"user":"mallory"}`, `{}`}, false},
		{"else chain", `package envoy.authz

allow := {"allowed": true} if input.a
else := {"allowed": false, "http_status": 401} if input.b
else := {"allowed": false, "http_status": 403}
`, []string{`{"a":true}`, `{"b":true}`, `{}`}, false},
		{"conflicting complete rules fail", `package envoy.authz

allow := true if input.x
allow := false if input.y
`, []string{`{"x":true,"y":true}`, `{"x":true}`, `{}`}, false},
		{"built-in error, not strict: undefined", `package envoy.authz

default allow := false

allow if regex.match(input.re, "x")
`, []string{`{"re":"["}`, `{"re":"x"}`}, false},
		{"built-in error, strict: fails", `package envoy.authz

default allow := false

allow if regex.match(input.re, "x")
`, []string{`{"re":"["}`, `{"re":"x"}`}, true},
		{"gatehouse.cidr_contains", `package envoy.authz

default allow := false

allow if gatehouse.cidr_contains(input.cidrs, input.ip)
`, []string{`{"cidrs":["10.0.0.0/8"],"ip":"10.1.2.3"}`, `{"cidrs":["10.0.0.0/8"],"ip":"11.1.2.3"}`, `{"cidrs":["nope"],"ip":"10.1.2.3"}`}, false},
		{"gatehouse.cidr_contains, strict", `package envoy.authz

default allow := false

allow if gatehouse.cidr_contains(input.cidrs, input.ip)
`, []string{`{"cidrs":["nope"],"ip":"10.1.2.3"}`}, true},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, map[string]string{"policy.rego": tc.policy}, Options{StrictBuiltinErrors: tc.strict})
			pq, err := rego.New(
				rego.Query("data.envoy.authz.allow"),
				rego.Module("policy.rego", tc.policy),
				rego.StrictBuiltinErrors(tc.strict),
				newCIDRCache().option(),
			).PrepareForEval(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range tc.inputs {
				input := mustInput(t, in)
				want, wantDefined, wantErr := evalRego(ctx, pq, input)
				rev := e.current.Load()
				got, defined, err := rev.query.eval(ctx, input, nil, nil)
				switch {
				case (err != nil) != (wantErr != nil):
					t.Errorf("input %s: error %v, rego's %v", in, err, wantErr)
				case defined != wantDefined:
					t.Errorf("input %s: defined %v (%v), rego's %v (%v)", in, defined, got, wantDefined, want)
				case defined && got.Compare(want) != 0:
					t.Errorf("input %s: %v, rego's %v", in, got, want)
				}
			}
		})
	}
}

func evalRego(ctx context.Context, pq rego.PreparedEvalQuery, input ast.Value) (ast.Value, bool, error) {
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil || len(rs) == 0 {
		return nil, false, err
	}
	v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value)
	return v, true, err
}

// TestQueryCancel: a cancelled evaluation stops with an error, not a result.
func TestQueryCancel(t *testing.T) {
	e, _ := newTestEngine(t, map[string]string{"policy.rego": `package envoy.authz

allow if {
	some i in numbers.range(1, 100000000)
	i < 0
}
`}, Options{EvalTimeout: 50_000_000}) // 50ms
	_, err := e.Eval(context.Background(), mustInput(t, `{}`))
	var ee *EvalError
	if !errors.As(err, &ee) || ee.Reason != ReasonTimeout {
		t.Fatalf("err = %v, want an EvalError with reason %s", err, ReasonTimeout)
	}
}

func TestVCache(t *testing.T) {
	ref := func(s string) ast.Ref { return ast.MustParseRef(s) }
	c := vcachePool.New().(*vcache)
	if v, undef := c.Get(ref("data.a")); v != nil || undef {
		t.Fatalf("empty cache: %v %v", v, undef)
	}
	c.Put(ref("data.a"), ast.StringTerm("x"))
	c.Put(ref("data.u"), nil)
	if v, _ := c.Get(ref("data.a")); v == nil || v.Value.Compare(ast.String("x")) != 0 {
		t.Fatalf("data.a = %v", v)
	}
	if v, undef := c.Get(ref("data.u")); v != nil || !undef {
		t.Fatalf("data.u: %v %v, want undefined", v, undef)
	}
	// A caller reusing the slice it passed must not change the key.
	buf := ref("data.b.c")
	c.Put(buf, ast.StringTerm("bc"))
	buf[2] = ast.StringTerm("z")
	if v, _ := c.Get(ref("data.b.c")); v == nil {
		t.Fatal("data.b.c lost after the caller reused its slice")
	}
	if v, _ := c.Get(ref("data.b.z")); v != nil {
		t.Fatal("data.b.z found: the key aliased the caller's slice")
	}
	// A pushed frame starts empty and its entries go with it.
	c.Push()
	if v, _ := c.Get(ref("data.a")); v != nil {
		t.Fatal("a new frame sees the outer frame's entries")
	}
	c.Put(ref("data.a"), ast.StringTerm("inner"))
	c.Pop()
	if v, _ := c.Get(ref("data.a")); v == nil || v.Value.Compare(ast.String("x")) != 0 {
		t.Fatalf("after Pop, data.a = %v, want the outer value", v)
	}
	// Past the linear size, lookups go through the index.
	for i := range 100 {
		c.Put(ast.Ref{ast.DefaultRootDocument, ast.StringTerm("f"), ast.IntNumberTerm(i)}, ast.IntNumberTerm(2*i))
	}
	for i := range 100 {
		v, _ := c.Get(ast.Ref{ast.DefaultRootDocument, ast.StringTerm("f"), ast.IntNumberTerm(i)})
		if v == nil || v.Value.Compare(ast.IntNumberTerm(2*i).Value) != 0 {
			t.Fatalf("f(%d) = %v", i, v)
		}
	}
	if v, _ := c.Get(ref("data.a")); v == nil {
		t.Fatal("data.a lost once the frame was indexed")
	}
	c.Put(ref("data.a"), ast.StringTerm("y"))
	if v, _ := c.Get(ref("data.a")); v.Value.Compare(ast.String("y")) != 0 {
		t.Fatalf("data.a = %v after an update", v)
	}
	if n := len(c.Keys()); n != 102 {
		t.Fatalf("%d keys with values, want 102", n)
	}
	// Released and reused: nothing survives.
	c.release()
	c = vcachePool.Get().(*vcache)
	defer c.release()
	if v, _ := c.Get(ref("data.a")); v != nil {
		t.Fatal("a reused cache kept an entry")
	}
	if v, _ := c.Get(ast.Ref{ast.DefaultRootDocument, ast.StringTerm("f"), ast.IntNumberTerm(7)}); v != nil {
		t.Fatal("a reused cache kept an indexed entry")
	}
}

// TestEvalTimeoutReachesNetworkCalls: a built-in blocked on the network
// makes no cancellation checks, so a policy that calls one, directly, through
// a function mocked with it, or through a schema's remote $ref, gets the
// evaluation's deadline in the built-in's context.
func TestEvalTimeoutReachesNetworkCalls(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"type": "object"}`))
	}))
	defer slow.Close()
	for _, tc := range []struct{ name, policy string }{
		{"http.send", `package envoy.authz

allow if http.send({"method": "GET", "url": input.url, "timeout": "30s", "raise_error": true}).status_code == 200
`},
		{"a function mocked with http.send", `package envoy.authz

fetch(req) := {"status_code": 500}

allow if {
	r := fetch({"method": "GET", "url": input.url, "timeout": "30s"}) with fetch as http.send
	r.status_code == 200
}
`},
		{"a schema's remote $ref", `package envoy.authz

allow if {
	[ok, _] := json.match_schema({}, {"$ref": input.url})
	ok
}
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, map[string]string{"policy.rego": tc.policy},
				Options{EvalTimeout: 200 * time.Millisecond, AllowNet: []string{"127.0.0.1"}})
			start := time.Now()
			d, err := e.Eval(context.Background(), mustInput(t, `{"url": "`+slow.URL+`"}`))
			if err == nil && d.Allowed {
				t.Fatalf("allowed after %s: the call outlived the 200ms evaluation timeout", time.Since(start))
			}
			if reason := evalReason(t, err); reason != ReasonTimeout && reason != ReasonUndefined {
				t.Fatalf("err = %v, want a timeout (or the decision undefined once the call gave up)", err)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("the call ran %s, past the 200ms evaluation timeout", elapsed)
			}
		})
	}
}

// TestEvalStopsWhenTheClientCancels: a request given up on mid-evaluation
// stops the evaluation.
func TestEvalStopsWhenTheClientCancels(t *testing.T) {
	e, _ := newTestEngine(t, map[string]string{"policy.rego": `package envoy.authz

allow if {
	some i in numbers.range(1, 100000000)
	i < 0
}
`}, Options{EvalTimeout: -1})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := e.Eval(ctx, mustInput(t, `{}`))
	if evalReason(t, err) != ReasonError || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a cancelled evaluation", err)
	}
}
