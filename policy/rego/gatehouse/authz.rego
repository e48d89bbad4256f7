# METADATA
# title: Gatehouse default policy
# description: |
#   The decision the embedded policy answers, driven by data.gatehouse.config.
#   First match wins (docs/policies.md has the reasons table):
#     1. header deny rules, for everyone: 403 header_denied:<name>
#     2. authorization deny rules, for everyone: 403 rule_denied:<name>
#     3. trusted client IP (and bypass path): allowed, bypass, trusted_ip
#     4. invalid token: 401 token_<error>
#     5. with allow rules (or allow_nothing): none matching is 401
#        token_missing without a token, 403 no_matching_rule with one;
#        without allow rules: no token is 401 token_missing
#     6. require / allow_values rules: 403 header_required|header_invalid|header_value_not_allowed:<name>
#     7. allowed: rule_allowed:<name> (an allow rule matched), else token_valid
#   The names of the authorization audit rules the request matches are added
#   as "audit"; they never change the decision.
package gatehouse.authz

import data.gatehouse.authorization as az
import data.gatehouse.lib

# decision is the result document (OPA-Envoy keys plus reason, bypass and
# audit).
decision := object.union(_decision, _audit)

_audit := {"audit": az.audit} if {
	count(az.audit) > 0
} else := {}

# One else-chain: exactly one branch answers, so the result is deterministic.
_decision := denied(403, lib.deny_violations_all[0].reason, {}) if {
	count(lib.deny_violations_all) > 0
} else := denied(403, az.deny_reason, {}) if {
	az.deny_rule
} else := {"allowed": true, "bypass": true, "reason": "trusted_ip"} if {
	lib.bypass
} else := denied(401, token_reason, {"www-authenticate": _invalid_token_challenge}) if {
	token_present
	not token_valid
} else := denied(401, "token_missing", {"www-authenticate": _challenge}) if {
	az.enforce_allow
	not az.allow_rule
	not token_present
} else := denied(403, "no_matching_rule", {}) if {
	az.enforce_allow
	not az.allow_rule
} else := denied(401, "token_missing", {"www-authenticate": _challenge}) if {
	not az.enforce_allow
	not token_present
} else := denied(403, lib.header_violations_all[0].reason, {}) if {
	count(lib.header_violations_all) > 0
} else := {"allowed": true, "bypass": false, "reason": az.allow_reason} if {
	az.enforce_allow
} else := {"allowed": true, "bypass": false, "reason": "token_valid"}

# token_present: authz put a jwt object in the input (a token was presented).
token_present if is_object(input.jwt)

# token_valid: only an explicit valid: true counts; anything else fails closed.
token_valid if input.jwt.valid == true

# token_reason is token_<error>, e.g. token_expired; token_invalid without an error.
token_reason := concat("_", ["token", input.jwt.error]) if {
	is_string(input.jwt.error)
	input.jwt.error != ""
} else := "token_invalid"

_error_description := input.jwt.error if {
	is_string(input.jwt.error)
	input.jwt.error != ""
} else := "invalid"

# realm is the requested host (no port), or "gatehouse" when there is none.
realm := lib.request_host if {
	lib.request_host != ""
} else := "gatehouse"

# RFC 6750 section 3: no error attribute when no token was presented (3.1).
_challenge := concat("", ["Bearer realm=", lib.quote(realm)])

_invalid_token_challenge := concat("", [
	"Bearer realm=", lib.quote(realm),
	`, error="invalid_token", error_description=`, lib.quote(_error_description),
])

# denied(status, reason, headers) is a denial with a small JSON body. The body
# also names client_ip_fallback when the configured client IP source could not
# be used (it explains a bypass that did not happen); reason stays a constant.
denied(status, reason, headers) := {
	"allowed": false,
	"http_status": status,
	"reason": reason,
	"headers": object.union({"content-type": "application/json"}, headers),
	"body": json.marshal(object.union(
		object.union({"error": _error_word(status), "reason": reason}, _fallback_field),
		_detail_field(reason),
	)),
}

_error_word(401) := "unauthorized"

_error_word(403) := "forbidden"

_error_word(status) := "denied" if not status in {401, 403}

_fallback_field := {"client_ip_fallback": input.client_ip_fallback} if {
	is_string(input.client_ip_fallback)
	input.client_ip_fallback != ""
} else := {}

_detail_field(reason) := {"detail": "no JWT providers are configured"} if {
	reason == "token_missing"
	count(data.gatehouse.config.jwt.providers) == 0
} else := {}
