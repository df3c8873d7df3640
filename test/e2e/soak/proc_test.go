package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// component is one ccproxy process (extproc, admin, controlplane) that the
// chaos loop kills and starts again. Every run appends to the same log
// file, so the panic scan at the end sees every run.
type component struct {
	name        string
	args        []string
	env         []string
	logPath     string
	metricsAddr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

// start runs the process once more. The ports are fixed for the whole
// soak, so a start right after a kill can find a port still held (a
// TIME_WAIT listener is fine, an outgoing connection that took the port is
// not): the caller retries until the process is ready.
func (c *component) start(bin string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil && !c.isExited() {
		return fmt.Errorf("%s is already running", c.name)
	}
	f, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, c.args...)
	cmd.Env = c.env
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.cmd, c.exited = cmd, exited
	c.starts++
	return nil
}

func (c *component) isExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// signal sends sig and waits for the process to exit (SIGKILL after
// timeout). It reports whether the process exited on sig alone.
func (c *component) signal(sig syscall.Signal, timeout time.Duration) bool {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return false
	}
}

// ready reports whether the process answers /readyz with 200.
func (c *component) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.metricsAddr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz: %d", c.name, resp.StatusCode)
	}
	return nil
}

// startReady starts the process and waits until it is ready, starting it
// again when it exits (a dependency still recovering, a port still held).
func (c *component) startReady(ctx context.Context, bin string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := c.start(bin); err != nil {
			return err
		}
		for {
			if c.ready(ctx) == nil {
				return nil
			}
			if c.isExited() {
				break
			}
			if time.Now().After(deadline) {
				c.signal(syscall.SIGKILL, time.Second)
				return fmt.Errorf("%s not ready after %s", c.name, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s kept exiting for %s; see %s", c.name, timeout, c.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metrics reads the named unlabelled series from /metrics.
func (c *component) metrics(names ...string) (map[string]float64, error) {
	resp, err := http.Get("http://" + c.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil {
			out[name] = f
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s /metrics has no %s", c.name, n)
		}
	}
	return out, nil
}

// stop ends the process at the end of the soak (SIGTERM, then SIGKILL).
func (c *component) stop(t *testing.T) {
	if !c.signal(syscall.SIGTERM, 20*time.Second) {
		t.Errorf("%s still running 20 s after SIGTERM; killed", c.name)
	}
}

// panics returns the log lines that mention a panic.
func panics(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(strings.ToLower(line), "panic") {
			out = append(out, line)
		}
	}
	return out, nil
}
