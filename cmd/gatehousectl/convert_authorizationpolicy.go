package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/policy"
)

const convertAuthzUsage = `Usage: gatehousectl convert authorizationpolicy FILE

Read Istio AuthorizationPolicy objects (security.istio.io/v1 or v1beta1; FILE,
or - for standard input; one or many YAML documents, or a List as 'kubectl get
authorizationpolicy -A -o yaml' prints) and print the equivalent Gatehouse
'authorization:' configuration on standard output, each rule commented with the
policy and rule it came from. docs/authorization.md explains the mapping.

Every Istio rule becomes one Gatehouse rule per pair of its from and to entries
(named <namespace>.<policy>.<rule>[.<from>.<to>]); DENY rules are written
first, then ALLOW, then AUDIT, each in input order. An ALLOW policy without
rules becomes allow_nothing: true unless other ALLOW rules exist. A policy
annotated istio.io/dry-run: "true" becomes audit rules (evaluated and named in
the decision log, never enforced).

What Gatehouse cannot enforce exactly is refused, never widened or narrowed:
CUSTOM, provider, connection.sni, destination.ip, experimental.* and unknown
when keys, a value Istio would reject (a path template such as /a/{*}.txt, an
empty value), unknown fields, and two conditions on one Gatehouse field that
would have to be merged (an AND would become an OR). Exit code 2 names the
policy, the rule and the field of each. What changes meaning (a selector or
targetRefs: Gatehouse applies the rules to every request the gateway forwards)
is explained on standard error.

Examples:
  gatehousectl convert authorizationpolicy policies.yaml > authorization.yaml
  kubectl get authorizationpolicy -A -o yaml | gatehousectl convert authorizationpolicy -
`

func (a *app) convertAuthorizationPolicy(_ context.Context, args []string) error {
	const cmd = "convert authorizationpolicy"
	fs := newFlagSet(cmd)
	rest, err := parseFlags(fs, cmd, convertAuthzUsage, args)
	if err != nil {
		return err
	}
	if err := refuseArguments(cmd, convertAuthzUsage, rest, 1, " (convert takes one FILE; put several objects in one file, separated by ---)"); err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageErrorf(cmd, "want one FILE (or - for standard input), got none")
	}
	file := rest[0]
	var raw []byte
	if file == "-" {
		raw, err = io.ReadAll(a.stdin)
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	res, err := convertAuthorizationPolicies(raw, file)
	if err != nil {
		return err
	}
	for _, n := range res.notes {
		fmt.Fprintf(a.stderr, "note: %s\n", n)
	}
	out, err := res.yaml(file)
	if err != nil {
		return err
	}
	// The output must load as it is: a failure here is the converter's bug,
	// reported rather than printed.
	if _, err := config.Parse(out, "."); err != nil {
		return fmt.Errorf("the converted configuration does not load (a bug in the converter, please report it): %w", err)
	}
	_, err = a.stdout.Write(out)
	return err
}

// authorizationPolicy is the part of an Istio AuthorizationPolicy the
// converter reads. Unlike RequestAuthentication, an unknown key is refused:
// dropping a condition would widen the rule.
type authorizationPolicy struct {
	Metadata struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Selector   yaml.Node `yaml:"selector"`
		TargetRef  yaml.Node `yaml:"targetRef"`
		TargetRefs yaml.Node `yaml:"targetRefs"`
		Action     string    `yaml:"action"`
		Provider   yaml.Node `yaml:"provider"`
		Rules      []apRule  `yaml:"rules"`
	} `yaml:"spec"`
}

type apRule struct {
	From []struct {
		Source *apSource `yaml:"source"`
	} `yaml:"from"`
	To []struct {
		Operation *apOperation `yaml:"operation"`
	} `yaml:"to"`
	When []apCondition `yaml:"when"`
}

// apSource is Istio's Source (istio.io/api security/v1beta1).
type apSource struct {
	Principals           []string `yaml:"principals"`
	NotPrincipals        []string `yaml:"notPrincipals"`
	RequestPrincipals    []string `yaml:"requestPrincipals"`
	NotRequestPrincipals []string `yaml:"notRequestPrincipals"`
	Namespaces           []string `yaml:"namespaces"`
	NotNamespaces        []string `yaml:"notNamespaces"`
	ServiceAccounts      []string `yaml:"serviceAccounts"`
	NotServiceAccounts   []string `yaml:"notServiceAccounts"`
	IPBlocks             []string `yaml:"ipBlocks"`
	NotIPBlocks          []string `yaml:"notIpBlocks"`
	RemoteIPBlocks       []string `yaml:"remoteIpBlocks"`
	NotRemoteIPBlocks    []string `yaml:"notRemoteIpBlocks"`
}

// apOperation is Istio's Operation.
type apOperation struct {
	Hosts      []string `yaml:"hosts"`
	NotHosts   []string `yaml:"notHosts"`
	Ports      []string `yaml:"ports"`
	NotPorts   []string `yaml:"notPorts"`
	Methods    []string `yaml:"methods"`
	NotMethods []string `yaml:"notMethods"`
	Paths      []string `yaml:"paths"`
	NotPaths   []string `yaml:"notPaths"`
}

// apCondition is Istio's Condition (one entry of when).
type apCondition struct {
	Key       string   `yaml:"key"`
	Values    []string `yaml:"values"`
	NotValues []string `yaml:"notValues"`
}

// Keys the converter reads at each level; any other is refused.
var (
	apSpecKeys      = []string{"action", "provider", "rules", "selector", "targetRef", "targetRefs"}
	apRuleKeys      = []string{"from", "to", "when"}
	apFromKeys      = []string{"source"}
	apToKeys        = []string{"operation"}
	apConditionKeys = []string{"key", "notValues", "values"}
	apSourceKeys    = []string{"ipBlocks", "namespaces", "notIpBlocks", "notNamespaces", "notPrincipals", "notRemoteIpBlocks",
		"notRequestPrincipals", "notServiceAccounts", "principals", "remoteIpBlocks", "requestPrincipals", "serviceAccounts"}
	apOperationKeys = []string{"hosts", "methods", "notHosts", "notMethods", "notPaths", "notPorts", "paths", "ports"}
)

const dryRunAnnotation = "istio.io/dry-run"

// ruleNameRE is what config accepts as a rule name.
var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)

// authzRuleOut is one converted rule and where it came from.
type authzRuleOut struct {
	rule   config.AuthorizationRule
	source string // the comment: policy, rule and entries
}

// authzConversion is the result: the rules of each action in input order,
// allow_nothing, the notes for stderr and the refusals.
type authzConversion struct {
	deny, allow, audit []authzRuleOut
	allowNothing       []string // the ALLOW policies without rules
	notes              []string
	problems           []string
}

func (c *authzConversion) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !slices.Contains(c.notes, n) {
		c.notes = append(c.notes, n)
	}
}

// refuse records what cannot be converted exactly; at names the Istio field.
func (c *authzConversion) refuse(at, format string, args ...any) {
	p := at + ": " + fmt.Sprintf(format, args...)
	if !slices.Contains(c.problems, p) {
		c.problems = append(c.problems, p)
	}
}

// convertAuthorizationPolicies converts every AuthorizationPolicy in raw.
// Objects of other kinds are skipped with a note; anything that cannot be
// converted exactly fails the whole conversion, listing every problem.
func convertAuthorizationPolicies(raw []byte, file string) (*authzConversion, error) {
	docs, err := splitDocuments(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c := &authzConversion{}
	var found int
	namespaces := map[string]bool{}
	for _, doc := range docs {
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		}
		if err := doc.node.Decode(&head); err != nil {
			return nil, fmt.Errorf("%s: line %d: %w", file, doc.node.Line, err)
		}
		if head.Kind != "AuthorizationPolicy" || !strings.HasPrefix(head.APIVersion, "security.istio.io/") {
			c.note("%s: line %d: skipped %s %q: not a security.istio.io AuthorizationPolicy", file, doc.node.Line, orUnknown(head.Kind), head.Metadata.Name)
			continue
		}
		found++
		if head.APIVersion != "security.istio.io/v1" && head.APIVersion != "security.istio.io/v1beta1" {
			c.refuse(head.Metadata.Name, "apiVersion %s: this converter reads security.istio.io/v1 and v1beta1", head.APIVersion)
			continue
		}
		var ap authorizationPolicy
		if err := doc.node.Decode(&ap); err != nil {
			return nil, fmt.Errorf("%s: line %d: AuthorizationPolicy %s: %w", file, doc.node.Line, head.Metadata.Name, err)
		}
		namespaces[ap.Metadata.Namespace] = true
		c.convertPolicy(&ap, doc.node)
	}
	if found == 0 {
		return nil, fmt.Errorf("%s: no security.istio.io AuthorizationPolicy found", file)
	}
	if len(c.problems) > 0 {
		return nil, fmt.Errorf("%s: %d problem(s); nothing was converted, as a rule that Gatehouse cannot enforce exactly would be wider or narrower than Istio's:\n  %s",
			file, len(c.problems), strings.Join(c.problems, "\n  "))
	}
	if err := c.checkNames(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	switch {
	case len(c.allowNothing) > 0 && len(c.allow) > 0:
		for _, id := range c.allowNothing {
			c.note("%s: an ALLOW policy without rules allows nothing by itself; other ALLOW rules are converted and a request must match one of them, so it adds nothing", id)
		}
	case len(c.allowNothing) == 0 && len(c.allow) == 0:
		c.note("no ALLOW rule: Istio then allows every request no DENY rule matches; Gatehouse, as without an authorization section, still needs a valid token for it (reason token_valid, 401 token_missing without one). Add an allow rule with no conditions to let every such request through without a token")
	}
	if len(namespaces) > 1 {
		c.note("policies of several namespaces are merged into one rule list: Istio applies a policy to the workloads of its namespace (or the whole mesh from the root namespace); Gatehouse applies every rule to every request the gateway forwards to it")
	}
	return c, nil
}

// policyID is "namespace/name" (or the name alone without a namespace).
func policyID(ap *authorizationPolicy) string {
	if ap.Metadata.Namespace == "" {
		return ap.Metadata.Name
	}
	return ap.Metadata.Namespace + "/" + ap.Metadata.Name
}

// ruleBase is the rule name's stem, "namespace.name".
func ruleBase(ap *authorizationPolicy) string {
	if ap.Metadata.Namespace == "" {
		return ap.Metadata.Name
	}
	return ap.Metadata.Namespace + "." + ap.Metadata.Name
}

func (c *authzConversion) convertPolicy(ap *authorizationPolicy, node *yaml.Node) {
	id := policyID(ap)
	if ap.Metadata.Name == "" {
		c.refuse(id, "metadata.name is empty: the rule names are made from it")
		return
	}
	if !ruleNameRE.MatchString(ruleBase(ap)) {
		c.refuse(id+" metadata", "the namespace and name make the rule names, which may hold only letters, digits and - _ . /")
		return
	}
	spec := findKey(node, "spec")
	c.checkKeys(spec, id+" spec", apSpecKeys)
	rulesNode := findKey(spec, "rules")

	action := ap.Spec.Action
	if action == "" {
		action = "ALLOW"
	}
	var out string
	switch action {
	case "ALLOW":
		out = config.ActionAllow
	case "DENY":
		out = config.ActionDeny
	case "AUDIT":
		out = config.ActionAudit
	case "CUSTOM":
		c.refuse(id+" spec.action", "CUSTOM delegates the decision to an external authorizer (the way Envoy reaches Gatehouse itself); it has no Gatehouse rule equivalent")
		return
	default:
		c.refuse(id+" spec.action", "%q is not ALLOW, DENY, AUDIT or CUSTOM", action)
		return
	}
	if ap.Spec.Provider.Kind != 0 {
		c.refuse(id+" spec.provider", "a provider belongs to a CUSTOM policy's external authorizer; Gatehouse has no equivalent")
		return
	}
	dryRun := false
	if v, ok := ap.Metadata.Annotations[dryRunAnnotation]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			c.refuse(id+" metadata.annotations", "%s: %q is not true or false", dryRunAnnotation, v)
			return
		}
		dryRun = b
	}
	if ap.Spec.Selector.Kind != 0 || ap.Spec.TargetRef.Kind != 0 || ap.Spec.TargetRefs.Kind != 0 {
		c.note("%s: selector/targetRef not converted: Istio applies the policy only to the workloads it selects; Gatehouse applies the converted rules to every request the gateway forwards to it, whatever its destination (add hosts or paths to the rules to narrow them)", id)
	}
	if dryRun {
		c.note("%s: %s: \"true\": converted as audit rules, which Gatehouse evaluates and names in the decision log without enforcing them, as Istio evaluates a dry-run policy without enforcing it (Istio's shadow_effect of an %s policy is not reproduced: the log says which rules matched)", id, dryRunAnnotation, action)
		out = config.ActionAudit
	}
	if len(ap.Spec.Rules) == 0 {
		switch {
		case action == "ALLOW" && !dryRun:
			c.allowNothing = append(c.allowNothing, id)
		case action == "ALLOW":
			c.note("%s: a dry-run ALLOW policy without rules (allow nothing, not enforced) has no audit equivalent: nothing is converted", id)
		default:
			c.note("%s: a %s policy without rules matches nothing: nothing to convert", id, action)
		}
		return
	}
	for i, r := range ap.Spec.Rules {
		at := fmt.Sprintf("%s rules[%d]", id, i)
		var rn *yaml.Node
		if rulesNode != nil && rulesNode.Kind == yaml.SequenceNode && i < len(rulesNode.Content) {
			rn = rulesNode.Content[i]
		}
		c.convertRule(ap, i, r, rn, at, out, action, dryRun)
	}
}

// convertRule expands one Istio rule, (OR of from) AND (OR of to) AND (every
// when), into one Gatehouse rule per from × to pair: a Gatehouse rule has no
// OR across fields.
func (c *authzConversion) convertRule(ap *authorizationPolicy, i int, r apRule, node *yaml.Node, at, action, istioAction string, dryRun bool) {
	if node != nil && node.Kind != yaml.MappingNode && !(node.Kind == yaml.ScalarNode && node.Tag == "!!null") {
		c.refuse(at, "a rule must be a mapping of from, to and when")
		return
	}
	c.checkKeys(node, at, apRuleKeys)
	fromNode, toNode, whenNode := findKey(node, "from"), findKey(node, "to"), findKey(node, "when")
	for j := range r.From {
		fat := fmt.Sprintf("%s.from[%d]", at, j)
		c.checkKeys(item(fromNode, j), fat, apFromKeys)
		if r.From[j].Source == nil {
			c.refuse(fat+".source", "missing or empty (Istio rejects it too)")
			continue
		}
		c.checkKeys(findKey(item(fromNode, j), "source"), fat+".source", apSourceKeys)
		if isEmptySource(r.From[j].Source) {
			c.refuse(fat+".source", "has no field set (Istio rejects an empty source)")
		}
	}
	for j := range r.To {
		tat := fmt.Sprintf("%s.to[%d]", at, j)
		c.checkKeys(item(toNode, j), tat, apToKeys)
		if r.To[j].Operation == nil {
			c.refuse(tat+".operation", "missing or empty (Istio rejects it too)")
			continue
		}
		c.checkKeys(findKey(item(toNode, j), "operation"), tat+".operation", apOperationKeys)
		if isEmptyOperation(r.To[j].Operation) {
			c.refuse(tat+".operation", "has no field set (Istio rejects an empty operation)")
		}
	}
	for j := range r.When {
		c.checkKeys(item(whenNode, j), fmt.Sprintf("%s.when[%d]", at, j), apConditionKeys)
	}

	nFrom, nTo := max(len(r.From), 1), max(len(r.To), 1)
	for f := 0; f < nFrom; f++ {
		for t := 0; t < nTo; t++ {
			name := fmt.Sprintf("%s.%d", ruleBase(ap), i)
			comment := fmt.Sprintf("%s rules[%d]", policyID(ap), i)
			if nFrom*nTo > 1 {
				name += fmt.Sprintf(".%d.%d", f, t)
				if len(r.From) > 0 {
					comment += fmt.Sprintf(" from[%d]", f)
				}
				if len(r.To) > 0 {
					comment += fmt.Sprintf(" to[%d]", t)
				}
			}
			if dryRun {
				comment += " (" + istioAction + ", dry-run)"
			} else {
				comment += " (" + istioAction + ")"
			}
			b := &ruleBuilder{c: c, rule: config.AuthorizationRule{Name: name, Action: action}}
			if len(r.From) > 0 && r.From[f].Source != nil {
				b.source(*r.From[f].Source, fmt.Sprintf("%s.from[%d].source", at, f))
			}
			if len(r.To) > 0 && r.To[t].Operation != nil {
				b.operation(*r.To[t].Operation, fmt.Sprintf("%s.to[%d].operation", at, t))
			}
			for j, w := range r.When {
				b.condition(w, fmt.Sprintf("%s.when[%d]", at, j))
			}
			o := authzRuleOut{rule: b.rule, source: comment}
			switch action {
			case config.ActionDeny:
				c.deny = append(c.deny, o)
			case config.ActionAudit:
				c.audit = append(c.audit, o)
			default:
				c.allow = append(c.allow, o)
			}
		}
	}
}

func isEmptySource(s *apSource) bool {
	return len(s.Principals)+len(s.NotPrincipals)+len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+
		len(s.Namespaces)+len(s.NotNamespaces)+len(s.ServiceAccounts)+len(s.NotServiceAccounts)+
		len(s.IPBlocks)+len(s.NotIPBlocks)+len(s.RemoteIPBlocks)+len(s.NotRemoteIPBlocks) == 0
}

func isEmptyOperation(o *apOperation) bool {
	return len(o.Hosts)+len(o.NotHosts)+len(o.Ports)+len(o.NotPorts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0
}

// item is the i-th element of a sequence node, or nil.
func item(n *yaml.Node, i int) *yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// checkKeys refuses the keys of n that the converter does not read: a
// condition it dropped would widen the rule.
func (c *authzConversion) checkKeys(n *yaml.Node, at string, known []string) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !slices.Contains(known, k) {
			c.refuse(at+"."+k, "not a field this converter knows (line %d; known: %s): ignoring it could widen the rule", n.Content[i].Line, strings.Join(known, ", "))
		}
	}
}

// checkNames refuses two rules with one name (two policies whose
// namespace.name.rule coincide).
func (c *authzConversion) checkNames() error {
	seen := map[string]string{}
	for _, list := range [][]authzRuleOut{c.deny, c.allow, c.audit} {
		for _, o := range list {
			if prev, dup := seen[o.rule.Name]; dup {
				return fmt.Errorf("two rules would be named %s (%s and %s): rename one of the policies", o.rule.Name, prev, o.source)
			}
			seen[o.rule.Name] = o.source
		}
	}
	return nil
}

// ruleBuilder fills one Gatehouse rule from a source, an operation and the
// when conditions, refusing what it cannot say exactly.
type ruleBuilder struct {
	c    *authzConversion
	rule config.AuthorizationRule
}

// gatehouseField names a []string field of config.AuthorizationRule by its
// YAML key.
type gatehouseField struct {
	key string
	get func(*config.AuthorizationRule) *[]string
}

var (
	fPrincipals     = gatehouseField{"principals", func(r *config.AuthorizationRule) *[]string { return &r.Principals }}
	fNotPrincipals  = gatehouseField{"not_principals", func(r *config.AuthorizationRule) *[]string { return &r.NotPrincipals }}
	fReqPrincipals  = gatehouseField{"request_principals", func(r *config.AuthorizationRule) *[]string { return &r.RequestPrincipals }}
	fNotReqPrincip  = gatehouseField{"not_request_principals", func(r *config.AuthorizationRule) *[]string { return &r.NotRequestPrincipals }}
	fNamespaces     = gatehouseField{"namespaces", func(r *config.AuthorizationRule) *[]string { return &r.Namespaces }}
	fNotNamespaces  = gatehouseField{"not_namespaces", func(r *config.AuthorizationRule) *[]string { return &r.NotNamespaces }}
	fPeerCIDRs      = gatehouseField{"peer_cidrs", func(r *config.AuthorizationRule) *[]string { return &r.PeerCIDRs }}
	fNotPeerCIDRs   = gatehouseField{"not_peer_cidrs", func(r *config.AuthorizationRule) *[]string { return &r.NotPeerCIDRs }}
	fClientCIDRs    = gatehouseField{"client_cidrs", func(r *config.AuthorizationRule) *[]string { return &r.ClientCIDRs }}
	fNotClientCIDRs = gatehouseField{"not_client_cidrs", func(r *config.AuthorizationRule) *[]string { return &r.NotClientCIDRs }}
	fHosts          = gatehouseField{"hosts", func(r *config.AuthorizationRule) *[]string { return &r.Hosts }}
	fNotHosts       = gatehouseField{"not_hosts", func(r *config.AuthorizationRule) *[]string { return &r.NotHosts }}
	fMethods        = gatehouseField{"methods", func(r *config.AuthorizationRule) *[]string { return &r.Methods }}
	fNotMethods     = gatehouseField{"not_methods", func(r *config.AuthorizationRule) *[]string { return &r.NotMethods }}
	fPaths          = gatehouseField{"paths", func(r *config.AuthorizationRule) *[]string { return &r.Paths }}
	fNotPaths       = gatehouseField{"not_paths", func(r *config.AuthorizationRule) *[]string { return &r.NotPaths }}
	fAudiences      = gatehouseField{"audiences", func(r *config.AuthorizationRule) *[]string { return &r.Audiences }}
	fNotAudiences   = gatehouseField{"not_audiences", func(r *config.AuthorizationRule) *[]string { return &r.NotAudiences }}
	fPresenters     = gatehouseField{"presenters", func(r *config.AuthorizationRule) *[]string { return &r.Presenters }}
	fNotPresenters  = gatehouseField{"not_presenters", func(r *config.AuthorizationRule) *[]string { return &r.NotPresenters }}
)

// negated reports whether f is a not_* field: several lists of one not_*
// field merge exactly (none of a and none of b = none of both).
func (f gatehouseField) negated() bool { return strings.HasPrefix(f.key, "not_") }

// set puts the Istio values (at names them) into field f, after validating
// each as the configuration does. A positive field already set by another
// part of the Istio rule is an AND of two lists, which one Gatehouse list
// cannot hold: refused unless the two lists are the same set.
func (b *ruleBuilder) set(f gatehouseField, values []string, at string) {
	if len(values) == 0 {
		return
	}
	ok := true
	for i, v := range values {
		var one config.AuthorizationRule
		*f.get(&one) = []string{v}
		if err := policy.ValidateAuthzRule(one.Policy()); err != nil {
			b.c.refuse(fmt.Sprintf("%s[%d]", at, i), "%s", strings.TrimPrefix(err.Error(), f.key+"[0]: "))
			ok = false
		}
	}
	if !ok {
		return
	}
	cur := f.get(&b.rule)
	switch {
	case len(*cur) == 0:
		*cur = slices.Clone(values)
	case f.negated():
		for _, v := range values {
			if !slices.Contains(*cur, v) {
				*cur = append(*cur, v)
			}
		}
	case sameSet(*cur, values):
	default:
		b.c.refuse(at, "Gatehouse's %s would have to hold both %v and %v, which must both hold in Istio; one list means any of them, so merging them would widen the rule: write the intersection in one place", f.key, *cur, values)
	}
}

func sameSet(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	for _, v := range b {
		if !slices.Contains(a, v) {
			return false
		}
	}
	return true
}

// setPorts parses Istio's port strings into field (Ports or NotPorts); two
// lists of ports are intersected (ports match exactly, so the intersection
// is exact), not_ports united.
func (b *ruleBuilder) setPorts(field *[]int, negated bool, values []string, at string) {
	if len(values) == 0 {
		return
	}
	var ports []int
	for i, v := range values {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			b.c.refuse(fmt.Sprintf("%s[%d]", at, i), "%q is not a port (1 to 65535; Istio matches ports exactly)", v)
			return
		}
		ports = append(ports, p)
	}
	switch {
	case len(*field) == 0:
		*field = ports
	case negated:
		for _, p := range ports {
			if !slices.Contains(*field, p) {
				*field = append(*field, p)
			}
		}
	default:
		var both []int
		for _, p := range *field {
			if slices.Contains(ports, p) {
				both = append(both, p)
			}
		}
		if len(both) == 0 {
			b.c.refuse(at, "the ports %v and %v must both match, which no request can: the rule would match nothing, which a Gatehouse rule cannot say", *field, ports)
			return
		}
		*field = both
	}
}

func (b *ruleBuilder) source(s apSource, at string) {
	b.set(fPrincipals, s.Principals, at+".principals")
	b.set(fNotPrincipals, s.NotPrincipals, at+".notPrincipals")
	b.set(fReqPrincipals, s.RequestPrincipals, at+".requestPrincipals")
	b.set(fNotReqPrincip, s.NotRequestPrincipals, at+".notRequestPrincipals")
	b.set(fNamespaces, s.Namespaces, at+".namespaces")
	b.set(fNotNamespaces, s.NotNamespaces, at+".notNamespaces")
	b.set(fPrincipals, b.serviceAccounts(s.ServiceAccounts, at+".serviceAccounts"), at+".serviceAccounts")
	b.set(fNotPrincipals, b.serviceAccounts(s.NotServiceAccounts, at+".notServiceAccounts"), at+".notServiceAccounts")
	b.set(fPeerCIDRs, s.IPBlocks, at+".ipBlocks")
	b.set(fNotPeerCIDRs, s.NotIPBlocks, at+".notIpBlocks")
	b.set(fClientCIDRs, s.RemoteIPBlocks, at+".remoteIpBlocks")
	b.set(fNotClientCIDRs, s.NotRemoteIPBlocks, at+".notRemoteIpBlocks")
	if len(s.RequestPrincipals)+len(s.NotRequestPrincipals) > 0 {
		b.c.noteIdentity()
	}
	if len(s.RemoteIPBlocks)+len(s.NotRemoteIPBlocks) > 0 {
		b.c.noteRemoteIP()
	}
	if len(s.IPBlocks)+len(s.NotIPBlocks) > 0 {
		b.c.notePeer()
	}
}

// serviceAccounts maps "ns/sa" to the principal suffix "*/ns/NS/sa/SA": the
// identity of that service account in any trust domain, as Istio matches it.
func (b *ruleBuilder) serviceAccounts(values []string, at string) []string {
	var out []string
	for i, v := range values {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok || ns == "" || sa == "" || strings.ContainsAny(v, "*") || strings.Contains(sa, "/") {
			b.c.refuse(fmt.Sprintf("%s[%d]", at, i), "%q is not <namespace>/<serviceaccount> without wildcards, the only form this converter maps exactly (to principals */ns/NS/sa/SA)", v)
			continue
		}
		out = append(out, "*/ns/"+ns+"/sa/"+sa)
	}
	if len(out) != len(values) {
		return nil
	}
	return out
}

func (b *ruleBuilder) operation(o apOperation, at string) {
	b.set(fHosts, o.Hosts, at+".hosts")
	b.set(fNotHosts, o.NotHosts, at+".notHosts")
	b.set(fMethods, o.Methods, at+".methods")
	b.set(fNotMethods, o.NotMethods, at+".notMethods")
	b.set(fPaths, o.Paths, at+".paths")
	b.set(fNotPaths, o.NotPaths, at+".notPaths")
	b.setPorts(&b.rule.Ports, false, o.Ports, at+".ports")
	b.setPorts(&b.rule.NotPorts, true, o.NotPorts, at+".notPorts")
}

// condition maps one when entry. Header and claim conditions are lists of
// their own in Gatehouse (each must hold), so any number of them is exact.
func (b *ruleBuilder) condition(w apCondition, at string) {
	at += " key " + w.Key
	if len(w.Values) == 0 && len(w.NotValues) == 0 {
		b.c.refuse(at, "neither values nor notValues is set (Istio rejects it too)")
		return
	}
	pair := func(pos, neg gatehouseField) {
		b.set(pos, w.Values, at+" values")
		b.set(neg, w.NotValues, at+" notValues")
	}
	key := w.Key
	switch {
	case strings.HasPrefix(key, "request.headers["):
		name, ok := bracketed(strings.TrimPrefix(key, "request.headers"))
		if !ok || len(name) != 1 {
			b.c.refuse(at, "want request.headers[Name]")
			return
		}
		h := config.HeaderCondition{Name: name[0], Values: w.Values, NotValues: w.NotValues}
		if err := policy.ValidateAuthzRule(config.AuthorizationRule{Headers: []config.HeaderCondition{h}}.Policy()); err != nil {
			b.c.refuse(at, "%s", strings.TrimPrefix(err.Error(), "headers[0]"))
			return
		}
		b.rule.Headers = append(b.rule.Headers, h)
	case strings.HasPrefix(key, "request.auth.claims["):
		path, ok := bracketed(strings.TrimPrefix(key, "request.auth.claims"))
		if !ok {
			b.c.refuse(at, "want request.auth.claims[name] or request.auth.claims[a][b] for a nested claim")
			return
		}
		cc := config.ClaimCondition{Path: path, Values: w.Values, NotValues: w.NotValues}
		if err := policy.ValidateAuthzRule(config.AuthorizationRule{Claims: []config.ClaimCondition{cc}}.Policy()); err != nil {
			b.c.refuse(at, "%s", strings.TrimPrefix(err.Error(), "claims[0]"))
			return
		}
		b.rule.Claims = append(b.rule.Claims, cc)
		b.c.noteIdentity()
		b.c.note("request.auth.claims conditions: a string claim is compared whole unless its provider lists it in space_delimited_claims (scope and scp by default); list there the claims your RequestAuthentication lists in spaceDelimitedClaims")
	case key == "source.ip":
		pair(fPeerCIDRs, fNotPeerCIDRs)
		b.c.notePeer()
	case key == "remote.ip":
		pair(fClientCIDRs, fNotClientCIDRs)
		b.c.noteRemoteIP()
	case key == "source.namespace":
		pair(fNamespaces, fNotNamespaces)
	case key == "source.principal":
		pair(fPrincipals, fNotPrincipals)
	case key == "request.auth.principal":
		pair(fReqPrincipals, fNotReqPrincip)
		b.c.noteIdentity()
	case key == "request.auth.audiences":
		pair(fAudiences, fNotAudiences)
		b.c.noteIdentity()
	case key == "request.auth.presenter":
		pair(fPresenters, fNotPresenters)
		b.c.noteIdentity()
	case key == "destination.port":
		b.setPorts(&b.rule.Ports, false, w.Values, at+" values")
		b.setPorts(&b.rule.NotPorts, true, w.NotValues, at+" notValues")
	case key == "destination.ip":
		b.c.refuse(at, "Gatehouse has no rule on the destination address (match the port with destination.port, or the host with to.operation.hosts)")
	case key == "connection.sni":
		b.c.refuse(at, "the TLS server name is not in the CheckRequest Gatehouse receives; match to.operation.hosts instead")
	case strings.HasPrefix(key, "experimental."):
		b.c.refuse(at, "experimental keys read Envoy filter metadata that an ext_authz server does not see")
	default:
		b.c.refuse(at, "not a when key Istio knows (Istio rejects it too): request.headers[], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[], destination.port")
	}
}

// bracketed splits "[a][b]" into ["a", "b"].
func bracketed(s string) ([]string, bool) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, false
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	return out, len(out) > 0
}

func (c *authzConversion) noteIdentity() {
	c.note("request principals and request.auth conditions read the verified token: configure the jwt providers (gatehousectl convert requestauthentication); a request with an invalid token is refused with 401 before any allow rule, as Istio's RequestAuthentication refuses it")
}

func (c *authzConversion) notePeer() {
	c.note("ipBlocks and source.ip become peer_cidrs, which match the peer address Envoy reports in the CheckRequest (attributes.source.address): the direct peer, except behind PROXY protocol, where Envoy reports the address the load balancer sent while Istio's ipBlocks still see the load balancer; there, check that the blocks name the clients you mean")
}

func (c *authzConversion) noteRemoteIP() {
	c.note("remoteIpBlocks and remote.ip become client_cidrs, which match the client IP that Gatehouse's client_ip section resolves: configure it as your gateway's numTrustedProxies / X-Forwarded-For handling (docs/client-ip.md)")
}

// yaml renders the authorization block with the shared configuration types,
// each rule commented with its source.
func (c *authzConversion) yaml(file string) ([]byte, error) {
	az := config.Authorization{AllowNothing: len(c.allowNothing) > 0 && len(c.allow) == 0}
	var all []authzRuleOut
	for _, list := range [][]authzRuleOut{c.deny, c.allow, c.audit} {
		all = append(all, list...)
	}
	for _, o := range all {
		az.Rules = append(az.Rules, o.rule)
	}
	var body yaml.Node
	if err := body.Encode(az); err != nil {
		return nil, err
	}
	flowScalarLists(&body)
	if rules := findKey(&body, "rules"); rules != nil {
		for i, n := range rules.Content {
			n.HeadComment = all[i].source
		}
	}
	if an := findKeyNode(&body, "allow_nothing"); an != nil {
		an.HeadComment = "from the ALLOW policies without rules: " + strings.Join(c.allowNothing, ", ")
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "authorization", HeadComment: "Converted from the AuthorizationPolicy objects in " + file + " by gatehousectl convert.\nReview the notes printed with it; docs/authorization.md describes every key."},
		&body,
	}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// findKeyNode returns the key node (not the value) of key in mapping n.
func findKeyNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

// flowScalarLists writes lists of scalars on one line ([GET, POST]), as
// Istio's documentation writes them.
func flowScalarLists(n *yaml.Node) {
	if n.Kind == yaml.SequenceNode && len(n.Content) > 0 && !slices.ContainsFunc(n.Content, func(e *yaml.Node) bool { return e.Kind != yaml.ScalarNode }) {
		n.Style = yaml.FlowStyle
		return
	}
	for _, c := range n.Content {
		flowScalarLists(c)
	}
}
