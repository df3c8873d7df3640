package e2e

import (
	"github.com/google/uuid"

	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// gateway is one running `ccproxy dev`.
type gateway struct {
	// Base is the gateway's root URL (http://127.0.0.1:port).
	Base string
	// Key is the demo access key ccproxy dev created.
	Key string
	// BaseURL is what ccproxy dev told Claude Code to use: Base + /ak/<key>.
	BaseURL string
	// DB is a pool on the gateway's database.
	DB *pgxpool.Pool
	// AdminAddr is the admin API's host:port.
	AdminAddr string
	// MetricsAddr serves /metrics.
	MetricsAddr string
	// RedisPrefix starts the gateway's Redis keys.
	RedisPrefix string
	// RedisURL is the Redis the gateway uses.
	RedisURL string

	stderr *tail
}

const announcePrefix = "export ANTHROPIC_BASE_URL="

// startDev runs `ccproxy dev` against a fresh database with its upstream set
// to anthropicURL, waits for the line it prints when ready, and stops it with
// SIGTERM when the test ends. If the test failed, the end of its log is
// attached to the test output.
func startDev(t *testing.T, anthropicURL string) *gateway {
	t.Helper()
	return startDevWith(t, devConfig{AnthropicURL: anthropicURL})
}

// devConfig lets several `ccproxy dev` processes share one installation.
type devConfig struct {
	AnthropicURL string
	// DatabaseURL, StateDir and RedisPrefix default to fresh ones; sharing
	// them makes processes share users, keys and invalidations.
	DatabaseURL, StateDir, RedisPrefix string
	// AdminPassword sets CCPROXY_ADMIN_PASSWORD.
	AdminPassword string
	// Env adds variables to the process's environment.
	Env []string
	// RedisURL defaults to the machine's Redis (testenv).
	RedisURL string
}

func startDevWith(t *testing.T, c devConfig) *gateway {
	t.Helper()
	if c.DatabaseURL == "" {
		c.DatabaseURL = testenv.Postgres(t)
	}
	if c.StateDir == "" {
		c.StateDir = t.TempDir()
	}
	if c.RedisURL == "" {
		c.RedisURL = testenv.RedisURL()
	}
	if c.RedisPrefix == "" {
		c.RedisPrefix = "ccproxytest:" + uuid.NewString() + ":"
	}
	// The ports are free when chosen but another process (a test package
	// running in parallel, an outgoing connection's ephemeral port) may take
	// one before ccproxy dev binds it: then it exits at once, naming the
	// address, and is started again on new ports.
	for attempt := 1; ; attempt++ {
		g, err := tryStartDev(t, c)
		if err == nil {
			return g
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; retrying on other ports", attempt, err)
	}
}

// accessKeyPattern matches an access key (keys.Generate: ak_ and 43
// base64url characters).
var accessKeyPattern = regexp.MustCompile(`ak_[A-Za-z0-9_-]{43}`)

// errPortTaken: ccproxy dev could not bind a port chosen for it.
var errPortTaken = errors.New("a port chosen for ccproxy dev was taken")

func tryStartDev(t *testing.T, c devConfig) (*gateway, error) {
	t.Helper()
	dbURL := c.DatabaseURL
	anthropicURL := c.AnthropicURL
	// Four distinct ports: listener, xDS, metrics, admin API.
	addrs := freeAddrs(t, 4)
	g := &gateway{stderr: &tail{max: 8 << 20}, AdminAddr: addrs[3], MetricsAddr: addrs[2], RedisPrefix: c.RedisPrefix, RedisURL: c.RedisURL}
	// Unix socket paths are limited to 108 bytes; test temp dirs carry the
	// test's name and can be longer.
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	cmd := exec.Command(binaries.ccproxy, "dev")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"DATABASE_URL=" + dbURL,
		"CCPROXY_LISTEN_ADDR=" + addrs[0],
		"CCPROXY_XDS_ADDR=" + addrs[1],
		"CCPROXY_METRICS_ADDR=" + g.MetricsAddr,
		"CCPROXY_ADMIN_ADDR=" + g.AdminAddr,
		"CCPROXY_ANTHROPIC_URL=" + anthropicURL,
		"CCPROXY_DEV_STATE_DIR=" + c.StateDir,
		// Its own socket, so that processes sharing a state dir do not collide.
		"CCPROXY_EXTPROC_ADDR=unix://" + filepath.Join(sockDir, "extproc.sock"),
		"REDIS_URL=" + c.RedisURL,
		// Each installation's Redis keys and invalidation channel stay its own.
		"CCPROXY_REDIS_PREFIX=" + c.RedisPrefix,
		"CCPROXY_ADMIN_PASSWORD=" + c.AdminPassword,
		"CCPROXY_LOG_FORMAT=json",
	}
	cmd.Env = append(cmd.Env, c.Env...)
	cmd.Stderr = g.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ccproxy dev: %v", err)
	}
	exited := make(chan error, 1)
	announced := make(chan string, 1)
	var abandoned bool // an attempt that failed to start: nothing to stop or report
	// Every other stdout line is envoysim's access log: none may carry an
	// access key, whatever the request (refused, not found, forwarded).
	var leaks []string
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, announcePrefix); ok {
				select {
				case announced <- v:
				default:
				}
				continue
			}
			if accessKeyPattern.MatchString(line) && len(leaks) < 5 {
				leaks = append(leaks, line)
			}
		}
		// Drain whatever follows so the process never blocks on stdout.
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if t.Failed() && !abandoned {
			t.Logf("ccproxy dev stderr (last %d bytes):\n%s", g.stderr.max, g.stderr.String())
		}
	})
	t.Cleanup(func() {
		if abandoned {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("ccproxy dev did not exit cleanly on SIGTERM: %v", err)
			}
			// exited is sent once stdout was read to its end.
			for _, l := range leaks {
				t.Errorf("an access log line carries an access key: %s", l)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("ccproxy dev still running 20s after SIGTERM; killed")
		}
	})

	select {
	case v := <-announced:
		g.BaseURL = v
	case err := <-exited:
		abandoned = true
		if strings.Contains(g.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("%w: %v\nstderr:\n%s", errPortTaken, err, g.stderr.String())
		}
		return nil, fmt.Errorf("ccproxy dev exited before it was ready: %v\nstderr:\n%s", err, g.stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("ccproxy dev printed no %q line within 2m\nstderr:\n%s", announcePrefix, g.stderr.String())
	}
	base, key, ok := strings.Cut(g.BaseURL, "/ak/")
	if !ok || key == "" || strings.Contains(key, "/") {
		t.Fatalf("ccproxy dev announced ANTHROPIC_BASE_URL=%q; want http://host:port/ak/<key>", g.BaseURL)
	}
	g.Base, g.Key = base, key

	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("connect to the gateway's database: %v", err)
	}
	t.Cleanup(pool.Close)
	g.DB = pool
	return g, nil
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago. The listeners are held open until all n are chosen: closing
// each before asking for the next lets the kernel hand the same port out
// twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
