package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPackage: helm's layout, .helmignore applied, the files' bytes kept,
// one mtime, and the same bytes from two runs.
func TestPackage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "src")
	chartYAML := "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"1.2.3\"\n"
	writeTree(t, dir, map[string]string{
		"Chart.yaml":          chartYAML,
		"values.yaml":         "replicas: 2\n",
		"templates/a.yaml":    "kind: ConfigMap\n",
		"templates/a.yaml~":   "editor backup\n",
		"templates/old.bak":   "old\n",
		"docs/notes.md":       "not for the package\n",
		"README.md":           "kept: not ignored\n",
		"sub/docs":            "a file named docs: a dir-only pattern leaves it\n",
		".helmignore":         "# comment\n*.bak\n*~\ndocs/\n",
		"templates/NOTES.txt": "hello\n",
	})
	mtime := time.Unix(1700000000, 0)
	m, tgz, err := Package(dir, mtime)
	if err != nil {
		t.Fatal(err)
	}
	if m.FileName() != "demo-1.2.3.tgz" || m.AppVersion != "1.2.3" {
		t.Errorf("metadata %+v, file %s", m, m.FileName())
	}
	got := map[string]string{}
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(mtime) || hdr.Uid != 0 || hdr.Mode != 0o644 {
			t.Errorf("%s: mtime %s uid %d mode %o", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Mode)
		}
		body, _ := io.ReadAll(tr)
		got[hdr.Name] = string(body)
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	want := "demo/.helmignore demo/Chart.yaml demo/README.md demo/sub/docs demo/templates/NOTES.txt demo/templates/a.yaml demo/values.yaml"
	if strings.Join(names, " ") != want {
		t.Errorf("packaged\n  %s\nwant\n  %s", strings.Join(names, " "), want)
	}
	if got["demo/Chart.yaml"] != chartYAML {
		t.Errorf("Chart.yaml changed: %q", got["demo/Chart.yaml"])
	}

	// Another run, after the files' own times changed: the same bytes.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "values.yaml"), later, later); err != nil {
		t.Fatal(err)
	}
	_, again, err := Package(dir, mtime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tgz, again) {
		t.Error("two packages of one chart differ")
	}
}

func TestPackageRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no version", map[string]string{"Chart.yaml": "name: demo\n"}, "name and version are required"},
		{"negation", map[string]string{"Chart.yaml": "name: demo\nversion: 1.0.0\n", ".helmignore": "!keep\n"}, "not supported"},
		{"double star", map[string]string{"Chart.yaml": "name: demo\nversion: 1.0.0\n", ".helmignore": "**/x\n"}, "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tc.files)
			_, _, err := Package(dir, time.Unix(0, 0))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
