// Package notifications owns the admin service's webhook notifications: the
// typed events (Event, Enqueue), the durable outbox they are written to
// (store.Notifications, in Postgres), and the Dispatcher that delivers them
// to the webhooks admins configure, at least once, signed, with retries.
//
// # Producing events
//
// A producer calls Enqueue with the transaction of the change that causes
// the event (an access key issued or revoked: admin), so that the event
// commits exactly when the change does, or with the store itself when the
// fact comes from elsewhere (a usage event showing Bedrock refusing a
// credential: admin/ingest; a Plan breaker open for a long time: the
// BreakerWatcher). Facts that may be seen several times carry a DedupeKey;
// the outbox keeps the first event with a key and drops the others.
// Enqueue fans the event out at once into one pending delivery per enabled
// webhook whose filter takes the event's type.
//
// # Delivering
//
// The Dispatcher runs in every admin replica. It claims due deliveries with
// SELECT … FOR UPDATE SKIP LOCKED and moves their next attempt forward by a
// lease before sending, so replicas never send the same delivery at once
// and a replica dying mid-attempt hands it over when the lease ends. Each
// attempt is a POST with a timeout, no proxy, no redirect to another host,
// and a dial that refuses loopback, private, link-local and other
// non-public addresses (checked on the address actually dialled, after DNS,
// so DNS rebinding cannot reach them) unless AllowPrivateTargets is set. A
// 2xx answer delivers; anything else is retried with exponential backoff
// and jitter (Backoff) until MaxAttempts, then the delivery fails. Every
// attempt is logged (store.DeliveryAttempt) and readable through the API.
//
// Every request carries the event id twice (X-Ccproxy-Event-Id and
// Idempotency-Key: a receiver deduplicates on it, since a delivery whose
// answer was lost is sent again), the event type, the attempt number, a
// timestamp and an HMAC-SHA256 signature over "<timestamp>.<body>" with the
// webhook's secret (Sign, Verify; docs/webhooks.md shows the receiver's
// side).
package notifications

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Event types ccproxy emits. Producers may use other types (Enqueue takes
// any non-empty type of at most 100 characters); webhooks filter on them.
const (
	// TypeKeyCreated: an access key was issued (or rotated: the new key).
	TypeKeyCreated = "key.created"
	// TypeKeyRevoked: an access key was revoked.
	TypeKeyRevoked = "key.revoked"
	// TypeCredentialRefused: AWS Bedrock refused the gateway's Bedrock
	// credential of a user or key (at most one event per credential per
	// hour).
	TypeCredentialRefused = "credential.refused"
	// TypeBreakerOpened: a developer's Plan circuit breaker has been open
	// (Plan rate-limited or failing, requests on Bedrock or refused) for
	// longer than the configured threshold (one event per open period).
	TypeBreakerOpened = "breaker.opened"
	// TypeBudgetThreshold: a budget crossed one of its thresholds (once
	// per threshold and budget window); emitted by the budget code.
	TypeBudgetThreshold = "budget.threshold"
	// TypeTest: sent by POST /webhooks/{id}/test, to that webhook only.
	TypeTest = "webhook.test"
)

// Types lists the event types ccproxy emits, for the API's validation
// of webhook filters.
var Types = []string{TypeKeyCreated, TypeKeyRevoked, TypeCredentialRefused, TypeBreakerOpened, TypeBudgetThreshold, TypeTest}

// KnownType reports whether t is one of Types.
func KnownType(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Event is a notification to enqueue.
type Event struct {
	// Type is the event type, e.g. TypeBudgetThreshold. Required.
	Type string
	// Summary is one human-readable line (the Slack text), e.g. `User
	// "alice" reached 80 % of her daily budget ($8.00 of $10.00)`.
	Summary string
	// Data is the event's payload: anything that marshals to a JSON
	// object (a struct or a map). Nil sends {}.
	Data any
	// DedupeKey, when set, makes Enqueue a no-op for a second event with
	// the same key, whoever enqueues it: e.g.
	// "budget.threshold:<budget id>:<window start>:80".
	DedupeKey string
	// OccurredAt is when the fact happened; zero means now.
	OccurredAt time.Time
}

// Enqueuer is what Enqueue writes through: *store.Queries, inside
// Store.WithTx to commit the event with the change that causes it, or a
// *store.Store (its embedded Queries) on its own.
type Enqueuer interface {
	Notifications() store.Notifications
}

// Enqueue writes ev to the outbox, with a pending delivery for every
// enabled webhook that wants its type, and returns the event id. queued is
// false, and nothing is written, when an event with ev.DedupeKey exists.
//
// The budget code connects like this, in the transaction that records the
// crossing (or on the store):
//
//	err := st.WithTx(ctx, func(tx *store.Queries) error {
//		// … record the threshold crossing …
//		_, _, err := notifications.Enqueue(ctx, tx, notifications.Event{
//			Type:      notifications.TypeBudgetThreshold,
//			Summary:   `Team "platform" reached 80 % of its monthly budget`,
//			Data:      map[string]any{"scope": "team", "scope_id": id, "threshold_percent": 80, …},
//			DedupeKey: "budget.threshold:" + budgetID + ":" + windowStart + ":80",
//		})
//		return err
//	})
func Enqueue(ctx context.Context, q Enqueuer, ev Event) (id uuid.UUID, queued bool, err error) {
	return enqueue(ctx, q, ev, nil)
}

// EnqueueTo is Enqueue with one delivery, to webhook only, whatever its
// event filter (the API's test event).
func EnqueueTo(ctx context.Context, q Enqueuer, ev Event, webhook uuid.UUID) (id uuid.UUID, queued bool, err error) {
	return enqueue(ctx, q, ev, &webhook)
}

func enqueue(ctx context.Context, q Enqueuer, ev Event, only *uuid.UUID) (id uuid.UUID, queued bool, err error) {
	if ev.Type == "" || len(ev.Type) > 100 {
		return uuid.Nil, false, fmt.Errorf("notifications: event type must be 1 to 100 characters, got %d", len(ev.Type))
	}
	data := []byte("{}")
	if ev.Data != nil {
		if data, err = json.Marshal(ev.Data); err != nil {
			return uuid.Nil, false, fmt.Errorf("notifications: marshal %s data: %w", ev.Type, err)
		}
		if len(data) == 0 || data[0] != '{' {
			return uuid.Nil, false, fmt.Errorf("notifications: %s data must be a JSON object", ev.Type)
		}
	}
	now := time.Now()
	at := ev.OccurredAt
	if at.IsZero() {
		at = now
	}
	id, err = uuid.NewV7()
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("notifications: event id: %w", err)
	}
	sev := store.NotificationEvent{ID: id, Type: ev.Type, DedupeKey: ev.DedupeKey, OccurredAt: at.UTC(), Summary: ev.Summary, Data: data}
	if only != nil {
		queued, err = q.Notifications().EnqueueTo(ctx, sev, now, *only)
	} else {
		queued, err = q.Notifications().Enqueue(ctx, sev, now)
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("notifications: enqueue %s: %w", ev.Type, err)
	}
	return id, queued, nil
}

// SecretAAD is the associated data a webhook's signing secret is sealed
// with (secrets.Sealer): the blob opens only for its own webhook.
func SecretAAD(webhookID uuid.UUID) []byte {
	return []byte("ccproxy/webhook-secret/" + webhookID.String())
}
