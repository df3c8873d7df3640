package ingest

// Fault tests: the pipeline extproc → Redis → ingester → Postgres with the
// servers stopped, restarted and killed under it (internal/testenv/procs
// runs private servers for that).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
	"github.com/ccproxy/ccproxy/internal/usage"
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

func (e *faultEnv) consumer(t *testing.T, name string, reg prometheus.Registerer, h usagestream.Handler, configure ...func(*usagestream.ConsumerOptions)) *usagestream.Consumer {
	t.Helper()
	opts := usagestream.ConsumerOptions{Redis: e.rdb, Prefix: e.prefix, Name: name, Batch: 20,
		Block: 100 * time.Millisecond, ClaimIdle: 500 * time.Millisecond, ClaimInterval: 100 * time.Millisecond,
		HandleTimeout: 2 * time.Second, StatsInterval: 50 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Registerer: reg}
	for _, c := range configure {
		c(&opts)
	}
	c, err := usagestream.NewConsumer(opts, h)
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

// series returns a counter's value per label set ("k=v,k=v", sorted by
// label name) in reg.
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] = m.GetCounter().GetValue()
		}
	}
	return out
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

// groupState returns the ingest group's pending entries (delivered, not
// acknowledged) and its lag (entries not yet delivered); ok is false when
// the group does not exist or its lag is unknown.
func groupState(rdb *redis.Client, prefix string) (pending, lag int64, ok bool) {
	groups, err := rdb.XInfoGroups(context.Background(), usagestream.StreamKey(prefix)).Result()
	if err != nil {
		return 0, 0, false
	}
	for _, g := range groups {
		if g.Name == usagestream.Group {
			return g.Pending, g.Lag, g.Lag >= 0
		}
	}
	return 0, 0, false
}

// waitSettled waits until the producer has added all n recorded events to
// the stream and the group has every entry delivered and acknowledged. An
// entry is acknowledged only after the handler call that committed it
// returned, so from then on no handler call can insert anything more:
// checks that "nothing late arrives" need no sleep after it. (Where Redis
// lost entries a handler may still hold, see the marker event in
// TestFaultRedisRestartWithoutPersistence.)
func (e *faultEnv) waitSettled(t *testing.T, p *usagestream.Producer, n int64) {
	t.Helper()
	waitFor(t, "every entry delivered and acknowledged", 10*time.Second, func() bool {
		pend, lag, ok := groupState(e.rdb, e.prefix)
		return p.Sent() == n && ok && pend == 0 && lag == 0
	})
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
	var failing atomic.Int64 // events in the last batch whose commit failed
	c := e.consumer(t, "admin-1", reg, func(ctx context.Context, evs []usage.Event) error {
		err := in.Handle(ctx, evs)
		if err != nil {
			failing.Store(int64(len(evs)))
		}
		return err
	})
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
	// The consumer retries the failing batch and reads nothing new: exactly
	// that batch is pending (none of it acknowledged without a commit), and
	// every other event not acknowledged waits undelivered. (The failing
	// batch may hold events committed before the stop whose handler call
	// then failed: acknowledged ones are counted, not assumed.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pend, lag, ok := groupState(e.rdb, e.prefix)
		k, acked := failing.Load(), int64(gathered(t, reg, "ccproxy_usage_ingest_acked_total"))
		if p.Sent() == 60 && ok && k >= 1 && pend == k && pend+lag+acked == 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("while Postgres is down: %d pending, %d undelivered, %d acknowledged, failing batch of %d, %d sent; want exactly the failing batch pending and every other unacknowledged event undelivered",
				pend, lag, acked, k, p.Sent())
		}
	}
	e.pg.Start(t)
	waitRows(t, e.st, 60, 20*time.Second)
	e.waitSettled(t, p, 60)
	checkExactlyOnce(t, e.st, seq(0, 60))
	// Each entry is acknowledged once, after its commit.
	if got := gathered(t, reg, "ccproxy_usage_ingest_acked_total"); got != 60 {
		t.Errorf("acked = %v, want 60", got)
	}
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
	// The dying consumer read one batch of k events (k depends on how the
	// producer's batches met its read), committed it and acknowledged
	// none: exactly those k entries are pending.
	committed := int64(countRows(t, e.st))
	if n := pending(t, e.rdb, e.prefix); committed < 1 || n != committed {
		t.Fatalf("after the kill: %d rows, %d pending; want a committed batch, all of it unacknowledged", committed, n)
	}

	// A second replica takes the dead one's entries over after ClaimIdle
	// and reads the rest.
	second := e.consumer(t, "admin-2", reg, in.Handle)
	run(t, second.Run)
	waitRows(t, e.st, 50, 15*time.Second)
	e.waitSettled(t, p, 50)
	checkExactlyOnce(t, e.st, seq(0, 50))
	// Exactly the dead consumer's k entries were claimed and redelivered;
	// all of them were committed already, so all k are duplicates, and the
	// ingester stored each of the 50 events once.
	if got := gathered(t, reg, "ccproxy_usage_ingest_claimed_total"); got != float64(committed) {
		t.Errorf("claimed = %v, want the dead consumer's %d entries", got, committed)
	}
	if got := gathered(t, reg, "ccproxy_usage_duplicates_total"); got != float64(committed) {
		t.Errorf("duplicates = %v, want the %d redelivered committed entries", got, committed)
	}
	want := map[string]float64{"model=claude-sonnet-4-5,provider=bedrock": 50}
	if got := series(t, reg, "ccproxy_usage_events_ingested_total"); !maps.Equal(got, want) {
		t.Errorf("events ingested %v, want %v", got, want)
	}
}

// Two replicas share the stream: both commit work, each event is stored
// once. The handlers are gated so that both replicas hold a batch at the
// same time: A's first batch waits until B has committed one, and B's
// first commit waits until A holds a batch. So neither can take the whole
// stream alone, and a replica that never reads fails the test.
func TestFaultTwoIngestersRacing(t *testing.T) {
	e := startFaultEnv(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	inA, inB := e.ingester(t, regA), e.ingester(t, regB)
	aHolds, bCommitted, testOver := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var aOnce, bOnce sync.Once
	wait := func(ctx context.Context, ch chan struct{}) error {
		select {
		case <-ch:
			return nil
		case <-testOver:
			return errors.New("test over")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	handleA := func(ctx context.Context, evs []usage.Event) error {
		aOnce.Do(func() { close(aHolds) })
		if err := wait(ctx, bCommitted); err != nil {
			return err
		}
		return inA.Handle(ctx, evs)
	}
	handleB := func(ctx context.Context, evs []usage.Event) error {
		if err := wait(ctx, aHolds); err != nil {
			return err
		}
		if err := inB.Handle(ctx, evs); err != nil {
			return err
		}
		bOnce.Do(func() { close(bCommitted) })
		return nil
	}
	// No claiming (each replica commits what it read) and room for the
	// gates: the counts below are then exact.
	opts := func(o *usagestream.ConsumerOptions) { o.ClaimIdle, o.HandleTimeout = time.Minute, 30*time.Second }
	run(t, e.consumer(t, "admin-a", regA, handleA, opts).Run)
	run(t, e.consumer(t, "admin-b", regB, handleB, opts).Run)
	t.Cleanup(func() { close(testOver) }) // before the consumers stop
	p := e.producer(t)
	for i := range 200 {
		p.Record(context.Background(), faultEvent(i))
	}
	waitRows(t, e.st, 200, 15*time.Second)
	e.waitSettled(t, p, 200)
	checkExactlyOnce(t, e.st, seq(0, 200))

	const label = "model=claude-sonnet-4-5,provider=bedrock"
	stored := map[string]float64{}
	for name, reg := range map[string]*prometheus.Registry{"A": regA, "B": regB} {
		got := series(t, reg, "ccproxy_usage_events_ingested_total")
		if len(got) != 1 || got[label] < 1 {
			t.Errorf("ingester %s stored %v; want some events, all under %s", name, got, label)
		}
		stored[name] = got[label]
		for _, m := range []string{"ccproxy_usage_duplicates_total", "ccproxy_usage_ingest_claimed_total", "ccproxy_usage_ingest_batch_errors_total"} {
			if v := gathered(t, reg, m); v != 0 {
				t.Errorf("ingester %s: %s = %v, want 0", name, m, v)
			}
		}
		// What a replica read, it committed and acknowledged.
		if c, a := gathered(t, reg, "ccproxy_usage_ingest_consumed_total"), gathered(t, reg, "ccproxy_usage_ingest_acked_total"); c != stored[name] || a != stored[name] {
			t.Errorf("ingester %s: consumed %v, acked %v, stored %v; want all equal", name, c, a, stored[name])
		}
	}
	t.Logf("ingester A stored %v events, B %v", stored["A"], stored["B"])
	if stored["A"]+stored["B"] != 200 {
		t.Errorf("ingesters stored %v + %v events, want 200 in all", stored["A"], stored["B"])
	}
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
	// the gauges say how many entries Redis holds unacknowledged. That is
	// the 20 new events, plus a batch of the first 30 whose rows were
	// committed just before the stop but whose handler call then failed:
	// every entry not acknowledged, exactly.
	waitFor(t, "the unacknowledged entries in the gauges", 10*time.Second, func() bool {
		pend := gathered(t, reg, "ccproxy_usage_ingest_pending")
		return p.Sent() == 50 && pend > 0 &&
			pend+gathered(t, reg, "ccproxy_usage_ingest_lag") == 50-gathered(t, reg, "ccproxy_usage_ingest_acked_total")
	})
	// Redis restarts empty; events recorded while it is down are buffered.
	e.redis.Stop(t)
	for i := 50; i < 80; i++ {
		p.Record(context.Background(), faultEvent(i))
	}
	e.redis.Start(t)
	e.pg.Start(t)
	waitRows(t, e.st, 60, 20*time.Second)
	// A lost event could only come back through a batch read before the
	// restart. The consumer handles one batch at a time, so once a marker
	// recorded now is committed, every earlier batch is done; and the
	// settled stream has nothing left to deliver.
	p.Record(context.Background(), faultEvent(80))
	waitRows(t, e.st, 61, 10*time.Second)
	e.waitSettled(t, p, 81)
	checkExactlyOnce(t, e.st, append(seq(0, 30), seq(50, 81)...))
	// One restart, noticed once: the consumer recreates the group when a
	// read fails with NOGROUP, and nothing deletes it again.
	if got := gathered(t, reg, "ccproxy_usage_ingest_group_resets_total"); got != 1 {
		t.Errorf("group resets = %v, want 1; the loss must be counted", got)
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
