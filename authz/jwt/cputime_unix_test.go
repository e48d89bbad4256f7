//go:build unix

package jwt

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the test process has used:
// benchmarks report it per operation, a figure that holds better than wall
// time on a machine shared with other work.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
