package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The Gatehouse configuration and policies shipped in deploy/istio, as the
// pod sees them: the config file mounted with subPath, the policies ConfigMap
// mounted as a directory.
const (
	shippedConfig   = "../deploy/istio/base/config/gatehouse.yaml"
	shippedPolicies = "../deploy/istio/base/policies"
	mountedPolicies = "/etc/gatehouse/policies"
)

// mountConfigMap lays out files as the kubelet mounts a ConfigMap volume: the
// data in a timestamped directory, a ..data symlink to it, and one symlink
// per key through ..data.
func mountConfigMap(t *testing.T, srcDir string) string {
	t.Helper()
	dir := t.TempDir()
	stamp := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	if err := os.Mkdir(stamp, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.rego") {
			continue // not in the ConfigMap: the kustomization lists authz.rego only
		}
		b, err := os.ReadFile(filepath.Join(srcDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stamp, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(stamp), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// adaptShippedConfig rewrites only what differs between the cluster and this
// test: the policies directory (the ConfigMap mount) and each provider's
// jwks_uri (a loopback JWKS instead of the issuer's). Everything else is the
// file as shipped; the listen addresses are overridden by flags.
func adaptShippedConfig(t *testing.T, file, policiesDir, jwksURL string) (string, []string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	root := doc.Content[0]
	paths := lookup(t, root, "policy", "paths")
	if len(paths.Content) != 1 || paths.Content[0].Value != mountedPolicies {
		t.Fatalf("%s: policy.paths must be [%s], where the Deployment mounts the policies ConfigMap", file, mountedPolicies)
	}
	paths.Content[0].Value = policiesDir
	var issuers []string
	for _, p := range lookup(t, root, "jwt", "providers").Content {
		uri := lookup(t, p, "jwks_uri")
		if !strings.HasPrefix(uri.Value, "https://") {
			t.Fatalf("%s: the shipped jwks_uri %q should be https", file, uri.Value)
		}
		uri.Value = jwksURL
		issuers = append(issuers, lookup(t, p, "issuer").Value)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), issuers
}

func lookup(t *testing.T, n *yaml.Node, path ...string) *yaml.Node {
	t.Helper()
	for _, key := range path {
		var next *yaml.Node
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			t.Fatalf("key %s missing in the shipped config", strings.Join(path, "."))
		}
		n = next
	}
	return n
}

// TestShippedIstioConfig runs the real server on the configuration and
// policies of deploy/istio (and its client-IP variant), so that the shipped
// files can never drift from what the code accepts, and asks it for
// decisions as the ingress gateway would.
func TestShippedIstioConfig(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "deploy-1")
	jwks := newJWKSServer(t, jwksFile)
	// The gateway's peer is a load balancer at 10.0.0.7 that appended the
	// client 203.0.113.7; the gateway's Envoy appended its peer. With
	// externalTrafficPolicy: Local there is no such balancer and the peer is
	// the client; here it shows which address each variant resolves.
	variants := []struct {
		name, file, clientIP string
	}{
		{"base", shippedConfig, "10.0.0.7"},
		{"client-ip-xff", "../deploy/istio/examples/client-ip/xff/gatehouse.yaml", "203.0.113.7"},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			cfg, issuers := adaptShippedConfig(t, v.file, mountConfigMap(t, shippedPolicies), jwks.URL)
			g := startGatehouse(t, cfg, true)

			valid := mint(t, key, "--iss", issuers[0], "--aud", "httpbin", "--sub", "alice", "--ttl", "10m")
			otherAud := mint(t, key, "--iss", issuers[0], "--aud", "billing", "--sub", "alice", "--ttl", "10m")
			cases := []struct {
				name string
				args []string
				exit int
				want []string
			}{
				{"no token", nil, 1, []string{"401", "token_missing"}},
				{"valid token", []string{"--token", valid, "-H", "x-jwt-sub: mallory"}, 0, []string{"ALLOWED", "x-jwt-sub", "alice"}},
				{"token for another audience", []string{"--token", otherAud}, 1, []string{"401", "bad_audience"}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					args := append([]string{"check", "--addr", g.grpcAddr, "--host", "httpbin.example.com", "--path", "/get",
						"--source-ip", "10.0.0.7:41000", "-H", "x-forwarded-for: 203.0.113.7, 10.0.0.7"}, tc.args...)
					code, out, errOut := ctl(t, args...)
					if code != tc.exit {
						t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.exit, out, errOut)
					}
					if err := contains(out, tc.want...); err != nil {
						t.Fatal(err)
					}
					if strings.Contains(out, "mallory") {
						t.Fatalf("a client-sent identity header reached the upstream:\n%s", out)
					}
				})
			}
			if want := `"client_ip":"` + v.clientIP + `"`; !strings.Contains(g.settledLog(t), want) {
				t.Errorf("the decision log lacks %s:\n%s", want, g.logText())
			}
		})
	}
}

// TestShippedIstioPolicyTests runs the Rego tests shipped beside the policy,
// as docs/istio.md tells operators to before deploying.
func TestShippedIstioPolicyTests(t *testing.T) {
	code, out, errOut := ctl(t, "policy", "test", shippedPolicies)
	if code != 0 {
		t.Fatalf("policy test %s: exit %d\n%s\n%s", shippedPolicies, code, out, errOut)
	}
	if err := contains(out, "3 passed, 0 failed"); err != nil {
		t.Fatal(err)
	}
}
