package policy

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestResultMapping(t *testing.T) {
	tests := []struct {
		name    string
		rule    string // the body of the decision rule, as `allow := <rule>`
		want    Decision
		reason  string // expected EvalError reason, "" for success
		errKeys []string
	}{
		{name: "boolean true", rule: `true`, want: Decision{Allowed: true}},
		{name: "boolean false", rule: `false`, want: Decision{Allowed: false}},
		{
			name: "every key",
			rule: `{
				"allowed": false,
				"headers": {"x-b": "2", "x-a": ["one", "two"], "x-set": {"s"}},
				"response_headers_to_add": {"x-resp": "r"},
				"request_headers_to_remove": ["x-drop", "x-drop2"],
				"query_parameters_to_set": {"q": "v", "p": ["1", "2"]},
				"query_parameters_to_remove": ["debug"],
				"body": "go away",
				"http_status": 401,
				"dynamic_metadata": {"n": 1.5, "s": "x", "b": true, "l": [1, "a"], "o": {"k": null}, "set": {"a"}},
				"reason": "token_expired",
				"bypass": true,
				"unknown_key": {"ignored": [1, 2]},
			}`,
			want: Decision{
				Allowed:                 false,
				HTTPStatus:              401,
				Headers:                 []Header{{"x-a", "one"}, {"x-a", "two"}, {"x-b", "2"}, {"x-set", "s"}},
				ResponseHeadersToAdd:    []Header{{"x-resp", "r"}},
				RequestHeadersToRemove:  []string{"x-drop", "x-drop2"},
				QueryParametersToSet:    []Header{{"p", "1"}, {"p", "2"}, {"q", "v"}},
				QueryParametersToRemove: []string{"debug"},
				Body:                    "go away",
				DynamicMetadata: map[string]any{
					"n": 1.5, "s": "x", "b": true, "l": []any{float64(1), "a"},
					"o": map[string]any{"k": nil}, "set": []any{"a"},
				},
				Reason: "token_expired",
				Bypass: true,
			},
		},
		{name: "minimal object", rule: `{"allowed": true}`, want: Decision{Allowed: true}},
		{name: "empty header list", rule: `{"allowed": true, "headers": {"x": []}}`, want: Decision{Allowed: true}},
		{
			name: "headers as a list of objects", rule: `{"allowed": true, "headers": [{"x-b": "1", "x-a": "2"}, {"x-b": "3"}]}`,
			want: Decision{Allowed: true, Headers: []Header{{"x-a", "2"}, {"x-b", "1"}, {"x-b", "3"}}},
		},
		{name: "headers list with a string", rule: `{"allowed": true, "headers": [{"x": "1"}, "y"]}`, reason: ReasonBadResult, errKeys: []string{"headers[1]"}},
		{name: "status bounds", rule: `{"allowed": false, "http_status": 599}`, want: Decision{HTTPStatus: 599}},

		{name: "decision is a string", rule: `"allow"`, reason: ReasonBadResult, errKeys: []string{"boolean or an object", "string"}},
		{name: "decision is a number", rule: `1`, reason: ReasonBadResult},
		{name: "allowed missing", rule: `{"headers": {}}`, reason: ReasonBadResult, errKeys: []string{"allowed"}},
		{name: "allowed not bool", rule: `{"allowed": "true"}`, reason: ReasonBadResult, errKeys: []string{"allowed"}},
		{name: "headers not object", rule: `{"allowed": true, "headers": "x: y"}`, reason: ReasonBadResult, errKeys: []string{"headers"}},
		{name: "header value number", rule: `{"allowed": true, "headers": {"x": 1}}`, reason: ReasonBadResult, errKeys: []string{"headers", `"x"`}},
		{name: "header list with number", rule: `{"allowed": true, "headers": {"x": ["a", 1]}}`, reason: ReasonBadResult, errKeys: []string{"headers.x"}},
		{name: "header name not string", rule: `{"allowed": true, "headers": {1: "a"}}`, reason: ReasonBadResult, errKeys: []string{"headers"}},
		{name: "response headers list", rule: `{"allowed": true, "response_headers_to_add": ["a"]}`, reason: ReasonBadResult, errKeys: []string{"response_headers_to_add"}},
		{name: "headers to remove string", rule: `{"allowed": true, "request_headers_to_remove": "x"}`, reason: ReasonBadResult, errKeys: []string{"request_headers_to_remove"}},
		{name: "headers to remove number", rule: `{"allowed": true, "request_headers_to_remove": [1]}`, reason: ReasonBadResult, errKeys: []string{"request_headers_to_remove"}},
		{name: "query set value number", rule: `{"allowed": true, "query_parameters_to_set": {"q": 1}}`, reason: ReasonBadResult, errKeys: []string{"query_parameters_to_set"}},
		{name: "query remove string", rule: `{"allowed": true, "query_parameters_to_remove": "q"}`, reason: ReasonBadResult, errKeys: []string{"query_parameters_to_remove"}},
		{name: "body number", rule: `{"allowed": false, "body": 1}`, reason: ReasonBadResult, errKeys: []string{"body"}},
		{name: "status string", rule: `{"allowed": false, "http_status": "403"}`, reason: ReasonBadResult, errKeys: []string{"http_status"}},
		{name: "status too low", rule: `{"allowed": false, "http_status": 99}`, reason: ReasonBadResult, errKeys: []string{"http_status"}},
		{name: "status too high", rule: `{"allowed": false, "http_status": 600}`, reason: ReasonBadResult, errKeys: []string{"http_status"}},
		{name: "status fraction", rule: `{"allowed": false, "http_status": 403.5}`, reason: ReasonBadResult, errKeys: []string{"http_status"}},
		{name: "metadata string", rule: `{"allowed": true, "dynamic_metadata": "x"}`, reason: ReasonBadResult, errKeys: []string{"dynamic_metadata"}},
		{name: "metadata number key", rule: `{"allowed": true, "dynamic_metadata": {"a": {1: "b"}}}`, reason: ReasonBadResult, errKeys: []string{"dynamic_metadata"}},
		{name: "reason number", rule: `{"allowed": false, "reason": 1}`, reason: ReasonBadResult, errKeys: []string{"reason"}},
		{name: "bypass string", rule: `{"allowed": true, "bypass": "yes"}`, reason: ReasonBadResult, errKeys: []string{"bypass"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, map[string]string{
				"policy.rego": "package envoy.authz\n\nallow := " + tc.rule + "\n",
			}, Options{})
			got, err := e.Eval(context.Background(), mustInput(t, `{}`))
			if reason := evalReason(t, err); reason != tc.reason {
				t.Fatalf("reason = %q (err %v), want %q", reason, err, tc.reason)
			}
			if got.Revision != e.Revision() || got.Revision == "" {
				t.Errorf("Revision = %q, want %q", got.Revision, e.Revision())
			}
			if tc.reason != "" {
				mustContain(t, err.Error(), tc.errKeys...)
				return
			}
			got.Revision = ""
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decision\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestEvalFailures(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		strict bool
		reason string
	}{
		{name: "undefined", policy: "package envoy.authz\n\nallow if input.nope\n", reason: ReasonUndefined},
		{name: "no such package", policy: "package other\n\nallow := true\n", reason: ReasonUndefined},
		{name: "division by zero, strict", policy: "package envoy.authz\n\nallow if 1 / input.zero > 0\n", strict: true, reason: ReasonError},
		// As in OPA: without strict mode a built-in error leaves the rule undefined.
		{name: "division by zero", policy: "package envoy.authz\n\nallow if 1 / input.zero > 0\n", reason: ReasonUndefined},
		{name: "builtin error", policy: "package envoy.authz\n\nallow if to_number(\"x\") > 1\n", reason: ReasonUndefined},
		{
			name:   "conflicting outputs",
			policy: "package envoy.authz\n\nallow := true if input.a\n\nallow := false if input.b\n",
			reason: ReasonError,
		},
		{name: "builtin error, strict", policy: "package envoy.authz\n\nallow if to_number(\"x\") > 1\n", strict: true, reason: ReasonError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, map[string]string{"policy.rego": tc.policy}, Options{StrictBuiltinErrors: tc.strict})
			got, err := e.Eval(context.Background(), mustInput(t, `{"a": true, "b": true, "zero": 0}`))
			if reason := evalReason(t, err); reason != tc.reason {
				t.Fatalf("reason = %q (err %v), want %q", reason, err, tc.reason)
			}
			if got.Allowed {
				t.Error("a failed evaluation must not allow")
			}
		})
	}
}

func TestParseDecisionPath(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "envoy/authz/allow", want: "data.envoy.authz.allow"},
		{in: "envoy.authz.allow", want: "data.envoy.authz.allow"},
		{in: "/envoy/authz/allow", want: "data.envoy.authz.allow"},
		{in: "data.envoy.authz.allow", want: "data.envoy.authz.allow"},
		{in: "data/envoy/authz/allow", want: "data.envoy.authz.allow"},
		{in: "database/allow", want: "data.database.allow"},
		{in: "dataplane.authz.allow", want: "data.dataplane.authz.allow"},
		{in: "", want: "data.envoy.authz.allow"},
		{in: "data", err: "whole data document"},
		{in: "envoy//allow", err: "empty path segment"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			ref, err := parseDecisionPath(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || ref.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", ref, err, tc.want)
			}
		})
	}
}
