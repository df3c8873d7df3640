package maintenance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/maintenance"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

func testStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func testLogger(w *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func month(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }

func TestRetentionBoundary(t *testing.T) {
	for _, tc := range []struct {
		now    time.Time
		months int
		want   time.Time
	}{
		{time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC), 0, time.Time{}},
		{time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC), 1, month(2026, 10)},
		{time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC), 13, month(2025, 10)},
		{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 1, month(2025, 12)},
		{time.Date(2026, 3, 31, 23, 0, 0, 0, time.UTC), 25, month(2024, 2)},
		// Months are UTC months: 01:00 on March 1st in Paris is still February.
		{time.Date(2026, 3, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)), 1, month(2026, 1)},
	} {
		if got := maintenance.RetentionBoundary(tc.now, tc.months); !got.Equal(tc.want) {
			t.Errorf("RetentionBoundary(%s, %d) = %s, want %s", tc.now, tc.months, got, tc.want)
		}
	}
}

func usageEvent(id string, at time.Time, user, key uuid.UUID, model string, p store.Provider) store.UsageEvent {
	return store.UsageEvent{
		RequestID: id, EventTime: at, UserID: user, AccessKeyID: key, SessionID: "s-" + id[:3], Kind: store.KindMessages,
		RequestedModel: model, Provider: p, Status: 200, InputTokens: 100, OutputTokens: 20, CacheReadTokens: 1000,
		CostUSD: decimal.RequireFromString("0.012345"), PriceFlag: store.PriceExact, LatencyMs: 500,
	}
}

// rollups returns the full content of the rollup tables, ordered.
func rollups(t *testing.T, st *store.Store) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"usage_hourly", "usage_daily", "usage_hourly_all"} {
		rows, err := st.Pool().Query(context.Background(), `SELECT t::text FROM `+table+` t ORDER BY t::text`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %s\n", table, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func count(t *testing.T, st *store.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunOnce(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	now := time.Now().UTC()
	this := month(now.Year(), now.Month())
	boundary := this.AddDate(0, -2, 0) // retention 2

	// Usage in the two months before the boundary, the boundary month and now.
	user, key := uuid.New(), uuid.New()
	old1, old2 := boundary.AddDate(0, -2, 0), boundary.AddDate(0, -1, 0)
	evs := []store.UsageEvent{
		usageEvent("old1-a", old1.Add(36*time.Hour), user, key, "claude-opus-5-5", store.ProviderAnthropic),
		usageEvent("old1-b", old1.Add(37*time.Hour), user, key, "claude-opus-5-5", store.ProviderBedrock),
		usageEvent("old2-a", old2.Add(24*time.Hour), user, key, "claude-haiku-4-5", store.ProviderBedrock),
		usageEvent("old2-b", boundary.Add(-time.Second), user, key, "claude-haiku-4-5", store.ProviderAnthropic),
		usageEvent("keep-a", boundary, user, key, "claude-opus-5-5", store.ProviderBedrock),
		usageEvent("keep-b", now.Add(-time.Minute), user, key, "claude-opus-5-5", store.ProviderAnthropic),
	}
	if n, err := st.Usage().InsertEvents(ctx, evs); err != nil || n != len(evs) {
		t.Fatalf("InsertEvents = %d, %v", n, err)
	}
	rollupsBefore := rollups(t, st)
	summaryQ := store.UsageSummaryQuery{UserID: &user, From: old1, To: this.AddDate(0, 1, 0), GroupBy: store.GroupByModel}
	summaryBefore, err := st.Usage().Summary(ctx, summaryQ)
	if err != nil {
		t.Fatal(err)
	}
	spendBefore, err := st.Usage().MonthlySpend(ctx, user, store.ProviderBedrock, old1, old1.AddDate(0, 1, 0))
	if err != nil || !spendBefore.Equal(decimal.RequireFromString("0.012345")) {
		t.Fatalf("spend before = %s, %v", spendBefore, err)
	}

	// Admin sessions: one expired, one revoked, one valid.
	adm, err := st.Admins().Create(ctx, "ops", "x")
	if err != nil {
		t.Fatal(err)
	}
	sessionIDs := map[string][]byte{}
	for _, name := range []string{"expired", "revoked", "valid"} {
		exp := now.Add(time.Hour)
		if name == "expired" {
			exp = now.Add(-time.Hour)
		}
		id := randomBytes(t, store.SessionIDLen)
		sessionIDs[name] = id
		if _, err := st.Sessions().Create(ctx, store.NewAdminSession{ID: id, AdminID: adm.ID, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Sessions().Revoke(ctx, sessionIDs["revoked"]); err != nil {
		t.Fatal(err)
	}

	// Login throttling: one forgotten key, one still counting.
	for i, exp := range []time.Time{now.Add(-time.Minute), now.Add(time.Hour)} {
		key := sha256.Sum256([]byte{byte(i)})
		if err := st.LoginThrottles().Update(ctx, now, [][]byte{key[:]}, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) {
			s[0].Attempts, s[0].ExpiresAt = 1, exp
			return s, nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Access keys: one rotation whose grace ended, one still in grace.
	u, err := st.Users().Create(ctx, store.NewUser{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	newKey := func() store.AccessKey {
		h := sha256.Sum256(randomBytes(t, 32))
		k, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u.ID, Name: "laptop", Hash: h[:], Prefix: "ak_test"})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	expiring, graced := newKey(), newKey()
	for _, k := range []store.AccessKey{expiring, graced} {
		h := sha256.Sum256(randomBytes(t, 32))
		if _, _, err := st.AccessKeys().Rotate(ctx, k.ID, h[:], "ak_next", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Pool().Exec(ctx, `UPDATE access_keys SET grace_until = now() - interval '1 minute' WHERE id = $1`, expiring.ID); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	var invalidated [][]byte
	var logs bytes.Buffer
	job, err := maintenance.New(maintenance.Options{
		Store: st, Retention: 2, Registerer: reg,
		Invalidate: func(_ context.Context, hashes ...[]byte) error {
			invalidated = append(invalidated, hashes...)
			return nil
		},
		Logger: testLogger(&logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := job.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ran || !slices.EqualFunc(res.Dropped, []time.Time{old1, old2}, time.Time.Equal) || res.SessionsDeleted != 2 || res.ThrottlesDeleted != 1 || res.KeysExpired != 1 {
		t.Fatalf("result %+v", res)
	}

	// Raw events: only the kept months remain, with their request ids.
	parts, err := st.Usage().Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The month between the boundary and this one never had events.
	wantParts := []time.Time{boundary, this, this.AddDate(0, 1, 0)}
	if !slices.EqualFunc(parts, wantParts, time.Time.Equal) {
		t.Errorf("partitions %v, want %v", parts, wantParts)
	}
	if n := count(t, st, `SELECT count(*) FROM usage_events`); n != 2 {
		t.Errorf("%d events left, want 2", n)
	}
	if n := count(t, st, `SELECT count(*) FROM usage_dedupe`); n != 2 {
		t.Errorf("%d dedupe rows left, want 2", n)
	}
	// Rollups: byte for byte the same, and so are summaries and spend over
	// the dropped months.
	if got := rollups(t, st); got != rollupsBefore {
		t.Errorf("rollups changed:\nbefore\n%s\nafter\n%s", rollupsBefore, got)
	}
	summaryAfter, err := st.Usage().Summary(ctx, summaryQ)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(summaryAfter) != fmt.Sprint(summaryBefore) {
		t.Errorf("summary changed: %v → %v", summaryBefore, summaryAfter)
	}
	if spend, err := st.Usage().MonthlySpend(ctx, user, store.ProviderBedrock, old1, old1.AddDate(0, 1, 0)); err != nil || !spend.Equal(spendBefore) {
		t.Errorf("spend after = %s, %v", spend, err)
	}

	// Sessions and keys.
	if n := count(t, st, `SELECT count(*) FROM admin_sessions`); n != 1 {
		t.Errorf("%d sessions left, want 1", n)
	}
	if _, _, err := st.Sessions().Get(ctx, sessionIDs["valid"]); err != nil {
		t.Errorf("valid session: %v", err)
	}
	for id, want := range map[uuid.UUID]store.KeyStatus{expiring.ID: store.KeyRevoked, graced.ID: store.KeyRotating} {
		k, err := st.AccessKeys().Get(ctx, id)
		if err != nil || k.Status != want {
			t.Errorf("key %s: %s, %v; want %s", id, k.Status, err, want)
		}
	}
	if len(invalidated) != 1 || !bytes.Equal(invalidated[0], expiring.Hash) {
		t.Errorf("invalidated %x, want the expired key's hash", invalidated)
	}

	// Metrics.
	if v := testutil.ToFloat64(job.Metrics().PartitionsDropped); v != 2 {
		t.Errorf("partitions dropped metric %v", v)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ccproxy_maintenance_passes_total Maintenance passes by result: ok, error, or skipped (another replica held the lock).
# TYPE ccproxy_maintenance_passes_total counter
ccproxy_maintenance_passes_total{result="error"} 0
ccproxy_maintenance_passes_total{result="ok"} 1
ccproxy_maintenance_passes_total{result="skipped"} 0
# HELP ccproxy_usage_partitions_dropped_total Monthly usage_events partitions dropped by the retention job.
# TYPE ccproxy_usage_partitions_dropped_total counter
ccproxy_usage_partitions_dropped_total 2
# HELP ccproxy_admin_sessions_deleted_total Expired or revoked admin sessions deleted.
# TYPE ccproxy_admin_sessions_deleted_total counter
ccproxy_admin_sessions_deleted_total 2
# HELP ccproxy_access_keys_expired_total Rotating access keys revoked because their grace period ended.
# TYPE ccproxy_access_keys_expired_total counter
ccproxy_access_keys_expired_total 1
`), "ccproxy_maintenance_passes_total", "ccproxy_usage_partitions_dropped_total",
		"ccproxy_admin_sessions_deleted_total", "ccproxy_access_keys_expired_total"); err != nil {
		t.Error(err)
	}
	if last := testutil.ToFloat64(job.Metrics().LastSuccess); last < float64(now.Unix()) {
		t.Errorf("last success %v, want ≥ %d", last, now.Unix())
	}
	if !strings.Contains(logs.String(), "usage retention dropped raw usage months") {
		t.Errorf("no retention log line in %s", logs.String())
	}

	// A second pass has nothing left to do.
	res, err = job.RunOnce(ctx)
	if err != nil || !res.Ran || len(res.Dropped) != 0 || res.SessionsDeleted != 0 || res.KeysExpired != 0 {
		t.Fatalf("second pass %+v, %v", res, err)
	}
}

func TestRetentionOffKeepsEverything(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	user, key := uuid.New(), uuid.New()
	if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{
		usageEvent("ancient", time.Date(2020, 1, 5, 0, 0, 0, 0, time.UTC), user, key, "m", store.ProviderAnthropic),
	}); err != nil {
		t.Fatal(err)
	}
	job, err := maintenance.New(maintenance.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	res, err := job.RunOnce(ctx)
	if err != nil || !res.Ran || len(res.Dropped) != 0 {
		t.Fatalf("RunOnce = %+v, %v", res, err)
	}
	if n := count(t, st, `SELECT count(*) FROM usage_events`); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	// This month's and next month's partitions exist.
	now := time.Now().UTC()
	parts, _ := st.Usage().Partitions(ctx)
	for _, m := range []time.Time{month(now.Year(), now.Month()), month(now.Year(), now.Month()+1)} {
		if !slices.ContainsFunc(parts, m.Equal) {
			t.Errorf("partition %s missing from %v", m.Format("2006-01"), parts)
		}
	}
}

func TestOneReplicaAtATime(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	// Another replica holds the lock.
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, maintenance.LockID); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	job, err := maintenance.New(maintenance.Options{Store: st, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	res, err := job.RunOnce(ctx)
	if err != nil || res.Ran {
		t.Fatalf("RunOnce while locked = %+v, %v", res, err)
	}
	if v := testutil.ToFloat64(job.Metrics().Passes.WithLabelValues("skipped")); v != 1 {
		t.Errorf("skipped = %v", v)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, maintenance.LockID); err != nil {
		t.Fatal(err)
	}
	// Concurrent passes: exactly the ones that got the lock ran, and the
	// lock is released after each (a later pass runs).
	var wg sync.WaitGroup
	var mu sync.Mutex
	ran := 0
	for range 4 {
		wg.Go(func() {
			res, err := job.RunOnce(ctx)
			if err != nil {
				t.Error(err)
			}
			if res.Ran {
				mu.Lock()
				ran++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ran < 1 {
		t.Errorf("%d concurrent passes ran, want at least 1", ran)
	}
	if res, err := job.RunOnce(ctx); err != nil || !res.Ran {
		t.Fatalf("pass after the others = %+v, %v (lock not released?)", res, err)
	}
	var held int64
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held); err != nil || held != 0 {
		t.Errorf("advisory locks held after the passes: %d, %v", held, err)
	}
}

func TestRunLoop(t *testing.T) {
	st := testStore(t)
	job, err := maintenance.New(maintenance.Options{Store: st, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(job.Metrics().Passes.WithLabelValues("ok")) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 passes in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := maintenance.New(maintenance.Options{}); err == nil {
		t.Error("nil store accepted")
	}
	st := testStore(t)
	if _, err := maintenance.New(maintenance.Options{Store: st, Retention: -1}); err == nil {
		t.Error("negative retention accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := maintenance.New(maintenance.Options{Store: st, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := maintenance.New(maintenance.Options{Store: st, Registerer: reg}); err == nil {
		t.Error("duplicate metrics registration not reported")
	}
}
