package policy

import (
	"slices"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// networkBuiltins are the built-ins that reach the network, which
// Options.AllowNet restricts (as OPA's allow_net does): the JSON schema ones
// fetch a schema's remote $ref, and the schema may come from the input.
var networkBuiltins = []string{"http.send", "net.lookup_ip_addr", "json.match_schema", "json.verify_schema"}

// opaAllowNet maps Options.AllowNet to OPA's capabilities allow_net, where
// nil means any host and an empty list none.
func opaAllowNet(hosts []string) []string {
	if hosts == nil || (len(hosts) == 1 && hosts[0] == AllowAnyHost) {
		return nil
	}
	return append([]string{}, hosts...)
}

// networkCalls returns the network built-ins the modules call or refer to
// (a function mocked with one, `with f as http.send`, calls it), sorted.
func networkCalls(modules map[string]*ast.Module) []string {
	found := map[string]bool{}
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if name := r.String(); slices.Contains(networkBuiltins, name) {
				found[name] = true
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				if name := call[0].String(); slices.Contains(networkBuiltins, name) {
					found[name] = true
				}
			}
			return false
		})
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if x.IsCall() {
				if name := x.Operator().String(); slices.Contains(networkBuiltins, name) {
					found[name] = true
				}
			}
			return false
		})
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// warnNetwork logs, once per revision, a policy that calls network
// built-ins while policy.allow_net is not set (they may reach any host,
// the cloud metadata address and internal services included) or allows no
// host (every call fails, which an operator porting an OPA-Envoy policy
// would otherwise find only in denials).
func (e *Engine) warnNetwork(modules map[string]*ast.Module, revision string) {
	unrestricted := e.netUnset
	blocked := e.allowNet != nil && len(e.allowNet) == 0
	if !unrestricted && !blocked {
		return
	}
	calls := networkCalls(modules)
	switch {
	case len(calls) == 0:
	case unrestricted:
		e.logger.Warn("the policy calls network built-ins and policy.allow_net is not set: they may reach any host, as in OPA; list the hosts the policy needs in policy.allow_net",
			"builtins", calls, "revision", revision)
	default:
		e.logger.Warn("the policy calls network built-ins but policy.allow_net allows no host: every call fails; list the hosts it may reach in policy.allow_net",
			"builtins", calls, "revision", revision)
	}
}
