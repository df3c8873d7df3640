package admin_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/admin/notifications"
)

// received is what the test receiver saw of one request.
type received struct {
	id, typ, ts, sig, idem string
	body                   []byte
}

// receiver records every delivery and answers 200.
type receiver struct {
	mu   sync.Mutex
	reqs []received
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, received{id: r.Header.Get("X-Ccproxy-Event-Id"), typ: r.Header.Get("X-Ccproxy-Event-Type"),
		ts: r.Header.Get("X-Ccproxy-Timestamp"), sig: r.Header.Get("X-Ccproxy-Signature"),
		idem: r.Header.Get("Idempotency-Key"), body: b})
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

// verifyAsDocumented checks a signature the way docs/webhooks.md tells a
// receiver to, written out here rather than calling the package: hex
// HMAC-SHA256 keyed with the secret over "<timestamp>.<body>", sent as
// "v1=<hex>", and a timestamp within five minutes.
func verifyAsDocumented(secret, ts, sig string, body []byte, now time.Time) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("stale timestamp")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	if !hmac.Equal([]byte(sig), []byte("v1="+hex.EncodeToString(m.Sum(nil)))) {
		return errors.New("signature mismatch")
	}
	return nil
}

type deliveryDoc struct {
	ID            string     `json:"id"`
	EventID       string     `json:"event_id"`
	EventType     string     `json:"event_type"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	LastError     string     `json:"last_error"`
	AttemptLog    []struct {
		StatusCode *int   `json:"status_code"`
		Error      string `json:"error"`
	} `json:"attempt_log"`
}

func (e *env) deliveries(webhookID string) []deliveryDoc {
	e.t.Helper()
	resp := e.do(http.MethodGet, "/api/v1/webhooks/"+webhookID+"/deliveries", nil)
	want(e.t, resp, http.StatusOK)
	var pg struct {
		Items []deliveryDoc `json:"items"`
	}
	resp.decode(e.t, &pg)
	return pg.Items
}

// TestWebhookDeliverySurvivesReceiverDownForAMinute: a key is issued while
// the webhook's receiver is absent (connections refused) for a minute of
// wall time; the dispatcher keeps retrying with backoff, the delivery log
// shows the failed attempts and the next one, and once the receiver comes
// up the event arrives: exactly one distinct event id, the idempotency key
// equal to it, and a signature that verifies as documented.
func TestWebhookDeliverySurvivesReceiverDownForAMinute(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits a minute of wall time")
	}
	const downFor = 60 * time.Second
	e := newEnv(t, func(o *admin.Options) { o.AllowPrivateWebhooks = true })

	// A free port with nobody listening: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	resp := e.do(http.MethodPost, "/api/v1/webhooks", map[string]any{
		"name": "ops", "url": "http://" + addr + "/hooks/ccproxy", "event_types": []string{"key.created"}})
	want(t, resp, http.StatusCreated)
	var wh struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	resp.decode(t, &wh)

	d, err := notifications.NewDispatcher(notifications.DispatcherOptions{
		Store: e.st, Sealer: e.sealer, AllowPrivateTargets: true, Timeout: 2 * time.Second,
		PollInterval: 100 * time.Millisecond, MaxAttempts: 1000,
		Backoff: notifications.Backoff{Base: 200 * time.Millisecond, Max: 3 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	userID := e.createUser("Alice")
	resp = e.do(http.MethodPost, "/api/v1/users/"+userID+"/keys", map[string]any{"name": "laptop"})
	want(t, resp, http.StatusCreated)
	var key struct {
		ID string `json:"id"`
	}
	resp.decode(t, &key)
	downUntil := time.Now().Add(downFor)

	// Half-way through the outage the log shows the failures.
	time.Sleep(downFor / 2)
	ds := e.deliveries(wh.ID)
	if len(ds) != 1 || ds[0].Status != "pending" || ds[0].Attempts < 2 || ds[0].LastError == "" || ds[0].NextAttemptAt == nil {
		t.Fatalf("deliveries during the outage = %+v, want one pending with failed attempts and a next attempt", ds)
	}
	time.Sleep(time.Until(downUntil))

	rc := &receiver{}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 5 * time.Second}
	var up net.Listener
	for i := 0; ; i++ {
		if up, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("cannot listen on %s again: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	go func() { _ = srv.Serve(up) }()
	t.Cleanup(func() { _ = srv.Close() })

	deadline := time.Now().Add(30 * time.Second)
	for {
		ds = e.deliveries(wh.ID)
		if len(ds) == 1 && ds[0].Status == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered 30 s after the receiver came up: %+v", ds)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := rc.all()
	ids := map[string]bool{}
	for _, r := range got {
		ids[r.id] = true
		if r.idem != r.id {
			t.Errorf("Idempotency-Key %q != event id %q", r.idem, r.id)
		}
		if r.typ != "key.created" {
			t.Errorf("event type header %q", r.typ)
		}
		if err := verifyAsDocumented(wh.Secret, r.ts, r.sig, r.body, time.Now()); err != nil {
			t.Errorf("signature of %s: %v", r.id, err)
		}
	}
	if len(ids) != 1 || !ids[ds[0].EventID] {
		t.Fatalf("distinct event ids received = %v, want exactly {%s}", ids, ds[0].EventID)
	}
	var body struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			AccessKeyID string `json:"access_key_id"`
			UserID      string `json:"user_id"`
			UserName    string `json:"user_name"`
			KeyName     string `json:"key_name"`
		} `json:"data"`
	}
	if err := json.Unmarshal(got[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ID != ds[0].EventID || body.Type != "key.created" || body.Data.AccessKeyID != key.ID ||
		body.Data.UserID != userID || body.Data.UserName != "Alice" || body.Data.KeyName != "laptop" {
		t.Errorf("body = %s", got[0].body)
	}

	// The log of the one delivery: refused attempts, then the 204.
	resp = e.do(http.MethodGet, "/api/v1/webhooks/"+wh.ID+"/deliveries/"+ds[0].ID, nil)
	want(t, resp, http.StatusOK)
	var one deliveryDoc
	resp.decode(t, &one)
	n := len(one.AttemptLog)
	if n < 3 || one.Attempts != n || one.NextAttemptAt != nil {
		t.Fatalf("delivery = %+v, want several attempts, all logged, none next", one)
	}
	last := one.AttemptLog[n-1]
	if last.StatusCode == nil || *last.StatusCode != http.StatusNoContent || last.Error != "" {
		t.Errorf("last attempt = %+v, want the 204", last)
	}
	for _, a := range one.AttemptLog[:n-1] {
		if a.StatusCode != nil || a.Error == "" {
			t.Errorf("attempt while the receiver was down = %+v, want no status and an error", a)
		}
	}
}

// TestWebhookAPI: create (secret shown once, generated or given),
// validation (SSRF refusal, formats, event types, secret length), list,
// get, patch (secret replaced, never returned), test event, delivery log
// 404s, delete; every change audited; key events queued with the change.
func TestWebhookAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Validation: one 422 naming every bad field.
	resp := e.do(http.MethodPost, "/api/v1/webhooks", map[string]any{
		"name": "", "url": "http://169.254.169.254/latest", "format": "teams", "secret": "short", "event_types": []string{"key.created", "nope"}})
	want(t, resp, http.StatusUnprocessableEntity)
	if got := resp.problem(t).fields(); strings.Join(got, ",") != "name,url,format,secret,event_types" {
		t.Errorf("invalid fields = %v", got)
	}
	for _, u := range []string{"http://127.0.0.1:8080/x", "http://localhost/x", "https://[::1]/x", "http://10.0.0.8/x", "ftp://example.com/x", "https://u:p@example.com/x"} {
		resp = e.do(http.MethodPost, "/api/v1/webhooks", map[string]any{"name": "x", "url": u})
		want(t, resp, http.StatusUnprocessableEntity)
		if got := resp.problem(t).fields(); len(got) != 1 || got[0] != "url" {
			t.Errorf("%s: invalid fields %v", u, got)
		}
	}

	resp = e.do(http.MethodPost, "/api/v1/webhooks", map[string]any{"name": "ops", "url": "https://hooks.example.com/a"})
	want(t, resp, http.StatusCreated)
	var gen struct {
		ID         string   `json:"id"`
		Secret     string   `json:"secret"`
		Format     string   `json:"format"`
		Enabled    bool     `json:"enabled"`
		EventTypes []string `json:"event_types"`
	}
	resp.decode(t, &gen)
	if !strings.HasPrefix(gen.Secret, "whsec_") || len(gen.Secret) != 6+43 || gen.Format != "generic" || !gen.Enabled || len(gen.EventTypes) != 0 {
		t.Fatalf("created = %+v", gen)
	}
	const given = "my-own-secret-0123456789"
	resp = e.do(http.MethodPost, "/api/v1/webhooks", map[string]any{"name": "chat", "url": "https://hooks.example.com/b",
		"format": "slack", "secret": given, "event_types": []string{"key.revoked", "key.revoked"}, "enabled": false})
	want(t, resp, http.StatusCreated)
	var chat struct {
		ID         string   `json:"id"`
		Secret     string   `json:"secret"`
		EventTypes []string `json:"event_types"`
	}
	resp.decode(t, &chat)
	if chat.Secret != given || strings.Join(chat.EventTypes, ",") != "key.revoked" {
		t.Fatalf("created = %+v", chat)
	}
	// The secret is sealed, bound to its webhook.
	wh, err := e.st.Webhooks().Get(context.Background(), uuidOf(t, chat.ID))
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := e.sealer.Open(context.Background(), wh.SecretCiphertext, notifications.SecretAAD(wh.ID)); err != nil || string(plain) != given {
		t.Fatalf("sealed secret opens to %q, %v", plain, err)
	}
	if strings.Contains(string(wh.SecretCiphertext), given) {
		t.Fatal("the secret is stored in clear")
	}

	resp = e.do(http.MethodGet, "/api/v1/webhooks", nil)
	want(t, resp, http.StatusOK)
	if strings.Contains(string(resp.body), "secret") {
		t.Errorf("the list shows secrets: %s", resp.body)
	}
	resp = e.do(http.MethodPatch, "/api/v1/webhooks/"+chat.ID, map[string]any{"enabled": true, "secret": "another-secret-0123456789", "event_types": nil})
	want(t, resp, http.StatusOK)
	if strings.Contains(string(resp.body), "another-secret") || !strings.Contains(string(resp.body), `"event_types":[]`) {
		t.Errorf("patched = %s", resp.body)
	}
	want(t, e.do(http.MethodPatch, "/api/v1/webhooks/"+chat.ID, map[string]any{"url": "http://127.0.0.1/x"}), http.StatusUnprocessableEntity)
	want(t, e.do(http.MethodPatch, "/api/v1/webhooks/"+chat.ID, map[string]any{"name": nil}), http.StatusUnprocessableEntity)
	want(t, e.do(http.MethodGet, "/api/v1/webhooks/"+randomID, nil), http.StatusNotFound)
	want(t, e.do(http.MethodGet, "/api/v1/webhooks/"+randomID+"/deliveries", nil), http.StatusNotFound)
	want(t, e.do(http.MethodGet, "/api/v1/webhooks/"+chat.ID+"/deliveries/"+randomID, nil), http.StatusNotFound)
	want(t, e.do(http.MethodGet, "/api/v1/webhooks/"+chat.ID+"/deliveries?status=lost", nil), http.StatusUnprocessableEntity)

	// Key events are queued with the change: issue, rotate, revoke (twice:
	// one event), and the test event; both webhooks take every type now.
	userID := e.createUser("Bob")
	resp = e.do(http.MethodPost, "/api/v1/users/"+userID+"/keys", map[string]any{"name": "ci"})
	want(t, resp, http.StatusCreated)
	var key struct {
		ID string `json:"id"`
	}
	resp.decode(t, &key)
	resp = e.do(http.MethodPost, "/api/v1/keys/"+key.ID+"/rotate", nil)
	want(t, resp, http.StatusCreated)
	var rotated struct {
		ID string `json:"id"`
	}
	resp.decode(t, &rotated)
	want(t, e.do(http.MethodDelete, "/api/v1/keys/"+rotated.ID, nil), http.StatusNoContent)
	want(t, e.do(http.MethodDelete, "/api/v1/keys/"+rotated.ID, nil), http.StatusNoContent)
	want(t, e.do(http.MethodPost, "/api/v1/webhooks/"+gen.ID+"/test", nil), http.StatusAccepted)
	var types []string
	for _, d := range e.deliveries(chat.ID) {
		if d.Status != "pending" || d.Attempts != 0 || d.NextAttemptAt == nil {
			t.Errorf("delivery %+v", d)
		}
		types = append(types, d.EventType)
	}
	if strings.Join(types, ",") != "key.revoked,key.created,key.created" {
		t.Errorf("queued events (newest first) = %v", types)
	}
	// The test event goes to the webhook it was asked for only.
	types = nil
	for _, d := range e.deliveries(gen.ID) {
		types = append(types, d.EventType)
	}
	if strings.Join(types, ",") != "webhook.test,key.revoked,key.created,key.created" {
		t.Errorf("queued events for the tested webhook (newest first) = %v", types)
	}

	want(t, e.do(http.MethodDelete, "/api/v1/webhooks/"+chat.ID, nil), http.StatusNoContent)
	want(t, e.do(http.MethodDelete, "/api/v1/webhooks/"+chat.ID, nil), http.StatusNotFound)
	if got := strings.Join(e.auditActions(chat.ID), ","); got != "webhook.create,webhook.update,webhook.delete" {
		t.Errorf("audit = %s", got)
	}
	for _, s := range []string{given, "another-secret-0123456789"} {
		if n := strings.Count(e.allBodies(), s); n > 1 || (s != given && n > 0) {
			t.Errorf("secret %q answered %d times", s, n)
		}
	}
}

func uuidOf(t *testing.T, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
