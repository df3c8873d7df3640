//go:build !linux

package procs

import (
	"syscall"
	"time"
)

// setParentDeathSignal does nothing where there is no parent-death signal;
// the test's cleanup still stops the server.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// descendants is unknown without /proc; killing the process group covers
// servers that keep their children in it.
func descendants(int) []int { return nil }

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func waitGone(pids []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
