package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const tokenUsage = `Usage: gatehousectl token --key key.json [flags]
       gatehousectl token decode [TOKEN|-]

Mint a signed test JWT with a private JWK (see 'gatehousectl jwks generate')
and print it on stdout. alg and kid default to the key's own. iat is now, nbf
is now+--nbf-in, exp is now+--ttl; --expired backdates the token so that exp
lies 5 minutes in the past (beyond the usual 60s clock skew). A random jti is
added. --claim values are parsed as JSON when they are valid JSON
(numbers, true, ["a","b"], {"k":1}) and taken as strings otherwise; a --claim
overrides the standard claims, to craft odd tokens on purpose.

Examples:
  gatehousectl token --key k1.json --iss https://issuer.test --aud api --sub alice
  gatehousectl token --key k1.json --iss https://issuer.test --aud api --sub bob --claim 'roles=["admin"]' --claim tenant=acme
  gatehousectl token --key k1.json --iss https://issuer.test --aud api --expired
  gatehousectl token --key k1.json --iss https://issuer.test --aud api --nbf-in 10m   # not yet valid
  gatehousectl check --token "$(gatehousectl token --key k1.json --iss https://issuer.test --aud api)"
`

const tokenDecodeUsage = `Usage: gatehousectl token decode [TOKEN|-]

Show a JWT's header and claims WITHOUT verifying its signature, plus exp, nbf
and iat as human times. Reads the token from stdin when TOKEN is "-" or
absent; a leading "Bearer " is ignored. The output is labelled UNVERIFIED:
nothing in it can be trusted.

Examples:
  gatehousectl token decode eyJhbGciOi...
  gatehousectl token --key k1.json --iss x --aud y | gatehousectl token decode
  gatehousectl token decode --json "$TOKEN" | jq .claims
`

func (a *app) token(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "decode" {
		o, err := parseTokenDecodeFlags(args[1:])
		if err != nil {
			return err
		}
		return a.decodeToken(o)
	}
	if len(args) > 0 && args[0] == "mint" { // the explicit spelling of the default
		args = args[1:]
	}
	o, err := parseTokenFlags(args)
	if err != nil {
		return err
	}
	key, err := readPrivateJWK(o.keyFile)
	if err != nil {
		return err
	}
	tok, err := mintToken(key, o, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, tok)
	return nil
}

// tokenOptions is the parsed command line of `token`.
type tokenOptions struct {
	keyFile  string
	alg      string
	kid      string
	issuer   string
	audience []string
	subject  string
	claims   []string // raw k=v
	ttl      time.Duration
	nbfIn    time.Duration
	iatIn    time.Duration
	expired  bool
	noJTI    bool
}

func parseTokenFlags(args []string) (tokenOptions, error) {
	const cmd = "token"
	var o tokenOptions
	var aud, claims stringList
	fs := newFlagSet(cmd)
	fs.StringVar(&o.keyFile, "key", "", "private JWK `file` to sign with")
	fs.StringVar(&o.alg, "alg", "", "signature algorithm (default: the key's alg)")
	fs.StringVar(&o.kid, "kid", "", "kid header (default: the key's kid)")
	fs.StringVar(&o.issuer, "iss", "", "iss claim")
	fs.Var(&aud, "aud", "`audience` claim (repeatable; more than one makes an array)")
	fs.StringVar(&o.subject, "sub", "", "sub claim")
	fs.Var(&claims, "claim", "extra claim `k=v` (repeatable; v parsed as JSON if valid, else a string)")
	fs.DurationVar(&o.ttl, "ttl", time.Hour, "lifetime: exp = iat + ttl")
	fs.DurationVar(&o.nbfIn, "nbf-in", 0, "nbf = now + this (e.g. 10m for a not-yet-valid token)")
	fs.DurationVar(&o.iatIn, "iat-in", 0, "iat = now + this (e.g. 10m for a token issued in the future)")
	fs.BoolVar(&o.expired, "expired", false, "backdate the token so exp is 5 minutes in the past")
	fs.BoolVar(&o.noJTI, "no-jti", false, "omit the random jti claim")
	pos, err := parseFlags(fs, cmd, tokenUsage, args)
	if err != nil {
		return o, err
	}
	if err := refuseArguments(cmd, tokenUsage, pos, 0, " (did you mean 'token decode'?)"); err != nil {
		return o, err
	}
	o.audience, o.claims = aud, claims
	if o.keyFile == "" {
		return o, usageErrorf(cmd, "--key is required")
	}
	if o.ttl <= 0 {
		return o, usageErrorf(cmd, "--ttl must be positive")
	}
	for _, c := range o.claims {
		if k, _, ok := strings.Cut(c, "="); !ok || k == "" {
			return o, usageErrorf(cmd, "--claim %q: want key=value", c)
		}
	}
	return o, nil
}

func readPrivateJWK(path string) (jwk.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	key, err := jwk.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("--key %s: not a JWK: %w", path, err)
	}
	if key.KeyType() != jwa.OctetSeq {
		if private, err := jwk.IsPrivateKey(key); err != nil || !private {
			return nil, fmt.Errorf("--key %s: a public key cannot sign; use the --out-private file of 'jwks generate'", path)
		}
	}
	return key, nil
}

// mintToken builds the claims as JSON (so --claim can set anything, even
// malformed standard claims) and signs them with key.
func mintToken(key jwk.Key, o tokenOptions, now time.Time) (string, error) {
	alg := o.alg
	if alg == "" {
		if key.Algorithm() == nil || key.Algorithm().String() == "" {
			return "", fmt.Errorf("--key %s has no alg: pass --alg", o.keyFile)
		}
		alg = key.Algorithm().String()
	}
	var sigAlg jwa.SignatureAlgorithm
	if err := sigAlg.Accept(alg); err != nil || sigAlg == jwa.NoSignature {
		return "", usageErrorf("token", "--alg %q is not a JWS signature algorithm", alg)
	}
	kid := o.kid
	if kid == "" {
		kid = key.KeyID()
	}

	iat, nbf := now.Add(o.iatIn), now.Add(o.nbfIn)
	exp := iat.Add(o.ttl)
	if o.expired {
		exp = now.Add(-5 * time.Minute)
		iat = exp.Add(-o.ttl)
		nbf = iat
	}
	claims := map[string]any{"iat": iat.Unix(), "nbf": nbf.Unix(), "exp": exp.Unix()}
	if o.issuer != "" {
		claims["iss"] = o.issuer
	}
	if o.subject != "" {
		claims["sub"] = o.subject
	}
	switch len(o.audience) {
	case 0:
	case 1:
		claims["aud"] = o.audience[0]
	default:
		claims["aud"] = o.audience
	}
	if !o.noJTI {
		var b [16]byte
		_, _ = rand.Read(b[:])
		claims["jti"] = hex.EncodeToString(b[:])
	}
	for _, c := range o.claims {
		k, v, _ := strings.Cut(c, "=")
		claims[k] = claimValue(v)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}

	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	if kid != "" {
		if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
			return "", err
		}
	}
	// Sign with the raw key: given a jwk.Key, jwx would write the key's own kid
	// over the one chosen here.
	var raw any
	if err := key.Raw(&raw); err != nil {
		return "", fmt.Errorf("--key %s: %w", o.keyFile, err)
	}
	signed, err := jws.Sign(payload, jws.WithKey(sigAlg, raw, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign with %s: %w", sigAlg, err)
	}
	return string(signed), nil
}

// claimValue reads a --claim value as JSON when it is valid JSON (keeping
// big integers exact) and as a plain string otherwise.
func claimValue(v string) any {
	dec := json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil || dec.More() {
		return v
	}
	if _, err := dec.Token(); err != io.EOF {
		return v
	}
	return out
}

// tokenDecodeOptions is the parsed command line of `token decode`.
type tokenDecodeOptions struct {
	token      string // "-" reads stdin
	jsonOutput bool
}

func parseTokenDecodeFlags(args []string) (tokenDecodeOptions, error) {
	const cmd = "token decode"
	var o tokenDecodeOptions
	fs := newFlagSet(cmd)
	fs.BoolVar(&o.jsonOutput, "json", false, `print {"verified": false, "header": {...}, "claims": {...}} as JSON`)
	pos, err := parseFlags(fs, cmd, tokenDecodeUsage, args)
	if err != nil {
		return o, err
	}
	if err := refuseArguments(cmd, tokenDecodeUsage, pos, 1, " (decode takes one token)"); err != nil {
		return o, err
	}
	o.token = "-"
	if len(pos) == 1 {
		o.token = pos[0]
	}
	return o, nil
}

// unverifiedToken is a JWT split and decoded without any verification.
type unverifiedToken struct {
	Verified  bool           `json:"verified"` // always false: nothing was checked
	Header    map[string]any `json:"header"`
	Claims    map[string]any `json:"claims"`
	Signature int            `json:"signature_bytes"`
}

func decodeUnverified(raw string) (unverifiedToken, error) {
	var t unverifiedToken
	raw = strings.TrimSpace(raw)
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	parts := strings.Split(raw, ".")
	switch len(parts) {
	case 3:
	case 5:
		return t, fmt.Errorf("token has 5 parts: an encrypted JWE, which cannot be decoded without the key")
	default:
		return t, fmt.Errorf("token has %d dot-separated parts, a JWS has 3", len(parts))
	}
	if err := decodeSegment(parts[0], &t.Header); err != nil {
		return t, fmt.Errorf("header: %w", err)
	}
	if err := decodeSegment(parts[1], &t.Claims); err != nil {
		return t, fmt.Errorf("claims: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return t, fmt.Errorf("signature: not base64url: %w", err)
	}
	t.Signature = len(sig)
	return t, nil
}

func decodeSegment(seg string, into *map[string]any) error {
	data, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("not base64url: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	return nil
}

func (a *app) decodeToken(o tokenDecodeOptions) error {
	raw := o.token
	if raw == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		raw = string(data)
	}
	t, err := decodeUnverified(raw)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stderr, "UNVERIFIED: the signature was NOT checked; do not trust these claims")
	if o.jsonOutput {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	}
	var b strings.Builder
	b.WriteString("UNVERIFIED TOKEN (signature not checked)\n")
	header, _ := json.MarshalIndent(t.Header, "", "  ")
	claims, _ := json.MarshalIndent(t.Claims, "", "  ")
	fmt.Fprintf(&b, "header:\n%s\nclaims:\n%s\n", header, claims)
	now := time.Now()
	var times []string
	for _, name := range []string{"iat", "nbf", "exp"} {
		if line, ok := describeTime(t.Claims[name], now); ok {
			times = append(times, fmt.Sprintf("  %s  %s", name, line))
		} else if v, present := t.Claims[name]; present {
			times = append(times, fmt.Sprintf("  %s  %v (not a NumericDate)", name, v))
		}
	}
	if len(times) > 0 {
		b.WriteString("times:\n" + strings.Join(times, "\n") + "\n")
	}
	fmt.Fprintf(&b, "signature: %d bytes (not verified)\n", t.Signature)
	_, err = io.WriteString(a.stdout, b.String())
	return err
}

// describeTime renders a NumericDate claim as UTC time plus its distance from now.
func describeTime(v any, now time.Time) (string, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return "", false
	}
	f, err := n.Float64()
	if err != nil {
		return "", false
	}
	t := time.Unix(int64(f), 0).UTC()
	d := t.Sub(now).Round(time.Second)
	rel := "now"
	switch {
	case d > 0:
		rel = "in " + d.String()
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return fmt.Sprintf("%s (%s)", t.Format(time.RFC3339), rel), true
}
