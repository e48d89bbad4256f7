package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// result is a decision in the shape gatehousectl prints, for `check` (from a
// CheckResponse) and `policy eval` (from a policy.Decision). Its JSON encoding
// is the documented, stable `--json` output: every list is present (possibly
// empty) and dynamic_metadata is always an object.
type result struct {
	Allowed bool `json:"allowed"`
	// GRPCCode and GRPCMessage are the CheckResponse status (check only).
	GRPCCode    *string `json:"grpc_code,omitempty"`
	GRPCMessage *string `json:"grpc_message,omitempty"`
	// ErrorResponse is true when the server answered error_response instead of
	// denied_response (check only): Envoy then applies failure_mode_allow.
	ErrorResponse *bool `json:"error_response,omitempty"`
	// HTTPStatus is the status Envoy sends the client on a denial (403 when the
	// server left it unset), 0 when allowed.
	HTTPStatus              int              `json:"http_status"`
	Headers                 []headerOption   `json:"headers"`
	HeadersToRemove         []string         `json:"headers_to_remove"`
	ResponseHeadersToAdd    []headerOption   `json:"response_headers_to_add"`
	QueryParametersToSet    []queryParameter `json:"query_parameters_to_set"`
	QueryParametersToRemove []string         `json:"query_parameters_to_remove"`
	Body                    string           `json:"body"`
	DynamicMetadata         map[string]any   `json:"dynamic_metadata"`
	// Reason, Bypass and Revision come from Gatehouse's policy (policy eval only).
	Reason   *string `json:"reason,omitempty"`
	Bypass   *bool   `json:"bypass,omitempty"`
	Revision *string `json:"revision,omitempty"`

	// notes are warnings about odd but legal responses, printed on stderr.
	notes []string
}

// headerOption is one header to add, with Envoy's two append controls as the
// server set them: append is null when unset (older Envoy then overwrites),
// append_action is the enum name (check only; its zero value appends).
type headerOption struct {
	Key            string `json:"key"`
	Value          string `json:"value"`
	Append         *bool  `json:"append"`
	AppendAction   string `json:"append_action,omitempty"`
	KeepEmptyValue bool   `json:"keep_empty_value,omitempty"`
}

// queryParameter is one query parameter to set on the upstream request.
type queryParameter struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// defaultDeniedStatus is what Envoy sends when a denial leaves the HTTP status unset.
const defaultDeniedStatus = http.StatusForbidden

// resultFromCheckResponse reads a CheckResponse as Envoy does: the gRPC status
// alone decides (OK or unset = allow), the oneof supplies the details.
func resultFromCheckResponse(resp *authv3.CheckResponse) result {
	r := emptyResult()
	grpcCode := code.Code(resp.GetStatus().GetCode())
	name, msg := grpcCode.String(), resp.GetStatus().GetMessage()
	r.GRPCCode, r.GRPCMessage = &name, &msg
	r.Allowed = grpcCode == code.Code_OK
	isError := false
	r.ErrorResponse = &isError
	if md := resp.GetDynamicMetadata(); md != nil {
		r.DynamicMetadata = md.AsMap()
	}
	switch hr := resp.GetHttpResponse().(type) {
	case *authv3.CheckResponse_OkResponse:
		ok := hr.OkResponse
		r.Headers = headerOptions(ok.GetHeaders())
		r.HeadersToRemove = nonNil(ok.GetHeadersToRemove())
		r.ResponseHeadersToAdd = headerOptions(ok.GetResponseHeadersToAdd())
		for _, q := range ok.GetQueryParametersToSet() {
			r.QueryParametersToSet = append(r.QueryParametersToSet, queryParameter{Key: q.GetKey(), Value: q.GetValue()})
		}
		r.QueryParametersToRemove = nonNil(ok.GetQueryParametersToRemove())
		if md := ok.GetDynamicMetadata(); md != nil && len(md.GetFields()) > 0 {
			r.notes = append(r.notes, "ok_response.dynamic_metadata is deprecated; Envoy reads CheckResponse.dynamic_metadata")
		}
		if !r.Allowed {
			r.notes = append(r.notes, "status is not OK but the server sent ok_response: Envoy denies and ignores it")
		}
	case *authv3.CheckResponse_DeniedResponse:
		r.Headers = headerOptions(hr.DeniedResponse.GetHeaders())
		r.Body = hr.DeniedResponse.GetBody()
		r.HTTPStatus = int(hr.DeniedResponse.GetStatus().GetCode())
		if r.Allowed {
			r.notes = append(r.notes, "status is OK but the server sent denied_response: Envoy allows and ignores it")
		}
	case *authv3.CheckResponse_ErrorResponse:
		isError = true
		r.Headers = headerOptions(hr.ErrorResponse.GetHeaders())
		r.Body = hr.ErrorResponse.GetBody()
		r.HTTPStatus = int(hr.ErrorResponse.GetStatus().GetCode())
		r.notes = append(r.notes, "the server answered error_response: Envoy counts ext_authz_error and applies failure_mode_allow / status_on_error")
	}
	if r.Allowed {
		r.HTTPStatus = 0
	} else if r.HTTPStatus == 0 {
		r.HTTPStatus = defaultDeniedStatus
	}
	if r.QueryParametersToSet == nil {
		r.QueryParametersToSet = []queryParameter{}
	}
	return r
}

func emptyResult() result {
	return result{
		Headers:                 []headerOption{},
		HeadersToRemove:         []string{},
		ResponseHeadersToAdd:    []headerOption{},
		QueryParametersToSet:    []queryParameter{},
		QueryParametersToRemove: []string{},
		DynamicMetadata:         map[string]any{},
	}
}

func headerOptions(in []*corev3.HeaderValueOption) []headerOption {
	out := make([]headerOption, 0, len(in))
	for _, h := range in {
		value := h.GetHeader().GetValue()
		if value == "" && len(h.GetHeader().GetRawValue()) > 0 {
			value = string(h.GetHeader().GetRawValue())
		}
		o := headerOption{
			Key:            h.GetHeader().GetKey(),
			Value:          value,
			AppendAction:   h.GetAppendAction().String(),
			KeepEmptyValue: h.GetKeepEmptyValue(),
		}
		if h.GetAppend() != nil {
			v := h.GetAppend().GetValue()
			o.Append = &v
		}
		out = append(out, o)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// writeResultJSON writes r as one indented JSON object and a newline.
// writeResult prints r to stdout as JSON or as text.
func (a *app) writeResult(r result, asJSON bool) error {
	if asJSON {
		return writeResultJSON(a.stdout, r)
	}
	return writeResultText(a.stdout, r)
}

func writeResultJSON(w io.Writer, r result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// writeResultText writes r for a human: the verdict first, then only the
// sections that carry something.
func writeResultText(w io.Writer, r result) error {
	var b strings.Builder
	if r.Allowed {
		b.WriteString("ALLOWED\n")
	} else {
		b.WriteString("DENIED\n")
	}
	if r.GRPCCode != nil {
		line := *r.GRPCCode
		if r.GRPCMessage != nil && *r.GRPCMessage != "" {
			line += ": " + *r.GRPCMessage
		}
		fmt.Fprintf(&b, "grpc status:    %s\n", line)
	}
	if r.ErrorResponse != nil && *r.ErrorResponse {
		b.WriteString("response:       error_response (Envoy applies failure_mode_allow)\n")
	}
	if !r.Allowed {
		fmt.Fprintf(&b, "http status:    %d %s\n", r.HTTPStatus, http.StatusText(r.HTTPStatus))
	}
	if r.Reason != nil && *r.Reason != "" {
		fmt.Fprintf(&b, "reason:         %s\n", *r.Reason)
	}
	if r.Bypass != nil && *r.Bypass {
		b.WriteString("bypass:         true (trusted-IP bypass)\n")
	}
	if r.Revision != nil && *r.Revision != "" {
		fmt.Fprintf(&b, "revision:       %s\n", *r.Revision)
	}
	if len(r.Headers) > 0 {
		if r.Allowed {
			b.WriteString("headers to add (upstream request):\n")
		} else {
			b.WriteString("headers (sent to the client):\n")
		}
		writeHeaderOptions(&b, r.Headers)
	}
	if len(r.HeadersToRemove) > 0 {
		b.WriteString("headers to remove (upstream request):\n")
		for _, h := range r.HeadersToRemove {
			fmt.Fprintf(&b, "  %s\n", h)
		}
	}
	if len(r.ResponseHeadersToAdd) > 0 {
		b.WriteString("response headers to add (client response):\n")
		writeHeaderOptions(&b, r.ResponseHeadersToAdd)
	}
	if len(r.QueryParametersToSet) > 0 {
		b.WriteString("query parameters to set:\n")
		for _, q := range r.QueryParametersToSet {
			fmt.Fprintf(&b, "  %s=%s\n", q.Key, q.Value)
		}
	}
	if len(r.QueryParametersToRemove) > 0 {
		b.WriteString("query parameters to remove:\n")
		for _, q := range r.QueryParametersToRemove {
			fmt.Fprintf(&b, "  %s\n", q)
		}
	}
	if r.Body != "" {
		b.WriteString("body:\n")
		for _, line := range strings.Split(strings.TrimSuffix(r.Body, "\n"), "\n") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	if len(r.DynamicMetadata) > 0 {
		md, err := json.MarshalIndent(r.DynamicMetadata, "  ", "  ")
		if err != nil {
			return fmt.Errorf("encode dynamic metadata: %w", err)
		}
		fmt.Fprintf(&b, "dynamic metadata:\n  %s\n", md)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeHeaderOptions(b *strings.Builder, hs []headerOption) {
	for _, h := range hs {
		var flags []string
		// Envoy reads the deprecated append field when it is set and ignores
		// append_action then; show append_action only when it decides.
		if h.Append != nil {
			flags = append(flags, fmt.Sprintf("append=%t", *h.Append))
		} else if h.AppendAction != "" {
			flags = append(flags, "append_action="+h.AppendAction)
		}
		if h.KeepEmptyValue {
			flags = append(flags, "keep_empty_value")
		}
		line := fmt.Sprintf("  %s: %s", h.Key, h.Value)
		if len(flags) > 0 {
			line += "  [" + strings.Join(flags, " ") + "]"
		}
		b.WriteString(line + "\n")
	}
}
