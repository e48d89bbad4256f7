package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue finds one sample in a Prometheus text scrape: name with
// exactly the labels given (in any order). ok is false when absent.
func metricValue(scrape, name string, labels map[string]string) (float64, bool) {
	for line := range strings.SplitSeq(scrape, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		got := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			for pair := range strings.SplitSeq(rest[1:end], ",") {
				if pair == "" {
					continue
				}
				k, v, _ := strings.Cut(pair, "=")
				got[k] = strings.Trim(v, `"`)
			}
			rest = rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // a longer name with this prefix
		}
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return f, err == nil
	}
	return 0, false
}

func (g *gatehouse) scrape(t *testing.T) string {
	t.Helper()
	code, body := g.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

// explainJSON runs gatehousectl explain --json against g's admin listener.
func (g *gatehouse) explainJSON(t *testing.T, wantExit int, args ...string) map[string]any {
	t.Helper()
	code, out, errOut := ctl(t, append([]string{"explain", "--json", "--addr", g.adminAddr}, args...)...)
	if code != wantExit {
		t.Fatalf("explain %v: exit %d, want %d\n%s\n%s", args, code, wantExit, out, errOut)
	}
	var x map[string]any
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatalf("explain --json output: %v\n%s", err, out)
	}
	return x
}

// TestMetricsDecisionLogAndExplain drives a known sequence of checks through
// the real server and asserts the decision counters and their labels, that
// Explain leaves them alone, what Explain says, and that the decision log
// holds no token, authorization value or cookie.
func TestMetricsDecisionLogAndExplain(t *testing.T) {
	key, jwksFile := keyPair(t, "ES256", "obs-1")
	jwks := newJWKSServer(t, jwksFile)
	cfg := jwtConfig(jwks.URL) + `bypass:
  trusted_cidrs: [10.0.0.0/8]
headers:
  deny: [{name: x-debug}]
`
	g := startGatehouse(t, cfg, true)
	valid := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	expired := mint(t, key, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--expired")
	const cookie = "session=c00kie-s3cret"

	checks := []struct {
		name string
		args []string
		exit int
	}{
		{"allowed", []string{"--token", valid, "-H", "cookie: " + cookie}, 0},
		{"allowed again", []string{"--token", valid}, 0},
		{"expired token", []string{"--token", expired, "-H", "cookie: " + cookie}, 1},
		{"header rule", []string{"--token", valid, "-H", "x-debug: 1"}, 1},
		{"bypass", []string{"--source-ip", "10.1.2.3", "-H", "cookie: " + cookie}, 0},
	}
	for _, c := range checks {
		args := append([]string{"check", "--addr", g.grpcAddr, "--host", "api.example.com", "--path", "/orders"}, c.args...)
		if code, out, errOut := ctl(t, args...); code != c.exit {
			t.Fatalf("%s: exit %d, want %d\n%s\n%s", c.name, code, c.exit, out, errOut)
		}
	}

	t.Run("explain", func(t *testing.T) {
		// Explain has no side effects: the counters below still count only
		// the five checks.
		x := g.explainJSON(t, 1, "--token", valid, "-H", "x-debug: 1")
		if x["reason"] != "header_denied:x-debug" || x["http_status"] != float64(403) {
			t.Errorf("header rule: reason %v status %v", x["reason"], x["http_status"])
		}
		if !hasStep(x, "headers.deny", "deny", "header_denied:x-debug") {
			t.Errorf("header rule: no step names the deny rule: %v", x["steps"])
		}
		x = g.explainJSON(t, 1, "--token", expired)
		tok, _ := x["token"].(map[string]any)
		if x["reason"] != "token_expired" || tok["error"] != "expired" || tok["valid"] != false {
			t.Errorf("expired token: reason %v token %v", x["reason"], x["token"])
		}
		if !hasStep(x, "token", "deny", "token_expired") {
			t.Errorf("expired token: no token step: %v", x["steps"])
		}
		x = g.explainJSON(t, 0, "--source-ip", "10.1.2.3")
		if x["reason"] != "trusted_ip" || x["bypass"] != true || !hasStep(x, "bypass.trusted_cidrs", "allow", "") {
			t.Errorf("bypass: %v", x)
		}
	})

	t.Run("status", func(t *testing.T) {
		code, out, errOut := ctl(t, "status", "--addr", g.adminAddr)
		if code != 0 {
			t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
		}
		if err := contains(out, "native default decision", "provider:  corp  ready=true  keys=[obs-1]"); err != nil {
			t.Error(err)
		}
		code, out, _ = ctl(t, "status", "--json", "--addr", g.adminAddr)
		var st struct {
			Policy struct {
				Revision        string `json:"revision"`
				LastReloadError string `json:"last_reload_error"`
			} `json:"policy"`
			Providers []struct {
				Name   string   `json:"name"`
				KeyIDs []string `json:"key_ids"`
			} `json:"providers"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
			t.Fatalf("status --json: %d %v\n%s", code, err, out)
		}
		if st.Policy.Revision == "" || st.Policy.LastReloadError != "" || len(st.Providers) != 1 || strings.Join(st.Providers[0].KeyIDs, ",") != "obs-1" {
			t.Errorf("status: %+v", st)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		s := g.scrape(t)
		for _, w := range []struct {
			outcome, status, reason string
			want                    float64
		}{
			{"allowed", "200", "token_valid", 2},
			{"denied", "401", "token_expired", 1},
			{"denied", "403", "header_denied:x-debug", 1},
			{"allowed", "200", "trusted_ip", 1},
			{"denied", "401", "token_missing", 0},
		} {
			got, ok := metricValue(s, "gatehouse_decisions_total", map[string]string{"outcome": w.outcome, "status": w.status, "reason": w.reason})
			if !ok || got != w.want {
				t.Errorf("gatehouse_decisions_total{%s,%s,%s} = %v (present %v), want %v", w.outcome, w.status, w.reason, got, ok, w.want)
			}
		}
		for _, w := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"gatehouse_check_duration_seconds_count", nil, 5},
			{"gatehouse_checks_in_flight", nil, 0},
			{"gatehouse_grpc_server_handled_total", map[string]string{"grpc_service": "envoy.service.auth.v3.Authorization", "grpc_method": "Check", "grpc_code": "OK"}, 5},
			{"gatehouse_jwks_keys", map[string]string{"provider": "corp"}, 1},
			{"gatehouse_jwks_ready", map[string]string{"provider": "corp"}, 1},
			{"gatehouse_jwks_fetches_total", map[string]string{"provider": "corp", "result": "failure"}, 0},
			{"gatehouse_policy_reloads_total", map[string]string{"policy": "active", "result": "failure"}, 0},
			{"gatehouse_policy_reload_failing", map[string]string{"policy": "active"}, 0},
		} {
			if got, ok := metricValue(s, w.name, w.labels); !ok || got != w.want {
				t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.want)
			}
		}
		if got, ok := metricValue(s, "gatehouse_jwks_fetches_total", map[string]string{"provider": "corp", "result": "success"}); !ok || got < 1 {
			t.Errorf("jwks fetches success = %v", got)
		}
		if got, _ := metricValue(s, "gatehouse_jwt_token_cache_requests_total", map[string]string{"result": "hit"}); got < 1 {
			t.Errorf("token cache hits = %v, want at least 1 (the same valid token was checked three times)", got)
		}
		_, ready := g.get("/readyz")
		var rz struct {
			Revision string `json:"policy_revision"`
		}
		_ = json.Unmarshal([]byte(ready), &rz)
		if v, ok := metricValue(s, "gatehouse_policy_revision_info", map[string]string{"policy": "active", "revision": rz.Revision}); !ok || v != 1 || rz.Revision == "" {
			t.Errorf("gatehouse_policy_revision_info for revision %q: %v %v", rz.Revision, v, ok)
		}
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
			if _, ok := metricValue(s, name, nil); !ok {
				t.Errorf("%s missing: the runtime and process collectors are registered", name)
			}
		}
		if code, _ := g.get("/debug/pprof/"); code != 404 {
			t.Errorf("/debug/pprof/ = %d with ops.pprof off, want 404", code)
		}
	})

	t.Run("decision log holds no secrets", func(t *testing.T) {
		// The log is written on a tick: wait for the checks' lines.
		eventually(t, 20*time.Second, "the decision lines", func() bool {
			return strings.Count(g.logText(), `"msg":"decision"`) >= len(checks)
		})
		logText := g.logText()
		var decisions, denied int
		for line := range strings.SplitSeq(logText, "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "decision" {
				continue
			}
			decisions++
			if rec["allowed"] == false {
				denied++
			}
		}
		if decisions != len(checks) || denied != 2 {
			t.Fatalf("%d decision lines (%d denied), want %d (2 denied): explain must not log\n%s", decisions, denied, len(checks), logText)
		}
		for _, secret := range []string{valid, expired, "c00kie-s3cret", "Bearer ", "authorization"} {
			if strings.Contains(logText, secret) {
				t.Errorf("the log holds %q", secret)
			}
		}
	})
}

func hasStep(x map[string]any, name, outcome, detail string) bool {
	steps, _ := x["steps"].([]any)
	for _, s := range steps {
		m, _ := s.(map[string]any)
		if m["name"] == name && m["outcome"] == outcome && (detail == "" || m["detail"] == detail) {
			return true
		}
	}
	return false
}

// TestPolicyErrorMetricsAndForgedXFFExplained: a custom policy whose rules
// conflict answers policy_error, counted by outcome and by the policy's
// evaluation errors; Explain reports the client IP source and fallback of a
// forged X-Forwarded-For and the Rego rules from OPA's trace; ops.pprof
// serves the profiles.
func TestPolicyErrorMetricsAndForgedXFFExplained(t *testing.T) {
	dir := t.TempDir()
	policy := `package envoy.authz

import rego.v1

default allow := false

allow := true if input.attributes.request.http.headers["x-boom"]

allow := false if input.attributes.request.http.headers["x-boom"] == "conflict"
`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\nclient_ip:\n  source: xff\n  xff_trusted_hops: 2\nops:\n  pprof: true\n", dir), true)
	if code, body := g.get("/debug/pprof/cmdline"); code != 200 || !strings.Contains(body, "gatehouse") {
		t.Errorf("/debug/pprof/cmdline with ops.pprof on: %d %q", code, body)
	}

	if code, out, errOut := ctl(t, "check", "--addr", g.grpcAddr, "-H", "x-boom: conflict"); code != 1 || !strings.Contains(out, "policy_error") {
		t.Fatalf("conflicting rules: exit %d\n%s\n%s", code, out, errOut)
	}
	s := g.scrape(t)
	if v, ok := metricValue(s, "gatehouse_decisions_total", map[string]string{"outcome": "error", "status": "403", "reason": "policy_error"}); !ok || v != 1 {
		t.Errorf("gatehouse_decisions_total{error,403,policy_error} = %v %v, want 1", v, ok)
	}
	if v, ok := metricValue(s, "gatehouse_policy_evaluation_errors_total", map[string]string{"policy": "active", "reason": "policy_error"}); !ok || v != 1 {
		t.Errorf("gatehouse_policy_evaluation_errors_total{policy_error} = %v %v, want 1", v, ok)
	}

	// A forged X-Forwarded-For: one entry where two trusted hops need two.
	x := g.explainJSON(t, 1, "--source-ip", "198.51.100.7", "-H", "x-forwarded-for: 10.1.2.3")
	ip, _ := x["client_ip"].(map[string]any)
	if ip["address"] != "198.51.100.7" || ip["source"] != "peer" || ip["fallback"] != "xff_too_few_entries" {
		t.Errorf("client_ip = %v, want the peer with fallback xff_too_few_entries", ip)
	}
	if x["native"] != false || !hasStep(x, "default data.envoy.authz.allow at "+filepath.Join(dir, "p.rego")+":5", "fired", "") {
		t.Errorf("the Rego trace must name the default rule that fired: %v", x["steps"])
	}
	x = g.explainJSON(t, 0, "-H", "x-boom: yes")
	if !hasStep(x, "data.envoy.authz.allow at "+filepath.Join(dir, "p.rego")+":7", "fired", "") ||
		hasStep(x, "data.envoy.authz.allow at "+filepath.Join(dir, "p.rego")+":9", "fired", "") {
		t.Errorf("the Rego trace must tell the rule that fired from the one that did not: %v", x["steps"])
	}
}

// TestShadowPolicyThroughTheBinary: policy.shadow.paths names a candidate
// that allows /beta; the active (default) decisions are unchanged, and each
// check of /beta, and only those, is counted and logged as a disagreement
// with its decision id.
func TestShadowPolicyThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	candidate := "package envoy.authz\n\nallow := true if input.request_path == \"/beta\"\n\nallow := data.gatehouse.authz.decision if input.request_path != \"/beta\"\n"
	if err := os.WriteFile(filepath.Join(dir, "candidate.rego"), []byte(candidate), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGatehouse(t, fmt.Sprintf("policy:\n  shadow:\n    paths: [%q]\n", dir), true)
	c := g.client(t)
	paths := []string{"/beta", "/orders", "/beta", "/beta/x", "/beta?q=1"}
	var ids []string
	for _, p := range paths {
		d := decide(t, c, envoyRequest("203.0.113.9", "api.example.com", p, nil))
		if d.allowed || d.status != 401 {
			t.Fatalf("%s: the active decision changed: %+v", p, d)
		}
	}
	// Every check is compared asynchronously: wait until all were.
	eventually(t, 20*time.Second, "the shadow compared every check", func() bool {
		v, _ := metricValue(g.scrape(t), "gatehouse_shadow_evaluations_total", map[string]string{"result": "compared"})
		return v == float64(len(paths))
	})
	s := g.scrape(t)
	for _, w := range []struct {
		active, shadow string
		want           float64
	}{{"denied", "allowed", 3}, {"allowed", "denied", 0}, {"denied", "error", 0}} {
		if v, ok := metricValue(s, "gatehouse_shadow_disagreements_total", map[string]string{"active": w.active, "shadow": w.shadow}); !ok || v != w.want {
			t.Errorf("disagreements{%s,%s} = %v %v, want %v", w.active, w.shadow, v, ok, w.want)
		}
	}
	if v, _ := metricValue(s, "gatehouse_decisions_total", map[string]string{"outcome": "denied", "status": "401", "reason": "token_missing"}); v != float64(len(paths)) {
		t.Errorf("active denials = %v, want %d", v, len(paths))
	}
	// The log is written on a tick: wait for the lines as well.
	eventually(t, 20*time.Second, "three disagreement lines", func() bool {
		return strings.Count(g.logText(), `"msg":"shadow disagreement"`) >= 3
	})
	for line := range strings.SplitSeq(g.logText(), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			ID     string `json:"decision_id"`
			Path   string `json:"path"`
			Active struct{ Outcome string }
			Shadow struct{ Outcome string }
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "shadow disagreement" {
			continue
		}
		if rec.ID == "" || rec.Path != "/beta" || rec.Active.Outcome != "denied" || rec.Shadow.Outcome != "allowed" {
			t.Errorf("disagreement line: %s", line)
		}
		ids = append(ids, rec.ID)
	}
	if len(ids) != 3 {
		t.Errorf("%d disagreement lines, want 3", len(ids))
	}
}
