package authz

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gatehouse-dev/gatehouse/policy"
)

// allow builds an OK CheckResponse. Identity headers are set last with
// append=false (so they overwrite anything the policy or the client put
// there), and every other identity header name is removed, so a client can
// never pre-seed one: Envoy applies headers_to_remove after the headers it
// sets, which is why the headers being set are not in the removal list.
func (s *Server) allow(dec policy.Decision, out *outcome) *authv3.CheckResponse {
	tok := out.token
	ok := &authv3.OkHttpResponse{
		Headers:                 headerOptions(dec.Headers),
		ResponseHeadersToAdd:    headerOptions(dec.ResponseHeadersToAdd),
		HeadersToRemove:         dec.RequestHeadersToRemove,
		QueryParametersToRemove: dec.QueryParametersToRemove,
	}
	for _, q := range dec.QueryParametersToSet {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
	}
	set := map[string]bool{}
	if tok != nil && tok.Valid {
		for _, h := range tok.Headers {
			name := strings.ToLower(h.Key)
			set[name] = true
			ok.Headers = append(ok.Headers, &corev3.HeaderValueOption{
				Header: &corev3.HeaderValue{Key: name, Value: h.Value},
				Append: appendFalse,
			})
		}
	}
	if tok != nil {
		// forward_token: false strips the token whether or not it was valid:
		// a policy may let an invalid one through (bypass, public paths), and
		// the upstream must not see it either way.
		ok.HeadersToRemove = append(ok.HeadersToRemove, tok.RemoveHeaders...)
		ok.QueryParametersToRemove = append(ok.QueryParametersToRemove, tok.RemoveParams...)
	}
	for _, name := range out.est.identityHeader {
		if !set[name] {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: s.metadata(dec.DynamicMetadata),
	}
}

// denied maps a policy denial to a CheckResponse.
func (s *Server) denied(dec policy.Decision) *authv3.CheckResponse {
	status := dec.HTTPStatus
	if status == 0 {
		status = DefaultFailStatus
	}
	if _, known := typev3.StatusCode_name[int32(status)]; !known {
		// Envoy only accepts the status codes its enum defines; a policy that
		// asks for another still denies, with the fail status. 2xx is sent as
		// asked, as OPA-Envoy does: policies answer CORS preflight with a 204
		// denial carrying access-control-allow-* headers. The request still
		// never reaches the upstream.
		s.opts.Logger.Warn("policy returned an http_status Envoy cannot send; using policy.fail_status", "http_status", status)
		status = s.opts.FailStatus
	}
	resp := deniedResponse(status, dec.Reason, dec.Headers, dec.Body)
	resp.DynamicMetadata = s.metadata(dec.DynamicMetadata)
	return resp
}

// deny answers a denial Gatehouse makes itself (the policy could not decide).
func (s *Server) deny(status int, reason string) *authv3.CheckResponse {
	return deniedResponse(status, reason, jsonContentType, errorBody(status, reason, ""))
}

func (s *Server) badRequest(err error) *authv3.CheckResponse {
	return deniedResponse(400, ReasonBadRequest, jsonContentType, errorBody(400, ReasonBadRequest, err.Error()))
}

var jsonContentType = []policy.Header{{Key: "content-type", Value: "application/json"}}

func errorBody(status int, reason, detail string) string {
	body := map[string]string{"error": strings.ToLower(strings.ReplaceAll(httpStatusText(status), " ", "_")), "reason": reason}
	if detail != "" {
		body["detail"] = detail
	}
	b, _ := json.Marshal(body)
	return string(b)
}

func httpStatusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Forbidden"
}

func deniedResponse(status int, reason string, headers []policy.Header, body string) *authv3.CheckResponse {
	grpcCode := code.Code_PERMISSION_DENIED
	if status == 401 {
		grpcCode = code.Code_UNAUTHENTICATED
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode), Message: reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headerOptions(headers),
			Body:    body,
		}},
	}
}

// headerOptions maps policy headers to Envoy's. The first value of a name
// overwrites (append=false, set explicitly: older Envoys read only this field)
// and later values of the same name are appended.
func headerOptions(hs []policy.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, 0, len(hs))
	seen := make(map[string]bool, len(hs))
	for _, h := range hs {
		name := strings.ToLower(h.Key)
		out = append(out, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: name, Value: h.Value},
			Append: appendValue(seen[name]),
		})
		seen[name] = true
	}
	return out
}

func (s *Server) metadata(m map[string]any) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		s.opts.Logger.Warn("dropping dynamic_metadata that is not JSON-compatible", slog.String("error", err.Error()))
		return nil
	}
	return st
}

// stamp puts the decision id on resp: in dynamic_metadata (decision_id) on
// every answer, for Envoy's access log, and as a header on denials, for the
// client.
func (s *Server) stamp(resp *authv3.CheckResponse, id string) {
	if resp == nil {
		return
	}
	idValue := structpb.NewStringValue(id)
	if resp.DynamicMetadata == nil {
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{"decision_id": idValue}}
	} else {
		if resp.DynamicMetadata.Fields == nil {
			resp.DynamicMetadata.Fields = map[string]*structpb.Value{}
		}
		resp.DynamicMetadata.Fields["decision_id"] = idValue
	}
	if d := resp.GetDeniedResponse(); d != nil {
		d.Headers = append(d.Headers, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: DecisionIDHeader, Value: id},
			Append: appendFalse,
		})
	}
}

// Shared, never modified: a CheckResponse only reads them when marshalled,
// so every response can point at the same two values instead of allocating.
var (
	appendFalse = wrapperspb.Bool(false)
	appendTrue  = wrapperspb.Bool(true)
)

func appendValue(b bool) *wrapperspb.BoolValue {
	if b {
		return appendTrue
	}
	return appendFalse
}
