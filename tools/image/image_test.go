package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
)

// The identity every test build carries; the labels are checked against it.
const (
	testVersion  = "v0.0.0-1-g0123456" // git describe, one commit past a tag
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	testCreated  = 1700000000 // 2023-11-14T22:13:20Z
)

// testOptions are `make image`'s options for the test identity. `make
// test-image` passes the Makefile's LDFLAGS, so the binaries come from the
// build cache `make image` filled.
func testOptions(t testing.TB) buildOptions {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ldflags := os.Getenv("GATEHOUSE_LDFLAGS")
	if ldflags == "" {
		ldflags = "-s -w -X github.com/gatehouse-dev/gatehouse/internal/version.version=" + testVersion +
			" -X github.com/gatehouse-dev/gatehouse/internal/version.revision=" + testRevision
	}
	return buildOptions{
		repo: repo, version: testVersion, revision: testRevision, source: "https://github.com/gatehouse-dev/gatehouse",
		ldflags: ldflags, created: time.Unix(testCreated, 0).UTC(), platforms: []string{"linux/amd64", "linux/arm64"},
	}
}

// built is the image the tests share, built once.
var built struct {
	once   sync.Once
	dir    string
	digest v1.Hash
	err    error
}

// testImage builds the image (once per test binary) and returns its layout
// directory and index digest.
func testImage(t *testing.T) (string, v1.Hash) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "gatehouse-image-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = filepath.Join(dir, "image")
		built.digest, built.err = buildImage(context.Background(), testOptions(t), built.dir)
	})
	if built.err != nil {
		t.Fatalf("building the image: %v", built.err)
	}
	return built.dir, built.digest
}

// TestReproducible builds the image a second time, into another directory
// from freshly written binaries, and wants the same digest and the same bytes
// in every file of the layout and of the OCI archive.
func TestReproducible(t *testing.T) {
	first, digest := testImage(t)
	second := filepath.Join(t.TempDir(), "image")
	digest2, err := buildImage(context.Background(), testOptions(t), second)
	if err != nil {
		t.Fatal(err)
	}
	if digest != digest2 {
		// Tell go build's differences from the image's.
		bins1, bins2 := treeHashes(t, first+".work"), treeHashes(t, second+".work")
		for n, h := range bins1 {
			if bins2[n] != h {
				t.Errorf("go build wrote two different %s (did the sources change during the test?)", n)
			}
		}
		t.Fatalf("two builds of one commit: index digests %s and %s", digest, digest2)
	}
	a, b := treeHashes(t, first), treeHashes(t, second)
	if len(a) != len(b) {
		t.Errorf("layouts differ in their files: %d and %d", len(a), len(b))
	}
	for p, h := range a {
		if b[p] != h {
			t.Errorf("layout file %s differs between the builds", p)
		}
	}
	var arch1, arch2 bytes.Buffer
	if err := oci.WriteArchive(&arch1, first, time.Unix(testCreated, 0)); err != nil {
		t.Fatal(err)
	}
	if err := oci.WriteArchive(&arch2, second, time.Unix(testCreated, 0)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(arch1.Bytes(), arch2.Bytes()) {
		t.Error("the OCI archives of two builds differ")
	}

	// The creation time is an input: another commit time, another digest (so
	// the equality above is not the digest ignoring its inputs).
	o := testOptions(t)
	o.created = o.created.Add(time.Second)
	third, err := buildImage(context.Background(), o, filepath.Join(t.TempDir(), "image"))
	if err != nil {
		t.Fatal(err)
	}
	if third == digest {
		t.Errorf("a different creation time gave the same digest %s", digest)
	}
}

// treeHashes maps every file under dir to its SHA-256.
func treeHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRegistryRoundTrip pushes the index to an in-process registry on
// loopback, pulls it back by digest and compares every manifest and layer.
func TestRegistryRoundTrip(t *testing.T) {
	dir, digest := testImage(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	tag, err := name.NewTag(host+"/gatehouse:"+testVersion, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := oci.Push(context.Background(), dir, tag)
	if err != nil {
		t.Fatal(err)
	}
	if pushed != digest {
		t.Fatalf("pushed %s, built %s", pushed, digest)
	}
	byDigest, err := name.NewDigest(host+"/gatehouse@"+digest.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	remoteIdx, err := remote.Index(byDigest)
	if err != nil {
		t.Fatal(err)
	}
	localIdx, err := oci.ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	lraw, _ := localIdx.RawManifest()
	rraw, err := remoteIdx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lraw, rraw) {
		t.Fatalf("pulled index differs:\nlocal  %s\nremote %s", lraw, rraw)
	}
	// The tag points at the same index.
	desc, err := remote.Head(tag)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest {
		t.Errorf("tag %s is %s, want %s", tag, desc.Digest, digest)
	}

	m, _ := localIdx.IndexManifest()
	if len(m.Manifests) != 2 {
		t.Fatalf("index has %d manifests, want 2 (amd64, arm64)", len(m.Manifests))
	}
	for _, d := range m.Manifests {
		local, err := localIdx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remoteIdx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ll, _ := local.Layers()
		rl, err := pulled.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(ll) != len(rl) {
			t.Fatalf("%s: %d layers pulled, %d built", d.Platform, len(rl), len(ll))
		}
		for i := range ll {
			lh, _ := ll[i].Digest()
			// Reading the pulled blob whole checks its content against its digest.
			rc, err := rl[i].Compressed()
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil {
				t.Fatalf("%s layer %d: %v", d.Platform, i, err)
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != lh.String() {
				t.Errorf("%s layer %d: pulled %s, built %s", d.Platform, i, got, lh)
			}
		}
	}
}

// TestImageContents reads each platform's image: its configuration, labels,
// annotations and files.
func TestImageContents(t *testing.T) {
	dir, _ := testImage(t)
	idx, err := oci.ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		oci.AnnotationSource:   "https://github.com/gatehouse-dev/gatehouse",
		oci.AnnotationRevision: testRevision,
		oci.AnnotationVersion:  testVersion,
		oci.AnnotationCreated:  "2023-11-14T22:13:20Z",
	}
	im, _ := idx.IndexManifest()
	checkLabels(t, "index annotations", im.Annotations, wantLabels)

	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, d := range im.Manifests {
		t.Run(d.Platform.String(), func(t *testing.T) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != d.Platform.Architecture {
				t.Errorf("config platform %s/%s, index says %s", cf.OS, cf.Architecture, d.Platform)
			}
			c := cf.Config
			if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/gatehouse" || len(c.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/gatehouse] and none", c.Entrypoint, c.Cmd)
			}
			if c.User != "65532:65532" || c.WorkingDir != "/" {
				t.Errorf("user %q workdir %q, want 65532:65532 and /", c.User, c.WorkingDir)
			}
			if !cf.Created.Equal(time.Unix(testCreated, 0)) {
				t.Errorf("created %s, want the commit time", cf.Created)
			}
			checkLabels(t, "config labels", c.Labels, wantLabels)
			mf, _ := img.Manifest()
			checkLabels(t, "manifest annotations", mf.Annotations, wantLabels)

			files := unpackToMap(t, img)
			for _, bin := range []string{"usr/local/bin/gatehouse", "usr/local/bin/gatehousectl"} {
				f, ok := files[bin]
				if !ok {
					t.Fatalf("%s missing", bin)
				}
				if f.hdr.Mode != 0o755 || f.hdr.Uid != 0 {
					t.Errorf("%s: mode %o uid %d, want 755 root", bin, f.hdr.Mode, f.hdr.Uid)
				}
				checkStaticELF(t, bin, f.body, machines[d.Platform.Architecture], d.Platform.Architecture)
			}
			pool := x509.NewCertPool()
			ca := files["etc/ssl/certs/ca-certificates.crt"].body
			if !pool.AppendCertsFromPEM(ca) {
				t.Fatal("the CA bundle does not parse")
			}
			if n := bytes.Count(ca, []byte("-----BEGIN CERTIFICATE-----")); n <= 100 {
				t.Errorf("the CA bundle has %d certificates, want > 100", n)
			}
			if !strings.Contains(string(files["etc/passwd"].body), "\nnonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd lacks nonroot 65532:\n%s", files["etc/passwd"].body)
			}
			if !strings.Contains(string(files["etc/group"].body), "\nnonroot:x:65532:") {
				t.Errorf("/etc/group lacks nonroot 65532:\n%s", files["etc/group"].body)
			}
			if tmp, ok := files["tmp"]; !ok || tmp.hdr.Typeflag != tar.TypeDir || tmp.hdr.Mode != 0o1777 {
				t.Errorf("/tmp: want a directory with mode 1777, got %+v", tmp.hdr)
			}
			for n, f := range files {
				if !f.hdr.ModTime.Equal(time.Unix(testCreated, 0)) {
					t.Errorf("%s: mtime %s, want the commit time", n, f.hdr.ModTime)
				}
				if f.hdr.Uname != "" || f.hdr.Gname != "" {
					t.Errorf("%s: owner names %q/%q, want numeric only", n, f.hdr.Uname, f.hdr.Gname)
				}
			}
		})
	}
}

func checkLabels(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
}

// checkStaticELF wants an ELF for machine with no interpreter and no shared
// library, built by Go with cgo off and -trimpath for goarch.
func checkStaticELF(t *testing.T, name string, body []byte, machine elf.Machine, goarch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %s, want %s", name, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has a PT_INTERP (dynamically linked)", name)
		}
	}
	libs, err := f.DynString(elf.DT_NEEDED) // nil, nil without a dynamic section
	if err != nil {
		t.Errorf("%s: dynamic section: %v", name, err)
	}
	if len(libs) != 0 {
		t.Errorf("%s: needs shared libraries %q", name, libs)
	}
	bi, err := buildinfo.Read(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: build info: %v", name, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARCH": goarch} {
		if settings[k] != v {
			t.Errorf("%s: build setting %s = %q, want %q", name, k, settings[k], v)
		}
	}
}

// entry is one file of an image's flattened filesystem.
type entry struct {
	hdr  *tar.Header
	body []byte
}

// unpackToMap flattens img's layers into memory, by path without the
// leading slash and without a trailing one.
func unpackToMap(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(hdr.Name, "/")] = entry{hdr: hdr, body: body}
	}
}
