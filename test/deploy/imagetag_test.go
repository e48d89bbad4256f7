package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// TestImageTagsAgree: the kustomize base runs the image the chart runs by
// default: tag "v" + the chart's appVersion, the version `make release`
// stamps into the binaries and the image of that release.
func TestImageTagsAgree(t *testing.T) {
	root := repoRoot(t)
	chrt, err := loader.Load(filepath.Join(root, ChartDir))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy/istio/base/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	want := "v" + chrt.Metadata.AppVersion
	found := false
	for _, img := range k.Images {
		if img.Name == "gatehouse" {
			found = true
			if img.NewTag != want || img.NewName != "gatehouse-dev/gatehouse" {
				t.Errorf("kustomize base image %s:%s, want gatehouse-dev/gatehouse:%s (the chart's default)", img.NewName, img.NewTag, want)
			}
		}
	}
	if !found {
		t.Fatal("the kustomize base sets no image for gatehouse")
	}
}
