package test

import (
	"bufio"
	"debug/buildinfo"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildIdentity: the version and revision the binaries were linked with
// (TestMain, as `make build` does) reach every place an operator reads them:
// both binaries' --version, gatehouse_build_info on /metrics, the admin API's
// Status (and gatehousectl status), and the "listening" log line.
func TestBuildIdentity(t *testing.T) {
	bi, err := buildinfo.ReadFile(filepath.Join(binDir, "gatehouse"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := bi.GoVersion
	wantLine := "gatehouse " + e2eVersion + " (revision " + e2eRevision[:12] + ", " + goVersion + ")\n"

	t.Run("gatehouse --version", func(t *testing.T) {
		code, out, errOut := runGatehouse(t, "--version")
		if code != 0 || out != wantLine || errOut != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", code, out, errOut, wantLine)
		}
	})
	t.Run("gatehousectl --version", func(t *testing.T) {
		code, out, errOut := ctl(t, "--version")
		if code != 0 || out != wantLine || errOut != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", code, out, errOut, wantLine)
		}
	})

	g := startGatehouse(t, "", false)

	t.Run("metric", func(t *testing.T) {
		s := g.scrape(t)
		labels := map[string]string{"version": e2eVersion, "revision": e2eRevision, "goversion": goVersion}
		if v, ok := metricValue(s, "gatehouse_build_info", labels); !ok || v != 1 {
			t.Errorf("gatehouse_build_info%v = %v (present %t), want 1; the scrape has:\n%s", labels, v, ok, grepLines(s, "gatehouse_build_info"))
		}
	})
	t.Run("admin status", func(t *testing.T) {
		code, out, errOut := ctl(t, "status", "--json", "--addr", g.adminAddr)
		var st struct {
			Version  string `json:"version"`
			Revision string `json:"revision"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
			t.Fatalf("status --json: exit %d, %v\n%s\n%s", code, err, out, errOut)
		}
		if st.Version != e2eVersion || st.Revision != e2eRevision {
			t.Errorf("Status version %q revision %q, want %q %q", st.Version, st.Revision, e2eVersion, e2eRevision)
		}
		code, out, errOut = ctl(t, "status", "--addr", g.adminAddr)
		if code != 0 {
			t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
		}
		if err := contains(out, "version:   "+e2eVersion+"\n", "revision:  "+e2eRevision+"\n"); err != nil {
			t.Error(err)
		}
	})
	t.Run("listening log line", func(t *testing.T) {
		// The address file is written after the line is logged, and
		// startGatehouse waited for the file.
		var found bool
		sc := bufio.NewScanner(strings.NewReader(g.logText()))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) != nil || rec["msg"] != "listening" {
				continue
			}
			found = true
			if rec["version"] != e2eVersion || rec["revision"] != e2eRevision {
				t.Errorf("listening line has version %v revision %v, want %q %q: %s", rec["version"], rec["revision"], e2eVersion, e2eRevision, sc.Text())
			}
		}
		if !found {
			t.Errorf("no listening line in the log:\n%s", g.logText())
		}
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// runGatehouse runs the gatehouse binary to completion (a command that does
// not serve, such as --version or validate) and returns its exit code,
// stdout and stderr.
func runGatehouse(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec(t, filepath.Join(binDir, "gatehouse"), args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("gatehouse %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}
