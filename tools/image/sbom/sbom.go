// Package sbom describes a Go binary as a CycloneDX bill of materials, from
// the build information the Go linker embeds in it (debug/buildinfo): the
// main module, every module linked in with its version and go.sum hash, the
// Go standard library, and the build settings. What is described is what was
// linked, not what go.mod lists.
package sbom

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// SpecVersion is the CycloneDX version written: 1.6 is what current scanners
// (Grype, Trivy, Dependency-Track) read.
const SpecVersion = cdx.SpecVersion1_6

// Options name the binary being described.
type Options struct {
	// Name is the artifact's file name in the release (gatehouse_v1.2.3_linux_amd64).
	Name string
	// Version is the release version; the build info of a binary built from
	// a work tree says "(devel)".
	Version string
	// Created is the BOM's timestamp: the commit's time, so that two
	// releases of one commit write the same file.
	Created time.Time
	// Tool names the generator in the BOM's metadata.
	Tool string
}

// Generate reads the binary at path and returns its BOM.
func Generate(path string, o Options) (*cdx.BOM, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sbom %s: %w", path, err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return nil, fmt.Errorf("sbom %s: %w", path, err)
	}

	app := cdx.Component{
		BOMRef:      purl(bi.Main.Path, o.Version),
		Type:        cdx.ComponentTypeApplication,
		Name:        bi.Main.Path,
		Version:     o.Version,
		PackageURL:  purl(bi.Main.Path, o.Version),
		Hashes:      &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: sum}},
		Properties:  buildProperties(bi),
		Description: fmt.Sprintf("%s (the command %s), built with %s", o.Name, bi.Path, bi.GoVersion),
	}
	std := cdx.Component{
		BOMRef:     "pkg:golang/std@" + bi.GoVersion,
		Type:       cdx.ComponentTypeLibrary,
		Name:       "std",
		Version:    bi.GoVersion,
		PackageURL: "pkg:golang/std@" + bi.GoVersion,
	}
	components := []cdx.Component{std}
	for _, d := range bi.Deps {
		components = append(components, module(d))
	}
	sort.Slice(components, func(i, j int) bool { return components[i].BOMRef < components[j].BOMRef })
	deps := make([]string, 0, len(components))
	for _, c := range components {
		deps = append(deps, c.BOMRef)
	}

	bom := cdx.NewBOM()
	bom.SerialNumber = serial(sum)
	bom.Version = 1
	bom.Metadata = &cdx.Metadata{
		Timestamp: o.Created.UTC().Format(time.RFC3339),
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: o.Tool,
		}}},
		Component: &app,
	}
	bom.Components = &components
	// Build info has no graph: everything linked is a dependency of the binary.
	bom.Dependencies = &[]cdx.Dependency{{Ref: app.BOMRef, Dependencies: &deps}}
	return bom, nil
}

// Write encodes bom as indented JSON in SpecVersion.
func Write(w io.Writer, bom *cdx.BOM) error {
	return cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON).SetPretty(true).SetEscapeHTML(false).EncodeVersion(bom, SpecVersion)
}

// module is one linked module; a replaced module is described as what
// replaced it, since that is the code in the binary.
func module(d *debug.Module) cdx.Component {
	m := d
	if d.Replace != nil {
		m = d.Replace
	}
	c := cdx.Component{
		BOMRef:     purl(m.Path, m.Version),
		Type:       cdx.ComponentTypeLibrary,
		Name:       m.Path,
		Version:    m.Version,
		PackageURL: purl(m.Path, m.Version),
	}
	var props []cdx.Property
	if m.Sum != "" {
		// go.sum's h1: hash of the module's file tree (not a file hash
		// CycloneDX has an algorithm for), as cyclonedx-gomod names it.
		props = append(props, cdx.Property{Name: "cdx:gomod:module:sum", Value: m.Sum})
	}
	if d.Replace != nil {
		props = append(props, cdx.Property{Name: "cdx:gomod:module:replaces", Value: d.Path + "@" + d.Version})
	}
	if len(props) > 0 {
		c.Properties = &props
	}
	return c
}

// buildProperties are the build settings (GOOS, GOARCH, CGO_ENABLED,
// -trimpath, -ldflags, vcs.*), in the order the linker recorded them.
func buildProperties(bi *buildinfo.BuildInfo) *[]cdx.Property {
	props := []cdx.Property{{Name: "cdx:gomod:build:goversion", Value: bi.GoVersion}}
	for _, s := range bi.Settings {
		props = append(props, cdx.Property{Name: "cdx:gomod:build:setting:" + s.Key, Value: s.Value})
	}
	return &props
}

// purl is a Go module's package URL.
func purl(path, version string) string {
	p := "pkg:golang/" + path
	if version != "" {
		// "+incompatible": a plus in a purl version is percent-encoded.
		p += "@" + strings.ReplaceAll(version, "+", "%2B")
	}
	return p + "?type=module"
}

// serial is a urn:uuid derived from the binary's hash (the form of a version
// 5 UUID), so that one binary always gets one serial number.
func serial(sha256hex string) string {
	b, _ := hex.DecodeString(sha256hex)
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
