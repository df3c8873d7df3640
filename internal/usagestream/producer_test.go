package usagestream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
)

var _ usage.Sink = (*Producer)(nil)

func runProducer(t *testing.T, p *Producer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func want(n int, from int) []string {
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, testEvent(from+i).RequestID)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProducerDeliversInOrder(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix, Batch: 64})
	if err != nil {
		t.Fatal(err)
	}
	runProducer(t, p)
	var wg sync.WaitGroup
	for i := range 1000 {
		p.Record(context.Background(), testEvent(i))
		if i%100 == 0 {
			wg.Go(func() { time.Sleep(time.Millisecond) })
		}
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitSent(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	if got := streamIDs(t, rdb, StreamKey(prefix)); !equal(got, want(1000, 0)) {
		t.Fatalf("stream holds %d events, want 1000 in order", len(got))
	}
	if got := testutil.ToFloat64(p.metrics.produced); got != 1000 {
		t.Errorf("produced = %v", got)
	}
	// Entries decode to exactly what was recorded.
	msgs, _ := rdb.XRangeN(ctx, StreamKey(prefix), "-", "+", 1).Result()
	ev, err := Decode([]byte(msgs[0].Values[Field].(string)))
	if err != nil || ev != testEvent(0) {
		t.Fatalf("first entry %+v, %v; want %+v", ev, err, testEvent(0))
	}
}

func TestProducerBuffersWhileRedisIsUnreachable(t *testing.T) {
	real, _ := testenv.Redis(t)
	sw, prefix := newSwitchableRedis(t)
	p, err := NewProducer(ProducerOptions{Redis: sw, Prefix: prefix, Batch: 50, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Recorded before Run starts, so that its first batch is a full one.
	for i := range 300 {
		p.Record(context.Background(), testEvent(i))
	}
	runProducer(t, p)
	waitFor(t, "XADD errors", 5*time.Second, func() bool { return testutil.ToFloat64(p.metrics.xaddErrors) >= 3 })
	// One batch of 50 is being retried, the other 250 are buffered; nothing
	// was sent.
	if got := p.Buffered(); got != 250 || p.Sent() != 0 {
		t.Fatalf("buffered %d, sent %d while Redis is unreachable; want 250, 0", got, p.Sent())
	}
	for i := 300; i < 400; i++ {
		p.Record(context.Background(), testEvent(i))
	}
	sw.connect(t, real)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitSent(ctx, 400); err != nil {
		t.Fatal(err)
	}
	if got := streamIDs(t, real, StreamKey(prefix)); !equal(got, want(400, 0)) {
		t.Fatalf("stream holds %d events %v…, want the 400 recorded, once each, in order", len(got), got[:min(5, len(got))])
	}
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("overflow")); got != 0 {
		t.Errorf("dropped %v", got)
	}
	if got := testutil.ToFloat64(p.metrics.depth); got != 0 {
		t.Errorf("buffer gauge %v after delivery", got)
	}
}

func TestProducerOverflowDropsOldestCounted(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	reg := prometheus.NewRegistry()
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix, Buffer: 10, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Not running yet: the buffer fills.
	for i := range 25 {
		p.Record(context.Background(), testEvent(i))
	}
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("overflow")); got != 15 {
		t.Fatalf("dropped{overflow} = %v, want 15", got)
	}
	if got := testutil.ToFloat64(p.metrics.depth); got != 10 {
		t.Fatalf("buffer gauge = %v, want 10", got)
	}
	runProducer(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitSent(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := streamIDs(t, rdb, StreamKey(prefix)); !equal(got, want(10, 15)) {
		t.Fatalf("stream holds %v, want the newest 10 (%v)", got, want(10, 15))
	}
	// The metrics are registered under their documented names.
	n, err := testutil.GatherAndCount(reg, "ccproxy_usage_stream_dropped_total", "ccproxy_usage_stream_produced_total",
		"ccproxy_usage_stream_buffer_events", "ccproxy_usage_stream_xadd_errors_total")
	if err != nil || n != 5 {
		t.Errorf("gathered %d series, %v", n, err)
	}
}

func TestProducerFlushesAtShutdown(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix, Batch: 7})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		p.Record(context.Background(), testEvent(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // already over: Run only flushes
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := streamIDs(t, rdb, StreamKey(prefix)); !equal(got, want(100, 0)) {
		t.Fatalf("stream holds %d events after the final flush, want 100", len(got))
	}
	// Late events are counted, not silently lost.
	p.Record(context.Background(), testEvent(100))
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("shutdown")); got != 1 {
		t.Fatalf("dropped{shutdown} = %v, want 1", got)
	}
}

func TestProducerShutdownWithRedisDownCountsLoss(t *testing.T) {
	sw, prefix := newSwitchableRedis(t)
	p, err := NewProducer(ProducerOptions{Redis: sw, Prefix: prefix, Batch: 10, FlushTimeout: 300 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := runProducer(t, p)
	for i := range 35 {
		p.Record(context.Background(), testEvent(i))
	}
	waitFor(t, "an XADD error", 5*time.Second, func() bool { return testutil.ToFloat64(p.metrics.xaddErrors) > 0 })
	start := time.Now()
	stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with a 300ms flush timeout", d)
	}
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("shutdown")); got != 35 {
		t.Fatalf("dropped{shutdown} = %v, want 35", got)
	}
	if p.Buffered() != 0 {
		t.Errorf("buffered %d after shutdown", p.Buffered())
	}
}

func TestProducerTrimsApproximately(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix, MaxLen: 100, Batch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		p.Record(context.Background(), testEvent(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Run(ctx)
	n, err := rdb.XLen(context.Background(), StreamKey(prefix)).Result()
	if err != nil {
		t.Fatal(err)
	}
	// MAXLEN ~ trims whole radix-tree nodes (100 entries by default).
	if n < 100 || n > 300 {
		t.Fatalf("XLEN = %d with MaxLen 100, want about 100", n)
	}
}

func TestRing(t *testing.T) {
	r := ring{max: 3000}
	var out []usage.Event
	for round := range 3 {
		for i := range 5000 {
			ev := testEvent(i)
			old, dropped := r.push(ev)
			if dropped != (i >= 3000) || dropped && old.RequestID != testEvent(i-3000).RequestID {
				t.Fatalf("round %d push %d: dropped %v (%s)", round, i, dropped, old.RequestID)
			}
		}
		out = r.popInto(out[:0], 10_000)
		if len(out) != 3000 || out[0].RequestID != testEvent(2000).RequestID || out[2999].RequestID != testEvent(4999).RequestID {
			t.Fatalf("round %d popped %d: %s…%s", round, len(out), out[0].RequestID, out[len(out)-1].RequestID)
		}
	}
	if r.n != 0 {
		t.Fatalf("ring holds %d after popping everything", r.n)
	}
	big := ring{max: 10_000}
	for i := range 9000 {
		big.push(testEvent(i))
	}
	if got := big.popInto(nil, 10_000); len(got) != 9000 || big.buf != nil {
		t.Fatalf("popped %d; buffer of %d kept after an outage", len(got), len(big.buf))
	}
}
