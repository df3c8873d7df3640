package usagestream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// Consumer defaults.
const (
	DefaultConsumeBatch  = 1000
	DefaultBlock         = time.Second
	DefaultClaimIdle     = 30 * time.Second
	DefaultHandleTimeout = 30 * time.Second
	// deadLetterMaxLen bounds the dead-letter stream (approximately).
	deadLetterMaxLen = 100_000
	// staleConsumer is how long a consumer with nothing pending stays in the
	// group after its last activity: past it, it is a restarted process's
	// old name and is deleted.
	staleConsumer = time.Hour
)

// Handler commits a batch of events. It returns nil only once the events
// are durable; the consumer acknowledges the batch after that and never
// before. It must be idempotent: a batch whose acknowledgement was lost is
// delivered again.
type Handler func(ctx context.Context, events []usage.Event) error

// ConsumerOptions configures a Consumer.
type ConsumerOptions struct {
	// Redis is the client. Required.
	Redis redis.UniversalClient
	// Prefix starts the stream keys (CCPROXY_REDIS_PREFIX).
	Prefix string
	// Group is the consumer group (default Group).
	Group string
	// Name is this consumer's name in the group; default hostname-pid, so
	// that a restarted process does not take its predecessor's pending
	// entries without the claim delay (they may still be in its handler).
	Name string
	// Batch is the most entries read at once (default DefaultConsumeBatch).
	Batch int
	// Block is how long a read waits for new entries (default DefaultBlock).
	Block time.Duration
	// ClaimIdle is how long an entry stays unacknowledged by another
	// consumer before this one claims it (default DefaultClaimIdle).
	ClaimIdle time.Duration
	// ClaimInterval is how often to look for such entries (default
	// ClaimIdle/3, at most 10 s).
	ClaimInterval time.Duration
	// HandleTimeout bounds one handler call and its acknowledgement. They
	// run detached from Run's context, so that a batch in progress at
	// shutdown is committed and acknowledged rather than redelivered
	// (default DefaultHandleTimeout).
	HandleTimeout time.Duration
	// StatsInterval is how often the pending and lag gauges are refreshed
	// (default 5 s).
	StatsInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failure (defaults
	// 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives the consumer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the consumer's metrics; nil keeps them private.
	Registerer prometheus.Registerer
}

// Consumer reads the usage stream as one member of a consumer group and
// hands batches to a Handler; see the package documentation.
//
// Delivery is at least once. A batch is acknowledged (XACK) only after the
// handler returned nil. When it fails, the consumer backs off and reads its
// own pending entries again (from id 0) before any new ones; it does the
// same at start, so that a consumer restarted under the same name finishes
// its own work first. Entries that another consumer left unacknowledged for
// ClaimIdle (a crashed or stuck replica) are taken over with XAUTOCLAIM.
// Entries that do not decode go to the dead-letter stream and are
// acknowledged; entries trimmed from the stream while pending are
// acknowledged and counted. Nothing is dropped without a metric and a log.
type Consumer struct {
	rdb     redis.UniversalClient
	stream  string
	dead    string
	opts    ConsumerOptions
	handler Handler
	log     *slog.Logger
	m       *consumerMetrics
}

type consumerMetrics struct {
	consumed, acked, deadLettered, trimmed, claimed, claimPasses, handlerErrors, redisErrors, resets prometheus.Counter
	pending, lag, length                                                                             prometheus.Gauge
	commit                                                                                           prometheus.Histogram
}

func newConsumerMetrics(reg prometheus.Registerer) (*consumerMetrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &consumerMetrics{
		consumed:      counter("ccproxy_usage_ingest_consumed_total", "Usage stream entries read by this ingester, redeliveries included."),
		acked:         counter("ccproxy_usage_ingest_acked_total", "Usage stream entries acknowledged after their batch was committed (or dead-lettered)."),
		deadLettered:  counter("ccproxy_usage_ingest_dead_lettered_total", "Undecodable usage stream entries moved to the dead-letter stream."),
		trimmed:       counter("ccproxy_usage_ingest_trimmed_total", "Pending usage stream entries found deleted (trimmed by MAXLEN) before they were committed: lost events."),
		claimed:       counter("ccproxy_usage_ingest_claimed_total", "Usage stream entries taken over from other consumers (XAUTOCLAIM)."),
		claimPasses:   counter("ccproxy_usage_ingest_claim_passes_total", "Completed passes looking for entries other consumers left unacknowledged for the claim delay (one per claim interval while healthy)."),
		handlerErrors: counter("ccproxy_usage_ingest_batch_errors_total", "Usage batches whose commit failed (they are retried)."),
		redisErrors:   counter("ccproxy_usage_ingest_redis_errors_total", "Failed Redis calls of the usage ingester."),
		resets: counter("ccproxy_usage_ingest_group_resets_total",
			"Times the usage stream's consumer group was found missing and recreated: Redis lost its data (restart without persistence, flush) and the entries it held — at most the last pending + lag values — are lost."),
		pending: gauge("ccproxy_usage_ingest_pending", "Usage stream entries delivered to the ingest group and not yet acknowledged (XINFO GROUPS pending)."),
		lag:     gauge("ccproxy_usage_ingest_lag", "Usage stream entries not yet delivered to the ingest group (XINFO GROUPS lag)."),
		length:  gauge("ccproxy_usage_stream_length", "Entries in the usage stream (XLEN)."),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ccproxy_usage_ingest_batch_commit_seconds",
			Help:    "Time to commit one usage batch (the handler).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
	}
	for _, c := range []prometheus.Collector{m.consumed, m.acked, m.deadLettered, m.trimmed, m.claimed, m.claimPasses, m.handlerErrors,
		m.redisErrors, m.resets, m.pending, m.lag, m.length, m.commit} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// DefaultConsumerName is hostname-pid.
func DefaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// NewConsumer returns a Consumer that hands batches to h; call Run.
func NewConsumer(opts ConsumerOptions, h Handler) (*Consumer, error) {
	if opts.Redis == nil {
		return nil, errorf("ConsumerOptions.Redis is required")
	}
	if h == nil {
		return nil, errorf("a Handler is required")
	}
	if opts.Group == "" {
		opts.Group = Group
	}
	if opts.Name == "" {
		opts.Name = DefaultConsumerName()
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultConsumeBatch
	}
	if opts.Block <= 0 {
		opts.Block = DefaultBlock
	}
	if opts.ClaimIdle <= 0 {
		opts.ClaimIdle = DefaultClaimIdle
	}
	if opts.ClaimInterval <= 0 {
		opts.ClaimInterval = min(opts.ClaimIdle/3, 10*time.Second)
	}
	if opts.HandleTimeout <= 0 {
		opts.HandleTimeout = DefaultHandleTimeout
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 5 * time.Second
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
	m, err := newConsumerMetrics(opts.Registerer)
	if err != nil {
		return nil, errorf("metrics: %v", err)
	}
	return &Consumer{
		rdb: opts.Redis, stream: StreamKey(opts.Prefix), dead: DeadLetterKey(opts.Prefix),
		opts: opts, handler: h, log: opts.Logger.With("consumer", opts.Name), m: m,
	}, nil
}

// Name is the consumer's name in the group.
func (c *Consumer) Name() string { return c.opts.Name }

// Run consumes until ctx ends; a batch being committed then is finished
// and acknowledged first. It returns nil: Redis and handler failures are
// retried, not returned.
func (c *Consumer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.statsLoop(ctx)
	}()
	defer wg.Wait()

	b := backoff{min: c.opts.MinBackoff, max: c.opts.MaxBackoff}
	for ctx.Err() == nil {
		if err := c.ensureGroup(ctx); err != nil {
			c.m.redisErrors.Inc()
			c.log.Error("usage ingest: cannot create the consumer group; retrying", "err", err)
			b.wait(ctx)
			continue
		}
		break
	}
	b.reset()
	ownPending := true // read our own pending entries first
	nextClaim := time.Now()
	for ctx.Err() == nil {
		if !time.Now().Before(nextClaim) {
			n, err := c.claim(ctx)
			if err != nil && ctx.Err() == nil {
				c.m.redisErrors.Inc()
				c.log.Warn("usage ingest: claiming idle entries failed", "err", err)
			}
			if err == nil {
				c.m.claimPasses.Inc()
			}
			if n > 0 {
				ownPending = true
			}
			nextClaim = time.Now().Add(c.opts.ClaimInterval)
		}
		msgs, err := c.read(ctx, ownPending)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.m.redisErrors.Inc()
			if isNoGroup(err) {
				// The stream or group vanished (Redis restarted without its
				// data, or someone deleted the key): recreate it.
				c.m.resets.Inc()
				c.log.Error("usage ingest: consumer group missing (Redis lost its data?); recreating it — unconsumed entries Redis held are lost",
					"last_pending", gaugeValue(c.m.pending), "last_lag", gaugeValue(c.m.lag), "err", err)
				if err := c.ensureGroup(ctx); err != nil {
					c.log.Error("usage ingest: recreating the consumer group failed", "err", err)
				}
			} else {
				c.log.Error("usage ingest: reading the stream failed; retrying", "err", err)
			}
			b.wait(ctx)
			continue
		}
		if len(msgs) == 0 {
			ownPending = false
			continue
		}
		if err := c.process(ctx, msgs); err != nil {
			ownPending = true
			b.wait(ctx)
			continue
		}
		b.reset()
	}
	return nil
}

func (c *Consumer) ensureGroup(ctx context.Context) error {
	err := c.rdb.XGroupCreateMkStream(ctx, c.stream, c.opts.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// read returns the next batch: this consumer's pending entries when
// ownPending, else new entries (waiting up to Block).
func (c *Consumer) read(ctx context.Context, ownPending bool) ([]redis.XMessage, error) {
	args := &redis.XReadGroupArgs{Group: c.opts.Group, Consumer: c.opts.Name, Count: int64(c.opts.Batch)}
	if ownPending {
		args.Streams, args.Block = []string{c.stream, "0"}, -1
	} else {
		args.Streams, args.Block = []string{c.stream, ">"}, c.opts.Block
	}
	res, err := c.rdb.XReadGroup(ctx, args).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var msgs []redis.XMessage
	for _, s := range res {
		msgs = append(msgs, s.Messages...)
	}
	return msgs, nil
}

// process commits one batch: dead letters first (moved and acknowledged
// atomically), then the handler for the decodable events, then their
// acknowledgement. An error leaves the unacknowledged entries pending.
func (c *Consumer) process(ctx context.Context, msgs []redis.XMessage) error {
	c.m.consumed.Add(float64(len(msgs)))
	// Detached from ctx: a batch started before shutdown is finished.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.HandleTimeout)
	defer cancel()

	events := make([]usage.Event, 0, len(msgs))
	ids := make([]string, 0, len(msgs))
	type deadEntry struct{ id, payload, reason string }
	var dead []deadEntry
	var gone []string
	for _, m := range msgs {
		if len(m.Values) == 0 {
			gone = append(gone, m.ID)
			continue
		}
		raw, ok := m.Values[Field].(string)
		if !ok {
			dead = append(dead, deadEntry{m.ID, fmt.Sprint(m.Values), "no " + Field + " field"})
			continue
		}
		ev, err := Decode([]byte(raw))
		if err != nil {
			dead = append(dead, deadEntry{m.ID, raw, err.Error()})
			continue
		}
		events = append(events, ev)
		ids = append(ids, m.ID)
	}
	if len(dead) > 0 || len(gone) > 0 {
		// Copy, then acknowledge: two round trips rather than MULTI, which a
		// Redis Cluster would refuse across the two keys. A failure between
		// them copies an entry twice, never loses it.
		acks := append([]string(nil), gone...)
		if len(dead) > 0 {
			pipe := c.rdb.Pipeline()
			for _, d := range dead {
				pipe.XAdd(hctx, &redis.XAddArgs{Stream: c.dead, MaxLen: deadLetterMaxLen, Approx: true,
					Values: []any{"id", d.id, Field, d.payload, "err", d.reason}})
				acks = append(acks, d.id)
			}
			if err := execAll(hctx, pipe); err != nil {
				c.m.redisErrors.Inc()
				c.log.Error("usage ingest: dead-lettering failed; will retry the batch", "err", err)
				return err
			}
		}
		if err := c.rdb.XAck(hctx, c.stream, c.opts.Group, acks...).Err(); err != nil {
			c.m.redisErrors.Inc()
			c.log.Error("usage ingest: acknowledging dead letters failed; will retry the batch", "err", err)
			return err
		}
		c.m.acked.Add(float64(len(acks)))
		c.m.deadLettered.Add(float64(len(dead)))
		c.m.trimmed.Add(float64(len(gone)))
		for _, d := range dead {
			c.log.Error("usage ingest: undecodable entry moved to the dead-letter stream", "id", d.id, "stream", c.dead, "err", d.reason)
		}
		if len(gone) > 0 {
			c.log.Error("usage ingest: pending entries were trimmed from the stream before being committed; their events are lost",
				"entries", len(gone), "first_id", gone[0])
		}
	}
	if len(events) == 0 {
		return nil
	}
	start := time.Now()
	err := c.handler(hctx, events)
	c.m.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.handlerErrors.Inc()
		c.log.Error("usage ingest: committing a batch failed; it stays pending and is retried", "events", len(events), "err", err)
		return err
	}
	if err := c.rdb.XAck(hctx, c.stream, c.opts.Group, ids...).Err(); err != nil {
		// Committed but not acknowledged: the batch is read again and the
		// idempotent handler skips it.
		c.m.redisErrors.Inc()
		c.log.Warn("usage ingest: acknowledging a committed batch failed; it will be redelivered", "events", len(ids), "err", err)
		return err
	}
	c.m.acked.Add(float64(len(ids)))
	return nil
}

// claim takes over entries other consumers left unacknowledged for
// ClaimIdle, into this consumer's pending list, and deletes consumers that
// have been idle with nothing pending for an hour. It returns how many
// entries it claimed.
func (c *Consumer) claim(ctx context.Context) (int, error) {
	total := 0
	start := "0-0"
	// A bounded number of rounds: the rest waits for the next interval.
	for range 10 {
		// XAUTOCLAIM also drops from the pending list the entries that were
		// deleted from the stream (trimmed): they are counted here.
		msgs, next, deleted, err := c.rdb.XAutoClaimWithDeleted(ctx, &redis.XAutoClaimArgs{
			Stream: c.stream, Group: c.opts.Group, Consumer: c.opts.Name,
			MinIdle: c.opts.ClaimIdle, Start: start, Count: int64(c.opts.Batch),
		}).Result()
		if err != nil {
			return total, err
		}
		total += len(msgs)
		if len(deleted) > 0 {
			c.m.trimmed.Add(float64(len(deleted)))
			c.log.Error("usage ingest: pending entries were trimmed from the stream before being committed; their events are lost",
				"entries", len(deleted), "first_id", deleted[0])
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	if total > 0 {
		c.m.claimed.Add(float64(total))
		c.log.Warn("usage ingest: took over entries left unacknowledged by another consumer", "entries", total, "min_idle", c.opts.ClaimIdle)
	}
	consumers, err := c.rdb.XInfoConsumers(ctx, c.stream, c.opts.Group).Result()
	if err != nil {
		return total, err
	}
	for _, cs := range consumers {
		if cs.Name != c.opts.Name && cs.Pending == 0 && cs.Idle > staleConsumer {
			if err := c.rdb.XGroupDelConsumer(ctx, c.stream, c.opts.Group, cs.Name).Err(); err == nil {
				c.log.Info("usage ingest: removed a stale consumer from the group", "stale_consumer", cs.Name)
			}
		}
	}
	return total, nil
}

func (c *Consumer) statsLoop(ctx context.Context) {
	t := time.NewTicker(c.opts.StatsInterval)
	defer t.Stop()
	for {
		c.updateStats(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Consumer) updateStats(ctx context.Context) {
	groups, err := c.rdb.XInfoGroups(ctx, c.stream).Result()
	if err != nil {
		return
	}
	for _, g := range groups {
		if g.Name != c.opts.Group {
			continue
		}
		c.m.pending.Set(float64(g.Pending))
		if g.Lag >= 0 {
			c.m.lag.Set(float64(g.Lag))
		}
	}
	if n, err := c.rdb.XLen(ctx, c.stream).Result(); err == nil {
		c.m.length.Set(float64(n))
	}
}

// gaugeValue reads a gauge's current value.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

// execAll runs a pipeline and returns its first error.
func execAll(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// backoff is an exponential wait between retries.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) wait(ctx context.Context) {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	t := time.NewTimer(b.cur)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("usagestream: "+format, args...)
}
