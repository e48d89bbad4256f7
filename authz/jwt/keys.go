package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// minRSABits refuses RSA keys too short to be trusted (NIST SP 800-131A).
const minRSABits = 2048

// keyKind is a key type, with the curve for EC and OKP keys.
type keyKind uint8

const (
	kindRSA keyKind = iota
	kindP256
	kindP384
	kindP521
	kindEd25519
)

// thumbprint is a key's RFC 7638 SHA-256 thumbprint: its identity across
// JWKS fetches, whatever its kid.
type thumbprint [32]byte

// verifyKey is one usable public key, prepared at fetch time so the request
// path does no key conversion.
type verifyKey struct {
	kid        string
	alg        string // the JWK's alg, "" when it has none
	kind       keyKind
	raw        any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	thumbprint thumbprint
}

// maxKidlessCandidates bounds the keys a token without `kid` is tried
// against, so a kid-less token costs at most this many signature checks
// however large the issuer's key set.
const maxKidlessCandidates = 8

// keySet is an immutable index over one fetched JWKS.
type keySet struct {
	keys  []*verifyKey
	byKID map[string][]*verifyKey
	// byAlg lists, per algorithm, the keys usable for it in JWKS order (the
	// candidates for a token without kid), built at fetch time.
	byAlg       [numAlgs][]*verifyKey
	thumbprints map[thumbprint]struct{}
	updated     time.Time
}

// buildKeySet keeps the keys usable for signature verification and indexes
// them. skipped explains each key left out. A set without a single usable
// key is an error, so garbage never replaces the last good set.
func buildKeySet(set jwk.Set) (ks *keySet, skipped []string, err error) {
	ks = &keySet{
		byKID:       make(map[string][]*verifyKey),
		thumbprints: make(map[thumbprint]struct{}),
		updated:     time.Now(),
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		vk, err := prepareKey(k)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %s): %v", i, quote(k.KeyID()), err))
			continue
		}
		ks.keys = append(ks.keys, vk)
		if vk.kid != "" {
			ks.byKID[vk.kid] = append(ks.byKID[vk.kid], vk)
		}
		ks.thumbprints[vk.thumbprint] = struct{}{}
		for id := range numAlgs {
			if vk.usableFor(id) {
				ks.byAlg[id] = append(ks.byAlg[id], vk)
			}
		}
	}
	if len(ks.keys) == 0 {
		return nil, skipped, fmt.Errorf("no usable signature verification key among %d keys", set.Len())
	}
	return ks, skipped, nil
}

func prepareKey(k jwk.Key) (*verifyKey, error) {
	if use := k.KeyUsage(); use != "" && use != "sig" {
		return nil, fmt.Errorf("use is %q, not sig", use)
	}
	if ops := k.KeyOps(); len(ops) > 0 {
		verify := false
		for _, op := range ops {
			verify = verify || op == jwk.KeyOpVerify
		}
		if !verify {
			return nil, errors.New("key_ops lacks verify")
		}
	}
	if k.KeyType() == jwa.OctetSeq {
		// Symmetric keys are never used: HS* is never accepted.
		return nil, errors.New("symmetric key")
	}
	raw, err := jwk.PublicRawKeyOf(k)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	vk := &verifyKey{kid: k.KeyID(), alg: k.Algorithm().String(), raw: raw}
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is shorter than %d", pub.N.BitLen(), minRSABits)
		}
		vk.kind = kindRSA
	case *ecdsa.PublicKey:
		switch pub.Curve.Params().Name {
		case elliptic.P256().Params().Name:
			vk.kind = kindP256
		case elliptic.P384().Params().Name:
			vk.kind = kindP384
		case elliptic.P521().Params().Name:
			vk.kind = kindP521
		default:
			return nil, errors.New("unsupported EC curve")
		}
	case ed25519.PublicKey:
		vk.kind = kindEd25519
	default:
		return nil, fmt.Errorf("unsupported key type %s", k.KeyType())
	}
	if vk.alg != "" {
		id, ok := lookupAlg(vk.alg)
		if !ok || id.keyKind() != vk.kind {
			return nil, fmt.Errorf("alg %q is not a signature algorithm for this key", vk.alg)
		}
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil || len(tp) != len(vk.thumbprint) {
		return nil, fmt.Errorf("thumbprint: %v", err)
	}
	copy(vk.thumbprint[:], tp)
	return vk, nil
}

// usableFor reports whether k may verify alg: right key type and curve,
// and the JWK's own alg, when present, must be exactly alg.
func (k *verifyKey) usableFor(id algID) bool {
	return k.kind == id.keyKind() && (k.alg == "" || k.alg == id.String())
}

// pick returns the keys a token's signature is tried against: the key its
// kid names, or, for a token without kid, every key usable for its alg (at
// most maxKidlessCandidates, in JWKS order), as RFC 7515 makes kid optional
// and Envoy's jwt_authn tries each key. During a rotation an issuer that
// omits kid publishes two keys for one alg, and both must be tried. kid is
// only a map key: it never reaches a path, URL or log unquoted. The returned
// slice belongs to the key set and must not be modified.
func (ks *keySet) pick(kid string, id algID) ([]*verifyKey, string, string) {
	if kid == "" {
		candidates := ks.byAlg[id]
		if len(candidates) == 0 {
			return nil, ErrUnknownKey, "token has no kid and no key fits " + id.String()
		}
		return candidates[:min(len(candidates), maxKidlessCandidates)], "", ""
	}
	candidates := ks.byKID[kid]
	if len(candidates) == 0 {
		return nil, ErrUnknownKey, "no key with kid " + quote(kid)
	}
	for i, k := range candidates {
		if k.usableFor(id) {
			return candidates[i : i+1], "", ""
		}
	}
	return nil, ErrAlgNotAllowed, "alg " + id.String() + " does not fit key " + quote(kid)
}

// has reports whether the key with thumbprint tp is still in the set.
func (ks *keySet) has(tp thumbprint) bool {
	if ks == nil {
		return false
	}
	_, ok := ks.thumbprints[tp]
	return ok
}

// kidSummary lists kids for the "key set changed" log line.
func (ks *keySet) kidSummary() string {
	kids := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		kids = append(kids, quote(k.kid))
	}
	return strings.Join(kids, ",")
}

// refetchForUnknownKID refetches the provider's JWKS because a token named a
// kid the set lacks: the issuer may have rotated. Concurrent callers share
// one fetch (single-flight) and a new fetch starts at most once per
// min_refresh_interval, so a flood of forged kids costs the issuer one
// request per interval. It returns the fresh set, or nil when no fetch
// happened or it failed (the caller keeps the set it has).
func (p *provider) refetchForUnknownKID(ctx context.Context) *keySet {
	ch := p.flight.DoChan("jwks", func() (any, error) {
		p.refetchMu.Lock()
		now := time.Now()
		if !p.lastRefetch.IsZero() && now.Sub(p.lastRefetch) < p.minRefreshInterval {
			p.refetchMu.Unlock()
			return nil, errRateLimited
		}
		p.lastRefetch = now
		p.refetchMu.Unlock()

		p.unknownKidRefetches.Add(1)
		// The fetch belongs to the provider, not to the request that
		// happened to start it: other requests are waiting on it too.
		fetchCtx, cancel := context.WithTimeout(p.ctx, p.fetchTimeout)
		defer cancel()
		return nil, p.reload(fetchCtx, "unknown-kid refetch")
	})
	// The request waits no longer than its own deadline (ctx carries the
	// evaluation deadline) nor than fetch_timeout, even when the fetch does
	// not honour its context (a jwks_file on a hung file system or a FIFO):
	// the check then fails closed with unknown_key, and the fetch goes on in
	// the background for the requests after it.
	wait := time.NewTimer(p.fetchTimeout)
	defer wait.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil
		}
		return p.keys.Load()
	case <-ctx.Done():
		return nil
	case <-wait.C:
		return nil
	}
}

var errRateLimited = errors.New("refetch rate limited")
