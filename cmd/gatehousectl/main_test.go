package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
)

// cliResult is one in-process run of the CLI.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line through run, as main does.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// runCLIStdin runs the command line with stdin.
func runCLIStdin(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr}
	code := a.exitCode(a.dispatch(context.Background(), args))
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r cliResult) wantCode(t *testing.T, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
	}
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no command", args: nil, wantCode: exitError, wantStderr: "no command given"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitError, wantStderr: `unknown command "frobnicate"`},
		{name: "help", args: []string{"--help"}, wantCode: exitOK, wantStdout: "Commands:"},
		{name: "check help", args: []string{"check", "--help"}, wantCode: exitOK, wantStdout: "Examples:"},
		{name: "check help lists flags", args: []string{"check", "-h"}, wantCode: exitOK, wantStdout: "-context-extension"},
		{name: "jwks generate help", args: []string{"jwks", "generate", "--help"}, wantCode: exitOK, wantStdout: "--append"},
		{name: "jwks serve help", args: []string{"jwks", "serve", "--help"}, wantCode: exitOK, wantStdout: "loopback"},
		{name: "token help", args: []string{"token", "--help"}, wantCode: exitOK, wantStdout: "--expired"},
		{name: "token decode help", args: []string{"token", "decode", "--help"}, wantCode: exitOK, wantStdout: "UNVERIFIED"},
		{name: "jwks without subcommand", args: []string{"jwks"}, wantCode: exitError, wantStderr: "missing subcommand"},
		{name: "bad flag", args: []string{"check", "--nope"}, wantCode: exitError, wantStderr: "gatehousectl check: flag provided but not defined: -nope"},
		{name: "bad flag value", args: []string{"check", "--timeout", "soon"}, wantCode: exitError, wantStderr: "Run 'gatehousectl check --help'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			r.wantCode(t, tc.wantCode)
			if !strings.Contains(r.stdout, tc.wantStdout) {
				t.Errorf("stdout does not contain %q:\n%s", tc.wantStdout, r.stdout)
			}
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.wantStderr, r.stderr)
			}
		})
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPos  []string
		wantRun  string
		wantBool bool
	}{
		{name: "flags first", args: []string{"--run", "x", "-v", "a", "b"}, wantPos: []string{"a", "b"}, wantRun: "x", wantBool: true},
		{name: "flags after", args: []string{"a", "--run", "x", "b", "-v"}, wantPos: []string{"a", "b"}, wantRun: "x", wantBool: true},
		{name: "double dash", args: []string{"a", "--", "-v", "--run"}, wantPos: []string{"a", "-v", "--run"}},
		{name: "stdin dash", args: []string{"-"}, wantPos: []string{"-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("x")
			run := fs.String("run", "", "")
			v := fs.Bool("v", false, "")
			pos, err := parseFlags(fs, "x", "", tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pos, "|") != strings.Join(tc.wantPos, "|") {
				t.Errorf("positional %q, want %q", pos, tc.wantPos)
			}
			if *run != tc.wantRun || *v != tc.wantBool {
				t.Errorf("run=%q v=%t, want %q %t", *run, *v, tc.wantRun, tc.wantBool)
			}
		})
	}
}

// TestRefusesArguments: every command refuses a positional argument it does
// not take (commands that take a FILE or a TOKEN refuse the ones after it)
// with exit code 2, the argument's name and the command's usage, before it
// reads a file or dials anything.
func TestRefusesArguments(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		arg   string // the argument the message must name
		usage string // the synopsis the message must show
	}{
		{"version", []string{"--version", "extra"}, "extra", "Usage: gatehousectl --version"},
		{"check", []string{"check", "--addr", "127.0.0.1:1", "extra", "--path", "/x"}, "extra", "Usage: gatehousectl check [flags]"},
		{"check with a path", []string{"check", "/orders"}, "/orders", "(the request path is given with --path)"},
		{"check after a double dash", []string{"check", "--", "--path", "/x"}, "--path", "Usage: gatehousectl check [flags]"},
		{"explain", []string{"explain", "extra"}, "extra", "Usage: gatehousectl explain [flags]"},
		{"status", []string{"status", "--json", "extra"}, "extra", "Usage: gatehousectl status [flags]"},
		{"jwks generate", []string{"jwks", "generate", "--out-private", "k.json", "--out-jwks", "j.json", "extra"}, "extra", "Usage: gatehousectl jwks generate --alg ALG"},
		{"jwks serve", []string{"jwks", "serve", "jwks.json"}, "jwks.json", "Usage: gatehousectl jwks serve --jwks jwks.json"},
		{"token", []string{"token", "--key", "k.json", "extra"}, "extra", "Usage: gatehousectl token --key key.json [flags]"},
		{"token decode", []string{"token", "decode", "a.b.c", "d.e.f"}, "d.e.f", "Usage: gatehousectl token decode [TOKEN|-]"},
		{"policy eval", []string{"policy", "eval", "--input", "in.json", "./policies"}, "./policies", "Usage: gatehousectl policy eval --input in.json"},
		{"convert", []string{"convert", "requestauthentication", "a.yaml", "b.yaml"}, "b.yaml", "Usage: gatehousectl convert requestauthentication [--jwks-dir DIR] FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			r.wantCode(t, exitError)
			for _, want := range []string{fmt.Sprintf("unexpected argument %q", tc.arg), tc.usage, "--help' for usage."} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// TestPolicyTestTakesPaths: policy test's positional arguments are its
// policy paths, so none is refused.
func TestPolicyTestTakesPaths(t *testing.T) {
	o, err := parsePolicyTestFlags([]string{"testdata/rego/passing", "--run", "x", "testdata/rego/mixed"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.paths, ",") != "testdata/rego/passing,testdata/rego/mixed" || o.run != "x" {
		t.Errorf("paths %q run %q", o.paths, o.run)
	}
}
