package opaenvoy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestLoad: the configuration file with ${VAR} references and --set /
// --set-file overrides merge as OPA merges them: the override wins, values
// are typed as OPA types them, objects merge key by key, and a list in an
// override (services[0]...) replaces the file's list whole, as in OPA.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	token := filepath.Join(dir, "token")
	t.Setenv("GH_TEST_URL", "https://bundles.example.com")
	if err := os.WriteFile(file, []byte(`services:
  - name: acme
    url: ${GH_TEST_URL}
labels:
  region: ${GH_TEST_URL}
bundles:
  authz: {service: acme, resource: bundles/authz.tar.gz}
plugins:
  envoy_ext_authz_grpc: {addr: ":9191", path: envoy/authz/allow}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := Load(file, []string{
		"plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0,decision_logs.console=true",
		"bundles.authz.polling.min_delay_seconds=5",
		`labels.list={a,b},labels.escaped=x\,y`,
		"status.console=false,default_decision=null",
	}, []string{"services[0].credentials.bearer.token=" + token})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(`{
		"services": [{"credentials": {"bearer": {"token": "s3cret"}}}],
		"bundles": {"authz": {"service": "acme", "resource": "bundles/authz.tar.gz", "polling": {"min_delay_seconds": 5}}},
		"plugins": {"envoy_ext_authz_grpc": {"addr": "127.0.0.1:0", "path": "envoy/authz/allow"}},
		"decision_logs": {"console": true},
		"labels": {"list": ["a", "b"], "escaped": "x,y", "region": "https://bundles.example.com"},
		"status": {"console": false},
		"default_decision": null
	}`), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %s\nwant %v", raw, want)
	}
	for _, bad := range []string{"novalue", "a..b=1", "a[x]=1", "a[1]b=2"} {
		if _, err := Load("", []string{bad}, nil); err == nil || !strings.Contains(err.Error(), "--set "+bad) {
			t.Errorf("--set %s: err %v, want one naming it", bad, err)
		}
	}
}

// TestParseExtAuthz: OPA-Envoy's plugin keys and defaults.
func TestParseExtAuthz(t *testing.T) {
	tests := []struct {
		name, config string
		want         ExtAuthz
		err          string
	}{
		{name: "defaults", config: `{}`, want: ExtAuthz{Network: "tcp", Address: ":9191", Decision: "envoy/authz/allow", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 1<<31 - 1}},
		{name: "every key", config: `{"addr": "grpc://127.0.0.1:9000", "path": "istio/authz/allow", "dry-run": true, "enable-reflection": true,
			"skip-request-body-parse": true, "grpc-max-recv-msg-size": 100, "grpc-max-send-msg-size": 200, "enable-performance-metrics": true}`,
			want: ExtAuthz{Network: "tcp", Address: "127.0.0.1:9000", Decision: "istio/authz/allow", DryRun: true, EnableReflection: true,
				SkipRequestBodyParse: true, MaxRecvMsgSize: 100, MaxSendMsgSize: 200, EnablePerformanceMetrics: true}},
		{name: "unix socket", config: `{"addr": "unix:///var/run/opa.sock"}`, want: ExtAuthz{Network: "unix", Address: "/var/run/opa.sock", Decision: "envoy/authz/allow", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 1<<31 - 1}},
		{name: "abstract socket", config: `{"addr": "unix://@opa"}`, want: ExtAuthz{Network: "unix", Address: "@opa", Decision: "envoy/authz/allow", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 1<<31 - 1}},
		{name: "deprecated query", config: `{"query": "data.envoy.authz.allow"}`, want: ExtAuthz{Network: "tcp", Address: ":9191", Decision: "envoy/authz/allow", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 1<<31 - 1}},
		{name: "query with a bracketed key", config: `{"query": "data.envoy[\"authz\"].allow"}`, want: ExtAuthz{Network: "tcp", Address: ":9191", Decision: "envoy/authz/allow", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 1<<31 - 1}},
		{name: "query with a variable", config: `{"query": "data.envoy[x].allow"}`, err: "not a plain reference"},
		{name: "zero message size", config: `{"grpc-max-recv-msg-size": 0}`, err: "must be a positive number"},
		{name: "buckets", config: `{"grpc-request-duration-seconds-buckets": [0.1]}`, err: "grpc-request-duration-seconds-buckets: not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseExtAuthz([]byte(tc.config))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}
