package test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOPAEnvoyWatch: with --watch, the policy and data paths on the command
// line are loaded again when they change, as `opa run --watch` does: a data
// file, a policy replaced by a rename (as editors and ConfigMaps do it), a
// module added and then removed. A policy that does not compile is refused
// and counted, the last good revision kept.
func TestOPAEnvoyWatch(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("policy.rego", bundlePolicy)
	write("data.json", `{"users": {"allowed": ["a"]}}`)
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte("plugins:\n  envoy_ext_authz_grpc: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g, _ := startRun(t, "--server", "-c", config, "--addr=127.0.0.1:0", "-w", dir)
	c := g.client(t)
	allowed := func(path string) bool {
		return decide(t, c, envoyRequest("10.1.2.3", "api.example.com", path, nil)).allowed
	}
	expect := func(what string, want map[string]bool) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() bool {
			for path, w := range want {
				if allowed(path) != w {
					return false
				}
			}
			return true
		})
	}
	expect("the files as started", map[string]bool{"/a": true, "/b": false, "/c": false})

	write("data.json", `{"users": {"allowed": ["a", "b"]}}`)
	expect("the data file's change", map[string]bool{"/a": true, "/b": true})

	replaced := filepath.Join(t.TempDir(), "policy.rego")
	if err := os.WriteFile(replaced, []byte(bundlePolicy+"\nallow if input.parsed_path[0] == \"c\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replaced, filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
	expect("the policy replaced by a rename", map[string]bool{"/b": true, "/c": true})

	write("more.rego", "package envoy.authz\n\nallow if input.parsed_path[0] == \"d\"\n")
	expect("a module added", map[string]bool{"/c": true, "/d": true})
	if err := os.Remove(filepath.Join(dir, "more.rego")); err != nil {
		t.Fatal(err)
	}
	expect("the module removed", map[string]bool{"/c": true, "/d": false})

	failing := `gatehouse_policy_reloads_total{policy="active",result="failure"}`
	before := metric(t, g, failing)
	write("policy.rego", "package envoy.authz\n\nallow if { input.x ==  }\n")
	eventually(t, 20*time.Second, "the broken policy refused and counted", func() bool { return metric(t, g, failing) > before })
	for path, want := range map[string]bool{"/a": true, "/b": true, "/c": true, "/d": false, "/e": false} {
		if got := allowed(path); got != want {
			t.Errorf("after a broken write: %s allowed=%v, want %v (the last good revision)", path, got, want)
		}
	}
	if err := contains(g.logText(), "watch: "); err != nil {
		t.Error(err)
	}
}
