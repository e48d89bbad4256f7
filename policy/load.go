package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/util"
)

// sources is everything one revision is built from, before compilation.
type sources struct {
	modules map[string]*ast.Module // by file name
	raw     map[string][]byte      // module source by file name, for the revision hash
	data    map[string]any         // data documents with the configuration merged in
	user    int                    // modules read from paths (not embedded)
}

// embedMode selects which embedded modules a build includes.
type embedMode int

const (
	embedNone    embedMode = iota // no embedded modules at all
	embedLibrary                  // the gatehouse.* modules, beside an operator's policy
	embedAll                      // also the envoy.* entry point, when no policy is configured
)

// embedFor is the serving rule: the embedded entry point only without paths.
func embedFor(paths []string) embedMode {
	if len(paths) == 0 {
		return embedAll
	}
	return embedLibrary
}

// loadSources reads the operator's modules and data files under paths with
// OPA's loader (so data files are namespaced by directory exactly as `opa run`
// does), adds the embedded modules, and places config at data.gatehouse.config.
func loadSources(paths []string, version ast.RegoVersion, config map[string]any, includeTests bool, embed embedMode, embeddedTests bool) (*sources, error) {
	src := &sources{modules: map[string]*ast.Module{}, raw: map[string][]byte{}, data: map[string]any{}}
	if len(paths) > 0 {
		res, err := loader.NewFileLoader().
			WithRegoVersion(version).
			Filtered(paths, fileFilter(includeTests))
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", strings.Join(paths, ", "), withLocations(err))
		}
		for name, f := range res.Modules {
			src.modules[name] = f.Parsed
			src.raw[name] = f.Raw
		}
		src.user = len(res.Modules)
		src.data = res.Documents
	}
	if embed != embedNone {
		mods, err := loadEmbedded(embed == embedAll, embeddedTests)
		if err != nil {
			return nil, err
		}
		for _, m := range mods {
			src.modules[m.name] = m.module
			src.raw[m.name] = m.raw
		}
	}
	if len(config) > 0 {
		normalized, err := normalizeJSON(config)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		wrapped := map[string]any{"gatehouse": map[string]any{"config": normalized}}
		merged, err := mergeDocuments(src.data, wrapped, "data")
		if err != nil {
			return nil, fmt.Errorf("config at data.gatehouse.config: %w", err)
		}
		src.data = merged.(map[string]any)
	}
	return src, nil
}

// fileFilter selects what the loader reads inside directories: .rego, .json,
// .yaml and .yml files, skipping hidden entries. Hidden entries cover editors'
// swap files and Kubernetes ConfigMap mounts, whose real files live in
// "..2024_01_01_00_00_00.1234" directories behind a "..data" symlink and would
// otherwise be loaded twice. Files named explicitly (depth 0) are always read.
func fileFilter(includeTests bool) loader.Filter {
	return func(_ string, info fs.FileInfo, depth int) bool {
		if depth == 0 {
			return false
		}
		name := info.Name()
		if strings.HasPrefix(name, ".") {
			return true
		}
		if info.IsDir() {
			return false
		}
		switch filepath.Ext(name) {
		case ".rego":
			return !includeTests && strings.HasSuffix(name, "_test.rego")
		case ".json", ".yaml", ".yml":
			return false
		}
		return true
	}
}

// policyFiles lists the files and directories the loader would read under
// paths, following symlinks as the loader does. Watch uses it to know which
// directories to watch and to fingerprint the content for its poll fallback.
func policyFiles(paths []string) (files, dirs []string) {
	filter := fileFilter(false)
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		info, err := os.Stat(p)
		if err != nil || filter(p, info, depth) {
			return
		}
		if !info.IsDir() {
			files = append(files, p)
			return
		}
		dirs = append(dirs, p)
		entries, err := os.ReadDir(p)
		if err != nil {
			return
		}
		for _, entry := range entries {
			walk(filepath.Join(p, entry.Name()), depth+1)
		}
	}
	for _, p := range paths {
		walk(filepath.Clean(stripPrefix(p)), 0)
	}
	return files, dirs
}

// stripPrefix removes the loader's optional "a.b:" data prefix from a path.
func stripPrefix(p string) string {
	_, p = loader.SplitPrefix(p)
	return p
}

// fingerprint hashes the names and content of the policy files under paths;
// unreadable files hash as their error, so their recovery is a change too.
func fingerprint(paths []string) string {
	files, _ := policyFiles(paths)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			b = []byte(err.Error())
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// normalizeJSON round-trips v through JSON so typed Go values (structs,
// []string, map[string]string) become the map[string]any/[]any/json.Number
// shape that data files have, which is what mergeDocuments understands.
func normalizeJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := util.UnmarshalJSON(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// mergeDocuments deep-merges src into a copy of dst. Objects merge key by
// key; any other value present on both sides is a conflict, reported with its
// path, because silently preferring one side would hide a misconfiguration.
func mergeDocuments(dst, src any, at string) (any, error) {
	dm, dok := dst.(map[string]any)
	sm, sok := src.(map[string]any)
	switch {
	case dst == nil:
		return src, nil
	case !dok || !sok:
		return nil, fmt.Errorf("conflicting values at %s (set both by a data file and by the configuration)", at)
	}
	out := maps.Clone(dm)
	for k, sv := range sm {
		dv, ok := out[k]
		if !ok {
			out[k] = sv
			continue
		}
		merged, err := mergeDocuments(dv, sv, at+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = merged
	}
	return out, nil
}

// revisionHash is the short content hash that names a revision: module
// sources, data (configuration included) and the options that change how they
// are read. Equal hashes mean an identical policy, so a reload can skip it.
func revisionHash(src *sources, version ast.RegoVersion, decision ast.Ref) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "rego=%s\x00decision=%s\x00", version, decision)
	for _, name := range slices.Sorted(maps.Keys(src.raw)) {
		fmt.Fprintf(h, "module %s %d\x00", name, len(src.raw[name]))
		h.Write(src.raw[name])
	}
	// encoding/json sorts map keys, so equal data hashes equally.
	data, err := json.Marshal(src.data)
	if err != nil {
		return "", fmt.Errorf("hash data: %w", err)
	}
	h.Write([]byte("data\x00"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// sourceError is an OPA parse or compile error rewritten so that every entry
// names file:line:col (OPA's own messages stop at the line).
type sourceError struct {
	lines []string
	cause error
}

func (e *sourceError) Error() string {
	if len(e.lines) == 1 {
		return e.lines[0]
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(len(e.lines)))
	b.WriteString(" errors:")
	for _, l := range e.lines {
		b.WriteString("\n\t")
		b.WriteString(l)
	}
	return b.String()
}

func (e *sourceError) Unwrap() error { return e.cause }

// withLocations turns OPA's ast.Errors (possibly inside loader.Errors) into a
// sourceError; other errors are returned unchanged.
func withLocations(err error) error {
	if err == nil {
		return nil
	}
	var lines []string
	var collect func(error) bool
	collect = func(err error) bool {
		var astErrs ast.Errors
		var astErr *ast.Error
		var loadErrs loader.Errors
		switch {
		case errors.As(err, &loadErrs):
			for _, e := range loadErrs {
				if !collect(e) {
					lines = append(lines, e.Error())
				}
			}
			return true
		case errors.As(err, &astErrs):
			for _, e := range astErrs {
				lines = append(lines, formatASTError(e))
			}
			return true
		case errors.As(err, &astErr):
			lines = append(lines, formatASTError(astErr))
			return true
		}
		return false
	}
	if !collect(err) || len(lines) == 0 {
		return err
	}
	return &sourceError{lines: lines, cause: err}
}

// formatASTError renders e as "file:line:col: code: message".
func formatASTError(e *ast.Error) string {
	var b bytes.Buffer
	if loc := e.Location; loc != nil {
		file := loc.File
		if file == "" {
			file = "<query>"
		}
		fmt.Fprintf(&b, "%s:%d:%d: ", file, loc.Row, loc.Col)
	}
	b.WriteString(e.Code)
	b.WriteString(": ")
	b.WriteString(e.Message)
	if e.Details != nil {
		for _, l := range e.Details.Lines() {
			b.WriteString("\n\t\t")
			b.WriteString(l)
		}
	}
	return b.String()
}
