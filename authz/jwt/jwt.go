// Package jwt verifies the bearer tokens Envoy forwards in a CheckRequest: it
// finds the token in the configured locations, picks the provider by the
// token's issuer, keeps each provider's JWKS fresh in the background, verifies
// the signature and the registered claims, and caches verified tokens.
//
// The hot path never performs I/O, with one exception: a token whose `kid` is
// not in the provider's key set triggers at most one JWKS refetch per
// provider per min_refresh_interval, shared by every concurrent request.
package jwt

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"
	"unsafe"
)

// Reasons a token is not valid. They are the values of Result.Error and of
// the policy input's `input.jwt.error` (docs/architecture.md).
const (
	// ErrMalformed: not a compact JWS, bad base64 or JSON, an unsupported or
	// duplicated header, a missing or non-numeric `exp`, or an ambiguous
	// location (two tokens in one header, a repeated query parameter).
	ErrMalformed = "malformed"
	// ErrTooLarge: the token exceeds jwt.max_token_bytes; nothing was parsed.
	ErrTooLarge = "too_large"
	// ErrExpired: `exp` is in the past beyond the clock skew.
	ErrExpired = "expired"
	// ErrNotYetValid: `nbf` is in the future beyond the clock skew.
	ErrNotYetValid = "not_yet_valid"
	// ErrIssuedInFuture: `iat` is in the future beyond the clock skew.
	ErrIssuedInFuture = "issued_in_future"
	// ErrBadSignature: the signature does not verify with the selected key.
	ErrBadSignature = "bad_signature"
	// ErrUnknownKey: no key in the provider's set matches the `kid` (after the
	// rate-limited refetch), or the token has no `kid` and no key in the set
	// is usable for its `alg`. A token without `kid` is tried against each
	// usable key (at most 8); when none verifies it is ErrBadSignature.
	ErrUnknownKey = "unknown_key"
	// ErrUnknownIssuer: the token's `iss` names no configured provider. This
	// is reported even with a single provider, so a policy (and an operator
	// reading the decision log) can tell "someone else's token" apart from a
	// token of ours that failed a check.
	ErrUnknownIssuer = "unknown_issuer"
	// ErrBadIssuer: the token has no `iss` claim, or it is not a string, so
	// it cannot name a provider at all.
	ErrBadIssuer = "bad_issuer"
	// ErrBadAudience: `aud` is missing or holds none of the provider's audiences.
	ErrBadAudience = "bad_audience"
	// ErrAlgNotAllowed: `alg` is none, HMAC, unknown, not in the provider's
	// algorithms, or incompatible with the key the `kid` selects.
	ErrAlgNotAllowed = "alg_not_allowed"
	// ErrKeysUnavailable: the provider has no key set yet (first fetch still
	// failing). Fail closed: nothing is verified without keys.
	ErrKeysUnavailable = "keys_unavailable"
)

// Defaults applied to zero Options and Provider fields. They are defined here
// and nowhere else: the configuration file maps onto Options unchanged.
const (
	DefaultClockSkew          = 60 * time.Second
	DefaultMaxTokenBytes      = 8192
	DefaultCacheSize          = 10000
	DefaultRefreshInterval    = 10 * time.Minute
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultFetchTimeout       = 5 * time.Second
	DefaultMaxJWKSBytes       = 1 << 20
)

// Options configure a Verifier. The configuration fields mirror the `jwt`
// section of the configuration file (docs/configuration.md); a zero field
// takes its Default* value, and validation errors name the file's keys
// (jwt.providers[i].audiences, ...).
type Options struct {
	// Providers are the token issuers, chosen per token by its `iss`.
	Providers []Provider
	// ClockSkew is the leeway on exp, nbf and iat. Zero is DefaultClockSkew.
	ClockSkew time.Duration
	// MaxTokenBytes rejects larger tokens before parsing. Zero is
	// DefaultMaxTokenBytes.
	MaxTokenBytes int
	// CacheSize bounds the verified-token cache (entries). Zero is
	// DefaultCacheSize; negative disables the cache.
	CacheSize int

	// Logger receives JWKS lifecycle lines. Nil discards them.
	Logger *slog.Logger
	// HTTPClient is the base client for JWKS and discovery fetches. Its
	// transport is wrapped (response size limit, Cache-Control bounds) and its
	// timeout replaced by the provider's fetch_timeout. Nil uses
	// http.DefaultTransport.
	HTTPClient *http.Client
	// Now is the clock for exp/nbf/iat and cache expiry. Nil is time.Now.
	// JWKS scheduling and refetch rate limiting always use the real clock.
	Now func() time.Time
}

// Provider is one token issuer: where its keys come from, where its tokens
// are carried, what is checked and what reaches the upstream.
type Provider struct {
	// Name identifies the provider in input.jwt.provider and logs.
	Name string
	// Issuer is compared exactly with the token's iss.
	Issuer string
	// Audiences: aud must hold one of them. Required unless AllowAnyAudience.
	Audiences        []string
	AllowAnyAudience bool

	// Exactly one of JWKSURI, JWKSFile and Discovery.
	JWKSURI   string
	JWKSFile  string
	Discovery bool

	// Token locations. With none at all, the token is read from the
	// Authorization header with the prefix "Bearer ".
	FromHeaders []TokenHeader
	FromParams  []string
	FromCookies []string

	// ForwardToken false strips the token (valid or not) before the request
	// reaches the upstream. Nil means true.
	ForwardToken   *bool
	ClaimToHeaders []ClaimToHeader
	PayloadHeader  string

	// Algorithms restricts the accepted algorithms; empty accepts every
	// asymmetric one the key fits (RS*, PS*, ES*, EdDSA).
	Algorithms []string

	// RefreshInterval is the background JWKS refresh period (Cache-Control
	// max-age is honoured within bounds). Zero is DefaultRefreshInterval.
	RefreshInterval time.Duration
	// MinRefreshInterval spaces the refetches an unknown kid triggers. Zero
	// is DefaultMinRefreshInterval.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds one JWKS or discovery fetch, and so how long a
	// request waits on an unknown-kid refetch. Zero is DefaultFetchTimeout.
	FetchTimeout time.Duration
	// MaxJWKSBytes bounds a JWKS or discovery response. Zero is
	// DefaultMaxJWKSBytes.
	MaxJWKSBytes int64
	// CAFile is an extra PEM CA bundle for the JWKS endpoint's TLS.
	CAFile string
	// RedirectHosts lists the hosts a JWKS or discovery fetch may be
	// redirected to besides its own origin (scheme, host and port). An entry
	// with a port ("keys.example.net:8443") matches that host and port; an
	// entry without one matches the host on any port. Empty refuses every
	// redirect to another origin.
	RedirectHosts []string
}

// TokenHeader names a header carrying a token, with an optional prefix such
// as "Bearer " (matched case-insensitively).
type TokenHeader struct {
	Name   string
	Prefix string
}

// ClaimToHeader copies a claim into an upstream request header.
type ClaimToHeader struct {
	Claim  string
	Header string
}

// Request is the part of a CheckRequest a token can be found in.
type Request struct {
	// Headers uses lower-case names; Envoy comma-joins repeated headers.
	Headers map[string]string
	// Query holds the decoded query parameters.
	Query map[string][]string
	// RawQuery is the query string as received (after `?`, before `#`,
	// undecoded). It is used only to name the token's parameter as the
	// upstream sees it when forward_token is false; empty is allowed.
	RawQuery string
}

// Result is the outcome of verifying the token presented with a request.
// A Result (and its Claims and Headers) may be shared between requests
// through the verified-token cache: callers must treat it as read-only.
type Result struct {
	Valid    bool
	Provider string
	// Claims are the verified claims: the token's JSON payload, exactly as
	// signed (a JSON object without duplicated top-level names); nil for
	// invalid tokens. Kept as JSON rather than decoded: the verified-token
	// cache holds it for every entry, and only a policy that reads the
	// claims (input.jwt) pays for decoding them. Read-only: it is the
	// cached entry's own slice, shared by every request with the token.
	Claims json.RawMessage
	// Error is "" when Valid, otherwise one of the Err* constants.
	Error string
	// Detail explains Error for logs; it never contains the token.
	Detail string
	// Headers are the identity headers to set (append=false) on allow.
	Headers []Header
	// RemoveHeaders names the headers that carried the token, valid or not,
	// when forward_token is false; Envoy removes them before the upstream.
	RemoveHeaders []string
	// RemoveParams names the query parameters that carried the token, valid
	// or not, when forward_token is false: the configured name and every
	// spelling of it in Request.RawQuery (such as "access_%74oken"), as
	// Envoy's query_parameters_to_remove matches the raw, undecoded name.
	RemoveParams []string
}

// Header is one identity header to set on the upstream request.
type Header struct{ Key, Value string }

// Stats are counters for the JWKS lifecycle and the verified-token cache.
// Totals are summed over Providers.
type Stats struct {
	// Fetches counts JWKS, discovery and jwks_file reads attempted.
	Fetches uint64
	// FetchFailures counts fetches that did not produce a new key set
	// (network error, timeout, non-200, oversize or unusable JWKS).
	FetchFailures uint64
	// UnknownKidRefetches counts refetches triggered by an unknown `kid`.
	UnknownKidRefetches uint64
	// CacheHits and CacheMisses count verified-token cache lookups.
	CacheHits   uint64
	CacheMisses uint64
	// CacheEvictions counts entries removed to stay within cache_size;
	// CacheExpirations entries removed because their token expired.
	CacheEvictions   uint64
	CacheExpirations uint64
	// Providers holds per-provider counters, in configuration order.
	Providers []ProviderStats
}

// ProviderStats are one provider's JWKS counters and state.
type ProviderStats struct {
	Name string
	// Ready is true once the provider holds a key set.
	Ready bool
	// Keys is the number of usable keys in the current set.
	Keys int
	// Updated is when the current key set was installed (zero before).
	Updated             time.Time
	Fetches             uint64
	FetchFailures       uint64
	UnknownKidRefetches uint64
	// LastError is the last failed fetch's error ("" when none failed) and
	// LastErrorAt when it happened; a later success does not clear them
	// (compare with Updated).
	LastError   string
	LastErrorAt time.Time
}

// Verifier verifies tokens for a fixed set of providers. It is safe for
// concurrent use. Build it with New and stop it with Close.
type Verifier struct {
	providers []*provider
	byIssuer  map[string]*provider
	// locations is the union of every provider's token locations, in the
	// order they are searched.
	locations []*location
	identity  []string

	// stripAny is true when some provider has forward_token: false.
	stripAny      bool
	maxTokenBytes int
	skew          time.Duration
	now           func() time.Time
	algs          *algTable
	cache         *tokenCache // nil when disabled
	log           *slog.Logger

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New validates opts, loads jwks_file providers, starts fetching the JWKS of
// the others in the background and returns without waiting for them: Ready
// reports when every provider has keys. ctx bounds the background work, as
// does Close. An invalid configuration returns an error naming each bad field
// and its fix.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	settings, err := compile(opts)
	if err != nil {
		return nil, err
	}
	algs, err := newAlgTable()
	if err != nil {
		return nil, err
	}

	bg, cancel := context.WithCancel(ctx)
	v := &Verifier{
		providers:     settings.providers,
		byIssuer:      make(map[string]*provider, len(settings.providers)),
		locations:     settings.locations,
		identity:      settings.identityHeaders,
		maxTokenBytes: settings.maxTokenBytes,
		skew:          settings.skew,
		now:           now,
		algs:          algs,
		log:           log,
		cancel:        cancel,
	}
	if settings.cacheSize > 0 {
		if v.cache, err = newTokenCache(settings.cacheSize, now); err != nil {
			cancel()
			return nil, err
		}
	}
	for _, p := range v.providers {
		v.byIssuer[p.issuer] = p
		v.stripAny = v.stripAny || !p.forwardToken
		if err := p.init(bg, log.With("provider", p.name), opts.HTTPClient); err != nil {
			cancel()
			return nil, err
		}
	}
	for _, p := range v.providers {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			p.run(bg)
		}()
	}
	return v, nil
}

// Ready reports whether every provider holds a key set, so that readiness
// probes keep traffic away until tokens can actually be verified.
func (v *Verifier) Ready() bool {
	for _, p := range v.providers {
		if p.keys.Load() == nil {
			return false
		}
	}
	return true
}

// Close stops background fetching and waits for it. It is idempotent.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.cancel()
		v.wg.Wait()
		if v.cache != nil {
			v.cache.close()
		}
	})
}

// IdentityHeaders returns the lower-case names of every claim_to_headers
// header and payload_header across providers, sorted. The authz handler lists
// them in headers_to_remove on every allow, so a client can never pre-seed one.
func (v *Verifier) IdentityHeaders() []string {
	return append([]string(nil), v.identity...)
}

// Stats returns a snapshot of the counters.
func (v *Verifier) Stats() Stats {
	var s Stats
	for _, p := range v.providers {
		ps := ProviderStats{
			Name:                p.name,
			Fetches:             p.fetches.Load(),
			FetchFailures:       p.fetchFailures.Load(),
			UnknownKidRefetches: p.unknownKidRefetches.Load(),
		}
		if ks := p.keys.Load(); ks != nil {
			ps.Ready, ps.Keys, ps.Updated = true, len(ks.keys), ks.updated
		}
		if f := p.lastFailure.Load(); f != nil {
			ps.LastError, ps.LastErrorAt = f.err, f.at
		}
		s.Fetches += ps.Fetches
		s.FetchFailures += ps.FetchFailures
		s.UnknownKidRefetches += ps.UnknownKidRefetches
		s.Providers = append(s.Providers, ps)
	}
	if v.cache != nil {
		lookups := v.cache.lookups.Snapshot()
		s.CacheHits, s.CacheMisses = lookups.Hits, lookups.Misses
		s.CacheEvictions, s.CacheExpirations = v.cache.evicted.Load(), v.cache.expired.Load()
	}
	return s
}

// Verify finds the token presented with req and verifies it. It returns nil
// when no token was presented, including a token found only in a location
// that the provider of its issuer does not read.
//
// A request carries at most one token: two different tokens, in one location
// or in several, are malformed. Otherwise a forged token in one location
// could ride along, unverified, to an upstream that reads it, beside a valid
// one in another. The same token in several locations is one token.
func (v *Verifier) Verify(ctx context.Context, req Request) *Result {
	var token string
	// carried lists every location holding a value; most requests have one.
	var buf [4]*location
	carried := buf[:0]
	var res *Result
	for _, loc := range v.locations {
		raw, ambiguous, found := loc.extract(req)
		if !found {
			continue
		}
		carried = append(carried, loc)
		switch {
		case res != nil:
			// Already malformed: keep collecting locations to strip.
		case ambiguous:
			res = &Result{Error: ErrMalformed, Detail: "more than one token in " + loc.describe()}
		case len(carried) > 1 && raw != token:
			res = &Result{Error: ErrMalformed, Detail: "different tokens in " + carried[0].describe() + " and " + loc.describe()}
		default:
			token = raw
		}
	}
	var p *provider
	if res == nil {
		for _, loc := range carried {
			if res, p = v.verifyAt(ctx, loc, token); res != nil {
				break
			}
		}
	}
	if res != nil && v.stripAny {
		v.strip(res, p, carried, req.RawQuery)
	}
	return res
}

// strip fills the removal lists for forward_token: false. The upstream must
// never see such a token, whether or not it was valid, so every location that
// carried a value is stripped when the token's provider reads it and does not
// forward, or, when the token names no provider that reads it (malformed,
// unknown issuer, two tokens), when any provider reading it does not forward.
// A token whose own provider does not forward is stripped everywhere.
func (v *Verifier) strip(res *Result, p *provider, carried []*location, rawQuery string) {
	for _, loc := range carried {
		var drop bool
		if p != nil && loc.allowed[p.index] {
			drop = !p.forwardToken
		} else {
			drop = loc.strip || (p != nil && !p.forwardToken)
		}
		if !drop {
			continue
		}
		switch loc.kind {
		case inHeader:
			res.RemoveHeaders = appendShared(res.RemoveHeaders, loc.removeHeaders)
		case inParam:
			res.RemoveParams = appendShared(res.RemoveParams, loc.paramNames(rawQuery))
		}
	}
}

// appendShared appends names to list without ever writing into a slice that
// is shared between requests (a location's precomputed list).
func appendShared(list, names []string) []string {
	if list == nil {
		return names
	}
	return append(list[:len(list):len(list)], names...)
}

// verifyAt verifies raw found at loc; a nil Result means the token is not
// presented there (its issuer's provider does not read loc). The provider is
// returned when the token names one.
func (v *Verifier) verifyAt(ctx context.Context, loc *location, raw string) (*Result, *provider) {
	// The size limit comes before hashing or parsing anything.
	if len(raw) > v.maxTokenBytes {
		return &Result{Error: ErrTooLarge, Detail: "token exceeds max_token_bytes"}, nil
	}
	now := v.now()

	var key [sha256.Size]byte
	if v.cache != nil {
		key = sha256.Sum256(stringBytes(raw))
		if e := v.cache.get(key); e != nil {
			p := e.provider
			switch {
			case !loc.allowed[p.index]:
				return nil, p
			case !now.Before(e.expiresAt):
				v.cache.remove(key, e)
			case !p.keys.Load().has(e.thumbprint):
				// The key that verified this token left the provider's
				// set: the entry dies with it.
				v.cache.remove(key, e)
			default:
				v.cache.lookups.RecordHits(1)
				return e.result(), p
			}
		}
		v.cache.lookups.RecordMisses(1)
	}

	tok, detail := parseToken(raw)
	if tok == nil {
		return &Result{Error: ErrMalformed, Detail: detail}, nil
	}
	iss, ok := tok.claims["iss"].(string)
	if !ok {
		return &Result{Error: ErrBadIssuer, Detail: "token has no string iss claim"}, nil
	}
	p := v.byIssuer[iss]
	if p == nil {
		return &Result{Error: ErrUnknownIssuer, Detail: "no provider for iss " + quote(iss)}, nil
	}
	if !loc.allowed[p.index] {
		return nil, p
	}
	e, code, detail := v.verifyToken(ctx, p, tok, now)
	if e == nil {
		return &Result{Provider: p.name, Error: code, Detail: detail}, p
	}
	if v.cache != nil {
		v.cache.add(key, e)
	}
	return e.result(), p
}

// result builds the per-request Result of a verified token; the removal
// lists are added by Verify, as they depend on where the request carried it.
func (e *verified) result() *Result {
	return &Result{Valid: true, Provider: e.provider.name, Claims: e.claims, Headers: e.headers}
}

// stringBytes returns the bytes of s without copying them, for a function
// that only reads its input and keeps no reference to it (sha256.Sum256):
// []byte(s) would copy every token on the hot path.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// sortedUnique returns the sorted distinct values of names.
func sortedUnique(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
