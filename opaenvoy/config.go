// Package opaenvoy runs Gatehouse as a drop-in for OPA-Envoy
// (open-policy-agent/opa-envoy-plugin): it reads OPA's configuration file and
// OPA-Envoy's plugins.envoy_ext_authz_grpc settings, and runs OPA's own
// plugin manager with its bundle, discovery, decision log and status plugins.
// Policies and data reach Gatehouse's engine from the manager on every
// activation (Runtime); Gatehouse never re-implements bundle download,
// verification or decision log upload. It knows nothing of gRPC: cmd/gatehouse
// maps ExtAuthz onto its listeners.
package opaenvoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"gopkg.in/yaml.v3"
)

// PluginName is OPA-Envoy's plugin name under plugins; LegacyPluginName is
// the older spelling it still registers.
const (
	PluginName       = "envoy_ext_authz_grpc"
	LegacyPluginName = "envoy.ext_authz.grpc"
)

// OPA-Envoy's defaults for plugins.envoy_ext_authz_grpc.
const (
	DefaultAddr           = ":9191"
	DefaultPath           = "envoy/authz/allow"
	DefaultMaxRecvMsgSize = 4 << 20
	DefaultMaxSendMsgSize = 1<<31 - 1
)

// ExtAuthz is plugins.envoy_ext_authz_grpc, read as OPA-Envoy reads it.
type ExtAuthz struct {
	// Network is "tcp" or "unix"; Address is the host:port or the socket
	// path ("@name" for an abstract socket).
	Network, Address string
	// Decision is the rule path evaluated per request (path, or the
	// deprecated query when it is a plain data reference).
	Decision string
	// DryRun allows every request, whatever the decision.
	DryRun bool
	// EnableReflection registers gRPC server reflection.
	EnableReflection bool
	// SkipRequestBodyParse leaves parsed_body out of the input.
	SkipRequestBodyParse bool
	// MaxRecvMsgSize and MaxSendMsgSize bound gRPC messages, in bytes.
	MaxRecvMsgSize, MaxSendMsgSize int
	// EnablePerformanceMetrics was given: Gatehouse's check duration
	// histogram is always on, so it changes nothing.
	EnablePerformanceMetrics bool
}

// extAuthzKeys are the plugin keys Gatehouse reads; refusedExtAuthzKeys are
// OPA-Envoy's keys it refuses, with what to do instead.
var (
	extAuthzKeys = []string{"addr", "path", "query", "dry-run", "enable-reflection", "skip-request-body-parse",
		"grpc-max-recv-msg-size", "grpc-max-send-msg-size", "enable-performance-metrics"}
	refusedExtAuthzKeys = map[string]string{
		"proto-descriptor":                      "Gatehouse decodes the CheckRequest with Envoy's own types and does not convert other protobuf bodies; remove it (parsed_body stays absent for a gRPC request body)",
		"grpc-request-duration-seconds-buckets": "Gatehouse exports gatehouse_check_duration_seconds with fixed buckets instead of OPA-Envoy's grpc_request_duration_seconds; remove it",
	}
)

// ParseExtAuthz reads the plugin's configuration (JSON or YAML) with
// OPA-Envoy's defaults. A key OPA-Envoy does not have, or one Gatehouse
// refuses, is an error naming it.
func ParseExtAuthz(raw []byte) (ExtAuthz, error) {
	var m map[string]any
	if err := util.Unmarshal(raw, &m); err != nil {
		return ExtAuthz{}, fmt.Errorf("plugins.%s: %w", PluginName, err)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if why, ok := refusedExtAuthzKeys[k]; ok {
			return ExtAuthz{}, fmt.Errorf("plugins.%s.%s: not supported: %s", PluginName, k, why)
		}
		if !slices.Contains(extAuthzKeys, k) {
			return ExtAuthz{}, fmt.Errorf("plugins.%s.%s: unknown key; valid keys: %s", PluginName, k, strings.Join(extAuthzKeys, ", "))
		}
	}
	var c struct {
		Addr                     *string `json:"addr"`
		Path                     string  `json:"path"`
		Query                    string  `json:"query"`
		DryRun                   bool    `json:"dry-run"`
		EnableReflection         bool    `json:"enable-reflection"`
		SkipRequestBodyParse     bool    `json:"skip-request-body-parse"`
		MaxRecv                  *int    `json:"grpc-max-recv-msg-size"`
		MaxSend                  *int    `json:"grpc-max-send-msg-size"`
		EnablePerformanceMetrics bool    `json:"enable-performance-metrics"`
	}
	if err := util.Unmarshal(raw, &c); err != nil {
		return ExtAuthz{}, fmt.Errorf("plugins.%s: %w", PluginName, err)
	}
	out := ExtAuthz{
		DryRun:                   c.DryRun,
		EnableReflection:         c.EnableReflection,
		SkipRequestBodyParse:     c.SkipRequestBodyParse,
		EnablePerformanceMetrics: c.EnablePerformanceMetrics,
		MaxRecvMsgSize:           DefaultMaxRecvMsgSize,
		MaxSendMsgSize:           DefaultMaxSendMsgSize,
	}
	addr := DefaultAddr
	if c.Addr != nil {
		addr = *c.Addr
	}
	var err error
	if out.Network, out.Address, err = parseAddr(addr); err != nil {
		return ExtAuthz{}, fmt.Errorf("plugins.%s.addr: %w", PluginName, err)
	}
	for _, size := range []struct {
		key string
		in  *int
		out *int
	}{{"grpc-max-recv-msg-size", c.MaxRecv, &out.MaxRecvMsgSize}, {"grpc-max-send-msg-size", c.MaxSend, &out.MaxSendMsgSize}} {
		if size.in == nil {
			continue
		}
		if *size.in <= 0 {
			return ExtAuthz{}, fmt.Errorf("plugins.%s.%s: %d must be a positive number of bytes", PluginName, size.key, *size.in)
		}
		*size.out = *size.in
	}
	switch {
	case c.Path != "" && c.Query != "":
		return ExtAuthz{}, fmt.Errorf("plugins.%s: path and query are both set; keep only path", PluginName)
	case c.Query != "":
		if out.Decision, err = queryPath(c.Query); err != nil {
			return ExtAuthz{}, fmt.Errorf("plugins.%s.query: %w", PluginName, err)
		}
	case c.Path != "":
		out.Decision = c.Path
	default:
		out.Decision = DefaultPath
	}
	return out, nil
}

// parseAddr reads OPA-Envoy's addr: host:port, grpc://host:port,
// unix:///path or unix://@abstract.
func parseAddr(addr string) (network, address string, err error) {
	if !strings.Contains(addr, "://") {
		addr = "grpc://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", "", err
	}
	switch u.Scheme {
	case "grpc":
		if u.Path != "" || u.Host == "" {
			return "", "", fmt.Errorf("%q: want host:port, grpc://host:port or unix:///path", addr)
		}
		return "tcp", u.Host, nil
	case "unix":
		path := u.Host + u.Path
		if strings.HasPrefix(addr, "unix://@") {
			path = "@" + path // an abstract socket; url.Parse reads the @ as user info
		}
		if path == "" || path == "@" {
			return "", "", fmt.Errorf("%q: no socket path", addr)
		}
		return "unix", path, nil
	}
	return "", "", fmt.Errorf("%q: scheme %q is neither grpc nor unix", addr, u.Scheme)
}

// queryPath turns the deprecated query, when it is a plain reference into
// data with constant keys ("data.envoy.authz.allow"), into a path. Anything
// else would need a general query evaluator per request; it is refused.
func queryPath(query string) (string, error) {
	body, err := ast.ParseBody(query)
	if err != nil {
		return "", err
	}
	if len(body) == 1 {
		if t, ok := body[0].Terms.(*ast.Term); ok {
			if ref, ok := t.Value.(ast.Ref); ok && ref.HasPrefix(ast.DefaultRootRef) && len(ref) > 1 {
				segs := make([]string, 0, len(ref)-1)
				for _, seg := range ref[1:] {
					s, ok := seg.Value.(ast.String)
					if !ok {
						break
					}
					segs = append(segs, string(s))
				}
				if len(segs) == len(ref)-1 {
					return strings.Join(segs, "/"), nil
				}
			}
		}
	}
	return "", fmt.Errorf("%q is not a plain reference to a rule such as data.envoy.authz.allow; write the rule and set path to it instead (query is deprecated in OPA-Envoy too)", query)
}

// supportedKeys are the top-level keys of OPA's configuration that Gatehouse
// hands to OPA's plugin manager; refusedKeys are OPA's keys it refuses, with
// the reason and what to do.
var (
	supportedKeys = []string{"services", "labels", "discovery", "bundle", "bundles", "decision_logs", "status", "plugins", "keys", "persistence_directory"}
	refusedKeys   = map[string]string{
		"default_decision":               "it is the decision of OPA's REST API, which Gatehouse does not serve; remove it",
		"default_authorization_decision": "it is the authorization policy of OPA's REST API, which Gatehouse does not serve; remove it",
		"server":                         "it configures OPA's REST API, which Gatehouse does not serve; remove it",
		"storage":                        "Gatehouse keeps policy data in memory (no disk store); remove it",
		"caching":                        "Gatehouse's evaluator has no inter-query built-in cache (http.send caching); remove it",
		"nd_builtin_cache":               "Gatehouse's decision log does not record non-deterministic built-in results; remove it",
		"distributed_tracing":            "Gatehouse does not export OpenTelemetry traces; remove it",
		"metrics_export":                 "Gatehouse exports Prometheus metrics on /metrics only; remove it",
	}
	// refusedSubKeys are keys inside supported sections that would be
	// silently ignored: each names a custom Go plugin or OPA's REST API.
	refusedSubKeys = map[string]string{
		"decision_logs.plugin":          "Gatehouse runs no custom decision log plugin; use decision_logs.service or console",
		"decision_logs.request_context": "it records OPA REST API request headers; Gatehouse's decisions come over gRPC",
		"status.plugin":                 "Gatehouse runs no custom status plugin; use status.service, console or prometheus",
	}
)

// CheckConfig refuses what Gatehouse does not support in OPA's configuration
// (parsed JSON): an unknown or refused top-level key, a plugin other than
// OPA-Envoy's, a custom decision log or status plugin. It returns the
// plugins.envoy_ext_authz_grpc section, which must be present (without it
// OPA-Envoy serves no ext_authz either).
func CheckConfig(conf map[string]any) (json.RawMessage, error) {
	for _, k := range slices.Sorted(maps.Keys(conf)) {
		if why, ok := refusedKeys[k]; ok {
			return nil, fmt.Errorf("%s: not supported: %s", k, why)
		}
		if !slices.Contains(supportedKeys, k) {
			return nil, fmt.Errorf("%s: unknown key; Gatehouse supports %s", k, strings.Join(supportedKeys, ", "))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(refusedSubKeys)) {
		section, name, _ := strings.Cut(key, ".")
		if m, ok := conf[section].(map[string]any); ok {
			if _, set := m[name]; set {
				return nil, fmt.Errorf("%s: not supported: %s", key, refusedSubKeys[key])
			}
		}
	}
	plugins, _ := conf["plugins"].(map[string]any)
	var section any
	found := ""
	for _, name := range slices.Sorted(maps.Keys(plugins)) {
		if name != PluginName && name != LegacyPluginName {
			return nil, fmt.Errorf("plugins.%s: unknown plugin; Gatehouse runs only %s (OPA-Envoy's ext_authz server)", name, PluginName)
		}
		if found != "" {
			return nil, fmt.Errorf("plugins: both %s and %s are set; keep %s", LegacyPluginName, PluginName, PluginName)
		}
		found, section = name, plugins[name]
	}
	if found == "" {
		return nil, fmt.Errorf("plugins.%s: missing: without it OPA-Envoy serves no ext_authz either; add it (an empty object takes addr %s and path %s)", PluginName, DefaultAddr, DefaultPath)
	}
	if section == nil {
		section = map[string]any{}
	}
	raw, err := json.Marshal(section)
	if err != nil {
		return nil, fmt.Errorf("plugins.%s: %w", found, err)
	}
	return raw, nil
}

// Load reads OPA's configuration file (YAML or JSON, "" for none) and applies
// the --set and --set-file overrides as OPA does: ${VAR} is replaced by the
// environment variable in the file and in each override, and an override
// wins over the file. It returns the configuration as JSON.
func Load(file string, sets, setFiles []string) ([]byte, error) {
	conf := map[string]any{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var parsed any
		if err := yaml.Unmarshal([]byte(expandEnv(string(b))), &parsed); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		switch p := parsed.(type) {
		case nil:
		case map[string]any:
			conf = p
		default:
			return nil, fmt.Errorf("%s: not a mapping of configuration keys", file)
		}
	}
	overrides := map[string]any{}
	for _, s := range sets {
		if err := parseSet(expandEnv(s), overrides, nil); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	for _, s := range setFiles {
		if err := parseSet(expandEnv(s), overrides, readValueFile); err != nil {
			return nil, fmt.Errorf("--set-file %s: %w", s, err)
		}
	}
	merged := mergeValues(conf, overrides)
	b, err := json.Marshal(merged)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return b, nil
}

func readValueFile(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return string(bytes.TrimSpace(b)), nil
}

var envRef = regexp.MustCompile(`\$\{[^}]*\}`)

// expandEnv replaces ${NAME} with the environment variable NAME (empty when
// unset), as OPA does in its configuration; $NAME without braces stays.
func expandEnv(s string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		return os.Getenv(ref[2 : len(ref)-1])
	})
}

// mergeValues deep-merges src over dst: objects key by key, anything else
// replaced by src's value (the override wins).
func mergeValues(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	if out == nil {
		out = map[string]any{}
	}
	for k, sv := range src {
		dm, dok := out[k].(map[string]any)
		sm, sok := sv.(map[string]any)
		if dok && sok {
			out[k] = mergeValues(dm, sm)
			continue
		}
		out[k] = sv
	}
	return out
}

// errSetSyntax is wrapped by every --set parse error.
var errSetSyntax = errors.New("want key.path=value[,key.path=value...] (a list as {a,b}, an index as key[0])")
