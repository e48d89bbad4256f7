package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/internal/ipset"
)

// Defaults for every key that has one; Default() applies them.
const (
	DefaultGRPCAddr        = ":9191"
	DefaultHTTPAddr        = ":8181"
	DefaultMaxRecvMsgBytes = 4 << 20
	DefaultHTTPMaxConns    = 64
	DefaultShutdownGrace   = 15 * time.Second
	DefaultAdminAddr       = "127.0.0.1:9192"
	// DefaultGCMinHeapMiB is ops.gc_min_heap_mib's default
	// (docs/performance.md has the measurements behind it).
	DefaultGCMinHeapMiB = 24
)

// Default returns the configuration used when no file is given.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.Listen.GRPC == "" {
		c.Listen.GRPC = DefaultGRPCAddr
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = DefaultHTTPAddr
	}
	if c.Listen.HTTPMaxConns == 0 {
		c.Listen.HTTPMaxConns = DefaultHTTPMaxConns
	}
	if c.GRPC.MaxRecvMsgBytes == 0 {
		c.GRPC.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if c.GRPC.ShutdownGrace == 0 {
		c.GRPC.ShutdownGrace = Duration(DefaultShutdownGrace)
	}
	if c.Policy.RegoVersion == "" {
		c.Policy.RegoVersion = "v1"
	}
	if c.Policy.Watch == nil {
		c.Policy.Watch = ptr(true)
	}
	if c.Policy.ParseBody == nil {
		c.Policy.ParseBody = ptr(true)
	}
	if c.ClientIP.Source == "" {
		c.ClientIP.Source = "peer"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Decisions == nil {
		c.Log.Decisions = ptr(true)
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = DefaultAdminAddr
	}
	if c.Policy.Shadow.Sample == nil {
		c.Policy.Shadow.Sample = ptr(1.0)
	}
	if c.Ops.GCMinHeapMiB == nil {
		c.Ops.GCMinHeapMiB = ptr(DefaultGCMinHeapMiB)
	}
}

func ptr[T any](v T) *T { return &v }

// Load reads, decodes and validates the file at path. Relative paths inside the
// file (policy.paths, jwt jwks_file and ca_file) are resolved against the file's
// directory, so a config works the same from any working directory. Every error
// names the file, the key and the fix.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w (pass --config with a readable YAML file, or omit it to run on the embedded defaults)", path, err)
	}
	c, err := Parse(raw, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates YAML. baseDir resolves relative paths.
func Parse(raw []byte, baseDir string) (*Config, error) {
	c := &Config{}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) > 0 {
		doc := root.Content[0]
		if doc.Kind != yaml.MappingNode && !(doc.Kind == yaml.ScalarNode && doc.Tag == "!!null") {
			return nil, fmt.Errorf("line %d: the top level must be a mapping of keys such as listen, policy, jwt", doc.Line)
		}
		if err := checkKeys(doc, reflect.TypeOf(Config{}), ""); err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			return nil, explainDecodeError(err, doc)
		}
	}
	c.resolvePaths(baseDir)
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkKeys walks the YAML tree beside the Go type and reports the first
// unknown key with its line, full key path and the valid keys.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode && t != reflect.TypeOf(Duration(0)):
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = t.Field(i).Type
			names = append(names, name)
		}
		sort.Strings(names)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("line %d: unknown key %q%s; valid keys here are: %s", k.Line, k.Value, under(path), strings.Join(names, ", "))
			}
			if err := checkKeys(v, ft, join(path, k.Value)); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func under(path string) string {
	if path == "" {
		return " at the top level"
	}
	return " under " + path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var lineRE = regexp.MustCompile(`line (\d+): (.*)`)

// explainDecodeError turns yaml.v3's "line N: cannot unmarshal ..." into a
// message naming the key found on that line.
func explainDecodeError(err error, doc *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	keys := map[int]string{}
	indexKeys(doc, "", keys)
	var msgs []string
	for _, e := range te.Errors {
		m := lineRE.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, e)
			continue
		}
		line, _ := strconv.Atoi(m[1])
		key := keys[line]
		msg := m[2]
		if strings.HasPrefix(msg, "cannot unmarshal") {
			msg = "wrong type: " + msg
		}
		msgs = append(msgs, fmt.Sprintf("line %d: %s: %s", line, key, msg))
	}
	return errors.New(strings.Join(msgs, "; "))
}

func indexKeys(n *yaml.Node, path string, keys map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			keys[k.Line] = p
			if v.Line != k.Line || v.Kind == yaml.ScalarNode {
				keys[v.Line] = p
			}
			indexKeys(v, p, keys)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if _, ok := keys[item.Line]; !ok || item.Kind == yaml.ScalarNode {
				keys[item.Line] = p
			}
			indexKeys(item, p, keys)
		}
	}
}

func (c *Config) resolvePaths(baseDir string) {
	if baseDir == "" {
		return
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(baseDir, p)
	}
	for i, p := range c.Policy.Paths {
		c.Policy.Paths[i] = abs(p)
	}
	for i, p := range c.Policy.Shadow.Paths {
		c.Policy.Shadow.Paths[i] = abs(p)
	}
	for i := range c.JWT.Providers {
		c.JWT.Providers[i].JWKSFile = abs(c.JWT.Providers[i].JWKSFile)
		c.JWT.Providers[i].CAFile = abs(c.JWT.Providers[i].CAFile)
	}
}

// validateAllowNet checks policy.allow_net: host names or IP addresses as
// OPA compares them (the URL's host without its port), or "*" alone.
func validateAllowNet(hosts []string) error {
	for i, h := range hosts {
		at := fmt.Sprintf("policy.allow_net[%d]", i)
		switch {
		case h == "*":
			if len(hosts) > 1 {
				return fmt.Errorf("%s: \"*\" (any host) cannot be combined with other entries; keep either \"*\" or the list of hosts", at)
			}
		case strings.TrimSpace(h) == "":
			return fmt.Errorf("%s: is empty; write a host name or IP address, or remove the entry", at)
		case strings.Contains(h, "://") || strings.ContainsAny(h, "/?#@ "):
			return fmt.Errorf("%s: %q is not a host; write the host name or IP address alone (e.g. api.example.com, 10.0.0.5)", at, h)
		case strings.Contains(h, ":"):
			return fmt.Errorf("%s: %q has a port or is an IPv6 address; allow_net matches the host without its port (as OPA's allow_net), so write the host alone; IPv6 literals cannot be matched", at, h)
		}
	}
	return nil
}

// Validate checks what can be checked without building the parts (the JWT
// providers and client IP settings are validated by their packages). It
// reports the first problem with its key and the fix.
func (c *Config) Validate() error {
	if err := validateAddr("listen.grpc", c.Listen.GRPC); err != nil {
		return err
	}
	if err := validateAddr("listen.http", c.Listen.HTTP); err != nil {
		return err
	}
	if c.Listen.HTTPMaxConns < 1 {
		return fmt.Errorf("listen.http_max_conns: %d must be at least 1 (default %d)", c.Listen.HTTPMaxConns, DefaultHTTPMaxConns)
	}
	if err := c.validateForwardAuth(); err != nil {
		return err
	}
	if c.GRPC.MaxRecvMsgBytes < 1024 || c.GRPC.MaxRecvMsgBytes > 256<<20 {
		return fmt.Errorf("grpc.max_recv_msg_bytes: %d is out of range; use a size between 1024 and 268435456 (default %d); it must exceed Envoy's with_request_body.max_request_bytes", c.GRPC.MaxRecvMsgBytes, DefaultMaxRecvMsgBytes)
	}
	if c.GRPC.ShutdownGrace < 0 {
		return fmt.Errorf("grpc.shutdown_grace: must not be negative (e.g. 15s)")
	}
	for i, p := range c.Policy.Paths {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("policy.paths[%d]: %q does not exist; create it or remove it from policy.paths (an empty list runs the embedded default policy)", i, p)
		}
	}
	if c.Policy.Decision != "" && !validDecision(c.Policy.Decision) {
		return fmt.Errorf("policy.decision: %q is not a rule path; use a path like envoy/authz/allow", c.Policy.Decision)
	}
	if c.Policy.RegoVersion != "v0" && c.Policy.RegoVersion != "v1" {
		return fmt.Errorf("policy.rego_version: %q is not v0 or v1; use v1 (OPA 1.x syntax, the default) or v0 for policies written before OPA 1.0", c.Policy.RegoVersion)
	}
	if c.Policy.MaxParseBodyBytes < 0 {
		return fmt.Errorf("policy.max_parse_body_bytes: must not be negative (0 means the default, 262144)")
	}
	if err := validateAllowNet(c.Policy.AllowNet); err != nil {
		return err
	}
	if c.Policy.FailStatus != 0 && (c.Policy.FailStatus < 400 || c.Policy.FailStatus > 599) {
		return fmt.Errorf("policy.fail_status: %d is not an HTTP error status; use a code from 400 to 599 (default 403)", c.Policy.FailStatus)
	}
	if c.JWT.ClockSkew < 0 || c.JWT.ClockSkew.D() > time.Hour {
		return fmt.Errorf("jwt.clock_skew: %s is out of range; use a duration from 0s to 1h (default %s)", c.JWT.ClockSkew.D(), jwt.DefaultClockSkew)
	}
	if c.Policy.EvalTimeout < 0 {
		return fmt.Errorf("policy.eval_timeout: must not be negative (e.g. 1s, the default)")
	}
	for _, l := range []struct {
		key string
		v   int
	}{
		{"limits.max_headers", c.Limits.MaxHeaders}, {"limits.max_header_bytes", c.Limits.MaxHeaderBytes},
		{"limits.max_path_bytes", c.Limits.MaxPathBytes}, {"limits.max_query_params", c.Limits.MaxQueryParams},
		{"limits.max_json_depth", c.Limits.MaxJSONDepth},
	} {
		if l.v < 0 {
			return fmt.Errorf("%s: must not be negative (0 means the default; docs/configuration.md lists them)", l.key)
		}
	}
	if c.JWT.MaxTokenBytes < 0 {
		return fmt.Errorf("jwt.max_token_bytes: must not be negative (default %d)", jwt.DefaultMaxTokenBytes)
	}
	for i, raw := range c.Bypass.TrustedCIDRs {
		p, err := ipset.ParsePrefix(raw)
		if err != nil {
			return fmt.Errorf("bypass.trusted_cidrs[%d]: %q is %w", i, raw, err)
		}
		// Trusting every address turns authentication off for everyone:
		// refuse it unless acknowledged in so many words.
		if ipset.CoversAll(p) && !c.Bypass.AllowAllAddresses {
			return fmt.Errorf("bypass.trusted_cidrs[%d]: %q trusts every client address, so no request would need a token; list your internal ranges, or set bypass.allow_all_addresses: true if that is really intended", i, raw)
		}
	}
	for i, p := range c.Bypass.Paths {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("bypass.paths[%d]: %q must start with /", i, p)
		}
	}
	if err := validateHeaderRules("headers", c.Headers.Require, c.Headers.Deny, c.Headers.AllowValues); err != nil {
		return err
	}
	for i, r := range c.Headers.RulesFor {
		key := fmt.Sprintf("headers.rules_for[%d]", i)
		if r.Host == "" && r.PathPrefix == "" {
			return fmt.Errorf("%s: set host, path_prefix or both (a rule for every request belongs in headers.require/deny/allow_values)", key)
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			return fmt.Errorf("%s.path_prefix: %q must start with /", key, r.PathPrefix)
		}
		if err := validateHeaderRules(key, r.Require, r.Deny, r.AllowValues); err != nil {
			return err
		}
	}
	if err := c.Authorization.validate(); err != nil {
		return err
	}
	if err := c.validateObservability(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	return nil
}

// validateForwardAuth checks the listener and the keys that only make sense
// with it; the values of forward_auth.* are validated by authz/forwardauth.
func (c *Config) validateForwardAuth() error {
	fa := c.ForwardAuth
	if c.Listen.ForwardAuth == "" {
		if fa != (ForwardAuth{}) {
			return fmt.Errorf("forward_auth: set but listen.forward_auth is empty, so nothing would serve it; set listen.forward_auth (e.g. \":8282\") or remove forward_auth")
		}
		return nil
	}
	if err := validateAddr("listen.forward_auth", c.Listen.ForwardAuth); err != nil {
		return err
	}
	if fa.Mode == "" {
		return fmt.Errorf("forward_auth.mode: required with listen.forward_auth; set traefik (Traefik forwardAuth, Caddy forward_auth), nginx (NGINX auth_request, ingress-nginx auth-url) or envoy (Envoy ext_authz http_service)")
	}
	if fa.MaxBodyBytes < 0 {
		return fmt.Errorf("forward_auth.max_body_bytes: must not be negative (0 or absent for the default 1048576)")
	}
	return nil
}

func validateAddr(key, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not a listen address; use host:port such as \":9191\" or \"127.0.0.1:9191\"", key, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: port %q in %q is not a number from 0 to 65535", key, port, addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%s: host %q in %q is not an IP address; use an IP, localhost, or leave it empty for all interfaces", key, host, addr)
	}
	return nil
}

var decisionRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*([/.][A-Za-z_][A-Za-z0-9_]*)*$`)

func validDecision(d string) bool { return decisionRE.MatchString(strings.TrimPrefix(d, "/")) }

var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validateHeaderRules(key string, require, deny []HeaderMatch, allow []HeaderValues) error {
	check := func(k string, ms []HeaderMatch) error {
		for i, m := range ms {
			if !headerNameRE.MatchString(m.Name) {
				return fmt.Errorf("%s.%s[%d].name: %q is not a header name", key, k, i, m.Name)
			}
			if m.Regex != "" {
				if _, err := regexp.Compile(m.Regex); err != nil {
					return fmt.Errorf("%s.%s[%d].regex: %v (RE2 syntax, as Go's regexp and Rego's regex.match)", key, k, i, err)
				}
			}
		}
		return nil
	}
	if err := check("require", require); err != nil {
		return err
	}
	if err := check("deny", deny); err != nil {
		return err
	}
	for i, a := range allow {
		if !headerNameRE.MatchString(a.Name) {
			return fmt.Errorf("%s.allow_values[%d].name: %q is not a header name", key, i, a.Name)
		}
		if len(a.Values) == 0 {
			return fmt.Errorf("%s.allow_values[%d].values: empty; list the allowed values (an empty list would deny every request carrying %s)", key, i, a.Name)
		}
	}
	return nil
}

// UnmarshalYAML reads durations written as "30s", "10m" or "1h30m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a duration such as 30s or 10m", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration; write it like 30s, 10m or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// validateObservability checks listen.admin, ops and policy.shadow.
func (c *Config) validateObservability() error {
	if err := validateAddr("listen.admin", c.Listen.Admin); err != nil {
		return err
	}
	if c.Ops.MaxReasonLabels < 0 {
		return fmt.Errorf("ops.max_reason_labels: must not be negative (0 means the default, 64)")
	}
	if m := c.Ops.GCMinHeapMiB; m != nil && (*m < 0 || *m > 1<<20) {
		return fmt.Errorf("ops.gc_min_heap_mib: %d is not a size; write a number of MiB such as %d, or 0 to leave the Go runtime's default", *m, DefaultGCMinHeapMiB)
	}
	sh := c.Policy.Shadow
	for i, p := range sh.Paths {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("policy.shadow.paths[%d]: %q does not exist; create it or remove it from policy.shadow.paths (an empty list runs no shadow policy)", i, p)
		}
	}
	if sh.Decision != "" && !validDecision(sh.Decision) {
		return fmt.Errorf("policy.shadow.decision: %q is not a rule path; use a path like envoy/authz/allow", sh.Decision)
	}
	if s := sh.Sample; s != nil && !(*s > 0 && *s <= 1) {
		return fmt.Errorf("policy.shadow.sample: %v is not a fraction; use a number in (0, 1], such as 0.1 for one check in ten (default 1)", *s)
	}
	if sh.QueueSize < 0 {
		return fmt.Errorf("policy.shadow.queue_size: must not be negative (0 means the default, 1024)")
	}
	return nil
}
