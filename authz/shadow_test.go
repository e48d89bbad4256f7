package authz

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	ghtest "github.com/gatehouse-dev/gatehouse/internal/testutil"
	"github.com/gatehouse-dev/gatehouse/policy"
)

// TestShadowCountsExactDisagreements: a candidate that differs from the
// active policy on one path (it allows /beta) produces exactly one
// disagreement per check of /beta that the active policy denies, each logged
// with both decisions and the decision id, and the active answers are those
// of a server without a shadow.
func TestShadowCountsExactDisagreements(t *testing.T) {
	rules := policy.Rules{TrustedCIDRs: []string{"10.0.0.0/8"}}
	dir := t.TempDir()
	candidate := "package envoy.authz\n\nallow := true if input.request_path == \"/beta\"\n\nallow := data.gatehouse.authz.decision if input.request_path != \"/beta\"\n"
	if err := os.WriteFile(filepath.Join(dir, "candidate.rego"), []byte(candidate), 0o644); err != nil {
		t.Fatal(err)
	}
	shadowEngine, err := policy.New(context.Background(), policy.Options{Paths: []string{dir}, Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var logs ghtest.LockedBuffer
	shadow, err := NewShadow(ShadowOptions{Policy: shadowEngine, Sample: 1, Metrics: metrics, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go shadow.Run(ctx)

	active, err := policy.New(context.Background(), policy.Options{Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	withShadow, err := New(Options{Policy: active, Metrics: metrics, Shadow: shadow})
	if err != nil {
		t.Fatal(err)
	}
	plain := newNativeServer(t, rules)

	req := func(peer, path string) *authv3.CheckRequest {
		r := checkReq("GET", path, nil, "")
		r.Attributes.Source.Address.GetSocketAddress().Address = peer
		return r
	}
	requests := []*authv3.CheckRequest{
		req("203.0.113.9", "/beta"), req("203.0.113.9", "/orders"), req("203.0.113.9", "/beta"),
		req("10.1.2.3", "/beta"), req("203.0.113.9", "/beta?x=1"), req("10.1.2.3", "/orders"),
		req("203.0.113.9", "/beta/sub"),
	}
	var wantIDs []string
	for i, r := range requests {
		got, err := withShadow.Check(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		want, err := plain.Check(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if responseShape(got) != responseShape(want) {
			t.Fatalf("request %d: the shadow changed the active answer\nwith shadow: %s\nwithout:     %s", i, responseShape(got), responseShape(want))
		}
		path := r.GetAttributes().GetRequest().GetHttp().GetPath()
		if got.GetStatus().GetCode() != 0 && strings.HasPrefix(path, "/beta") && !strings.HasPrefix(path, "/beta/") {
			wantIDs = append(wantIDs, got.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue())
		}
	}
	// Wait for the worker to have compared every check (it is asynchronous).
	deadline := time.Now().Add(20 * time.Second)
	for testutil.ToFloat64(metrics.shadowCompared)+testutil.ToFloat64(metrics.shadowEvalError) < float64(len(requests)) {
		if time.Now().After(deadline) {
			t.Fatalf("the shadow compared %v of %d checks", testutil.ToFloat64(metrics.shadowCompared), len(requests))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.ToFloat64(metrics.shadowEvalError); n != 0 {
		t.Errorf("shadow evaluation errors: %v", n)
	}
	if len(wantIDs) != 3 {
		t.Fatalf("the table should have 3 disagreeing checks, has %d", len(wantIDs))
	}
	for _, a := range outcomes {
		for _, s := range outcomes {
			want := 0.0
			if a == OutcomeDenied && s == OutcomeAllowed {
				want = 3
			}
			if a != s {
				if n := testutil.ToFloat64(metrics.shadowDisagree.WithLabelValues(a, s)); n != want {
					t.Errorf("disagreements{active=%s,shadow=%s} = %v, want %v", a, s, n, want)
				}
			}
		}
	}
	if n := testutil.CollectAndCount(metrics.shadowDisagree); n != 6 {
		t.Errorf("%d disagreement series, want the 6 pairs of different outcomes", n)
	}
	var ids []string
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			ID     string `json:"decision_id"`
			Active struct{ Outcome, Reason string }
			Shadow struct{ Outcome string }
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Msg != "shadow disagreement" {
			t.Fatalf("unexpected log line %q", line)
		}
		if rec.Active.Outcome != OutcomeDenied || rec.Active.Reason != policy.ReasonTokenMissing || rec.Shadow.Outcome != OutcomeAllowed {
			t.Errorf("logged decisions: %s", line)
		}
		ids = append(ids, rec.ID)
	}
	if strings.Join(ids, ",") != strings.Join(wantIDs, ",") {
		t.Errorf("logged decision ids %v, want %v", ids, wantIDs)
	}
}

// TestShadowQueueNeverBlocks: with the worker stopped and a queue of one,
// offering more checks drops them (counted) instead of waiting.
func TestShadowQueueNeverBlocks(t *testing.T) {
	rules := policy.Rules{}
	e, err := policy.New(context.Background(), policy.Options{Rules: &rules})
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	shadow, err := NewShadow(ShadowOptions{Policy: e, Sample: 1, QueueSize: 1, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Policy: e, Shadow: shadow})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Check(context.Background(), checkReq("GET", "/", nil, "")); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(metrics.shadowDropped); n != 2 {
		t.Errorf("dropped = %v, want 2", n)
	}
	for _, bad := range []float64{0, -0.5, 1.5} {
		if _, err := NewShadow(ShadowOptions{Policy: e, Sample: bad}); err == nil {
			t.Errorf("sample %v accepted", bad)
		}
	}
}
