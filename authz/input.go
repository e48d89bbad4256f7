package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
)

// errBadRequest marks request problems that answer 400 rather than the
// policy's decision: an unparsable path or body.
var errBadRequest = errors.New("bad request")

// request is the view of a CheckRequest that Go needs to establish the facts:
// lower-cased headers, the path split from its query, the body.
type request struct {
	check   *authv3.CheckRequest
	headers map[string]string
	path    string // without the query string
	query   url.Values
	body    []byte
	peer    string
	// rebuilt: headers were rebuilt from header_map or lower-cased, so the
	// input's attributes must carry them too (policies read them there).
	rebuilt bool
}

func newRequest(req *authv3.CheckRequest) (*request, error) {
	http := req.GetAttributes().GetRequest().GetHttp()
	r := &request{check: req, headers: http.GetHeaders()}
	if len(r.headers) == 0 && len(http.GetHeaderMap().GetHeaders()) > 0 {
		r.rebuilt = true
		// encode_raw_headers: Envoy sends header_map instead of headers.
		r.headers = make(map[string]string, len(http.GetHeaderMap().GetHeaders()))
		for _, h := range http.GetHeaderMap().GetHeaders() {
			v := h.GetValue()
			if v == "" {
				v = string(h.GetRawValue())
			}
			k := strings.ToLower(h.GetKey())
			if prev, ok := r.headers[k]; ok {
				v = prev + "," + v
			}
			r.headers[k] = v
		}
	} else if !lowerKeys(r.headers) {
		r.rebuilt = true
		// Envoy always lower-cases header names; other clients may not. Normalise
		// once so that policies and the facts never depend on a client's casing.
		lowered := make(map[string]string, len(r.headers))
		for k, v := range r.headers {
			k = strings.ToLower(k)
			if prev, ok := lowered[k]; ok {
				v = prev + "," + v
			}
			lowered[k] = v
		}
		r.headers = lowered
	}
	if r.headers == nil {
		r.headers = map[string]string{}
	}
	raw := http.GetPath()
	if raw == "" {
		raw = r.headers[":path"]
	}
	// Split by hand rather than with url.Parse, which reads "//admin/x" as a
	// host and a path ("/x"): policies must see the path the upstream gets.
	// The query is never part of an error message (it may carry a token).
	raw, _, _ = strings.Cut(raw, "#")
	rawPath, rawQuery, _ := strings.Cut(raw, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, fmt.Errorf("%w: path: %v", errBadRequest, err)
	}
	r.path = path
	r.query, _ = url.ParseQuery(rawQuery) // like url.URL.Query: bad pairs are dropped
	if http.GetBody() != "" {
		r.body = []byte(http.GetBody())
	} else {
		r.body = http.GetRawBody()
	}
	r.peer = req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	return r, nil
}

func lowerKeys(m map[string]string) bool {
	for k := range m {
		for i := 0; i < len(k); i++ {
			if c := k[i]; 'A' <= c && c <= 'Z' {
				return false
			}
		}
	}
	return true
}

var versionValue = ast.MustParseTerm(`{"ext_authz": "v3", "encoding": "protojson"}`)

// buildInput assembles the policy input: OPA-Envoy's document, unchanged, plus
// Gatehouse's facts (client IP, token result).
func buildInput(r *request, ip clientip.Result, tok *jwt.Result, maxParseBody int) (ast.Value, error) {
	attrs := messageValue(r.check.GetAttributes().ProtoReflect()).(ast.Object)
	if r.rebuilt {
		replaceHeaders(attrs, r.headers)
	}
	in := ast.NewObject(
		ast.Item(ast.InternedTerm("attributes"), ast.NewTerm(attrs)),
		ast.Item(ast.InternedTerm("version"), versionValue),
		ast.Item(ast.InternedTerm("parsed_path"), ast.NewTerm(parsedPath(r.path))),
		ast.Item(ast.InternedTerm("parsed_query"), ast.NewTerm(stringsMap(r.query))),
	)
	truncated := r.truncated()
	in.Insert(ast.InternedTerm("truncated_body"), ast.InternedTerm(truncated))
	// Parsing costs many times the body's size in memory: bodies over the
	// limit are left unparsed (parsed_body absent), like a truncated one.
	if len(r.body) > 0 && len(r.body) <= maxParseBody && !truncated {
		body, err := parseBodyValue(r.headers["content-type"], r.body)
		if err != nil {
			return nil, err
		}
		if body != nil {
			in.Insert(ast.InternedTerm("parsed_body"), ast.NewTerm(body))
		}
	}
	if p := r.check.GetAttributes().GetSource().GetPrincipal(); p != "" {
		in.Insert(ast.InternedTerm("source_principal"), ast.StringTerm(p))
	}
	clientIP := ""
	if ip.Addr.IsValid() {
		clientIP = ip.Addr.String()
	}
	in.Insert(ast.InternedTerm("client_ip"), ast.StringTerm(clientIP))
	in.Insert(ast.InternedTerm("client_ip_source"), ast.StringTerm(ip.Source))
	if ip.Fallback != "" {
		in.Insert(ast.InternedTerm("client_ip_fallback"), ast.StringTerm(ip.Fallback))
	}
	if tok != nil {
		jv, err := tokenValue(tok)
		if err != nil {
			return nil, err
		}
		in.Insert(ast.InternedTerm("jwt"), ast.NewTerm(jv))
	}
	return in, nil
}

func replaceHeaders(attrs ast.Object, headers map[string]string) {
	req := objectAt(attrs, "request")
	http := objectAt(req, "http")
	if http == nil {
		return
	}
	obj := ast.NewObject()
	for k, v := range headers {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	http.Insert(ast.StringTerm("headers"), ast.NewTerm(obj))
}

func objectAt(obj ast.Object, key string) ast.Object {
	if obj == nil {
		return nil
	}
	t := obj.Get(ast.StringTerm(key))
	if t == nil {
		return nil
	}
	o, _ := t.Value.(ast.Object)
	return o
}

// parsedPath follows OPA-Envoy: the decoded path with its leading slashes
// trimmed, split on "/" ("/" gives [""]).
func parsedPath(path string) ast.Value {
	parts := strings.Split(strings.TrimLeft(path, "/"), "/")
	terms := make([]*ast.Term, len(parts))
	for i, p := range parts {
		terms[i] = ast.StringTerm(p)
	}
	return ast.NewArray(terms...)
}

func stringsMap(m map[string][]string) ast.Value {
	obj := ast.NewObject()
	for k, vs := range m {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(terms...))
	}
	return obj
}

// truncated reports a partial body: Envoy says so, or content-length is
// larger than what arrived.
func (r *request) truncated() bool {
	if strings.EqualFold(r.headers["x-envoy-auth-partial-body"], "true") {
		return true
	}
	if cl, ok := r.headers["content-length"]; ok && len(r.body) > 0 {
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		return err == nil && n > int64(len(r.body))
	}
	return false
}

// parseBodyValue parses JSON, URL-encoded forms and multipart forms, matching
// the content type as OPA-Envoy does (by substring, so parameters and odd
// spellings still parse); other content types have no parsed_body. A body
// that claims one of these types but does not parse is a 400.
func parseBodyValue(contentType string, body []byte) (ast.Value, error) {
	switch {
	case strings.Contains(contentType, "application/json"):
		v, err := jsonValue(body)
		if err != nil {
			return nil, fmt.Errorf("%w: body is not valid JSON: %v", errBadRequest, err)
		}
		return v, nil
	case strings.Contains(contentType, "application/x-www-form-urlencoded"):
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("%w: form body: %v", errBadRequest, err)
		}
		return stringsMap(vals), nil
	case strings.Contains(contentType, "multipart/form-data"):
		return multipartValue(contentType, body)
	}
	return nil, nil
}

func jsonValue(b []byte) (ast.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON value")
	}
	return ast.InterfaceToValue(x)
}

// multipartValue maps each named part to the list of its values, as
// OPA-Envoy does: a part whose content type is JSON is parsed, any other
// (file parts included) is a string.
func multipartValue(contentType string, body []byte) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return nil, fmt.Errorf("%w: multipart body without a boundary", errBadRequest)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	values := map[string][]*ast.Term{}
	var names []string
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: multipart body: %v", errBadRequest, err)
		}
		name := part.FormName()
		if name == "" {
			continue
		}
		// The whole body is already in memory and bounded by the parse limit.
		content, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("%w: multipart body: %v", errBadRequest, err)
		}
		var v ast.Value = ast.String(content)
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			if v, err = jsonValue(content); err != nil {
				return nil, fmt.Errorf("%w: multipart part %q is not valid JSON: %v", errBadRequest, name, err)
			}
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = append(values[name], ast.NewTerm(v))
	}
	obj := ast.NewObject()
	for _, name := range names {
		obj.Insert(ast.StringTerm(name), ast.ArrayTerm(values[name]...))
	}
	return obj, nil
}

// tokenValue is input.jwt: {valid, provider, claims, error}.
func tokenValue(tok *jwt.Result) (ast.Value, error) {
	var claims ast.Value = ast.NewObject()
	if tok.Claims != nil {
		v, err := ast.InterfaceToValue(tok.Claims)
		if err != nil {
			return nil, fmt.Errorf("token claims: %w", err)
		}
		claims = v
	}
	return ast.NewObject(
		ast.Item(ast.InternedTerm("valid"), ast.InternedTerm(tok.Valid)),
		ast.Item(ast.InternedTerm("provider"), ast.StringTerm(tok.Provider)),
		ast.Item(ast.InternedTerm("claims"), ast.NewTerm(claims)),
		ast.Item(ast.InternedTerm("error"), ast.StringTerm(tok.Error)),
	), nil
}
