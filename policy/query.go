package policy

import (
	"context"
	"fmt"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// resultVar is the variable the decision query binds: result = <decision>.
const resultVar = ast.Var("result")

// query is a revision's decision query, compiled once and evaluated with
// OPA's evaluator (topdown) directly. It is what the rego package's prepared
// query does per evaluation, less the work that rego repeats on every call
// and the hot path does not need: a fresh evaluation context and its option
// closures, a metrics map, a result set built from the bindings, and the
// virtual-document cache's tree of hash maps (vcache here). Explain's tracer
// goes through the same path, so there is one evaluator.
type query struct {
	// tmpl holds everything that is the same for every evaluation of the
	// revision. Evaluations copy it and set their input and cancel on the
	// copy: topdown.Query's With* methods set a field and return the same
	// pointer, and Iter only fills in defaults on its receiver. The copy is
	// shallow, so the template must hold no slice or map an evaluation
	// appends to: no tracers (WithQueryTracer appends; Explain's goes on the
	// copy, whose nil slice it grows), resolvers or built-in error list.
	tmpl topdown.Query
}

// queryOptions are what prepareQuery needs of a revision.
type queryOptions struct {
	decision ast.Ref
	compiler *ast.Compiler
	store    storage.Store
	txn      storage.Transaction
	builtins map[string]*topdown.Builtin
	// strict: a built-in's error fails the evaluation instead of making its
	// expression undefined (Options.StrictBuiltinErrors).
	strict    bool
	printHook print.Hook // nil: print() is not compiled in
}

// prepareQuery compiles `result = <decision>` against the revision's compiler.
func prepareQuery(o queryOptions) (*query, error) {
	qc := o.compiler.QueryCompiler().WithEnablePrintStatements(o.printHook != nil)
	body, err := qc.Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(resultVar), ast.NewTerm(o.decision))))
	if err != nil {
		return nil, err
	}
	q := &query{}
	q.tmpl = *topdown.NewQuery(body).
		WithQueryCompiler(qc).
		WithCompiler(o.compiler).
		WithStore(o.store).
		WithTransaction(o.txn).
		WithBuiltins(o.builtins).
		WithIndexing(true).
		WithEarlyExit(true).
		WithStrictBuiltinErrors(o.strict).
		WithMetrics(metrics.NoOp())
	if o.printHook != nil {
		q.tmpl.WithPrintHook(o.printHook)
	}
	return q, nil
}

// eval evaluates the decision for input. defined is false when the decision
// is undefined for it. cancel stops the evaluation from outside; tracer,
// when not nil, receives OPA's trace events.
func (q *query) eval(ctx context.Context, input ast.Value, cancel topdown.Cancel, tracer topdown.QueryTracer) (result ast.Value, defined bool, err error) {
	vc := vcachePool.Get().(*vcache)
	defer vc.release()
	run := q.tmpl // a copy: the template is shared by every evaluation
	run.WithInput(ast.NewTerm(input)).WithCancel(cancel).WithVirtualCache(vc)
	if tracer != nil {
		run.WithQueryTracer(tracer)
	}
	n := 0
	err = run.Iter(ctx, func(qr topdown.QueryResult) error {
		n++
		if t := qr[resultVar]; t != nil {
			result = t.Value
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, false, err
	case n > 1:
		// A ground reference has one value; two results would be a bug in
		// the query, never a policy's doing.
		return nil, false, fmt.Errorf("%d results, want one", n)
	case n == 1 && result == nil:
		return nil, false, fmt.Errorf("%s is not bound in the result", resultVar)
	}
	return result, n == 1, nil
}

// vcache is topdown.VirtualCache, the per-evaluation cache of rule values,
// kept in flat slices that a pool reuses: OPA's own builds a tree with a hash
// map per reference segment, several allocations per cached rule on every
// evaluation. A frame is searched linearly while small and through a hash
// index past vcacheLinear entries, so a function called with a thousand
// different arguments in one evaluation stays cheap.
type vcache struct {
	frames []vframe
	depth  int // frames in use
}

type vframe struct {
	entries []ventry
	index   map[int][]int32 // ref hash -> positions in entries; nil while small
}

type ventry struct {
	ref       ast.Ref
	value     *ast.Term // nil with undefined
	undefined bool
}

const vcacheLinear = 16

var vcachePool = sync.Pool{New: func() any {
	vc := &vcache{}
	vc.Push()
	return vc
}}

// release empties the cache (dropping every reference to terms, so a pooled
// cache keeps nothing alive) and returns it to the pool with one frame.
func (c *vcache) release() {
	for c.depth > 1 {
		c.Pop()
	}
	c.frames[0].reset()
	vcachePool.Put(c)
}

func (f *vframe) reset() {
	clear(f.entries)
	f.entries = f.entries[:0]
	if f.index != nil {
		clear(f.index)
	}
}

func (c *vcache) Push() {
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, vframe{})
	}
	c.depth++
}

func (c *vcache) Pop() {
	c.depth--
	c.frames[c.depth].reset()
}

func (c *vcache) top() *vframe { return &c.frames[c.depth-1] }

// find returns the position of ref in the frame, or -1.
func (f *vframe) find(ref ast.Ref) int {
	if f.index == nil || len(f.entries) <= vcacheLinear {
		for i := range f.entries {
			if f.entries[i].ref.Equal(ref) {
				return i
			}
		}
		return -1
	}
	for _, i := range f.index[ref.Hash()] {
		if f.entries[i].ref.Equal(ref) {
			return int(i)
		}
	}
	return -1
}

// Get follows topdown.VirtualCache: (value, false) when cached, (nil, true)
// when cached as undefined, (nil, false) when not cached.
func (c *vcache) Get(ref ast.Ref) (*ast.Term, bool) {
	f := c.top()
	i := f.find(ref)
	if i < 0 {
		return nil, false
	}
	e := &f.entries[i]
	if e.undefined {
		return nil, true
	}
	return e.value, false
}

// Put caches value for ref; a nil value records that ref is undefined.
func (c *vcache) Put(ref ast.Ref, value *ast.Term) {
	f := c.top()
	if i := f.find(ref); i >= 0 {
		e := &f.entries[i]
		if value != nil {
			e.value = value
		} else {
			e.undefined = true
		}
		return
	}
	// The evaluator may pass a window of a slice it goes on to reuse; the
	// ref's terms are immutable, its backing array is not ours to keep.
	f.entries = append(f.entries, ventry{ref: append(ast.Ref(nil), ref...), value: value, undefined: value == nil})
	n := len(f.entries)
	switch {
	case n <= vcacheLinear:
	case f.index == nil || len(f.index) == 0:
		if f.index == nil {
			f.index = make(map[int][]int32, 2*vcacheLinear)
		}
		for i := range f.entries {
			h := f.entries[i].ref.Hash()
			f.index[h] = append(f.index[h], int32(i))
		}
	default:
		h := ref.Hash()
		f.index[h] = append(f.index[h], int32(n-1))
	}
}

// Keys lists the refs cached with a value in the top frame.
func (c *vcache) Keys() []ast.Ref {
	f := c.top()
	var keys []ast.Ref
	for _, e := range f.entries {
		if e.value != nil {
			keys = append(keys, e.ref)
		}
	}
	return keys
}
