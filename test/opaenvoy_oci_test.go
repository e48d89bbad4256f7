package test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pushBundle pushes a bundle to an OCI registry as OPA's OCI downloader
// expects it: an OCI manifest with the bundle as its gzip tar layer.
func pushBundle(t *testing.T, ref string, bundleTarGz []byte) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(bundleTarGz, types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

// TestOPAEnvoyOCIBundle: a bundle pushed to an OCI registry on loopback
// (go-containerregistry's registry) is pulled by OPA's OCI downloader
// (services[].type: oci), activated and decides; a new tag pushed over it
// replaces it.
func TestOPAEnvoyOCIBundle(t *testing.T) {
	reg := httptest.NewServer(registry.New())
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/policies/authz:latest"
	spec := func(rev string, allowed ...string) bundleSpec {
		return bundleSpec{revision: rev, roots: []string{"envoy", "users"},
			modules: map[string]string{"/envoy/authz.rego": bundlePolicy},
			data:    map[string]any{"users": map[string]any{"allowed": allowed}}}
	}
	pushBundle(t, ref, spec("o1", "a").build(t))

	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `services:
  - name: registry
    url: %s
    type: oci
bundles:
  authz:
    service: registry
    resource: %s
    polling: {min_delay_seconds: 1, max_delay_seconds: 1}
persistence_directory: %s
plugins:
  envoy_ext_authz_grpc: {}
`, reg.URL, ref, filepath.Join(dir, "persist")), 0o644); err != nil {
		t.Fatal(err)
	}
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0")
	eventually(t, 30*time.Second, "ready with the OCI bundle", func() bool {
		code, _ := g.get("/health?bundles")
		return code == 200
	})
	c := g.client(t)
	check := func(path string) decision {
		return decide(t, c, envoyRequest("10.1.2.3", "api.example.com", path, nil))
	}
	if d := check("/a"); !d.allowed {
		t.Errorf("/a with o1: %+v, want allowed\n%s", d, g.logText())
	}
	if d := check("/b"); d.allowed {
		t.Errorf("/b with o1: %+v, want denied", d)
	}
	pushBundle(t, ref, spec("o2", "a", "b").build(t))
	eventually(t, 30*time.Second, "the o2 tag in effect", func() bool { return check("/b").allowed })
}
