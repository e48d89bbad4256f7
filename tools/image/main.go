// Command image builds Gatehouse's release artifacts without a Docker daemon
// and without pulling a base image, in a Go module of its own so that the
// server's go.mod stays lean:
//
//	image   cross-compile the binaries and write the container image (an OCI
//	        image layout of an index over linux/amd64 and linux/arm64)
//	push    push that layout's image index to a registry
//	release binaries for linux and darwin, SHA256SUMS, SBOMs, the image as an
//	        OCI archive and the packaged Helm chart, under one directory
//
// `make image`, `make image-push` and `make release` run it with the
// Makefile's VERSION, REVISION, LDFLAGS and SOURCE_DATE_EPOCH; see
// docs/releasing.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gatehouse-dev/gatehouse/tools/image/oci"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: image image|push|release [flags] (see docs/releasing.md)")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var b buildFlags
	switch cmd {
	case "image":
		b.register(fs)
		out := fs.String("out", "", "the OCI layout directory to write (replaced)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		o, err := b.options()
		if err != nil {
			return err
		}
		start := time.Now()
		digest, err := buildImage(ctx, o, *out)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "image: %s written in %s\n", *out, time.Since(start).Round(100*time.Millisecond))
		fmt.Fprintf(stdout, "%s\n", digest)
		return nil
	case "push":
		dir := fs.String("layout", "", "the OCI layout `make image` wrote")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: image push --layout DIR REGISTRY/REPOSITORY:TAG")
		}
		ref, err := name.ParseReference(fs.Arg(0))
		if err != nil {
			return err
		}
		digest, err := oci.Push(ctx, *dir, ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n", ref.Context(), digest)
		return nil
	case "release":
		b.register(fs)
		out := fs.String("out", "", "the release directory to write (replaced)")
		chart := fs.String("chart", "deploy/helm/gatehouse", "the Helm chart directory, relative to --repo; skipped when it has no Chart.yaml")
		if err := fs.Parse(args); err != nil {
			return err
		}
		o, err := b.options()
		if err != nil {
			return err
		}
		return release(ctx, o, releaseOptions{out: *out, chartDir: *chart}, stdout)
	default:
		return fmt.Errorf("unknown command %q: want image, push or release", cmd)
	}
}

// buildFlags are the inputs every artifact shares.
type buildFlags struct {
	repo, version, revision, created, source, ldflags, platforms, work string
}

func (b *buildFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.repo, "repo", "../..", "the repository root")
	fs.StringVar(&b.version, "version", "", "the release version (Makefile: VERSION)")
	fs.StringVar(&b.revision, "revision", "", "the VCS revision (Makefile: REVISION)")
	fs.StringVar(&b.created, "created", "", "creation time in Unix seconds: the commit's time (Makefile: SOURCE_DATE_EPOCH)")
	fs.StringVar(&b.source, "source", "https://github.com/gatehouse-dev/gatehouse", "the source repository's URL (org.opencontainers.image.source)")
	fs.StringVar(&b.ldflags, "ldflags", "", "go build -ldflags (Makefile: LDFLAGS)")
	fs.StringVar(&b.platforms, "platforms", "linux/amd64,linux/arm64", "the image's platforms, comma-separated")
	fs.StringVar(&b.work, "work", "", "where the cross-compiled binaries go (default: <out>.work)")
}

func (b *buildFlags) options() (buildOptions, error) {
	if b.version == "" {
		return buildOptions{}, errors.New("--version is required")
	}
	secs, err := strconv.ParseInt(b.created, 10, 64)
	if err != nil {
		return buildOptions{}, fmt.Errorf("--created %q: want Unix seconds (git log -1 --format=%%ct): %w", b.created, err)
	}
	return buildOptions{
		repo: b.repo, version: b.version, revision: b.revision, source: b.source, ldflags: b.ldflags,
		created: time.Unix(secs, 0).UTC(), platforms: strings.Split(b.platforms, ","), work: b.work,
	}, nil
}
