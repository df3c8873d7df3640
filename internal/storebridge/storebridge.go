// Package storebridge connects the ext_proc server's interfaces to Postgres
// directly, for deployments where extproc may hold database credentials:
// `ccproxy dev`, tests, and single-node installs. It resolves access keys
// through internal/store and writes usage events to the usage tables in
// batches, priced from the rate card.
//
// The production sidecar is meant to hold no database credentials: it will
// resolve keys through the admin service and publish usage through Redis.
// Those paths replace this package there; the interfaces stay the same.
package storebridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/extproc/usage"
	"github.com/ccproxy/ccproxy/internal/store"
)

// KeyStore adapts *store.Store to auth.KeyStore.
type KeyStore struct {
	Store *store.Store
	// Now is the clock used to judge rotation grace periods; nil means time.Now.
	Now func() time.Time
}

// LookupKeyByHash implements auth.KeyStore.
func (k KeyStore) LookupKeyByHash(ctx context.Context, hash []byte) (auth.KeyRecord, error) {
	l, err := k.Store.AccessKeys().LookupByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return auth.KeyRecord{}, fmt.Errorf("storebridge: %w", auth.ErrUnknownKey)
	}
	if err != nil {
		return auth.KeyRecord{}, fmt.Errorf("storebridge: look up key: %w", err)
	}
	rec := auth.KeyRecord{
		KeyID:           l.Key.ID,
		UserID:          l.User.ID,
		Prefix:          l.Key.Prefix,
		RoutingStrategy: string(l.RoutingStrategy()),
		UserDisabled:    l.User.DeletedAt != nil || l.User.Status != store.UserActive,
	}
	if c := l.Credential; c != nil {
		rec.Credential = &auth.BedrockCredential{ID: c.ID, Kind: string(c.Kind), Region: c.Region, SecretCiphertext: c.SecretCiphertext}
	}
	switch l.Key.Status {
	case store.KeyRevoked:
		rec.RevokedAt = time.Unix(0, 0).UTC()
		if l.Key.RevokedAt != nil {
			rec.RevokedAt = *l.Key.RevokedAt
		}
	case store.KeyRotating:
		// A rotating key without a grace deadline is already unusable.
		rec.ExpiresAt = time.Unix(0, 0).UTC()
		if l.Key.GraceUntil != nil {
			rec.ExpiresAt = *l.Key.GraceUntil
		}
	}
	return rec, nil
}

// UsageSinkOptions configures a UsageSink.
type UsageSinkOptions struct {
	Logger *slog.Logger
	// Buffer bounds the events waiting to be written; beyond it events are
	// dropped, counted and logged (default 10,000).
	Buffer int
	// BatchSize is the most events written in one statement (default 500).
	BatchSize int
	// FlushInterval is the longest an event waits to be batched (default 200 ms).
	FlushInterval time.Duration
}

// UsageSink writes usage events to Postgres in batches from a background
// goroutine. Record never blocks. Failed batches are retried with back-off
// while the sink runs; the usage insert is idempotent on the request id, so
// a retried batch never double counts.
type UsageSink struct {
	store *store.Store
	log   *slog.Logger
	opts  UsageSinkOptions
	ch    chan store.UsageEvent

	mu      sync.Mutex
	dropped int64
	written int64
	cond    *sync.Cond
}

// NewUsageSink returns a sink writing to s; call Run to start writing.
func NewUsageSink(s *store.Store, opts UsageSinkOptions) *UsageSink {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 10_000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 200 * time.Millisecond
	}
	u := &UsageSink{store: s, log: opts.Logger, opts: opts, ch: make(chan store.UsageEvent, opts.Buffer)}
	u.cond = sync.NewCond(&u.mu)
	return u
}

// Record implements usage.Sink.
func (u *UsageSink) Record(_ context.Context, ev usage.Event) {
	select {
	case u.ch <- toStoreEvent(ev):
	default:
		u.mu.Lock()
		u.dropped++
		n := u.dropped
		u.mu.Unlock()
		u.log.Error("usage buffer full: event dropped", "request_id", ev.RequestID, "dropped_total", n)
	}
}

// Stats returns how many events were written and dropped so far.
func (u *UsageSink) Stats() (written, dropped int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.written, u.dropped
}

// WaitWritten blocks until at least n events were written or ctx ends.
func (u *UsageSink) WaitWritten(ctx context.Context, n int64) error {
	stop := context.AfterFunc(ctx, func() {
		u.mu.Lock()
		u.cond.Broadcast()
		u.mu.Unlock()
	})
	defer stop()
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.written < n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		u.cond.Wait()
	}
	return nil
}

// Run writes batches until ctx is done, then writes what is still queued
// (bounded by a short deadline) and returns.
func (u *UsageSink) Run(ctx context.Context) error {
	batch := make([]store.UsageEvent, 0, u.opts.BatchSize)
	tick := time.NewTicker(u.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case ev := <-u.ch:
			batch = append(batch, ev)
			if len(batch) < u.opts.BatchSize {
				continue
			}
		case <-tick.C:
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
		drain:
			for {
				select {
				case ev := <-u.ch:
					batch = append(batch, ev)
				default:
					break drain
				}
			}
			if len(batch) > 0 {
				u.flush(fctx, batch)
			}
			return nil
		}
		if len(batch) > 0 {
			u.flush(ctx, batch)
			batch = batch[:0]
		}
	}
}

func (u *UsageSink) flush(ctx context.Context, batch []store.UsageEvent) {
	for i := range batch {
		u.price(ctx, &batch[i])
	}
	backoff := 100 * time.Millisecond
	for {
		_, err := u.store.Usage().InsertEvents(ctx, batch)
		if err == nil {
			u.mu.Lock()
			u.written += int64(len(batch))
			u.cond.Broadcast()
			u.mu.Unlock()
			return
		}
		u.log.Error("writing usage events failed; retrying", "events", len(batch), "err", err)
		select {
		case <-ctx.Done():
			u.mu.Lock()
			u.dropped += int64(len(batch))
			u.mu.Unlock()
			u.log.Error("usage events dropped at shutdown", "events", len(batch))
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// price sets the event's cost from the rate card. An unpriced model still
// gets the family or provider default price, flagged; a lookup failure
// leaves the cost at zero with the default flag so the row is never lost.
func (u *UsageSink) price(ctx context.Context, ev *store.UsageEvent) {
	if ev.Kind == store.KindCountTokens {
		ev.PriceFlag = store.PriceNone
		return
	}
	p, flag, err := u.store.Prices().PriceAt(ctx, store.PriceQuery{Provider: ev.Provider, Region: ev.Region, Model: ev.RequestedModel, At: ev.EventTime})
	if err != nil {
		u.log.Warn("no price for usage event", "request_id", ev.RequestID, "model", ev.RequestedModel, "err", err)
		ev.PriceFlag = store.PriceDefault
		return
	}
	ev.PriceFlag = flag
	ev.CostUSD = Cost(p.PriceRates, ev)
}

// Cost is the exact cost of an event's tokens at rates given per million
// tokens, rounded to 6 decimal places.
func Cost(r store.PriceRates, ev *store.UsageEvent) decimal.Decimal {
	million := decimal.NewFromInt(1_000_000)
	sum := r.Input.Mul(decimal.NewFromInt(ev.InputTokens)).
		Add(r.Output.Mul(decimal.NewFromInt(ev.OutputTokens))).
		Add(r.CacheRead.Mul(decimal.NewFromInt(ev.CacheReadTokens))).
		Add(r.CacheWrite5m.Mul(decimal.NewFromInt(ev.CacheWrite5mTokens))).
		Add(r.CacheWrite1h.Mul(decimal.NewFromInt(ev.CacheWrite1hTokens)))
	return sum.Div(million).Round(6)
}

func toStoreEvent(ev usage.Event) store.UsageEvent {
	out := store.UsageEvent{
		RequestID:          ev.RequestID,
		EventTime:          ev.Time.UTC(),
		UserID:             ev.UserID,
		AccessKeyID:        ev.KeyID,
		SessionID:          ev.SessionID,
		AgentID:            ev.AgentID,
		ClientVersion:      ev.ClientVersion,
		Kind:               store.RequestKind(ev.PathKind),
		RequestedModel:     ev.Model,
		BedrockModelID:     ev.BackendModel,
		Provider:           store.Provider(ev.Provider),
		Region:             ev.Region,
		Fallback:           ev.Fallback,
		FallbackReason:     ev.FallbackReason,
		Stream:             ev.Stream,
		Status:             ev.Status,
		InputTokens:        ev.Usage.InputTokens,
		OutputTokens:       ev.Usage.OutputTokens,
		CacheReadTokens:    ev.Usage.CacheReadInputTokens,
		CacheWrite5mTokens: ev.Usage.CacheWrite5mInputTokens,
		CacheWrite1hTokens: ev.Usage.CacheWrite1hInputTokens,
		LatencyMs:          int(ev.Latency.Milliseconds()),
		Aborted:            ev.Aborted,
	}
	if ev.TTFT > 0 {
		ms := int(ev.TTFT.Milliseconds())
		out.TTFTMs = &ms
	}
	return out
}
