package jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Limits on the JOSE header, checked before and while it is decoded so an
// oversized or field-stuffed header costs nothing. Real headers hold alg,
// kid, typ and perhaps x5t: a few hundred bytes.
const (
	maxHeaderBytes  = 1024
	maxHeaderFields = 16
)

// b64 is the JWS encoding (read-only after init); Strict rejects non-zero trailing bits so a token
// has exactly one encoding and cannot be varied to dodge the cache.
var b64 = base64.RawURLEncoding.Strict()

// algID indexes the accepted signature algorithms.
type algID uint8

const (
	algRS256 algID = iota
	algRS384
	algRS512
	algPS256
	algPS384
	algPS512
	algES256
	algES384
	algES512
	algEdDSA
	numAlgs
)

const allAlgs = 1<<numAlgs - 1

// lookupAlg maps a JWS alg name to its ID. Only asymmetric algorithms exist
// here: "none" and HS* are absent on purpose, so a token can never make us
// use a public key as an HMAC secret.
func lookupAlg(name string) (algID, bool) {
	switch name {
	case "RS256":
		return algRS256, true
	case "RS384":
		return algRS384, true
	case "RS512":
		return algRS512, true
	case "PS256":
		return algPS256, true
	case "PS384":
		return algPS384, true
	case "PS512":
		return algPS512, true
	case "ES256":
		return algES256, true
	case "ES384":
		return algES384, true
	case "ES512":
		return algES512, true
	case "EdDSA":
		return algEdDSA, true
	}
	return 0, false
}

func (id algID) String() string {
	return [...]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}[id]
}

// keyKind is the key type (and curve) an algorithm needs.
func (id algID) keyKind() keyKind {
	switch id {
	case algES256:
		return kindP256
	case algES384:
		return kindP384
	case algES512:
		return kindP521
	case algEdDSA:
		return kindEd25519
	}
	return kindRSA
}

// algTable holds jwx's signature verifiers, created once per Verifier.
type algTable struct {
	verifiers [numAlgs]jws.Verifier
}

func newAlgTable() (*algTable, error) {
	t := &algTable{}
	for id := range numAlgs {
		v, err := jws.NewVerifier(jwa.SignatureAlgorithm(id.String()))
		if err != nil {
			return nil, fmt.Errorf("jws verifier for %s: %w", id, err)
		}
		t.verifiers[id] = v
	}
	return t, nil
}

// parsedToken is a compact JWS split and decoded, not yet verified.
type parsedToken struct {
	signingInput string // header.payload, the bytes the signature covers
	alg          string
	kid          string
	payload      []byte
	signature    []byte
	claims       map[string]any
}

// parseToken decodes a compact JWS. It returns nil and a reason when raw is
// not one: JSON serialization, more or fewer than three segments, bad
// base64, a header that is too big, has too many or duplicated fields, or
// `crit`, and claims that are not a JSON object with unique names.
func parseToken(raw string) (*parsedToken, string) {
	if raw == "" {
		return nil, "empty token"
	}
	if raw[0] == '{' {
		return nil, "JWS JSON serialization is not accepted; send the compact form"
	}
	dot1 := strings.IndexByte(raw, '.')
	if dot1 < 0 {
		return nil, "not a compact JWS (no '.')"
	}
	dot2 := dot1 + 1 + strings.IndexByte(raw[dot1+1:], '.')
	if dot2 == dot1 || strings.IndexByte(raw[dot2+1:], '.') >= 0 {
		return nil, "not a compact JWS (want 3 segments)"
	}
	headerSeg, payloadSeg, sigSeg := raw[:dot1], raw[dot1+1:dot2], raw[dot2+1:]
	if len(headerSeg) > b64.EncodedLen(maxHeaderBytes) {
		return nil, "JOSE header too large"
	}
	header, err := b64.DecodeString(headerSeg)
	if err != nil {
		return nil, "header is not base64url"
	}
	t := &parsedToken{signingInput: raw[:dot2]}
	if t.alg, t.kid, err = parseHeader(header); err != nil {
		return nil, "header: " + err.Error()
	}
	if t.payload, err = b64.DecodeString(payloadSeg); err != nil {
		return nil, "payload is not base64url"
	}
	if t.signature, err = b64.DecodeString(sigSeg); err != nil {
		return nil, "signature is not base64url"
	}
	if t.claims, err = parseClaims(t.payload); err != nil {
		return nil, "claims: " + err.Error()
	}
	return t, ""
}

// parseHeader reads alg and kid. jku, x5u, jwk and x5c are skipped unread:
// keys come only from the provider's configured JWKS. Duplicated names are
// refused because two parsers could disagree on which "alg" counts. A header
// that passes every check is read in one json.Unmarshal; any other goes to
// parseHeaderStrict for the error (FuzzParseFast holds the two equal).
func parseHeader(b []byte) (alg, kid string, err error) {
	if alg, kid, ok := parseHeaderFast(b); ok {
		return alg, kid, nil
	}
	return parseHeaderStrict(b)
}

// parseHeaderFast reads a header that is valid on every count; ok is false
// for any other. Names are compared exactly (a map, not a struct, whose
// fields encoding/json matches without regard to case).
func parseHeaderFast(b []byte) (alg, kid string, ok bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil || fields == nil || len(fields) > maxHeaderFields || len(fields) != objectMembers(b) {
		return "", "", false
	}
	if _, crit := fields["crit"]; crit {
		return "", "", false
	}
	if _, b64 := fields["b64"]; b64 {
		return "", "", false
	}
	if raw, present := fields["alg"]; !present || json.Unmarshal(raw, &alg) != nil || alg == "" {
		return "", "", false
	}
	if raw, present := fields["kid"]; present && json.Unmarshal(raw, &kid) != nil {
		return "", "", false
	}
	return alg, kid, true
}

// parseHeaderStrict is parseHeader token by token, naming what is wrong.
func parseHeaderStrict(b []byte) (alg, kid string, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", "", errors.New("not a JSON object")
	}
	var seen [maxHeaderFields]string
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", "", errors.New("invalid JSON")
		}
		name, _ := tok.(string)
		if n == maxHeaderFields {
			return "", "", fmt.Errorf("more than %d fields", maxHeaderFields)
		}
		for _, s := range seen[:n] {
			if s == name {
				return "", "", fmt.Errorf("duplicate field %s", quote(name))
			}
		}
		seen[n] = name
		n++
		switch name {
		case "alg", "kid":
			var s string
			if err := dec.Decode(&s); err != nil {
				return "", "", fmt.Errorf("%s is not a string", name)
			}
			if name == "alg" {
				alg = s
			} else {
				kid = s
			}
		case "crit", "b64":
			// We implement no JWS extension; RFC 7515 4.1.11 requires
			// rejecting what we do not understand.
			return "", "", fmt.Errorf("%s is not supported", name)
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", "", errors.New("invalid JSON")
			}
		}
	}
	if err := endObject(dec); err != nil {
		return "", "", err
	}
	if alg == "" {
		return "", "", errors.New("alg is missing")
	}
	return alg, kid, nil
}

// parseClaims decodes the payload into JSON-compatible values, refusing
// duplicated top-level claims (the payload is forwarded upstream, where
// another parser could pick the other copy). A well-formed payload is decoded
// in one json.Unmarshal, its members counted to rule out duplicates; anything
// else goes to parseClaimsStrict, which names what is wrong. Both give the
// same claims whenever the first succeeds (FuzzParseFast).
func parseClaims(b []byte) (map[string]any, error) {
	var claims map[string]any
	if json.Unmarshal(b, &claims) == nil && claims != nil && len(claims) == objectMembers(b) {
		return claims, nil
	}
	return parseClaimsStrict(b)
}

// objectMembers counts the members of the JSON object b: the colons outside
// strings at depth one. b must be valid JSON (the caller has decoded it).
func objectMembers(b []byte) int {
	depth, n := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ':':
			if depth == 1 {
				n++
			}
		}
	}
	return n
}

// parseClaimsStrict is parseClaims token by token, naming a duplicated
// claim.
func parseClaimsStrict(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	claims := make(map[string]any, 12)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("invalid JSON")
		}
		name, _ := tok.(string)
		if _, dup := claims[name]; dup {
			return nil, fmt.Errorf("duplicate claim %s", quote(name))
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("invalid JSON")
		}
		claims[name] = v
	}
	if err := endObject(dec); err != nil {
		return nil, err
	}
	return claims, nil
}

// endObject consumes the closing brace and refuses trailing data.
func endObject(dec *json.Decoder) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errors.New("invalid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// verified is a token that passed every check: what the cache holds.
type verified struct {
	provider   *provider
	claims     json.RawMessage // the payload: a fraction of the decoded map's memory
	headers    []Header
	thumbprint thumbprint // of the key that verified it
	expiresAt  time.Time  // exp + clock skew
}

// verifyToken checks alg, selects the key, verifies the signature and then
// the claims. Claims are checked only after the signature so that an
// unauthenticated token learns nothing beyond "bad signature".
func (v *Verifier) verifyToken(ctx context.Context, p *provider, t *parsedToken, now time.Time) (*verified, string, string) {
	id, ok := lookupAlg(t.alg)
	if !ok {
		return nil, ErrAlgNotAllowed, "alg " + quote(t.alg) + " is not accepted"
	}
	if p.algMask&(1<<id) == 0 {
		return nil, ErrAlgNotAllowed, "alg " + id.String() + " is not in the provider's algorithms"
	}
	ks := p.keys.Load()
	if ks == nil {
		// Fail closed until the first JWKS fetch succeeds; the background
		// loop is retrying, the request path never fetches here.
		return nil, ErrKeysUnavailable, "no key set fetched yet for provider " + quote(p.name)
	}
	keys, code, detail := ks.pick(t.kid, id)
	if code == ErrUnknownKey && t.kid != "" {
		if fresh := p.refetchForUnknownKID(ctx); fresh != nil {
			keys, code, detail = fresh.pick(t.kid, id)
		}
	}
	if keys == nil {
		return nil, code, detail
	}
	key := verifyWithAny(v.algs.verifiers[id], t, keys)
	if key == nil {
		if t.kid != "" {
			return nil, ErrBadSignature, "signature does not verify with key " + quote(t.kid)
		}
		detail := fmt.Sprintf("token has no kid and its signature verifies with none of the %d keys that fit %s", len(keys), id)
		if n := len(ks.byAlg[id]); n > len(keys) {
			detail += fmt.Sprintf(" (the first %d of %d tried; set kid in the issuer's tokens)", len(keys), n)
		}
		return nil, ErrBadSignature, detail
	}

	expiresAt, code, detail := v.checkTimes(t.claims, now)
	if code != "" {
		return nil, code, detail
	}
	if !p.audienceOK(t.claims["aud"]) {
		return nil, ErrBadAudience, "aud holds none of the provider's audiences"
	}
	return &verified{
		provider:   p,
		claims:     t.payload,
		headers:    p.identityHeaders(t.claims, t.payload),
		thumbprint: key.thumbprint,
		expiresAt:  expiresAt,
	}, "", ""
}

// verifyWithAny returns the first of keys the signature verifies with, or nil.
func verifyWithAny(verifier jws.Verifier, t *parsedToken, keys []*verifyKey) *verifyKey {
	input := []byte(t.signingInput)
	for _, k := range keys {
		if verifier.Verify(input, t.signature, k.raw) == nil {
			return k
		}
	}
	return nil
}

// checkTimes applies exp (required, as jwt_authn's optional exp is a
// footgun: a leaked token would be valid forever), nbf and iat with the
// clock skew. It returns when the verified token stops being valid.
func (v *Verifier) checkTimes(claims map[string]any, now time.Time) (time.Time, string, string) {
	nowSec := float64(now.UnixNano()) / 1e9
	skew := v.skew.Seconds()

	exp, present, ok := numericClaim(claims, "exp")
	switch {
	case !present:
		return time.Time{}, ErrMalformed, "exp claim is required"
	case !ok:
		return time.Time{}, ErrMalformed, "exp is not a number"
	case nowSec >= exp+skew:
		return time.Time{}, ErrExpired, "token expired at " + formatUnix(exp)
	}
	if nbf, present, ok := numericClaim(claims, "nbf"); present {
		switch {
		case !ok:
			return time.Time{}, ErrMalformed, "nbf is not a number"
		case nowSec < nbf-skew:
			return time.Time{}, ErrNotYetValid, "token not valid before " + formatUnix(nbf)
		}
	}
	if iat, present, ok := numericClaim(claims, "iat"); present {
		switch {
		case !ok:
			return time.Time{}, ErrMalformed, "iat is not a number"
		case iat > nowSec+skew:
			return time.Time{}, ErrIssuedInFuture, "token issued in the future at " + formatUnix(iat)
		}
	}
	return unixTime(exp + skew), "", ""
}

func numericClaim(claims map[string]any, name string) (value float64, present, ok bool) {
	raw, present := claims[name]
	if !present {
		return 0, false, false
	}
	value, ok = raw.(float64)
	return value, true, ok
}

// maxUnix bounds absurd exp values (year 9999) so time conversion stays exact.
const maxUnix = 253402300799

func unixTime(sec float64) time.Time {
	if sec > maxUnix {
		sec = maxUnix
	}
	whole := math.Floor(sec)
	return time.Unix(int64(whole), int64((sec-whole)*1e9))
}

func formatUnix(sec float64) string {
	if sec > maxUnix || sec < 0 {
		return strconv.FormatFloat(sec, 'g', -1, 64)
	}
	return unixTime(sec).UTC().Format(time.RFC3339)
}

// audienceOK accepts aud as a string or an array of strings holding one of
// the provider's audiences.
func (p *provider) audienceOK(aud any) bool {
	if p.anyAudience {
		return true
	}
	switch aud := aud.(type) {
	case string:
		return p.hasAudience(aud)
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok && p.hasAudience(s) {
				return true
			}
		}
	}
	return false
}

func (p *provider) hasAudience(aud string) bool {
	for _, a := range p.audiences {
		if a == aud {
			return true
		}
	}
	return false
}

// identityHeaders computes the claim_to_headers and payload_header values
// once per verified token; the cache keeps them with the claims.
func (p *provider) identityHeaders(claims map[string]any, payload []byte) []Header {
	if len(p.claimHeaders) == 0 && p.payloadHeader == "" {
		return nil
	}
	headers := make([]Header, 0, len(p.claimHeaders)+1)
	for _, ch := range p.claimHeaders {
		if value, ok := headerValue(lookupClaim(claims, ch.claim)); ok {
			headers = append(headers, Header{Key: ch.header, Value: value})
		}
	}
	if p.payloadHeader != "" {
		headers = append(headers, Header{Key: p.payloadHeader, Value: base64.RawURLEncoding.EncodeToString(payload)})
	}
	return headers
}

// lookupClaim finds a top-level claim, or else walks a dotted path into
// nested objects ("realm_access.roles"), as Envoy's claim_to_headers does.
func lookupClaim(claims map[string]any, name string) any {
	if v, ok := claims[name]; ok {
		return v
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = obj[part]; !ok {
			return nil
		}
	}
	return cur
}

// headerValue renders scalar claims and arrays of strings; objects, mixed
// arrays and null are skipped. Values that cannot be a header value (control
// characters, invalid UTF-8) are skipped rather than let Envoy reject the
// whole response.
func headerValue(v any) (string, bool) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		s = strconv.FormatBool(v)
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			str, ok := e.(string)
			if !ok {
				return "", false
			}
			parts = append(parts, str)
		}
		s = strings.Join(parts, ",")
	default:
		return "", false
	}
	if s == "" || !utf8.ValidString(s) {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return "", false
		}
	}
	return s, true
}

// quote renders an attacker-controlled string for Detail: quoted (no log
// injection) and truncated.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}
