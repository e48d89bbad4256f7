package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// cidrContainsName is the Rego name of Gatehouse's CIDR built-in.
const cidrContainsName = "gatehouse.cidr_contains"

// cidrCacheSize bounds the compiled sets kept per revision. Lists read from
// data are a handful; lists a policy builds per request are equal by value and
// share an entry. Beyond the bound a list is compiled for the call and dropped.
const cidrCacheSize = 256

// cidrContainsDecl declares gatehouse.cidr_contains(cidrs, ip) -> boolean,
// where cidrs is an array or set of strings, so the type checker rejects
// gatehouse.cidr_contains([1], ip) at compile time.
func cidrContainsDecl() *rego.Function {
	return &rego.Function{
		Name:        cidrContainsName,
		Description: "Reports whether the address ip lies in one of cidrs (CIDRs or bare addresses).",
		Decl: types.NewFunction(
			types.Args(
				types.Named("cidrs", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S))).
					Description("CIDRs or bare addresses"),
				types.Named("ip", types.S).Description("the address to test"),
			),
			types.Named("result", types.B).Description("true when ip is in one of cidrs"),
		),
	}
}

// cidrContainsBuiltin is the ast declaration of the built-in, for compilers
// the engine and the test runner set up themselves.
func cidrContainsBuiltin() *ast.Builtin {
	decl := cidrContainsDecl()
	return &ast.Builtin{Name: decl.Name, Description: decl.Description, Decl: decl.Decl}
}

// cidrEntry is one compiled list, with the value it was compiled from.
type cidrEntry struct {
	value ast.Value
	set   *ipset.Set
}

// cidrCache holds the compiled sets of one revision (or one test run), keyed
// by the value's hash, which OPA computes when the value is built, so a lookup
// costs no pass over the list. Within a bucket the stored value is compared by
// identity first: the data store hands out the same *ast.Array on every
// evaluation, so a 10,000-entry list from data is compiled once per revision.
// Only a list rebuilt per request (a comprehension) pays an equality check.
type cidrCache struct {
	mu      sync.RWMutex
	entries map[int][]cidrEntry
	size    int
}

func newCIDRCache() *cidrCache {
	return &cidrCache{entries: map[int][]cidrEntry{}}
}

// Len returns the number of compiled sets held.
func (c *cidrCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.size
}

// option registers the built-in on a Rego object with this cache behind it.
func (c *cidrCache) option() func(*rego.Rego) {
	return rego.Function2(cidrContainsDecl(), c.contains)
}

// builtin is the built-in as OPA's evaluator takes it, failing as the rego
// package's custom functions do: the error is a built-in error prefixed with
// the function's name, at the call's location.
func (c *cidrCache) builtin() *topdown.Builtin {
	return &topdown.Builtin{
		Decl: cidrContainsBuiltin(),
		Func: func(bctx topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
			result, err := c.contains(bctx, operands[0], operands[1])
			if err != nil {
				return (&topdown.Error{Code: topdown.BuiltinErr, Message: cidrContainsName + ": " + err.Error(), Location: bctx.Location}).Wrap(err)
			}
			return iter(result)
		},
	}
}

// contains implements gatehouse.cidr_contains. A list with an entry that is
// not a CIDR or address is an error, not a partial match: with strict built-in
// errors the evaluation fails and the request is denied (fail closed) instead
// of the list silently matching less than the operator wrote. An ip that is
// not an address is simply not contained.
func (c *cidrCache) contains(_ rego.BuiltinContext, cidrs, ip *ast.Term) (*ast.Term, error) {
	addr, ok := ip.Value.(ast.String)
	if !ok {
		return nil, builtins.NewOperandTypeErr(2, ip.Value, "string")
	}
	set, err := c.lookup(cidrs.Value)
	if err != nil {
		return nil, err
	}
	return ast.InternedTerm(set.ContainsString(string(addr))), nil
}

// lookup returns the compiled set for v, compiling and caching it on a miss.
func (c *cidrCache) lookup(v ast.Value) (*ipset.Set, error) {
	switch v.(type) {
	case *ast.Array, ast.Set:
	default:
		return nil, builtins.NewOperandTypeErr(1, v, "array", "set")
	}
	key := v.Hash()
	c.mu.RLock()
	set := c.find(key, v)
	c.mu.RUnlock()
	if set != nil {
		return set, nil
	}
	set, err := compileCIDRs(v)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if found := c.find(key, v); found != nil {
		return found, nil
	}
	if c.size < cidrCacheSize {
		c.entries[key] = append(c.entries[key], cidrEntry{value: v, set: set})
		c.size++
	}
	return set, nil
}

// find returns the cached set for v; the caller holds c.mu.
func (c *cidrCache) find(key int, v ast.Value) *ipset.Set {
	for _, e := range c.entries[key] {
		if sameValue(e.value, v) {
			return e.set
		}
	}
	return nil
}

// sameValue compares by identity before falling back to a full comparison.
// Both values are arrays or sets, whose dynamic types are pointers, so the
// interface comparison cannot panic.
func sameValue(a, b ast.Value) bool {
	return a == b || a.Compare(b) == 0
}

// compileCIDRs builds an ipset from an array or set of strings.
func compileCIDRs(v ast.Value) (*ipset.Set, error) {
	var list []string
	var bad ast.Value
	collect := func(t *ast.Term) {
		s, ok := t.Value.(ast.String)
		if !ok {
			if bad == nil {
				bad = t.Value
			}
			return
		}
		list = append(list, string(s))
	}
	switch x := v.(type) {
	case *ast.Array:
		list = make([]string, 0, x.Len())
		x.Foreach(collect)
	case ast.Set:
		list = make([]string, 0, x.Len())
		x.Foreach(collect)
	}
	if bad != nil {
		return nil, builtins.NewOperandErr(1, "cidrs must contain only strings, found %s", ast.ValueName(bad))
	}
	set, err := ipset.New(list)
	if err != nil {
		return nil, builtins.NewOperandErr(1, "%s", err.Error())
	}
	return set, nil
}
