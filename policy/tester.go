package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestOptions configures RunTests.
type TestOptions struct {
	// Paths are files or directories of modules (tests included) and data
	// files, loaded as for Options.Paths.
	Paths []string
	// RegoVersion is "v1" (default) or "v0".
	RegoVersion string
	// Config is placed at data.gatehouse.config.
	Config map[string]any
	// Run is a regular expression selecting tests by their full name
	// (data.pkg.test_name); empty runs all.
	Run string
	// IncludeEmbedded also runs the embedded modules' own tests. The embedded
	// library is always loaded; the embedded envoy.* entry point only when
	// Paths is empty, as when serving.
	IncludeEmbedded bool
}

// TestResult is the outcome of one Rego test rule.
type TestResult struct {
	// Package is the test's package, without the "data." prefix.
	Package string
	// Name is the test rule's name.
	Name string
	// Location is the test's file:line.
	Location string
	// Pass reports a passing test; a test that is neither passing nor
	// skipped failed (Err nil) or errored (Err set).
	Pass bool
	// Skip reports a test skipped with the todo_test_ prefix.
	Skip bool
	// Err is the evaluation error of an errored test.
	Err error
	// Duration is how long the test took.
	Duration time.Duration
	// Output is what the test printed with print().
	Output string
}

// RunTests runs the Rego tests (rules named test_*) under opts.Paths with
// OPA's test runner, with Gatehouse's built-ins available, and returns their
// results sorted by package and name. A module that does not parse or
// compile is an error naming file:line:col.
func RunTests(ctx context.Context, opts TestOptions) ([]TestResult, error) {
	version, err := parseRegoVersion(opts.RegoVersion)
	if err != nil {
		return nil, fmt.Errorf("policy test: %w", err)
	}
	// The embedded library is always there, so users' tests can call the same
	// helpers their policies do; its own tests run only when asked for.
	src, err := loadSources(opts.Paths, version, opts.Config, true, embedFor(opts.Paths), opts.IncludeEmbedded)
	if err != nil {
		return nil, fmt.Errorf("policy test: %w", err)
	}
	data, err := ast.InterfaceToValue(src.data)
	if err != nil {
		return nil, fmt.Errorf("policy test: data: %w", err)
	}
	obj, ok := data.(ast.Object)
	if !ok {
		return nil, errors.New("policy test: data: not an object")
	}
	store := inmem.NewFromASTObject(obj)
	txn, err := store.NewTransaction(ctx, storage.TransactionParams{})
	if err != nil {
		return nil, fmt.Errorf("policy test: %w", err)
	}
	defer store.Abort(ctx, txn)

	cidrs := newCIDRCache()
	runner := tester.NewRunner().
		// Rego tests run on a developer's machine, as opa test does: no host
		// restriction for the network built-ins.
		SetCompiler(newCompiler(version, true, nil)).
		SetDefaultRegoVersion(version).
		SetStore(store).
		SetModules(src.modules).
		AddCustomBuiltins([]*tester.Builtin{{Decl: cidrContainsBuiltin(), Func: cidrs.option()}}).
		CapturePrintOutput(true).
		RaiseBuiltinErrors(true).
		Filter(opts.Run)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("policy test: %w", withLocations(err))
	}
	var results []TestResult
	for r := range ch {
		tr := TestResult{
			Package:  strings.TrimPrefix(r.Package, "data."),
			Name:     r.Name,
			Pass:     r.Pass(),
			Skip:     r.Skip,
			Err:      r.Error,
			Duration: r.Duration,
			Output:   string(r.Output),
		}
		if r.Location != nil {
			tr.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
		}
		results = append(results, tr)
	}
	if err := ctx.Err(); err != nil {
		return results, fmt.Errorf("policy test: %w", err)
	}
	slices.SortFunc(results, func(a, b TestResult) int {
		return cmp.Or(cmp.Compare(a.Package, b.Package), cmp.Compare(a.Name, b.Name))
	})
	return results, nil
}
