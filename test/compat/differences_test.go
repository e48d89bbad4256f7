package compat

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/gatehouse-dev/gatehouse/test/compat/corpus"
)

// difference is one documented way Gatehouse differs from OPA-Envoy, keyed by
// its anchor in docs/policies.md. Its hooks first assert what each side does
// (an error when the case does not show exactly the documented difference),
// then make OPA-Envoy's side equal to Gatehouse's for the part the difference
// covers, so that everything else is still compared.
type difference struct {
	// global differences apply to every case; the others only to the cases
	// that list them in "differs".
	global   bool
	decision func(cc caseContext, want, have *effect) error
	input    func(cc caseContext, want, have any) error
	// untested says why no case of the corpus can show the difference.
	untested string
}

var (
	globalDecision = []string{"diff-encoding", "diff-decision-id"}
	globalInput    = []string{"diff-gatehouse-facts", "diff-parsed-body-absent", "diff-truncated-parse-off"}
)

var differences = map[string]*difference{
	// Same effect in Envoy, different bytes: explicit append flags, always an
	// ok_response or denied_response, the reason as the gRPC status message
	// and UNAUTHENTICATED for 401.
	"diff-encoding": {global: true, decision: func(cc caseContext, want, have *effect) error {
		var errs []error
		if want.GRPCError == "" {
			for _, a := range want.appends {
				if a != nil {
					errs = append(errs, errors.New("OPA-Envoy set a header's append flag; the docs say it leaves it unset"))
				}
			}
			if want.grpcMessage != "" && want.HTTPStatus != 400 {
				errs = append(errs, fmt.Errorf("OPA-Envoy set a gRPC status message %q", want.grpcMessage))
			}
		}
		for _, a := range have.appends {
			if a == nil {
				errs = append(errs, errors.New("Gatehouse left a header's append flag unset (it must always set it)"))
			}
		}
		if !have.hasHTTP {
			errs = append(errs, errors.New("Gatehouse answered without ok_response or denied_response"))
		}
		wantCode := int32(0)
		switch {
		case !have.Allowed && have.HTTPStatus == 401:
			wantCode = 16 // UNAUTHENTICATED
		case !have.Allowed:
			wantCode = 7 // PERMISSION_DENIED
		}
		if have.grpcCode != wantCode {
			errs = append(errs, fmt.Errorf("Gatehouse's gRPC status code is %d, want %d", have.grpcCode, wantCode))
		}
		for _, e := range []*effect{want, have} {
			e.grpcCode, e.grpcMessage, e.appends, e.hasHTTP = 0, "", nil, false
		}
		return errors.Join(errs...)
	}},

	// Both add a decision id to every answer's dynamic_metadata (OPA-Envoy
	// a UUID, Gatehouse a random 64-bit number in hex, the id of its decision
	// log line);
	// Gatehouse also sends it to the client on denials, in a header.
	"diff-decision-id": {global: true, decision: func(cc caseContext, want, have *effect) error {
		var errs []error
		hm, _ := have.Metadata.(map[string]any)
		id, _ := hm["decision_id"].(string)
		if !regexp.MustCompile(`^[0-9a-f]{1,16}$`).MatchString(id) {
			errs = append(errs, fmt.Errorf("Gatehouse's dynamic_metadata.decision_id is %q, not a 64-bit number in hex", id))
		}
		delete(hm, "decision_id")
		if len(hm) == 0 {
			have.Metadata = nil
		}
		if !have.Allowed {
			i := slices.Index(have.Headers, header{"x-gatehouse-decision-id", id})
			if i < 0 {
				errs = append(errs, fmt.Errorf("Gatehouse's denial has no x-gatehouse-decision-id: %s header", id))
			} else {
				have.Headers = slices.Delete(have.Headers, i, i+1)
				if len(have.Headers) == 0 {
					have.Headers = nil
				}
			}
		}
		if want.GRPCError != "" {
			return errors.Join(errs...)
		}
		wm, _ := want.Metadata.(map[string]any)
		if wm["decision_id"] != corpus.DecisionIDPlaceholder {
			if want.HTTPStatus == 400 && !want.Allowed {
				return errors.Join(errs...) // rejected before evaluation: no decision id
			}
			errs = append(errs, errors.New("OPA-Envoy's answer has no decision_id in dynamic_metadata"))
		}
		delete(wm, "decision_id")
		if len(wm) == 0 {
			want.Metadata = nil
		}
		return errors.Join(errs...)
	}},

	// Gatehouse adds its facts to the input.
	"diff-gatehouse-facts": {global: true, input: func(cc caseContext, want, have any) error {
		w, _ := want.(map[string]any)
		h, _ := have.(map[string]any)
		if h == nil || h["rejected"] != nil {
			return nil
		}
		if _, ok := h["client_ip"].(string); !ok {
			return errors.New("Gatehouse's input has no client_ip string")
		}
		if _, ok := h["client_ip_source"].(string); !ok {
			return errors.New("Gatehouse's input has no client_ip_source string")
		}
		if _, ok := h["request_path"].(string); !ok {
			return errors.New("Gatehouse's input has no request_path string")
		}
		for _, k := range []string{"request_path", "client_ip", "client_ip_source", "client_ip_fallback", "jwt", "gatehouse"} {
			if w != nil && w[k] != nil {
				return fmt.Errorf("OPA-Envoy's input has %s", k)
			}
			delete(h, k)
		}
		return nil
	}},

	// parsed_body absent rather than null.
	"diff-parsed-body-absent": {global: true, input: func(cc caseContext, want, have any) error {
		w, _ := want.(map[string]any)
		h, _ := have.(map[string]any)
		if w == nil || h == nil || w["rejected"] != nil || cc.cfg.SkipRequestBodyParse {
			return nil
		}
		if v, ok := w["parsed_body"]; ok && v == nil {
			if _, ok := h["parsed_body"]; !ok {
				delete(w, "parsed_body")
			}
		}
		return nil
	}},

	// With body parsing off OPA-Envoy leaves truncated_body out; Gatehouse
	// still computes it.
	"diff-truncated-parse-off": {global: true, decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		w, _ := want.(map[string]any)
		h, _ := have.(map[string]any)
		if !cc.cfg.SkipRequestBodyParse || w == nil || h == nil || w["rejected"] != nil {
			return nil
		}
		if _, ok := w["truncated_body"]; ok {
			return errors.New("OPA-Envoy's input has truncated_body with body parsing off")
		}
		if _, ok := w["parsed_body"]; ok {
			return errors.New("OPA-Envoy's input has parsed_body with body parsing off")
		}
		if _, ok := h["parsed_body"]; ok {
			return errors.New("Gatehouse's input has parsed_body with body parsing off")
		}
		if _, ok := h["truncated_body"].(bool); !ok {
			return errors.New("Gatehouse's input has no truncated_body with body parsing off")
		}
		delete(h, "truncated_body")
		return nil
	}},

	// An undefined decision, a result of the wrong type or an evaluation
	// error: OPA-Envoy answers a gRPC error, Gatehouse a denial.
	"diff-fail-closed": {decision: func(cc caseContext, want, have *effect) error {
		if want.GRPCError == "" {
			return fmt.Errorf("OPA-Envoy answered %s, not a gRPC error", show(want))
		}
		if have.Allowed || have.HTTPStatus != 403 {
			return fmt.Errorf("Gatehouse answered %s, not a denial with the fail status (403)", show(have))
		}
		if have.Body != "" {
			// The policy's result could not be used: Gatehouse's own body.
			if err := gatehouseFailure(have, 403, "policy_"); err != nil {
				return err
			}
		}
		*want = *have
		return nil
	}},

	// http_status written as a float with an integral value (401.0).
	"diff-status-float": {decision: func(cc caseContext, want, have *effect) error {
		if want.GRPCError == "" {
			return fmt.Errorf("OPA-Envoy answered %s, not a gRPC error", show(want))
		}
		if have.Allowed || have.HTTPStatus == 403 {
			return fmt.Errorf("Gatehouse answered %s, not a denial with the policy's status", show(have))
		}
		*want = *have
		return nil
	}},

	// In dry-run, OPA-Envoy still answers its gRPC error or its 400;
	// Gatehouse allows.
	"diff-dry-run-errors": {decision: func(cc caseContext, want, have *effect) error {
		if !cc.cfg.DryRun {
			return errors.New("the case does not run in dry-run")
		}
		if want.GRPCError == "" && !(want.HTTPStatus == 400 && !want.Allowed) {
			return fmt.Errorf("OPA-Envoy answered %s, neither a gRPC error nor a 400", show(want))
		}
		if !have.Allowed || have.Metadata != nil || len(have.Headers) != 0 {
			return fmt.Errorf("Gatehouse answered %s, not a plain allow", show(have))
		}
		*want = *have
		return nil
	}},

	// A request OPA-Envoy cannot parse (query, body): both answer 400 before
	// the policy runs, with a different body.
	"diff-bad-request-body": {decision: func(cc caseContext, want, have *effect) error {
		if want.Allowed || want.HTTPStatus != 400 || want.Body == "" || len(want.Headers) != 0 {
			return fmt.Errorf("OPA-Envoy answered %s, not a 400 with the parse error as body", show(want))
		}
		if err := gatehouseFailure(have, 400, "bad_request"); err != nil {
			return err
		}
		*want = *have
		return nil
	}},

	// body or http_status of the wrong type on an allowed decision.
	"diff-allowed-wrong-type": {decision: func(cc caseContext, want, have *effect) error {
		if !want.Allowed {
			return fmt.Errorf("OPA-Envoy answered %s, not an allow", show(want))
		}
		if err := gatehouseFailure(have, 403, "policy_bad_result"); err != nil {
			return err
		}
		*want = *have
		return nil
	}},

	// query_parameters_to_set as a list of {key, value} objects.
	"diff-query-set-list": {decision: func(cc caseContext, want, have *effect) error {
		if want.GRPCError == "" {
			return fmt.Errorf("OPA-Envoy answered %s, not a gRPC error", show(want))
		}
		if !have.Allowed || len(have.QueryToSet) == 0 {
			return fmt.Errorf("Gatehouse answered %s, not an allow setting query parameters", show(have))
		}
		*want = *have
		return nil
	}},

	// A content-length that is not a number: OPA-Envoy answers 400 for
	// JSON, form and multipart bodies; Gatehouse ignores it.
	"diff-content-length": {
		decision: func(cc caseContext, want, have *effect) error {
			if want.Allowed || want.HTTPStatus != 400 {
				return fmt.Errorf("OPA-Envoy answered %s, not a 400", show(want))
			}
			if have.HTTPStatus == 400 {
				return errors.New("Gatehouse answered 400")
			}
			*want = *have
			return nil
		},
		input: func(cc caseContext, want, have any) error {
			w, _ := want.(map[string]any)
			h, _ := have.(map[string]any)
			if w["rejected"] == nil {
				return errors.New("OPA-Envoy did not reject the request")
			}
			if h["rejected"] != nil {
				return errors.New("Gatehouse rejected the request")
			}
			delete(w, "rejected")
			for k, v := range h {
				w[k] = v
			}
			return nil
		},
	},

	// "#" in the path: Gatehouse refuses it (400 bad_request) before any
	// policy runs, since the upstream may read it as a character rather
	// than a fragment; OPA-Envoy keeps it in the last segment or value.
	"diff-fragment": {
		decision: func(cc caseContext, want, have *effect) error {
			if want.GRPCError != "" || (!want.Allowed && want.HTTPStatus == 400) {
				return fmt.Errorf("OPA-Envoy answered %s, not a decision of the policy", show(want))
			}
			if err := gatehouseFailure(have, 400, "bad_request"); err != nil {
				return err
			}
			*want = *have
			return nil
		},
		input: func(cc caseContext, want, have any) error {
			w, _ := want.(map[string]any)
			h, _ := have.(map[string]any)
			if w == nil || w["rejected"] != nil {
				return errors.New("OPA-Envoy rejected the request")
			}
			if !strings.Contains(compact(w["parsed_path"])+compact(w["parsed_query"]), "#") {
				return errors.New("OPA-Envoy's parsed_path and parsed_query carry no fragment")
			}
			if h == nil || h["rejected"] == nil {
				return errors.New("Gatehouse did not refuse the path with a '#'")
			}
			clear(w)
			w["rejected"] = h["rejected"]
			return nil
		},
	},

	// ":path" read when "path" is empty.
	"diff-colon-path": {decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		return replaceKeys(want, have, func(w, h map[string]any) error {
			if compact(w["parsed_path"]) != `[""]` {
				return fmt.Errorf("OPA-Envoy's parsed_path is %s, not [\"\"]", compact(w["parsed_path"]))
			}
			if compact(h["parsed_path"]) == `[""]` {
				return errors.New("Gatehouse's parsed_path ignores :path")
			}
			return nil
		}, "parsed_path", "parsed_query")
	}},

	// content-length larger than the body of a type OPA-Envoy does not parse.
	"diff-truncated-other-types": {decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		return replaceKeys(want, have, func(w, h map[string]any) error {
			if w["truncated_body"] != false || h["truncated_body"] != true {
				return fmt.Errorf("truncated_body: OPA-Envoy %v, Gatehouse %v; want false and true", w["truncated_body"], h["truncated_body"])
			}
			return nil
		}, "truncated_body")
	}},

	// x-envoy-auth-partial-body compared without case.
	"diff-partial-body-header": {decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		return replaceKeys(want, have, func(w, h map[string]any) error {
			if w["truncated_body"] != false || h["truncated_body"] != true {
				return fmt.Errorf("truncated_body: OPA-Envoy %v, Gatehouse %v; want false and true", w["truncated_body"], h["truncated_body"])
			}
			if _, ok := h["parsed_body"]; ok {
				return errors.New("Gatehouse parsed a body it flags as truncated")
			}
			return nil
		}, "truncated_body", "parsed_body")
	}},

	// Header names in another case.
	"diff-header-case": {decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		wh, hh := headersOf(want), headersOf(have)
		if wh == nil || hh == nil {
			return errors.New("no headers on one side")
		}
		lowered := map[string]any{}
		upper := false
		for k, v := range wh {
			if strings.ToLower(k) != k {
				upper = true
			}
			lowered[strings.ToLower(k)] = v
		}
		if !upper {
			return errors.New("OPA-Envoy's headers are all lower-case")
		}
		if !jsonEqual(lowered, hh) {
			return fmt.Errorf("Gatehouse's headers %s are not OPA-Envoy's lower-cased %s", compact(hh), compact(lowered))
		}
		setHeaders(want, hh)
		return nil
	}},

	// encode_raw_headers: header_map copied to headers.
	"diff-header-map": {decision: policyOutcome, input: func(cc caseContext, want, have any) error {
		if headersOf(want) != nil {
			return errors.New("OPA-Envoy's input has attributes.request.http.headers")
		}
		if len(headersOf(have)) == 0 {
			return errors.New("Gatehouse's input has no attributes.request.http.headers")
		}
		setHeaders(want, headersOf(have))
		return nil
	}},

	// Requests over Gatehouse's limits (headers, path, query parameters, JSON
	// nesting) are refused before any policy runs; OPA-Envoy has no limits.
	"diff-request-limits": {
		decision: func(cc caseContext, want, have *effect) error {
			if want.GRPCError != "" || (!want.Allowed && want.HTTPStatus == 400) {
				return fmt.Errorf("OPA-Envoy answered %s, not a decision of the policy", show(want))
			}
			reason := "bad_request"
			if have.HTTPStatus == 431 || have.HTTPStatus == 414 {
				reason = "request_too_large"
			}
			if err := gatehouseFailure(have, have.HTTPStatus, reason); err != nil {
				return err
			}
			*want = *have
			return nil
		},
		input: func(cc caseContext, want, have any) error {
			w, _ := want.(map[string]any)
			h, _ := have.(map[string]any)
			if w == nil || w["rejected"] != nil {
				return errors.New("OPA-Envoy rejected the request")
			}
			if h == nil || h["rejected"] == nil {
				return errors.New("Gatehouse did not reject the request")
			}
			clear(w)
			w["rejected"] = h["rejected"]
			return nil
		},
	},

	"diff-parse-limit":   {untested: "a body over 256 KiB would put megabytes of recordings in testdata; authz TestBuildInput covers the limit"},
	"diff-protobuf-body": {untested: "OPA-Envoy decodes gRPC bodies only with a protoset file, a setting Gatehouse does not have"},
}

// policyOutcome is the decision side of an input difference: the policy saw
// different inputs, so it may decide differently. Both sides must still be
// decisions of the policy (no error, no 400).
func policyOutcome(cc caseContext, want, have *effect) error {
	for side, e := range map[string]*effect{"OPA-Envoy": want, "Gatehouse": have} {
		if e.GRPCError != "" || (!e.Allowed && e.HTTPStatus == 400) {
			return fmt.Errorf("%s answered %s, not a decision of the policy", side, show(e))
		}
	}
	*want = *have
	return nil
}

// gatehouseFailure checks a denial Gatehouse makes itself: the status, a
// JSON body whose reason starts with reasonPrefix, a JSON content type.
func gatehouseFailure(have *effect, status int, reasonPrefix string) error {
	if have.Allowed || have.HTTPStatus != status {
		return fmt.Errorf("Gatehouse answered %s, not a %d denial", show(have), status)
	}
	var body struct{ Reason string }
	if err := json.Unmarshal([]byte(have.Body), &body); err != nil || !strings.HasPrefix(body.Reason, reasonPrefix) {
		return fmt.Errorf("Gatehouse's body %q has no reason %s...", have.Body, reasonPrefix)
	}
	if len(have.Headers) != 1 || have.Headers[0] != (header{"content-type", "application/json"}) {
		return fmt.Errorf("Gatehouse's denial headers are %v", have.Headers)
	}
	return nil
}

// replaceKeys runs check on both inputs, then copies keys from Gatehouse's
// input to OPA-Envoy's.
func replaceKeys(want, have any, check func(w, h map[string]any) error, keys ...string) error {
	w, _ := want.(map[string]any)
	h, _ := have.(map[string]any)
	if w == nil || h == nil || w["rejected"] != nil || h["rejected"] != nil {
		return errors.New("an input is missing")
	}
	if err := check(w, h); err != nil {
		return err
	}
	for _, k := range keys {
		if v, ok := h[k]; ok {
			w[k] = v
		} else {
			delete(w, k)
		}
	}
	return nil
}

func httpOf(in any) map[string]any {
	m, _ := in.(map[string]any)
	for _, k := range []string{"attributes", "request", "http"} {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func headersOf(in any) map[string]any {
	h, _ := httpOf(in)["headers"].(map[string]any)
	return h
}

func setHeaders(in any, headers map[string]any) {
	if h := httpOf(in); h != nil {
		h["headers"] = headers
	}
}
