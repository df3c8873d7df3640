package procs

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func count(t *testing.T, dsn string) int {
	t.Helper()
	conn := pgConnect(t, dsn)
	var n int
	if err := conn.QueryRow(context.Background(), "select count(*) from items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPostgresStopStartKill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := StartPostgres(t)
	dsn := pg.CreateDB(t, "fault")
	conn := pgConnect(t, dsn)
	if _, err := conn.Exec(ctx, "create table items (id int primary key); insert into items values (1), (2)"); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	pg.Stop(t)
	t.Logf("stop took %s", time.Since(began))
	if _, err := conn.Exec(ctx, "select 1"); err == nil {
		t.Fatal("query on an open connection succeeded after Stop")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if c, err := pgx.Connect(cctx, dsn); err == nil {
		_ = c.Close(ctx)
		t.Fatal("connect succeeded after Stop")
	}
	cancel()

	began = time.Now()
	pg.Start(t)
	t.Logf("start took %s", time.Since(began))
	if n := count(t, dsn); n != 2 {
		t.Fatalf("after Stop/Start: %d rows, want 2", n)
	}

	// A committed row survives a crash; an open transaction's row does not.
	conn = pgConnect(t, dsn)
	if _, err := conn.Exec(ctx, "insert into items values (3)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into items values (4)"); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	pg.Kill(t)
	t.Logf("kill took %s", time.Since(began))
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("commit succeeded after Kill")
	}
	began = time.Now()
	pg.Start(t)
	t.Logf("start after kill (crash recovery) took %s", time.Since(began))
	if n := count(t, dsn); n != 3 {
		t.Fatalf("after Kill/Start: %d rows, want 3", n)
	}

	began = time.Now()
	pg.Restart(t)
	t.Logf("restart took %s", time.Since(began))
	if n := count(t, dsn); n != 3 {
		t.Fatalf("after Restart: %d rows, want 3", n)
	}
}

func TestPostgresCleanupLeavesNoProcesses(t *testing.T) {
	t.Parallel()
	var pids []int
	t.Run("server", func(t *testing.T) {
		pg := StartPostgres(t)
		pgConnect(t, pg.URL("postgres")) // a backend, in a process group of its own
		pg.mu.Lock()
		pids = append([]int{pg.proc.pid()}, descendants(pg.proc.pid())...)
		pg.mu.Unlock()
		if os.Geteuid() == 0 {
			st, err := os.Stat("/proc/" + strconv.Itoa(pids[0]))
			if err != nil {
				t.Fatal(err)
			}
			if st.Sys().(*syscall.Stat_t).Uid == 0 {
				t.Error("postgres runs as root")
			}
		}
	})
	if len(pids) < 2 {
		t.Fatalf("expected a postmaster and children, got pids %v", pids)
	}
	waitGone(pids, 5*time.Second)
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d outlived its test", p)
		}
	}
}

func redisClient(t *testing.T, r *Redis) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedisWithoutAOFLosesDataOnRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := StartRedis(t)
	c := redisClient(t, r)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pid := r.proc.pid()
	r.Stop(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	r.Start(t)
	if r.proc.pid() == pid {
		t.Fatal("Start did not start a new process")
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after restart without AOF: %v, want redis.Nil", err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	r.Start(t)
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after kill without AOF: %v, want redis.Nil", err)
	}
}

func TestRedisWithAOFKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := StartRedis(t, WithAOF())
	c := redisClient(t, r)
	if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v1" {
		t.Fatalf("GET after Restart with AOF: %q, %v; want v1", v, err)
	}
	if err := c.Set(ctx, "k", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	r.Start(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v2" {
		t.Fatalf("GET after Kill/Start with AOF: %q, %v; want v2", v, err)
	}
}

// fakeTB records Skipf and Fatalf instead of ending the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

func TestMissingBinariesSkipUnlessRequired(t *testing.T) {
	t.Setenv(RequireEnv, "")
	f := &fakeTB{TB: t}
	unavailable(f, "redis-server not found")
	if !f.skipped || f.failed {
		t.Fatalf("without %s: skipped=%v failed=%v, want a skip", RequireEnv, f.skipped, f.failed)
	}
	t.Setenv(RequireEnv, "1")
	f = &fakeTB{TB: t}
	unavailable(f, "redis-server not found")
	if f.skipped || !f.failed {
		t.Fatalf("with %s=1: skipped=%v failed=%v, want a failure", RequireEnv, f.skipped, f.failed)
	}
}

// TestMakeTestRequiresFaultTests keeps CI honest: `make test` (what CI runs)
// must export RequireEnv=1, so that a missing initdb or redis-server fails
// the fault tests instead of skipping them.
func TestMakeTestRequiresFaultTests(t *testing.T) {
	mk, err := os.ReadFile("../../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "\nexport "+RequireEnv+" := 1\n") {
		t.Fatalf("the Makefile does not export %s := 1", RequireEnv)
	}
}
