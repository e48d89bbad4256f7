package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-dev/gatehouse/opaenvoy"
)

// TestParseRunArgs: OPA-Envoy's command lines, as its deployments write
// them, parse to the same settings whatever the order and spelling of the
// flags; refused and unknown flags are errors naming them and why.
func TestParseRunArgs(t *testing.T) {
	quickStart := &runArgs{
		server: true, configFile: "/config/config.yaml",
		addrs: []string{"0.0.0.0:8181"}, diagnosticAddrs: []string{"0.0.0.0:8282"},
		paths: []string{"/policy/policy.rego"}, logLevel: "info", logFormat: "json", shutdownGrace: 10 * time.Second,
	}
	tests := []struct {
		name string
		args []string
		want *runArgs
		err  string
	}{
		{
			name: "Istio quick start",
			args: []string{"--server", "--config-file=/config/config.yaml", "--addr=0.0.0.0:8181", "--diagnostic-addr=0.0.0.0:8282", "/policy/policy.rego"},
			want: quickStart,
		},
		{
			name: "short flags, separate values, path first",
			args: []string{"/policy/policy.rego", "-s", "-c", "/config/config.yaml", "-a", "0.0.0.0:8181", "--diagnostic-addr", "0.0.0.0:8282"},
			want: quickStart,
		},
		{
			name: "everything else OPA-Envoy's deployments use",
			args: []string{"run-me.rego", "--server", "--set=decision_logs.console=true", "--set", "labels.app=x,labels.env=prod",
				"--set-file=services[0].credentials.bearer.token=/t", "--ignore=.*", "--ignore", "*_test.rego,x",
				"-l", "debug", "--log-format=text", "-b", "-w", "--skip-version-check", "--disable-telemetry", "--v0-compatible",
				"--shutdown-grace-period=3", "--pprof", "--admin-addr=127.0.0.1:0", "--address-file", "/tmp/a.json", "--decision-log", "--", "--odd-path"},
			want: &runArgs{
				server: true, sets: []string{"decision_logs.console=true", "labels.app=x,labels.env=prod"},
				setFiles: []string{"services[0].credentials.bearer.token=/t"}, ignore: []string{".*", "*_test.rego", "x"},
				logLevel: "debug", logFormat: "text", bundleMode: true, watch: true, regoVersion: ast.RegoV0, shutdownGrace: 3 * time.Second,
				pprof: true, adminAddr: "127.0.0.1:0", addressFile: "/tmp/a.json", decisionLog: true,
				addrs: []string{"localhost:8181"}, paths: []string{"run-me.rego", "--odd-path"},
			},
		},
		{name: "no --server", args: []string{"-c", "x.yaml"}, err: "--server is required"},
		{name: "server=false", args: []string{"--server=false"}, err: "--server is required"},
		{name: "TLS", args: []string{"--server", "--tls-cert-file=/c"}, err: "flag --tls-cert-file=/c: not supported: it serves OPA's REST API over TLS"},
		{name: "authorization", args: []string{"--server", "--authorization", "basic"}, err: "flag --authorization: not supported"},
		{name: "watch-config", args: []string{"--server", "--watch-config"}, err: "flag --watch-config: not supported: the configuration is read once"},
		{name: "unknown", args: []string{"--server", "--frobnicate"}, err: "flag --frobnicate: unknown flag"},
		{name: "combined short flags", args: []string{"-sb"}, err: "combined short flags"},
		{name: "missing value", args: []string{"--server", "--config-file"}, err: "flag --config-file: needs a value"},
		{name: "bad log level", args: []string{"--server", "-l", "trace"}, err: "want debug, info, warn or error"},
		{name: "URL path", args: []string{"--server", "https://example.com/bundle.tar.gz"}, err: "a URL on the command line is not supported"},
		{name: "unix health listener", args: []string{"--server", "--addr=unix:///tmp/opa.sock"}, err: "TCP host:port only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRunArgs(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestRunConfig: plugins.envoy_ext_authz_grpc and the command line land on
// Gatehouse's configuration keys.
func TestRunConfig(t *testing.T) {
	a, err := parseRunArgs([]string{"--server", "--addr=127.0.0.1:8181", "-l", "error", "--admin-addr=127.0.0.1:9999", "--shutdown-grace-period=4"})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := opaenvoy.ParseExtAuthz([]byte(`{"addr": "grpc://127.0.0.1:9292", "path": "istio/authz/allow", "dry-run": true,
		"skip-request-body-parse": true, "grpc-max-recv-msg-size": 1024}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := runConfig(a, ext)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"listen.grpc": cfg.Listen.GRPC, "listen.http": cfg.Listen.HTTP, "listen.admin": cfg.Listen.Admin,
		"policy.decision": cfg.Policy.Decision, "policy.dry_run": cfg.Policy.DryRun, "policy.parse_body": *cfg.Policy.ParseBody,
		"policy.watch": *cfg.Policy.Watch, "grpc.max_recv_msg_bytes": cfg.GRPC.MaxRecvMsgBytes,
		"grpc.shutdown_grace": cfg.GRPC.ShutdownGrace.D(), "log.level": cfg.Log.Level, "log.decisions": *cfg.Log.Decisions,
	}
	want := map[string]any{
		"listen.grpc": "127.0.0.1:9292", "listen.http": "127.0.0.1:8181", "listen.admin": "127.0.0.1:9999",
		"policy.decision": "istio/authz/allow", "policy.dry_run": true, "policy.parse_body": false,
		"policy.watch": false, "grpc.max_recv_msg_bytes": 1024,
		"grpc.shutdown_grace": 4 * time.Second, "log.level": "error", "log.decisions": false,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

// TestRunRefusesConfiguration: `gatehouse run` exits 2 naming what it does
// not support, before listening.
func TestRunRefusesConfiguration(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name   string
		config string
		stderr string
	}{
		{"storage", "plugins: {envoy_ext_authz_grpc: {}}\nstorage: {disk: {directory: /d}}\n", "storage: not supported: Gatehouse keeps policy data in memory"},
		{"server", "plugins: {envoy_ext_authz_grpc: {}}\nserver: {encoding: {gzip: {}}}\n", "server: not supported"},
		{"other plugin", "plugins: {envoy_ext_authz_grpc: {}, my_plugin: {}}\n", "plugins.my_plugin: unknown plugin"},
		{"custom decision log plugin", "plugins: {envoy_ext_authz_grpc: {}}\ndecision_logs: {plugin: mine}\n", "decision_logs.plugin: not supported"},
		{"typo in the plugin", "plugins: {envoy_ext_authz_grpc: {dryrun: true}}\n", "plugins.envoy_ext_authz_grpc.dryrun: unknown key; valid keys: addr, path, query, dry-run"},
		{"path and query", "plugins: {envoy_ext_authz_grpc: {path: a/b, query: data.a.b}}\n", "path and query are both set"},
		{"general query", "plugins: {envoy_ext_authz_grpc: {query: \"x = data.a.b; x\"}}\n", "is not a plain reference"},
		{"bad addr", "plugins: {envoy_ext_authz_grpc: {addr: \"http://x:1\"}}\n", "scheme \"http\" is neither grpc nor unix"},
		{"unknown top-level key", "plugins: {envoy_ext_authz_grpc: {}}\nbundels: {}\n", "bundels: unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runWithin(t, "run", "--server", "-c", write(strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.config))
			r.check(t, 2, nil, []string{tc.stderr})
		})
	}
}
