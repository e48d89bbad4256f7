package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// generateKeys runs `jwks generate` into a temporary directory and returns
// the private key and JWKS paths.
func generateKeys(t *testing.T, alg, kid string) (keyFile, jwksFile string) {
	t.Helper()
	dir := t.TempDir()
	keyFile, jwksFile = filepath.Join(dir, "key.json"), filepath.Join(dir, "jwks.json")
	r := runCLI(t, "jwks", "generate", "--alg", alg, "--kid", kid, "--out-private", keyFile, "--out-jwks", jwksFile)
	r.wantCode(t, exitOK)
	return keyFile, jwksFile
}

func readJWKS(t *testing.T, path string) jwk.Set {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(data)
	if err != nil {
		t.Fatalf("%s is not a JWKS: %v", path, err)
	}
	return set
}

func TestMintAndVerifyEachAlg(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			keyFile, jwksFile := generateKeys(t, alg, "kid-"+alg)
			if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("private key mode = %v (%v), want 0600", fi.Mode().Perm(), err)
			}
			set := readJWKS(t, jwksFile)
			if set.Len() != 1 {
				t.Fatalf("JWKS holds %d keys", set.Len())
			}
			pub, _ := set.Key(0)
			if private, _ := jwk.IsPrivateKey(pub); private {
				t.Fatal("the JWKS holds a private key")
			}
			if pub.KeyID() != "kid-"+alg || pub.Algorithm().String() != alg {
				t.Errorf("JWKS key kid %q alg %q", pub.KeyID(), pub.Algorithm())
			}

			r := runCLI(t, "token", "--key", keyFile, "--iss", "https://issuer.test", "--aud", "api", "--aud", "admin",
				"--sub", "alice", "--claim", `roles=["reader","writer"]`, "--claim", "tenant=acme", "--claim", "level=3",
				"--claim", "big=12345678901234567890", "--ttl", "10m")
			r.wantCode(t, exitOK)
			raw := strings.TrimSpace(r.stdout)

			tok, err := jwt.ParseString(raw, jwt.WithKeySet(set), jwt.WithValidate(true),
				jwt.WithIssuer("https://issuer.test"), jwt.WithAudience("admin"))
			if err != nil {
				t.Fatalf("verify with the generated JWKS: %v", err)
			}
			if tok.Subject() != "alice" || len(tok.Audience()) != 2 {
				t.Errorf("sub %q aud %v", tok.Subject(), tok.Audience())
			}
			if d := tok.Expiration().Sub(tok.IssuedAt()); d != 10*time.Minute {
				t.Errorf("exp - iat = %v, want 10m", d)
			}
			claims := tok.PrivateClaims()
			if roles, _ := claims["roles"].([]any); len(roles) != 2 || roles[0] != "reader" {
				t.Errorf("roles = %#v", claims["roles"])
			}
			if claims["tenant"] != "acme" || claims["level"] != float64(3) || tok.JwtID() == "" {
				t.Errorf("claims = %#v", claims)
			}
			msg, err := jws.Parse([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			h := msg.Signatures()[0].ProtectedHeaders()
			if h.KeyID() != "kid-"+alg || h.Algorithm().String() != alg || h.Type() != "JWT" {
				t.Errorf("header kid %q alg %q typ %q", h.KeyID(), h.Algorithm(), h.Type())
			}
			// Big integers stay exact in the payload.
			if !strings.Contains(string(msg.Payload()), `"big":12345678901234567890`) {
				t.Errorf("payload %s", msg.Payload())
			}
		})
	}
}

func TestMintTimes(t *testing.T) {
	keyFile, jwksFile := generateKeys(t, "ES256", "k1")
	set := readJWKS(t, jwksFile)
	parse := func(t *testing.T, raw string) jwt.Token {
		t.Helper()
		tok, err := jwt.ParseString(strings.TrimSpace(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t.Run("expired", func(t *testing.T) {
		r := runCLI(t, "token", "--key", keyFile, "--iss", "i", "--aud", "a", "--expired")
		r.wantCode(t, exitOK)
		tok := parse(t, r.stdout)
		if !tok.Expiration().Before(time.Now().Add(-4 * time.Minute)) {
			t.Errorf("exp %v is not well in the past", tok.Expiration())
		}
		if err := jwt.Validate(tok, jwt.WithAcceptableSkew(time.Minute)); err == nil {
			t.Error("an --expired token validates")
		}
	})
	t.Run("not yet valid", func(t *testing.T) {
		r := runCLI(t, "token", "--key", keyFile, "--nbf-in", "10m")
		r.wantCode(t, exitOK)
		tok := parse(t, r.stdout)
		if !tok.NotBefore().After(time.Now().Add(9 * time.Minute)) {
			t.Errorf("nbf %v", tok.NotBefore())
		}
	})
	t.Run("kid and alg override", func(t *testing.T) {
		r := runCLI(t, "token", "--key", keyFile, "--kid", "other", "--no-jti")
		r.wantCode(t, exitOK)
		msg, err := jws.Parse([]byte(strings.TrimSpace(r.stdout)))
		if err != nil {
			t.Fatal(err)
		}
		if kid := msg.Signatures()[0].ProtectedHeaders().KeyID(); kid != "other" {
			t.Errorf("kid %q", kid)
		}
		if strings.Contains(string(msg.Payload()), "jti") {
			t.Error("--no-jti kept a jti")
		}
	})
}

func TestTokenErrors(t *testing.T) {
	keyFile, jwksFile := generateKeys(t, "ES256", "k1")
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{name: "no key", args: []string{"token"}, wantStderr: "--key is required"},
		{name: "missing key file", args: []string{"token", "--key", "/nonexistent.json"}, wantStderr: "--key"},
		{name: "public key", args: []string{"token", "--key", jwksFile}, wantStderr: "not a JWK"},
		{name: "wrong alg for key", args: []string{"token", "--key", keyFile, "--alg", "RS256"}, wantStderr: "sign with RS256"},
		{name: "bad claim", args: []string{"token", "--key", keyFile, "--claim", "novalue"}, wantStderr: "key=value"},
		{name: "stray argument", args: []string{"token", "--key", keyFile, "decod"}, wantStderr: "did you mean"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			r.wantCode(t, exitError)
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
		})
	}
}

func TestTokenDecode(t *testing.T) {
	keyFile, _ := generateKeys(t, "EdDSA", "ed1")
	mint := runCLI(t, "token", "--key", keyFile, "--iss", "https://issuer.test", "--aud", "api", "--sub", "bob")
	mint.wantCode(t, exitOK)
	raw := strings.TrimSpace(mint.stdout)

	t.Run("argument", func(t *testing.T) {
		r := runCLI(t, "token", "decode", raw)
		r.wantCode(t, exitOK)
		if !strings.HasPrefix(r.stdout, "UNVERIFIED") || !strings.Contains(r.stderr, "UNVERIFIED") {
			t.Errorf("not labelled UNVERIFIED:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		}
		for _, want := range []string{`"alg": "EdDSA"`, `"kid": "ed1"`, `"sub": "bob"`, "  exp  ", "Z (in ", "  iat  ", "  nbf  ", "signature: 64 bytes"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("stdin with bearer prefix", func(t *testing.T) {
		r := runCLIStdin(t, "Bearer "+raw+"\n", "token", "decode", "-")
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stdout, `"iss": "https://issuer.test"`) {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})
	t.Run("json", func(t *testing.T) {
		r := runCLIStdin(t, raw, "token", "decode", "--json")
		r.wantCode(t, exitOK)
		var out struct {
			Verified bool           `json:"verified"`
			Header   map[string]any `json:"header"`
			Claims   map[string]any `json:"claims"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatal(err)
		}
		if out.Verified || out.Claims["sub"] != "bob" || out.Header["kid"] != "ed1" {
			t.Errorf("%+v", out)
		}
	})
	t.Run("expired shows ago", func(t *testing.T) {
		exp := runCLI(t, "token", "--key", keyFile, "--expired")
		r := runCLI(t, "token", "decode", strings.TrimSpace(exp.stdout))
		r.wantCode(t, exitOK)
		if !strings.Contains(r.stdout, "ago)") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
	})
	for _, bad := range []string{"not-a-token", "a.b.c.d.e", "eyJhbGciOiJub25lIn0.!!!.x"} {
		t.Run("malformed "+bad, func(t *testing.T) {
			runCLI(t, "token", "decode", bad).wantCode(t, exitError)
		})
	}
}

func TestJWKSGenerateFiles(t *testing.T) {
	keyFile, jwksFile := generateKeys(t, "ES256", "k1")
	dir := filepath.Dir(keyFile)

	// Existing files are never silently replaced.
	r := runCLI(t, "jwks", "generate", "--alg", "ES256", "--kid", "k1", "--out-private", keyFile, "--out-jwks", filepath.Join(dir, "other.json"))
	r.wantCode(t, exitError)
	r = runCLI(t, "jwks", "generate", "--alg", "ES256", "--kid", "k2", "--out-private", filepath.Join(dir, "k2.json"), "--out-jwks", jwksFile)
	r.wantCode(t, exitError)

	// --append stages a rotation: both keys are published.
	r = runCLI(t, "jwks", "generate", "--alg", "RS256", "--kid", "k2", "--out-private", filepath.Join(dir, "k2.json"), "--out-jwks", jwksFile, "--append")
	r.wantCode(t, exitOK)
	set := readJWKS(t, jwksFile)
	if _, ok := set.LookupKeyID("k1"); !ok || set.Len() != 2 {
		t.Fatalf("after --append the JWKS holds %d keys", set.Len())
	}
	// A duplicate kid is refused.
	r = runCLI(t, "jwks", "generate", "--alg", "ES256", "--kid", "k2", "--out-private", filepath.Join(dir, "k3.json"), "--out-jwks", jwksFile, "--append")
	r.wantCode(t, exitError)

	// --force replaces, and the default kid is the thumbprint.
	r = runCLI(t, "jwks", "generate", "--alg", "EdDSA", "--out-private", keyFile, "--out-jwks", jwksFile, "--force")
	r.wantCode(t, exitOK)
	set = readJWKS(t, jwksFile)
	k, _ := set.Key(0)
	if set.Len() != 1 || len(k.KeyID()) != 43 {
		t.Errorf("after --force: %d keys, kid %q", set.Len(), k.KeyID())
	}

	for _, args := range [][]string{
		{"--alg", "HS256", "--out-private", "a", "--out-jwks", "b"},
		{"--alg", "ES256", "--out-jwks", "b"},
		{"--alg", "RS256", "--rsa-bits", "1024", "--out-private", "a", "--out-jwks", "b"},
	} {
		runCLI(t, append([]string{"jwks", "generate"}, args...)...).wantCode(t, exitError)
	}
}
