package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// benchInput is a request-shaped input of the size the server builds.
const benchInput = `{
	"attributes": {
		"source": {"address": {"socketAddress": {"address": "10.39.15.1", "portValue": 51234}}},
		"request": {"http": {
			"id": "123", "method": "GET", "path": "/api/v1/items?x=1", "host": "api.example.com",
			"scheme": "https", "protocol": "HTTP/1.1",
			"headers": {":authority": "api.example.com", "user-agent": "curl/8", "x-tenant-id": "t1", "accept": "*/*"}
		}}
	},
	"parsed_path": ["api", "v1", "items"],
	"parsed_query": {"x": ["1"]},
	"client_ip": "10.39.15.1",
	"client_ip_source": "peer",
	"version": {"ext_authz": "v3", "encoding": "protojson"}
}`

func benchEval(b *testing.B, files map[string]string, input string) {
	b.Helper()
	e, _ := newTestEngine(b, files, Options{})
	in := mustInput(b, input)
	ctx := context.Background()
	if _, err := e.Eval(ctx, in); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Eval(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvalBoolean(b *testing.B) {
	benchEval(b, map[string]string{"policy.rego": `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "api"
}
`}, benchInput)
}

func BenchmarkEvalObject(b *testing.B) {
	benchEval(b, map[string]string{"policy.rego": `package envoy.authz

default allow := {"allowed": false, "http_status": 403, "reason": "denied"}

allow := {
	"allowed": true,
	"headers": {"x-tenant": input.attributes.request.http.headers["x-tenant-id"], "x-checked": ["a", "b"]},
	"request_headers_to_remove": ["x-debug"],
	"dynamic_metadata": {"tenant": input.attributes.request.http.headers["x-tenant-id"], "score": 1},
	"reason": "ok",
} if {
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/")
}
`}, benchInput)
}

// BenchmarkCIDRContains evaluates a bypass check against a trusted list read
// from data. The per-evaluation cost must not grow with the list: it is
// compiled once per revision, and found again by identity.
func BenchmarkCIDRContains(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
	}{{"10", 10}, {"10000", 10000}} {
		b.Run(bc.name, func(b *testing.B) {
			benchEval(b, cidrFiles(b, bc.n), `{"client_ip": "10.0.5.1"}`)
		})
	}
}

// BenchmarkCIDRCompile10000 is what every evaluation would pay for a
// 10,000-network list without the per-revision cache.
func BenchmarkCIDRCompile10000(b *testing.B) {
	in, err := InputFromJSON([]byte(cidrFiles(b, 10000)["net/data.json"]))
	if err != nil {
		b.Fatal(err)
	}
	list, err := in.Find(ast.MustParseRef("x.trusted_cidrs")[1:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compileCIDRs(list); err != nil {
			b.Fatal(err)
		}
	}
}
