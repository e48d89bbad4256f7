package policy

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReloadStateAndMetrics: a failed reload is counted, exposed as failing
// with its error, and cleared by the next good reload; an evaluation error
// is counted by reason.
func TestReloadStateAndMetrics(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.rego")
	write := func(src string) {
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("package envoy.authz\n\nallow := input.ok\n")
	e, err := New(context.Background(), Options{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Collector("active"))
	metric := func(name string) string {
		t.Helper()
		var b strings.Builder
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						b.WriteString(l.GetName() + "=" + l.GetValue() + " ")
					}
					v := m.GetGauge().GetValue()
					if m.GetCounter() != nil {
						v = m.GetCounter().GetValue()
					}
					b.WriteString(strconv.FormatFloat(v, 'g', -1, 64) + ";")
				}
			}
		}
		return b.String()
	}
	first := e.Revision()
	if e.LastReloadError() != nil || e.LoadedAt().IsZero() {
		t.Fatalf("fresh engine: last error %v, loaded at %v", e.LastReloadError(), e.LoadedAt())
	}

	write("package envoy.authz\n\nallow := {\n")
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("a broken policy reloaded")
	}
	if le := e.LastReloadError(); le == nil || !strings.Contains(le.Err.Error(), "p.rego") {
		t.Fatalf("last reload error = %v, want one naming the file", le)
	}
	if got := metric("gatehouse_policy_reload_failing"); got != "policy=active 1;" {
		t.Errorf("reload_failing = %q", got)
	}
	if got := metric("gatehouse_policy_reloads_total"); got != "policy=active result=failure 1;policy=active result=success 0;policy=active result=unchanged 0;" {
		t.Errorf("reloads = %q", got)
	}
	if got := metric("gatehouse_policy_revision_info"); got != "policy=active revision="+first+" 1;" {
		t.Errorf("revision info = %q, want the last good revision %s", got, first)
	}

	write("package envoy.authz\n\nallow := input.ok == true\n")
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.LastReloadError() != nil || e.Revision() == first {
		t.Errorf("after a good reload: last error %v, revision %s (was %s)", e.LastReloadError(), e.Revision(), first)
	}
	if got := metric("gatehouse_policy_reload_failing"); got != "policy=active 0;" {
		t.Errorf("reload_failing after a good reload = %q", got)
	}

	// Conflicting rule outputs: a runtime error, counted as policy_error.
	write("package envoy.authz\n\nallow := true if input.a\n\nallow := false if input.a\n")
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	in, err := InputFromJSON([]byte(`{"a": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Eval(context.Background(), in); err == nil {
		t.Fatal("conflicting rules evaluated")
	}
	if !strings.Contains(metric("gatehouse_policy_evaluation_errors_total"), "reason=policy_error 1;") {
		t.Errorf("evaluation errors = %q", metric("gatehouse_policy_evaluation_errors_total"))
	}
}
