// Package chart packages a Helm chart directory the way `helm package` lays
// it out: <name>-<version>.tgz holding the chart under a top folder named for
// the chart, with the patterns of its .helmignore left out. Unlike helm, the
// archive is reproducible: sorted entries, one modification time, root-owned,
// fixed modes, and the files' bytes as they are in the repository (helm
// re-serializes Chart.yaml).
package chart

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Metadata is the part of Chart.yaml the package's name comes from.
type Metadata struct {
	Name       string `yaml:"name"`
	Version    string `yaml:"version"`
	AppVersion string `yaml:"appVersion"`
}

// Load reads dir/Chart.yaml.
func Load(dir string) (Metadata, error) {
	b, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return Metadata{}, err
	}
	var m Metadata
	if err := yaml.Unmarshal(b, &m); err != nil {
		return Metadata{}, fmt.Errorf("%s/Chart.yaml: %w", dir, err)
	}
	if m.Name == "" || m.Version == "" {
		return Metadata{}, fmt.Errorf("%s/Chart.yaml: name and version are required", dir)
	}
	return m, nil
}

// FileName is the package's name, as helm names it.
func (m Metadata) FileName() string { return m.Name + "-" + m.Version + ".tgz" }

// Package returns the chart in dir as a .tgz.
func Package(dir string, mtime time.Time) (Metadata, []byte, error) {
	m, err := Load(dir)
	if err != nil {
		return Metadata{}, nil, err
	}
	ignore, err := loadIgnore(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return Metadata{}, nil, err
	}
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return Metadata{}, nil, err
	}
	// No name and a zero time in the gzip header.
	tw := tar.NewWriter(gz)
	mtime = mtime.UTC().Truncate(time.Second)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignore.match(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		// helm package writes files only; directories are implied.
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Name: path.Join(m.Name, rel), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)),
			ModTime: mtime, Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(body)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return Metadata{}, nil, fmt.Errorf("chart %s: %w", dir, err)
	}
	return m, buf.Bytes(), nil
}

// ignoreRules is a .helmignore: helm's subset of .gitignore syntax. Each
// pattern matches a path relative to the chart or, without a slash, any
// base name; a trailing slash matches only directories. Negation (!) and **
// are refused rather than read differently from helm.
type ignoreRules []ignoreRule

type ignoreRule struct {
	pattern string
	dirOnly bool
}

func loadIgnore(file string) (ignoreRules, error) {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rules ignoreRules
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") || strings.Contains(line, "**") {
			return nil, fmt.Errorf("%s:%d: %q: negation and ** are not supported here", file, n, line)
		}
		r := ignoreRule{pattern: strings.TrimPrefix(line, "/")}
		if strings.HasSuffix(r.pattern, "/") {
			r.dirOnly, r.pattern = true, strings.TrimSuffix(r.pattern, "/")
		}
		if _, err := path.Match(r.pattern, ""); err != nil {
			return nil, fmt.Errorf("%s:%d: %q: %w", file, n, line, err)
		}
		rules = append(rules, r)
	}
	return rules, sc.Err()
}

func (rules ignoreRules) match(rel string, isDir bool) bool {
	for _, r := range rules {
		if r.dirOnly && !isDir {
			continue
		}
		target := rel
		if !strings.Contains(r.pattern, "/") {
			target = path.Base(rel)
		}
		if ok, _ := path.Match(r.pattern, target); ok {
			return true
		}
	}
	return false
}
