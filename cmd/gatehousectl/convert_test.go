package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
)

// loadConverted feeds the printed configuration to the real loader and to the
// JWT verifier's validation, as the server does at start-up. The verifier's
// HTTP client refuses every connection, so nothing leaves the machine.
func loadConverted(t *testing.T, out, dir string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the converted configuration does not load: %v\n%s", err, out)
	}
	refuse := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no network in this test")
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := cfg.JWT.Options()
	opts.HTTPClient = refuse
	v, err := jwt.New(ctx, opts)
	if err != nil {
		t.Fatalf("the converted jwt configuration is rejected: %v\n%s", err, out)
	}
	v.Close()
	return cfg
}

func TestConvertRequestAuthentication(t *testing.T) {
	bearer := []config.TokenHeader{{Name: "authorization", Prefix: "Bearer "}}
	tests := []struct {
		name      string
		file      string
		jwksDir   bool
		providers []config.JWTProvider
		notes     []string // each must appear in stderr
	}{
		{
			name: "ingress gateway, several rules, inline jwks written with --jwks-dir",
			file: "ingressgateway.yaml", jwksDir: true,
			providers: []config.JWTProvider{
				{
					Name: "jwt-example", Issuer: "testing@secure.istio.io", AllowAnyAudience: true,
					JWKSURI:     "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json",
					FromHeaders: bearer, FromParams: []string{"access_token"}, ForwardToken: ptrTo(false),
				},
				{
					Name: "corp-and-partners-1", Issuer: "https://login.corp.example/", Audiences: []string{"orders-api", "billing-api"},
					JWKSURI:        "https://login.corp.example/.well-known/jwks.json",
					FromHeaders:    []config.TokenHeader{{Name: "Authorization", Prefix: "Bearer "}, {Name: "x-goog-iap-jwt-assertion"}},
					ForwardToken:   ptrTo(true),
					ClaimToHeaders: []config.ClaimToHeader{{Claim: "sub", Header: "x-jwt-sub"}, {Claim: "org.tenant", Header: "x-jwt-tenant"}},
					PayloadHeader:  "x-jwt-payload",
					FetchTimeout:   config.Duration(10e9),
				},
				{
					Name: "corp-and-partners-2", Issuer: "https://partners.example.net", Audiences: []string{"partner-gateway"},
					JWKSFile:   "jwks/corp-and-partners-2.jwks.json",
					FromParams: []string{"token"}, FromCookies: []string{"session-token"}, ForwardToken: ptrTo(false),
				},
			},
			notes: []string{
				"istio-system/jwt-example: selector/targetRef not converted",
				"jwt-example jwtRules[0]: no audiences: Istio then accepts a token for any audience; converted as allow_any_audience: true",
				"jwt-example jwtRules[0]: no token location: Istio's defaults",
				"corp-and-partners jwtRules[1]: tokens read from cookies are not stripped",
				"corp-and-partners jwtRules[1]: inline jwks written to",
				"Gatehouse's default policy answers 401 to a request without a token",
			},
		},
		{
			name: "kubectl get -o yaml List: discovery, duplicates merged, other kinds skipped",
			file: "kubectl-list.yaml",
			providers: []config.JWTProvider{{
				Name: "keycloak", Issuer: "https://sso.example.org/realms/main", AllowAnyAudience: true, Discovery: true,
				FromHeaders: bearer, FromParams: []string{"access_token"}, ForwardToken: ptrTo(false),
			}},
			notes: []string{
				"istio-ingress/keycloak: selector/targetRef not converted",
				"keycloak jwtRules[0]: no jwksUri: Istio finds the keys through OpenID discovery at the issuer; converted as discovery: true",
				"keycloak jwtRules[0]: spaceDelimitedClaims [scope] not converted",
				"httpbin/keycloak-copy jwtRules[0]: same issuer and settings as istio-ingress/keycloak jwtRules[0]; converted once (provider keycloak)",
				`skipped AuthorizationPolicy "require-jwt"`,
			},
		},
		{
			name: "one issuer, two audiences: the second is left to a person",
			file: "conflicting-issuer.yaml",
			providers: []config.JWTProvider{{
				Name: "orders", Issuer: "https://login.corp.example/", Audiences: []string{"orders-api"},
				JWKSURI:     "https://login.corp.example/.well-known/jwks.json",
				FromHeaders: bearer, FromParams: []string{"access_token"}, ForwardToken: ptrTo(false),
			}},
			notes: []string{"billing/billing jwtRules[0]: issuer https://login.corp.example/ is already provider orders (from orders/orders jwtRules[0]) with different settings",
				"NOT converted"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file, err := filepath.Abs(filepath.Join("testdata", "requestauthentication", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"convert", "requestauthentication", file}
			if tc.jwksDir {
				// A relative --jwks-dir, run from the directory the
				// configuration will live in.
				t.Chdir(dir)
				args = append(args, "--jwks-dir", "jwks")
			}
			res := runCLI(t, args...)
			res.wantCode(t, exitOK)
			for _, n := range tc.notes {
				if !strings.Contains(res.stderr, n) {
					t.Errorf("stderr lacks the note %q:\n%s", n, res.stderr)
				}
			}
			cfg := loadConverted(t, res.stdout, dir)
			got := cfg.JWT.Providers
			if len(got) != len(tc.providers) {
				t.Fatalf("got %d providers, want %d:\n%s", len(got), len(tc.providers), res.stdout)
			}
			for i, want := range tc.providers {
				if want.JWKSFile != "" {
					want.JWKSFile = filepath.Join(dir, want.JWKSFile) // resolved by the loader
				}
				if !reflect.DeepEqual(got[i], want) {
					t.Errorf("provider %d:\n got %+v\nwant %+v", i, got[i], want)
				}
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestConvertInlineJWKSWithoutDir: without --jwks-dir, jwks_file names the
// file to create and a note says so; once it exists, the config loads.
func TestConvertInlineJWKSWithoutDir(t *testing.T) {
	res := runCLI(t, "convert", "requestauthentication", "testdata/requestauthentication/ingressgateway.yaml")
	res.wantCode(t, exitOK)
	if !strings.Contains(res.stdout, "jwks_file: corp-and-partners-2.jwks.json") {
		t.Fatalf("want jwks_file naming the file to create:\n%s", res.stdout)
	}
	if !strings.Contains(res.stderr, "save the jwks value as corp-and-partners-2.jwks.json") {
		t.Fatalf("want a note saying where to save the jwks:\n%s", res.stderr)
	}
	dir := t.TempDir()
	jwks := `{"keys":[{"alg":"ES256","crv":"P-256","kid":"partner-2024","kty":"EC","use":"sig","x":"DCEwLuMYh-jE0uI8PNfcClyLrud8Vy0wOSA5A4U_cTU","y":"9Nf99wVjQhwVAfLLNGudCFgSZNkDqcSGOlB5UO-R7cs"}]}`
	if err := os.WriteFile(filepath.Join(dir, "corp-and-partners-2.jwks.json"), []byte(jwks), 0o644); err != nil {
		t.Fatal(err)
	}
	loadConverted(t, res.stdout, dir)
}

func TestConvertStdinAndErrors(t *testing.T) {
	ra := "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: r}\nspec:\n  jwtRules:\n    - issuer: https://i.example\n      audiences: [a]\n      jwksUri: https://i.example/jwks\n      fromHeaders: [{name: x-token}]\n      futureField: true\n"
	res := runCLIStdin(t, ra, "convert", "requestauthentication", "-")
	res.wantCode(t, exitOK)
	if !strings.Contains(res.stdout, "- name: x-token") || !strings.Contains(res.stderr, "r jwtRules[0]: futureField is not converted") {
		t.Fatalf("stdin conversion:\n%s\n%s", res.stdout, res.stderr)
	}
	loadConverted(t, res.stdout, t.TempDir())

	tests := []struct {
		name, stdin string
		args        []string
		code        int
		want        string
	}{
		{"no RequestAuthentication", "", []string{"testdata/requestauthentication/not-requestauthentication.yaml"}, exitError, "no security.istio.io RequestAuthentication found"},
		{"missing file", "", []string{"testdata/requestauthentication/absent.yaml"}, exitError, "absent.yaml"},
		{"not YAML", "a: [", []string{"-"}, exitError, "not valid YAML"},
		{"a scalar document", "just text", []string{"-"}, exitError, "must be a YAML mapping"},
		{"every rule without issuer", "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r}\nspec:\n  jwtRules: [{jwksUri: https://x}]\n", []string{"-"}, exitError, "no jwtRules could be converted"},
		{"two files", "", []string{"a.yaml", "b.yaml"}, exitError, `unexpected argument "b.yaml" (convert takes one FILE`},
		{"no file", "", nil, exitError, "want one FILE (or - for standard input), got none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLIStdin(t, tc.stdin, append([]string{"convert", "requestauthentication"}, tc.args...)...)
			res.wantCode(t, tc.code)
			if !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, res.stderr)
			}
			if res.stdout != "" {
				t.Fatalf("nothing may be printed on stdout on error, got:\n%s", res.stdout)
			}
		})
	}

	res = runCLI(t, "convert", "peerauthentication", "x.yaml")
	res.wantCode(t, exitError)
	if !strings.Contains(res.stderr, `unknown conversion "peerauthentication"`) {
		t.Fatalf("stderr: %s", res.stderr)
	}
}
