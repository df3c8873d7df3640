package notifications

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/breakerkeys"
	"github.com/ccproxy/ccproxy/internal/store"
)

// BreakerWatcher emits TypeBreakerOpened when a developer's Plan circuit
// breaker has stayed open longer than a threshold.
//
// Why here and not in extproc: the breaker's state is already shared in
// Redis (internal/breakerkeys: one open hash per open or half-open
// breaker, field "until" in Unix milliseconds), extproc has no
// database to write the outbox to, and watching from the request path
// would add work to every Plan request. The admin service reads that state
// every Interval with SCAN, which only ever sees the few keys whose breaker
// is not closed, and costs the request path nothing.
//
// An open period is the time the hash exists without interruption (open,
// then half-open while probing, perhaps open again after a failed probe).
// The watcher remembers when it first saw each period in Redis
// ("<prefix>notify:breaker:{<key id>}:since", SET NX, so every replica
// agrees on it) and fires once the breaker has been, or is announced to be,
// open for Threshold: max(now, until) − since ≥ Threshold. A Plan 429 whose
// reset is hours away therefore notifies at the first scan. The event's
// dedupe key is the key id and the period's start, so replicas and repeated
// scans send one event per period.
type BreakerWatcher struct {
	Store     *store.Store
	Redis     redis.UniversalClient
	Prefix    string
	Threshold time.Duration
	// Interval between scans (default 30 s).
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	// OnEnqueue, when set, is called after an event was queued (to wake
	// the dispatcher).
	OnEnqueue func()
}

// Run scans until ctx ends.
func (w *BreakerWatcher) Run(ctx context.Context) error {
	iv := w.Interval
	if iv <= 0 {
		iv = 30 * time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		if err := w.Scan(ctx); err != nil && ctx.Err() == nil && w.Logger != nil {
			w.Logger.LogAttrs(ctx, slog.LevelWarn, "breaker watch failed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Scan looks at every breaker once and queues the events that are due.
func (w *BreakerWatcher) Scan(ctx context.Context) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	keys, err := w.scanKeys(ctx, breakerkeys.OpenPattern(w.Prefix))
	if err != nil {
		return err
	}
	// A period ends when the breaker's hash goes: forget its start, so
	// that the next period is a new one.
	sinceKeys, err := w.scanKeys(ctx, w.Prefix+"notify:breaker:{*}:since")
	if err != nil {
		return err
	}
	for _, sk := range sinceKeys {
		id, err := uuid.Parse(strings.TrimSuffix(strings.TrimPrefix(sk, w.Prefix+"notify:breaker:{"), "}:since"))
		if err != nil {
			continue
		}
		if n, err := w.Redis.Exists(ctx, breakerkeys.Open(w.Prefix, id)).Result(); err == nil && n == 0 {
			_ = w.Redis.Del(ctx, sk).Err()
		}
	}
	var errs []error
	for _, k := range keys {
		if err := w.check(ctx, k, now()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// scanKeys returns the keys matching pattern, on every master of a
// cluster.
func (w *BreakerWatcher) scanKeys(ctx context.Context, pattern string) ([]string, error) {
	var keys []string
	var err error
	switch c := w.Redis.(type) {
	case *redis.ClusterClient:
		// The callbacks run concurrently.
		var mu sync.Mutex
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			var ks []string
			it := m.Scan(ctx, 0, pattern, 500).Iterator()
			for it.Next(ctx) {
				ks = append(ks, it.Val())
			}
			mu.Lock()
			keys = append(keys, ks...)
			mu.Unlock()
			return it.Err()
		})
	case *redis.Client:
		it := c.Scan(ctx, 0, pattern, 500).Iterator()
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		err = it.Err()
	default:
		return nil, errors.New("notifications: breaker watch needs a *redis.Client or *redis.ClusterClient")
	}
	if err != nil {
		return nil, fmt.Errorf("notifications: scan breakers: %w", err)
	}
	return keys, nil
}

func (w *BreakerWatcher) check(ctx context.Context, openKey string, now time.Time) error {
	keyID, ok := breakerkeys.ParseOpen(w.Prefix, openKey)
	if !ok {
		return nil
	}
	untilText, err := w.Redis.HGet(ctx, openKey, breakerkeys.UntilField).Result()
	if errors.Is(err, redis.Nil) {
		return nil // closed since the scan
	}
	if err != nil {
		return fmt.Errorf("notifications: read breaker %s: %w", keyID, err)
	}
	untilMs, err := strconv.ParseInt(untilText, 10, 64)
	if err != nil {
		return nil
	}
	until := time.UnixMilli(untilMs)
	// The period's start, shared by the replicas; it lives as long as the
	// breaker's hash could (until, plus a margin), and is refreshed on
	// every scan that still sees the breaker.
	sinceKey := w.Prefix + "notify:breaker:{" + keyID.String() + "}:since"
	ttl := max(until.Sub(now), 0) + 2*max(w.Interval, 30*time.Second) + time.Hour
	if err := w.Redis.SetNX(ctx, sinceKey, now.UnixMilli(), ttl).Err(); err != nil {
		return fmt.Errorf("notifications: breaker %s: %w", keyID, err)
	}
	sinceText, err := w.Redis.Get(ctx, sinceKey).Result()
	if err != nil {
		return fmt.Errorf("notifications: breaker %s: %w", keyID, err)
	}
	_ = w.Redis.Expire(ctx, sinceKey, ttl).Err()
	sinceMs, err := strconv.ParseInt(sinceText, 10, 64)
	if err != nil {
		return nil
	}
	since := time.UnixMilli(sinceMs)
	end := now
	if until.After(end) {
		end = until
	}
	if end.Sub(since) < w.Threshold {
		return nil
	}
	data := map[string]any{
		"access_key_id":     keyID.String(),
		"open_since":        since.UTC(),
		"open_until":        until.UTC(),
		"threshold_minutes": int(w.Threshold / time.Minute),
	}
	summary := "Plan breaker open for access key " + keyID.String()
	if k, err := w.Store.AccessKeys().Get(ctx, keyID); err == nil {
		data["user_id"] = k.UserID.String()
		data["key_name"] = k.Name
		data["key_prefix"] = k.Prefix
		if u, err := w.Store.Users().Get(ctx, k.UserID); err == nil {
			data["user_name"] = u.Name
			summary = fmt.Sprintf("Plan breaker of %s (key %s) open since %s, until %s: requests go to Bedrock or are refused",
				u.Name, k.Prefix, since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
		}
	}
	_, queued, err := Enqueue(ctx, w.Store, Event{
		Type: TypeBreakerOpened, Summary: summary, Data: data, OccurredAt: since,
		DedupeKey: TypeBreakerOpened + ":" + keyID.String() + ":" + strconv.FormatInt(sinceMs, 10),
	})
	if err != nil {
		return err
	}
	if queued && w.OnEnqueue != nil {
		w.OnEnqueue()
	}
	return nil
}
