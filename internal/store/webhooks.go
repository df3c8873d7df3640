package store

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// WebhookFormat is the body a webhook receives.
type WebhookFormat string

// Webhook body formats.
const (
	// WebhookGeneric sends the notification event as JSON.
	WebhookGeneric WebhookFormat = "generic"
	// WebhookSlack sends a Slack-compatible {"text": …} body (Slack
	// incoming webhooks, and the many chat tools that accept the same).
	WebhookSlack WebhookFormat = "slack"
)

// Valid reports whether f is a known format.
func (f WebhookFormat) Valid() bool { return f == WebhookGeneric || f == WebhookSlack }

// Webhook is an endpoint notification events are delivered to.
type Webhook struct {
	ID     uuid.UUID
	Name   string
	URL    string
	Format WebhookFormat
	// SecretCiphertext is the signing secret sealed with
	// secrets.Sealer; the plaintext is never stored.
	SecretCiphertext []byte
	// EventTypes are the event types delivered; empty means all.
	EventTypes []string
	Enabled    bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// WebhookPatch is a partial update of a webhook.
type WebhookPatch struct {
	Name             Optional[string]
	URL              Optional[string]
	Format           Optional[WebhookFormat]
	SecretCiphertext Optional[[]byte]
	EventTypes       Optional[[]string]
	Enabled          Optional[bool]
}

// Webhooks is the webhook repository.
type Webhooks struct{ q *Queries }

// Webhooks returns the webhook repository.
func (q *Queries) Webhooks() Webhooks { return Webhooks{q} }

const webhookColumns = `id, name, url, format, secret_ciphertext, event_types, enabled, created_at, updated_at`

func scanWebhook(row pgx.Row) (Webhook, error) {
	var w Webhook
	err := row.Scan(&w.ID, &w.Name, &w.URL, &w.Format, &w.SecretCiphertext, &w.EventTypes, &w.Enabled, &w.CreatedAt, &w.UpdatedAt)
	if w.EventTypes == nil {
		w.EventTypes = []string{}
	}
	return w, err
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Create stores w (its ID chosen by the caller, since the sealed secret is
// bound to it) and returns it as stored.
func (r Webhooks) Create(ctx context.Context, w Webhook) (Webhook, error) {
	if !w.Format.Valid() {
		return Webhook{}, invalidf("webhook format %q", w.Format)
	}
	if w.ID == uuid.Nil || len(w.SecretCiphertext) == 0 {
		return Webhook{}, invalidf("webhook needs an id and a sealed secret")
	}
	out, err := scanWebhook(r.q.db.QueryRow(ctx, `
		INSERT INTO webhooks (id, name, url, format, secret_ciphertext, event_types, enabled)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+webhookColumns,
		w.ID, w.Name, w.URL, w.Format, w.SecretCiphertext, nonNilStrings(w.EventTypes), w.Enabled))
	return out, mapErr("store: create webhook", err)
}

// Get returns one webhook.
func (r Webhooks) Get(ctx context.Context, id uuid.UUID) (Webhook, error) {
	w, err := scanWebhook(r.q.db.QueryRow(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1`, id))
	return w, mapErr("store: get webhook", err)
}

// List returns every webhook, oldest first (a company has a handful).
func (r Webhooks) List(ctx context.Context) ([]Webhook, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, mapErr("store: list webhooks", err)
	}
	ws, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Webhook, error) { return scanWebhook(row) })
	return ws, mapErr("store: list webhooks", err)
}

// Update applies p and returns the webhook as stored.
func (r Webhooks) Update(ctx context.Context, id uuid.UUID, p WebhookPatch) (Webhook, error) {
	var s setList
	if p.Name.Set {
		s.add("name", p.Name.Value)
	}
	if p.URL.Set {
		s.add("url", p.URL.Value)
	}
	if p.Format.Set {
		if !p.Format.Value.Valid() {
			return Webhook{}, invalidf("webhook format %q", p.Format.Value)
		}
		s.add("format", p.Format.Value)
	}
	if p.SecretCiphertext.Set {
		s.add("secret_ciphertext", p.SecretCiphertext.Value)
	}
	if p.EventTypes.Set {
		s.add("event_types", nonNilStrings(p.EventTypes.Value))
	}
	if p.Enabled.Set {
		s.add("enabled", p.Enabled.Value)
	}
	if len(s.sets) == 0 {
		return r.Get(ctx, id)
	}
	s.args = append(s.args, id)
	w, err := scanWebhook(r.q.db.QueryRow(ctx, `UPDATE webhooks SET `+strings.Join(s.sets, ", ")+`, updated_at = now()
		WHERE id = $`+strconv.Itoa(len(s.args))+` RETURNING `+webhookColumns, s.args...))
	return w, mapErr("store: update webhook", err)
}

// Delete removes a webhook with its deliveries.
func (r Webhooks) Delete(ctx context.Context, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
	if err != nil {
		return mapErr("store: delete webhook", err)
	}
	if tag.RowsAffected() == 0 {
		return mapErr("store: delete webhook", pgx.ErrNoRows)
	}
	return nil
}

// NotificationEvent is one entry of the notification outbox.
type NotificationEvent struct {
	ID   uuid.UUID
	Type string
	// DedupeKey, when set, makes a second event with the same key a no-op.
	DedupeKey  string
	OccurredAt time.Time
	// Summary is one line for people.
	Summary string
	// Data is the event's JSON object.
	Data json.RawMessage
}

// DeliveryStatus is the state of a webhook delivery.
type DeliveryStatus string

// Delivery states.
const (
	DeliveryPending   DeliveryStatus = "pending"
	DeliveryDelivered DeliveryStatus = "delivered"
	DeliveryFailed    DeliveryStatus = "failed"
)

// Valid reports whether s is a known state.
func (s DeliveryStatus) Valid() bool {
	return s == DeliveryPending || s == DeliveryDelivered || s == DeliveryFailed
}

// Delivery is one event to one webhook: the delivery log's row.
type Delivery struct {
	ID             uuid.UUID
	EventID        uuid.UUID
	EventType      string
	WebhookID      uuid.UUID
	Status         DeliveryStatus
	Attempts       int
	NextAttemptAt  *time.Time // pending only
	LastAttemptAt  *time.Time
	LastStatusCode *int
	LastError      string
	DeliveredAt    *time.Time
	CreatedAt      time.Time
}

// DeliveryAttempt is one try of a delivery.
type DeliveryAttempt struct {
	At time.Time
	// StatusCode is the receiver's HTTP status, 0 when none came.
	StatusCode int
	Error      string
	Duration   time.Duration
}

// DueDelivery is a claimed delivery with what sending it needs.
type DueDelivery struct {
	DeliveryID uuid.UUID
	// Attempts made before this one.
	Attempts int
	Event    NotificationEvent
	Webhook  Webhook
}

// Notifications is the notification outbox and webhook delivery
// repository.
type Notifications struct{ q *Queries }

// Notifications returns the outbox repository.
func (q *Queries) Notifications() Notifications { return Notifications{q} }

// Enqueue writes ev to the outbox with a pending delivery, due at once,
// for every enabled webhook whose filter takes ev.Type. Run it in the
// transaction of the change that causes the event, so that neither commits
// without the other. It returns false, writing nothing, when an event with
// ev.DedupeKey already exists.
func (r Notifications) Enqueue(ctx context.Context, ev NotificationEvent, now time.Time) (bool, error) {
	return r.enqueue(ctx, ev, now, nil)
}

// EnqueueTo writes ev to the outbox with one pending delivery, due at
// once, to webhook only, whatever its filter (a test event an admin asked
// for). A disabled webhook's delivery waits until it is enabled.
func (r Notifications) EnqueueTo(ctx context.Context, ev NotificationEvent, now time.Time, webhook uuid.UUID) (bool, error) {
	return r.enqueue(ctx, ev, now, &webhook)
}

func (r Notifications) enqueue(ctx context.Context, ev NotificationEvent, now time.Time, only *uuid.UUID) (bool, error) {
	if ev.ID == uuid.Nil || ev.Type == "" || ev.OccurredAt.IsZero() {
		return false, invalidf("notification event needs an id, a type and a time")
	}
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	var dedupe *string
	if ev.DedupeKey != "" {
		dedupe = &ev.DedupeKey
	}
	queued := false
	err := r.q.tx(ctx, func(q *Queries) error {
		var id uuid.UUID
		err := q.db.QueryRow(ctx, `INSERT INTO notification_events (id, type, dedupe_key, occurred_at, summary, data)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
			ev.ID, ev.Type, dedupe, ev.OccurredAt, ev.Summary, string(data)).Scan(&id)
		if err == pgx.ErrNoRows {
			return nil
		}
		if err != nil {
			return err
		}
		queued = true
		if only != nil {
			_, err = q.db.Exec(ctx, `INSERT INTO webhook_deliveries (event_id, webhook_id, next_attempt_at)
				VALUES ($1, $2, $3)`, ev.ID, *only, now)
			return err
		}
		_, err = q.db.Exec(ctx, `INSERT INTO webhook_deliveries (event_id, webhook_id, next_attempt_at)
			SELECT $1, id, $3 FROM webhooks
			WHERE enabled AND (cardinality(event_types) = 0 OR $2 = ANY(event_types))`, ev.ID, ev.Type, now)
		return err
	})
	return queued, mapErr("store: enqueue notification", err)
}

// ClaimDue takes up to limit pending deliveries due at now, of enabled
// webhooks, oldest first, and moves their next attempt to leaseUntil: a
// replica that dies mid-attempt hands them to the others then. Rows another
// replica is claiming at the same moment are skipped (FOR UPDATE SKIP
// LOCKED), so replicas never claim the same delivery twice.
func (r Notifications) ClaimDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]DueDelivery, error) {
	rows, err := r.q.db.Query(ctx, `
		WITH due AS (
			SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
			WHERE d.status = 'pending' AND d.next_attempt_at <= $1
			ORDER BY d.next_attempt_at LIMIT $3
			FOR UPDATE OF d SKIP LOCKED)
		UPDATE webhook_deliveries d SET next_attempt_at = $2
		FROM due, notification_events e, webhooks w
		WHERE d.id = due.id AND e.id = d.event_id AND w.id = d.webhook_id
		RETURNING d.id, d.attempts, e.id, e.type, coalesce(e.dedupe_key, ''), e.occurred_at, e.summary, e.data,
			w.id, w.name, w.url, w.format, w.secret_ciphertext, w.event_types, w.enabled, w.created_at, w.updated_at`,
		now, leaseUntil, limit)
	if err != nil {
		return nil, mapErr("store: claim deliveries", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DueDelivery, error) {
		var d DueDelivery
		var data []byte
		w := &d.Webhook
		err := row.Scan(&d.DeliveryID, &d.Attempts, &d.Event.ID, &d.Event.Type, &d.Event.DedupeKey, &d.Event.OccurredAt, &d.Event.Summary, &data,
			&w.ID, &w.Name, &w.URL, &w.Format, &w.SecretCiphertext, &w.EventTypes, &w.Enabled, &w.CreatedAt, &w.UpdatedAt)
		d.Event.Data = data
		return d, err
	})
	return out, mapErr("store: claim deliveries", err)
}

// RecordAttempt logs an attempt of a delivery and moves it on: delivered,
// pending again until next, or failed for good when next is nil and it was
// not delivered.
func (r Notifications) RecordAttempt(ctx context.Context, deliveryID uuid.UUID, a DeliveryAttempt, delivered bool, next *time.Time) error {
	status := DeliveryFailed
	switch {
	case delivered:
		status = DeliveryDelivered
	case next != nil:
		status = DeliveryPending
	}
	err := r.q.tx(ctx, func(q *Queries) error {
		if _, err := q.db.Exec(ctx, `INSERT INTO webhook_delivery_attempts (delivery_id, at, status_code, error, duration_ms)
			VALUES ($1, $2, $3, $4, $5)`, deliveryID, a.At, a.StatusCode, a.Error, max(a.Duration.Milliseconds(), 0)); err != nil {
			return err
		}
		nextAt := a.At
		if next != nil {
			nextAt = *next
		}
		var code *int
		if a.StatusCode != 0 {
			code = &a.StatusCode
		}
		var deliveredAt *time.Time
		if delivered {
			deliveredAt = &a.At
		}
		tag, err := q.db.Exec(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2,
			next_attempt_at = $3, last_attempt_at = $4, last_status_code = $5, last_error = $6, delivered_at = $7
			WHERE id = $1`, deliveryID, status, nextAt, a.At, code, a.Error, deliveredAt)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return nil
	})
	return mapErr("store: record delivery attempt", err)
}

// Release hands a claimed delivery back, due at at, without counting an
// attempt: a dispatcher shutting down mid-attempt lets another replica
// take it at once instead of after the lease.
func (r Notifications) Release(ctx context.Context, deliveryID uuid.UUID, at time.Time) error {
	_, err := r.q.db.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1 AND status = 'pending'`, deliveryID, at)
	return mapErr("store: release delivery", err)
}

const deliveryColumns = `d.id, d.event_id, e.type, d.webhook_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
	d.last_status_code, d.last_error, d.delivered_at, d.created_at`

func scanDelivery(row pgx.Row) (Delivery, error) {
	var d Delivery
	var next time.Time
	err := row.Scan(&d.ID, &d.EventID, &d.EventType, &d.WebhookID, &d.Status, &d.Attempts, &next, &d.LastAttemptAt,
		&d.LastStatusCode, &d.LastError, &d.DeliveredAt, &d.CreatedAt)
	if d.Status == DeliveryPending {
		d.NextAttemptAt = &next
	}
	return d, err
}

// ListDeliveries returns a page of a webhook's deliveries, newest first,
// optionally of one status, and the cursor of the next page.
func (r Notifications) ListDeliveries(ctx context.Context, webhookID uuid.UUID, status DeliveryStatus, limit int, cursor string) ([]Delivery, string, error) {
	limit = pageSize(limit)
	if status != "" && !status.Valid() {
		return nil, "", invalidf("delivery status %q", status)
	}
	args := []any{webhookID, limit + 1}
	where := "d.webhook_id = $1"
	if status != "" {
		args = append(args, status)
		where += " AND d.status = $" + strconv.Itoa(len(args))
	}
	if cursor != "" {
		t, id, err := decodeUUIDCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		args = append(args, t, id)
		where += " AND (d.created_at, d.id) < ($" + strconv.Itoa(len(args)-1) + ", $" + strconv.Itoa(len(args)) + ")"
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		JOIN notification_events e ON e.id = d.event_id
		WHERE `+where+` ORDER BY d.created_at DESC, d.id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, "", mapErr("store: list deliveries", err)
	}
	ds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Delivery, error) { return scanDelivery(row) })
	if err != nil {
		return nil, "", mapErr("store: list deliveries", err)
	}
	next := ""
	if len(ds) > limit {
		ds = ds[:limit]
		next = encodeCursor(ds[limit-1].CreatedAt, ds[limit-1].ID.String())
	}
	return ds, next, nil
}

// GetDelivery returns one delivery of a webhook with its attempts, oldest
// first.
func (r Notifications) GetDelivery(ctx context.Context, webhookID, deliveryID uuid.UUID) (Delivery, []DeliveryAttempt, error) {
	d, err := scanDelivery(r.q.db.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		JOIN notification_events e ON e.id = d.event_id WHERE d.id = $1 AND d.webhook_id = $2`, deliveryID, webhookID))
	if err != nil {
		return Delivery{}, nil, mapErr("store: get delivery", err)
	}
	rows, err := r.q.db.Query(ctx, `SELECT at, status_code, error, duration_ms FROM webhook_delivery_attempts
		WHERE delivery_id = $1 ORDER BY id`, deliveryID)
	if err != nil {
		return Delivery{}, nil, mapErr("store: get delivery", err)
	}
	as, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeliveryAttempt, error) {
		var a DeliveryAttempt
		var ms int32
		err := row.Scan(&a.At, &a.StatusCode, &a.Error, &ms)
		a.Duration = time.Duration(ms) * time.Millisecond
		return a, err
	})
	return d, as, mapErr("store: get delivery", err)
}

// PruneEvents deletes outbox events created before before whose
// deliveries are all finished (delivered or failed), with their log, and
// returns how many went.
func (r Notifications) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM notification_events e WHERE e.created_at < $1
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')`, before)
	if err != nil {
		return 0, mapErr("store: prune notification events", err)
	}
	return tag.RowsAffected(), nil
}
