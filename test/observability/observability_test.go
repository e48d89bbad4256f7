// Package observability checks deploy/observability against a real
// Gatehouse. It is its own module, so that the Prometheus parsers it needs
// stay out of the server's dependencies: `make observability-check` runs it.
package observability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	dashboardFile = "../../deploy/observability/gatehouse-dashboard.json"
	alertsFile    = "../../deploy/observability/gatehouse-alerts.yaml"
)

// grafanaVariables are replaced by what Grafana would put there, so that the
// expressions parse as PromQL.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$instance", ".*")

// dashboardExprs returns every target expression of the dashboard, rows'
// nested panels included, by panel title.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string  `json:"title"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var dash struct {
		UID    string  `json:"uid"`
		Title  string  `json:"title"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: no uid, title or panels", dashboardFile)
	}
	out := map[string][]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[p.Title] = append(out[p.Title], tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return out
}

// alertExprs parses the rules file with Prometheus's own loader (which also
// parses each expression and template) and returns each alert's expression.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	out := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// metricNames parses expr and returns the metric names it selects.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVariables.Replace(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, nil
}

// TestDashboardAndAlertsNameRealMetrics: the dashboard JSON parses, every
// expression of it and of the alert rules parses, and every metric they
// name is in a scrape of a real Gatehouse with a JWT provider and a shadow
// policy (so that every family the docs list is present).
func TestDashboardAndAlertsNameRealMetrics(t *testing.T) {
	scrape := scrapeRealGatehouse(t)
	exposed := map[string]bool{}
	for line := range strings.SplitSeq(scrape, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		exposed[name] = true
	}

	exprs := map[string]string{}
	for title, list := range dashboardExprs(t) {
		for i, e := range list {
			exprs[fmt.Sprintf("dashboard panel %q target %d", title, i)] = e
		}
	}
	alerts := alertExprs(t)
	if len(alerts) < 5 {
		t.Errorf("%d alerts, want at least error rate, JWKS stale, reload failing and p99", len(alerts))
	}
	for name, e := range alerts {
		exprs["alert "+name] = e
	}
	used := map[string]bool{}
	for where, e := range exprs {
		names, err := metricNames(e)
		if err != nil {
			t.Errorf("%s: %v\n%s", where, err, e)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s names no metric: %s", where, e)
		}
		for _, n := range names {
			used[n] = true
			if !exposed[n] {
				t.Errorf("%s uses %s, which a real /metrics scrape does not expose", where, n)
			}
		}
	}
	// Every Gatehouse family the dashboard should show is on it.
	for _, family := range []string{
		"gatehouse_decisions_total", "gatehouse_check_duration_seconds_bucket", "gatehouse_checks_in_flight",
		"gatehouse_jwks_refresh_age_seconds", "gatehouse_policy_revision_info", "gatehouse_policy_reloads_total",
		"gatehouse_shadow_disagreements_total",
	} {
		if !used[family] {
			t.Errorf("nothing uses %s", family)
		}
	}
}

// TestMetricsAreDocumented: every gatehouse_ family a real scrape exposes is
// named in docs/operations.md, and the docs name none that does not exist.
func TestMetricsAreDocumented(t *testing.T) {
	scrape := scrapeRealGatehouse(t)
	docs, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]bool{}
	for line := range strings.SplitSeq(scrape, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok && strings.HasPrefix(f, "gatehouse_") {
			families[strings.Fields(f)[0]] = true
		}
	}
	for f := range families {
		if !strings.Contains(string(docs), "`"+f+"`") {
			t.Errorf("%s is exposed but docs/operations.md does not list it", f)
		}
	}
	documented := regexp.MustCompile("`(gatehouse_[a-z_]+)`").FindAllStringSubmatch(string(docs), -1)
	var missing []string
	for _, m := range documented {
		if !families[m[1]] && !families[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[1], "_bucket"), "_count"), "_sum")] {
			missing = append(missing, m[1])
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/operations.md lists metrics a real scrape does not expose: %v", missing)
	}
}

var (
	binDir     string
	scrapeOnce string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatehouse-obs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"gatehouse", "gatehousectl"} {
		// Built from the server's own module, at the repository root.
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = "../.."
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// scrapeRealGatehouse starts the real binary on loopback with a jwks_file
// provider and a shadow policy, waits until it is ready, scrapes /metrics
// once and stops it.
func scrapeRealGatehouse(t *testing.T) string {
	t.Helper()
	if scrapeOnce != "" {
		return scrapeOnce
	}
	dir := t.TempDir()
	key, jwks := filepath.Join(dir, "key.json"), filepath.Join(dir, "jwks.json")
	if out, err := exec.Command(filepath.Join(binDir, "gatehousectl"), "jwks", "generate", "--alg", "ES256", "--kid", "k1",
		"--out-private", key, "--out-jwks", jwks).CombinedOutput(); err != nil {
		t.Fatalf("jwks generate: %v\n%s", err, out)
	}
	shadow := filepath.Join(dir, "shadow")
	if err := os.Mkdir(shadow, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shadow, "p.rego"), []byte("package envoy.authz\n\nallow := data.gatehouse.authz.decision\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`jwt:
  providers:
    - name: corp
      issuer: https://issuer.test
      audiences: [api]
      jwks_file: %q
policy:
  shadow:
    paths: [%q]
`, jwks, shadow)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "gatehouse"), "--config", cfg,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "listening" {
				addr <- rec["http"].(string)
			}
		}
	}()
	var httpAddr string
	select {
	case httpAddr = <-addr:
	case <-time.After(60 * time.Second):
		t.Fatal("gatehouse did not start listening")
	}
	deadline := time.Now().Add(30 * time.Second)
	for get(t, "http://"+httpAddr+"/readyz") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("gatehouse did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	scrapeOnce = body(t, "http://"+httpAddr+"/metrics")
	return scrapeOnce
}

func get(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func body(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
