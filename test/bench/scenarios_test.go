package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/opaenvoy"
)

// testFixture signs a few tokens with a fresh key: a valid one, one for
// another audience, an expired one.
func testFixture(t *testing.T) (fixture, map[string]string) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKeys(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	mint := func(sub string, iat, exp time.Time) string {
		tok, err := k.mint(sub, iat, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	f := fixture{
		jwksURL: "http://127.0.0.1:1/.well-known/jwks.json",
		jwks:    k.jwks,
		tokens:  []string{mint("warm", now, now.Add(time.Hour)), mint("u1", now, now.Add(time.Hour)), mint("u2", now, now.Add(time.Hour))},
	}
	other := map[string]string{"expired": mint("old", now.Add(-2*time.Hour), now.Add(-time.Hour))}
	return f, other
}

// TestGatehouseConfigsLoad loads every scenario's Gatehouse configuration with
// the real config package, so a renamed key breaks this test and not a bench run.
func TestGatehouseConfigsLoad(t *testing.T) {
	f, _ := testFixture(t)
	for _, sc := range scenarios(f) {
		t.Run(sc.name, func(t *testing.T) {
			if sc.opaConfig != "" {
				checkOPAConfig(t, sc)
				return
			}
			dir := t.TempDir()
			if err := writeFiles(dir, sc.policyFiles); err != nil {
				t.Fatal(err)
			}
			c, err := config.Parse([]byte(sc.gatehouse), dir)
			if err != nil {
				t.Fatalf("config does not load: %v\n%s", err, sc.gatehouse)
			}
			if sc.policyFiles == nil && (len(c.JWT.Providers) != 1 || len(c.Bypass.TrustedCIDRs) != len(trustedCIDRs) || len(c.Headers.Deny) != 1) {
				t.Errorf("configured decision: want 1 provider, %d trusted CIDRs, 1 deny rule; got %+v", len(trustedCIDRs), c)
			}
		})
	}
}

// opaEnvoyInput builds the input OPA-Envoy gives a policy for req: the
// attributes in their protobuf JSON names, parsed_path and parsed_query.
func opaEnvoyInput(t *testing.T, req *authv3.CheckRequest, body map[string]any) map[string]any {
	t.Helper()
	raw, err := protojson.Marshal(req.GetAttributes())
	if err != nil {
		t.Fatal(err)
	}
	var attrs map[string]any
	if err := json.Unmarshal(raw, &attrs); err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(req.GetAttributes().GetRequest().GetHttp().GetPath(), "?")
	parsedPath := []any{}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		parsedPath = append(parsedPath, seg)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	parsedQuery := map[string]any{}
	for k, vs := range q {
		l := []any{}
		for _, v := range vs {
			l = append(l, v)
		}
		parsedQuery[k] = l
	}
	in := map[string]any{"attributes": attrs, "parsed_path": parsedPath, "parsed_query": parsedQuery}
	if body != nil {
		in["parsed_body"] = body
	}
	return in
}

func evalAllow(t *testing.T, module string, input map[string]any) any {
	t.Helper()
	r := rego.New(rego.Query("data.envoy.authz.allow"), rego.Module("policy.rego", module), rego.Input(input))
	rs, err := r.Eval(context.Background())
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("allow is undefined: %v", rs)
	}
	return rs[0].Expressions[0].Value
}

// checkOPAConfig: an OPA-configured scenario's configuration passes
// `gatehouse run`'s checks, and its bundle service serves a bundle OPA's
// reader takes, holding the scenario's policy, and takes a decision log
// upload.
func checkOPAConfig(t *testing.T, sc scenario) {
	t.Helper()
	services, err := startOPAServices(sc.opaModule)
	if err != nil {
		t.Fatal(err)
	}
	defer services.Close()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(opaConfig(sc.opaConfig, "127.0.0.1:9191", services.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := opaenvoy.Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	rawExt, err := opaenvoy.CheckConfig(conf)
	if err != nil {
		t.Fatalf("gatehouse run refuses the configuration: %v", err)
	}
	ext, err := opaenvoy.ParseExtAuthz(rawExt)
	if err != nil || ext.Address != "127.0.0.1:9191" {
		t.Fatalf("plugins.envoy_ext_authz_grpc: %+v, %v", ext, err)
	}
	resp, err := http.Get(services.URL + bundleResource)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := bundle.NewReader(resp.Body).Read()
	if err != nil || len(b.Modules) != 1 || string(b.Modules[0].Raw) != sc.opaModule {
		t.Fatalf("the served bundle: %v, %d modules", err, len(b.Modules))
	}
	_, wantLogs := conf["decision_logs"]
	if wantLogs {
		resp, err := http.Post(services.URL+logsPath, "application/json", strings.NewReader("[]"))
		if err != nil || resp.StatusCode != http.StatusNoContent || services.uploads.Load() != 1 {
			t.Fatalf("decision log upload: %v %v, %d uploads", resp, err, services.uploads.Load())
		}
		resp.Body.Close()
	}
}

// TestOPAEnvoyPolicyDecisions proves the Rego given to OPA-Envoy takes the
// decisions of Gatehouse's configured default policy, for the scenarios'
// requests and the cases around them.
func TestOPAEnvoyPolicyDecisions(t *testing.T) {
	f, other := testFixture(t)
	module := opaConfiguredPolicy(f)
	byName := map[string]scenario{}
	for _, sc := range scenarios(f) {
		byName[sc.name] = sc
	}
	scanner := envoyRequest(requestShape{clientIP: trustedClient, method: "GET", path: "/people/42", token: f.tokens[0]})
	scanner.Attributes.Request.Http.Headers["user-agent"] = "sqlmap/1.8"
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want string
	}{
		{"warm token scenario", byName["warm token"].template, `{"allowed":true,"headers":{"x-jwt-sub":"warm"}}`},
		{"trusted IP scenario", byName["trusted IP"].template, `{"allowed":true}`},
		{"no token scenario", byName["no token"].template, `{"allowed":false,"http_status":401}`},
		{"another valid token", envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/x", token: f.tokens[2]}), `{"allowed":true,"headers":{"x-jwt-sub":"u2"}}`},
		{"expired token", envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/x", token: other["expired"]}), `{"allowed":false,"http_status":401}`},
		{"tampered token", envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/x", token: f.tokens[1] + "x"}), `{"allowed":false,"http_status":401}`},
		{"denied header even when trusted", scanner, `{"allowed":false,"http_status":403}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := json.Marshal(evalAllow(t, module, opaEnvoyInput(t, tc.req, nil)))
			if string(got) != tc.want {
				t.Errorf("allow = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDocsPolicyDecisions(t *testing.T) {
	f, _ := testFixture(t)
	var docs scenario
	for _, sc := range scenarios(f) {
		if sc.name == "docs policy" {
			docs = sc
		}
	}
	if docs.opaPolicy != testutil.DocsPolicy || docs.policyFiles["policy/authz.rego"] != testutil.DocsPolicy {
		t.Fatal("both servers must run the same docs policy")
	}
	req := func(method, path string) *authv3.CheckRequest {
		return envoyRequest(requestShape{clientIP: untrustedClient, method: method, path: path})
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		body map[string]any
		want bool
	}{
		{"scenario request", docs.template, nil, true},
		{"list without query", req("GET", "/people"), nil, true},
		{"list in another language", req("GET", "/people?lang=en&lang=xx"), nil, false},
		{"one person", req("GET", "/people/42"), nil, true},
		{"one person, bad id", req("GET", "/people/abc"), nil, false},
		{"add a person", req("POST", "/people"), map[string]any{"firstname": "Charlie"}, true},
		{"add a reserved name", req("POST", "/people"), map[string]any{"firstname": "Root"}, false},
		{"add without a body", req("POST", "/people"), nil, false},
		{"delete", req("DELETE", "/people/42"), nil, false},
		{"elsewhere", req("GET", "/admin"), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := evalAllow(t, testutil.DocsPolicy, opaEnvoyInput(t, tc.req, tc.body)); got != tc.want {
				t.Errorf("allow = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokenPoolCache(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "bench", "tokens.json")
	p, err := loadPool(cache, 3, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.tokens) != 3 || p.tokens[0] == p.tokens[1] {
		t.Fatalf("want 3 distinct tokens, got %d", len(p.tokens))
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v; want mode 0600", fi, err)
	}
	again, err := readPool(cache, 2, time.Now())
	if err != nil || again.tokens[1] != p.tokens[1] || string(again.keys.jwks) != string(p.keys.jwks) {
		t.Fatalf("cached pool not reused: %v", err)
	}
	if _, err := readPool(cache, 4, time.Now()); err == nil {
		t.Error("a pool smaller than asked for was accepted")
	}
	if _, err := readPool(cache, 3, time.Now().Add(tokenLifetime)); err == nil {
		t.Error("a pool about to expire was accepted")
	}
}

func TestDistinctSource(t *testing.T) {
	src := distinct([]string{"a", "b"})
	req := envoyRequest(requestShape{clientIP: untrustedClient, method: "GET", path: "/"})
	for _, wrap := range []bool{false, true} {
		next := src(wrap)
		var got []string
		for range 3 {
			if !next(req) {
				break
			}
			got = append(got, req.Attributes.Request.Http.Headers["authorization"])
		}
		want := "Bearer a,Bearer b"
		if wrap {
			want += ",Bearer a"
		}
		if strings.Join(got, ",") != want {
			t.Errorf("wrap=%v: %q, want %s", wrap, got, want)
		}
	}
}
