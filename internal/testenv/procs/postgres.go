package procs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private Postgres server owned by one test.
type Postgres struct {
	bindir  string
	dataDir string
	sockDir string
	logPath string
	cred    *syscall.Credential // nil: run as the test's user

	mu   sync.Mutex
	port int
	proc *process // nil or exited when stopped
}

// StartPostgres initializes a cluster in t.TempDir() (trust authentication,
// superuser postgres), starts it on a free loopback port and waits until it
// accepts connections. The server is stopped when t's test ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bindir, err := findPostgres()
	if err != nil {
		unavailable(t, "%v", err)
	}
	pg := &Postgres{bindir: bindir}
	if os.Geteuid() == 0 {
		if pg.cred, err = serverAccount(); err != nil {
			unavailable(t, "%v", err)
		}
	}
	base := t.TempDir()
	if pg.cred != nil {
		if err := grantAccess(base, pg.cred); err != nil {
			t.Fatal(err)
		}
	}
	pg.dataDir = filepath.Join(base, "data")
	pg.logPath = filepath.Join(base, "postgres.log")
	pg.sockDir = filepath.Join(base, "sock")
	// Unix socket paths are limited to ~107 bytes; long test names can
	// exceed that, so fall back to a short directory of our own.
	if len(pg.sockDir)+len("/.s.PGSQL.65535.lock") > 100 {
		short, err := os.MkdirTemp("", "ccpg")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(short) })
		pg.sockDir = short
	} else if err := os.Mkdir(pg.sockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if pg.cred != nil {
		if err := os.Chown(pg.sockDir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}

	initdb := exec.Command(filepath.Join(bindir, "initdb"),
		"-D", pg.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Env = cleanEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: pg.cred}
	setParentDeathSignal(initdb.SysProcAttr)
	began := time.Now()
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("procs: initdb: %v\n%s", err, out)
	}
	t.Logf("procs: initdb %s in %s", pg.dataDir, time.Since(began).Round(time.Millisecond))

	t.Cleanup(pg.shutdown) // registered before starting, so a failed start is cleaned too
	for attempt := 1; ; attempt++ {
		if pg.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		err = pg.start()
		if err == nil || !errors.Is(err, errBind) || attempt == startAttempts {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("procs: postgres on 127.0.0.1:%d ready in %s (log %s)", pg.port, time.Since(began).Round(time.Millisecond), pg.logPath)
	return pg
}

// Port returns the server's TCP port on 127.0.0.1.
func (pg *Postgres) Port() int { return pg.port }

// URL returns the URL of database db on the server, as user postgres.
func (pg *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, url.PathEscape(db))
}

// CreateDB creates database name and returns its URL.
func (pg *Postgres) CreateDB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatalf("procs: connect to create %s: %v", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("procs: create database %s: %v", name, err)
	}
	return pg.URL(name)
}

// Stop shuts the server down with a fast shutdown (what pg_ctl stop -m fast
// does: SIGINT to the postmaster, which rolls back open transactions,
// disconnects clients and checkpoints) and waits for it to exit.
func (pg *Postgres) Stop(t testing.TB) {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc == nil || pg.proc.exited() {
		return
	}
	_ = syscall.Kill(pg.proc.pid(), syscall.SIGINT)
	if !pg.proc.wait(stopTimeout) {
		pg.proc.kill()
		t.Fatalf("procs: postgres did not stop within %s; killed it:\n%s", stopTimeout, logTail(pg.logPath, 0))
	}
}

// Start starts a stopped or killed server again on the same port and data
// directory (running crash recovery if it was killed) and waits until it
// accepts connections.
func (pg *Postgres) Start(t testing.TB) {
	t.Helper()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = pg.start(); err == nil || !errors.Is(err, errBind) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the port is fixed: wait for whoever holds it
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Kill SIGKILLs the postmaster and every backend and auxiliary process, as a
// crash would, and waits for them to be gone. Start recovers the cluster.
func (pg *Postgres) Kill(t testing.TB) {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc != nil {
		pg.proc.kill()
		if !pg.proc.exited() {
			t.Fatalf("procs: postgres (pid %d) survived SIGKILL", pg.proc.pid())
		}
	}
}

// Restart stops the server with a fast shutdown and starts it again.
func (pg *Postgres) Restart(t testing.TB) {
	t.Helper()
	pg.Stop(t)
	pg.Start(t)
}

func (pg *Postgres) start() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc != nil && !pg.proc.exited() {
		return fmt.Errorf("procs: postgres is already running on port %d", pg.port)
	}
	cmd := exec.Command(filepath.Join(pg.bindir, "postgres"),
		"-D", pg.dataDir,
		"-p", strconv.Itoa(pg.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+pg.sockDir,
		"-c", "fsync=off",
		"-c", "max_connections=50",
		"-c", "shared_buffers=16MB",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
	)
	cmd.Env = cleanEnv()
	logStart := fileSize(pg.logPath)
	p, err := spawn(cmd, pg.logPath, pg.cred)
	if err != nil {
		return err
	}
	pg.proc = p
	return waitReady(p, "postgres", pg.logPath, logStart, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
}

// shutdown is the cleanup: fast shutdown, then SIGKILL for anything left.
func (pg *Postgres) shutdown() {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc == nil {
		return
	}
	if !pg.proc.exited() {
		_ = syscall.Kill(pg.proc.pid(), syscall.SIGINT)
		pg.proc.wait(5 * time.Second)
	}
	pg.proc.kill() // no-op when the fast shutdown finished

}

// findPostgres returns a directory holding initdb and postgres.
func findPostgres() (string, error) {
	var candidates []string
	if d := os.Getenv("CCPROXY_PG_BINDIR"); d != "" {
		candidates = append(candidates, d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgVersion(versions[i]) > pgVersion(versions[j]) })
	candidates = append(candidates, versions...)
	for _, d := range candidates {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("Postgres server binaries (initdb, postgres) not found in $CCPROXY_PG_BINDIR, `pg_config --bindir`, PATH or /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
}

func pgVersion(bindir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bindir)), 64)
	return v
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// serverAccount is the unprivileged account Postgres runs as when the test
// runs as root.
func serverAccount() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and there is no postgres or nobody account to run Postgres as (Postgres refuses to run as root)")
}

// grantAccess chowns dir to cred and makes the directories between
// os.TempDir() and dir traversable (o+x, no listing), so the account can
// reach dir. Directories at or above os.TempDir() are left alone.
func grantAccess(dir string, cred *syscall.Credential) error {
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("procs: chown %s: %w", dir, err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("procs: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if !strings.HasPrefix(d, tmp+string(filepath.Separator)) {
				return fmt.Errorf("procs: %s is not traversable by uid %d, which Postgres runs as; set TMPDIR to a directory it can reach", d, cred.Uid)
			}
			if err := os.Chmod(d, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("procs: %w", err)
			}
		}
		if d == tmp || d == filepath.Dir(d) {
			return nil
		}
	}
}
