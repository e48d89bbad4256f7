// Package version reports what build of Gatehouse is running: the release
// version and the VCS revision it was built from. `make` sets both with
// -ldflags "-X github.com/gatehouse-dev/gatehouse/internal/version.version=v1.2.3
// -X github.com/gatehouse-dev/gatehouse/internal/version.revision=<sha>";
// a plain `go build` or `go install` falls back to the module's build info.
package version

import (
	"runtime/debug"
	"sync"
)

// Set by the linker (see the package comment); empty when not.
var (
	version  string
	revision string
)

// Info is one build's identity.
type Info struct {
	// Version is the release version ("v0.4.0", "v0.4.0-3-gabc1234-dirty"), or
	// "dev" when neither the linker nor the build info says.
	Version string
	// Revision is the VCS commit the binary was built from, "" when unknown.
	Revision string
	// Modified reports uncommitted changes in the build's work tree (from the
	// build info; false when unknown).
	Modified bool
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

var get = sync.OnceValue(func() Info {
	info := Info{Version: version, Revision: revision}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Revision == "" {
					info.Revision = s.Value
				}
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	return info
})

// Get returns this binary's build identity.
func Get() Info { return get() }

// String is the one-line form --version prints: "v0.4.0 (revision abc1234, go1.26.8)".
func (i Info) String() string {
	s := i.Version
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev != "" && i.Modified:
		s += " (revision " + rev + "-dirty, " + i.GoVersion + ")"
	case rev != "":
		s += " (revision " + rev + ", " + i.GoVersion + ")"
	default:
		s += " (" + i.GoVersion + ")"
	}
	return s
}
