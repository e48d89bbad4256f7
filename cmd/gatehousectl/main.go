// Command gatehousectl is the developer companion of Gatehouse: a standalone
// ext_authz gRPC test client (check), JWKS and test-token tooling (jwks, token)
// and a Rego test runner and evaluator (policy). The check subcommand speaks
// plain envoy.service.auth.v3, so it works against any ext_authz server.
//
// Every subcommand returns an error; only main turns it into an exit code:
// 0 allowed / passed, 1 denied / tests failed, 2 any other error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gatehouse-dev/gatehouse/internal/version"
)

// Exit codes shared by every subcommand.
const (
	exitOK    = 0 // allowed, tests passed, command done
	exitNo    = 1 // the command worked and the answer is "no": denied, tests failed
	exitError = 2 // anything else: bad flags, bad files, connection errors, timeouts
)

// errDenied is returned when a check or an evaluation answered "deny". It is a
// result, not a failure: main maps it to exit code 1 and prints nothing more.
var errDenied = errors.New("denied")

// errTestsFailed is returned when policy tests ran and at least one failed.
var errTestsFailed = errors.New("tests failed")

// usageError is a command-line mistake; main prints it, then the usage
// synopsis when there is one, and a pointer to --help.
type usageError struct {
	cmd   string
	err   error
	usage string // the command's synopsis ("Usage: ..." lines), or ""
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// refuseArguments returns nil when the positional arguments pos are no more
// than the taken the command uses, and otherwise a usage error naming the
// first one beyond them, with hint (" (did you mean ...?)" or "") and the
// synopsis of usage. A command must not run on a command line it only half
// understood.
func refuseArguments(cmd, usage string, pos []string, taken int, hint string) error {
	if len(pos) <= taken {
		return nil
	}
	return &usageError{
		cmd:   cmd,
		err:   fmt.Errorf("unexpected argument %q%s", pos[taken], hint),
		usage: synopsis(usage),
	}
}

// synopsis is usage up to its first blank line: the "Usage: ..." lines.
func synopsis(usage string) string {
	s, _, _ := strings.Cut(usage, "\n\n")
	return strings.TrimSpace(s) + "\n"
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one gatehousectl command line and returns its exit code. It
// reads standard input from os.Stdin (for `--request -` and `token decode -`).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	return a.exitCode(a.dispatch(ctx, args))
}

// app carries the standard streams through the subcommands, so tests can run
// the whole CLI in-process.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

const mainUsage = `gatehousectl: developer tools for Gatehouse and any Envoy ext_authz server.

Usage:
  gatehousectl <command> [flags] [args]
  gatehousectl --version

Commands:
  check           send an ext_authz CheckRequest built from flags (or a JSON file) and print the decision
  explain         ask a running Gatehouse (admin listener) why a request would be allowed or denied
  status          show a running Gatehouse's policy revision, JWKS state and caches
  jwks generate   generate a signing key pair: private JWK + public JWKS
  jwks serve      serve a JWKS file over HTTP on loopback (re-read on every request)
  token           mint a signed test JWT from a private JWK
  token decode    show a JWT's header and claims WITHOUT verifying it
  policy test     run Rego tests (*_test.rego) with the Gatehouse library available
  policy eval     evaluate a policy against an input document and print the decision
  convert requestauthentication
                  print the jwt configuration equivalent to Istio RequestAuthentication objects
  convert authorizationpolicy
                  print the authorization configuration equivalent to Istio AuthorizationPolicy objects

Exit codes: 0 allowed / passed, 1 denied / tests failed, 2 error.

Run 'gatehousectl <command> --help' for the flags and examples of a command.
`

func (a *app) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, mainUsage)
		return &usageError{err: errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(a.stdout, mainUsage)
		return nil
	case "-version", "--version":
		if err := refuseArguments("", "Usage: gatehousectl --version", rest, 0, ""); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "gatehouse", version.Get())
		return nil
	case "check":
		return a.check(ctx, rest)
	case "explain":
		return a.explain(ctx, rest)
	case "status":
		return a.status(ctx, rest)
	case "jwks":
		return a.jwks(ctx, rest)
	case "token":
		return a.token(ctx, rest)
	case "policy":
		return a.policy(ctx, rest)
	case "convert":
		return a.convert(ctx, rest)
	default:
		return &usageError{err: fmt.Errorf("unknown command %q", cmd)}
	}
}

// exitCode prints err (when it needs printing) and maps it to an exit code.
func (a *app) exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errDenied), errors.Is(err, errTestsFailed):
		return exitNo
	}
	var help *helpRequest
	if errors.As(err, &help) {
		fmt.Fprint(a.stdout, help.text)
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		name := strings.TrimSpace("gatehousectl " + ue.cmd)
		fmt.Fprintf(a.stderr, "%s: %v\n%sRun '%s --help' for usage.\n", name, ue.err, ue.usage, name)
		return exitError
	}
	fmt.Fprintf(a.stderr, "gatehousectl: %v\n", err)
	return exitError
}

// newFlagSet returns a flag set that reports nothing itself: parseFlags turns
// -h into a *helpRequest (help on stdout, exit 0) and mistakes into usage
// errors (exit 2).
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// helpRequest is returned by a parser when -h/--help was given; main prints
// the rendered help on stdout and exits 0.
type helpRequest struct{ text string }

func (h *helpRequest) Error() string { return "help requested" }

// parseFlags parses args, allowing flags after positional arguments (so that
// `policy test ./dir --run foo` works), and returns the positional arguments.
// Everything after a bare "--" is positional. -h/--help yields a *helpRequest
// carrying usage followed by the flag defaults.
func parseFlags(fs *flag.FlagSet, cmd, usage string, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				var b strings.Builder
				b.WriteString(usage)
				b.WriteString("\nFlags:\n")
				fs.SetOutput(&b)
				fs.PrintDefaults()
				fs.SetOutput(io.Discard)
				return nil, &helpRequest{text: b.String()}
			}
			return nil, &usageError{cmd: cmd, err: err}
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ", ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// flagsSet returns the names of the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
