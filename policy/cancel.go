package policy

import (
	"context"
	"sync/atomic"
	"time"
)

// cancelCheckEvery is how many of OPA's cancellation checks (one per
// expression evaluated, and inside long-running built-ins) pass between two
// looks at the clock and the context.
const cancelCheckEvery = 8

// evalCancel is the topdown.Cancel of one evaluation. It stops the
// evaluation at its deadline or when ctx ends, which it notices by looking,
// every cancelCheckEvery checks, rather than through a timer and a context
// callback per evaluation: those cost more than a small policy's whole
// evaluation. A policy that waits on the network (http.send) still gets a
// context with the deadline (evalOpts), since a call blocked in a built-in
// makes no cancellation checks.
type evalCancel struct {
	ctx      context.Context
	deadline time.Time // zero: none
	checks   atomic.Uint32
	stopped  atomic.Bool
	timedOut atomic.Bool
}

func newEvalCancel(ctx context.Context, deadline time.Time) *evalCancel {
	return &evalCancel{ctx: ctx, deadline: deadline}
}

// Cancel stops the evaluation at its next check.
func (c *evalCancel) Cancel() { c.stopped.Store(true) }

// Cancelled is OPA's check.
func (c *evalCancel) Cancelled() bool {
	if c.stopped.Load() {
		return true
	}
	if c.checks.Add(1)%cancelCheckEvery != 0 {
		return false
	}
	switch {
	case c.ctx.Err() != nil:
	case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
		c.timedOut.Store(true)
	default:
		return false
	}
	c.stopped.Store(true)
	return true
}

// TimedOut reports whether the evaluation was stopped by its deadline.
func (c *evalCancel) TimedOut() bool { return c.timedOut.Load() }
