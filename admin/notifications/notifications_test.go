package notifications_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
)

func TestSign(t *testing.T) {
	ts := time.Unix(1765000000, 0)
	body := []byte(`{"id":"x"}`)
	// Computed independently:
	// printf '1765000000.{"id":"x"}' | openssl dgst -sha256 -hmac whsec_test
	const want = "v1=ac475eb6c134c555bc82f0ed26965f3a4a10bed260bafb349dc42be85e37de16"
	got := notifications.Sign("whsec_test", ts, body)
	if got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
	tests := []struct {
		name   string
		secret string
		ts     string
		sig    string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", "whsec_test", "1765000000", got, body, ts, nil},
		{"valid among several", "whsec_test", "1765000000", "v1=00, " + got, body, ts.Add(4 * time.Minute), nil},
		{"other secret", "whsec_other", "1765000000", got, body, ts, notifications.ErrBadSignature},
		{"body changed", "whsec_test", "1765000000", got, []byte(`{"id":"y"}`), ts, notifications.ErrBadSignature},
		{"timestamp changed", "whsec_test", "1765000001", got, body, ts, notifications.ErrBadSignature},
		{"stale", "whsec_test", "1765000000", got, body, ts.Add(6 * time.Minute), notifications.ErrStale},
		{"from the future", "whsec_test", "1765000000", got, body, ts.Add(-6 * time.Minute), notifications.ErrStale},
		{"no version", "whsec_test", "1765000000", strings.TrimPrefix(got, "v1="), body, ts, notifications.ErrBadSignature},
		{"bad timestamp", "whsec_test", "soon", got, body, ts, notifications.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := notifications.Verify(tt.secret, tt.ts, tt.sig, tt.body, tt.now, 5*time.Minute); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := notifications.Backoff{Base: 10 * time.Second, Max: time.Hour}
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0, 5 * time.Second},
		{1, 0.5, 7500 * time.Millisecond},
		{2, 0, 10 * time.Second},
		{3, 0.999999999, 40 * time.Second},
		{5, 0, 80 * time.Second},
		{9, 0, 1280 * time.Second}, // 2560 s: [1280 s, 2560 s]
		{9, 0.5, 1920 * time.Second},
		{10, 0, 30 * time.Minute}, // 5120 s capped at 3600 s: [1800 s, 3600 s]
		{10, 0.5, 45 * time.Minute},
		{100, 0, 30 * time.Minute},
		{0, 0, 5 * time.Second},
	}
	for _, tt := range tests {
		got := b.Delay(tt.n, tt.r)
		if tt.r > 0.99 {
			// Rounding: the top of the interval, within a nanosecond.
			if d := tt.want - got; d < 0 || d > time.Microsecond {
				t.Errorf("Delay(%d, %v) = %v, want ≈ %v", tt.n, tt.r, got, tt.want)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tt.n, tt.r, got, tt.want)
		}
	}
	// Every delay lies in [d/2, d] and the lower bound never shrinks.
	prevLow := time.Duration(0)
	for n := 1; n < 70; n++ {
		lo, hi := b.Delay(n, 0), b.Delay(n, 0.9999999)
		if lo < prevLow || hi > b.Max || lo > hi {
			t.Fatalf("attempt %d: [%v, %v] after low %v", n, lo, hi, prevLow)
		}
		prevLow = lo
	}
}

func TestCheckTarget(t *testing.T) {
	for _, tt := range []struct {
		ip      string
		refused bool
	}{
		{"127.0.0.1", true}, {"127.8.9.10", true}, {"::1", true}, {"10.1.2.3", true}, {"172.16.0.1", true},
		{"172.31.255.255", true}, {"192.168.1.1", true}, {"169.254.169.254", true}, {"100.64.0.1", true},
		{"0.0.0.0", true}, {"::", true}, {"fd00::1", true}, {"fe80::1", true}, {"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true}, {"64:ff9b::a00:1", true}, {"224.0.0.1", true}, {"255.255.255.255", true},
		{"2002:7f00:1::", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"172.32.0.1", false}, {"2606:4700:4700::1111", false},
		{"::ffff:8.8.8.8", false},
	} {
		t.Run(tt.ip, func(t *testing.T) {
			err := notifications.CheckTarget(netip.MustParseAddr(tt.ip))
			if got := errors.Is(err, notifications.ErrRefusedTarget); got != tt.refused {
				t.Fatalf("CheckTarget(%s) = %v, refused want %v", tt.ip, err, tt.refused)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	for _, tt := range []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://hooks.example.com/x", false, true},
		{"http://hooks.example.com:8080/x?y=1", false, true},
		{"https://127.0.0.1/x", false, false},
		{"https://[::1]/x", false, false},
		{"http://localhost:9000/x", false, false},
		{"http://a.localhost/x", false, false},
		{"http://169.254.169.254/latest/meta-data", false, false},
		{"http://127.0.0.1:9000/x", true, true},
		{"ftp://example.com/x", false, false},
		{"https://user:pw@example.com/x", false, false},
		{"https://example.com/x#frag", false, false},
		{"example.com/x", false, false},
		{"https:///x", false, false},
	} {
		t.Run(tt.url, func(t *testing.T) {
			if err := notifications.CheckURL(tt.url, tt.allowPrivate); (err == nil) != tt.ok {
				t.Fatalf("CheckURL(%q, %v) = %v, want ok %v", tt.url, tt.allowPrivate, err, tt.ok)
			}
		})
	}
}

// TestHTTPClientRefusesPrivateTargets dials for real: a receiver on
// loopback is refused at the dial, also through a name that resolves to
// it, and reached when private targets are allowed; redirects to another
// host are not followed.
func TestHTTPClientRefusesPrivateTargets(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://other.example.com/x", http.StatusTemporaryRedirect)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]
	for _, u := range []string{srv.URL, "http://localhost" + port} {
		_, err := notifications.NewHTTPClient(2*time.Second, false).Post(u, "application/json", nil)
		if !errors.Is(err, notifications.ErrRefusedTarget) {
			t.Errorf("POST %s: %v, want ErrRefusedTarget", u, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the refused requests reached the server %d times", hits.Load())
	}
	c := notifications.NewHTTPClient(2*time.Second, true)
	resp, err := c.Post(srv.URL, "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("allowed POST: %v, %v", resp, err)
	}
	resp.Body.Close()
	_, err = c.Post(srv.URL+"/redirect", "application/json", nil)
	if err == nil || !strings.Contains(err.Error(), "redirect to another host refused") {
		t.Fatalf("redirect to another host: %v", err)
	}
}

func TestBody(t *testing.T) {
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	ev := store.NotificationEvent{ID: id, Type: "key.revoked", OccurredAt: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC),
		Summary: `Access key "laptop" revoked`, Data: json.RawMessage(`{"access_key_id":"k"}`)}
	tests := []struct {
		format store.WebhookFormat
		want   string
	}{
		{store.WebhookGeneric, `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"key.revoked","occurred_at":"2026-12-07T10:00:00Z","summary":"Access key \"laptop\" revoked","data":{"access_key_id":"k"}}`},
		{store.WebhookSlack, `{"text":"ccproxy: Access key \"laptop\" revoked"}`},
	}
	for _, tt := range tests {
		got, err := notifications.Body(tt.format, ev)
		if err != nil || string(got) != tt.want {
			t.Errorf("Body(%s) = %s, %v\nwant %s", tt.format, got, err, tt.want)
		}
	}
}

// fixture is a store with one webhook pointing at url.
type fixture struct {
	st     *store.Store
	sealer secrets.Sealer
	hook   store.Webhook
	secret string
}

func newFixture(t *testing.T, url string, types ...string) fixture {
	t.Helper()
	st := storetest.Open(t)
	mk := make([]byte, 32)
	_, _ = rand.Read(mk)
	sealer, err := secrets.NewLocal(mk)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	secret, _ := notifications.GenerateSecret()
	sealed, err := sealer.Seal(context.Background(), []byte(secret), notifications.SecretAAD(id))
	if err != nil {
		t.Fatal(err)
	}
	hook, err := st.Webhooks().Create(context.Background(), store.Webhook{ID: id, Name: "h", URL: url,
		Format: store.WebhookGeneric, SecretCiphertext: sealed, EventTypes: types, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{st: st, sealer: sealer, hook: hook, secret: secret}
}

func TestEnqueueFiltersAndDedupes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "https://hooks.example.com/x", notifications.TypeKeyRevoked)
	ctx := context.Background()
	all := f.hook
	all.ID = uuid.New()
	sealed, _ := f.sealer.Seal(ctx, []byte(f.secret), notifications.SecretAAD(all.ID))
	all.SecretCiphertext, all.EventTypes = sealed, nil
	if _, err := f.st.Webhooks().Create(ctx, all); err != nil {
		t.Fatal(err)
	}
	enq := func(typ, dedupe string) bool {
		_, queued, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: typ, DedupeKey: dedupe, Data: map[string]int{"n": 1}})
		if err != nil {
			t.Fatal(err)
		}
		return queued
	}
	if !enq(notifications.TypeKeyCreated, "") || !enq(notifications.TypeKeyRevoked, "") {
		t.Fatal("not queued")
	}
	if !enq(notifications.TypeCredentialRefused, "cred:1:h1") || enq(notifications.TypeCredentialRefused, "cred:1:h1") {
		t.Fatal("dedupe key not honoured")
	}
	count := func(id uuid.UUID) int {
		ds, _, err := f.st.Notifications().ListDeliveries(ctx, id, "", 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	if got := count(f.hook.ID); got != 1 {
		t.Errorf("filtered webhook has %d deliveries, want 1 (key.revoked)", got)
	}
	if got := count(all.ID); got != 3 {
		t.Errorf("unfiltered webhook has %d deliveries, want 3", got)
	}
	if _, _, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: "x", Data: []int{1}}); err == nil {
		t.Error("an array payload was accepted")
	}
}

// TestDispatcherGivesUpAfterMaxAttempts: a receiver answering 500 gets
// MaxAttempts attempts, then the delivery fails; each attempt is logged
// with its status.
func TestDispatcherGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	f := newFixture(t, srv.URL)
	ctx := context.Background()
	if _, _, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: notifications.TypeTest}); err != nil {
		t.Fatal(err)
	}
	d, err := notifications.NewDispatcher(notifications.DispatcherOptions{Store: f.st, Sealer: f.sealer, AllowPrivateTargets: true,
		MaxAttempts: 3, Backoff: notifications.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200 && hits.Load() < 3; i++ {
		if _, err := d.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	ds, _, err := f.st.Notifications().ListDeliveries(ctx, f.hook.ID, "", 10, "")
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries = %v, %v", ds, err)
	}
	if ds[0].Status != store.DeliveryFailed || ds[0].Attempts != 3 || ds[0].NextAttemptAt != nil ||
		ds[0].LastStatusCode == nil || *ds[0].LastStatusCode != 500 || ds[0].LastError != "receiver answered HTTP 500" {
		t.Fatalf("delivery = %+v", ds[0])
	}
	if n, _ := d.RunOnce(ctx); n != 0 || hits.Load() != 3 {
		t.Fatalf("a failed delivery was sent again (claimed %d, hits %d)", n, hits.Load())
	}
	// Retention: a finished event goes with its deliveries and their log;
	// one with a pending delivery stays.
	if _, _, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: notifications.TypeTest}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.st.Notifications().PruneEvents(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("PruneEvents = %d, %v; want 1 (the failed one)", n, err)
	}
	ds, _, err = f.st.Notifications().ListDeliveries(ctx, f.hook.ID, "", 10, "")
	if err != nil || len(ds) != 1 || ds[0].Status != store.DeliveryPending {
		t.Fatalf("deliveries after pruning = %+v, %v", ds, err)
	}
}

// TestDispatchersShareWork: three dispatchers (three admin replicas) on
// the same outbox deliver 60 events, each exactly once (no answer is lost
// here, so at-least-once means once), thanks to SKIP LOCKED claims.
func TestDispatchersShareWork(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get(notifications.HeaderEventID)]++
		mu.Unlock()
	}))
	defer srv.Close()
	f := newFixture(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const events = 60
	for i := 0; i < events; i++ {
		if _, _, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: notifications.TypeTest}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		d, err := notifications.NewDispatcher(notifications.DispatcherOptions{Store: f.st, Sealer: f.sealer,
			AllowPrivateTargets: true, PollInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = d.Run(ctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ds, _, err := f.st.Notifications().ListDeliveries(ctx, f.hook.ID, store.DeliveryDelivered, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered", len(ds), events)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != events {
		t.Fatalf("%d distinct events received, want %d", len(seen), events)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s received %d times", id, n)
		}
	}
}

// TestDispatcherShutdownReleases: a dispatcher stopped mid-attempt hands
// the delivery back, due at once and without an attempt counted, instead
// of logging the receiver as failed or holding it for the lease.
func TestDispatcherShutdownReleases(t *testing.T) {
	t.Parallel()
	started, stop := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	f := newFixture(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	if _, _, err := notifications.Enqueue(ctx, f.st, notifications.Event{Type: notifications.TypeTest}); err != nil {
		t.Fatal(err)
	}
	d, err := notifications.NewDispatcher(notifications.DispatcherOptions{Store: f.st, Sealer: f.sealer, AllowPrivateTargets: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _, _ = d.RunOnce(ctx); close(done) }()
	<-started
	cancel()
	<-done
	ds, _, err := f.st.Notifications().ListDeliveries(context.Background(), f.hook.ID, "", 10, "")
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries = %v, %v", ds, err)
	}
	if ds[0].Status != store.DeliveryPending || ds[0].Attempts != 0 || ds[0].NextAttemptAt == nil || time.Until(*ds[0].NextAttemptAt) > time.Second {
		t.Fatalf("after shutdown: %+v (next %v)", ds[0], ds[0].NextAttemptAt)
	}
}
