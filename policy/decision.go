package policy

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Reasons for an evaluation that produced no usable decision. The caller
// denies the request with the configured fail status and logs the reason.
const (
	// ReasonUndefined means the decision rule was undefined for the input.
	ReasonUndefined = "policy_undefined"
	// ReasonBadResult means the decision was not a boolean or a well-formed
	// OPA-Envoy result object.
	ReasonBadResult = "policy_bad_result"
	// ReasonError means evaluation failed: a runtime or built-in error,
	// conflicting rule outputs, or a cancelled request context.
	ReasonError = "policy_error"
	// ReasonTimeout means evaluation ran past its deadline (the server's
	// evaluation deadline or the one the client sent) and was cut off.
	ReasonTimeout = "policy_timeout"
)

// EvalError is the error Eval returns when the policy produced no usable
// decision. Reason is one of ReasonUndefined, ReasonBadResult or ReasonError.
type EvalError struct {
	Reason string
	Err    error
}

// Error implements error.
func (e *EvalError) Error() string {
	if e.Err == nil {
		return "policy: " + e.Reason
	}
	return "policy: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *EvalError) Unwrap() error { return e.Err }

// Header is a header (or query parameter) name and one value.
type Header struct{ Key, Value string }

// Decision is the policy's answer for one request, read from the decision
// rule's value: either a boolean or an OPA-Envoy result object.
type Decision struct {
	// Allowed is the outcome.
	Allowed bool
	// HTTPStatus is the status of a denied response; 0 when the policy did not
	// set one.
	HTTPStatus int
	// Headers are added to the upstream request on allow and sent to the
	// client on deny. Keys are sorted; a list value gives one entry per item.
	Headers []Header
	// ResponseHeadersToAdd are sent to the client on allow.
	ResponseHeadersToAdd []Header
	// RequestHeadersToRemove are removed from the upstream request on allow.
	RequestHeadersToRemove []string
	// QueryParametersToSet are set on the upstream request on allow.
	QueryParametersToSet []Header
	// QueryParametersToRemove are removed from the upstream request on allow.
	QueryParametersToRemove []string
	// Body is the body of a denied response.
	Body string
	// DynamicMetadata is passed to Envoy as dynamic metadata, as values
	// structpb.NewStruct accepts (numbers are float64).
	DynamicMetadata map[string]any
	// Reason is the Gatehouse extension key "reason": a machine-readable
	// reason for the decision log.
	Reason string
	// Bypass is the Gatehouse extension key "bypass": the request was allowed
	// by the trusted-IP bypass.
	Bypass bool
	// Revision is the policy revision that decided.
	Revision string
	// Audit names the authorization audit rules the request matched (the
	// Gatehouse extension key "audit"); they never change the decision.
	Audit []string
}

// OPA-Envoy result keys, and Gatehouse's two extensions.
const (
	keyAllowed                 = "allowed"
	keyHeaders                 = "headers"
	keyResponseHeadersToAdd    = "response_headers_to_add"
	keyRequestHeadersToRemove  = "request_headers_to_remove"
	keyQueryParametersToSet    = "query_parameters_to_set"
	keyQueryParametersToRemove = "query_parameters_to_remove"
	keyBody                    = "body"
	keyHTTPStatus              = "http_status"
	keyDynamicMetadata         = "dynamic_metadata"
	keyReason                  = "reason"
	keyBypass                  = "bypass"
	keyAudit                   = "audit"
)

// parseResult reads a decision from the decision rule's value, with
// OPA-Envoy's rules: a boolean, or an object whose "allowed" is a boolean.
// Unknown keys are ignored; a known key of the wrong type is an error naming
// the key, because acting on half a result could allow what the policy meant
// to deny.
func parseResult(v ast.Value) (Decision, error) {
	switch x := v.(type) {
	case ast.Boolean:
		return Decision{Allowed: bool(x)}, nil
	case ast.Object:
		return parseObject(x)
	default:
		return Decision{}, fmt.Errorf("decision must be a boolean or an object, got %s", ast.ValueName(v))
	}
}

func parseObject(obj ast.Object) (Decision, error) {
	var d Decision
	var err error
	seenAllowed := false
	obj.Until(func(k, v *ast.Term) bool {
		key, ok := k.Value.(ast.String)
		if !ok {
			return false // not a key OPA-Envoy reads
		}
		switch string(key) {
		case keyAllowed:
			b, ok := v.Value.(ast.Boolean)
			if !ok {
				err = wrongType(keyAllowed, "a boolean", v.Value)
				break
			}
			d.Allowed, seenAllowed = bool(b), true
		case keyHeaders:
			d.Headers, err = headerMap(keyHeaders, v.Value)
		case keyResponseHeadersToAdd:
			d.ResponseHeadersToAdd, err = headerMap(keyResponseHeadersToAdd, v.Value)
		case keyQueryParametersToSet:
			d.QueryParametersToSet, err = headerMap(keyQueryParametersToSet, v.Value)
		case keyRequestHeadersToRemove:
			d.RequestHeadersToRemove, err = stringList(keyRequestHeadersToRemove, v.Value)
		case keyQueryParametersToRemove:
			d.QueryParametersToRemove, err = stringList(keyQueryParametersToRemove, v.Value)
		case keyBody:
			s, ok := v.Value.(ast.String)
			if !ok {
				err = wrongType(keyBody, "a string", v.Value)
				break
			}
			d.Body = string(s)
		case keyHTTPStatus:
			d.HTTPStatus, err = httpStatus(v.Value)
		case keyDynamicMetadata:
			if _, ok := v.Value.(ast.Object); !ok {
				err = wrongType(keyDynamicMetadata, "an object", v.Value)
				break
			}
			var m any
			m, err = structValue(keyDynamicMetadata, v.Value)
			if err == nil {
				d.DynamicMetadata = m.(map[string]any)
			}
		case keyReason:
			s, ok := v.Value.(ast.String)
			if !ok {
				err = wrongType(keyReason, "a string", v.Value)
				break
			}
			d.Reason = string(s)
		case keyBypass:
			b, ok := v.Value.(ast.Boolean)
			if !ok {
				err = wrongType(keyBypass, "a boolean", v.Value)
				break
			}
			d.Bypass = bool(b)
		case keyAudit:
			d.Audit, err = stringList(keyAudit, v.Value)
		}
		return err != nil
	})
	if err != nil {
		return Decision{}, err
	}
	if !seenAllowed {
		return Decision{}, fmt.Errorf("decision object has no %q key", keyAllowed)
	}
	return d, nil
}

func wrongType(key, want string, got ast.Value) error {
	return fmt.Errorf("decision key %q must be %s, got %s", key, want, ast.ValueName(got))
}

// headerMap reads an object of name to string or list of strings, as
// OPA-Envoy accepts for headers and query parameters. Names are sorted so the
// response is the same on every evaluation; list items keep their order.
func headerMap(key string, v ast.Value) ([]Header, error) {
	if arr, ok := v.(*ast.Array); ok {
		// OPA-Envoy also takes a list of such objects, applied in order (a
		// way to repeat a header name).
		var out []Header
		for i := range arr.Len() {
			hs, err := headerMap(fmt.Sprintf("%s[%d]", key, i), arr.Elem(i).Value)
			if err != nil {
				return nil, err
			}
			out = append(out, hs...)
		}
		return out, nil
	}
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wrongType(key, "an object or a list of objects", v)
	}
	var out []Header
	var err error
	obj.Until(func(k, val *ast.Term) bool {
		name, ok := k.Value.(ast.String)
		if !ok {
			err = fmt.Errorf("decision key %q: names must be strings, got %s", key, ast.ValueName(k.Value))
			return true
		}
		switch x := val.Value.(type) {
		case ast.String:
			out = append(out, Header{Key: string(name), Value: string(x)})
		case *ast.Array, ast.Set:
			var values []string
			values, err = stringList(key+"."+string(name), x)
			for _, value := range values {
				out = append(out, Header{Key: string(name), Value: value})
			}
		default:
			err = fmt.Errorf("decision key %q: value of %q must be a string or a list of strings, got %s",
				key, string(name), ast.ValueName(x))
		}
		return err != nil
	})
	if err != nil {
		return nil, err
	}
	// Stable, so the values of one name keep the policy's order.
	slices.SortStableFunc(out, func(a, b Header) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

// stringList reads an array (or set) of strings.
func stringList(key string, v ast.Value) ([]string, error) {
	var out []string
	var bad ast.Value
	collect := func(t *ast.Term) bool {
		s, ok := t.Value.(ast.String)
		if !ok {
			bad = t.Value
			return true
		}
		out = append(out, string(s))
		return false
	}
	switch x := v.(type) {
	case *ast.Array:
		out = make([]string, 0, x.Len())
		x.Until(collect)
	case ast.Set:
		out = make([]string, 0, x.Len())
		x.Until(collect)
	default:
		return nil, wrongType(key, "a list of strings", v)
	}
	if bad != nil {
		return nil, fmt.Errorf("decision key %q must be a list of strings, found %s", key, ast.ValueName(bad))
	}
	return out, nil
}

// httpStatus reads http_status: an integer Envoy accepts as a status code.
func httpStatus(v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, wrongType(keyHTTPStatus, "a number", v)
	}
	status, ok := n.Int()
	if !ok || status < 100 || status > 599 {
		return 0, fmt.Errorf("decision key %q must be an HTTP status (100-599), got %s", keyHTTPStatus, n)
	}
	return status, nil
}

// structValue converts v to the Go values structpb.NewValue accepts:
// map[string]any, []any, string, float64, bool and nil. Sets become lists.
func structValue(key string, v ast.Value) (any, error) {
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case ast.Boolean:
		return bool(x), nil
	case ast.String:
		return string(x), nil
	case ast.Number:
		f, ok := x.Float64()
		if !ok {
			return nil, fmt.Errorf("decision key %q: number %s does not fit a float64", key, x)
		}
		return f, nil
	case *ast.Array:
		return structList(key, x)
	case ast.Set:
		return structList(key, x)
	case ast.Object:
		out := make(map[string]any, x.Len())
		var err error
		x.Until(func(k, t *ast.Term) bool {
			name, ok := k.Value.(ast.String)
			if !ok {
				err = fmt.Errorf("decision key %q: object keys must be strings, got %s", key, ast.ValueName(k.Value))
				return true
			}
			out[string(name)], err = structValue(key, t.Value)
			return err != nil
		})
		return out, err
	default:
		return nil, fmt.Errorf("decision key %q: %s is not a JSON value", key, ast.ValueName(v))
	}
}

// termList is what arrays and sets share: a length and ordered iteration.
type termList interface {
	Len() int
	Until(func(*ast.Term) bool) bool
}

func structList(key string, l termList) ([]any, error) {
	out := make([]any, 0, l.Len())
	var err error
	l.Until(func(t *ast.Term) bool {
		var item any
		item, err = structValue(key, t.Value)
		out = append(out, item)
		return err != nil
	})
	return out, err
}

// value is d as the result document the embedded Rego decision gives
// (allowed, reason, bypass; http_status, headers and body on denials): what
// a custom policy reads at input.gatehouse.decision.
func (d Decision) value() ast.Object {
	obj := ast.NewObject(
		ast.Item(ast.InternedTerm(keyAllowed), ast.InternedTerm(d.Allowed)),
		ast.Item(ast.InternedTerm(keyReason), ast.StringTerm(d.Reason)),
	)
	if len(d.Audit) > 0 {
		names := make([]*ast.Term, len(d.Audit))
		for i, n := range d.Audit {
			names[i] = ast.StringTerm(n)
		}
		obj.Insert(ast.InternedTerm(keyAudit), ast.ArrayTerm(names...))
	}
	if d.Allowed {
		obj.Insert(ast.InternedTerm(keyBypass), ast.InternedTerm(d.Bypass))
		return obj
	}
	headers := ast.NewObject()
	for _, h := range d.Headers {
		headers.Insert(ast.StringTerm(h.Key), ast.StringTerm(h.Value))
	}
	obj.Insert(ast.InternedTerm(keyHTTPStatus), ast.InternedTerm(d.HTTPStatus))
	obj.Insert(ast.InternedTerm(keyHeaders), ast.NewTerm(headers))
	obj.Insert(ast.InternedTerm(keyBody), ast.StringTerm(d.Body))
	return obj
}
