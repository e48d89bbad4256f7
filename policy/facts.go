package policy

import (
	"encoding/json"
	"net/netip"
)

// This file is the contract between authz (which establishes the facts of a
// request once, in Go) and policy (which decides on them): Facts, TokenFacts
// and the reasons of the configured decision. policy/README.md lists what a
// new rule kind touches.

// Facts are what Go established about one request: everything the configured
// decision reads. The native decision reads them directly; the Rego
// specification reads the same facts from the policy input (request_path,
// attributes.request.http.headers and host, client_ip, client_ip_fallback,
// jwt).
type Facts struct {
	// Headers are the request headers with lower-case names, repeated headers
	// comma-joined as Envoy sends them.
	Headers map[string]string
	// Path is the request path as sent (not percent-decoded), without the
	// query string and fragment: input.request_path.
	Path string
	// Host is attributes.request.http.host, or the :authority header when
	// that is empty.
	Host string
	// ClientIP is the resolved client address; invalid when unknown.
	ClientIP netip.Addr
	// ClientIPFallback names why the configured client IP source could not be
	// used ("" when it could).
	ClientIPFallback string
	// Token is the verdict on the request's token; nil when none was
	// presented (input.jwt absent).
	Token *TokenFacts
	// Method is the request method (attributes.request.http.method).
	Method string
	// Port is the destination port (attributes.destination.address), 0 when
	// unknown.
	Port uint32
	// Peer is the direct peer's address as Envoy reports it
	// (attributes.source.address); parsed only by rules that read it.
	Peer string
	// SourcePrincipal is the peer's mTLS identity as Envoy reports it
	// (attributes.source.principal, "spiffe://cluster.local/ns/NS/sa/SA").
	SourcePrincipal string
}

// TokenFacts is the verdict on a presented token.
type TokenFacts struct {
	Valid bool
	// Error is "" when Valid, otherwise the verifier's reason (expired, ...).
	Error string
	// Provider names the JWT provider that verified (or refused) the token.
	Provider string
	// Claims is the verified token's JSON payload (nil unless Valid); the
	// authorization rules decode it only when a rule reads the identity.
	Claims json.RawMessage
}

// Reasons of the configured decision (docs/policies.md has the table).
const (
	ReasonTrustedIP    = "trusted_ip"
	ReasonTokenValid   = "token_valid"
	ReasonTokenMissing = "token_missing"
	// Denials by a header rule are "<kind>:<header name>".
	KindHeaderDenied          = "header_denied"
	KindHeaderRequired        = "header_required"
	KindHeaderInvalid         = "header_invalid"
	KindHeaderValueNotAllowed = "header_value_not_allowed"
	// Authorization rules: "rule_allowed:<name>", "rule_denied:<name>", and
	// no_matching_rule when allow rules exist and none matched a request
	// with a valid token.
	KindRuleAllowed      = "rule_allowed"
	KindRuleDenied       = "rule_denied"
	ReasonNoMatchingRule = "no_matching_rule"
)
