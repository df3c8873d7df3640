package procs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns a missing server
// binary from a skip into a failure when set to "1".
const RequireEnv = "CCPROXY_REQUIRE_FAULT_TESTS"

// startAttempts is how many ports a first start tries when the chosen port
// is taken before the server binds it.
const startAttempts = 3

// readyTimeout bounds how long a server may take to accept connections.
const readyTimeout = 30 * time.Second

// stopTimeout bounds a graceful stop before the server is killed.
const stopTimeout = 15 * time.Second

// unavailable skips tb, or fails it when RequireEnv is "1".
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("procs: %s (%s=1, so this is a failure, not a skip)", msg, RequireEnv)
	} else {
		tb.Skipf("procs: %s; skipping (set %s=1 to make this fail)", msg, RequireEnv)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("procs: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errBind marks a start that failed because the port was taken.
var errBind = errors.New("port already in use")

// isBindFailure reports whether a server log shows a failed listen.
func isBindFailure(log string) bool {
	for _, s := range []string{"Address already in use", "could not bind", "could not create any TCP/IP sockets", "Could not create server TCP listening socket"} {
		if strings.Contains(log, s) {
			return true
		}
	}
	return false
}

// process is one run of a server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // the Wait error, valid after done is closed
}

// The thread that forks a child with a parent-death signal must outlive the
// child (the signal fires when that thread exits), so all servers are
// started from one goroutine locked to its thread for the life of the
// test binary.
var (
	spawnOnce sync.Once
	spawnReq  chan func()
)

func onSpawnThread(f func()) {
	spawnOnce.Do(func() {
		spawnReq = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the binary
			for f := range spawnReq {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawnReq <- func() { defer close(done); f() }
	<-done
}

// spawn starts cmd in its own process group with a parent-death signal,
// writing its output to logPath, and reaps it in the background.
func spawn(cmd *exec.Cmd, logPath string, cred *syscall.Credential) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("procs: open log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	setParentDeathSignal(cmd.SysProcAttr)
	onSpawnThread(func() { err = cmd.Start() })
	if err != nil {
		return nil, fmt.Errorf("procs: start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait reports whether the process was reaped within d.
func (p *process) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill SIGKILLs the process, its process group and every descendant
// (including descendants that moved to groups of their own), and waits for
// them to be gone.
func (p *process) kill() {
	if p.exited() {
		return
	}
	pid := p.pid()
	// Freeze the parent so it cannot fork while its children are listed.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := descendants(pid)
	for _, k := range kids {
		_ = syscall.Kill(-k, syscall.SIGKILL) // k's own group, if it leads one
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	p.wait(10 * time.Second)
	waitGone(kids, 5*time.Second)
}

// logTail returns the end of a log file for error messages.
func logTail(path string, since int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size()-since > 4096 {
		since = st.Size() - 4096
	}
	_, _ = f.Seek(since, io.SeekStart)
	b, _ := io.ReadAll(f)
	return string(bytes.TrimSpace(b))
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// waitReady polls ready until it succeeds, the process exits or
// readyTimeout passes. A process that exited because its port was taken
// yields an error wrapping errBind.
func waitReady(p *process, name, logPath string, logStart int64, ready func() error) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if p.exited() {
			tail := logTail(logPath, logStart)
			if isBindFailure(tail) {
				return fmt.Errorf("procs: %s: %w:\n%s", name, errBind, tail)
			}
			return fmt.Errorf("procs: %s exited during startup (%v):\n%s", name, p.err, tail)
		}
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("procs: %s not ready after %s (last error: %v):\n%s", name, readyTimeout, last, logTail(logPath, logStart))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// cleanEnv is the environment for server processes: the test's, minus
// libpq variables, with messages in English so logs can be matched.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}
