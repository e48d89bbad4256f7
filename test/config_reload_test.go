package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scrapeValue reads one sample of the server's /metrics, -1 when absent.
func scrapeValue(t *testing.T, g *gatehouse, name string, labels map[string]string) float64 {
	t.Helper()
	status, body := g.get("/metrics")
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	v, ok := metricValue(body, name, labels)
	if !ok {
		return -1
	}
	return v
}

// TestConfigReload: editing the configuration file changes the decisions in
// seconds, without a restart and without a check failing meanwhile: route
// rules, then a broken file (the running configuration stays, and says why),
// then a setting only a restart applies (reported), then the JWT provider
// itself (a new issuer and key set, fetched before the swap).
func TestConfigReload(t *testing.T) {
	keyA, jwksA := keyPair(t, "ES256", "reload-a")
	keyB, jwksB := keyPair(t, "ES256", "reload-b")
	srvA, srvB := newJWKSServer(t, jwksA), newJWKSServer(t, jwksB)
	const issuerB = "https://issuer-b.gatehouse.test"
	tokenA := "Bearer " + mint(t, keyA, "--iss", issuer, "--aud", "orders-api", "--sub", "alice", "--ttl", "10m")
	tokenB := "Bearer " + mint(t, keyB, "--iss", issuerB, "--aud", "orders-api", "--sub", "bob", "--ttl", "10m")
	providerB := fmt.Sprintf("jwt:\n  providers:\n    - name: corp\n      issuer: %s\n      audiences: [orders-api]\n      jwks_uri: %s\n", issuerB, srvB.URL)

	readRule := "    - {name: read, methods: [GET], paths: [\"/orders/*\"], request_principals: [\"*\"]}\n"
	base := jwtConfig(srvA.URL) + "authorization:\n  rules:\n" + readRule
	g := startGatehouse(t, base, true)
	c := g.client(t)
	health := envoyRequest("203.0.113.9", "api.example.com", "/healthz", nil)
	orders := func(token string) decision {
		return decide(t, c, envoyRequest("203.0.113.9", "api.example.com", "/orders/1", map[string]string{"authorization": token}))
	}
	if d := decide(t, c, health); d.status != 401 {
		t.Fatalf("before: /healthz %+v, want 401", d)
	}
	if d := orders(tokenA); !d.allowed {
		t.Fatalf("before: /orders/1 with a token %+v", d)
	}

	// Checks run all along: none may fail, whatever the file holds.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var checks atomic.Int64
	failures := make(chan error, 1)
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := tryDecide(cctx, c, health)
				cancel()
				if err != nil && ctx.Err() == nil {
					select {
					case failures <- err:
					default:
					}
					return
				}
				checks.Add(1)
			}
		})
	}

	// 1. A public route appears.
	writeFile(t, g.configPath, jwtConfig(srvA.URL)+"authorization:\n  rules:\n    - {name: public, methods: [GET], paths: [/healthz]}\n"+readRule)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", g.logText())
		}
	})
	eventually(t, 20*time.Second, "/healthz to become public", func() bool {
		d := decide(t, c, health)
		return d.allowed
	})
	if v := scrapeValue(t, g, "gatehouse_config_reloads_total", map[string]string{"result": "success"}); v < 1 {
		t.Errorf("reloads_total{success} = %v", v)
	}

	// 2. A broken file: the running configuration stays, the failure counted.
	writeFile(t, g.configPath, jwtConfig(srvA.URL)+"authorization:\n  rules:\n    - {name: bad, paths: [\"/foo/{*}.txt\"]}\n")
	eventually(t, 20*time.Second, "the broken file to be refused", func() bool {
		return scrapeValue(t, g, "gatehouse_config_reloads_total", map[string]string{"result": "failure"}) >= 1
	})
	// The operational log is written asynchronously: the refusal is known
	// (above), its line follows.
	eventually(t, 10*time.Second, "the log to say why", func() bool {
		return strings.Contains(g.logText(), "configuration reload failed, keeping the running configuration") && strings.Contains(g.logText(), "whole segments")
	})
	if d := decide(t, c, health); !d.allowed {
		t.Fatalf("after a broken file: /healthz %+v, want the last good rules", d)
	}

	// 3. A setting only a restart applies is reported, the rest applied.
	writeFile(t, g.configPath, jwtConfig(srvA.URL)+"listen:\n  http_max_conns: 32\nauthorization:\n  rules:\n"+readRule)
	eventually(t, 20*time.Second, "the restart to be reported and the public rule gone", func() bool {
		return scrapeValue(t, g, "gatehouse_config_restart_required", nil) == 1 && decide(t, c, health).status == 401
	})
	eventually(t, 10*time.Second, "the log to name the key needing a restart", func() bool {
		return strings.Contains(g.logText(), "needs a restart") && strings.Contains(g.logText(), `"keys":"listen"`)
	})

	// 4. Another issuer and key set: fetched, then swapped in.
	writeFile(t, g.configPath, providerB+"authorization:\n  rules:\n"+readRule)
	eventually(t, 30*time.Second, "the new provider's tokens to be accepted", func() bool {
		return orders(tokenB).allowed
	})
	if d := orders(tokenA); d.allowed || d.status != 401 {
		t.Errorf("the old issuer's token after the swap: %+v, want 401", d)
	}
	if v := scrapeValue(t, g, "gatehouse_config_restart_required", nil); v != 0 {
		t.Errorf("restart_required = %v after the listen change was undone", v)
	}

	stop()
	wg.Wait()
	select {
	case err := <-failures:
		t.Fatalf("a check failed during the reloads: %v", err)
	default:
	}
	if checks.Load() < 10 {
		t.Fatalf("only %d checks ran during the reloads", checks.Load())
	}
}
