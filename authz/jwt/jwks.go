package jwt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"golang.org/x/sync/singleflight"
)

// Background refresh bounds. A JWKS response's Cache-Control max-age is
// honoured, clamped to [min(1m, refresh_interval), max(1h, refresh_interval)];
// without one, refresh_interval applies. The floor stops an issuer sending
// max-age=0 or no-cache from turning the refresh into a poll; the ceiling
// stops a max-age of days from keeping a removed (perhaps compromised) key
// trusted that long. An operator's own shorter or longer refresh_interval
// always stays inside the bounds.
const (
	maxAgeFloor   = time.Minute
	maxAgeCeiling = time.Hour
)

// First-fetch retry backoff: doubling from 500ms up to 30s, with jitter so
// replicas restarted together do not hit the issuer in lockstep.
const (
	initialBackoff = 500 * time.Millisecond
	maxBackoff     = 30 * time.Second
)

// provider is one compiled jwt.providers entry and its JWKS lifecycle.
type provider struct {
	index         int
	name          string
	issuer        string
	audiences     []string
	anyAudience   bool
	algMask       uint16
	headerLocs    []location
	paramLocs     []location
	cookieLocs    []location
	forwardToken  bool
	claimHeaders  []claimHeader
	payloadHeader string

	jwksURI            string
	jwksFile           string
	discovery          bool
	caFile             string
	refreshInterval    time.Duration
	minRefreshInterval time.Duration
	fetchTimeout       time.Duration
	maxJWKSBytes       int64
	redirectHosts      []string // lower-case host or host:port

	ctx    context.Context
	log    *slog.Logger
	client *http.Client
	cache  *jwk.Cache
	// uri is the JWKS URI: jwks_uri, or discovery's answer once known.
	uri atomic.Pointer[string]
	// keys is the current key set; nil until the first successful fetch.
	keys atomic.Pointer[keySet]

	flight      singleflight.Group
	refetchMu   sync.Mutex
	lastRefetch time.Time

	fetches             atomic.Uint64
	fetchFailures       atomic.Uint64
	unknownKidRefetches atomic.Uint64
	lastFailure         atomic.Pointer[fetchFailure]
}

// fetchFailure is the last failed fetch, for Stats (the admin Status).
type fetchFailure struct {
	err string
	at  time.Time
}

type claimHeader struct{ claim, header string }

func (p *provider) locations(kind locationKind) []location {
	switch kind {
	case inParam:
		return p.paramLocs
	case inCookie:
		return p.cookieLocs
	}
	return p.headerLocs
}

func (p *provider) identityHeaderNames() []string {
	var names []string
	for _, ch := range p.claimHeaders {
		names = append(names, ch.header)
	}
	if p.payloadHeader != "" {
		names = append(names, p.payloadHeader)
	}
	return names
}

// refreshBounds returns the clamp applied to Cache-Control max-age.
func (p *provider) refreshBounds() (floor, ceiling time.Duration) {
	return min(maxAgeFloor, p.refreshInterval), max(maxAgeCeiling, p.refreshInterval)
}

// init prepares the provider's fetching. A jwks_file is read now, so a
// missing or broken file fails New like any other configuration error.
func (p *provider) init(ctx context.Context, log *slog.Logger, base *http.Client) error {
	p.ctx, p.log = ctx, log
	if p.jwksFile != "" {
		if err := p.reload(ctx, "start"); err != nil {
			return fmt.Errorf("jwt.providers[%d] (%s): jwks_file: %w", p.index, p.name, err)
		}
		return nil
	}
	client, err := newHTTPClient(base, p)
	if err != nil {
		return fmt.Errorf("jwt.providers[%d] (%s): %w", p.index, p.name, err)
	}
	p.client = client
	floor, _ := p.refreshBounds()
	// httprc checks its refresh queue once per window; a quarter of the
	// shortest interval keeps refreshes close to their due time.
	window := min(max(floor/4, time.Second), 15*time.Second)
	p.cache = jwk.NewCache(ctx,
		jwk.WithRefreshWindow(window),
		jwk.WithErrSink(errSink(func(err error) { p.fetchFailed("refresh", err) })),
	)
	if p.jwksURI != "" {
		uri := p.jwksURI
		p.uri.Store(&uri)
	}
	return nil
}

// errSink receives the errors of jwk.Cache's background refreshes.
type errSink func(error)

func (f errSink) Error(err error) { f(err) }

// run performs the first fetch, retrying with backoff until it succeeds;
// from then on jwk.Cache refreshes the set on its own schedule. For a
// jwks_file it re-reads the file every refresh_interval.
func (p *provider) run(ctx context.Context) {
	if p.jwksFile != "" {
		p.watchFile(ctx)
		return
	}
	backoff := initialBackoff
	registered := false
	for {
		err := p.firstFetch(ctx, &registered)
		if err == nil || ctx.Err() != nil {
			return
		}
		p.fetchFailed("first fetch", fmt.Errorf("%w (retrying in %s)", err, backoff))
		wait := backoff + rand.N(backoff/5)
		backoff = min(2*backoff, maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// firstFetch resolves the JWKS URI (discovery) and fetches the set. The first
// attempt goes through jwk.Cache, which starts its periodic refresh for the
// URI. Retries fetch directly: with httprc v1 every Cache.Refresh schedules
// one more perpetual refresh chain for the URI, so refreshing through the
// cache on each retry (or on each unknown kid) would multiply the steady-state
// load on the issuer.
func (p *provider) firstFetch(ctx context.Context, registered *bool) error {
	uri := p.uri.Load()
	if uri == nil {
		found, err := p.discover(ctx)
		if err != nil {
			return err
		}
		uri = &found
		p.uri.Store(uri)
	}
	if *registered {
		return p.fetchHTTP(ctx, *uri)
	}
	floor, _ := p.refreshBounds()
	err := p.cache.Register(*uri,
		jwk.WithHTTPClient(httpGetter{p}),
		jwk.WithMinRefreshInterval(floor),
		jwk.WithPostFetcher(jwk.PostFetchFunc(func(u string, set jwk.Set) (jwk.Set, error) {
			return set, p.ingest(set, u)
		})),
	)
	if err != nil {
		return fmt.Errorf("register %s: %w", *uri, err)
	}
	*registered = true
	_, err = p.cache.Refresh(ctx, *uri)
	return err
}

func (p *provider) watchFile(ctx context.Context) {
	t := time.NewTicker(p.refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = p.reload(ctx, "refresh")
		}
	}
}

// reload fetches the set directly (outside jwk.Cache's schedule), counting
// and logging a failure. The last good set stays in place on failure.
func (p *provider) reload(ctx context.Context, reason string) error {
	var err error
	if p.jwksFile != "" {
		err = p.readFile()
	} else if uri := p.uri.Load(); uri != nil {
		err = p.fetchHTTP(ctx, *uri)
	} else {
		err = errors.New("JWKS URI not discovered yet")
	}
	if err != nil {
		p.fetchFailed(reason, err)
	}
	return err
}

func (p *provider) fetchFailed(reason string, err error) {
	p.fetchFailures.Add(1)
	p.lastFailure.Store(&fetchFailure{err: err.Error(), at: time.Now()})
	source := p.jwksFile
	if uri := p.uri.Load(); uri != nil {
		source = *uri
	} else if p.discovery {
		source = discoveryURL(p.issuer)
	}
	p.log.Warn("jwks fetch failed", "uri", source, "during", reason, "error", err)
}

func (p *provider) readFile() error {
	p.fetches.Add(1)
	f, err := os.Open(p.jwksFile)
	if err != nil {
		return fmt.Errorf("read JWKS: %w", err)
	}
	defer f.Close()
	body, err := io.ReadAll(&limitedBody{rc: f, remaining: p.maxJWKSBytes, limit: p.maxJWKSBytes})
	if err != nil {
		return fmt.Errorf("read JWKS %s: %w", p.jwksFile, err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return fmt.Errorf("parse JWKS %s: %w", p.jwksFile, err)
	}
	return p.ingest(set, p.jwksFile)
}

// fetchHTTP does what jwk.Cache's transformer does (200 only, parse), then
// ingests the set.
func (p *provider) fetchHTTP(ctx context.Context, uri string) error {
	body, err := p.getBody(ctx, uri)
	if err != nil {
		return err
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return fmt.Errorf("parse JWKS from %s: %w", uri, err)
	}
	return p.ingest(set, uri)
}

func (p *provider) getBody(ctx context.Context, uri string) ([]byte, error) {
	res, err := p.httpGet(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", uri, res.Status)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	return body, nil
}

func (p *provider) httpGet(ctx context.Context, uri string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	req.Header.Set("Accept", "application/json")
	p.fetches.Add(1)
	return p.client.Do(req)
}

// httpGetter is jwk.Cache's HTTP client for this provider. httprc calls
// Get without a context, so the provider's context (cancelled by Close)
// bounds it, besides the client's fetch_timeout.
type httpGetter struct{ p *provider }

func (g httpGetter) Get(uri string) (*http.Response, error) {
	return g.p.httpGet(g.p.ctx, uri)
}

// ingest installs a fetched set when it holds at least one usable key.
// It runs once per fetch: the request path only reads the prepared index.
func (p *provider) ingest(set jwk.Set, source string) error {
	ks, skipped, err := buildKeySet(set)
	for _, s := range skipped {
		p.log.Debug("jwks key skipped", "uri", source, "reason", s)
	}
	if err != nil {
		return fmt.Errorf("JWKS from %s: %w", source, err)
	}
	old := p.keys.Swap(ks)
	switch {
	case old == nil:
		p.log.Info("jwks loaded", "uri", source, "keys", len(ks.keys), "kids", ks.kidSummary())
	case !sameKeys(old, ks):
		p.log.Info("jwks changed", "uri", source, "keys", len(ks.keys), "kids", ks.kidSummary())
	}
	return nil
}

func sameKeys(a, b *keySet) bool {
	if len(a.thumbprints) != len(b.thumbprints) {
		return false
	}
	for tp := range a.thumbprints {
		if !b.has(tp) {
			return false
		}
	}
	return true
}

func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

// discover reads the OpenID configuration and returns its jwks_uri. The
// document must name our issuer exactly (OpenID Connect Discovery 4.3), and
// an https issuer may not point at a plain-http JWKS.
func (p *provider) discover(ctx context.Context) (string, error) {
	u := discoveryURL(p.issuer)
	body, err := p.getBody(ctx, u)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	if doc.Issuer != p.issuer {
		return "", fmt.Errorf("discovery %s: issuer %q does not match the configured issuer %q", u, doc.Issuer, p.issuer)
	}
	if err := checkHTTPURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery %s: jwks_uri: %w", u, err)
	}
	if strings.HasPrefix(p.issuer, "https:") && !strings.HasPrefix(doc.JWKSURI, "https:") {
		return "", fmt.Errorf("discovery %s: jwks_uri %q is not https", u, doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

// newHTTPClient derives the provider's client from base: the CA file, the
// fetch timeout, no https->http redirects, and the bounding transport.
func newHTTPClient(base *http.Client, p *provider) (*http.Client, error) {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if p.caFile != "" {
		pem, err := os.ReadFile(p.caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", p.caFile)
		}
		tr, ok := rt.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("ca_file needs an *http.Transport, the HTTP client has a %T", rt)
		}
		tr = tr.Clone()
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{}
		}
		tr.TLSClientConfig.RootCAs = pool
		tr.TLSClientConfig.MinVersion = max(tr.TLSClientConfig.MinVersion, tls.VersionTLS12)
		rt = tr
	}
	floor, ceiling := p.refreshBounds()
	c.Transport = &boundedTransport{
		base:          rt,
		maxBytes:      p.maxJWKSBytes,
		defaultMaxAge: p.refreshInterval,
		floor:         floor,
		ceiling:       ceiling,
	}
	c.Timeout = p.fetchTimeout
	c.Jar = nil
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("refusing redirect from https to %s", req.URL.Redacted())
		}
		// Keys are trusted because of where they come from: a redirect to
		// another origin is refused unless the operator listed its host.
		if origin(via[0].URL) != origin(req.URL) && !p.redirectAllowed(req.URL) {
			return fmt.Errorf("refusing redirect from %s to another host %s; add %q to redirect_hosts to allow it", via[0].URL.Host, req.URL.Redacted(), req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	return c, nil
}

// origin is scheme://host:port with the default port made explicit, so that
// https://a and https://a:443 are the same origin.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// redirectAllowed reports whether a redirect target is listed in
// redirect_hosts: an entry with a port matches host and port, one without
// matches the host on any port.
func (p *provider) redirectAllowed(u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	hostPort := strings.ToLower(u.Host)
	for _, allowed := range p.redirectHosts {
		if allowed == host || allowed == hostPort {
			return true
		}
	}
	return false
}

// boundedTransport limits JWKS and discovery responses: a body past maxBytes
// fails the read (jwk.Cache then keeps the last good set), non-200 bodies are
// drained and closed here (httprc's transformer returns without closing
// them), and Cache-Control is rewritten to a bounded max-age so httprc's own
// scheduling does the refresh.
type boundedTransport struct {
	base                          http.RoundTripper
	maxBytes                      int64
	defaultMaxAge, floor, ceiling time.Duration
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	t.boundCacheControl(res.Header)
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		res.Body.Close()
		res.Body = http.NoBody
		return res, nil
	}
	if res.ContentLength > t.maxBytes {
		res.Body.Close()
		return nil, fmt.Errorf("response of %d bytes exceeds max_jwks_bytes (%d)", res.ContentLength, t.maxBytes)
	}
	res.Body = &limitedBody{rc: res.Body, remaining: t.maxBytes, limit: t.maxBytes}
	return res, nil
}

func (t *boundedTransport) boundCacheControl(h http.Header) {
	maxAge := t.defaultMaxAge
	if v, ok := parseMaxAge(h.Values("Cache-Control")); ok {
		maxAge = v
	}
	maxAge = min(max(maxAge, t.floor), t.ceiling)
	h.Set("Cache-Control", "max-age="+strconv.FormatInt(int64(maxAge/time.Second), 10))
	h.Del("Expires")
}

// parseMaxAge reads max-age; no-cache and no-store count as zero.
func parseMaxAge(values []string) (time.Duration, bool) {
	var maxAge time.Duration
	found := false
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-cache" || d == "no-store":
				return 0, true
			case strings.HasPrefix(d, "max-age="):
				secs, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64)
				if err != nil || secs < 0 {
					continue
				}
				maxAge, found = time.Duration(min(secs, int64(maxAgeCeiling/time.Second)*1000))*time.Second, true
			}
		}
	}
	return maxAge, found
}

// limitedBody fails reads past limit bytes, closing the source (for a
// response, its connection) rather than buffering an unbounded body.
type limitedBody struct {
	rc               io.ReadCloser
	remaining, limit int64
	err              error
}

func (b *limitedBody) Read(buf []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(buf)) > b.remaining {
		// One byte more than allowed tells "exactly at the limit" from "past it".
		buf = buf[:b.remaining+1]
	}
	n, err := b.rc.Read(buf)
	if int64(n) > b.remaining {
		b.err = fmt.Errorf("response exceeds max_jwks_bytes (%d)", b.limit)
		b.rc.Close()
		return 0, b.err
	}
	b.remaining -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
