package gatehouse.lib_test

import data.gatehouse.lib

config := {
	"bypass": {"trusted_cidrs": ["10.0.0.0/8", "2001:db8::/32"], "paths": []},
	"headers": {"require": [], "deny": [], "allow_values": [], "rules_for": []},
	"jwt": {"providers": ["corp"]},
}

request(path, host, headers) := {"attributes": {"request": {"http": {
	"method": "GET",
	"path": path,
	"host": host,
	"headers": object.union({":authority": host, ":path": path}, headers),
}}}}

# --- request facts -----------------------------------------------------------

test_header_lookup_is_case_insensitive if {
	req := request("/", "example.com", {"x-tenant-id": "acme"})
	lib.header("X-Tenant-ID") == "acme" with input as req
	lib.header("x-tenant-id") == "acme" with input as req
}

test_header_absent_is_undefined if {
	not lib.header("x-missing") with input as request("/", "example.com", {})
}

test_header_empty_value_is_present if {
	lib.header("x-empty") == "" with input as request("/", "example.com", {"x-empty": ""})
}

test_request_path_strips_query if {
	lib.request_path == "/api/items" with input as request("/api/items?q=1&r=?", "example.com", {})
	lib.request_path == "/" with input as request("/", "example.com", {})
}

test_request_path_prefers_gatehouse_fact if {
	req := object.union(request("", "example.com", {":path": "/admin#x"}), {"request_path": "/admin"})
	lib.request_path == "/admin" with input as req
}

test_request_path_strips_fragment_without_fact if {
	lib.request_path == "/a" with input as request("/a#frag?x", "example.com", {})
}

test_request_path_default_when_absent if {
	lib.request_path == "" with input as {}
}

test_request_host_normalized if {
	every c in [
		["api.example.com", "api.example.com"],
		["API.Example.COM:8443", "api.example.com"],
		["api.example.com.", "api.example.com"],
		["api.example.com.:443", "api.example.com"],
		["[2001:DB8::1]:8443", "[2001:db8::1]"],
		["[2001:db8::1]", "[2001:db8::1]"],
		["10.1.2.3:80", "10.1.2.3"],
	] {
		lib.request_host == c[1] with input as request("/", c[0], {})
	}
}

test_request_host_from_authority_header if {
	req := {"attributes": {"request": {"http": {"path": "/", "headers": {":authority": "Admin.Example.com:443"}}}}}
	lib.request_host == "admin.example.com" with input as req
}

test_request_host_default_when_absent if {
	lib.request_host == "" with input as {}
}

has_prefix(path, prefix) if {
	lib.path_has_prefix(path, prefix)
} else := false

test_path_has_prefix_compares_segments if {
	every c in [
		["/api", "/api", true],
		["/api/", "/api", true],
		["/api/v1", "/api", true],
		["/apiary", "/api", false],
		["/api", "/api/", false],
		["/api/v1", "/api/", true],
		["/anything", "/", true],
		["/", "/", true],
		["/API/v1", "/api", false],
		["/v1/api", "/api", false],
	] {
		has_prefix(c[0], c[1]) == c[2]
	}
}

ambiguous(path) if {
	lib.path_ambiguous(path)
} else := false

test_path_ambiguous if {
	every c in [
		["/healthz", false],
		["/api/v1/items", false],
		["/files/report.v2.pdf", false],
		["/a/...", false],
		["/group%2Fproject", true],
		["/%61dmin/users", true],
		["/admin;x=1/users", true],
		["/healthz/../admin", true],
		["/healthz/..", true],
		["/./admin", true],
		["/healthz/%2e%2e/admin", true],
		["/healthz/%2E./admin", true],
		["/healthz/..;/admin", true],
		["/healthz%2f..%2fadmin", true],
		["/healthz\\..\\admin", true],
		["/healthz%5cadmin", true],
		["//admin", true],
		["/admin//x", true],
	] {
		ambiguous(c[0]) == c[1]
	}
}

# --- bypass ------------------------------------------------------------------

test_trusted_ip_ipv4_and_ipv6 if {
	lib.trusted_ip with input as {"client_ip": "10.1.2.3"} with data.gatehouse.config as config
	lib.trusted_ip with input as {"client_ip": "2001:db8::7"} with data.gatehouse.config as config
}

test_trusted_ip_outside if {
	not lib.trusted_ip with input as {"client_ip": "203.0.113.10"} with data.gatehouse.config as config
}

test_trusted_ip_empty_or_absent_client_ip if {
	every_net := object.union(config, {"bypass": {"trusted_cidrs": ["0.0.0.0/0", "::/0"]}})
	not lib.trusted_ip with input as {"client_ip": ""} with data.gatehouse.config as every_net
	not lib.trusted_ip with input as {} with data.gatehouse.config as every_net
}

test_trusted_ip_no_cidrs if {
	none := object.union(config, {"bypass": {"trusted_cidrs": []}})
	not lib.trusted_ip with input as {"client_ip": "10.1.2.3"} with data.gatehouse.config as none
}

test_bypass_path_ok_without_paths if {
	lib.bypass_path_ok with input as request("/anything/../x", "example.com", {}) with data.gatehouse.config as config
}

test_bypass_path_ok_with_paths if {
	paths := object.union(config, {"bypass": {"paths": ["/healthz", "/metrics/"]}})
	lib.bypass_path_ok with input as request("/healthz", "example.com", {}) with data.gatehouse.config as paths
	lib.bypass_path_ok with input as request("/healthz/live?x=1", "example.com", {}) with data.gatehouse.config as paths
	lib.bypass_path_ok with input as request("/metrics/app", "example.com", {}) with data.gatehouse.config as paths
	not lib.bypass_path_ok with input as request("/healthzz", "example.com", {}) with data.gatehouse.config as paths
	not lib.bypass_path_ok with input as request("/metrics", "example.com", {}) with data.gatehouse.config as paths
	not lib.bypass_path_ok with input as request("/admin", "example.com", {}) with data.gatehouse.config as paths
	not lib.bypass_path_ok with input as request("/healthz/../admin", "example.com", {}) with data.gatehouse.config as paths
	not lib.bypass_path_ok with input as request("/healthz/%2e%2e/admin", "example.com", {}) with data.gatehouse.config as paths
}

test_bypass_needs_ip_and_path if {
	paths := object.union(config, {"bypass": {"paths": ["/healthz"]}})
	req := object.union(request("/healthz", "example.com", {}), {"client_ip": "10.1.2.3"})
	lib.bypass with input as req with data.gatehouse.config as paths
	not lib.bypass with input as object.union(req, {"client_ip": "203.0.113.10"}) with data.gatehouse.config as paths
	not lib.bypass with input as object.union(req, request("/admin", "example.com", {})) with data.gatehouse.config as paths
}

# --- header rule evaluators -----------------------------------------------------

test_deny_violations if {
	rules := [
		{"name": "x-debug"},
		{"name": "User-Agent", "regex": "(?i)sqlmap"},
		{"name": "x-absent"},
		{"name": "x-forwarded-host", "regex": "evil"},
	]
	req := request("/", "example.com", {"x-debug": "", "user-agent": "SQLMap/1.7", "x-forwarded-host": "good.example.com"})
	lib.deny_violations(rules) == [
		{"header": "x-debug", "reason": "header_denied:x-debug"},
		{"header": "user-agent", "reason": "header_denied:user-agent"},
	] with input as req
}

test_deny_violations_none if {
	rules := [{"name": "x-debug"}, {"name": "user-agent", "regex": "sqlmap"}]
	lib.deny_violations(rules) == [] with input as request("/", "example.com", {"user-agent": "curl/8"})
	lib.deny_violations([]) == [] with input as request("/", "example.com", {})
}

test_require_violations if {
	rules := [
		{"name": "x-tenant-id"},
		{"name": "x-request-id", "regex": "^[0-9a-f-]{36}$"},
		{"name": "x-version", "regex": "^v[0-9]+$"},
		{"name": "x-present"},
		{"name": "x-empty-regex", "regex": ""},
	]
	req := request("/", "example.com", {
		"x-request-id": "not-a-uuid",
		"x-version": "v2",
		"x-present": "",
		"x-empty-regex": "anything",
	})
	lib.require_violations(rules) == [
		{"header": "x-tenant-id", "reason": "header_required:x-tenant-id"},
		{"header": "x-request-id", "reason": "header_invalid:x-request-id"},
	] with input as req
}

test_allow_values_violations if {
	rules := [
		{"name": "x-env", "values": ["prod", "staging"]},
		{"name": "x-region", "values": ["eu", "us"]},
		{"name": "x-absent", "values": ["a"]},
		{"name": "x-tier", "values": ["gold"]},
	]
	req := request("/", "example.com", {
		"x-env": "prod, staging",
		"x-region": "eu,apac",
		"x-tier": "gold,",
	})
	lib.allow_values_violations(rules) == [
		{"header": "x-region", "reason": "header_value_not_allowed:x-region"},
		{"header": "x-tier", "reason": "header_value_not_allowed:x-tier"},
	] with input as req
}

test_allow_values_trims_only_http_whitespace if {
	rules := [{"name": "x-env", "values": ["prod", "staging"]}]
	lib.allow_values_violations(rules) == [] with input as request("/", "example.com", {"x-env": "prod,\tstaging "})
	count(lib.allow_values_violations(rules)) == 1 with input as request("/", "example.com", {"x-env": "prod\u00a0"})
	count(lib.allow_values_violations(rules)) == 1 with input as request("/", "example.com", {"x-env": "staging, prod\u2003"})
	count(lib.allow_values_violations(rules)) == 1 with input as request("/", "example.com", {"x-env": "prod\n"})
}

test_allow_values_exact_match if {
	rules := [{"name": "x-env", "values": ["prod"]}]
	lib.allow_values_violations(rules) == [] with input as request("/", "example.com", {"x-env": " prod "})
	count(lib.allow_values_violations(rules)) == 1 with input as request("/", "example.com", {"x-env": "Prod"})
	count(lib.allow_values_violations(rules)) == 1 with input as request("/", "example.com", {"x-env": ""})
}

# --- scopes --------------------------------------------------------------------

scoped_config := object.union(config, {"headers": {"rules_for": [
	{"host": "Admin.Example.com:443", "path_prefix": "/admin", "require": [{"name": "x-admin-ticket"}]},
	{"host": "", "path_prefix": "/reports", "deny": [{"name": "x-export"}]},
	{"host": "api.example.com", "path_prefix": ""},
	{"host": "", "path_prefix": ""},
	{"host": "", "path_prefix": "/internal/", "deny": [{"name": "x-any"}]},
]}})

scope_indexes(req) := [i |
	some i, s in scoped_config.headers.rules_for
	lib.scope_matches(s) with input as req
]

test_scope_host_and_prefix if {
	scope_indexes(request("/admin/users", "admin.example.com", {})) == [0, 3]
	scope_indexes(request("/admin", "ADMIN.example.com.:8443", {})) == [0, 3]
	scope_indexes(request("/administrator", "admin.example.com", {})) == [3]
	scope_indexes(request("/admin/users", "api.example.com", {})) == [2, 3]
	scope_indexes(request("/reports/q1", "other.example.com", {})) == [1, 3]
	scope_indexes(request("/internal", "other.example.com", {})) == [3, 4]
	scope_indexes(request("/Internal/x", "other.example.com", {})) == [3, 4]
	scope_indexes(request("/internals", "other.example.com", {})) == [3]
}

test_scope_ambiguous_path_matches_every_prefix_of_its_host if {
	scope_indexes(request("/public/../admin/users", "admin.example.com", {})) == [0, 1, 3, 4]
	scope_indexes(request("//admin", "admin.example.com", {})) == [0, 1, 3, 4]
	scope_indexes(request("//admin", "api.example.com", {})) == [1, 2, 3, 4]
}

test_scoped_rules_keep_config_order if {
	rules := lib.scoped_rules with input as request("/admin/x", "admin.example.com", {})
		with data.gatehouse.config as scoped_config
	[r.host | some r in rules] == ["Admin.Example.com:443", ""]
}

test_scoped_rules_missing_lists if {
	c := object.union(config, {"headers": {"rules_for": [{"host": "example.com"}]}})
	lib.deny_violations_all == [] with input as request("/", "example.com", {"x-debug": "1"}) with data.gatehouse.config as c
	lib.header_violations_all == [] with input as request("/", "example.com", {}) with data.gatehouse.config as c
}

test_quote_escapes if {
	lib.quote(`a"b\c`) == `"a\"b\\c"`
	lib.quote("") == `""`
}
