package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/gatehouse-dev/gatehouse/config"
	"github.com/gatehouse-dev/gatehouse/internal/gctune"
)

// startGCTuner applies ops.gc_min_heap_mib. It leaves the runtime alone when
// the setting is 0 or GOGC is set in the environment (the operator's choice
// wins), and keeps the floor at half of a memory limit (GOMEMLIMIT), so the
// floor never pushes the heap against the limit. The caller stops the tuner.
func startGCTuner(cfg *config.Config, logger *slog.Logger) *gctune.Tuner {
	mib := 0
	if cfg.Ops.GCMinHeapMiB != nil {
		mib = *cfg.Ops.GCMinHeapMiB
	}
	if mib == 0 {
		return nil
	}
	if v, ok := os.LookupEnv("GOGC"); ok {
		logger.Info("GOGC is set in the environment; ops.gc_min_heap_mib is not applied", "GOGC", v)
		return nil
	}
	floor := uint64(mib) << 20
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 && floor > uint64(limit)/2 {
		logger.Warn("ops.gc_min_heap_mib is more than half the memory limit (GOMEMLIMIT); using half the limit",
			"gc_min_heap_mib", mib, "memory_limit_bytes", limit)
		floor = uint64(limit) / 2
	}
	t := gctune.Start(gctune.Options{MinHeap: floor})
	if t != nil { // nil when a tiny GOMEMLIMIT leaves no floor
		logger.Debug("garbage collector tuned", "min_heap_bytes", floor, "gogc", t.Percent())
	}
	return t
}
