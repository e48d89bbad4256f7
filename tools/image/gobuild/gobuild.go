// Package gobuild cross-compiles Gatehouse's commands the one way every
// artifact is built: static (CGO_ENABLED=0), -trimpath, the Makefile's
// -ldflags, and the GOOS/GOARCH baseline pinned so that the host's
// environment cannot change the bytes.
package gobuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Target is one binary to build.
type Target struct {
	// Package is the import path or a ./relative path within Dir.
	Package string
	OS      string
	Arch    string
	// Out is the file to write.
	Out string
}

// Options are shared by every target of one run.
type Options struct {
	// Go is the go command (the Makefile's $(GO)); "go" when empty.
	Go string
	// Dir is the module root to build in (the repository root).
	Dir string
	// LDFlags is passed as -ldflags.
	LDFlags string
}

// Build compiles t. Its output goes to the caller's stderr.
func Build(ctx context.Context, o Options, t Target) error {
	goCmd := o.Go
	if goCmd == "" {
		goCmd = "go"
	}
	if err := os.MkdirAll(filepath.Dir(t.Out), 0o755); err != nil {
		return err
	}
	out, err := filepath.Abs(t.Out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags", o.LDFlags, "-o", out, t.Package)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS="+t.OS, "GOARCH="+t.Arch,
		// The instruction set baselines: the defaults, named so that a
		// GOAMD64=v3 in someone's shell does not change the release.
		"GOAMD64=v1", "GOARM64=v8.0",
		// A go.work in a parent directory must not swap modules in.
		"GOWORK=off",
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %w", t.Package, t.OS, t.Arch, err)
	}
	return nil
}

// ParsePlatform splits "linux/arm64" into its parts.
func ParsePlatform(s string) (goos, goarch string, err error) {
	goos, goarch, ok := strings.Cut(s, "/")
	if !ok || goos == "" || goarch == "" || strings.Contains(goarch, "/") {
		return "", "", fmt.Errorf("platform %q: want os/arch", s)
	}
	return goos, goarch, nil
}
