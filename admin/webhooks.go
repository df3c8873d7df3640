package admin

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/store"
)

// webhookJSON is the API form of a webhook; the signing secret is only in
// the answer that sets it (createdWebhookJSON).
type webhookJSON struct {
	ID         uuid.UUID `json:"id"`
	Name       string    `json:"name"`
	URL        string    `json:"url"`
	Format     string    `json:"format"`
	EventTypes []string  `json:"event_types"`
	Enabled    bool      `json:"enabled"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

type createdWebhookJSON struct {
	webhookJSON
	// Secret is the signing secret, shown once.
	Secret string `json:"secret"`
}

func toWebhook(w store.Webhook) webhookJSON {
	return webhookJSON{ID: w.ID, Name: w.Name, URL: w.URL, Format: string(w.Format), EventTypes: w.EventTypes,
		Enabled: w.Enabled, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}
}

type createWebhookRequest struct {
	Name       string   `json:"name"`
	URL        string   `json:"url"`
	Format     *string  `json:"format"`
	Secret     *string  `json:"secret"`
	EventTypes []string `json:"event_types"`
	Enabled    *bool    `json:"enabled"`
}

type patchWebhookRequest struct {
	Name       optional[string]   `json:"name"`
	URL        optional[string]   `json:"url"`
	Format     optional[string]   `json:"format"`
	Secret     optional[string]   `json:"secret"`
	EventTypes optional[[]string] `json:"event_types"`
	Enabled    optional[bool]     `json:"enabled"`
}

// Bounds of a webhook's fields.
const (
	maxWebhookURL    = 2048
	minWebhookSecret = 16
	maxWebhookSecret = 256
)

func (s *Server) checkWebhookURL(v string, errs *[]fieldError) {
	if len(v) > maxWebhookURL || !validText(v) {
		*errs = append(*errs, fieldError{Field: "url", Message: "must be an http or https URL of at most 2048 characters"})
		return
	}
	if err := notifications.CheckURL(v, s.allowPrivateWebhooks); err != nil {
		*errs = append(*errs, fieldError{Field: "url", Message: err.Error()})
	}
}

func checkWebhookFormat(v string, errs *[]fieldError) store.WebhookFormat {
	f := store.WebhookFormat(v)
	if !f.Valid() {
		*errs = append(*errs, fieldError{Field: "format", Message: "must be generic or slack"})
	}
	return f
}

func checkWebhookSecret(v string, errs *[]fieldError) {
	if len(v) < minWebhookSecret || len(v) > maxWebhookSecret || containsControlOrSpace(v) {
		*errs = append(*errs, fieldError{Field: "secret", Message: "must be 16 to 256 printable characters without spaces"})
	}
}

func checkEventTypes(v []string, errs *[]fieldError) []string {
	out := []string{}
	for _, t := range v {
		if !notifications.KnownType(t) {
			*errs = append(*errs, fieldError{Field: "event_types", Message: "unknown event type " + quoteBounded(t) +
				"; known: " + strings.Join(notifications.Types, ", ")})
			continue
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func quoteBounded(v string) string { return `"` + boundedField(v) + `"` }

// sealWebhookSecret seals a signing secret for webhook id.
func (s *Server) sealWebhookSecret(ctx context.Context, id uuid.UUID, secret string) ([]byte, error) {
	return s.sealer.Seal(ctx, []byte(secret), notifications.SecretAAD(id))
}

func (s *Server) handleCreateWebhook(w http.ResponseWriter, r *http.Request) {
	var req createWebhookRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	checkName("name", req.Name, 200, &errs)
	s.checkWebhookURL(req.URL, &errs)
	format := store.WebhookGeneric
	if req.Format != nil {
		format = checkWebhookFormat(*req.Format, &errs)
	}
	var secret string
	if req.Secret != nil {
		checkWebhookSecret(*req.Secret, &errs)
		secret = *req.Secret
	}
	types := checkEventTypes(req.EventTypes, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	if secret == "" {
		var err error
		if secret, err = notifications.GenerateSecret(); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	sealed, err := s.sealWebhookSecret(r.Context(), id, secret)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	enabled := req.Enabled == nil || *req.Enabled
	var out createdWebhookJSON
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		wh, err := q.Webhooks().Create(r.Context(), store.Webhook{ID: id, Name: req.Name, URL: req.URL, Format: format,
			SecretCiphertext: sealed, EventTypes: types, Enabled: enabled})
		if err != nil {
			return err
		}
		out = createdWebhookJSON{webhookJSON: toWebhook(wh), Secret: secret}
		return s.audit(r.Context(), q, "webhook.create", "webhook", id.String(), nil, out.webhookJSON)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListWebhooks(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, noFilter, wholeList(func(ctx context.Context, _ struct{}) ([]store.Webhook, error) {
		return s.st.Webhooks().List(ctx)
	}), toWebhook)
}

func (s *Server) handleGetWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	wh, err := s.st.Webhooks().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toWebhook(wh))
}

func (s *Server) handlePatchWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchWebhookRequest
	if !s.decode(w, r, &req) {
		return
	}
	var (
		errs []fieldError
		p    store.WebhookPatch
	)
	notNull := func(field string, set, null bool) bool {
		if set && null {
			errs = append(errs, fieldError{Field: field, Message: "cannot be null"})
			return false
		}
		return set
	}
	if notNull("name", req.Name.Set, req.Name.Null) {
		checkName("name", req.Name.Value, 200, &errs)
		p.Name = store.Some(req.Name.Value)
	}
	if notNull("url", req.URL.Set, req.URL.Null) {
		s.checkWebhookURL(req.URL.Value, &errs)
		p.URL = store.Some(req.URL.Value)
	}
	if notNull("format", req.Format.Set, req.Format.Null) {
		p.Format = store.Some(checkWebhookFormat(req.Format.Value, &errs))
	}
	if req.EventTypes.Set {
		// null, like [], means every type.
		p.EventTypes = store.Some(checkEventTypes(req.EventTypes.Value, &errs))
	}
	if notNull("enabled", req.Enabled.Set, req.Enabled.Null) {
		p.Enabled = store.Some(req.Enabled.Value)
	}
	if notNull("secret", req.Secret.Set, req.Secret.Null) {
		checkWebhookSecret(req.Secret.Value, &errs)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	if req.Secret.Set {
		sealed, err := s.sealWebhookSecret(r.Context(), id, req.Secret.Value)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		p.SecretCiphertext = store.Some(sealed)
	}
	var out webhookJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Webhooks().Get(r.Context(), id)
		if err != nil {
			return err
		}
		wh, err := q.Webhooks().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toWebhook(wh)
		after := map[string]any{"webhook": out, "secret_changed": req.Secret.Set}
		return s.audit(r.Context(), q, "webhook.update", "webhook", id.String(), toWebhook(before), after)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Webhooks().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if err := q.Webhooks().Delete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "webhook.delete", "webhook", id.String(), toWebhook(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleTestWebhook queues a webhook.test event for this webhook only,
// whatever its filter, so an admin can check the receiver end to end.
func (s *Server) handleTestWebhook(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var evID uuid.UUID
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		wh, err := q.Webhooks().Get(r.Context(), id)
		if err != nil {
			return err
		}
		evID, _, err = notifications.EnqueueTo(r.Context(), q, notifications.Event{
			Type: notifications.TypeTest, Summary: "test notification for webhook " + quoteBounded(wh.Name),
			Data: map[string]any{"webhook_id": wh.ID.String(), "requested_by": actorFrom(r.Context()).username},
		}, wh.ID)
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.notified()
	writeJSON(w, http.StatusAccepted, map[string]string{"event_id": evID.String()})
}

// deliveryJSON is one row of a webhook's delivery log.
type deliveryJSON struct {
	ID             uuid.UUID     `json:"id"`
	EventID        uuid.UUID     `json:"event_id"`
	EventType      string        `json:"event_type"`
	WebhookID      uuid.UUID     `json:"webhook_id"`
	Status         string        `json:"status"`
	Attempts       int           `json:"attempts"`
	NextAttemptAt  *time.Time    `json:"next_attempt_at"`
	LastAttemptAt  *time.Time    `json:"last_attempt_at"`
	LastStatusCode *int          `json:"last_status_code"`
	LastError      string        `json:"last_error"`
	DeliveredAt    *time.Time    `json:"delivered_at"`
	CreatedAt      time.Time     `json:"created_at"`
	AttemptLog     []attemptJSON `json:"attempt_log,omitempty"`
}

type attemptJSON struct {
	At         time.Time `json:"at"`
	StatusCode *int      `json:"status_code"`
	Error      string    `json:"error"`
	DurationMs int64     `json:"duration_ms"`
}

func toDelivery(d store.Delivery) deliveryJSON {
	return deliveryJSON{ID: d.ID, EventID: d.EventID, EventType: d.EventType, WebhookID: d.WebhookID, Status: string(d.Status),
		Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt, LastAttemptAt: d.LastAttemptAt, LastStatusCode: d.LastStatusCode,
		LastError: d.LastError, DeliveredAt: d.DeliveredAt, CreatedAt: d.CreatedAt}
}

type deliveryFilter struct {
	webhook uuid.UUID
	status  store.DeliveryStatus
}

func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	filter := func(r *http.Request, errs *[]fieldError) deliveryFilter {
		st := store.DeliveryStatus(r.URL.Query().Get("status"))
		if st != "" && !st.Valid() {
			*errs = append(*errs, fieldError{Field: "status", Message: "must be pending, delivered or failed"})
		}
		return deliveryFilter{webhook: id, status: st}
	}
	fetch := func(ctx context.Context, f deliveryFilter, limit int, cursor string) ([]store.Delivery, string, error) {
		if _, err := s.st.Webhooks().Get(ctx, f.webhook); err != nil {
			return nil, "", err
		}
		return s.st.Notifications().ListDeliveries(ctx, f.webhook, f.status, limit, cursor)
	}
	serveList(s, w, r, filter, fetch, toDelivery)
}

func (s *Server) handleGetDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	did, err := uuid.Parse(r.PathValue("delivery_id"))
	if err != nil || len(r.PathValue("delivery_id")) != 36 {
		s.problem(w, r, http.StatusNotFound, "not found", "no resource has this id")
		return
	}
	d, attempts, err := s.st.Notifications().GetDelivery(r.Context(), id, did)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := toDelivery(d)
	out.AttemptLog = make([]attemptJSON, len(attempts))
	for i, a := range attempts {
		out.AttemptLog[i] = attemptJSON{At: a.At, Error: a.Error, DurationMs: a.Duration.Milliseconds()}
		if a.StatusCode != 0 {
			c := a.StatusCode
			out.AttemptLog[i].StatusCode = &c
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// notified tells the local dispatcher that an event was queued.
func (s *Server) notified() {
	if s.onNotify != nil {
		s.onNotify()
	}
}

// keyEventData is the payload of key.created and key.revoked.
func keyEventData(ctx context.Context, q *store.Queries, k store.AccessKey) (map[string]any, string) {
	data := map[string]any{"access_key_id": k.ID.String(), "user_id": k.UserID.String(), "key_name": k.Name,
		"key_prefix": k.Prefix, "actor": actorFrom(ctx).username}
	who := k.UserID.String()
	if u, err := q.Users().Get(ctx, k.UserID); err == nil {
		data["user_name"] = u.Name
		who = u.Name
	}
	return data, who
}

// enqueueKeyEvent queues key.created or key.revoked in the change's
// transaction.
func (s *Server) enqueueKeyEvent(ctx context.Context, q *store.Queries, typ string, k store.AccessKey) error {
	data, who := keyEventData(ctx, q, k)
	verb := "issued for"
	if typ == notifications.TypeKeyRevoked {
		verb = "revoked for"
	}
	name := ""
	if k.Name != "" {
		name = " " + quoteBounded(k.Name)
	}
	_, _, err := notifications.Enqueue(ctx, q, notifications.Event{
		Type: typ, Data: data,
		Summary: "Access key" + name + " (" + k.Prefix + "…) " + verb + " " + who + " by " + actorFrom(ctx).username,
	})
	return err
}
