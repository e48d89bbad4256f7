# The parsed_path / parsed_query example in the style of OPA-Envoy's docs.
package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["people"]
	input.parsed_query.lang == ["en"]
}
