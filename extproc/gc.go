package extproc

import (
	"runtime/debug"
)

// GCPercent is the garbage collector's target for an extproc process: the
// heap may grow to three times what is live (Go's default, GOGC=100, is
// twice). extproc's live heap is small — a few MiB of caches and the
// messages in flight — and every request allocates its ~50 KB body, so at
// the default the collector runs every few hundred requests. 200 cost
// about 10 % less CPU per request in the interleaved benchmark of
// docs/performance.md with a peak RSS of 39–43 MiB at 16 concurrent
// exchanges; 400 saved more but passed 45 MiB.
const GCPercent = 200

// SetGCPercent applies GCPercent unless the GOGC environment variable
// (getenv("GOGC")) chooses for itself. A GOMEMLIMIT, which the Kubernetes
// manifests derive from the container's memory limit, still bounds the heap.
// It changes the whole process: call it from main only.
func SetGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
