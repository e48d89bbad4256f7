package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/gatehouse-dev/gatehouse/tools/image/chart"
	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
)

// TestRelease runs the release builder for linux only (darwin adds nothing
// the builder does differently, and minutes of compiling): every artifact is
// in SHA256SUMS with its hash, the image archive holds the very index `make
// image` builds, and the SBOM lists the modules linked in with their versions.
func TestRelease(t *testing.T) {
	_, imageDigest := testImage(t)
	out := filepath.Join(t.TempDir(), "release")
	o := testOptions(t)
	var stdout bytes.Buffer
	err := release(context.Background(), o, releaseOptions{out: out, chartDir: "deploy/helm/gatehouse", targets: []string{"linux/amd64", "linux/arm64"}}, &stdout)
	if err != nil {
		t.Fatal(err)
	}

	// SHA256SUMS: every other file, each hash right.
	listed := map[string]bool{}
	sums, err := os.ReadFile(filepath.Join(out, sumsFile))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		want, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want '<hex>  <name>'", sc.Text())
		}
		if got := fileHash(t, filepath.Join(out, name)); got != want {
			t.Errorf("%s: SHA256SUMS says %s, the file hashes to %s", name, want, got)
		}
		listed[name] = true
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if e.Name() != sumsFile && !listed[e.Name()] {
			t.Errorf("%s is not in SHA256SUMS", e.Name())
		}
	}
	for _, want := range []string{
		"gatehouse_v0.0.0-1-g0123456_linux_amd64", "gatehouse_v0.0.0-1-g0123456_linux_arm64",
		"gatehousectl_v0.0.0-1-g0123456_linux_amd64", "gatehousectl_v0.0.0-1-g0123456_linux_arm64",
		"gatehouse_v0.0.0-1-g0123456_linux_amd64.cdx.json", "gatehousectl_v0.0.0-1-g0123456_linux_arm64.cdx.json",
		"gatehouse_v0.0.0-1-g0123456_image.oci.tar",
	} {
		if !listed[want] {
			t.Errorf("the release lacks %s", want)
		}
	}
	if !strings.Contains(stdout.String(), "image index "+imageDigest.String()) {
		t.Errorf("the release did not print the image digest %s:\n%s", imageDigest, stdout.String())
	}

	// The archive is an OCI layout of the same index as `make image`.
	layoutDir := filepath.Join(t.TempDir(), "layout")
	untar(t, filepath.Join(out, "gatehouse_v0.0.0-1-g0123456_image.oci.tar"), layoutDir)
	idx, err := oci.ReadLayout(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); d != imageDigest {
		t.Errorf("the release's image is %s, make image's %s", d, imageDigest)
	}

	// The SBOM of the server.
	bin := filepath.Join(out, "gatehouse_v0.0.0-1-g0123456_linux_amd64")
	f, err := os.Open(bin + ".cdx.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatal(err)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 || bom.Metadata == nil || bom.Metadata.Component == nil {
		t.Fatalf("SBOM: spec %s, metadata %+v", bom.SpecVersion, bom.Metadata)
	}
	mc := bom.Metadata.Component
	if mc.Name != "github.com/gatehouse-dev/gatehouse" || mc.Version != testVersion {
		t.Errorf("SBOM describes %s %s", mc.Name, mc.Version)
	}
	if mc.Hashes == nil || (*mc.Hashes)[0].Value != fileHash(t, bin) {
		t.Errorf("SBOM's hash of the binary is not the binary's: %+v", mc.Hashes)
	}
	versions := map[string]string{}
	for _, c := range *bom.Components {
		versions[c.Name] = c.Version
	}
	for _, mod := range []string{"github.com/open-policy-agent/opa", "google.golang.org/grpc", "github.com/envoyproxy/go-control-plane/envoy"} {
		want := requiredVersion(t, mod)
		if versions[mod] != want {
			t.Errorf("SBOM: %s at %q, go.mod requires %s", mod, versions[mod], want)
		}
	}
	if versions["std"] == "" {
		t.Error("SBOM lacks the Go standard library")
	}
}

// requiredVersion is the version of mod the server's go.mod requires.
func requiredVersion(t *testing.T, mod string) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(mod) + `\s+(v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("go.mod does not require %s", mod)
	}
	return string(m[1])
}

func TestIsTagged(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"v1.2.3", true},
		{"v1.2.3-rc.1", true},
		{"v1.2.3-4-gabcdef0", false},
		{"v1.2.3-dirty", false},
		{"v1.2.3-4-gabcdef0-dirty", false},
		{"abcdef0", false},
		{"dev", false},
	} {
		if got := isTagged(tc.version); got != tc.want {
			t.Errorf("isTagged(%q) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

// TestShippedChart packages the repository's chart (when it has one) and
// wants helm's layout: <name>-<version>.tgz, every file under <name>/.
func TestShippedChart(t *testing.T) {
	dir := "../../deploy/helm/gatehouse"
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		t.Skipf("no chart at %s", dir)
	}
	m, tgz, err := chart.Package(dir, testTime())
	if err != nil {
		t.Fatal(err)
	}
	if m.FileName() != m.Name+"-"+m.Version+".tgz" || m.Name != "gatehouse" {
		t.Errorf("package name %s", m.FileName())
	}
	names := tgzNames(t, tgz)
	if len(names) == 0 {
		t.Fatal("empty chart package")
	}
	found := false
	for _, n := range names {
		if !strings.HasPrefix(n, m.Name+"/") {
			t.Errorf("%s is not under %s/", n, m.Name)
		}
		found = found || n == m.Name+"/Chart.yaml"
	}
	if !found {
		t.Errorf("no %s/Chart.yaml in %q", m.Name, names)
	}
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// untar unpacks the tar at file into dir (an OCI archive: files and dirs).
func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func testTime() time.Time { return time.Unix(testCreated, 0) }

// tgzNames lists a .tgz's entries in order.
func tgzNames(t *testing.T, tgz []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}
