package notifications

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
)

// Backoff spaces the attempts of a delivery: after the n-th failed attempt
// the next one waits a delay drawn uniformly from [d/2, d], where d is
// Base·2^(n−1) capped at Max ("equal jitter": the wait still grows, and
// receivers coming back up are not hit by every sender at the same
// instant).
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Delay returns the wait after failed attempt n (1 for the first), with r a
// uniform random number in [0, 1).
func (b Backoff) Delay(n int, r float64) time.Duration {
	d := b.Max
	if n < 1 {
		n = 1
	}
	// Base·2^(n−1) without overflow: stop doubling at the cap.
	if n <= 62 {
		if x := b.Base << (n - 1); x > 0 && x>>(n-1) == b.Base && x < b.Max {
			d = x
		}
	}
	half := d / 2
	return half + time.Duration(r*float64(d-half))
}

// Defaults of DispatcherOptions.
const (
	DefaultPollInterval = time.Second
	DefaultTimeout      = 10 * time.Second
	DefaultMaxAttempts  = 15
	DefaultBackoffBase  = 10 * time.Second
	DefaultBackoffMax   = time.Hour
	DefaultRetention    = 30 * 24 * time.Hour
	defaultBatch        = 16
	// maxErrorLen bounds the error text kept per attempt.
	maxErrorLen = 500
	// maxResponseRead bounds what is read (and discarded) of an answer,
	// so the connection can be reused.
	maxResponseRead = 64 << 10
)

// DispatcherOptions configures a Dispatcher.
type DispatcherOptions struct {
	// Store and Sealer are required: the outbox, and the key the signing
	// secrets are sealed with.
	Store  *store.Store
	Sealer secrets.Sealer
	// Client sends the requests; nil builds NewHTTPClient(Timeout,
	// AllowPrivateTargets).
	Client *http.Client
	// Timeout bounds one attempt (default DefaultTimeout).
	Timeout time.Duration
	// AllowPrivateTargets lets webhooks reach loopback, private and
	// link-local addresses (a receiver inside the company network).
	AllowPrivateTargets bool
	// PollInterval is how often an idle dispatcher looks for due
	// deliveries (default DefaultPollInterval).
	PollInterval time.Duration
	// Backoff spaces retries (default DefaultBackoffBase, DefaultBackoffMax).
	Backoff Backoff
	// MaxAttempts is how many attempts a delivery gets before it fails
	// (default DefaultMaxAttempts).
	MaxAttempts int
	// Retention is how long finished deliveries and their events are kept
	// (default DefaultRetention).
	Retention time.Duration
	// Now is the clock (default time.Now); Rand draws the jitter (default
	// math/rand/v2's Float64).
	Now  func() time.Time
	Rand func() float64
	// Logger receives the dispatcher's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives its metrics; nil keeps them private.
	Registerer prometheus.Registerer
}

// Dispatcher delivers the outbox's pending deliveries. Run it in every
// admin replica; they share the work through row locks.
type Dispatcher struct {
	o        DispatcherOptions
	client   *http.Client
	log      *slog.Logger
	attempts *prometheus.CounterVec
	wake     chan struct{}
}

// NewDispatcher returns a Dispatcher for o.
func NewDispatcher(o DispatcherOptions) (*Dispatcher, error) {
	if o.Store == nil || o.Sealer == nil {
		return nil, errors.New("notifications: DispatcherOptions.Store and Sealer are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Backoff.Base <= 0 {
		o.Backoff.Base = DefaultBackoffBase
	}
	if o.Backoff.Max < o.Backoff.Base {
		o.Backoff.Max = max(DefaultBackoffMax, o.Backoff.Base)
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	d := &Dispatcher{o: o, client: o.Client, log: o.Logger, wake: make(chan struct{}, 1)}
	if d.client == nil {
		d.client = NewHTTPClient(o.Timeout, o.AllowPrivateTargets)
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_webhook_attempts_total",
		Help: "Webhook delivery attempts by result (delivered, retry, failed).",
	}, []string{"result"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(d.attempts); err != nil {
			return nil, fmt.Errorf("notifications: register metrics: %w", err)
		}
	}
	return d, nil
}

// Run delivers until ctx ends: it claims what is due, sends it, and waits
// PollInterval when nothing was due. Database errors are logged and
// retried; Run returns nil when ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	lastPrune := time.Time{}
	for {
		n, err := d.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.LogAttrs(ctx, slog.LevelWarn, "webhook dispatch failed", slog.String("error", err.Error()))
		}
		if now := d.o.Now(); now.Sub(lastPrune) > time.Hour {
			lastPrune = now
			if pruned, err := d.o.Store.Notifications().PruneEvents(ctx, now.Add(-d.o.Retention)); err != nil && ctx.Err() == nil {
				d.log.LogAttrs(ctx, slog.LevelWarn, "webhook outbox pruning failed", slog.String("error", err.Error()))
			} else if pruned > 0 {
				d.log.LogAttrs(ctx, slog.LevelInfo, "webhook outbox pruned", slog.Int64("events", pruned))
			}
		}
		if n > 0 && err == nil {
			continue // more may be due
		}
		t := time.NewTimer(d.o.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-d.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Wake makes a waiting Run look for due deliveries at once (after an
// event was enqueued in this process).
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// RunOnce claims one batch of due deliveries, sends them concurrently and
// records the outcomes. It returns how many it claimed.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	now := d.o.Now()
	// The lease outlasts an attempt (timeout) with room for recording it.
	lease := now.Add(d.o.Timeout + 30*time.Second)
	due, err := d.o.Store.Notifications().ClaimDue(ctx, now, lease, defaultBatch)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(due))
	for i := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.deliver(ctx, due[i])
		}()
	}
	wg.Wait()
	return len(due), errors.Join(errs...)
}

// deliver makes one attempt and records it.
func (d *Dispatcher) deliver(ctx context.Context, dd store.DueDelivery) error {
	attempt := dd.Attempts + 1
	start := d.o.Now()
	code, retryAfter, err := d.send(ctx, dd, attempt, start)
	end := d.o.Now()
	if err != nil && ctx.Err() != nil {
		// Shutting down: not the receiver's failure. Hand the delivery
		// back, due now, for another replica (or the next start); if the
		// receiver did get it, the event id lets it drop the repeat.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return d.o.Store.Notifications().Release(rctx, dd.DeliveryID, end)
	}
	a := store.DeliveryAttempt{At: start, StatusCode: code, Duration: end.Sub(start)}
	delivered := err == nil
	var next *time.Time
	result := "delivered"
	if !delivered {
		a.Error = truncate(err.Error(), maxErrorLen)
		result = "failed"
		if attempt < d.o.MaxAttempts {
			wait := d.o.Backoff.Delay(attempt, d.o.Rand())
			if retryAfter > wait {
				wait = min(retryAfter, d.o.Backoff.Max)
			}
			t := end.Add(wait)
			next = &t
			result = "retry"
		}
	}
	d.attempts.WithLabelValues(result).Inc()
	// The host only: a webhook URL's path may itself be a credential
	// (Slack's are).
	d.log.LogAttrs(ctx, slog.LevelInfo, "webhook attempt",
		slog.String("webhook_id", dd.Webhook.ID.String()), slog.String("host", hostOf(dd.Webhook.URL)),
		slog.String("event_id", dd.Event.ID.String()), slog.String("event_type", dd.Event.Type),
		slog.Int("attempt", attempt), slog.Int("status", code), slog.String("result", result),
		slog.String("error", a.Error))
	// Recorded even when ctx ended: the attempt happened.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return d.o.Store.Notifications().RecordAttempt(rctx, dd.DeliveryID, a, delivered, next)
}

// send posts the event; it returns the answer's status (0 without one),
// the Retry-After it asked for, and nil only for a 2xx.
func (d *Dispatcher) send(ctx context.Context, dd store.DueDelivery, attempt int, now time.Time) (int, time.Duration, error) {
	secret, err := d.o.Sealer.Open(ctx, dd.Webhook.SecretCiphertext, SecretAAD(dd.Webhook.ID))
	if err != nil {
		return 0, 0, fmt.Errorf("open the signing secret: %w", err)
	}
	body, err := Body(dd.Webhook.Format, dd.Event)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dd.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("invalid webhook URL")
	}
	id := dd.Event.ID.String()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ccproxy-webhooks/1")
	req.Header.Set(HeaderEventID, id)
	req.Header.Set(HeaderIdempotencyKey, id)
	req.Header.Set(HeaderEventType, dd.Event.Type)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(string(secret), now, body))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, 0, errors.New(describe(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	var ra time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
		ra = time.Duration(min(s, 86400)) * time.Second
	}
	return resp.StatusCode, ra, fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
}

// describe is an error without the URL that net/http puts in front of it
// (the path may be a credential).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, ErrRefusedTarget) {
		return "refused: the webhook's address is not public (CCPROXY_WEBHOOK_ALLOW_PRIVATE allows it)"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// genericBody is the JSON a generic webhook receives.
type genericBody struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	OccurredAt time.Time       `json:"occurred_at"`
	Summary    string          `json:"summary"`
	Data       json.RawMessage `json:"data"`
}

// Body returns the request body of ev in format f: for generic, {"id",
// "type", "occurred_at", "summary", "data"}; for slack, {"text"} with the
// summary (and the type when there is no summary).
func Body(f store.WebhookFormat, ev store.NotificationEvent) ([]byte, error) {
	if f == store.WebhookSlack {
		text := ev.Summary
		if text == "" {
			text = ev.Type
		}
		return json.Marshal(map[string]string{"text": "ccproxy: " + text})
	}
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return json.Marshal(genericBody{ID: ev.ID.String(), Type: ev.Type, OccurredAt: ev.OccurredAt.UTC(), Summary: ev.Summary, Data: data})
}
