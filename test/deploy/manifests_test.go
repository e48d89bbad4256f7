package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// fileKind says how a YAML file under deploy/ is checked.
type fileKind int

const (
	kindObjects      fileKind = iota // Kubernetes, Istio, Gateway API or kustomize objects
	kindGatehouse                    // a Gatehouse configuration file
	kindIstiodValues                 // Helm values for the istiod chart
	kindEnvoy                        // an Envoy bootstrap
	// kindPrometheusRules are Prometheus alerting rules (deploy/observability),
	// loaded with Prometheus's own rule loader and their metric names checked
	// against a real scrape by test/observability.
	kindPrometheusRules
	// kindHelmChart is a file of the Helm chart (deploy/helm): its templates
	// are rendered and their objects decoded by helm_test.go; Chart.yaml is
	// loaded with Helm's own loader here.
	kindHelmChart
)

// classify returns how a file is checked. Names are the contract: a new kind
// of file must be added here, so nothing under deploy/ goes unchecked.
func classify(rel string) fileKind {
	switch base := filepath.Base(rel); {
	case strings.HasPrefix(rel, "deploy/helm/"):
		return kindHelmChart
	case base == "gatehouse.yaml":
		return kindGatehouse
	case base == "istiod-values.yaml":
		return kindIstiodValues
	case strings.HasPrefix(rel, "deploy/envoy/"):
		return kindEnvoy
	case strings.HasPrefix(rel, "deploy/observability/"):
		return kindPrometheusRules
	}
	return kindObjects
}

// yamlFiles lists every .yaml/.yml file under deploy/, relative to root.
func yamlFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) < 20 {
		t.Fatalf("found only %d YAML files under deploy/: %v", len(files), files)
	}
	return files
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestEveryFileDecodesStrictly: every YAML file parses (duplicate keys are
// errors) and every object in it decodes strictly into its type.
func TestEveryFileDecodesStrictly(t *testing.T) {
	root := repoRoot(t)
	for _, rel := range yamlFiles(t, root) {
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, rel))
			if err != nil {
				t.Fatal(err)
			}
			if classify(rel) == kindHelmChart && strings.Contains(rel, "/templates/") {
				return // Go templates, not YAML until rendered: TestChartRendersStrictly
			}
			docs, err := SplitYAML(data)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			if len(docs) == 0 {
				t.Fatalf("%s: no YAML document", rel)
			}
			switch classify(rel) {
			case kindGatehouse:
				if _, err := ParseGatehouseConfig(data); err != nil {
					t.Fatalf("%s: %v", rel, err)
				}
			case kindIstiodValues:
				if _, err := DecodeIstiodValues(rel, data); err != nil {
					t.Fatal(err)
				}
			case kindEnvoy:
				if _, err := DecodeEnvoyBootstrap(data); err != nil {
					t.Fatalf("%s: %v", rel, err)
				}
			case kindHelmChart:
				if filepath.Base(rel) == "Chart.yaml" {
					md, err := chartutil.LoadChartfile(filepath.Join(root, rel))
					if err != nil {
						t.Fatalf("%s: %v", rel, err)
					}
					if err := md.Validate(); err != nil {
						t.Fatalf("%s: %v", rel, err)
					}
				}
				// values.yaml: parsed above (duplicate keys are errors);
				// what it renders is checked by helm_test.go.
			case kindPrometheusRules:
				// Parsed above (duplicate keys are errors); the rules
				// themselves are checked by test/observability.
			case kindObjects:
				objs, err := ParseObjects(rel, data)
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range objs {
					if _, err := Decode(o); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

// TestStrictDecodingRejectsMistakes proves the decoders above can fail: each
// manifest carries one mistake people make.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown Deployment field", `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replica: 2
`, "unknown field"},
		{"wrong type in a Service", `apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{name: grpc, port: "nine"}]
`, "port"},
		{"duplicate key", `apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {a: "1", a: "2"}
`, "a"},
		{"unknown AuthorizationPolicy field", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: x}
spec:
  action: CUSTOM
  providers: {name: gatehouse}
`, "providers"},
		{"bad enum in AuthorizationPolicy", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: x}
spec:
  action: EXTERNAL
`, "EXTERNAL"},
		{"IstioOperator with an unknown meshConfig key", `apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: x}
spec:
  meshConfig:
    extensionProviders:
      - name: gatehouse
        envoyExtAuthzGrpc: {service: a, port: 9191, failClosed: true}
`, "failClosed"},
		{"unknown HTTPRoute field", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: x}
spec:
  parentRef: {name: public}
`, "unknown field"},
		{"unknown ServiceMonitor field", `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  endpoints: [{port: http-ops, metricsPath: /metrics}]
`, "metricsPath"},
		{"Prometheus Operator kind without a decoder", `apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: x}
`, "no decoder"},
		{"unknown kind", `apiVersion: v1
kind: Servic
metadata: {name: x}
`, "Servic"},
		{"unknown metadata field in an Istio object", `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: x, label: {a: b}}
spec: {}
`, "label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := ParseObjects("inline.yaml", []byte(tc.yaml))
			if err == nil {
				for _, o := range objs {
					if _, err = Decode(o); err != nil {
						break
					}
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// kustomizations lists every directory under deploy/ holding a kustomization.
func kustomizations(t *testing.T, root string) []string {
	t.Helper()
	var dirs []string
	for _, rel := range yamlFiles(t, root) {
		if filepath.Base(rel) == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(rel))
		}
	}
	return dirs
}

// Build renders a kustomization with the kustomize API, as `kustomize build`
// (and `kubectl apply -k`) does, and returns its objects.
func Build(root, rel string) ([]Object, []byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, rel))
	if err != nil {
		return nil, nil, err
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, nil, err
	}
	objs, err := ParseObjects("kustomize build "+rel, out)
	return objs, out, err
}

// TestKustomizeBuild: every kustomization renders and every rendered object
// decodes strictly.
func TestKustomizeBuild(t *testing.T) {
	root := repoRoot(t)
	dirs := kustomizations(t, root)
	for _, want := range []string{"deploy/istio", "deploy/istio/authz/ingressgateway", "deploy/istio/authz/gateway-api",
		"deploy/istio/examples/httpbin/istio-gateway", "deploy/istio/examples/httpbin/gateway-api", "deploy/istio/examples/client-ip/xff"} {
		if !contains(dirs, want) {
			t.Errorf("kustomization %s is missing (found %v)", want, dirs)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs, _, err := Build(root, dir)
			if err != nil {
				t.Fatalf("kustomize build %s: %v", dir, err)
			}
			if len(objs) == 0 {
				t.Fatalf("kustomize build %s: no objects", dir)
			}
			for _, o := range objs {
				if _, err := Decode(o); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
