# METADATA
# title: Gatehouse authorization rules
# description: |
#   The authorization section (data.gatehouse.config.authorization): route
#   rules with Istio AuthorizationPolicy semantics, read by the default
#   decision (data.gatehouse.authz.decision). This module is the
#   specification; policy/authorization.go evaluates the same rules natively
#   and the differential tests hold the two equal. docs/authorization.md
#   explains the semantics.
#
#   Values of one field OR, fields of a rule AND, not_* fields hold when no
#   value matches, a rule without fields matches everything. Strings match as
#   Istio matches them: exact, "prefix*", "*suffix", "*" (non-empty). A
#   permission reads the path narrowly, a restriction widely (see _paths_hold).
package gatehouse.authorization

import data.gatehouse.lib

_rules := data.gatehouse.config.authorization.rules

# enforce_allow: allow rules exist, or allow_nothing says the empty allow
# list is in force; then a request the bypass does not let through needs an
# allow rule to match.
enforce_allow if data.gatehouse.config.authorization.allow_nothing == true

enforce_allow if {
	some r in _rules
	r.action == "allow"
}

# deny_rule, allow_rule: the first rule of that action the request matches.
deny_rule := [r | some r in _rules; r.action == "deny"; matches(r)][0]

allow_rule := [r | some r in _rules; r.action == "allow"; matches(r)][0]

# audit: the names of the audit rules the request matches, in order.
audit := [r.name | some r in _rules; r.action == "audit"; matches(r)]

deny_reason := concat(":", ["rule_denied", deny_rule.name])

allow_reason := concat(":", ["rule_allowed", allow_rule.name])

# matches(r) holds when every field r sets holds for the request.
matches(r) if {
	_pos(r.hosts, _host, true)
	_neg(r.not_hosts, _host, true)
	_exact_pos(r.methods, _method)
	_exact_neg(r.not_methods, _method)
	_paths_hold(r)
	_not_paths_hold(r)
	_exact_pos(r.ports, _port)
	_exact_neg(r.not_ports, _port)
	_cidr_pos(r.peer_cidrs, _peer)
	_cidr_neg(r.not_peer_cidrs, _peer)
	_cidr_pos(r.client_cidrs, _client)
	_cidr_neg(r.not_client_cidrs, _client)
	_pos(r.principals, _principal, false)
	_neg(r.not_principals, _principal, false)
	_pos(r.namespaces, _namespace, false)
	_neg(r.not_namespaces, _namespace, false)
	_rp_pos(r.request_principals)
	_rp_neg(r.not_request_principals)
	_list_pos(r.audiences, _aud)
	_list_neg(r.not_audiences, _aud)
	_pos(r.presenters, _azp, false)
	_neg(r.not_presenters, _azp, false)
	every c in r.claims {
		_claim_holds(c)
	}
	every h in r.headers {
		_header_holds(h)
	}
}

# --- Istio string match ------------------------------------------------------

# str_match(p, v): "*" any non-empty v; "x*" prefix; "*x" suffix; else equal.
str_match("*", v) if v != ""

str_match(p, v) if {
	p != "*"
	endswith(p, "*")
	startswith(v, trim_suffix(p, "*"))
}

str_match(p, v) if {
	p != "*"
	not endswith(p, "*")
	startswith(p, "*")
	endswith(v, trim_prefix(p, "*"))
}

str_match(p, v) if {
	not endswith(p, "*")
	not startswith(p, "*")
	p == v
}

_any(ps, v, false) if {
	some p in ps
	str_match(p, v)
}

_any(ps, v, true) if {
	some p in ps
	str_match(lower(p), v)
}

_pos(ps, _, _) if count(ps) == 0

_pos(ps, v, fold) if _any(ps, v, fold)

_neg(ps, v, fold) if not _any(ps, v, fold)

_exact_pos(ps, _) if count(ps) == 0

_exact_pos(ps, v) if v in ps

_exact_neg(ps, v) if not v in ps

_list_pos(ps, _) if count(ps) == 0

_list_pos(ps, vs) if {
	some v in vs
	_any(ps, v, false)
}

_list_neg(ps, vs) if {
	not _list_any(ps, vs)
}

_list_any(ps, vs) if {
	some v in vs
	_any(ps, v, false)
}

# --- The request -------------------------------------------------------------

_host := lower(h) if {
	h := lib._raw_host
} else := ""

_method := m if {
	m := input.attributes.request.http.method
	is_string(m)
} else := ""

_port := p if {
	p := input.attributes.destination.address.socketAddress.portValue
	is_number(p)
} else := 0

_peer := a if {
	a := input.attributes.source.address.socketAddress.address
	is_string(a)
} else := ""

_client := a if {
	a := input.client_ip
	is_string(a)
} else := ""

_principal := trim_prefix(p, "spiffe://") if {
	p := input.attributes.source.principal
	is_string(p)
} else := ""

_namespace := split(substring(_principal, indexof(_principal, "/ns/") + 4, -1), "/")[0] if {
	indexof(_principal, "/ns/") >= 0
} else := ""

_cidr_pos(cidrs, _) if count(cidrs) == 0

_cidr_pos(cidrs, ip) if {
	ip != ""
	gatehouse.cidr_contains(cidrs, ip)
}

_cidr_neg(cidrs, _) if count(cidrs) == 0

_cidr_neg(cidrs, ip) if {
	count(cidrs) > 0
	not _cidr_in(cidrs, ip)
}

_cidr_in(cidrs, ip) if {
	ip != ""
	gatehouse.cidr_contains(cidrs, ip)
}

# --- Paths -------------------------------------------------------------------

# The two readings an upstream may have of the path: as sent, and
# percent-decoded.
_path := lib.request_path

_decoded := d if {
	d := urlquery.decode(_path)
} else := _path

# _structural: a dot segment, "//", "\", ";", or an escaped "/", ".", "\",
# "%" or ";": the upstream may read the segments otherwise.
_structural if regex.match(`(^|/)\.\.?($|/)|//|\\|;|%(2[fFeE5]|5[cC]|3[bB])`, _path)

# A permission reads the path narrowly: an allow rule's paths must match the
# path as sent, with case; its not_paths must match neither reading, without
# case; and a structurally ambiguous path satisfies neither kind of field. A restriction
# reads it widely: a deny or audit rule's paths match either reading without
# case, its not_paths hold when either reading escapes them with case, and a
# structurally ambiguous path satisfies both.
_paths_hold(r) if count(r.paths) == 0

_paths_hold(r) if {
	r.action == "allow"
	not _structural
	_any_path(r.paths, _path, false)
}

_paths_hold(r) if {
	count(r.paths) > 0
	r.action != "allow"
	_structural
}

_paths_hold(r) if {
	r.action != "allow"
	_any_path(r.paths, lower(_path), true)
}

_paths_hold(r) if {
	r.action != "allow"
	_any_path(r.paths, lower(_decoded), true)
}

_not_paths_hold(r) if count(r.not_paths) == 0

_not_paths_hold(r) if {
	count(r.not_paths) > 0
	r.action == "allow"
	not _structural
	not _any_path(r.not_paths, lower(_path), true)
	not _any_path(r.not_paths, lower(_decoded), true)
}

_not_paths_hold(r) if {
	count(r.not_paths) > 0
	r.action != "allow"
	_structural
}

_not_paths_hold(r) if {
	count(r.not_paths) > 0
	r.action != "allow"
	not _any_path(r.not_paths, _path, false)
}

_not_paths_hold(r) if {
	count(r.not_paths) > 0
	r.action != "allow"
	not _any_path(r.not_paths, _decoded, false)
}

_any_path(ps, path, true) if {
	some p in ps
	path_match(lower(p), path)
}

_any_path(ps, path, false) if {
	some p in ps
	path_match(p, path)
}

# path_match(p, path): a URI template ("{*}" one segment, "{**}" the rest) or
# an Istio string match.
path_match(p, path) if {
	contains(p, "{")
	_template_match(p, path)
}

path_match(p, path) if {
	not contains(p, "{")
	str_match(p, path)
}

_template_match(tpl, path) if {
	startswith(path, "/")
	t := split(substring(tpl, 1, -1), "/")
	p := split(substring(path, 1, -1), "/")
	_segments_match(t, p)
}

_segments_match(t, p) if {
	t[count(t) - 1] == "{**}"
	count(p) >= count(t)
	every i, seg in array.slice(t, 0, count(t) - 1) {
		_segment_match(seg, p[i])
	}
}

_segments_match(t, p) if {
	t[count(t) - 1] != "{**}"
	count(p) == count(t)
	every i, seg in t {
		_segment_match(seg, p[i])
	}
}

_segment_match("{*}", s) if s != ""

_segment_match(lit, s) if {
	lit != "{*}"
	lit == s
}

# --- Identity: a valid token only --------------------------------------------

_valid if input.jwt.valid == true

_claim_string(name) := s if {
	_valid
	s := input.jwt.claims[name]
	is_string(s)
} else := ""

_iss := _claim_string("iss")

_sub := _claim_string("sub")

_azp := _claim_string("azp")

_aud := [a] if {
	_valid
	a := input.jwt.claims.aud
	is_string(a)
} else := [a | _valid; some a in input.jwt.claims.aud; is_string(a)] if {
	_valid
	is_array(input.jwt.claims.aud)
} else := []

_has_principal if {
	_iss != ""
	_sub != ""
}

_rp_pos(ps) if count(ps) == 0

_rp_pos(ps) if {
	some p in ps
	_rp_match(p)
}

_rp_neg(ps) if {
	not _rp_any(ps)
}

_rp_any(ps) if {
	some p in ps
	_rp_match(p)
}

# A request principal value is "*", or "<iss>/<sub>" split at the last "/"
# with each part matched on its own, or (without such a split) a match on
# the whole "<iss>/<sub>".
_rp_match("*") if _has_principal

_rp_match(p) if {
	p != "*"
	_has_principal
	i := _last_slash(p)
	i > 0
	i < count(p) - 1
	str_match(substring(p, 0, i), _iss)
	str_match(substring(p, i + 1, -1), _sub)
}

_rp_match(p) if {
	p != "*"
	_has_principal
	not _splits(p)
	str_match(p, concat("/", [_iss, _sub]))
}

_last_slash(p) := max(indexof_n(p, "/"))

_splits(p) if {
	i := _last_slash(p)
	i > 0
	i < count(p) - 1
}

# Claims: a string claim whole (split on spaces when the provider lists it
# in space_delimited_claims), a list claim by any string element.
_claim_holds(c) if {
	_claim_values_hold(c)
	not _claim_any(c.path, c.not_values)
}

_claim_values_hold(c) if count(c.values) == 0

_claim_values_hold(c) if _claim_any(c.path, c.values)

_claim_any(path, ps) if {
	_valid
	v := object.get(input.jwt.claims, path, null)
	is_string(v)
	not _space_delimited(path)
	_any(ps, v, false)
}

_claim_any(path, ps) if {
	_valid
	v := object.get(input.jwt.claims, path, null)
	is_string(v)
	_space_delimited(path)
	some w in split(v, " ")
	_any(ps, w, false)
}

_claim_any(path, ps) if {
	_valid
	v := object.get(input.jwt.claims, path, null)
	is_array(v)
	some e in v
	is_string(e)
	_any(ps, e, false)
}

_space_delimited(path) if {
	count(path) == 1
	path[0] in _split_claims
}

_split_claims := l if {
	l := data.gatehouse.config.jwt.space_delimited_claims[input.jwt.provider]
} else := ["scope", "scp"]

# Headers: the whole value as sent.
_header_holds(h) if {
	_header_values_hold(h)
	not _header_any(h.name, h.not_values)
}

_header_values_hold(h) if count(h.values) == 0

_header_values_hold(h) if _header_any(h.name, h.values)

_header_any(name, ps) if {
	v := lib.header(name)
	_any(ps, v, false)
}
