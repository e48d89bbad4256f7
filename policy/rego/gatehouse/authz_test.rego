package gatehouse.authz_test

import data.gatehouse.authz

# The configuration every test starts from: one provider, no rules.
base_config := {
	"bypass": {"trusted_cidrs": [], "paths": []},
	"headers": {"require": [], "deny": [], "allow_values": [], "rules_for": []},
	"jwt": {"providers": ["corp"]},
}

cfg(overrides) := object.union(base_config, overrides)

# A request from an untrusted client without a token.
anonymous(path, headers) := {
	"attributes": {"request": {"http": {
		"method": "GET",
		"path": path,
		"host": "api.example.com:8443",
		"headers": object.union({":authority": "api.example.com:8443", ":path": path}, headers),
	}}},
	"client_ip": "203.0.113.10",
	"client_ip_source": "xff",
}

valid_jwt := {"valid": true, "provider": "corp", "claims": {"sub": "alice"}, "error": ""}

# The same request with a valid token.
authed(path, headers) := object.union(anonymous(path, headers), {"jwt": valid_jwt})

# From a trusted client address, no token.
trusted(path, headers) := object.union(anonymous(path, headers), {"client_ip": "10.1.2.3"})

trusted_config := cfg({"bypass": {"trusted_cidrs": ["10.0.0.0/8"]}})

rules_config := cfg({"headers": {
	"require": [{"name": "x-tenant-id"}, {"name": "x-request-id", "regex": "^[0-9a-f]{8}$"}],
	"deny": [{"name": "x-debug"}, {"name": "user-agent", "regex": "(?i)sqlmap"}],
	"allow_values": [{"name": "x-env", "values": ["prod", "staging"]}],
	"rules_for": [{
		"host": "admin.example.com",
		"path_prefix": "/admin",
		"require": [{"name": "x-admin-ticket", "regex": "^T-[0-9]+$"}],
		"deny": [{"name": "x-impersonate"}],
		"allow_values": [{"name": "x-role", "values": ["admin"]}],
	}],
}})

# Headers that satisfy rules_config's global require rules.
good := {"x-tenant-id": "acme", "x-request-id": "0123abcd"}

body(d) := json.unmarshal(d.body)

# --- 5. allowed --------------------------------------------------------------------

test_valid_token_allowed if {
	d := authz.decision with input as authed("/api/items", {}) with data.gatehouse.config as base_config
	d == {"allowed": true, "bypass": false, "reason": "token_valid"}
}

test_valid_token_and_rules_satisfied if {
	d := authz.decision with input as authed("/api", object.union(good, {"x-env": "prod, staging"}))
		with data.gatehouse.config as rules_config
	d.allowed == true
	d.reason == "token_valid"
}

# --- 1. deny rules, for everyone -----------------------------------------------------

test_deny_header_present if {
	d := authz.decision with input as authed("/api", object.union(good, {"x-debug": "1"}))
		with data.gatehouse.config as rules_config
	d.allowed == false
	d.http_status == 403
	d.reason == "header_denied:x-debug"
	d.headers == {"content-type": "application/json"}
	body(d) == {"error": "forbidden", "reason": "header_denied:x-debug"}
}

test_deny_regex_matches if {
	d := authz.decision with input as authed("/api", object.union(good, {"user-agent": "sqlmap/1.7"}))
		with data.gatehouse.config as rules_config
	d.reason == "header_denied:user-agent"
}

test_deny_regex_does_not_match if {
	d := authz.decision with input as authed("/api", object.union(good, {"user-agent": "curl/8.5"}))
		with data.gatehouse.config as rules_config
	d.reason == "token_valid"
}

test_deny_applies_to_trusted_ip if {
	c := object.union(rules_config, {"bypass": {"trusted_cidrs": ["10.0.0.0/8"]}})
	d := authz.decision with input as trusted("/api", {"x-debug": "1"}) with data.gatehouse.config as c
	d.http_status == 403
	d.reason == "header_denied:x-debug"
	not d.bypass
}

test_deny_applies_before_token_check if {
	d := authz.decision with input as anonymous("/api", {"x-debug": "1"}) with data.gatehouse.config as rules_config
	d.http_status == 403
	d.reason == "header_denied:x-debug"
}

test_deny_first_in_config_order if {
	d := authz.decision with input as authed("/api", {"user-agent": "sqlmap", "x-debug": "1"})
		with data.gatehouse.config as rules_config
	d.reason == "header_denied:x-debug"
}

test_deny_scoped if {
	req := object.union(authed("/admin/users", {"x-impersonate": "bob"}), {"attributes": {"request": {"http": {"host": "Admin.Example.com:443"}}}})
	d := authz.decision with input as req with data.gatehouse.config as rules_config
	d.reason == "header_denied:x-impersonate"
}

test_deny_scoped_other_host_not_applied if {
	d := authz.decision with input as authed("/admin/users", object.union(good, {"x-impersonate": "bob"}))
		with data.gatehouse.config as rules_config
	d.reason == "token_valid"
}

test_deny_global_before_scoped if {
	req := object.union(
		authed("/admin", {"x-impersonate": "bob", "user-agent": "sqlmap"}),
		{"attributes": {"request": {"http": {"host": "admin.example.com"}}}},
	)
	d := authz.decision with input as req with data.gatehouse.config as rules_config
	d.reason == "header_denied:user-agent"
}

# --- 2. trusted-IP bypass --------------------------------------------------------------

test_bypass_trusted_ip_without_token if {
	d := authz.decision with input as trusted("/api", {}) with data.gatehouse.config as trusted_config
	d == {"allowed": true, "bypass": true, "reason": "trusted_ip"}
}

test_bypass_skips_require_and_allow_values if {
	c := object.union(rules_config, {"bypass": {"trusted_cidrs": ["10.0.0.0/8"]}})
	d := authz.decision with input as trusted("/api", {"x-env": "dev"}) with data.gatehouse.config as c
	d.reason == "trusted_ip"
}

test_bypass_wins_over_invalid_token if {
	req := object.union(trusted("/api", {}), {"jwt": {"valid": false, "error": "expired"}})
	d := authz.decision with input as req with data.gatehouse.config as trusted_config
	d.reason == "trusted_ip"
}

test_bypass_path_restricted if {
	c := cfg({"bypass": {"trusted_cidrs": ["10.0.0.0/8"], "paths": ["/healthz"]}})
	allowed := authz.decision with input as trusted("/healthz/ready", {}) with data.gatehouse.config as c
	allowed.reason == "trusted_ip"
	other := authz.decision with input as trusted("/api", {}) with data.gatehouse.config as c
	other.reason == "token_missing"
	sneaky := authz.decision with input as trusted("/healthz/../api", {}) with data.gatehouse.config as c
	sneaky.reason == "token_missing"
}

test_no_bypass_for_untrusted_ip if {
	d := authz.decision with input as anonymous("/api", {}) with data.gatehouse.config as trusted_config
	d.reason == "token_missing"
}

test_no_bypass_without_client_ip if {
	c := cfg({"bypass": {"trusted_cidrs": ["0.0.0.0/0", "::/0"]}})
	d := authz.decision with input as object.union(anonymous("/api", {}), {"client_ip": ""}) with data.gatehouse.config as c
	d.reason == "token_missing"
}

# --- 3. tokens -----------------------------------------------------------------------

test_token_missing if {
	d := authz.decision with input as anonymous("/api", {}) with data.gatehouse.config as base_config
	d.allowed == false
	d.http_status == 401
	d.reason == "token_missing"
	d.headers == {"content-type": "application/json", "www-authenticate": `Bearer realm="api.example.com"`}
	body(d) == {"error": "unauthorized", "reason": "token_missing"}
}

test_token_missing_no_providers if {
	d := authz.decision with input as anonymous("/api", {}) with data.gatehouse.config as cfg({"jwt": {"providers": []}})
	d.http_status == 401
	d.reason == "token_missing"
	body(d) == {"error": "unauthorized", "reason": "token_missing", "detail": "no JWT providers are configured"}
}

test_token_null_is_missing if {
	d := authz.decision with input as object.union(anonymous("/api", {}), {"jwt": null}) with data.gatehouse.config as base_config
	d.reason == "token_missing"
}

test_token_invalid_reasons if {
	every e in ["expired", "bad_signature", "unknown_key", "bad_audience", "malformed", "keys_unavailable"] {
		req := object.union(anonymous("/api", {}), {"jwt": {"valid": false, "provider": "corp", "claims": {}, "error": e}})
		d := authz.decision with input as req with data.gatehouse.config as base_config
		d.http_status == 401
		d.reason == concat("", ["token_", e])
		d.headers["www-authenticate"] == sprintf(`Bearer realm="api.example.com", error="invalid_token", error_description="%s"`, [e])
		body(d) == {"error": "unauthorized", "reason": d.reason}
	}
}

test_token_invalid_without_error if {
	req := object.union(anonymous("/api", {}), {"jwt": {"valid": false}})
	d := authz.decision with input as req with data.gatehouse.config as base_config
	d.reason == "token_invalid"
	d.headers["www-authenticate"] == `Bearer realm="api.example.com", error="invalid_token", error_description="invalid"`
}

test_token_fails_closed_on_odd_valid_values if {
	every v in [{"error": ""}, {"valid": "true", "error": ""}, {"valid": 1, "error": ""}, {"valid": null, "error": ""}] {
		req := object.union(anonymous("/api", {}), {"jwt": v})
		d := authz.decision with input as req with data.gatehouse.config as base_config
		d.http_status == 401
		d.reason == "token_invalid"
	}
}

test_token_checked_before_header_rules if {
	d := authz.decision with input as anonymous("/api", {}) with data.gatehouse.config as rules_config
	d.reason == "token_missing"
}

test_realm_escapes_and_drops_port if {
	req := object.union(anonymous("/api", {}), {"attributes": {"request": {"http": {"host": `ev"il\.example.com:1`}}}})
	d := authz.decision with input as req with data.gatehouse.config as base_config
	d.headers["www-authenticate"] == `Bearer realm="ev\"il\\.example.com"`
}

test_realm_without_host if {
	req := {"attributes": {"request": {"http": {"path": "/", "headers": {}}}}, "client_ip": "203.0.113.10"}
	d := authz.decision with input as req with data.gatehouse.config as base_config
	d.headers["www-authenticate"] == `Bearer realm="gatehouse"`
}

# --- 4. require / allow_values ---------------------------------------------------------

test_require_missing if {
	d := authz.decision with input as authed("/api", {"x-request-id": "0123abcd"}) with data.gatehouse.config as rules_config
	d.http_status == 403
	d.reason == "header_required:x-tenant-id"
	body(d) == {"error": "forbidden", "reason": "header_required:x-tenant-id"}
}

test_require_regex_mismatch if {
	d := authz.decision with input as authed("/api", {"x-tenant-id": "acme", "x-request-id": "nope"})
		with data.gatehouse.config as rules_config
	d.reason == "header_invalid:x-request-id"
}

test_allow_values_rejects_unknown_value if {
	d := authz.decision with input as authed("/api", object.union(good, {"x-env": "prod,dev"}))
		with data.gatehouse.config as rules_config
	d.http_status == 403
	d.reason == "header_value_not_allowed:x-env"
}

test_allow_values_absent_header_is_fine if {
	d := authz.decision with input as authed("/api", good) with data.gatehouse.config as rules_config
	d.reason == "token_valid"
}

test_require_before_allow_values if {
	d := authz.decision with input as authed("/api", {"x-env": "dev"}) with data.gatehouse.config as rules_config
	d.reason == "header_required:x-tenant-id"
}

admin(path, headers) := object.union(
	authed(path, object.union(good, headers)),
	{"attributes": {"request": {"http": {"host": "admin.example.com"}}}},
)

test_scoped_require if {
	missing := authz.decision with input as admin("/admin/users", {}) with data.gatehouse.config as rules_config
	missing.reason == "header_required:x-admin-ticket"
	invalid := authz.decision with input as admin("/admin/users", {"x-admin-ticket": "nope"}) with data.gatehouse.config as rules_config
	invalid.reason == "header_invalid:x-admin-ticket"
	ok := authz.decision with input as admin("/admin/users", {"x-admin-ticket": "T-42"}) with data.gatehouse.config as rules_config
	ok.reason == "token_valid"
}

test_scoped_allow_values if {
	d := authz.decision with input as admin("/admin", {"x-admin-ticket": "T-1", "x-role": "user"}) with data.gatehouse.config as rules_config
	d.reason == "header_value_not_allowed:x-role"
}

test_scoped_rules_not_applied_outside_scope if {
	d := authz.decision with input as admin("/public", {}) with data.gatehouse.config as rules_config
	d.reason == "token_valid"
}

test_scoped_rules_applied_to_ambiguous_path if {
	d := authz.decision with input as admin("/public/../admin/users", {}) with data.gatehouse.config as rules_config
	d.reason == "header_required:x-admin-ticket"
}

test_global_before_scoped if {
	d := authz.decision with input as admin("/admin", {"x-env": "dev"}) with data.gatehouse.config as rules_config
	d.reason == "header_value_not_allowed:x-env"
}

# --- body extras -------------------------------------------------------------------------

test_client_ip_fallback_in_body if {
	req := object.union(anonymous("/api", {}), {"client_ip_source": "peer", "client_ip_fallback": "xff_too_few_entries"})
	d := authz.decision with input as req with data.gatehouse.config as base_config
	d.reason == "token_missing"
	body(d) == {"error": "unauthorized", "reason": "token_missing", "client_ip_fallback": "xff_too_few_entries"}
}

test_client_ip_fallback_absent_from_allow if {
	req := object.union(authed("/api", {}), {"client_ip_fallback": "xff_missing"})
	d := authz.decision with input as req with data.gatehouse.config as base_config
	d == {"allowed": true, "bypass": false, "reason": "token_valid"}
}

# --- determinism: every branch yields exactly one object ---------------------------------

test_decision_is_always_defined if {
	every req in [
		{},
		anonymous("/", {}),
		authed("/", {}),
		trusted("/", {}),
		object.union(authed("/", {}), {"jwt": {"valid": false, "error": "expired"}}),
	] {
		d := authz.decision with input as req with data.gatehouse.config as rules_config
		is_boolean(d.allowed)
		is_string(d.reason)
	}
}
