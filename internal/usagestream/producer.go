package usagestream

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// Producer defaults.
const (
	// DefaultBuffer is how many events a Producer keeps in memory while it
	// cannot reach Redis: at a busy sidecar's ~100 requests/s, a quarter of
	// an hour of outage; about 50 MB at its fullest.
	DefaultBuffer = 100_000
	// DefaultBatch is the most events sent in one pipelined round trip.
	DefaultBatch = 500
	// DefaultMaxLen is the approximate length the stream is trimmed to
	// (XADD MAXLEN ~). The ingester keeps the stream near empty, so this
	// only ever trims when the admin service has been down for that many
	// events (about a day of a 100-request/s fleet) — it bounds Redis memory
	// (~5 GB) rather than the normal backlog. Trimmed entries are lost and
	// counted by the consumer (ccproxy_usage_ingest_trimmed_total) when it
	// finds them gone from its pending list; entries trimmed before any
	// consumer read them are not seen at all, so alert on the lag first.
	DefaultMaxLen = 10_000_000
	// DefaultFlushTimeout bounds how long Run keeps sending at shutdown.
	DefaultFlushTimeout = 5 * time.Second
	// DefaultSyncTimeout is the wait extproc gives one synchronous XADD
	// (ProducerOptions.SyncTimeout) before it spools the event instead: a
	// refused connection fails at once, a hung Redis costs the requests in
	// flight at that moment at most this much once.
	DefaultSyncTimeout = 500 * time.Millisecond
)

// ProducerOptions configures a Producer.
type ProducerOptions struct {
	// Redis is the client. Required.
	Redis redis.UniversalClient
	// Prefix starts the stream key (CCPROXY_REDIS_PREFIX).
	Prefix string
	// Buffer bounds the events kept in memory (default DefaultBuffer). One
	// batch in flight comes on top.
	Buffer int
	// Batch is the most events per pipelined XADD round trip (default
	// DefaultBatch).
	Batch int
	// MaxLen is the approximate stream length kept by XADD (default
	// DefaultMaxLen); negative disables trimming.
	MaxLen int64
	// FlushTimeout bounds the final flush when Run's context ends (default
	// DefaultFlushTimeout).
	FlushTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts while Redis
	// fails (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// SyncTimeout, when positive, makes Record publish the event itself
	// (one XADD, waiting at most SyncTimeout) while nothing is buffered, so
	// that the event is in Redis before Record returns — before the end of
	// the response is released to the client. Only when that fails, or
	// while earlier events still wait, does the event go to the buffer (and
	// the spool). Zero: Record only buffers.
	SyncTimeout time.Duration
	// SpoolDir, when set, is a directory for the write-ahead spool: every
	// event that goes to the buffer is first appended to
	// SpoolDir/usage-spool.jsonl and synced, the file is emptied whenever
	// the buffer has drained, and NewProducer buffers what a previous
	// process left in it. One directory per process.
	SpoolDir string
	// Logger receives the producer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the producer's metrics; nil keeps them private.
	Registerer prometheus.Registerer
}

// Producer publishes usage events to the Redis stream. It implements
// usage.Sink. With SyncTimeout set, Record adds the event to the stream
// itself while Redis answers; otherwise, and whenever that fails, it
// appends the event to the spool (if any) and a bounded in-memory buffer
// that Run drains with pipelined XADDs. While Redis fails, Run keeps the
// events and retries with exponential backoff.
//
// Overflow drops the OLDEST buffered event: the newest events are the ones
// that feed the current month's spend counters and budgets and the
// dashboards' recent view, and dropping from the old end also bounds how
// stale the buffer gets. Every drop is counted
// (ccproxy_usage_stream_dropped_total{reason="overflow"}) and logged at
// most once per 10 s with the running total.
type Producer struct {
	rdb     redis.UniversalClient
	stream  string
	opts    ProducerOptions
	log     *slog.Logger
	metrics *producerMetrics

	mu       sync.Mutex
	buf      ring
	inflight int    // events Run took from buf and is sending
	spool    *spool // nil without SpoolDir
	spoolLog rateLimiter
	syncLog  rateLimiter
	closed   bool          // Run's final flush is over: nothing will send
	wake     chan struct{} // capacity 1: events arrived
	dropLog  rateLimiter
	drops    int64 // total dropped, for the logs

	// sent counts events XADDed, for tests (WaitSent).
	sentMu   sync.Mutex
	sent     int64
	sentCond *sync.Cond
}

type producerMetrics struct {
	produced    prometheus.Counter
	dropped     *prometheus.CounterVec
	depth       prometheus.Gauge
	xaddErrors  prometheus.Counter
	batchLength prometheus.Histogram
	direct      prometheus.Counter
	spoolErrors prometheus.Counter
	replayed    prometheus.Counter
}

func newProducerMetrics(reg prometheus.Registerer) (*producerMetrics, error) {
	m := &producerMetrics{
		produced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_stream_produced_total",
			Help: "Usage events added to the Redis usage stream.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_stream_dropped_total",
			Help: "Usage events lost before reaching the Redis stream, by reason: overflow (buffer full, oldest dropped) or shutdown (Redis unreachable until the flush deadline).",
		}, []string{"reason"}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccproxy_usage_stream_buffer_events",
			Help: "Usage events waiting in extproc's memory for the Redis stream.",
		}),
		xaddErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_stream_xadd_errors_total",
			Help: "Failed XADD round trips to the usage stream (each is retried).",
		}),
		batchLength: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ccproxy_usage_stream_batch_events",
			Help:    "Usage events per pipelined XADD round trip.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		direct: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_stream_direct_total",
			Help: "Usage events added to the stream synchronously, before the response ended (also counted in ccproxy_usage_stream_produced_total).",
		}),
		spoolErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_spool_errors_total",
			Help: "Failed writes to the usage spool file (the event is kept in memory only).",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_spool_replayed_total",
			Help: "Usage events found in the spool at start (left by a process that stopped before Redis took them) and buffered again.",
		}),
	}
	m.dropped.WithLabelValues("overflow")
	m.dropped.WithLabelValues("shutdown")
	for _, c := range []prometheus.Collector{m.produced, m.dropped, m.depth, m.xaddErrors, m.batchLength, m.direct, m.spoolErrors, m.replayed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// NewProducer returns a Producer; call Run to start publishing.
func NewProducer(opts ProducerOptions) (*Producer, error) {
	if opts.Redis == nil {
		return nil, errorf("ProducerOptions.Redis is required")
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.MaxLen == 0 {
		opts.MaxLen = DefaultMaxLen
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	m, err := newProducerMetrics(opts.Registerer)
	if err != nil {
		return nil, errorf("metrics: %v", err)
	}
	p := &Producer{
		rdb:      opts.Redis,
		stream:   StreamKey(opts.Prefix),
		opts:     opts,
		log:      opts.Logger,
		metrics:  m,
		buf:      ring{max: opts.Buffer},
		wake:     make(chan struct{}, 1),
		dropLog:  rateLimiter{every: 10 * time.Second},
		spoolLog: rateLimiter{every: 10 * time.Second},
		syncLog:  rateLimiter{every: 10 * time.Second},
	}
	p.sentCond = sync.NewCond(&p.sentMu)
	if opts.SpoolDir != "" {
		sp, left, bad, err := openSpool(opts.SpoolDir)
		if err != nil {
			return nil, err
		}
		p.spool = sp
		for _, ev := range left {
			p.buf.push(ev)
		}
		m.replayed.Add(float64(len(left)))
		m.depth.Set(float64(p.buf.n))
		if len(left) > 0 || bad > 0 {
			p.log.Warn("usage events left in the spool by a previous process: publishing them again (the ingester skips ids it has stored)",
				"events", len(left), "undecodable_lines", bad, "spool", sp.path)
		}
	}
	return p, nil
}

// Record implements usage.Sink. With SyncTimeout set and nothing waiting in
// the buffer, it adds ev to the stream before returning (waiting at most
// SyncTimeout); otherwise, or when that fails, it spools and buffers ev.
func (p *Producer) Record(ctx context.Context, ev usage.Event) {
	if p.opts.SyncTimeout > 0 && p.idle() {
		err := p.publishNow(ctx, ev)
		if err == nil {
			return
		}
		p.metrics.xaddErrors.Inc()
		p.mu.Lock()
		logIt := p.syncLog.allow(time.Now())
		p.mu.Unlock()
		if logIt {
			p.log.Error("publishing a usage event failed; buffering it and retrying", "request_id", ev.RequestID, "err", err)
		}
	}
	p.enqueue(ev)
}

// idle reports whether nothing waits to be sent: only then may Record
// publish directly (else Run is retrying, and Redis is likely down).
func (p *Producer) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && p.buf.n == 0 && p.inflight == 0
}

// publishNow adds ev to the stream with one XADD.
func (p *Producer) publishNow(ctx context.Context, ev usage.Event) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.SyncTimeout)
	defer cancel()
	args := &redis.XAddArgs{Stream: p.stream, Values: []any{Field, Encode(ev)}}
	if p.opts.MaxLen > 0 {
		args.MaxLen, args.Approx = p.opts.MaxLen, true
	}
	if err := p.rdb.XAdd(ctx, args).Err(); err != nil {
		return err
	}
	p.metrics.produced.Inc()
	p.metrics.direct.Inc()
	p.sentMu.Lock()
	p.sent++
	p.sentCond.Broadcast()
	p.sentMu.Unlock()
	return nil
}

// spoolLocked writes ev to the spool, if any, and returns its sequence
// number for spoolSync (0: nothing to sync); p.mu is held.
func (p *Producer) spoolLocked(ev usage.Event) uint64 {
	if p.spool == nil {
		return 0
	}
	seq, err := p.spool.write(ev)
	if err != nil {
		p.spoolFailed(ev, err)
		return 0
	}
	return seq
}

// spoolSync waits until the spool line seq is on disk; p.mu is not held, so
// events recorded meanwhile share the fsync.
func (p *Producer) spoolSync(ev usage.Event, seq uint64) {
	if seq == 0 {
		return
	}
	if err := p.spool.sync(seq); err != nil {
		p.mu.Lock()
		p.spoolFailed(ev, err)
		p.mu.Unlock()
	}
}

// spoolFailed counts and logs a failed spool write; p.mu is held.
func (p *Producer) spoolFailed(ev usage.Event, err error) {
	p.metrics.spoolErrors.Inc()
	if p.spoolLog.allow(time.Now()) {
		p.log.Error("usage spool write failed: event kept in memory only", "request_id", ev.RequestID, "err", err)
	}
}

// sentLocked notes that the batch Run was sending is in the stream, and
// empties the spool once nothing waits any more; p.mu is held.
func (p *Producer) sentLocked() {
	p.inflight = 0
	if p.spool != nil && p.buf.n == 0 {
		if err := p.spool.truncate(); err != nil {
			p.metrics.spoolErrors.Inc()
			p.log.Error("usage spool truncation failed (its events will be published again at the next start)", "err", err)
		}
	}
}

// enqueue spools and buffers ev, and returns once the spool has it on disk
// (an fsync shared with the events recorded meanwhile).
func (p *Producer) enqueue(ev usage.Event) {
	p.mu.Lock()
	if p.closed && p.spool != nil {
		// Nothing will send any more, but the spool keeps it for the next
		// start.
		seq := p.spoolLocked(ev)
		p.mu.Unlock()
		p.spoolSync(ev, seq)
		return
	}
	if p.closed {
		p.drops++
		n := p.drops
		logIt := p.dropLog.allow(time.Now())
		p.mu.Unlock()
		p.metrics.dropped.WithLabelValues("shutdown").Inc()
		if logIt {
			p.log.Error("usage event recorded after the producer stopped: dropped", "request_id", ev.RequestID, "dropped_total", n)
		}
		return
	}
	seq := p.spoolLocked(ev)
	dropped, hadDrop := p.buf.push(ev)
	depth := p.buf.n
	var n int64
	var logIt bool
	if hadDrop {
		p.drops++
		n = p.drops
		logIt = p.dropLog.allow(time.Now())
	}
	p.mu.Unlock()
	p.metrics.depth.Set(float64(depth))
	if hadDrop {
		p.metrics.dropped.WithLabelValues("overflow").Inc()
		if logIt {
			p.log.Error("usage buffer full (Redis unreachable?): oldest event dropped",
				"dropped_request_id", dropped.RequestID, "dropped_event_time", dropped.Time, "buffer", p.opts.Buffer, "dropped_total", n)
		}
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	p.spoolSync(ev, seq)
}

// Buffered returns how many events wait in memory.
func (p *Producer) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.n
}

// Sent returns how many events were added to the stream.
func (p *Producer) Sent() int64 {
	p.sentMu.Lock()
	defer p.sentMu.Unlock()
	return p.sent
}

// WaitSent blocks until at least n events were added to the stream or ctx
// ends.
func (p *Producer) WaitSent(ctx context.Context, n int64) error {
	stop := context.AfterFunc(ctx, func() {
		p.sentMu.Lock()
		p.sentCond.Broadcast()
		p.sentMu.Unlock()
	})
	defer stop()
	p.sentMu.Lock()
	defer p.sentMu.Unlock()
	for p.sent < n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.sentCond.Wait()
	}
	return nil
}

// take moves up to limit events from the buffer into dst.
func (p *Producer) take(dst []usage.Event, limit int) []usage.Event {
	p.mu.Lock()
	dst = p.buf.popInto(dst, limit)
	p.inflight = len(dst)
	depth := p.buf.n
	p.mu.Unlock()
	p.metrics.depth.Set(float64(depth))
	return dst
}

// Run publishes buffered events until ctx ends, then keeps publishing what
// is buffered for at most FlushTimeout; events still unsent then are
// counted as dropped (reason shutdown) and logged. Events recorded after
// Run returned are dropped the same way. Run returns nil.
func (p *Producer) Run(ctx context.Context) error {
	batch := make([]usage.Event, 0, p.opts.Batch)
	for {
		batch = p.take(batch[:0], p.opts.Batch)
		if len(batch) == 0 {
			select {
			case <-p.wake:
				continue
			case <-ctx.Done():
			}
			break
		}
		if !p.send(ctx, batch) {
			// ctx ended while Redis failed: the batch goes to the final flush.
			return p.shutdown(batch)
		}
		p.mu.Lock()
		p.sentLocked()
		p.mu.Unlock()
	}
	return p.shutdown(nil)
}

// shutdown is Run's final flush: pending (a batch that was being retried)
// and the buffer, with the flush deadline.
func (p *Producer) shutdown(pending []usage.Event) error {
	fctx, cancel := context.WithTimeout(context.Background(), p.opts.FlushTimeout)
	defer cancel()
	batch := append([]usage.Event(nil), pending...)
	for {
		if len(batch) == 0 {
			// Close under the lock so that no event slips in between the
			// last take and closing.
			p.mu.Lock()
			batch = p.buf.popInto(batch, p.opts.Batch)
			if len(batch) == 0 {
				p.closed = true
				p.mu.Unlock()
				p.metrics.depth.Set(0)
				return nil
			}
			p.inflight = len(batch)
			p.mu.Unlock()
		}
		if !p.send(fctx, batch) {
			break
		}
		batch = batch[:0]
		p.mu.Lock()
		p.sentLocked()
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.closed = true
	left := len(batch) + p.buf.n
	if p.spool != nil {
		// Every buffered event was spooled: the next start publishes them.
		p.buf = ring{max: p.opts.Buffer}
		p.mu.Unlock()
		p.metrics.depth.Set(0)
		p.log.Warn("Redis unreachable until the flush deadline: usage events kept in the spool for the next start",
			"events", left, "spool", p.spool.path, "flush_timeout", p.opts.FlushTimeout)
		return nil
	}
	p.buf = ring{max: p.opts.Buffer}
	p.drops += int64(left)
	p.mu.Unlock()
	p.metrics.depth.Set(0)
	p.metrics.dropped.WithLabelValues("shutdown").Add(float64(left))
	p.log.Error("usage events dropped at shutdown: Redis unreachable until the flush deadline",
		"events", left, "flush_timeout", p.opts.FlushTimeout)
	return nil
}

// send XADDs batch in one pipeline, retrying with backoff until it succeeds
// (true) or ctx ends (false). A retry may add an event twice, when a
// failed round trip had partly succeeded: the ingester is idempotent on
// the request id.
func (p *Producer) send(ctx context.Context, batch []usage.Event) bool {
	backoff := p.opts.MinBackoff
	var failingSince time.Time
	for {
		err := p.xadd(ctx, batch)
		if err == nil {
			if !failingSince.IsZero() {
				p.log.Info("usage stream reachable again", "after", time.Since(failingSince).Round(time.Millisecond))
			}
			p.metrics.produced.Add(float64(len(batch)))
			p.metrics.batchLength.Observe(float64(len(batch)))
			p.sentMu.Lock()
			p.sent += int64(len(batch))
			p.sentCond.Broadcast()
			p.sentMu.Unlock()
			return true
		}
		p.metrics.xaddErrors.Inc()
		if failingSince.IsZero() {
			failingSince = time.Now()
			p.log.Error("publishing usage events failed; buffering and retrying", "events", len(batch), "buffered", p.Buffered(), "err", err)
		} else if backoff == p.opts.MaxBackoff {
			p.log.Warn("usage stream still unreachable", "for", time.Since(failingSince).Round(time.Second), "buffered", p.Buffered(), "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, p.opts.MaxBackoff)
	}
}

func (p *Producer) xadd(ctx context.Context, batch []usage.Event) error {
	pipe := p.rdb.Pipeline()
	for i := range batch {
		args := &redis.XAddArgs{Stream: p.stream, Values: []any{Field, Encode(batch[i])}}
		if p.opts.MaxLen > 0 {
			args.MaxLen, args.Approx = p.opts.MaxLen, true
		}
		pipe.XAdd(ctx, args)
	}
	return execAll(ctx, pipe)
}

// ring is a FIFO of events that grows up to max and then overwrites its
// oldest entry.
type ring struct {
	buf     []usage.Event
	head, n int
	max     int
}

// push appends ev; when the ring is full it drops the oldest event and
// returns it.
func (r *ring) push(ev usage.Event) (usage.Event, bool) {
	if r.n == len(r.buf) && len(r.buf) < r.max {
		r.grow()
	}
	if r.n == len(r.buf) {
		old := r.buf[r.head]
		r.buf[r.head] = ev
		r.head = (r.head + 1) % len(r.buf)
		return old, true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = ev
	r.n++
	return usage.Event{}, false
}

func (r *ring) grow() {
	size := min(max(2*len(r.buf), 1024), r.max)
	nb := make([]usage.Event, size)
	for i := 0; i < r.n; i++ {
		nb[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = nb, 0
}

// popInto moves up to limit of the oldest events into dst.
func (r *ring) popInto(dst []usage.Event, limit int) []usage.Event {
	for ; r.n > 0 && limit > 0; limit-- {
		dst = append(dst, r.buf[r.head])
		r.buf[r.head] = usage.Event{}
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
	if r.n == 0 && len(r.buf) > 4096 {
		// Give the memory of an outage back once it is over.
		r.buf, r.head = nil, 0
	}
	return dst
}

// rateLimiter allows one event per period.
type rateLimiter struct {
	every time.Duration
	last  time.Time
}

func (l *rateLimiter) allow(now time.Time) bool {
	if now.Sub(l.last) < l.every {
		return false
	}
	l.last = now
	return true
}
