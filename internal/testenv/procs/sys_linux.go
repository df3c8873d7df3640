package procs

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// setParentDeathSignal makes the kernel SIGKILL a server if the test binary
// dies without running its cleanups (a panic, a timeout, a SIGKILL). Go
// applies it after switching credentials, so it survives the uid change.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// descendants lists every live descendant of pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// stat returns the state and parent pid of a process from /proc/<pid>/stat.
func stat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may contain spaces and parens
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil || len(f[0]) == 0 {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

func parentOf(pid int) (int, bool) {
	_, pp, ok := stat(pid)
	return pp, ok
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, _, ok := stat(pid)
	return ok && st != 'Z' && st != 'X'
}

// waitGone waits until none of pids is alive (zombies count as gone: they
// hold no memory, ports or shared memory attachments), or d passes.
func waitGone(pids []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
