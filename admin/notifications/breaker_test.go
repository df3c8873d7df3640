package notifications_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

// TestBreakerWatcher: a breaker open for less than the threshold sends
// nothing; once open long enough (or announced open until far ahead) it
// sends one breaker.opened per open period, however many scans or
// watchers see it; a new period after the breaker closed sends again.
func TestBreakerWatcher(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "https://hooks.example.com/x", notifications.TypeBreakerOpened)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	w1 := &notifications.BreakerWatcher{Store: f.st, Redis: rdb, Prefix: prefix, Threshold: 15 * time.Minute, Now: clock}
	w2 := &notifications.BreakerWatcher{Store: f.st, Redis: rdb, Prefix: prefix, Threshold: 15 * time.Minute, Now: clock}
	keyA, keyB := uuid.New(), uuid.New()
	open := func(key uuid.UUID, until time.Time) {
		if err := rdb.HSet(ctx, prefix+"breaker:{"+key.String()+"}:open", "until", strconv.FormatInt(until.UnixMilli(), 10)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		ds, _, err := f.st.Notifications().ListDeliveries(ctx, f.hook.ID, store.DeliveryPending, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	scan := func() {
		for _, w := range []*notifications.BreakerWatcher{w1, w2} {
			if err := w.Scan(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	open(keyA, now.Add(30*time.Second)) // failures: short open periods
	open(keyB, now.Add(3*time.Hour))    // a Plan 429 with a reset hours away
	scan()
	if got := count(); got != 1 {
		t.Fatalf("after the first scan: %d events, want 1 (key B)", got)
	}
	now = now.Add(10 * time.Minute)
	open(keyA, now.Add(30*time.Second)) // reopened after a failed probe
	scan()
	if got := count(); got != 1 {
		t.Fatalf("key A open 10 minutes: %d events, want 1", got)
	}
	now = now.Add(6 * time.Minute)
	scan()
	scan()
	if got := count(); got != 2 {
		t.Fatalf("key A open 16 minutes: %d events, want 2", got)
	}
	// Key A closes, then opens again for long: a new period.
	if err := rdb.Del(ctx, prefix+"breaker:{"+keyA.String()+"}:open").Err(); err != nil {
		t.Fatal(err)
	}
	scan()
	now = now.Add(time.Minute)
	open(keyA, now.Add(time.Hour))
	scan()
	if got := count(); got != 3 {
		t.Fatalf("key A's second period: %d events, want 3", got)
	}
}
