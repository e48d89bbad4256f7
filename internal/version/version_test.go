package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		name string
		info Info
		want string
	}{
		{"release", Info{Version: "v0.4.0", Revision: "abc1234def5678901234", GoVersion: "go1.26.8"}, "v0.4.0 (revision abc1234def56, go1.26.8)"},
		{"short revision", Info{Version: "v0.4.0", Revision: "abc1234", GoVersion: "go1.26.8"}, "v0.4.0 (revision abc1234, go1.26.8)"},
		{"modified work tree", Info{Version: "dev", Revision: "abc1234def5678901234", Modified: true, GoVersion: "go1.26.8"}, "dev (revision abc1234def56-dirty, go1.26.8)"},
		{"no revision", Info{Version: "dev", GoVersion: "go1.26.8"}, "dev (go1.26.8)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.info.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestGetFallback: a test binary is not linked with -X, so Get falls back to
// the build info: a version ("dev" at least) and this toolchain.
func TestGetFallback(t *testing.T) {
	got := Get()
	if got.Version != "dev" && !strings.HasPrefix(got.Version, "v") {
		t.Errorf("Version %q; want the build info's (v...) or \"dev\"", got.Version)
	}
	if got.GoVersion != runtime.Version() {
		t.Errorf("GoVersion %q, want %q", got.GoVersion, runtime.Version())
	}
}
