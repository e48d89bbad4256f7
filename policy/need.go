package policy

import (
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputKeyGatehouse is the input key under which a custom policy finds what
// Gatehouse computed for it: input.gatehouse.decision, the configured
// decision (docs/policies.md).
const inputKeyGatehouse = "gatehouse"

// Need is the part of the input document a policy can read, found once per
// revision by walking the compiled modules. A nil *Need means none of it;
// All means every part below. It is immutable.
type Need struct {
	all  bool
	keys map[string]*Need
}

var needAll = &Need{all: true}

// NeedAll is the Need of a policy that may read the whole input.
func NeedAll() *Need { return needAll }

// All reports whether everything below n can be read.
func (n *Need) All() bool { return n != nil && n.all }

// Child returns what can be read under key: nil when nothing.
func (n *Need) Child(key string) *Need {
	if n == nil {
		return nil
	}
	if n.all {
		return n
	}
	return n.keys[key]
}

// String lists the readable paths, for logs and tests: "*" for everything,
// otherwise sorted dotted paths such as "attributes.request.http.path".
func (n *Need) String() string {
	if n == nil {
		return ""
	}
	if n.all {
		return "*"
	}
	var out []string
	var walk func(prefix string, n *Need)
	walk = func(prefix string, n *Need) {
		if n.all {
			out = append(out, prefix)
			return
		}
		for k, c := range n.keys {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, c)
		}
	}
	walk("", n)
	slices.Sort(out)
	return strings.Join(out, ",")
}

// add marks path (string keys) as readable; an empty path marks all of n.
func (n *Need) add(path []string) {
	if n.all {
		return
	}
	if len(path) == 0 {
		n.all, n.keys = true, nil
		return
	}
	if n.keys == nil {
		n.keys = map[string]*Need{}
	}
	c := n.keys[path[0]]
	if c == nil {
		c = &Need{}
		n.keys[path[0]] = c
	}
	c.add(path[1:])
}

// inputNeed finds what the compiled modules can read of input. It is
// conservative: a reference to input as a whole (walk(input), x := input,
// `with input as`), or one whose key is not a constant string (input[k]),
// reads everything below that point. With a custom policy, the embedded
// gatehouse.* helper modules count only when some other module refers to
// data.gatehouse (or to data with a variable key); without one, all modules
// count.
func inputNeed(c *ast.Compiler, custom bool) *Need {
	modules := make([]*ast.Module, 0, len(c.Modules))
	var embedded []*ast.Module
	usesLibrary := !custom
	for _, m := range c.Modules {
		if custom && isEmbeddedPackage(m.Package.Path) {
			embedded = append(embedded, m)
			continue
		}
		modules = append(modules, m)
		if !usesLibrary {
			ast.WalkRefs(m, func(r ast.Ref) bool {
				if r.HasPrefix(ast.DefaultRootRef) && (len(r) == 1 || !isString(r[1]) ||
					(string(r[1].Value.(ast.String)) == "gatehouse")) {
					usesLibrary = true
				}
				return usesLibrary
			})
		}
	}
	if usesLibrary {
		modules = append(modules, embedded...)
	}
	need := &Need{}
	for _, m := range modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			switch v := t.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					need.add(nil)
				}
			case ast.Ref:
				if !v[0].Equal(ast.InputRootDocument) {
					return false
				}
				path := make([]string, 0, len(v)-1)
				for _, k := range v[1:] {
					s, ok := k.Value.(ast.String)
					if !ok {
						break
					}
					path = append(path, string(s))
				}
				need.add(path)
				// Terms inside the ref (input[x] with x a ref) are walked
				// for their own references.
				for _, k := range v[1:] {
					if _, ok := k.Value.(ast.String); !ok {
						ast.WalkTerms(k, func(t *ast.Term) bool {
							if r, ok := t.Value.(ast.Ref); ok && r[0].Equal(ast.InputRootDocument) {
								need.add(nil)
							}
							return false
						})
					}
				}
				return true
			}
			return false
		})
	}
	return need
}

func isEmbeddedPackage(path ast.Ref) bool {
	return len(path) > 1 && path[1].Equal(ast.StringTerm("gatehouse"))
}

func isString(t *ast.Term) bool {
	_, ok := t.Value.(ast.String)
	return ok
}
