package deploy

import (
	"fmt"
	"path/filepath"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	sigsyaml "sigs.k8s.io/yaml"
)

// ChartDir is the Helm chart, relative to the repository root.
const ChartDir = "deploy/helm/gatehouse"

// ChartKubeVersion is the Kubernetes version charts are rendered for: the
// kube-apiserver `make test-k8s` runs (scripts/k8s-binaries.sh). Helm's
// library alone would claim v1.20, which the chart's kubeVersion refuses.
const ChartKubeVersion = "v1.36.3"

// ChartRelease is what `helm install NAME CHART -n NAMESPACE -f values`
// renders: the objects of its manifest and its NOTES.txt.
type ChartRelease struct {
	Objects []Object
	Notes   string
	// Hooks are the manifests of hook resources (helm test, ...), kept apart
	// as Helm keeps them.
	Hooks []Object
}

// RenderChart renders the chart under root/ChartDir as `helm install
// --dry-run=client` does (values merged with the chart's defaults, the
// values schema and kubeVersion checked), with values given as YAML.
func RenderChart(root, releaseName, namespace, values string) (*ChartRelease, error) {
	chrt, err := loader.Load(filepath.Join(root, ChartDir))
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", ChartDir, err)
	}
	vals := map[string]any{}
	if err := sigsyaml.UnmarshalStrict([]byte(values), &vals); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	kv, err := chartutil.ParseKubeVersion(ChartKubeVersion)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.KubeVersion = kv
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("helm install %s %s -n %s: %w", releaseName, ChartDir, namespace, err)
	}
	source := fmt.Sprintf("helm %s -n %s", releaseName, namespace)
	out := &ChartRelease{Notes: rel.Info.Notes}
	if out.Objects, err = ParseObjects(source, []byte(rel.Manifest)); err != nil {
		return nil, err
	}
	for _, h := range rel.Hooks {
		objs, err := ParseObjects(source+" hook "+h.Path, []byte(h.Manifest))
		if err != nil {
			return nil, err
		}
		out.Hooks = append(out.Hooks, objs...)
	}
	return out, nil
}
