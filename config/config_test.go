package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/policy"
)

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.GRPC != ":9191" || c.Listen.HTTP != ":8181" {
		t.Errorf("listen = %+v", c.Listen)
	}
	if c.Policy.Decision != "" || c.Policy.RegoVersion != "v1" || c.Policy.FailStatus != 0 { // "" and 0: the policy and authz packages own those defaults
		t.Errorf("policy = %+v", c.Policy)
	}
	if len(c.Policy.Paths) != 0 || !*c.Policy.Watch || !*c.Policy.ParseBody || c.Policy.DryRun {
		t.Errorf("policy = %+v", c.Policy)
	}
	if c.ClientIP.Source != "peer" {
		t.Errorf("client_ip.source = %q", c.ClientIP.Source)
	}
	if c.Listen.ForwardAuth != "" {
		t.Errorf("the forward-auth listener must be off by default, got %q", c.Listen.ForwardAuth)
	}
	if c.Listen.Admin != "127.0.0.1:9192" || c.Ops.PProf || *c.Policy.Shadow.Sample != 1 || len(c.Policy.Shadow.Paths) != 0 {
		t.Errorf("observability defaults: admin %q, pprof %v, shadow %+v", c.Listen.Admin, c.Ops.PProf, c.Policy.Shadow)
	}
}

func TestParseForwardAuth(t *testing.T) {
	c, err := Parse([]byte("listen:\n  forward_auth: \"127.0.0.1:8282\"\nforward_auth:\n  mode: nginx\n  path_prefix: /auth\n  nginx_client_header: x-real-ip\n  max_body_bytes: 4096\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	want := ForwardAuth{Mode: "nginx", PathPrefix: "/auth", NGINXClientHeader: "x-real-ip", MaxBodyBytes: 4096}
	if c.Listen.ForwardAuth != "127.0.0.1:8282" || c.ForwardAuth != want {
		t.Errorf("got %q %+v", c.Listen.ForwardAuth, c.ForwardAuth)
	}
}

func TestParseFull(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	y := `
listen:
  grpc: "127.0.0.1:9000"
  http: "127.0.0.1:9001"
grpc:
  max_recv_msg_bytes: 1048576
  shutdown_grace: 3s
policy:
  paths: ["./policies"]
  decision: envoy.authz.allow
  dry_run: true
  rego_version: v0
  fail_status: 500
jwt:
  clock_skew: 30s
  providers:
    - name: corp
      issuer: https://issuer.example.com
      audiences: [orders-api]
      jwks_file: ./jwks.json
      claim_to_headers: [{claim: sub, header: x-jwt-sub}]
client_ip:
  source: xff
  xff_trusted_hops: 1
bypass:
  trusted_cidrs: [10.0.0.0/8, "2001:db8::/32"]
headers:
  require: [{name: X-Tenant-ID}]
  deny: [{name: user-agent, regex: "(?i)sqlmap"}]
  allow_values: [{name: x-env, values: [prod]}]
  rules_for: [{host: Admin.Example.com, path_prefix: /admin, require: [{name: x-admin-ticket}]}]
`
	c, err := Parse([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Paths[0] != filepath.Join(dir, "policies") {
		t.Errorf("policy path not resolved against the config dir: %q", c.Policy.Paths[0])
	}
	if c.JWT.Providers[0].JWKSFile != filepath.Join(dir, "jwks.json") {
		t.Errorf("jwks_file not resolved: %q", c.JWT.Providers[0].JWKSFile)
	}
	if c.GRPC.ShutdownGrace.D() != 3*time.Second || c.JWT.ClockSkew.D() != 30*time.Second {
		t.Errorf("durations: %v %v", c.GRPC.ShutdownGrace, c.JWT.ClockSkew)
	}
	if !c.Policy.DryRun || c.Policy.RegoVersion != "v0" || c.Policy.FailStatus != 500 {
		t.Errorf("policy = %+v", c.Policy)
	}
	d := c.Rules().Data()
	h := d["headers"].(map[string]any)
	if got := h["require"].([]any)[0].(map[string]any)["name"]; got != "x-tenant-id" {
		t.Errorf("header names must be lower-cased in policy data, got %v", got)
	}
	if got := h["rules_for"].([]any)[0].(map[string]any)["host"]; got != "admin.example.com" {
		t.Errorf("rules_for host = %v", got)
	}
	if got := d["jwt"].(map[string]any)["providers"].([]any); len(got) != 1 || got[0] != "corp" {
		t.Errorf("providers = %v", got)
	}
}

func TestRulesDataListsAlwaysPresent(t *testing.T) {
	d := Default().Rules().Data()
	h := d["headers"].(map[string]any)
	for _, k := range []string{"require", "deny", "allow_values", "rules_for"} {
		if v, ok := h[k].([]any); !ok || v == nil {
			t.Errorf("headers.%s missing or nil: %#v", k, h[k])
		}
	}
	b := d["bypass"].(map[string]any)
	if v, ok := b["trusted_cidrs"].([]any); !ok || v == nil {
		t.Errorf("bypass.trusted_cidrs missing")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // every fragment must appear in the error
	}{
		{"unknown top-level key", "listn: {}\n", []string{"line 1", `unknown key "listn"`, "valid keys here are", "listen"}},
		{"unknown nested key", "policy:\n  path: [x]\n", []string{"line 2", `unknown key "path" under policy`, "paths"}},
		{"unknown key in list item", "jwt:\n  providers:\n    - name: a\n      audience: [x]\n", []string{"line 4", `under jwt.providers[0]`, "audiences"}},
		{"wrong type", "policy:\n  dry_run: maybe\n", []string{"line 2", "policy.dry_run", "wrong type"}},
		{"wrong type int", "grpc:\n  max_recv_msg_bytes: lots\n", []string{"grpc.max_recv_msg_bytes", "wrong type"}},
		{"bad duration", "jwt:\n  clock_skew: soon\n", []string{"line 2", `"soon" is not a duration`}},
		{"bad grpc address", "listen:\n  grpc: 9191\n", []string{"listen.grpc", "host:port"}},
		{"bad port", "listen:\n  http: \":99999\"\n", []string{"listen.http", "0 to 65535"}},
		{"bad host", "listen:\n  http: \"example.com:80\"\n", []string{"listen.http", "not an IP"}},
		{"missing policy path", "policy:\n  paths: [/does/not/exist]\n", []string{"policy.paths[0]", "does not exist", "embedded default"}},
		{"bad rego version", "policy:\n  rego_version: v2\n", []string{"policy.rego_version", "v0 or v1"}},
		{"bad decision", "policy:\n  decision: \"envoy authz\"\n", []string{"policy.decision", "envoy/authz/allow"}},
		{"bad fail status", "policy:\n  fail_status: 200\n", []string{"policy.fail_status", "400 to 599"}},
		{"bad cidr", "bypass:\n  trusted_cidrs: [10.0.0.0/8, 10.0.0/8]\n", []string{"bypass.trusted_cidrs", "trusted_cidrs[1]", "10.0.0/8"}},
		{"bypass trusts everyone (v4)", "bypass:\n  trusted_cidrs: [10.0.0.0/8, 0.0.0.0/0]\n", []string{"bypass.trusted_cidrs[1]", "every client", "bypass.allow_all_addresses"}},
		{"bypass trusts everyone (v6)", "bypass:\n  trusted_cidrs: [\"::/0\"]\n", []string{"bypass.trusted_cidrs[0]", "bypass.allow_all_addresses"}},
		{"bypass trusts everyone (mapped)", "bypass:\n  trusted_cidrs: [\"::ffff:0:0/96\"]\n", []string{"bypass.trusted_cidrs[0]", "every client"}},
		{"bad bypass path", "bypass:\n  paths: [health]\n", []string{"bypass.paths[0]", "start with /"}},
		{"bad regex", "headers:\n  deny: [{name: user-agent, regex: \"(\"}]\n", []string{"headers.deny[0].regex"}},
		{"bad header name", "headers:\n  require: [{name: \"x tenant\"}]\n", []string{"headers.require[0].name"}},
		{"empty allow values", "headers:\n  allow_values: [{name: x-env}]\n", []string{"headers.allow_values[0].values", "empty"}},
		{"unscoped rules_for", "headers:\n  rules_for: [{require: [{name: a}]}]\n", []string{"headers.rules_for[0]", "host, path_prefix"}},
		{"allow_net with a port", "policy:\n  allow_net: [\"127.0.0.1:8080\"]\n", []string{"policy.allow_net[0]", "without its port", "host alone"}},
		{"allow_net with a URL", "policy:\n  allow_net: [\"https://api.example.com\"]\n", []string{"policy.allow_net[0]", "not a host"}},
		{"allow_net any host and more", "policy:\n  allow_net: [\"*\", api.example.com]\n", []string{"policy.allow_net[0]", "cannot be combined"}},
		{"allow_net empty entry", "policy:\n  allow_net: [\"\"]\n", []string{"policy.allow_net[0]", "empty"}},
		{"bad log level", "log:\n  level: loud\n", []string{"log.level"}},
		{"forward auth without mode", "listen:\n  forward_auth: \":8282\"\n", []string{"forward_auth.mode", "required", "traefik", "nginx", "envoy"}},
		{"forward auth keys without listener", "forward_auth:\n  mode: nginx\n", []string{"forward_auth", "listen.forward_auth", "remove forward_auth"}},
		{"bad forward auth address", "listen:\n  forward_auth: 8282\nforward_auth:\n  mode: nginx\n", []string{"listen.forward_auth", "host:port"}},
		{"negative forward auth body", "listen:\n  forward_auth: \":8282\"\nforward_auth:\n  mode: envoy\n  max_body_bytes: -1\n", []string{"forward_auth.max_body_bytes"}},
		{"unknown forward auth key", "forward_auth:\n  moed: nginx\n", []string{"line 2", `unknown key "moed" under forward_auth`, "mode, nginx_client_header, path_prefix"}},
		{"not a mapping", "- a\n- b\n", []string{"top level must be a mapping"}},
		{"not yaml", "listen: [\n", []string{"not valid YAML"}},
		{"bad admin address", "listen:\n  admin: 9192\n", []string{"listen.admin", "host:port"}},
		{"shadow sample zero", "policy:\n  shadow:\n    sample: 0\n", []string{"policy.shadow.sample", "(0, 1]"}},
		{"shadow sample above one", "policy:\n  shadow:\n    sample: 1.5\n", []string{"policy.shadow.sample", "fraction"}},
		{"missing shadow path", "policy:\n  shadow:\n    paths: [/does/not/exist]\n", []string{"policy.shadow.paths[0]", "does not exist", "no shadow policy"}},
		{"bad shadow decision", "policy:\n  shadow:\n    decision: \"a b\"\n", []string{"policy.shadow.decision", "envoy/authz/allow"}},
		{"negative shadow queue", "policy:\n  shadow:\n    queue_size: -1\n", []string{"policy.shadow.queue_size"}},
		{"negative reason labels", "ops:\n  max_reason_labels: -1\n", []string{"ops.max_reason_labels"}},
		{"negative gc floor", "ops:\n  gc_min_heap_mib: -1\n", []string{"ops.gc_min_heap_mib", "0 to leave"}},
		{"unknown ops key", "ops:\n  profiling: true\n", []string{`unknown key "profiling" under ops`, "pprof"}},
		{"unknown authorization rule key", "authorization:\n  rules:\n    - name: a\n      path: [/x]\n", []string{"line 4", `unknown key "path" under authorization.rules[0]`, "paths"}},
		{"unnamed rule", "authorization:\n  rules:\n    - paths: [/x]\n", []string{"authorization.rules[0].name", "required"}},
		{"duplicate rule name", "authorization:\n  rules:\n    - name: a\n    - name: a\n", []string{"authorization.rules[1].name", "authorization.rules[0]", "unique"}},
		{"bad rule name", "authorization:\n  rules:\n    - name: \"a b\"\n", []string{"authorization.rules[0].name", "letters, digits"}},
		{"bad action", "authorization:\n  rules:\n    - name: a\n      action: custom\n", []string{"authorization.rules[0].action", "allow, deny or audit"}},
		{"template with a partial segment", "authorization:\n  rules:\n    - name: a\n      paths: [\"/foo/{*}.txt\"]\n", []string{"authorization.rules[0].paths[0]", "/foo/{*}.txt", "whole segments"}},
		{"template with {**} before the end", "authorization:\n  rules:\n    - name: a\n      paths: [\"/foo/{**}/bar\"]\n", []string{"authorization.rules[0].paths[0]", "{**}", "last"}},
		{"template with a bare star", "authorization:\n  rules:\n    - name: a\n      not_paths: [\"/foo/{*}/*\"]\n", []string{"authorization.rules[0].not_paths[0]", "whole segments"}},
		{"template not rooted", "authorization:\n  rules:\n    - name: a\n      paths: [\"foo/{*}\"]\n", []string{"authorization.rules[0].paths[0]", "start with /"}},
		{"star in the middle", "authorization:\n  rules:\n    - name: a\n      hosts: [\"api.*.com\"]\n", []string{"authorization.rules[0].hosts[0]", "not at one end"}},
		{"empty value", "authorization:\n  rules:\n    - name: a\n      principals: [\"\"]\n", []string{"authorization.rules[0].principals[0]", "empty", "\"*\""}},
		{"empty claim path", "authorization:\n  rules:\n    - name: a\n      claims: [{path: [], values: [admin]}]\n", []string{"authorization.rules[0].claims[0].path", "empty", "[groups]"}},
		{"claim without values", "authorization:\n  rules:\n    - name: a\n      claims: [{path: [groups]}]\n", []string{"authorization.rules[0].claims[0]", "values, not_values"}},
		{"bad port", "authorization:\n  rules:\n    - name: a\n      ports: [0]\n", []string{"authorization.rules[0].ports[0]", "1 to 65535"}},
		{"bad cidr in a rule", "authorization:\n  rules:\n    - name: a\n      client_cidrs: [10.0.0/8]\n", []string{"authorization.rules[0].client_cidrs[0]", "10.0.0/8"}},
		{"bad method", "authorization:\n  rules:\n    - name: a\n      methods: [\"GE*\"]\n", []string{"authorization.rules[0].methods[0]", "not an HTTP method"}},
		{"bad header condition", "authorization:\n  rules:\n    - name: a\n      headers: [{name: \"x y\", values: [a]}]\n", []string{"authorization.rules[0].headers[0].name"}},
		{"allow_nothing with allow rules", "authorization:\n  allow_nothing: true\n  rules:\n    - name: a\n", []string{"authorization.allow_nothing", "1 allow rules"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatalf("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBypassAllAddressesAcknowledged(t *testing.T) {
	c, err := Parse([]byte("bypass:\n  trusted_cidrs: [0.0.0.0/0, \"::/0\"]\n  allow_all_addresses: true\n"), t.TempDir())
	if err != nil {
		t.Fatalf("acknowledged 0.0.0.0/0 refused: %v", err)
	}
	if !c.Bypass.AllowAllAddresses {
		t.Fatal("allow_all_addresses not read")
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(p, []byte("policy:\n  rego_version: v9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "policy.rego_version") {
		t.Fatalf("error must name the file and key, got %v", err)
	}
	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file error = %v", err)
	}
}

// TestParseAuthorization: the section maps onto the policy rules field by
// field, with the default action and each provider's space-delimited claims.
func TestParseAuthorization(t *testing.T) {
	y := `jwt:
  providers:
    - {name: corp, issuer: https://issuer.example.com, audiences: [api], jwks_uri: "https://issuer.example.com/jwks"}
    - {name: partner, issuer: https://partner.example.com, audiences: [api], jwks_uri: "https://partner.example.com/jwks", space_delimited_claims: [perms]}
authorization:
  rules:
    - name: public
      paths: [/healthz, "/static/*"]
      methods: [GET]
    - name: writes
      action: deny
      paths: ["/orders/{**}"]
      not_methods: [GET]
      claims: [{path: [realm_access, roles], not_values: [writer]}]
      headers: [{name: X-Tenant, values: ["*"]}]
      ports: [8443]
`
	c, err := Parse([]byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rules()
	want := policy.Authorization{Rules: []policy.AuthzRule{
		{Name: "public", Action: policy.ActionAllow, Paths: []string{"/healthz", "/static/*"}, Methods: []string{"GET"}},
		{Name: "writes", Action: policy.ActionDeny, Paths: []string{"/orders/{**}"}, NotMethods: []string{"GET"}, Ports: []int{8443},
			Claims:  []policy.ClaimCondition{{Path: []string{"realm_access", "roles"}, NotValues: []string{"writer"}}},
			Headers: []policy.HeaderCondition{{Name: "X-Tenant", Values: []string{"*"}}}},
	}}
	if !reflect.DeepEqual(r.Authorization, want) {
		t.Fatalf("authorization = %+v\nwant %+v", r.Authorization, want)
	}
	if got := r.SpaceDelimitedClaims; !reflect.DeepEqual(got, map[string][]string{"corp": {"scope", "scp"}, "partner": {"perms"}}) {
		t.Errorf("space_delimited_claims = %v", got)
	}
}
