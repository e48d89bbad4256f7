package policy

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// embedded holds Gatehouse's own Rego: the gatehouse.* helpers and default
// decision, the envoy.authz entry point used when no policy is configured, and
// their tests. An embed.FS is read-only, so this is not mutable state.
//
//go:embed rego
var embedded embed.FS

// embeddedPrefix names embedded modules in locations and errors, so a message
// such as "embedded/rego/lib.rego:12" cannot be mistaken for a file on disk.
const embeddedPrefix = "embedded/"

// embeddedModule is one parsed module of policy/rego.
type embeddedModule struct {
	name   string
	raw    []byte
	module *ast.Module
}

// loadEmbedded parses the embedded modules. Entry-point modules (package
// envoy.*, the default decision shim) are included only when includeEntry is
// set, that is when the operator configured no policy of their own: a user
// policy defining data.envoy.authz.allow must not collide with ours. Test
// modules are included only for RunTests. Embedded modules are ours and always
// written in Rego v1, whatever version the operator's policies use.
func loadEmbedded(includeEntry, includeTests bool) ([]embeddedModule, error) {
	var mods []embeddedModule
	err := fs.WalkDir(embedded, "rego", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(name) != ".rego" {
			return nil
		}
		if !includeTests && strings.HasSuffix(name, "_test.rego") {
			return nil
		}
		raw, err := embedded.ReadFile(name)
		if err != nil {
			return fmt.Errorf("read embedded %s: %w", name, err)
		}
		file := embeddedPrefix + name
		mod, err := ast.ParseModuleWithOpts(file, string(raw), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return withLocations(err)
		}
		if !includeEntry && isEntryPackage(mod.Package.Path) {
			return nil
		}
		mods = append(mods, embeddedModule{name: file, raw: raw, module: mod})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded policy: %w", err)
	}
	return mods, nil
}

// isEntryPackage reports whether path is under data.envoy, the namespace of
// OPA-Envoy entry points (envoy.authz and, for its tests, envoy.authz_test).
func isEntryPackage(path ast.Ref) bool {
	return len(path) >= 2 && path[1].Value.Compare(ast.String("envoy")) == 0
}
