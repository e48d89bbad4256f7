package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/policy"
)

const policyUsage = `Usage: gatehousectl policy <test|eval> [flags]

  test   run Rego tests (*_test.rego) with the Gatehouse library available
  eval   evaluate a policy against an input document and print the decision

Run 'gatehousectl policy test --help' or 'gatehousectl policy eval --help'.
`

const policyTestUsage = `Usage: gatehousectl policy test DIR|FILE... [--run REGEX] [--v0] [-v] [--embedded]

Run the Rego tests (rules named test_*) found in the given files and
directories, as 'opa test' does, with Gatehouse's embedded library and the
gatehouse.cidr_contains built-in available. Prints one PASS/FAIL/ERROR/SKIP
line per test and a summary "N passed, M failed". A test that errors counts
as failed; finding no test at all is a failure too, so a mistyped --run or an
empty directory cannot pass silently.

Exit codes: 0 all passed, 1 a test failed (or none ran), 2 the policies do not
load or compile (printed as file:line: message) or bad flags.

Examples:
  gatehousectl policy test ./policies
  gatehousectl policy test ./policies --run 'test_admin_.*' -v
  gatehousectl policy test ./legacy --v0
  gatehousectl policy test --embedded ./policies   # also run the default policy's own tests
`

const policyEvalUsage = `Usage: gatehousectl policy eval --input in.json [--policy DIR|FILE]... [--decision envoy/authz/allow]

Evaluate a policy against one input document (the JSON Gatehouse builds from a
CheckRequest: attributes, parsed_path, parsed_query, client_ip, jwt, ...) and
print the decision the way 'check' prints a CheckResponse, plus the
Gatehouse keys reason, bypass and revision. Without --policy the embedded
default policy is evaluated. (--config is not supported yet: data.gatehouse.config
is empty.)

A decision that is undefined, of the wrong type, or fails at run time is an
error (exit 2) naming the reason Gatehouse would log (policy_undefined,
policy_bad_result, policy_error); Gatehouse itself would deny such a request
with policy.fail_status.

Exit codes: 0 allowed, 1 denied, 2 error.

Examples:
  gatehousectl policy eval --input testdata/admin.json
  gatehousectl policy eval --input in.json --policy ./policies --decision envoy/authz/allow --json
  gatehousectl check --dry-run ... | jq '{attributes: .attributes}' | gatehousectl policy eval --input -
`

func (a *app) policy(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, policyUsage)
		return usageErrorf("policy", "missing subcommand: test or eval")
	}
	switch args[0] {
	case "test":
		o, err := parsePolicyTestFlags(args[1:])
		if err != nil {
			return err
		}
		return a.policyTest(ctx, o)
	case "eval":
		o, err := parsePolicyEvalFlags(args[1:])
		if err != nil {
			return err
		}
		return a.policyEval(ctx, o)
	case "-h", "-help", "--help", "help":
		return &helpRequest{text: policyUsage}
	default:
		return usageErrorf("policy", "unknown subcommand %q: want test or eval", args[0])
	}
}

// policyTestOptions is the parsed command line of `policy test`.
type policyTestOptions struct {
	paths    []string
	run      string
	v0       bool
	verbose  bool
	embedded bool
}

func parsePolicyTestFlags(args []string) (policyTestOptions, error) {
	const cmd = "policy test"
	var o policyTestOptions
	fs := newFlagSet(cmd)
	fs.StringVar(&o.run, "run", "", "run only the tests whose data.<package>.<name> matches `REGEX`")
	fs.BoolVar(&o.v0, "v0", false, "the policies use the pre-1.0 Rego syntax")
	fs.BoolVar(&o.verbose, "v", false, "verbose: print each test's location and print() output")
	fs.BoolVar(&o.embedded, "embedded", false, "also run the embedded default policy's own tests")
	pos, err := parseFlags(fs, cmd, policyTestUsage, args)
	if err != nil {
		return o, err
	}
	o.paths = pos
	if len(o.paths) == 0 && !o.embedded {
		return o, usageErrorf(cmd, "give at least one policy directory or file")
	}
	if o.run != "" {
		if _, err := regexp.Compile(o.run); err != nil {
			return o, usageErrorf(cmd, "--run: %v", err)
		}
	}
	return o, nil
}

func regoVersion(v0 bool) string {
	if v0 {
		return "v0"
	}
	return "v1"
}

func (a *app) policyTest(ctx context.Context, o policyTestOptions) error {
	// The embedded gatehouse.* library is always loaded, so users' tests can
	// call its helpers; its own tests run only with --embedded.
	results, err := policy.RunTests(ctx, policy.TestOptions{
		Paths:           o.paths,
		RegoVersion:     regoVersion(o.v0),
		Run:             o.run,
		IncludeEmbedded: o.embedded,
	})
	if err != nil {
		// Load and compile errors: the policy package names file:line.
		return err
	}
	return writeTestResults(a.stdout, results, o.verbose)
}

// writeTestResults prints one line per test, as `opa test` words them, and the
// summary; it returns errTestsFailed unless at least one test ran and all passed.
func writeTestResults(w io.Writer, results []policy.TestResult, verbose bool) error {
	var b strings.Builder
	var passed, failed, skipped int
	for _, r := range results {
		name := "data." + r.Package + "." + r.Name
		var verdict string
		switch {
		case r.Skip:
			verdict, skipped = "SKIPPED", skipped+1
		case r.Err != nil:
			verdict, failed = "ERROR", failed+1
		case r.Pass:
			verdict, passed = "PASS", passed+1
		default:
			verdict, failed = "FAIL", failed+1
		}
		fmt.Fprintf(&b, "%s: %s (%s)\n", name, verdict, r.Duration.Round(time.Microsecond))
		failedTest := verdict == "FAIL" || verdict == "ERROR"
		if r.Location != "" && (verbose || failedTest) {
			fmt.Fprintf(&b, "  at %s\n", r.Location)
		}
		if r.Err != nil {
			fmt.Fprintf(&b, "  error: %v\n", r.Err)
		}
		if r.Output != "" && (verbose || failedTest) {
			for _, line := range strings.Split(strings.TrimRight(r.Output, "\n"), "\n") {
				fmt.Fprintf(&b, "  | %s\n", line)
			}
		}
	}
	b.WriteString(strings.Repeat("-", 80) + "\n")
	fmt.Fprintf(&b, "%d passed, %d failed", passed, failed)
	if skipped > 0 {
		fmt.Fprintf(&b, ", %d skipped", skipped)
	}
	if len(results) == skipped {
		b.WriteString(" (no tests ran)")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if failed > 0 || passed == 0 {
		return errTestsFailed
	}
	return nil
}

// policyEvalOptions is the parsed command line of `policy eval`.
type policyEvalOptions struct {
	input      string // file, "-" for stdin
	paths      []string
	decision   string
	v0         bool
	jsonOutput bool
}

func parsePolicyEvalFlags(args []string) (policyEvalOptions, error) {
	const cmd = "policy eval"
	var o policyEvalOptions
	var paths stringList
	fs := newFlagSet(cmd)
	fs.StringVar(&o.input, "input", "", "input document `file` (JSON; \"-\" for stdin)")
	fs.Var(&paths, "policy", "policy `DIR|FILE` of .rego and data files (repeatable; default: the embedded policy)")
	fs.StringVar(&o.decision, "decision", "envoy/authz/allow", "decision rule path")
	fs.BoolVar(&o.v0, "v0", false, "the policies use the pre-1.0 Rego syntax")
	fs.BoolVar(&o.jsonOutput, "json", false, "print the decision as one JSON object (see docs/gatehousectl.md)")
	pos, err := parseFlags(fs, cmd, policyEvalUsage, args)
	if err != nil {
		return o, err
	}
	if err := refuseArguments(cmd, policyEvalUsage, pos, 0, " (policies are given with --policy)"); err != nil {
		return o, err
	}
	o.paths = paths
	if o.input == "" {
		return o, usageErrorf(cmd, "--input is required")
	}
	return o, nil
}

func (a *app) policyEval(ctx context.Context, o policyEvalOptions) error {
	data, err := readFileOrStdin(o.input, a.stdin)
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	input, err := policy.InputFromJSON(data)
	if err != nil {
		return fmt.Errorf("--input %s: %w", o.input, err)
	}
	engine, err := policy.New(ctx, policy.Options{
		Paths:       o.paths,
		Decision:    o.decision,
		RegoVersion: regoVersion(o.v0),
	})
	if err != nil {
		return err
	}
	d, err := engine.Eval(ctx, input)
	if err != nil {
		var ee *policy.EvalError
		if errors.As(err, &ee) {
			return fmt.Errorf("%w (revision %s; Gatehouse would deny with reason %s and policy.fail_status)", err, d.Revision, ee.Reason)
		}
		return err
	}
	r := resultFromDecision(d)
	if err := a.writeResult(r, o.jsonOutput); err != nil {
		return err
	}
	if !r.Allowed {
		return errDenied
	}
	return nil
}

// resultFromDecision maps a policy decision to the printed result. The
// append controls are left unset: authz chooses them, not the policy.
func resultFromDecision(d policy.Decision) result {
	r := emptyResult()
	r.Allowed = d.Allowed
	r.HTTPStatus = d.HTTPStatus
	if r.Allowed {
		r.HTTPStatus = 0
	} else if r.HTTPStatus == 0 {
		r.HTTPStatus = defaultDeniedStatus
	}
	for _, h := range d.Headers {
		r.Headers = append(r.Headers, headerOption{Key: h.Key, Value: h.Value})
	}
	for _, h := range d.ResponseHeadersToAdd {
		r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, headerOption{Key: h.Key, Value: h.Value})
	}
	r.HeadersToRemove = nonNil(d.RequestHeadersToRemove)
	for _, q := range d.QueryParametersToSet {
		r.QueryParametersToSet = append(r.QueryParametersToSet, queryParameter{Key: q.Key, Value: q.Value})
	}
	r.QueryParametersToRemove = nonNil(d.QueryParametersToRemove)
	r.Body = d.Body
	if d.DynamicMetadata != nil {
		r.DynamicMetadata = d.DynamicMetadata
	}
	reason, bypass, revision := d.Reason, d.Bypass, d.Revision
	r.Reason, r.Bypass, r.Revision = &reason, &bypass, &revision
	return r
}
