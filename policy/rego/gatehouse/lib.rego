# METADATA
# title: Gatehouse policy helpers
# description: |
#   Request facts and header-rule evaluators shared by the default policy
#   (data.gatehouse.authz) and by users' own policies. See docs/policies.md.
package gatehouse.lib

# --- Request facts -----------------------------------------------------------

# header(name) is the value of request header name (any case), repeated headers
# comma-joined as Envoy sends them; undefined when the header is absent. Envoy
# lower-cases header names, so this is a single map lookup.
header(name) := input.attributes.request.http.headers[lower(name)]

# request_path is the request path without the query string and fragment, as
# sent (not percent-decoded; input.parsed_path has the decoded segments).
# Gatehouse establishes it once, in Go, as input.request_path (from http.path,
# or :path when http.path is empty), so parsed_path and every rule read the
# same path. Inputs built elsewhere (tests, `gatehousectl policy eval`) fall
# back to http.path.
default request_path := ""

request_path := input.request_path if {
	is_string(input.request_path)
} else := split(split(input.attributes.request.http.path, "?")[0], "#")[0]

# request_host is the requested host, lower-cased, without port or trailing dot.
default request_host := ""

request_host := normalize_host(_raw_host)

_raw_host := input.attributes.request.http.host if {
	input.attributes.request.http.host != ""
} else := header(":authority")

# normalize_host(h) lower-cases h and drops a port and a trailing dot:
# "API.Example.com.:8443" -> "api.example.com", "[2001:db8::1]:443" -> "[2001:db8::1]".
normalize_host(h) := lower(substring(h, 0, indexof(h, "]") + 1)) if {
	startswith(h, "[")
	indexof(h, "]") > 0
} else := trim_suffix(lower(split(h, ":")[0]), ".")

# path_has_prefix(path, prefix) compares whole segments: "/api" matches "/api"
# and "/api/v1", not "/apiary". A prefix ending in "/" matches what starts with
# it. This is the narrow reading, used for bypass.paths (a permission); scoped
# rules (restrictions) use scope_prefix_matches, which is wider.
path_has_prefix(path, prefix) if path == prefix

path_has_prefix(path, prefix) if {
	endswith(prefix, "/")
	startswith(path, prefix)
}

path_has_prefix(path, prefix) if {
	not endswith(prefix, "/")
	startswith(path, concat("", [prefix, "/"]))
}

# path_ambiguous(path) holds for a raw path an upstream may read as another
# path: dot segments, doubled slashes, backslashes, any percent-escape (an
# upstream may decode "%61dmin" or "%2F") and any ";" (matrix parameters that
# some servers strip). Such a path never gets the trusted-IP bypass and is
# subject to every scoped rule of its host, so it cannot dodge a rule by
# pretending to be elsewhere.
path_ambiguous(path) if regex.match(`(^|/)\.\.?($|/)|//|\\|%|;`, path)

request_path_ambiguous if path_ambiguous(request_path)

# --- Trusted-IP bypass -------------------------------------------------------

# trusted_ip holds when input.client_ip lies in bypass.trusted_cidrs. The list
# is passed to gatehouse.cidr_contains as read from data (not a copy), so its
# compiled set is cached per policy revision.
trusted_ip if {
	input.client_ip != ""
	gatehouse.cidr_contains(data.gatehouse.config.bypass.trusted_cidrs, input.client_ip)
}

# bypass_path_ok holds when bypass.paths is empty, or the (unambiguous)
# request path has one of its prefixes.
bypass_path_ok if count(data.gatehouse.config.bypass.paths) == 0

bypass_path_ok if {
	not request_path_ambiguous
	some prefix in data.gatehouse.config.bypass.paths
	path_has_prefix(request_path, prefix)
}

# bypass: the request skips authentication (decision step 2).
bypass if {
	trusted_ip
	bypass_path_ok
}

# --- Header rules ------------------------------------------------------------
#
# Each evaluator takes a list of rules in the data.gatehouse.config.headers
# format and returns the violations, in list order, as
# {"header": name, "reason": "<kind>:<name>"}; an empty array when none.
# They run per request: each looks a rule's header up once, and the common
# case (header absent, or one allowed value) costs a lookup and a comparison.

_headers := input.attributes.request.http.headers

# deny_violations(rules): a deny rule is violated when its header is present
# (and, if the rule has a regex, the value matches it anywhere).
deny_violations(rules) := [_violation("header_denied", r.name) |
	some r in rules
	value := _headers[lower(r.name)]
	_deny_match(object.get(r, "regex", ""), value)
]

_deny_match("", _)

_deny_match(re, value) if {
	re != ""
	regex.match(re, value)
}

# require_violations(rules): the header must be present (header_required) and,
# if the rule has a regex, match it (header_invalid). Regexes are unanchored:
# write ^...$ to match the whole value.
require_violations(rules) := [_violation(kind, r.name) |
	some r in rules
	kind := _require_failure(r, lower(r.name))
]

_require_failure(r, name) := "header_required" if {
	not _headers[name]
} else := "header_invalid" if {
	re := object.get(r, "regex", "")
	re != ""
	not regex.match(re, _headers[name])
}

# allow_values_violations(rules): when the header is present, each of its
# comma-separated values must be one of the rule's values. Only what HTTP
# itself strips around list elements (spaces and tabs) is trimmed: any other
# character, Unicode spaces included, reaches the upstream and so must match.
allow_values_violations(rules) := [_violation("header_value_not_allowed", r.name) |
	some r in rules
	value := _headers[lower(r.name)]
	_has_disallowed_value(value, r.values)
]

_has_disallowed_value(value, allowed) if {
	not value in allowed # fast path: a single allowed value
	some part in split(value, ",")
	not trim(part, " \t") in allowed
}

_violation(kind, name) := {"header": lower(name), "reason": concat(":", [kind, lower(name)])}

# scoped_rules are the headers.rules_for entries that apply to this request:
# host equal to request_host (case- and port-insensitive; "" = any host) and
# path_prefix a segment prefix of request_path ("" = any path; an ambiguous
# path matches every prefix).
scoped_rules := [s |
	some s in data.gatehouse.config.headers.rules_for
	_host_matches(object.get(s, "host", ""))
	_prefix_matches(object.get(s, "path_prefix", ""))
]

# scope_matches(s) holds when the rules_for entry s applies to this request.
scope_matches(s) if {
	_host_matches(object.get(s, "host", ""))
	_prefix_matches(object.get(s, "path_prefix", ""))
}

_host_matches("")

_host_matches(h) if {
	h != ""
	normalize_host(h) == request_host
}

_prefix_matches("")

# Scoped rules compare paths case-insensitively: an upstream that ignores case
# serves /ADMIN as /admin, so /ADMIN gets /admin's rules (the stricter reading).
_prefix_matches(p) if {
	p != ""
	path_has_prefix(lower(request_path), lower(p))
}

# A scope prefix ending in "/" also covers the path without that slash: most
# upstreams serve "/internal" like "/internal/", so "/internal/"'s rules apply.
_prefix_matches(p) if {
	endswith(p, "/")
	lower(request_path) == lower(trim_suffix(p, "/"))
}

_prefix_matches(p) if {
	p != ""
	request_path_ambiguous
}

# deny_violations_all: global deny rules, then those of each matching scope.
deny_violations_all := array.concat(
	deny_violations(data.gatehouse.config.headers.deny),
	[v | some s in scoped_rules; some v in deny_violations(object.get(s, "deny", []))],
)

# header_violations_all: global require, global allow_values, then each matching
# scope's require and allow_values, in configuration order.
header_violations_all := array.concat(
	array.concat(
		require_violations(data.gatehouse.config.headers.require),
		allow_values_violations(data.gatehouse.config.headers.allow_values),
	),
	[v |
		some s in scoped_rules
		some v in array.concat(
			require_violations(object.get(s, "require", [])),
			allow_values_violations(object.get(s, "allow_values", [])),
		)
	],
)

# --- Responses ----------------------------------------------------------------

# quote(s) is s as an RFC 9110 quoted-string, for WWW-Authenticate parameters.
quote(s) := concat("", [`"`, replace(replace(s, `\`, `\\`), `"`, `\"`), `"`])
