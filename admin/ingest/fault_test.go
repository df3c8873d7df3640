package ingest

// Fault tests: the pipeline extproc → Redis → ingester → Postgres with the
// servers stopped, restarted and killed under it (internal/testenv/procs
// runs private servers for that).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/extproc/usage"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
	"github.com/ccproxy/ccproxy/internal/usagestream"
)

type faultEnv struct {
	pg     *procs.Postgres
	redis  *procs.Redis
	st     *store.Store
	rdb    *redis.Client
	prefix string
}

func startFaultEnv(t *testing.T, redisOpts ...procs.RedisOption) *faultEnv {
	t.Helper()
	ctx := context.Background()
	e := &faultEnv{pg: procs.StartPostgres(t), redis: procs.StartRedis(t, redisOpts...), prefix: "ccproxy:"}
	dsn := e.pg.CreateDB(t, "ccproxy")
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e.st = st
	opts, err := redis.ParseURL(e.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.DialTimeout, opts.ReadTimeout = 500*time.Millisecond, 2*time.Second
	e.rdb = redis.NewClient(opts)
	t.Cleanup(func() { e.rdb.Close() })
	return e
}

// run starts fn until the test ends or the returned stop is called.
func run(t *testing.T, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func (e *faultEnv) producer(t *testing.T) *usagestream.Producer {
	t.Helper()
	p, err := usagestream.NewProducer(usagestream.ProducerOptions{Redis: e.rdb, Prefix: e.prefix, Batch: 10,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p.Run)
	return p
}

func (e *faultEnv) consumer(t *testing.T, name string, reg prometheus.Registerer, h usagestream.Handler) *usagestream.Consumer {
	t.Helper()
	c, err := usagestream.NewConsumer(usagestream.ConsumerOptions{Redis: e.rdb, Prefix: e.prefix, Name: name, Batch: 20,
		Block: 100 * time.Millisecond, ClaimIdle: 500 * time.Millisecond, ClaimInterval: 100 * time.Millisecond,
		HandleTimeout: 2 * time.Second, StatsInterval: 50 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Registerer: reg}, h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *faultEnv) ingester(t *testing.T, reg prometheus.Registerer) *Ingester {
	t.Helper()
	in, err := New(Options{Store: e.st, Redis: e.rdb, Prefix: e.prefix, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func faultEvent(i int) usage.Event {
	return event(fmt.Sprintf("fault-%03d", i), time.Now().UTC(), usage.ProviderBedrock, "claude-sonnet-4-5", 1000, 100)
}

// gathered returns the sum of a metric's samples in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// checkExactlyOnce asserts that request ids fault-000… fault-<n-1> each
// have exactly one row, and nothing else does.
func checkExactlyOnce(t *testing.T, st *store.Store, ids []int) {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), `SELECT request_id, count(*) FROM usage_events GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		got[id] = n
	}
	if len(got) != len(ids) {
		t.Errorf("%d distinct request ids stored, want %d", len(got), len(ids))
	}
	for _, i := range ids {
		if id := faultEvent(i).RequestID; got[id] != 1 {
			t.Errorf("%s stored %d times, want once", id, got[id])
		}
	}
	// The rollups count each event once too.
	var requests int
	if err := st.Pool().QueryRow(context.Background(), `SELECT coalesce(sum(requests), 0) FROM usage_hourly`).Scan(&requests); err != nil {
		t.Fatal(err)
	}
	if requests != len(ids) {
		t.Errorf("hourly rollups count %d requests, want %d", requests, len(ids))
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func pending(t *testing.T, rdb *redis.Client, prefix string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), usagestream.StreamKey(prefix), usagestream.Group).Result()
	if err != nil {
		return -1
	}
	return p.Count
}

func TestFaultPostgresStoppedWhileEventsFlow(t *testing.T) {
	e := startFaultEnv(t)
	reg := prometheus.NewRegistry()
	in := e.ingester(t, reg)
	c := e.consumer(t, "admin-1", reg, in.Handle)
	run(t, c.Run)
	p := e.producer(t)

	for i := range 10 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitRows(t, e.st, 10, 10*time.Second)

	e.pg.Stop(t)
	for i := 10; i < 60; i++ {
		p.Record(context.Background(), faultEvent(i))
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, "failed commits while Postgres is down", 10*time.Second, func() bool {
		return gathered(t, reg, "ccproxy_usage_ingest_batch_errors_total") >= 2
	})
	if n := pending(t, e.rdb, e.prefix); n == 0 {
		t.Fatalf("nothing pending while Postgres is down: entries were acknowledged without a commit")
	}
	e.pg.Start(t)
	waitRows(t, e.st, 60, 20*time.Second)
	waitFor(t, "nothing pending", 5*time.Second, func() bool { return pending(t, e.rdb, e.prefix) == 0 })
	time.Sleep(300 * time.Millisecond)
	checkExactlyOnce(t, e.st, seq(0, 60))
}

func TestFaultIngesterKilledMidBatch(t *testing.T) {
	e := startFaultEnv(t)
	reg := prometheus.NewRegistry()
	in := e.ingester(t, reg)

	// The first ingester commits its first batch and dies before the
	// acknowledgement (its context is cancelled and the call fails), the
	// worst moment for duplicates.
	var killed atomic.Bool
	var stopFirst func()
	first := e.consumer(t, "admin-dying", nil, func(ctx context.Context, evs []usage.Event) error {
		if killed.Load() {
			return errors.New("dead")
		}
		if err := in.Handle(ctx, evs); err != nil {
			return err
		}
		killed.Store(true)
		go stopFirst()
		return errors.New("killed after commit, before XACK")
	})
	stopFirst = run(t, first.Run)
	p := e.producer(t)
	for i := range 50 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitFor(t, "the first ingester's death", 10*time.Second, killed.Load)
	stopFirst()
	committed := countRows(t, e.st)
	if committed == 0 || pending(t, e.rdb, e.prefix) == 0 {
		t.Fatalf("after the kill: %d rows, %d pending; want a committed but unacknowledged batch", committed, pending(t, e.rdb, e.prefix))
	}

	// A second replica takes the dead one's entries over after ClaimIdle
	// and reads the rest.
	second := e.consumer(t, "admin-2", reg, in.Handle)
	run(t, second.Run)
	waitRows(t, e.st, 50, 15*time.Second)
	waitFor(t, "nothing pending", 5*time.Second, func() bool { return pending(t, e.rdb, e.prefix) == 0 })
	checkExactlyOnce(t, e.st, seq(0, 50))
	if got := gathered(t, reg, "ccproxy_usage_ingest_claimed_total"); got == 0 {
		t.Errorf("nothing claimed from the dead consumer")
	}
	if got := gathered(t, reg, "ccproxy_usage_duplicates_total"); got == 0 {
		t.Errorf("no duplicates skipped: the committed batch should have been redelivered")
	}
}

func TestFaultTwoIngestersRacing(t *testing.T) {
	e := startFaultEnv(t)
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	in1, in2 := e.ingester(t, reg1), e.ingester(t, reg2)
	run(t, e.consumer(t, "admin-a", reg1, in1.Handle).Run)
	run(t, e.consumer(t, "admin-b", reg2, in2.Handle).Run)
	p := e.producer(t)
	for i := range 200 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitRows(t, e.st, 200, 15*time.Second)
	waitFor(t, "nothing pending", 5*time.Second, func() bool { return pending(t, e.rdb, e.prefix) == 0 })
	checkExactlyOnce(t, e.st, seq(0, 200))
}

// Redis without persistence loses what it holds when it restarts: the
// entries not yet committed (pending + lag). The loss is counted (group
// resets) and bounded by the gauges' last values; events extproc buffered
// during the outage arrive.
func TestFaultRedisRestartWithoutPersistence(t *testing.T) {
	e := startFaultEnv(t)
	reg := prometheus.NewRegistry()
	in := e.ingester(t, reg)
	run(t, e.consumer(t, "admin-1", reg, in.Handle).Run)
	p := e.producer(t)
	for i := range 30 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitRows(t, e.st, 30, 10*time.Second)

	// Postgres down: 20 events wait in Redis.
	e.pg.Stop(t)
	for i := 30; i < 50; i++ {
		p.Record(context.Background(), faultEvent(i))
	}
	// The ingester retries its pending entries before reading new ones:
	// the gauges say how many entries Redis holds uncommitted.
	waitFor(t, "20 entries uncommitted", 10*time.Second, func() bool {
		return gathered(t, reg, "ccproxy_usage_ingest_pending")+gathered(t, reg, "ccproxy_usage_ingest_lag") == 20 &&
			gathered(t, reg, "ccproxy_usage_ingest_pending") > 0
	})
	// Redis restarts empty; events recorded while it is down are buffered.
	e.redis.Stop(t)
	for i := 50; i < 80; i++ {
		p.Record(context.Background(), faultEvent(i))
	}
	e.redis.Start(t)
	e.pg.Start(t)
	waitRows(t, e.st, 60, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, e.st, append(seq(0, 30), seq(50, 80)...))
	if got := gathered(t, reg, "ccproxy_usage_ingest_group_resets_total"); got < 1 {
		t.Errorf("group resets = %v; the loss must be counted", got)
	}
}

// With the append-only file (appendfsync always), a Redis crash loses
// nothing: the stream and the group's pending list come back.
func TestFaultRedisKilledWithAOF(t *testing.T) {
	e := startFaultEnv(t, procs.WithAOF())
	reg := prometheus.NewRegistry()
	in := e.ingester(t, reg)
	run(t, e.consumer(t, "admin-1", reg, in.Handle).Run)
	p := e.producer(t)
	e.pg.Stop(t)
	for i := range 40 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitFor(t, "40 entries in Redis", 10*time.Second, func() bool { return p.Sent() == 40 })
	e.redis.Kill(t)
	for i := 40; i < 60; i++ {
		p.Record(context.Background(), faultEvent(i))
	}
	e.redis.Start(t)
	e.pg.Start(t)
	waitRows(t, e.st, 60, 20*time.Second)
	waitFor(t, "nothing pending", 5*time.Second, func() bool { return pending(t, e.rdb, e.prefix) == 0 })
	checkExactlyOnce(t, e.st, seq(0, 60))
	if got := gathered(t, reg, "ccproxy_usage_ingest_group_resets_total"); got != 0 {
		t.Errorf("group resets = %v with AOF", got)
	}
}
