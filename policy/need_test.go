package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestInputNeed(t *testing.T) {
	cases := []struct {
		name, policy, want string
	}{
		{
			name: "OPA-Envoy docs policy reads a few keys",
			policy: `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "people"
	input.parsed_query.lang[_] == "en"
}`,
			want: "attributes.request.http.method,parsed_path,parsed_query.lang",
		},
		{name: "input as a whole", policy: "package envoy.authz\n\nallow if count(input) > 0\n", want: "*"},
		{name: "walk", policy: "package envoy.authz\n\nallow if { walk(input, [p, v]); v == \"x\" }\n", want: "*"},
		{name: "variable key", policy: "package envoy.authz\n\nallow if { some k; input.attributes[k].http.method == \"GET\" }\n", want: "attributes"},
		{name: "key from input", policy: "package envoy.authz\n\nallow if input.parsed_query[input.request_path]\n", want: "parsed_query,request_path"},
		{name: "with input", policy: "package envoy.authz\n\nx if input.a\n\nallow if x with input as {\"a\": true}\n", want: "*"},
		{name: "with input key", policy: "package envoy.authz\n\nx if input.a.b\n\nallow if x with input.a as {\"b\": true}\n", want: "a"},
		{name: "every and some", policy: "package envoy.authz\n\nallow if { every h in input.attributes.request.http.headers { h != \"\" } }\n", want: "attributes.request.http.headers"},
		{name: "library not used: its reads do not count", policy: "package envoy.authz\n\nallow if input.client_ip == \"10.0.0.1\"\n", want: "client_ip"},
		{
			name:   "library used: its reads count",
			policy: "package envoy.authz\n\nimport data.gatehouse.lib\n\nallow if lib.trusted_ip\n",
			want:   "attributes.destination.address.socketAddress.portValue,attributes.request.http.headers,attributes.request.http.host,attributes.request.http.method,attributes.request.http.path,attributes.source.address.socketAddress.address,attributes.source.principal,client_ip,client_ip_fallback,jwt,request_path",
		},
		{name: "native decision as a fact", policy: "package envoy.authz\n\nallow := input.gatehouse.decision\n", want: "gatehouse.decision"},
		{
			name:   "dynamic data ref counts the library",
			policy: "package other\n\nx if data[input.k].y == 1\n",
			want:   "attributes.destination.address.socketAddress.portValue,attributes.request.http.headers,attributes.request.http.host,attributes.request.http.method,attributes.request.http.path,attributes.source.address.socketAddress.address,attributes.source.principal,client_ip,client_ip_fallback,jwt,k,request_path",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, map[string]string{"p.rego": tc.policy}, Options{})
			if got := e.current.Load().need.String(); got != tc.want {
				t.Errorf("need = %q\nwant   %q", got, tc.want)
			}
		})
	}
}

// TestNativeDecisionAsInputFact: a custom policy builds on the configured
// decision through input.gatehouse.decision without paying for its Rego.
func TestNativeDecisionAsInputFact(t *testing.T) {
	rules := &Rules{TrustedCIDRs: []string{"10.0.0.0/8"}, Providers: []string{"corp"}}
	e, _ := newTestEngine(t, map[string]string{"p.rego": `package envoy.authz

allow := input.gatehouse.decision if input.request_path != "/public"

allow := {"allowed": true, "reason": "public"} if input.request_path == "/public"
`}, Options{Rules: rules})
	if e.Native() {
		t.Fatal("a custom policy must not decide natively")
	}
	cases := []struct {
		name   string
		facts  Facts
		path   string
		reason string
		status int
	}{
		{name: "configured decision: no token", path: "/x", reason: ReasonTokenMissing, status: 401},
		{name: "configured decision: valid", path: "/x", facts: Facts{Token: &TokenFacts{Valid: true}}, reason: ReasonTokenValid},
		{name: "custom rule on top", path: "/public", reason: "public"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.facts.Path = tc.path
			d, err := e.Decide(context.Background(), &tc.facts, pathInput(tc.path))
			if err != nil {
				t.Fatal(err)
			}
			if d.Reason != tc.reason || d.HTTPStatus != tc.status {
				t.Errorf("decision = %+v, want reason %s status %d", d, tc.reason, tc.status)
			}
		})
	}
}

type pathInput string

func (p pathInput) BuildInput(need *Need) (ast.Object, error) {
	in := ast.NewObject()
	if need.Child("request_path") != nil {
		in.Insert(ast.StringTerm("request_path"), ast.StringTerm(string(p)))
	}
	return in, nil
}
