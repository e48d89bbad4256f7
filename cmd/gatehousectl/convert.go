package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const convertUsage = `Usage: gatehousectl convert requestauthentication [--jwks-dir DIR] FILE

Read Istio RequestAuthentication objects (FILE, or - for standard input; one
or many YAML documents, or a List as 'kubectl get requestauthentication -A
-o yaml' prints) and print the equivalent Gatehouse 'jwt:' configuration on
standard output. Every jwtRules entry becomes one provider.

What cannot be carried over, or changes meaning, is explained on standard
error, one note per line: the selector or targetRefs (Gatehouse applies its
providers to every request the gateway sends it; scope with the CUSTOM
AuthorizationPolicy), inline jwks (Gatehouse reads keys from jwks_file: with
--jwks-dir they are written there), an empty audience list (Istio accepts any
audience; Gatehouse only when told so), and fields this converter does not know.

Examples:
  gatehousectl convert requestauthentication ra.yaml > jwt.yaml
  kubectl get requestauthentication -A -o yaml | gatehousectl convert requestauthentication --jwks-dir ./jwks -
`

// convertOptions are the parsed flags of convert requestauthentication.
type convertOptions struct {
	file    string
	jwksDir string
}

func (a *app) convert(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, convertUsage, "\n", convertAuthzUsage)
		return usageErrorf("convert", "missing what to convert: requestauthentication or authorizationpolicy")
	}
	if args[0] == "authorizationpolicy" {
		return a.convertAuthorizationPolicy(ctx, args[1:])
	}
	if args[0] != "requestauthentication" {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
			return &helpRequest{text: convertUsage + "\n" + convertAuthzUsage}
		}
		return usageErrorf("convert", "unknown conversion %q; the ones available are requestauthentication and authorizationpolicy", args[0])
	}
	const cmd = "convert requestauthentication"
	fs := newFlagSet(cmd)
	var o convertOptions
	fs.StringVar(&o.jwksDir, "jwks-dir", "", "write each inline jwks to DIR/<provider>.jwks.json and point jwks_file at it")
	rest, err := parseFlags(fs, cmd, convertUsage, args[1:])
	if err != nil {
		return err
	}
	if err := refuseArguments(cmd, convertUsage, rest, 1, " (convert takes one FILE; put several objects in one file, separated by ---)"); err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageErrorf(cmd, "want one FILE (or - for standard input), got none")
	}
	o.file = rest[0]

	var raw []byte
	if o.file == "-" {
		raw, err = io.ReadAll(a.stdin)
	} else {
		raw, err = os.ReadFile(o.file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", o.file, err)
	}
	res, err := convertRequestAuthentications(raw, o.file)
	if err != nil {
		return err
	}
	if err := writeInlineJWKS(res, o.jwksDir); err != nil {
		return err
	}
	for _, n := range res.notes {
		fmt.Fprintf(a.stderr, "note: %s\n", n)
	}
	out, err := res.yaml(o.file)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(out)
	return err
}

// requestAuthentication is the part of an Istio RequestAuthentication the
// converter reads. Unknown fields are reported, not rejected: a newer Istio
// may add some.
type requestAuthentication struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		Selector   yaml.Node `yaml:"selector"`
		TargetRef  yaml.Node `yaml:"targetRef"`
		TargetRefs yaml.Node `yaml:"targetRefs"`
		JWTRules   []jwtRule `yaml:"jwtRules"`
	} `yaml:"spec"`
}

// jwtRule is one entry of spec.jwtRules (istio.io/api security/v1beta1).
type jwtRule struct {
	Issuer      string   `yaml:"issuer"`
	Audiences   []string `yaml:"audiences"`
	JWKSURI     string   `yaml:"jwksUri"`
	JWKS        string   `yaml:"jwks"`
	FromHeaders []struct {
		Name   string `yaml:"name"`
		Prefix string `yaml:"prefix"`
	} `yaml:"fromHeaders"`
	FromParams            []string `yaml:"fromParams"`
	FromCookies           []string `yaml:"fromCookies"`
	OutputPayloadToHeader string   `yaml:"outputPayloadToHeader"`
	ForwardOriginalToken  bool     `yaml:"forwardOriginalToken"`
	OutputClaimToHeaders  []struct {
		Header string `yaml:"header"`
		Claim  string `yaml:"claim"`
	} `yaml:"outputClaimToHeaders"`
	Timeout              string   `yaml:"timeout"`
	SpaceDelimitedClaims []string `yaml:"spaceDelimitedClaims"`
}

// Keys of the Istio objects the converter understands; anything else is
// reported as not converted.
var (
	raSpecKeys  = []string{"jwtRules", "selector", "targetRef", "targetRefs"}
	jwtRuleKeys = []string{"audiences", "forwardOriginalToken", "fromCookies", "fromHeaders", "fromParams", "issuer",
		"jwks", "jwksUri", "outputClaimToHeaders", "outputPayloadToHeader", "spaceDelimitedClaims", "timeout"}
)

// providerOut is one Gatehouse jwt.providers entry; the yaml keys are those
// of config.JWTProvider (the test loads the output with config.Parse).
type providerOut struct {
	Name             string      `yaml:"name"`
	Issuer           string      `yaml:"issuer"`
	Audiences        []string    `yaml:"audiences,omitempty"`
	AllowAnyAudience bool        `yaml:"allow_any_audience,omitempty"`
	JWKSURI          string      `yaml:"jwks_uri,omitempty"`
	JWKSFile         string      `yaml:"jwks_file,omitempty"`
	Discovery        bool        `yaml:"discovery,omitempty"`
	FromHeaders      []headerOut `yaml:"from_headers,omitempty"`
	FromParams       []string    `yaml:"from_params,omitempty"`
	FromCookies      []string    `yaml:"from_cookies,omitempty"`
	ForwardToken     bool        `yaml:"forward_token"`
	ClaimToHeaders   []claimOut  `yaml:"claim_to_headers,omitempty"`
	PayloadHeader    string      `yaml:"payload_header,omitempty"`
	FetchTimeout     string      `yaml:"fetch_timeout,omitempty"`
	source           string      // "namespace/name jwtRules[i]", for comments and notes
	inlineJWKS       []byte      // spec.jwtRules[i].jwks, written by writeInlineJWKS
}

type headerOut struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix,omitempty"`
}

type claimOut struct {
	Claim  string `yaml:"claim"`
	Header string `yaml:"header"`
}

// conversion is the result: the providers, in input order, and the notes.
type conversion struct {
	providers []*providerOut
	notes     []string
}

// convertRequestAuthentications converts every RequestAuthentication in raw.
// Objects of other kinds are skipped with a note; no RequestAuthentication at
// all is an error.
func convertRequestAuthentications(raw []byte, file string) (*conversion, error) {
	docs, err := splitDocuments(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c := &conversion{}
	byIssuer := map[string]*providerOut{}
	names := map[string]bool{}
	var found int
	for _, doc := range docs {
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
		}
		if err := doc.node.Decode(&head); err != nil {
			return nil, fmt.Errorf("%s: line %d: %w", file, doc.node.Line, err)
		}
		if head.Kind != "RequestAuthentication" || !strings.HasPrefix(head.APIVersion, "security.istio.io/") {
			c.note("%s: line %d: skipped %s %q: not a security.istio.io RequestAuthentication", file, doc.node.Line, orUnknown(head.Kind), head.Metadata.Name)
			continue
		}
		found++
		var ra requestAuthentication
		if err := doc.node.Decode(&ra); err != nil {
			return nil, fmt.Errorf("%s: line %d: RequestAuthentication %s: %w", file, doc.node.Line, head.Metadata.Name, err)
		}
		id := ra.Metadata.Name
		if ra.Metadata.Namespace != "" {
			id = ra.Metadata.Namespace + "/" + ra.Metadata.Name
		}
		c.unknownKeys(doc.node, id, "spec", raSpecKeys)
		if ra.Spec.Selector.Kind != 0 || ra.Spec.TargetRef.Kind != 0 || ra.Spec.TargetRefs.Kind != 0 {
			c.note("%s: selector/targetRef not converted: Gatehouse applies its providers to every request the gateway sends it; choose those requests with the CUSTOM AuthorizationPolicy's selector or targetRefs and rules", id)
		}
		if len(ra.Spec.JWTRules) == 0 {
			c.note("%s: no jwtRules, nothing to convert", id)
		}
		rules := findKey(findKey(doc.node, "spec"), "jwtRules")
		for i, rule := range ra.Spec.JWTRules {
			at := fmt.Sprintf("%s jwtRules[%d]", id, i)
			if rules != nil && rules.Kind == yaml.SequenceNode && i < len(rules.Content) {
				c.unknownKeysIn(rules.Content[i], at, jwtRuleKeys)
			}
			before := len(c.notes)
			p := c.convertRule(rule, at)
			if p == nil {
				continue
			}
			p.Name = uniqueName(names, providerName(ra.Metadata.Name, i, len(ra.Spec.JWTRules)))
			if prev, dup := byIssuer[p.Issuer]; dup {
				if c.sameSettings(prev, p) {
					// The notes on this rule were already made on prev.
					c.notes = c.notes[:before]
					c.note("%s: same issuer and settings as %s; converted once (provider %s)", p.source, prev.source, prev.Name)
					continue
				}
				c.note("%s: issuer %s is already provider %s (from %s) with different settings; Gatehouse picks the provider by iss, so one issuer is one provider: NOT converted, reconcile the two by hand (for example the union of their audiences)", p.source, p.Issuer, prev.Name, prev.source)
				continue
			}
			names[p.Name] = true
			byIssuer[p.Issuer] = p
			c.providers = append(c.providers, p)
		}
	}
	if found == 0 {
		return nil, fmt.Errorf("%s: no security.istio.io RequestAuthentication found", file)
	}
	if len(c.providers) == 0 {
		return nil, fmt.Errorf("%s: no jwtRules could be converted (see the notes above)", file)
	}
	c.note("RequestAuthentication alone lets requests without a token through (only an AuthorizationPolicy with requestPrincipals rejects them); Gatehouse's default policy answers 401 to a request without a token. AuthorizationPolicy objects (requestPrincipals, request.auth.claims, paths, ...) convert with gatehousectl convert authorizationpolicy (docs/authorization.md)")
	return c, nil
}

// convertRule maps one jwtRule; nil when it cannot be converted at all.
func (c *conversion) convertRule(r jwtRule, at string) *providerOut {
	if r.Issuer == "" {
		c.note("%s: skipped: issuer is empty (Istio rejects such a rule too)", at)
		return nil
	}
	p := &providerOut{Issuer: r.Issuer, source: at, ForwardToken: r.ForwardOriginalToken}

	switch {
	case len(r.Audiences) > 0:
		p.Audiences = r.Audiences
	default:
		p.AllowAnyAudience = true
		c.note("%s: no audiences: Istio then accepts a token for any audience; converted as allow_any_audience: true. List the audiences this gateway serves instead, so tokens minted for other services are refused", at)
	}

	switch {
	case r.JWKS != "":
		p.inlineJWKS = []byte(r.JWKS)
		if !json.Valid(p.inlineJWKS) {
			c.note("%s: jwks is not valid JSON; Istio would reject it as well", at)
		}
		if r.JWKSURI != "" {
			c.note("%s: both jwks and jwksUri are set; Istio uses the inline jwks, and so does the conversion (jwksUri %s is dropped)", at, r.JWKSURI)
		}
	case r.JWKSURI != "":
		p.JWKSURI = r.JWKSURI
	default:
		p.Discovery = true
		c.note("%s: no jwksUri: Istio finds the keys through OpenID discovery at the issuer; converted as discovery: true", at)
	}

	for _, h := range r.FromHeaders {
		p.FromHeaders = append(p.FromHeaders, headerOut{Name: h.Name, Prefix: h.Prefix})
	}
	p.FromParams = r.FromParams
	p.FromCookies = r.FromCookies
	if len(r.FromHeaders) == 0 && len(r.FromParams) == 0 && len(r.FromCookies) == 0 {
		// Istio's default locations are the Authorization header and the
		// access_token query parameter; Gatehouse's default is the header
		// only, so both are written out to keep Istio's behaviour.
		p.FromHeaders = []headerOut{{Name: "authorization", Prefix: "Bearer "}}
		p.FromParams = []string{"access_token"}
		c.note("%s: no token location: Istio's defaults (Authorization: Bearer and the access_token query parameter) are written out; remove from_params if tokens never come in URLs (they end up in access logs)", at)
	}
	if len(r.FromCookies) > 0 && !r.ForwardOriginalToken {
		c.note("%s: tokens read from cookies are not stripped before the upstream (removing the cookie header would drop every other cookie), unlike the headers and parameters of forward_token: false", at)
	}

	for _, ch := range r.OutputClaimToHeaders {
		p.ClaimToHeaders = append(p.ClaimToHeaders, claimOut{Claim: ch.Claim, Header: ch.Header})
	}
	p.PayloadHeader = r.OutputPayloadToHeader

	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 {
			c.note("%s: timeout %q is not a positive duration; not converted (Gatehouse's fetch_timeout default is 5s)", at, r.Timeout)
		} else {
			p.FetchTimeout = d.String()
		}
	}
	if len(r.SpaceDelimitedClaims) > 0 {
		c.note("%s: spaceDelimitedClaims %v not converted: it only changes how AuthorizationPolicy matches those claims; in Rego, split the claim yourself (split(input.jwt.claims.scope, \" \"))", at, r.SpaceDelimitedClaims)
	}
	return p
}

// sameSettings reports whether two rules for one issuer convert to the same
// provider (names and sources aside): Gatehouse picks the provider by iss, so
// one issuer can only be one provider.
func (c *conversion) sameSettings(prev, next *providerOut) bool {
	a, b := *prev, *next
	a.Name, b.Name, a.source, b.source = "", "", "", ""
	ya, errA := yaml.Marshal(a)
	yb, errB := yaml.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ya, yb) && bytes.Equal(a.inlineJWKS, b.inlineJWKS)
}

func (c *conversion) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// unknownKeys reports keys under path (a key of the document) that the
// converter does not read.
func (c *conversion) unknownKeys(doc *yaml.Node, id, key string, known []string) {
	c.unknownKeysIn(findKey(doc, key), id+" "+key, known)
}

func (c *conversion) unknownKeysIn(n *yaml.Node, at string, known []string) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if !containsString(known, k) {
			c.note("%s: %s is not converted: this converter does not know it (line %d)", at, k, n.Content[i].Line)
		}
	}
}

func findKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func orUnknown(kind string) string {
	if kind == "" {
		return "a document without kind"
	}
	return kind
}

type document struct{ node *yaml.Node }

// splitDocuments returns every mapping document of a YAML stream, expanding
// Kubernetes Lists (kind: List, or any object with items) into their items.
func splitDocuments(raw []byte) ([]document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not valid YAML: %w", err)
		}
		if len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		if root.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("line %d: a document must be a YAML mapping (an object with apiVersion and kind)", root.Line)
		}
		if items := findKey(root, "items"); items != nil && items.Kind == yaml.SequenceNode {
			for _, it := range items.Content {
				if it.Kind == yaml.MappingNode {
					docs = append(docs, document{node: it})
				}
			}
			continue
		}
		docs = append(docs, document{node: root})
	}
	return docs, nil
}

var nameRE = regexp.MustCompile(`[^a-z0-9-]+`)

// providerName derives a provider name from the RequestAuthentication's name
// (and the rule's position when it has several rules).
func providerName(raName string, i, n int) string {
	name := strings.Trim(nameRE.ReplaceAllString(strings.ToLower(raName), "-"), "-")
	if name == "" {
		name = "provider"
	}
	if n > 1 {
		name = fmt.Sprintf("%s-%d", name, i+1)
	}
	return name
}

func uniqueName(used map[string]bool, name string) string {
	if !used[name] {
		return name
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s-%d", name, i); !used[n] {
			return n
		}
	}
}

// writeInlineJWKS points each provider with an inline jwks at a file: with
// dir, the file is written there; without, the note says what to save where.
func writeInlineJWKS(c *conversion, dir string) error {
	for _, p := range c.providers {
		if p.inlineJWKS == nil {
			continue
		}
		name := p.Name + ".jwks.json"
		if dir == "" {
			p.JWKSFile = name
			c.note("%s: jwks is inline; Gatehouse reads keys from a file: save the jwks value as %s next to the configuration file (or mount it from a ConfigMap), or rerun with --jwks-dir", p.source, name)
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, append(bytes.TrimSpace(p.inlineJWKS), '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		p.JWKSFile = path
		c.note("%s: inline jwks written to %s; jwks_file is resolved against the configuration file's directory, so move it with the configuration", p.source, path)
	}
	return nil
}

// yaml renders the jwt block, each provider commented with its source.
func (c *conversion) yaml(file string) ([]byte, error) {
	var seq yaml.Node
	seq.Kind = yaml.SequenceNode
	for _, p := range c.providers {
		var n yaml.Node
		if err := n.Encode(p); err != nil {
			return nil, err
		}
		n.HeadComment = "from " + p.source
		seq.Content = append(seq.Content, &n)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "jwt", HeadComment: "Converted from the RequestAuthentication objects in " + file + " by gatehousectl convert.\nReview the notes printed with it; docs/jwt.md describes every key."},
		{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: "providers"}, &seq}},
	}}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
