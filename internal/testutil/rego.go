package testutil

// DocsPolicy is an OPA-Envoy policy in the style of OPA's Envoy tutorial: it
// reads parsed_path, parsed_query and parsed_body, not the token. The
// benchmarks, the allocation budget, the evaluator's differential test and
// the end-to-end harness's docs scenario all run this one file.
const DocsPolicy = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

# Anyone may list people, in the languages the service speaks.
allow if {
	http_request.method == "GET"
	input.parsed_path == ["people"]
	every lang in object.get(input.parsed_query, "lang", []) {
		lang in {"en", "fr", "de"}
	}
}

# One person may be read by id.
allow if {
	http_request.method == "GET"
	input.parsed_path = ["people", id]
	regex.match("^[0-9]+$", id)
}

# A person may be added with a first name that is not reserved.
allow if {
	http_request.method == "POST"
	input.parsed_path == ["people"]
	is_string(input.parsed_body.firstname)
	not lower(input.parsed_body.firstname) in {"admin", "root"}
}

# Nobody may delete.
allow := false if http_request.method == "DELETE"
`
