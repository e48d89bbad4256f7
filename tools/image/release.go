package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/gatehouse-dev/gatehouse/tools/image/chart"
	"github.com/gatehouse-dev/gatehouse/tools/image/gobuild"
	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
	"github.com/gatehouse-dev/gatehouse/tools/image/sbom"
)

// releaseTargets are the platforms binaries are released for.
var releaseTargets = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"}

// sumsFile lists every other artifact's SHA-256, in `sha256sum -c` format.
const sumsFile = "SHA256SUMS"

type releaseOptions struct {
	out string
	// chartDir is the Helm chart, relative to the repository; skipped when
	// it has no Chart.yaml.
	chartDir string
	// targets overrides releaseTargets (tests build fewer).
	targets []string
}

// tagVersion is a version `git describe` prints on a tagged commit of a
// clean tree: v1.2.3 or v1.2.3-rc.1, not v1.2.3-4-gabcdef0 or ...-dirty.
var (
	tagVersion  = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$`)
	describeTag = regexp.MustCompile(`-\d+-g[0-9a-f]{7,}$|-dirty$`)
)

// isTagged reports whether version names a release rather than a snapshot.
func isTagged(version string) bool {
	return tagVersion.MatchString(version) && !describeTag.MatchString(version)
}

// release writes every artifact of one version into r.out (replaced) and
// SHA256SUMS over them, and prints what it wrote.
func release(ctx context.Context, o buildOptions, r releaseOptions, stdout io.Writer) error {
	if r.out == "" {
		return fmt.Errorf("--out is required")
	}
	tagged := isTagged(o.version)
	if !tagged {
		fmt.Fprintf(os.Stderr, "release: %s is not a tagged clean tree: a snapshot, not a release\n", o.version)
	}
	if err := os.RemoveAll(r.out); err != nil {
		return err
	}
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return err
	}
	targets := r.targets
	if targets == nil {
		targets = releaseTargets
	}

	// Binaries and their SBOMs.
	built := map[string]map[string]string{}
	for _, target := range targets {
		goos, goarch, err := gobuild.ParsePlatform(target)
		if err != nil {
			return err
		}
		bins, err := compile(ctx, o, r.out, goos, goarch)
		if err != nil {
			return err
		}
		built[target] = bins
		for _, bin := range bins {
			if err := writeSBOM(bin, o); err != nil {
				return err
			}
		}
	}

	// The image, from the same linux binaries, as an OCI archive.
	work, err := os.MkdirTemp("", "gatehouse-release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	idx, err := imageIndex(ctx, o, built, filepath.Join(work, "bin"))
	if err != nil {
		return err
	}
	layoutDir := filepath.Join(work, "image")
	digest, err := oci.WriteLayout(layoutDir, idx, o.version)
	if err != nil {
		return err
	}
	archive := filepath.Join(r.out, fmt.Sprintf("gatehouse_%s_image.oci.tar", o.version))
	if err := writeFileWith(archive, func(w io.Writer) error { return oci.WriteArchive(w, layoutDir, o.created) }); err != nil {
		return err
	}

	// The Helm chart, when the repository has one.
	chartDir := filepath.Join(o.repo, r.chartDir)
	if _, err := os.Stat(filepath.Join(chartDir, "Chart.yaml")); err == nil {
		m, tgz, err := chart.Package(chartDir, o.created)
		if err != nil {
			return err
		}
		if want := strings.TrimPrefix(o.version, "v"); tagged && m.AppVersion != want {
			return fmt.Errorf("%s/Chart.yaml: appVersion %q, releasing %s: set appVersion to %q (and bump version) before tagging", r.chartDir, m.AppVersion, o.version, want)
		}
		if err := os.WriteFile(filepath.Join(r.out, m.FileName()), tgz, 0o644); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(os.Stderr, "release: no %s/Chart.yaml: no chart packaged\n", r.chartDir)
	}

	if err := writeSums(r.out); err != nil {
		return err
	}
	sums, err := os.ReadFile(filepath.Join(r.out, sumsFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s%s written in %s\nimage index %s\n", sums, sumsFile, r.out, digest)
	return nil
}

// writeSBOM writes bin's CycloneDX SBOM beside it as <bin>.cdx.json.
func writeSBOM(bin string, o buildOptions) error {
	bom, err := sbom.Generate(bin, sbom.Options{
		Name: filepath.Base(bin), Version: o.version, Created: o.created, Tool: "gatehouse tools/image",
	})
	if err != nil {
		return err
	}
	return writeFileWith(bin+".cdx.json", func(w io.Writer) error { return sbom.Write(w, bom) })
}

// writeSums writes SHA256SUMS over every file in dir, sorted by name.
func writeSums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != sumsFile {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), n)
	}
	return os.WriteFile(filepath.Join(dir, sumsFile), []byte(b.String()), 0o644)
}

// writeFileWith creates path and fills it with write.
func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
