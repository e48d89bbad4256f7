# An object result using every key OPA-Envoy understands (decision path
# envoy/authz/result), in the style of OPA-Envoy's docs.
package envoy.authz

default allow := false

allow if input.attributes.request.http.headers["x-role"] == "admin"

default status_code := 403

status_code := 200 if allow

status_code := 401 if not input.attributes.request.http.headers["x-role"]

headers["x-ext-auth-allow"] := "yes" if allow

headers["x-validated-by"] := ["security-checkpoint", "gatehouse"] if allow

headers["x-denied-by"] := "policy" if not allow

default body := ""

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

result := {
	"allowed": allow,
	"headers": headers,
	"response_headers_to_add": {"x-foo": "bar"},
	"request_headers_to_remove": ["one-auth-header", "another-auth-header"],
	"query_parameters_to_set": {"lang": "en"},
	"query_parameters_to_remove": ["debug"],
	"body": body,
	"http_status": status_code,
	"dynamic_metadata": {"role": object.get(input.attributes.request.http.headers, "x-role", "none"), "score": 7},
}
