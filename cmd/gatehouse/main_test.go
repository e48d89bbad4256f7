package main

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/version"
)

// TestRefusesArguments: Go's flag package stops at the first argument that
// is not a flag, so without a check `gatehouse --config=x.yaml extra` would
// serve as if extra were not there. Every positional argument other than a
// subcommand (validate, run: OPA-Envoy's command line, run.go) is refused
// with exit code 2, its name, and the usage; nothing is served.
func TestRefusesArguments(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr []string
	}{
		{
			name:   "OPA-Envoy command line, its configuration missing",
			args:   []string{"run", "--server", "--config-file=/config/config.yaml"},
			stderr: []string{"gatehouse run: configuration: open /config/config.yaml"},
		},
		{
			name:   "argument after the flags",
			args:   []string{"--config=x.yaml", "extra"},
			stderr: []string{`gatehouse: unexpected argument "extra"`, "takes flags only", "Usage: gatehouse [--config FILE]"},
		},
		{
			name:   "flags after an argument",
			args:   []string{"--grpc-addr", "127.0.0.1:0", "serve", "--config", "x.yaml"},
			stderr: []string{`unexpected argument "serve"`, "would not have been read either: --config x.yaml"},
		},
		{
			name:   "validate after the flags",
			args:   []string{"--config", "x.yaml", "validate"},
			stderr: []string{`unexpected argument "validate"`, "comes first: gatehouse validate --config FILE"},
		},
		{
			name:   "after a double dash",
			args:   []string{"--", "--config", "x.yaml"},
			stderr: []string{`unexpected argument "--config"`},
		},
		{
			name:   "version with an argument",
			args:   []string{"--version", "extra"},
			stderr: []string{`unexpected argument "extra"`},
		},
		{
			name:   "validate with an argument",
			args:   []string{"validate", "--config", "x.yaml", "extra"},
			stderr: []string{`gatehouse validate: unexpected argument "extra"`, "Usage: gatehouse validate [--config FILE] [--jwks]"},
		},
		{
			name:   "validate with flags after an argument",
			args:   []string{"validate", "x.yaml", "--jwks"},
			stderr: []string{`gatehouse validate: unexpected argument "x.yaml"`, "would not have been read either: --jwks", "Usage: gatehouse validate"},
		},
		{
			name:   "OPA's flag",
			args:   []string{"--config-file=/config/config.yaml"},
			stderr: []string{"flag provided but not defined: -config-file", "Usage: gatehouse [--config FILE]"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runWithin(t, tc.args...)
			r.check(t, 2, nil, tc.stderr)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := runWithin(t, "--version")
	want := "gatehouse " + version.Get().String() + "\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", r.code, r.stdout, r.stderr, want)
	}
}

// runWithin is runMain for command lines that must not serve: one that runs
// for seconds is reported as serving, not left to hang the test.
func runWithin(t *testing.T, args ...string) runResult {
	t.Helper()
	done := make(chan runResult, 1)
	go func() { done <- runMain(args...) }()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("gatehouse %s is still running after 10s: it serves instead of refusing", strings.Join(args, " "))
		return runResult{}
	}
}
