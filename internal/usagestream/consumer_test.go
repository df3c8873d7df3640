package usagestream

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// collector is a Handler that records committed request ids, optionally
// failing its first calls.
type collector struct {
	mu        sync.Mutex
	committed map[string]int // request id → times committed
	calls     int
	failFirst int
}

func newCollector(failFirst int) *collector {
	return &collector{committed: map[string]int{}, failFirst: failFirst}
}

func (c *collector) handle(_ context.Context, evs []usage.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls <= c.failFirst {
		return errors.New("database unavailable")
	}
	for _, ev := range evs {
		c.committed[ev.RequestID]++
	}
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.committed)
}

func (c *collector) check(t *testing.T, ids []string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.committed) != len(ids) {
		t.Errorf("committed %d distinct events, want %d", len(c.committed), len(ids))
	}
	for _, id := range ids {
		if c.committed[id] != 1 {
			t.Errorf("event %s committed %d times, want once", id, c.committed[id])
		}
	}
}

func addEvents(t *testing.T, rdb redis.UniversalClient, prefix string, from, n int) []string {
	t.Helper()
	pipe := rdb.Pipeline()
	var ids []string
	for i := from; i < from+n; i++ {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: StreamKey(prefix), Values: []any{Field, Encode(testEvent(i))}})
		ids = append(ids, testEvent(i).RequestID)
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ids
}

func startConsumer(t *testing.T, opts ConsumerOptions, h Handler) (*Consumer, func()) {
	t.Helper()
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	if opts.Block == 0 {
		opts.Block = 100 * time.Millisecond
	}
	if opts.StatsInterval == 0 {
		opts.StatsInterval = 50 * time.Millisecond
	}
	c, err := NewConsumer(opts, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, stop
}

func pendingCount(t *testing.T, rdb redis.UniversalClient, prefix string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), StreamKey(prefix), Group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

func TestConsumerCommitsAndAcks(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	col := newCollector(0)
	reg := prometheus.NewRegistry()
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Batch: 100, Registerer: reg}, col.handle)
	ids := addEvents(t, rdb, prefix, 0, 1050)
	waitFor(t, "1050 commits", 10*time.Second, func() bool { return col.count() == 1050 })
	col.check(t, ids)
	waitFor(t, "acks", 5*time.Second, func() bool { return testutil.ToFloat64(c.m.acked) == 1050 })
	if n := pendingCount(t, rdb, prefix); n != 0 {
		t.Errorf("%d entries pending after commit", n)
	}
	waitFor(t, "lag gauge", 5*time.Second, func() bool { return testutil.ToFloat64(c.m.lag) == 0 && testutil.ToFloat64(c.m.length) == 1050 })
	if got := testutil.ToFloat64(c.m.consumed); got != 1050 {
		t.Errorf("consumed = %v", got)
	}
	if n, _ := testutil.GatherAndCount(reg, "ccproxy_usage_ingest_batch_commit_seconds"); n != 1 {
		t.Errorf("commit histogram not registered")
	}
	if got := c.Name(); got != DefaultConsumerName() {
		t.Errorf("default name %q", got)
	}
}

func TestConsumerAcksOnlyAfterCommit(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	block := make(chan struct{})
	var seen sync.Map
	var calls int
	var mu sync.Mutex
	h := func(ctx context.Context, evs []usage.Event) error {
		mu.Lock()
		calls++
		call := calls
		mu.Unlock()
		for _, ev := range evs {
			seen.Store(ev.RequestID, true)
		}
		if call == 1 {
			<-block // the commit is in progress…
			return errors.New("commit failed")
		}
		return nil
	}
	ids := addEvents(t, rdb, prefix, 0, 20) // before the consumer: one batch
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Name: "me"}, h)
	var release sync.Once
	unblock := func() { release.Do(func() { close(block) }) }
	t.Cleanup(unblock) // runs before the consumer's stop, even on failure
	waitFor(t, "the first delivery", 5*time.Second, func() bool { _, ok := seen.Load(ids[19]); return ok })
	// …and nothing is acknowledged while it runs.
	if n := pendingCount(t, rdb, prefix); n != 20 {
		t.Fatalf("%d pending while the handler runs, want 20", n)
	}
	unblock()
	waitFor(t, "redelivery and ack", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("handler called %d times, want 2 (failed, then redelivered)", calls)
	}
	if got := testutil.ToFloat64(c.m.handlerErrors); got != 1 {
		t.Errorf("batch errors = %v", got)
	}
}

func TestConsumerRetriesUntilHandlerSucceeds(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	col := newCollector(5)
	startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Batch: 30}, col.handle)
	ids := addEvents(t, rdb, prefix, 0, 100)
	waitFor(t, "100 commits", 10*time.Second, func() bool { return col.count() == 100 })
	col.check(t, ids)
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
}

// readAs reads n new entries as consumer name without acknowledging them:
// a consumer that dies mid-batch.
func readAs(t *testing.T, rdb redis.UniversalClient, prefix, name string, n int) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, StreamKey(prefix), Group, "0").Err(); err != nil && err.Error() != "BUSYGROUP Consumer Group name already exists" {
		t.Fatal(err)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: Group, Consumer: name, Streams: []string{StreamKey(prefix), ">"}, Count: int64(n), Block: -1}).Result()
	if err != nil || len(res[0].Messages) != n {
		t.Fatalf("read as %s: %v", name, err)
	}
}

func TestConsumerClaimsFromDeadConsumer(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ids := addEvents(t, rdb, prefix, 0, 250)
	readAs(t, rdb, prefix, "dead-host-1", 250)
	col := newCollector(0)
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Name: "alive", Batch: 100,
		ClaimIdle: 300 * time.Millisecond, ClaimInterval: 50 * time.Millisecond}, col.handle)
	waitFor(t, "the dead consumer's entries committed", 10*time.Second, func() bool { return col.count() == 250 })
	col.check(t, ids)
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
	if got := testutil.ToFloat64(c.m.claimed); got != 250 {
		t.Errorf("claimed = %v, want 250", got)
	}
	// New entries keep flowing to the live consumer.
	more := addEvents(t, rdb, prefix, 250, 10)
	waitFor(t, "new entries", 5*time.Second, func() bool { return col.count() == 260 })
	col.check(t, append(ids, more...))
}

func TestConsumerDoesNotClaimBeforeIdle(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	addEvents(t, rdb, prefix, 0, 5)
	readAs(t, rdb, prefix, "busy", 5)
	col := newCollector(0)
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Name: "other", ClaimIdle: time.Minute, ClaimInterval: 20 * time.Millisecond}, col.handle)
	// The loop runs claim pass, read, claim pass, … one at a time: entries
	// taken by pass k would have reached the handler before pass k+1 ends.
	// Three completed passes therefore prove the loop ran and took nothing.
	waitFor(t, "three claim passes", 10*time.Second, func() bool { return testutil.ToFloat64(c.m.claimPasses) >= 3 })
	if n := col.count(); n != 0 {
		t.Fatalf("took %d entries another consumer is still working on", n)
	}
	if got := testutil.ToFloat64(c.m.claimed); got != 0 {
		t.Errorf("claimed = %v, want 0", got)
	}
	owners, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: StreamKey(prefix), Group: Group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != 5 {
		t.Fatalf("%d entries pending, want the 5 that busy holds", len(owners))
	}
	for _, p := range owners {
		if p.Consumer != "busy" || p.RetryCount != 1 {
			t.Errorf("entry %s held by %q, delivered %d times; want busy, once", p.ID, p.Consumer, p.RetryCount)
		}
	}
}

func TestConsumerRestartReadsOwnPendingFirst(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ids := addEvents(t, rdb, prefix, 0, 40)
	readAs(t, rdb, prefix, "host-7", 40) // the previous run read them and died
	col := newCollector(0)
	startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Name: "host-7", ClaimIdle: time.Hour}, col.handle)
	waitFor(t, "own pending entries committed", 5*time.Second, func() bool { return col.count() == 40 })
	col.check(t, ids)
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
}

func TestConsumerDeadLetters(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	good := addEvents(t, rdb, prefix, 0, 3)
	bad := []map[string]any{
		{Field: "not json"},
		{Field: `{"v":2,"request_id":"x"}`},
		{"other": "field"},
	}
	var badIDs []string
	for _, v := range bad {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: StreamKey(prefix), Values: v}).Result()
		if err != nil {
			t.Fatal(err)
		}
		badIDs = append(badIDs, id)
	}
	good = append(good, addEvents(t, rdb, prefix, 3, 2)...)
	col := newCollector(0)
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix}, col.handle)
	waitFor(t, "good events", 5*time.Second, func() bool { return col.count() == 5 })
	col.check(t, good)
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
	dead, err := rdb.XRange(ctx, DeadLetterKey(prefix), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, d := range dead {
		gotIDs = append(gotIDs, d.Values["id"].(string))
		if d.Values["err"] == "" || d.Values[Field] == nil {
			t.Errorf("dead letter %v lacks the payload or the error", d.Values)
		}
	}
	if !slices.Equal(gotIDs, badIDs) {
		t.Errorf("dead letters %v, want %v", gotIDs, badIDs)
	}
	if dead[0].Values[Field] != "not json" {
		t.Errorf("payload not kept: %v", dead[0].Values)
	}
	if got := testutil.ToFloat64(c.m.deadLettered); got != 3 {
		t.Errorf("dead-lettered = %v", got)
	}
}

func TestConsumerCountsTrimmedPendingEntries(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	addEvents(t, rdb, prefix, 0, 4)
	readAs(t, rdb, prefix, "me", 4)
	msgs, _ := rdb.XRange(ctx, StreamKey(prefix), "-", "+").Result()
	if err := rdb.XDel(ctx, StreamKey(prefix), msgs[0].ID, msgs[1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	col := newCollector(0)
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix, Name: "me", ClaimIdle: time.Hour}, col.handle)
	waitFor(t, "the surviving entries", 5*time.Second, func() bool { return col.count() == 2 })
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
	if got := testutil.ToFloat64(c.m.trimmed); got != 2 {
		t.Errorf("trimmed = %v, want 2", got)
	}
}

func TestConsumerSurvivesStreamDeletion(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	col := newCollector(0)
	c, _ := startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix}, col.handle)
	ids := addEvents(t, rdb, prefix, 0, 3)
	waitFor(t, "first events", 5*time.Second, func() bool { return col.count() == 3 })
	// Redis restarted without persistence: the stream and group are gone.
	if err := rdb.Del(context.Background(), StreamKey(prefix)).Err(); err != nil {
		t.Fatal(err)
	}
	// The consumer notices and recreates the group before new events come.
	waitFor(t, "the group recreated", 10*time.Second, func() bool { return testutil.ToFloat64(c.m.resets) == 1 })
	ids = append(ids, addEvents(t, rdb, prefix, 3, 3)...)
	waitFor(t, "events after the group was recreated", 10*time.Second, func() bool { return col.count() == 6 })
	col.check(t, ids)
	waitFor(t, "no pending", 5*time.Second, func() bool { return pendingCount(t, rdb, prefix) == 0 })
	if got := testutil.ToFloat64(c.m.resets); got != 1 {
		t.Errorf("group resets = %v, want 1", got)
	}
}

func TestProducerToConsumer(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	runProducer(t, p)
	var mu sync.Mutex
	got := map[string]usage.Event{}
	startConsumer(t, ConsumerOptions{Redis: rdb, Prefix: prefix}, func(_ context.Context, evs []usage.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			got[ev.RequestID] = ev
		}
		return nil
	})
	full := fullEvent()
	p.Record(context.Background(), full)
	for i := range 500 {
		p.Record(context.Background(), testEvent(i))
	}
	waitFor(t, "501 events", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 501 })
	mu.Lock()
	defer mu.Unlock()
	if got[full.RequestID] != full {
		t.Errorf("event changed on the way:\n got %+v\nwant %+v", got[full.RequestID], full)
	}
}
