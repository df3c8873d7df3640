package procs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a private redis-server owned by one test.
type Redis struct {
	bin     string
	dir     string
	logPath string
	aof     bool

	mu   sync.Mutex
	port int
	proc *process // nil or exited when stopped
}

// RedisOption configures StartRedis.
type RedisOption func(*Redis)

// WithAOF turns on the append-only file (appendonly yes, appendfsync
// always, in the test's temporary directory), so data survives Stop, Kill
// and Restart.
func WithAOF() RedisOption { return func(r *Redis) { r.aof = true } }

// StartRedis starts redis-server on a free loopback port, without
// persistence unless WithAOF is given, and waits until it answers PING. The
// server is stopped when t's test ends.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	bin, err := findRedis()
	if err != nil {
		unavailable(t, "%v", err)
	}
	r := &Redis{bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(r)
	}
	r.logPath = filepath.Join(r.dir, "redis.log")
	began := time.Now()
	t.Cleanup(r.shutdown)
	for attempt := 1; ; attempt++ {
		if r.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		err = r.start()
		if err == nil || !errors.Is(err, errBind) || attempt == startAttempts {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("procs: redis on %s ready in %s (aof=%v, log %s)", r.Addr(), time.Since(began).Round(time.Millisecond), r.aof, r.logPath)
	return r
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL returns the URL of database 0 on the server.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Stop sends SIGTERM (a shutdown that saves nothing, since no save points
// are configured; the AOF, if on, is already synced) and waits for exit.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil || r.proc.exited() {
		return
	}
	_ = syscall.Kill(r.proc.pid(), syscall.SIGTERM)
	if !r.proc.wait(stopTimeout) {
		r.proc.kill()
		t.Fatalf("procs: redis did not stop within %s; killed it:\n%s", stopTimeout, logTail(r.logPath, 0))
	}
}

// Start starts a stopped or killed server again on the same port and
// directory and waits until it answers PING (after loading the AOF, if on).
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = r.start(); err == nil || !errors.Is(err, errBind) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Kill SIGKILLs the server and any child (a background save or rewrite)
// and waits for them to be gone.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.kill()
		if !r.proc.exited() {
			t.Fatalf("procs: redis (pid %d) survived SIGKILL", r.proc.pid())
		}
	}
}

// Restart stops the server and starts it again.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop(t)
	r.Start(t)
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		return fmt.Errorf("procs: redis is already running on %s", r.Addr())
	}
	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--daemonize", "no",
		"--dir", r.dir,
		"--logfile", "",
		"--save", "",
	}
	if r.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Env = cleanEnv()
	logStart := fileSize(r.logPath)
	p, err := spawn(cmd, r.logPath, nil)
	if err != nil {
		return err
	}
	r.proc = p
	return waitReady(p, "redis", r.logPath, logStart, func() error {
		c := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: time.Second, MaxRetries: -1})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
}

// shutdown is the cleanup: SIGTERM, then SIGKILL for anything left.
func (r *Redis) shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	if !r.proc.exited() {
		_ = syscall.Kill(r.proc.pid(), syscall.SIGTERM)
		r.proc.wait(5 * time.Second)
	}
	r.proc.kill() // no-op when the shutdown finished
}

func findRedis() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if isExecutable("/usr/bin/redis-server") {
		return "/usr/bin/redis-server", nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err != nil {
		return "", errors.New("redis-server not found on PATH or at /usr/bin/redis-server (Debian: apt-get install redis-server)")
	}
	return "", errors.New("/usr/bin/redis-server is not executable")
}
