// Package config holds Gatehouse's configuration file format: the types, their
// defaults, and the validation that turns a bad file into an error naming the
// file, the key and the fix. It only parses; cmd/gatehouse wires the result.
package config

import (
	"time"

	"github.com/gatehouse-dev/gatehouse/authz/clientip"
)

// Config is the whole configuration file. Every key has a default, so the zero
// file (no file at all) is a valid configuration running the embedded policy.
type Config struct {
	Listen   Listen      `yaml:"listen"`
	GRPC     GRPC        `yaml:"grpc"`
	Policy   Policy      `yaml:"policy"`
	JWT      JWT         `yaml:"jwt"`
	ClientIP ClientIP    `yaml:"client_ip"`
	Bypass   Bypass      `yaml:"bypass"`
	Headers  HeaderRules `yaml:"headers"`
	// Authorization holds route rules with Istio AuthorizationPolicy
	// semantics (config/authorization.go, docs/authorization.md).
	Authorization Authorization `yaml:"authorization"`
	Log           Log           `yaml:"log"`
	Limits        Limits        `yaml:"limits"`
	// ForwardAuth configures the HTTP forward-auth listener (listen.forward_auth).
	ForwardAuth ForwardAuth `yaml:"forward_auth"`
	Ops         Ops         `yaml:"ops"`
}

// Ops configures what the operations listener serves beside probes and
// /metrics.
type Ops struct {
	// PProf serves net/http/pprof under /debug/pprof/ on the ops listener.
	// Default false: profiles reveal internals and cost CPU when taken.
	PProf bool `yaml:"pprof"`
	// MaxReasonLabels bounds the distinct reasons, beyond Gatehouse's own,
	// that get their own value of gatehouse_decisions_total's reason label;
	// later ones count as "other". Default 64.
	MaxReasonLabels int `yaml:"max_reason_labels"`
	// GCMinHeapMiB is the garbage collector's minimum heap goal in MiB: while
	// the live heap is small, collections wait until the heap reaches it
	// instead of twice the live heap (internal/gctune). 0 leaves the Go
	// runtime's default; a GOGC environment variable overrides it. Default
	// DefaultGCMinHeapMiB.
	GCMinHeapMiB *int `yaml:"gc_min_heap_mib"`
}

// Limits bound what one request can make Gatehouse do; 0 means the default
// (docs/configuration.md lists them).
type Limits struct {
	MaxHeaders     int `yaml:"max_headers"`
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	MaxPathBytes   int `yaml:"max_path_bytes"`
	MaxQueryParams int `yaml:"max_query_params"`
	MaxJSONDepth   int `yaml:"max_json_depth"`
}

// Listen holds the listener addresses.
type Listen struct {
	// GRPC is the ext_authz gRPC listener (Authorization/Check, health, reflection).
	GRPC string `yaml:"grpc"`
	// HTTP is the operations listener (/healthz, /readyz, later /metrics).
	HTTP string `yaml:"http"`
	// HTTPMaxConns caps the ops listener's open connections. At the cap, the
	// longest-idle or longest-stalled connection is closed to make room for
	// a new one (internal/connlimit), so probes are never starved. Default 64.
	HTTPMaxConns int `yaml:"http_max_conns"`
	// ForwardAuth is the HTTP forward-auth listener for Traefik, NGINX, Caddy
	// and Envoy's HTTP ext_authz. Empty (the default) means off.
	ForwardAuth string `yaml:"forward_auth"`
	// Admin is the admin gRPC listener (gatehouse.admin.v1: Explain,
	// Status). Default 127.0.0.1:9192: loopback, as it explains decisions.
	Admin string `yaml:"admin"`
}

// GRPC tunes the gRPC server.
type GRPC struct {
	// MaxRecvMsgBytes bounds one CheckRequest; Envoy's with_request_body can make them large.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
	// ShutdownGrace bounds how long a graceful stop waits for in-flight checks.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
}

// Policy configures the Rego engine.
type Policy struct {
	// Paths are files or directories of .rego and data (.json/.yaml) files.
	// Empty means the embedded default policy.
	Paths []string `yaml:"paths"`
	// Decision is the rule path evaluated per request, as OPA-Envoy's `path`.
	Decision string `yaml:"decision"`
	// DryRun evaluates and logs every decision but always allows.
	DryRun bool `yaml:"dry_run"`
	// RegoVersion is "v1" (default) or "v0" for policies in the pre-1.0 syntax.
	RegoVersion string `yaml:"rego_version"`
	// FailStatus is the HTTP status of the denial answered when evaluation fails
	// (undefined decision, wrong result type, runtime error). Default 403.
	FailStatus int `yaml:"fail_status"`
	// Watch reloads the policy when files under Paths change. Default true.
	Watch *bool `yaml:"watch"`
	// ParseBody enables parsed_body for JSON, form and multipart bodies. Default true.
	ParseBody *bool `yaml:"parse_body"`
	// MaxParseBodyBytes: larger bodies are left unparsed. Default 262144.
	MaxParseBodyBytes int `yaml:"max_parse_body_bytes"`
	// StrictBuiltinErrors turns a Rego built-in function's error into a failed
	// evaluation (a denial with policy_error). Default false, as in OPA.
	StrictBuiltinErrors bool `yaml:"strict_builtin_errors"`
	// EvalTimeout bounds one evaluation of a custom policy; past it the
	// request is denied with policy_timeout. Default 1s.
	EvalTimeout Duration `yaml:"eval_timeout"`
	// AllowNet lists the hosts (names or IP addresses, no port) that the
	// network built-ins (http.send, net.lookup_ip_addr, remote JSON schema
	// references) may reach, as OPA's capabilities allow_net. Not set (the
	// default): any host, as in OPA and OPA-Envoy, with a warning when a
	// policy calls one; [] allows none; ["*"] allows any host.
	AllowNet []string `yaml:"allow_net"`
	// Shadow is a candidate policy evaluated beside the active one.
	Shadow Shadow `yaml:"shadow"`
}

// Shadow names a candidate policy evaluated on a sample of live checks off
// the request path; disagreements with the active policy are counted and
// logged, decisions never change.
type Shadow struct {
	// Paths are the candidate's .rego and data files; empty: no shadow.
	Paths []string `yaml:"paths"`
	// Decision is the candidate's rule path; empty: policy.decision.
	Decision string `yaml:"decision"`
	// Sample is the fraction of checks evaluated, in (0, 1]. Default 1.
	Sample *float64 `yaml:"sample"`
	// QueueSize bounds the checks waiting for the candidate; when full,
	// checks are not shadowed (counted). Default 1024.
	QueueSize int `yaml:"queue_size"`
}

// JWT configures token verification.
type JWT struct {
	Providers []JWTProvider `yaml:"providers"`
	// ClockSkew is allowed on exp, nbf and iat. Zero means the default
	// (jwt.DefaultClockSkew, as every JWT default is defined in authz/jwt).
	ClockSkew Duration `yaml:"clock_skew"`
	// MaxTokenBytes rejects larger tokens before parsing.
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// CacheSize bounds the verified-token cache (entries); 0 means the
	// default, a negative value disables the cache.
	CacheSize int `yaml:"cache_size"`
}

// JWTProvider is one token issuer.
type JWTProvider struct {
	Name             string   `yaml:"name"`
	Issuer           string   `yaml:"issuer"`
	Audiences        []string `yaml:"audiences"`
	AllowAnyAudience bool     `yaml:"allow_any_audience"`
	// Exactly one of JWKSURI, JWKSFile and Discovery.
	JWKSURI   string `yaml:"jwks_uri"`
	JWKSFile  string `yaml:"jwks_file"`
	Discovery bool   `yaml:"discovery"`

	FromHeaders []TokenHeader `yaml:"from_headers"`
	FromParams  []string      `yaml:"from_params"`
	FromCookies []string      `yaml:"from_cookies"`

	// ForwardToken false strips the token before the request reaches the upstream.
	ForwardToken   *bool           `yaml:"forward_token"`
	ClaimToHeaders []ClaimToHeader `yaml:"claim_to_headers"`
	// SpaceDelimitedClaims are the claims whose string value authorization
	// rules read as a space-separated list. Default [scope, scp]; [] for none.
	SpaceDelimitedClaims []string `yaml:"space_delimited_claims"`
	PayloadHeader        string   `yaml:"payload_header"`

	// Algorithms restricts accepted algorithms; empty means every asymmetric one
	// the key supports (RS*, PS*, ES*, EdDSA).
	Algorithms []string `yaml:"algorithms"`

	// JWKS fetching.
	RefreshInterval    Duration `yaml:"refresh_interval"`
	MinRefreshInterval Duration `yaml:"min_refresh_interval"` // unknown-kid refetch floor
	FetchTimeout       Duration `yaml:"fetch_timeout"`
	MaxJWKSBytes       int64    `yaml:"max_jwks_bytes"`
	CAFile             string   `yaml:"ca_file"`
	// RedirectHosts lists the hosts a JWKS or discovery fetch may be
	// redirected to besides its own origin; empty refuses such redirects.
	RedirectHosts []string `yaml:"redirect_hosts"`
}

// TokenHeader names a header carrying a token, with an optional prefix such as "Bearer ".
type TokenHeader struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"`
}

// ClaimToHeader copies a scalar claim into an upstream request header.
type ClaimToHeader struct {
	Claim  string `yaml:"claim"`
	Header string `yaml:"header"`
}

// ClientIP says how the real client address is resolved.
type ClientIP struct {
	// Source is peer, xff or envoy_external_address.
	Source string `yaml:"source"`
	// XFFTrustedHops is the number of trusted proxies in front (Envoy's
	// xff_num_trusted_hops, Istio's numTrustedProxies).
	XFFTrustedHops int `yaml:"xff_trusted_hops"`
	// TrustedProxies are CIDRs whose X-Forwarded-For entries may be skipped.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AllowAllProxies acknowledges a trusted_proxies entry covering every
	// address (0.0.0.0/0, ::/0); without it such an entry is refused.
	AllowAllProxies bool `yaml:"allow_all_proxies"`
}

// Options maps client_ip onto the resolver's options.
func (c ClientIP) Options() clientip.Options {
	return clientip.Options{
		Source:          c.Source,
		XFFTrustedHops:  c.XFFTrustedHops,
		TrustedProxies:  c.TrustedProxies,
		AllowAllProxies: c.AllowAllProxies,
	}
}

// Bypass lets trusted client networks skip authentication.
type Bypass struct {
	TrustedCIDRs []string `yaml:"trusted_cidrs"`
	// Paths, when set, limits the bypass to these path prefixes.
	Paths []string `yaml:"paths"`
	// AllowAllAddresses acknowledges a trusted_cidrs entry covering every
	// address (0.0.0.0/0, ::/0), which lets every client skip
	// authentication; without it such an entry is refused.
	AllowAllAddresses bool `yaml:"allow_all_addresses"`
}

// HeaderRules are request header checks evaluated by the default policy.
type HeaderRules struct {
	Require     []HeaderMatch      `yaml:"require"`
	Deny        []HeaderMatch      `yaml:"deny"`
	AllowValues []HeaderValues     `yaml:"allow_values"`
	RulesFor    []ScopedHeaderRule `yaml:"rules_for"`
}

// HeaderMatch names a header, optionally with a regular expression its value must match.
type HeaderMatch struct {
	Name  string `yaml:"name" json:"name"`
	Regex string `yaml:"regex,omitempty" json:"regex,omitempty"`
}

// HeaderValues lists the values a header may take when present.
type HeaderValues struct {
	Name   string   `yaml:"name" json:"name"`
	Values []string `yaml:"values" json:"values"`
}

// ScopedHeaderRule applies header rules to one host and/or path prefix.
type ScopedHeaderRule struct {
	Host        string         `yaml:"host" json:"host,omitempty"`
	PathPrefix  string         `yaml:"path_prefix" json:"path_prefix,omitempty"`
	Require     []HeaderMatch  `yaml:"require" json:"require,omitempty"`
	Deny        []HeaderMatch  `yaml:"deny" json:"deny,omitempty"`
	AllowValues []HeaderValues `yaml:"allow_values" json:"allow_values,omitempty"`
}

// ForwardAuth configures the forward-auth listener. Zero values take the
// defaults of package authz/forwardauth, which also validates the values.
type ForwardAuth struct {
	// Mode says which proxy sends the subrequests: traefik (Traefik
	// forwardAuth, Caddy forward_auth), nginx (auth_request, ingress-nginx
	// auth-url) or envoy (ext_authz http_service). Required with the listener.
	Mode string `yaml:"mode"`
	// PathPrefix is answered, and every path under it. Default /authz.
	PathPrefix string `yaml:"path_prefix"`
	// NGINXClientHeader (nginx mode) is x-forwarded-for (default) or x-real-ip.
	NGINXClientHeader string `yaml:"nginx_client_header"`
	// MaxBodyBytes bounds a forwarded request body. Default 1048576.
	MaxBodyBytes int `yaml:"max_body_bytes"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Decisions writes one JSON line per decision. Default true.
	Decisions *bool `yaml:"decisions"`
}

// Duration is a time.Duration written as "10m", "30s" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
