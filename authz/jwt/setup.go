package jwt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// settings are validated Options.
type settings struct {
	providers       []*provider
	locations       []*location
	identityHeaders []string
	maxTokenBytes   int
	skew            time.Duration
	cacheSize       int
}

// compile validates cfg and applies defaults. Every problem is reported, each
// naming the field and the fix, so one edit of the file fixes them all.
func compile(cfg Options) (*settings, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	s := &settings{
		maxTokenBytes: cfg.MaxTokenBytes,
		skew:          cfg.ClockSkew,
		cacheSize:     cfg.CacheSize,
	}
	switch {
	case s.maxTokenBytes < 0:
		bad("jwt.max_token_bytes is negative; remove it for the default %d or set a positive size", DefaultMaxTokenBytes)
	case s.maxTokenBytes == 0:
		s.maxTokenBytes = DefaultMaxTokenBytes
	}
	switch {
	case s.skew < 0:
		bad("jwt.clock_skew is negative; remove it for the default %s or set a positive duration", DefaultClockSkew)
	case s.skew == 0:
		s.skew = DefaultClockSkew
	}
	if s.cacheSize == 0 {
		s.cacheSize = DefaultCacheSize
	}

	names := map[string]int{}
	issuers := map[string]int{}
	var tokenHeaders []string
	for i, pc := range cfg.Providers {
		p, perrs := compileProvider(i, pc)
		errs = append(errs, perrs...)
		if pc.Name != "" {
			if j, dup := names[pc.Name]; dup {
				bad("jwt.providers[%d] (%s): name is also used by jwt.providers[%d]; give each provider a unique name", i, pc.Name, j)
			} else {
				names[pc.Name] = i
			}
		}
		if pc.Issuer != "" {
			if j, dup := issuers[pc.Issuer]; dup {
				bad("jwt.providers[%d] (%s): issuer %q is also used by jwt.providers[%d]; tokens are routed by issuer, so each issuer needs exactly one provider", i, pc.Name, pc.Issuer, j)
			} else {
				issuers[pc.Issuer] = i
			}
		}
		for _, h := range p.headerLocs {
			tokenHeaders = append(tokenHeaders, h.name)
		}
		s.providers = append(s.providers, p)
	}

	var identity []string
	for i, p := range s.providers {
		for _, h := range p.identityHeaderNames() {
			for _, th := range tokenHeaders {
				if h == th {
					// Identity headers are stripped on every allow, so this
					// would silently remove every provider's token header too.
					bad("jwt.providers[%d] (%s): identity header %q is also a token header (from_headers); choose another header name", i, p.name, h)
				}
			}
			identity = append(identity, h)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid jwt configuration: %w", errors.Join(errs...))
	}
	s.identityHeaders = sortedUnique(identity)
	s.locations = unionLocations(s.providers)
	return s, nil
}

// compileProvider validates one provider; p is usable only when errs is empty.
func compileProvider(i int, pc Provider) (p *provider, errs []error) {
	at := fmt.Sprintf("jwt.providers[%d] (%s)", i, pc.Name)
	if pc.Name == "" {
		at = fmt.Sprintf("jwt.providers[%d]", i)
	}
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(at+": "+format, args...))
	}

	p = &provider{
		index:         i,
		name:          pc.Name,
		issuer:        pc.Issuer,
		anyAudience:   pc.AllowAnyAudience,
		forwardToken:  pc.ForwardToken == nil || *pc.ForwardToken,
		payloadHeader: strings.ToLower(pc.PayloadHeader),
		jwksURI:       pc.JWKSURI,
		jwksFile:      pc.JWKSFile,
		discovery:     pc.Discovery,
		caFile:        pc.CAFile,
	}
	if pc.Name == "" {
		bad("name is empty; give each provider a short unique name (it appears in input.jwt.provider and logs)")
	}
	if pc.Issuer == "" {
		bad("issuer is empty; set it to the exact iss claim of this provider's tokens")
	}

	switch {
	case len(pc.Audiences) == 0 && !pc.AllowAnyAudience:
		bad("audiences is empty; list the audiences this service accepts, or set allow_any_audience: true")
	case len(pc.Audiences) > 0 && pc.AllowAnyAudience:
		bad("audiences and allow_any_audience: true are both set; keep audiences (recommended) or remove them")
	}
	for j, a := range pc.Audiences {
		if a == "" {
			bad("audiences[%d] is empty; remove it or write the audience", j)
		}
	}
	p.audiences = pc.Audiences

	sources := 0
	for _, set := range []bool{pc.JWKSURI != "", pc.JWKSFile != "", pc.Discovery} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		bad("set exactly one of jwks_uri, jwks_file and discovery: true (%d are set)", sources)
	}
	if pc.JWKSURI != "" {
		if err := checkHTTPURL(pc.JWKSURI); err != nil {
			bad("jwks_uri: %v; write an absolute http(s) URL", err)
		}
	}
	if pc.Discovery && pc.Issuer != "" {
		if err := checkHTTPURL(pc.Issuer); err != nil {
			bad("discovery needs an http(s) issuer URL (%v); use jwks_uri instead", err)
		}
	}
	if pc.CAFile != "" && pc.JWKSFile != "" {
		bad("ca_file applies only to jwks_uri and discovery; remove it")
	}
	for j, h := range pc.RedirectHosts {
		if h == "" || strings.ContainsAny(h, "/?#@ ") {
			bad("redirect_hosts[%d] %q is not a host; write a host name such as keys.example.net, or host:port", j, h)
			continue
		}
		p.redirectHosts = append(p.redirectHosts, strings.ToLower(h))
	}

	for _, name := range pc.Algorithms {
		id, ok := lookupAlg(name)
		if !ok {
			bad("algorithms: %q is not accepted; use RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA (HMAC and none are never accepted: only public keys are held)", name)
			continue
		}
		p.algMask |= 1 << id
	}
	if len(pc.Algorithms) == 0 {
		p.algMask = allAlgs
	}

	p.refreshInterval = durationOrDefault(pc.RefreshInterval, DefaultRefreshInterval, at+": refresh_interval", &errs)
	p.minRefreshInterval = durationOrDefault(pc.MinRefreshInterval, DefaultMinRefreshInterval, at+": min_refresh_interval", &errs)
	p.fetchTimeout = durationOrDefault(pc.FetchTimeout, DefaultFetchTimeout, at+": fetch_timeout", &errs)
	switch {
	case pc.MaxJWKSBytes < 0:
		bad("max_jwks_bytes is negative; remove it for the default 1 MiB or set a positive size")
	case pc.MaxJWKSBytes == 0:
		p.maxJWKSBytes = DefaultMaxJWKSBytes
	default:
		p.maxJWKSBytes = pc.MaxJWKSBytes
	}

	// Envoy's jwt_authn rule: the default location applies only when the
	// provider names no location at all, so listing from_cookies alone means
	// "cookie only".
	headers := pc.FromHeaders
	if len(headers) == 0 && len(pc.FromParams) == 0 && len(pc.FromCookies) == 0 {
		headers = []TokenHeader{{Name: "authorization", Prefix: "Bearer "}}
	}
	for j, h := range headers {
		name := strings.ToLower(h.Name)
		if !validHeaderName(name) {
			bad("from_headers[%d].name %q is not a valid header name; write a header name such as authorization", j, h.Name)
			continue
		}
		p.headerLocs = append(p.headerLocs, location{kind: inHeader, name: name, prefix: h.Prefix})
	}
	for j, name := range pc.FromParams {
		if name == "" {
			bad("from_params[%d] is empty; write the query parameter name", j)
			continue
		}
		p.paramLocs = append(p.paramLocs, location{kind: inParam, name: name})
	}
	for j, name := range pc.FromCookies {
		if name == "" || strings.ContainsAny(name, "=;, \t") {
			bad("from_cookies[%d] %q is not a cookie name; write the cookie name", j, name)
			continue
		}
		p.cookieLocs = append(p.cookieLocs, location{kind: inCookie, name: name})
	}

	for j, ch := range pc.ClaimToHeaders {
		header := strings.ToLower(ch.Header)
		if ch.Claim == "" {
			bad("claim_to_headers[%d].claim is empty; name the claim to copy", j)
		}
		if err := checkIdentityHeader(header); err != nil {
			bad("claim_to_headers[%d].header %q %v", j, ch.Header, err)
			continue
		}
		p.claimHeaders = append(p.claimHeaders, claimHeader{claim: ch.Claim, header: header})
	}
	if p.payloadHeader != "" {
		if err := checkIdentityHeader(p.payloadHeader); err != nil {
			bad("payload_header %q %v", pc.PayloadHeader, err)
		}
	}
	return p, errs
}

func durationOrDefault(d, def time.Duration, field string, errs *[]error) time.Duration {
	switch {
	case d < 0:
		*errs = append(*errs, fmt.Errorf("%s is negative; remove it for the default %s or set a positive duration", field, def))
		return def
	case d == 0:
		return def
	}
	return d
}

func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q does not parse: %w", raw, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	return nil
}

// checkIdentityHeader refuses names Envoy would ignore or that would break
// the request when set from a claim.
func checkIdentityHeader(name string) error {
	if !validHeaderName(name) {
		return errors.New("is not a valid header name; use a name such as x-user-id")
	}
	switch name {
	case "host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade", "keep-alive", "cookie":
		return errors.New("cannot carry identity; use a dedicated header such as x-user-id")
	}
	return nil
}

// validHeaderName reports whether name is a non-empty RFC 9110 token. This
// also rules out pseudo-headers (":path").
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
