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
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// errBadRequest marks request problems that answer 400 rather than the
// policy's decision: an unparsable path, query or body.
var errBadRequest = errors.New("bad request")

// limitError is a request over one of the Limits: it answers Status
// (431, 414) with ReasonRequestTooLarge before any policy runs.
type limitError struct {
	Status int
	What   string
}

func (e *limitError) Error() string { return "request too large: " + e.What }

// request is the view of a CheckRequest that Go needs to establish the facts:
// lower-cased headers, the path split from its query, the body. It builds the
// policy input on demand (BuildInput).
type request struct {
	check   *authv3.CheckRequest
	headers map[string]string
	// rawPath is the path as sent, without query and fragment, from http.path
	// or :path when that is empty: the one path every decision reads
	// (input.request_path; parsed_path is its decoded form).
	rawPath  string
	path     string // rawPath percent-decoded
	rawQuery string
	query    url.Values
	host     string // http.host, or :authority
	body     []byte
	peer     string
	// rebuilt: headers were rebuilt from header_map or lower-cased, so the
	// input's attributes must carry them too (policies read them there).
	rebuilt bool

	// plans is the server's cache of input.attributes plans; nil builds
	// the plan on each BuildInput.
	plans *plans

	// Facts established by the server, for the policy.
	facts        policy.Facts
	tokenFacts   policy.TokenFacts
	ip           clientip.Result
	token        *jwt.Result
	maxParseBody int
	maxJSONDepth int
}

func newRequest(req *authv3.CheckRequest, lim *Limits) (*request, error) {
	if err := codecRefusal(req); err != nil {
		return nil, err
	}
	http := req.GetAttributes().GetRequest().GetHttp()
	r := &request{check: req, headers: http.GetHeaders()}
	headerMap := http.GetHeaderMap().GetHeaders()
	// Limits first, before anything is copied or parsed.
	if n := len(r.headers) + len(headerMap); n > lim.MaxHeaders {
		return nil, &limitError{431, fmt.Sprintf("%d headers (limit %d)", n, lim.MaxHeaders)}
	}
	size := 0
	for k, v := range r.headers {
		size += len(k) + len(v)
	}
	for _, h := range headerMap {
		size += len(h.GetKey()) + len(h.GetValue()) + len(h.GetRawValue())
	}
	if size > lim.MaxHeaderBytes {
		return nil, &limitError{431, fmt.Sprintf("%d bytes of headers (limit %d)", size, lim.MaxHeaderBytes)}
	}
	if len(r.headers) == 0 && len(headerMap) > 0 {
		r.rebuilt = true
		// encode_raw_headers: Envoy sends header_map instead of headers. Its
		// order is the request's, so merging repeated names is deterministic.
		r.headers = make(map[string]string, len(headerMap))
		for _, h := range headerMap {
			v := h.GetValue()
			if v == "" {
				if !utf8.Valid(h.GetRawValue()) {
					// The gRPC decoder refuses invalid UTF-8 in every string
					// field; a raw value is bytes, so it is checked here. Both
					// front ends answer such headers 400.
					return nil, fmt.Errorf("%w: header %q is not valid UTF-8", errBadRequest, h.GetKey())
				}
				v = string(h.GetRawValue())
			}
			mergeHeader(r.headers, strings.ToLower(h.GetKey()), v)
		}
	} else if !lowerKeys(r.headers) {
		r.rebuilt = true
		// Envoy always lower-cases header names; other clients may not. Normalise
		// once so that policies and the facts never depend on a client's casing,
		// merging names that differ only in case in sorted order: map order is
		// random, and the same request must always get the same decision.
		keys := make([]string, 0, len(r.headers))
		for k := range r.headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		lowered := make(map[string]string, len(r.headers))
		for _, k := range keys {
			mergeHeader(lowered, strings.ToLower(k), r.headers[k])
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
	if len(raw) > lim.MaxPathBytes {
		return nil, &limitError{414, fmt.Sprintf("path of %d bytes (limit %d)", len(raw), lim.MaxPathBytes)}
	}
	// A fragment never travels in a request; a "#" in the path is read as a
	// fragment by some (Gatehouse would cut "/healthz#/../admin" to
	// "/healthz") and as a character by others (an upstream that normalises
	// it to "/admin"). No decision may rest on a reading the upstream may not
	// share: refuse it, before any decision, native or custom.
	if strings.IndexByte(raw, '#') >= 0 {
		return nil, fmt.Errorf("%w: path: contains '#' (a fragment is never part of a request target)", errBadRequest)
	}
	// Split by hand rather than with url.Parse, which reads "//admin/x" as a
	// host and a path ("/x"): policies must see the path the upstream gets.
	// The query is never part of an error message (it may carry a token).
	r.rawPath, r.rawQuery, _ = strings.Cut(raw, "?")
	path, err := url.PathUnescape(r.rawPath)
	if err != nil {
		return nil, fmt.Errorf("%w: path: %v", errBadRequest, err)
	}
	if !utf8.ValidString(path) {
		// "%C0%AE" is an overlong ".": an upstream that decodes it leniently
		// reads a dot segment that the path rules never saw.
		return nil, fmt.Errorf("%w: path: percent-decodes to invalid UTF-8", errBadRequest)
	}
	r.path = path
	if r.rawQuery != "" {
		// A query Go cannot read whole (a bad escape, a ";" separator, too
		// many parameters) is refused rather than read in part: a policy
		// must never decide on half a query, nor the token finder miss a
		// parameter. OPA-Envoy answers 400 too.
		if n := strings.Count(r.rawQuery, "&") + 1; n > lim.MaxQueryParams {
			return nil, fmt.Errorf("%w: query: more than %d parameters", errBadRequest, lim.MaxQueryParams)
		}
		if r.query, err = url.ParseQuery(r.rawQuery); err != nil {
			return nil, fmt.Errorf("%w: query: %v", errBadRequest, redactQueryError(err))
		}
	}
	r.host = http.GetHost()
	if r.host == "" {
		r.host = r.headers[":authority"]
	}
	if r.host != "" && !ValidHost(r.host) {
		// Host-scoped rules compare the host: one the upstream may read
		// differently ("api.example.com#", "a.%2e") must not decide.
		return nil, fmt.Errorf("%w: host is not a valid host[:port]", errBadRequest)
	}
	if http.GetBody() != "" {
		r.body = []byte(http.GetBody())
	} else {
		r.body = http.GetRawBody()
	}
	r.peer = req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	return r, nil
}

// redactQueryError keeps a query parse error's kind but not the text it
// quotes, which may be part of a token.
func redactQueryError(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "semicolon"):
		return "invalid semicolon separator"
	case strings.Contains(msg, "escape"):
		return "invalid percent-escape"
	case strings.Contains(msg, "too many"):
		return "too many parameters"
	}
	return "unparsable query string"
}

func mergeHeader(m map[string]string, k, v string) {
	if prev, ok := m[k]; ok {
		v = prev + "," + v
	}
	m[k] = v
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

// BuildInput assembles the policy input: OPA-Envoy's document, unchanged,
// plus Gatehouse's facts (request_path, client IP, token result), limited to
// the parts need says the policy can read. The body is parsed whenever there
// is one, read or not, so that an unparsable body answers 400 under every
// policy, as in OPA-Envoy.
func (r *request) BuildInput(need *policy.Need) (ast.Object, error) {
	// The items are gathered first and the object built at once: one block
	// for its elements instead of an allocation per Insert.
	var buf [16][2]*ast.Term
	items := buf[:0]
	add := func(key string, t *ast.Term) { items = append(items, [2]*ast.Term{ast.InternedTerm(key), t}) }
	if n := need.Child("attributes"); n != nil && r.check.GetAttributes() != nil {
		var plan *msgPlan
		if r.plans != nil {
			plan = r.plans.attributes(n)
		} else {
			plan = newMsgPlan(attributesDescriptor, n)
		}
		attrs := plan.value(r.check.GetAttributes().ProtoReflect()).(ast.Object)
		if r.rebuilt && n.Child("request").Child("http").Child("headers") != nil {
			replaceHeaders(attrs, r.headers)
		}
		add("attributes", ast.NewTerm(attrs))
	}
	if need.Child("version") != nil {
		add("version", versionValue)
	}
	if need.Child("parsed_path") != nil {
		add("parsed_path", ast.NewTerm(parsedPath(r.path)))
	}
	if need.Child("parsed_query") != nil {
		add("parsed_query", ast.NewTerm(stringsMap(r.query)))
	}
	if need.Child("request_path") != nil {
		add("request_path", ast.StringTerm(r.rawPath))
	}
	truncated := r.truncated()
	if need.Child("truncated_body") != nil {
		add("truncated_body", ast.InternedTerm(truncated))
	}
	// Parsing costs many times the body's size in memory: bodies over the
	// limit are left unparsed (parsed_body absent), like a truncated one.
	if len(r.body) > 0 && len(r.body) <= r.maxParseBody && !truncated {
		body, err := parseBodyValue(r.headers["content-type"], r.body, r.maxJSONDepth)
		if err != nil {
			return nil, err
		}
		if body != nil && need.Child("parsed_body") != nil {
			add("parsed_body", ast.NewTerm(body))
		}
	}
	if p := r.check.GetAttributes().GetSource().GetPrincipal(); p != "" && need.Child("source_principal") != nil {
		add("source_principal", ast.StringTerm(p))
	}
	if need.Child("client_ip") != nil {
		add("client_ip", ast.StringTerm(r.ip.ClientIP()))
	}
	if need.Child("client_ip_source") != nil {
		add("client_ip_source", ast.StringTerm(r.ip.Source))
	}
	if r.ip.Fallback != "" && need.Child("client_ip_fallback") != nil {
		add("client_ip_fallback", ast.StringTerm(r.ip.Fallback))
	}
	if r.token != nil && need.Child("jwt") != nil {
		jv, err := tokenValue(r.token)
		if err != nil {
			return nil, err
		}
		add("jwt", ast.NewTerm(jv))
	}
	return ast.NewObject(items...), nil
}

// buildFacts fills r.facts from what the server established.
func (r *request) buildFacts(ip clientip.Result, tok *jwt.Result) *policy.Facts {
	r.ip, r.token = ip, tok
	attrs := r.check.GetAttributes()
	r.facts = policy.Facts{
		Headers:          r.headers,
		Path:             r.rawPath,
		Host:             r.host,
		ClientIP:         ip.Addr,
		ClientIPFallback: ip.Fallback,
		Method:           attrs.GetRequest().GetHttp().GetMethod(),
		Port:             attrs.GetDestination().GetAddress().GetSocketAddress().GetPortValue(),
		Peer:             r.peer,
		SourcePrincipal:  attrs.GetSource().GetPrincipal(),
	}
	if tok != nil {
		r.tokenFacts = policy.TokenFacts{Valid: tok.Valid, Error: tok.Error, Provider: tok.Provider, Claims: tok.Claims}
		r.facts.Token = &r.tokenFacts
	}
	return &r.facts
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
	items := make([][2]*ast.Term, 0, len(m))
	for k, vs := range m {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(terms...)})
	}
	return ast.NewObject(items...)
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
func parseBodyValue(contentType string, body []byte, maxDepth int) (ast.Value, error) {
	switch {
	case strings.Contains(contentType, "application/json"):
		v, err := jsonValue(body, maxDepth)
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
		return multipartValue(contentType, body, maxDepth)
	}
	return nil, nil
}

// jsonValue parses one JSON document nested at most maxDepth deep: nesting
// costs the parser stack and memory, and no policy needs hundreds of levels.
func jsonValue(b []byte, maxDepth int) (ast.Value, error) {
	if d := jsonDepth(b); d > maxDepth {
		return nil, fmt.Errorf("nested %d deep (limit %d)", d, maxDepth)
	}
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
// (file parts included) is a string. A content type without a boundary
// parameter leaves parsed_body absent and the policy decides, as in
// OPA-Envoy (which gives null); an unparsable content type or an empty
// boundary is a 400.
func multipartValue(contentType string, body []byte, maxDepth int) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("%w: multipart content type: %v", errBadRequest, err)
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, nil
	}
	if boundary == "" {
		return nil, fmt.Errorf("%w: multipart body with an empty boundary", errBadRequest)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	values := map[string][]*ast.Term{}
	var names []string
	for {
		part, err := mr.NextPart()
		// Only a bare EOF ends the parts: NextPart wraps the EOF of a body
		// that never shows its boundary, which is malformed (400), as in
		// OPA-Envoy.
		if err == io.EOF {
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
			if v, err = jsonValue(content, maxDepth); err != nil {
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
	if len(tok.Claims) > 0 {
		// Numbers keep the token's digits (json.Number), not float64's.
		v, err := ast.ValueFromReader(bytes.NewReader(tok.Claims))
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

// jsonDepth is the deepest nesting of arrays and objects in b, counted
// without parsing (brackets inside strings do not count).
func jsonDepth(b []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}
