package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gatehouse-dev/gatehouse/tools/image/gobuild"
	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
)

// commands are the binaries every build ships, by package under the repository.
var commands = []string{"gatehouse", "gatehousectl"}

// entrypoint is the command the image runs.
const entrypoint = "gatehouse"

// buildOptions is one build's identity and inputs, shared by the image and
// the release.
type buildOptions struct {
	repo      string // the repository root
	version   string
	revision  string
	source    string
	ldflags   string
	created   time.Time
	platforms []string // os/arch
	work      string   // where binaries go; "" for <out>.work
}

// binaryName is a command's file name in the release and the work dir.
func binaryName(cmd, version, goos, goarch string) string {
	return fmt.Sprintf("%s_%s_%s_%s", cmd, version, goos, goarch)
}

// compile builds every command for goos/goarch into dir and returns them by
// command name.
func compile(ctx context.Context, o buildOptions, dir, goos, goarch string) (map[string]string, error) {
	bins := map[string]string{}
	for _, c := range commands {
		out := filepath.Join(dir, binaryName(c, o.version, goos, goarch))
		err := gobuild.Build(ctx, gobuild.Options{Go: os.Getenv("GO"), Dir: o.repo, LDFlags: o.ldflags},
			gobuild.Target{Package: "./cmd/" + c, OS: goos, Arch: goarch, Out: out})
		if err != nil {
			return nil, err
		}
		bins[c] = out
	}
	return bins, nil
}

// imageIndex assembles the image index from the binaries of each of o's
// platforms: those in have (by "os/arch", from compile), the others
// cross-compiled into work.
func imageIndex(ctx context.Context, o buildOptions, have map[string]map[string]string, work string) (v1.ImageIndex, error) {
	var platforms []oci.Platform
	for _, p := range o.platforms {
		goos, goarch, err := gobuild.ParsePlatform(p)
		if err != nil {
			return nil, err
		}
		bins := have[p]
		if bins == nil {
			if bins, err = compile(ctx, o, work, goos, goarch); err != nil {
				return nil, err
			}
		}
		platforms = append(platforms, oci.Platform{OS: goos, Arch: goarch, Variant: variant(goarch), Binaries: bins})
	}
	return oci.Build(oci.Options{
		Platforms:  platforms,
		Entrypoint: entrypoint,
		Source:     o.source,
		Revision:   o.revision,
		Version:    o.version,
		Created:    o.created,
	})
}

// variant is the OCI platform variant Go's default baseline targets.
func variant(goarch string) string {
	if goarch == "arm64" {
		return "v8"
	}
	return ""
}

// buildImage writes the image's OCI layout to out and returns the index digest.
func buildImage(ctx context.Context, o buildOptions, out string) (v1.Hash, error) {
	if out == "" {
		return v1.Hash{}, fmt.Errorf("--out is required")
	}
	work := o.work
	if work == "" {
		work = out + ".work"
	}
	// Last build's binaries (another version's names) would only pile up.
	if err := os.RemoveAll(work); err != nil {
		return v1.Hash{}, err
	}
	idx, err := imageIndex(ctx, o, nil, work)
	if err != nil {
		return v1.Hash{}, err
	}
	return oci.WriteLayout(out, idx, o.version)
}
