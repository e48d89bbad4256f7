package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestEvaluationDeadline: a policy that loops expensively is cut off per
// check by policy.eval_timeout and denied as policy_timeout, while other
// checks keep being answered: one expensive policy path must not hold up
// the rest or run on unbounded.
func TestEvaluationDeadline(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "slow.rego"), `package envoy.authz

default allow := false

allow if input.parsed_path[0] == "fast"

# 400 million iterations: minutes of CPU without the deadline.
allow if {
	input.parsed_path[0] == "slow"
	some i in numbers.range(1, 20000)
	some j in numbers.range(1, 20000)
	i * j == -1
}
`)
	g := startGatehouse(t, fmt.Sprintf("policy:\n  paths: [%q]\n  eval_timeout: 300ms\n", dir), true)
	c := g.client(t)

	var wg sync.WaitGroup
	slow := make([]*authv3.CheckResponse, 4)
	for i := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := c.Check(ctx, envoyRequest("203.0.113.9", "api.example.com", "/slow", nil))
			if err != nil {
				t.Errorf("slow check: %v", err)
				return
			}
			slow[i] = resp
		}()
	}
	// While the slow ones run, fast ones are still answered.
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := c.Check(ctx, envoyRequest("203.0.113.9", "api.example.com", "/fast", nil))
		cancel()
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("fast check beside slow ones: %v %v", resp, err)
		}
	}
	wg.Wait()
	for i, resp := range slow {
		if resp == nil {
			continue
		}
		d := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() == 0 || d.GetStatus().GetCode() != 403 || !strings.Contains(d.GetBody(), "policy_timeout") {
			t.Errorf("slow check %d: want a 403 policy_timeout denial, got %v", i, resp)
		}
	}
}
