package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// binary builds the ccproxy binary once for the tests that run it as a
// person would, with its real exit status, standard output and error.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ccproxy-bin")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "ccproxy")
	out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return path, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if path, err := binary(); err == nil {
		os.RemoveAll(filepath.Dir(path))
	}
	os.Exit(code)
}

// devCommand returns `ccproxy dev` with loopback addresses of its own, a
// fresh database and the given environment on top.
func devCommand(t *testing.T, ctx context.Context, extra map[string]string, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	environ := map[string]string{
		"CCPROXY_LOG_FORMAT":     "json",
		"CCPROXY_XDS_ADDR":       "127.0.0.1:0",
		"CCPROXY_ADMIN_ADDR":     "127.0.0.1:0",
		"CCPROXY_METRICS_ADDR":   "",
		"CCPROXY_EXTPROC_ADDR":   "unix://" + filepath.Join(sockDir, "extproc.sock"),
		"CCPROXY_DEV_STATE_DIR":  t.TempDir(),
		"CCPROXY_ADMIN_PASSWORD": "correct-horse-battery",
		"HOME":                   t.TempDir(),
	}
	for k, v := range extra {
		environ[k] = v
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"dev"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range environ {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func TestDevPortBusyExitsWithOneLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, prefix := testenv.Redis(t)
	cmd := devCommand(t, ctx, map[string]string{
		"DATABASE_URL": testenv.Postgres(t), "REDIS_URL": testenv.RedisURL(), "CCPROXY_REDIS_PREFIX": prefix,
		"CCPROXY_LISTEN_ADDR": addr,
	})
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1; stderr:\n%s", err, stderr.String())
	}
	want := "ccproxy: gateway address " + addr + " is in use (another ccproxy dev?); stop that process or choose another address with --listen-addr / CCPROXY_LISTEN_ADDR\n"
	if stderr.String() != want || stdout.String() != "" {
		t.Fatalf("stdout %q\nstderr %q\nwant stderr %q", stdout.String(), stderr.String(), want)
	}
}

func TestDevNeverPrintsTheDatabasePassword(t *testing.T) {
	pg := testenv.PostgresAdminURL()
	host := "127.0.0.1:5432"
	if i := strings.Index(pg, "@"); i >= 0 {
		host = strings.SplitN(pg[i+1:], "/", 2)[0]
	}
	tests := []struct {
		name, url, want string
	}{
		{"no host", "postgres://u:hunter2@/db", "ccproxy: setting --database-url / DATABASE_URL = \"postgres://u:[REDACTED]@/db\" is invalid: must be a postgres:// URL with a host\n"},
		{"encoded password, no host", "postgres://u:hun%74er2@/db", "ccproxy: setting --database-url / DATABASE_URL = \"postgres://u:[REDACTED]@/db\" is invalid: must be a postgres:// URL with a host\n"},
		{"missing database", "postgres://postgres:hunter2@" + host + "/ccproxy_no_such_db?sslmode=disable", "Create the database first: createdb"},
		{"unknown role", "postgres://nosuchrole:hunter2@" + host + "/postgres?sslmode=disable", "Check the user and password in DATABASE_URL / --database-url (postgres://nosuchrole:xxxxx@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := devCommand(t, ctx, map[string]string{"DATABASE_URL": tt.url, "REDIS_URL": testenv.RedisURL(), "CCPROXY_LISTEN_ADDR": "127.0.0.1:0"})
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1; output:\n%s", err, out)
			}
			if bytes.Contains(out, []byte("hunter2")) || bytes.Contains(out, []byte("hun%74er2")) {
				t.Fatalf("the password is printed:\n%s", out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("output:\n%s\nwant it to contain %q", out, tt.want)
			}
		})
	}
}

func TestUnknownFlagPointsAtHelp(t *testing.T) {
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "dev", "--bogus").CombinedOutput()
	if want := "ccproxy: unknown flag: --bogus\nRun 'ccproxy dev --help' for usage.\n"; err == nil || string(out) != want {
		t.Fatalf("output %q (%v), want %q", out, err, want)
	}
}

// TestDevWaitsForRedis starts `ccproxy dev` with nothing listening at its
// Redis address: it says so in one line and keeps trying; once a proxy to
// the real Redis listens there, it starts and prints its banner.
func TestDevWaitsForRedis(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisAddr := hole.Addr().String()
	hole.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, prefix := testenv.Redis(t)
	cmd := devCommand(t, ctx, map[string]string{
		"DATABASE_URL": testenv.Postgres(t), "REDIS_URL": "redis://" + redisAddr + "/0", "CCPROXY_REDIS_PREFIX": prefix,
		"CCPROXY_LISTEN_ADDR": freeAddr(t),
	})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	var seen []string
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("stdout ended after %q; stderr:\n%s", seen, stderr.String())
		}
		seen = append(seen, lines.Text())
		return lines.Text()
	}
	if got, want := next(), "Waiting for Redis at "+redisAddr+" (dial tcp "+redisAddr+": connect: connection refused); start it (make services) or set REDIS_URL. Still trying..."; got != want {
		t.Fatalf("first line %q, want %q", got, want)
	}
	// Redis appears at the address: a proxy to the real one.
	ln, err := net.Listen("tcp", redisAddr)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, to: strings.SplitN(testenv.RedisURL(), "/", 4)[2]}
	defer p.close()
	go p.serve()
	for !strings.HasPrefix(next(), "==> ccproxy dev is ready") {
	}
	// Redis goes away while the gateway runs: go-redis's own complaints
	// must come out as the same JSON lines as everything else.
	p.close()
	for !strings.Contains(stderr.String(), `"library":"go-redis"`) {
		select {
		case <-ctx.Done():
			t.Fatalf("go-redis logged nothing with Redis gone:\n%s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	_ = cmd.Wait()
	all := strings.Join(seen, "\n") + "\n" + string(rest)
	if n := strings.Count(all, "Waiting for Redis"); n != 1 {
		t.Errorf("%d waiting lines, want 1:\n%s", n, all)
	}
	if !strings.Contains(all, "Redis at "+redisAddr+" is up; starting.") {
		t.Errorf("no line saying Redis is up:\n%s", all)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		dups, err := duplicateKeys([]byte(line))
		if err != nil {
			t.Errorf("not a JSON line: %q: %v", line, err)
		} else if len(dups) > 0 {
			t.Errorf("keys %v appear twice in %s", dups, line)
		}
	}
}

// proxy forwards every connection accepted on ln to the address to, until
// close cuts them all.
type proxy struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go io.Copy(u, c)
		go io.Copy(c, u)
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestBusyAddressNamesItsSetting: an address that cannot be listened on
// ends the command with a line that names the flag and variable to change.
func TestBusyAddressNamesItsSetting(t *testing.T) {
	for _, tt := range []struct{ env, flag string }{
		{"CCPROXY_ADMIN_ADDR", "--admin-addr"},
		{"CCPROXY_XDS_ADDR", "--xds-addr"},
		{"CCPROXY_METRICS_ADDR", "--metrics-addr"},
	} {
		t.Run(tt.env, func(t *testing.T) {
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, prefix := testenv.Redis(t)
			cmd := devCommand(t, ctx, map[string]string{
				"DATABASE_URL": testenv.Postgres(t), "REDIS_URL": testenv.RedisURL(), "CCPROXY_REDIS_PREFIX": prefix,
				"CCPROXY_LISTEN_ADDR": freeAddr(t), tt.env: busy.Addr().String(),
			})
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("ccproxy dev ran with %s busy:\n%s", tt.env, out)
			}
			want := "listen on " + busy.Addr().String() + " (" + tt.flag + " / " + tt.env + "): "
			if !strings.Contains(string(out), want) {
				t.Fatalf("output does not contain %q:\n%s", want, out)
			}
		})
	}
}
