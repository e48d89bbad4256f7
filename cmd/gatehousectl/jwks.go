package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

const jwksUsage = `Usage: gatehousectl jwks <generate|serve> [flags]

  generate   generate a signing key pair: a private JWK and a public JWKS
  serve      serve a JWKS file over HTTP on loopback, re-read on every request

Run 'gatehousectl jwks generate --help' or 'gatehousectl jwks serve --help'.
`

const jwksGenerateUsage = `Usage: gatehousectl jwks generate --alg ALG [--kid ID] --out-private key.json --out-jwks jwks.json

Generate a key pair for test tokens. The private JWK is written with mode 0600
and never overwritten unless --force; the public JWKS is written atomically
(so a running 'jwks serve' never reads half a file). With --append the new
public key is added to an existing JWKS, which is how a key rotation is staged.

Algorithms: RS256 and PS256 (RSA, --rsa-bits), ES256 (P-256), ES384 (P-384),
EdDSA (Ed25519). The kid defaults to the key's RFC 7638 thumbprint.

Examples:
  gatehousectl jwks generate --alg ES256 --kid k1 --out-private k1.json --out-jwks jwks.json
  gatehousectl jwks generate --alg ES256 --kid k2 --out-private k2.json --out-jwks jwks.json --append
`

const jwksServeUsage = `Usage: gatehousectl jwks serve --jwks jwks.json [--addr 127.0.0.1:0] [--port-file f]

Serve a JWKS for demos and tests at / and /.well-known/jwks.json. Only loopback
addresses are accepted. The file is re-read on every request (a rotation demo
only has to rewrite it), and only public keys are ever served: pointing it at a
private JWK serves that key's public half. Prints the URL on stdout once
listening, logs each request on stderr, and stops on SIGINT/SIGTERM.

Examples:
  gatehousectl jwks serve --jwks jwks.json --addr 127.0.0.1:8088
  gatehousectl jwks serve --jwks jwks.json --port-file /tmp/jwks.addr &   # random port
`

func (a *app) jwks(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, jwksUsage)
		return usageErrorf("jwks", "missing subcommand: generate or serve")
	}
	switch args[0] {
	case "generate":
		o, err := parseJWKSGenerateFlags(args[1:])
		if err != nil {
			return err
		}
		kid, err := generateKeyPair(o)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "wrote private key %s (alg %s, kid %s) and public JWKS %s\n", o.outPrivate, o.alg, kid, o.outJWKS)
		return nil
	case "serve":
		o, err := parseJWKSServeFlags(args[1:])
		if err != nil {
			return err
		}
		return serveJWKS(ctx, o, a.stdout, &lockedWriter{w: a.stderr})
	case "-h", "-help", "--help", "help":
		return &helpRequest{text: jwksUsage}
	default:
		return usageErrorf("jwks", "unknown subcommand %q: want generate or serve", args[0])
	}
}

// jwksGenerateOptions is the parsed command line of `jwks generate`.
type jwksGenerateOptions struct {
	alg        jwa.SignatureAlgorithm
	kid        string
	outPrivate string
	outJWKS    string
	rsaBits    int
	appendKey  bool
	force      bool
}

func parseJWKSGenerateFlags(args []string) (jwksGenerateOptions, error) {
	const cmd = "jwks generate"
	var o jwksGenerateOptions
	var alg string
	fs := newFlagSet(cmd)
	fs.StringVar(&alg, "alg", "RS256", "signature algorithm: RS256, PS256, ES256, ES384 or EdDSA")
	fs.StringVar(&o.kid, "kid", "", "key id (default: the RFC 7638 thumbprint)")
	fs.StringVar(&o.outPrivate, "out-private", "", "write the private JWK to `file` (mode 0600)")
	fs.StringVar(&o.outJWKS, "out-jwks", "", "write the public JWKS to `file`")
	fs.IntVar(&o.rsaBits, "rsa-bits", 2048, "RSA modulus size for RS256/PS256")
	fs.BoolVar(&o.appendKey, "append", false, "add the public key to an existing --out-jwks instead of replacing it")
	fs.BoolVar(&o.force, "force", false, "overwrite existing output files")
	pos, err := parseFlags(fs, cmd, jwksGenerateUsage, args)
	if err != nil {
		return o, err
	}
	if err := refuseArguments(cmd, jwksGenerateUsage, pos, 0, ""); err != nil {
		return o, err
	}
	switch alg {
	case "RS256", "PS256", "ES256", "ES384", "EdDSA":
		o.alg = jwa.SignatureAlgorithm(alg)
	default:
		return o, usageErrorf(cmd, "--alg %q: want RS256, PS256, ES256, ES384 or EdDSA", alg)
	}
	if o.outPrivate == "" || o.outJWKS == "" {
		return o, usageErrorf(cmd, "--out-private and --out-jwks are required")
	}
	if o.rsaBits < 2048 {
		return o, usageErrorf(cmd, "--rsa-bits %d: at least 2048", o.rsaBits)
	}
	return o, nil
}

// newSigningKey generates a raw private key for alg.
func newSigningKey(alg jwa.SignatureAlgorithm, rsaBits int) (crypto.Signer, error) {
	switch alg {
	case jwa.RS256, jwa.PS256:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	case jwa.ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.ES384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jwa.EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("unsupported algorithm %s", alg)
}

// generateKeyPair writes the private JWK and the public JWKS and returns the kid.
func generateKeyPair(o jwksGenerateOptions) (string, error) {
	raw, err := newSigningKey(o.alg, o.rsaBits)
	if err != nil {
		return "", fmt.Errorf("generate %s key: %w", o.alg, err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	kid := o.kid
	if kid == "" {
		tp, err := priv.Thumbprint(crypto.SHA256)
		if err != nil {
			return "", fmt.Errorf("key thumbprint: %w", err)
		}
		kid = base64.RawURLEncoding.EncodeToString(tp)
	}
	for name, value := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: o.alg, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := priv.Set(name, value); err != nil {
			return "", fmt.Errorf("set %s: %w", name, err)
		}
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}

	set := jwk.NewSet()
	if o.appendKey {
		data, err := os.ReadFile(o.outJWKS)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return "", fmt.Errorf("--append: %w", err)
		default:
			if set, err = jwk.Parse(data); err != nil {
				return "", fmt.Errorf("--append: %s is not a JWKS: %w", o.outJWKS, err)
			}
			if _, dup := set.LookupKeyID(kid); dup {
				return "", fmt.Errorf("--append: %s already holds kid %q", o.outJWKS, kid)
			}
		}
	} else if !o.force {
		if _, err := os.Stat(o.outJWKS); err == nil {
			return "", fmt.Errorf("%s exists: use --append to add the key, or --force to replace the file", o.outJWKS)
		}
	}
	if err := set.AddKey(pub); err != nil {
		return "", fmt.Errorf("add key to set: %w", err)
	}
	privJSON, err := json.MarshalIndent(priv, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	setJSON, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode JWKS: %w", err)
	}
	if err := writePrivateFile(o.outPrivate, append(privJSON, '\n'), o.force); err != nil {
		return "", err
	}
	if err := writeFileAtomic(o.outJWKS, append(setJSON, '\n'), 0o644); err != nil {
		return "", err
	}
	return kid, nil
}

// writePrivateFile creates path with mode 0600. It refuses to overwrite unless
// force, and on force removes the old file first so its mode cannot linger.
func writePrivateFile(path string, data []byte, force bool) error {
	if force {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: use --force to replace it", path)
		}
		return fmt.Errorf("write private key: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write private key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write private key %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so concurrent readers see the old file or the new one, whole.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// jwksServeOptions is the parsed command line of `jwks serve`.
type jwksServeOptions struct {
	jwksFile     string
	addr         string
	portFile     string
	cacheControl string
}

func parseJWKSServeFlags(args []string) (jwksServeOptions, error) {
	const cmd = "jwks serve"
	var o jwksServeOptions
	fs := newFlagSet(cmd)
	fs.StringVar(&o.jwksFile, "jwks", "", "JWKS (or JWK) `file` to serve, re-read on every request")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "loopback `host:port` to listen on (port 0 picks a free one)")
	fs.StringVar(&o.portFile, "port-file", "", "write the bound host:port to `file` once listening")
	fs.StringVar(&o.cacheControl, "cache-control", "", "Cache-Control header to send (e.g. 'max-age=300'); none by default")
	pos, err := parseFlags(fs, cmd, jwksServeUsage, args)
	if err != nil {
		return o, err
	}
	if err := refuseArguments(cmd, jwksServeUsage, pos, 0, " (the key set is given with --jwks)"); err != nil {
		return o, err
	}
	if o.jwksFile == "" {
		return o, usageErrorf(cmd, "--jwks is required")
	}
	if err := checkLoopback(o.addr); err != nil {
		return o, usageErrorf(cmd, "--addr %s: %v", o.addr, err)
	}
	return o, nil
}

// checkLoopback accepts only addresses that cannot be reached from another
// machine: this server is for demos and must not publish keys on a network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return errors.New("refusing to listen on a non-loopback address; use 127.0.0.1, [::1] or localhost")
	}
	return nil
}

// serveJWKS serves o.jwksFile until ctx is done. The URL goes to stdout once
// the listener is bound, then a line per request goes to logw.
func serveJWKS(ctx context.Context, o jwksServeOptions, stdout, logw io.Writer) error {
	// Read once up front so a wrong path fails now, not on the first request.
	if _, err := loadPublicJWKS(o.jwksFile); err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.addr, err)
	}
	bound := ln.Addr().String()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			fmt.Fprintf(logw, "%s %s 404\n", r.Method, r.URL.Path)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := loadPublicJWKS(o.jwksFile)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			fmt.Fprintf(logw, "%s %s 500 %v\n", r.Method, r.URL.Path, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if o.cacheControl != "" {
			w.Header().Set("Cache-Control", o.cacheControl)
		}
		_, _ = w.Write(body)
		fmt.Fprintf(logw, "%s %s 200\n", r.Method, r.URL.Path)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	if o.portFile != "" {
		if err := writeFileAtomic(o.portFile, []byte(bound+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, "http://%s/.well-known/jwks.json\n", bound)

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", bound, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stop %s: %w", bound, err)
	}
	return nil
}

// loadPublicJWKS reads a JWKS or a single JWK and returns the JSON of its
// public keys only.
func loadPublicJWKS(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", path, err)
	}
	for i := 0; i < set.Len(); i++ {
		if k, _ := set.Key(i); k.KeyType() == jwa.OctetSeq {
			// A symmetric key has no public half: serving it would publish the secret.
			return nil, fmt.Errorf("jwks %s: holds a symmetric (oct) key, refusing to serve it", path)
		}
	}
	pub, err := jwk.PublicSetOf(set)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: public keys: %w", path, err)
	}
	out, err := json.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", path, err)
	}
	return append(out, '\n'), nil
}

// lockedWriter serializes writes from concurrent request handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
