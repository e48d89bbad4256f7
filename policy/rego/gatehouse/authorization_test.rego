package gatehouse.authorization_test

import data.gatehouse.authz

# Route rules over the base configuration: a public health path, reads for
# any signed-in user, writes needing a scope, an admin deny outside the
# office, an audit of deletes.
routes := {
	"bypass": {"trusted_cidrs": ["10.0.0.0/8"], "paths": []},
	"headers": {"require": [], "deny": [], "allow_values": [], "rules_for": []},
	"jwt": {"providers": ["corp"], "space_delimited_claims": {"corp": ["scope"]}},
	"authorization": {"allow_nothing": false, "rules": [
		rule({"name": "office-admin", "action": "deny", "paths": ["/admin*"], "not_client_cidrs": ["10.20.0.0/16"]}),
		rule({"name": "audit-deletes", "action": "audit", "methods": ["DELETE"]}),
		rule({"name": "public", "methods": ["GET"], "paths": ["/healthz"]}),
		rule({"name": "read", "methods": ["GET"], "paths": ["/orders/{*}"], "request_principals": ["*"]}),
		rule({"name": "write", "methods": ["POST", "DELETE"], "paths": ["/orders/{**}"], "claims": [{"path": ["scope"], "values": ["orders:write"], "not_values": []}]}),
	]},
}

# rule fills every key a rule has in data.gatehouse.config (Rules.Data).
rule(r) := object.union({
	"action": "allow", "hosts": [], "not_hosts": [], "methods": [], "not_methods": [], "paths": [], "not_paths": [],
	"ports": [], "not_ports": [], "peer_cidrs": [], "not_peer_cidrs": [], "client_cidrs": [], "not_client_cidrs": [],
	"principals": [], "not_principals": [], "namespaces": [], "not_namespaces": [],
	"request_principals": [], "not_request_principals": [], "audiences": [], "not_audiences": [],
	"presenters": [], "not_presenters": [], "claims": [], "headers": [],
}, r)

request(method, path, client, jwt) := object.union(
	{
		"attributes": {"request": {"http": {"method": method, "path": path, "host": "api.example.com", "headers": {}}}},
		"request_path": path,
		"client_ip": client,
	},
	jwt,
)

token(claims) := {"jwt": {"valid": true, "provider": "corp", "error": "", "claims": claims}}

alice := token({"iss": "https://issuer.example.com", "sub": "alice", "scope": "orders:read orders:write"})

bob := token({"iss": "https://issuer.example.com", "sub": "bob", "scope": "orders:read"})

decide(method, path, client, jwt) := d if {
	d := authz.decision with input as request(method, path, client, jwt) with data.gatehouse.config as routes
}

test_public_route_without_a_token if {
	d := decide("GET", "/healthz", "203.0.113.9", {})
	d == {"allowed": true, "bypass": false, "reason": "rule_allowed:public"}
}

test_scoped_route_needs_a_token if {
	decide("GET", "/orders/1", "203.0.113.9", {}).reason == "token_missing"
	decide("GET", "/orders/1", "203.0.113.9", bob).reason == "rule_allowed:read"
}

test_write_needs_the_scope_split_on_spaces if {
	decide("POST", "/orders/1/items", "203.0.113.9", alice).reason == "rule_allowed:write"
	decide("POST", "/orders/1/items", "203.0.113.9", bob).reason == "no_matching_rule"
}

test_deny_holds_for_trusted_networks_and_ambiguous_paths if {
	decide("GET", "/admin/users", "10.1.2.3", {}).reason == "rule_denied:office-admin"
	decide("GET", "/%61dmin/users", "203.0.113.9", alice).reason == "rule_denied:office-admin"
	decide("GET", "/admin/users", "10.20.1.1", {}).reason == "trusted_ip"
}

test_invalid_token_is_never_an_identity if {
	d := decide("GET", "/healthz", "203.0.113.9", {"jwt": {"valid": false, "provider": "corp", "error": "expired", "claims": {}}})
	d.reason == "token_expired"
	d.http_status == 401
}

test_audit_never_changes_the_decision if {
	d := decide("DELETE", "/orders/1", "203.0.113.9", alice)
	d.allowed == true
	d.reason == "rule_allowed:write"
	d.audit == ["audit-deletes"]
}

test_allow_nothing if {
	d := authz.decision with input as request("GET", "/healthz", "203.0.113.9", bob)
		with data.gatehouse.config as object.union(routes, {"authorization": {"allow_nothing": true, "rules": []}})
	d.reason == "no_matching_rule"
}
