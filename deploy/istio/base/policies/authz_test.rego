# Tests of authz.rego: `gatehousectl policy test deploy/istio/base/policies`.
# Not part of the ConfigMap (kustomization.yaml lists authz.rego only).
package envoy.authz_test

import data.envoy.authz

config := {
	"bypass": {"trusted_cidrs": [], "paths": []},
	"headers": {"require": [], "deny": [], "allow_values": [], "rules_for": []},
	"jwt": {"providers": ["corp"]},
}

request(extra) := object.union(
	{
		"attributes": {"request": {"http": {"path": "/get", "host": "httpbin.example.com", "headers": {}}}},
		"client_ip": "203.0.113.7",
	},
	extra,
)

test_no_token_is_401 if {
	d := authz.allow with input as request({}) with data.gatehouse.config as config
	d.allowed == false
	d.http_status == 401
	d.reason == "token_missing"
}

test_expired_token_is_401 if {
	d := authz.allow with input as request({"jwt": {"valid": false, "error": "expired"}}) with data.gatehouse.config as config
	d.allowed == false
	d.reason == "token_expired"
}

test_valid_token_is_allowed if {
	d := authz.allow with input as request({"jwt": {"valid": true, "error": "", "provider": "corp"}}) with data.gatehouse.config as config
	d.allowed == true
}
