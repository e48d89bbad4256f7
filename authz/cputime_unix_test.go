//go:build unix

package authz

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process has used (user and system), so
// that benchmarks can report CPU per operation, which a busy shared machine
// disturbs far less than wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
