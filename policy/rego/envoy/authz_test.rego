package envoy.authz_test

import data.envoy.authz

config := {
	"bypass": {"trusted_cidrs": ["10.0.0.0/8"], "paths": []},
	"headers": {"require": [], "deny": [], "allow_values": [], "rules_for": []},
	"jwt": {"providers": ["corp"]},
}

request(client_ip, jwt) := object.union(
	{
		"attributes": {"request": {"http": {"path": "/", "host": "example.com", "headers": {}}}},
		"client_ip": client_ip,
	},
	jwt,
)

test_allow_is_the_default_decision if {
	every req in [
		request("203.0.113.10", {}),
		request("10.1.2.3", {}),
		request("203.0.113.10", {"jwt": {"valid": true, "error": ""}}),
		request("203.0.113.10", {"jwt": {"valid": false, "error": "expired"}}),
	] {
		got := authz.allow with input as req with data.gatehouse.config as config
		want := data.gatehouse.authz.decision with input as req with data.gatehouse.config as config
		got == want
	}
}

test_allow_denies_anonymous if {
	d := authz.allow with input as request("203.0.113.10", {}) with data.gatehouse.config as config
	d.allowed == false
	d.http_status == 401
}
