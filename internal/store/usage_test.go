package store_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

func event(id string, at time.Time, user, key uuid.UUID) store.UsageEvent {
	return store.UsageEvent{
		RequestID: id, EventTime: at, UserID: user, AccessKeyID: key, SessionID: "s1", AgentID: "main",
		ClientVersion: "2.1.332", Kind: store.KindMessages, RequestedModel: "claude-opus-5-5",
		Provider: store.ProviderAnthropic, Stream: true, Status: 200, InputTokens: 10, OutputTokens: 15,
		CacheReadTokens: 100, CacheWrite5mTokens: 20, CacheWrite1hTokens: 5,
		CostUSD: decimal.RequireFromString("0.001250"), PriceFlag: store.PriceExact, TTFTMs: ptr(120), LatencyMs: 900,
	}
}

func countRows(t *testing.T, st *store.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := st.Pool().QueryRow(testCtx(t), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInsertEventsIdempotent(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	usage := st.Usage()
	user, key := uuid.New(), uuid.New()
	t0 := time.Date(2026, 10, 5, 9, 30, 0, 0, time.UTC)

	a, b, c := event("req-a", t0, user, key), event("req-b", t0.Add(time.Minute), user, key), event("req-c", t0.Add(2*time.Minute), user, key)
	b.Provider, b.Fallback, b.FallbackReason, b.Status = store.ProviderBedrock, true, "plan_429", 200
	c.Status, c.Aborted = 529, true
	aLater := a
	aLater.EventTime = t0.Add(24 * time.Hour) // same request, another time

	tests := []struct {
		name  string
		batch []store.UsageEvent
		want  int
	}{
		{"duplicate within a batch", []store.UsageEvent{a, b, a}, 2},
		{"replay of a whole batch", []store.UsageEvent{a, b}, 0},
		{"same id, other event time", []store.UsageEvent{aLater}, 0},
		{"new and old mixed", []store.UsageEvent{b, c, aLater, c}, 1},
		{"empty batch", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := usage.InsertEvents(ctx, tc.batch)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.want {
				t.Fatalf("inserted %d, want %d", n, tc.want)
			}
		})
	}
	if n := countRows(t, st, `SELECT count(*) FROM usage_events`); n != 3 {
		t.Fatalf("%d usage rows, want 3", n)
	}
	got, err := usage.GetRequest(ctx, "req-a")
	if err != nil {
		t.Fatal(err)
	}
	if !got.EventTime.Equal(t0) || got.InputTokens != 10 || *got.TTFTMs != 120 || got.ClientVersion != "2.1.332" ||
		!got.CostUSD.Equal(decimal.RequireFromString("0.00125")) || got.PriceFlag != store.PriceExact || got.Kind != store.KindMessages {
		t.Fatalf("stored req-a = %+v", got)
	}
	if _, err := usage.GetRequest(ctx, "req-unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRequest unknown = %v", err)
	}

	// The rollups counted each request once.
	var requests, input, fallbacks, errs, aborted int64
	var cost decimal.Decimal
	for _, table := range []string{"usage_hourly", "usage_daily"} {
		err := st.Pool().QueryRow(ctx, `SELECT sum(requests), sum(input_tokens), sum(cost_usd), sum(fallbacks), sum(errors), sum(aborted) FROM `+table).
			Scan(&requests, &input, &cost, &fallbacks, &errs, &aborted)
		if err != nil {
			t.Fatal(err)
		}
		if requests != 3 || input != 30 || !cost.Equal(decimal.RequireFromString("0.00375")) || fallbacks != 1 || errs != 1 || aborted != 1 {
			t.Fatalf("%s: requests %d input %d cost %s fallbacks %d errors %d aborted %d", table, requests, input, cost, fallbacks, errs, aborted)
		}
	}
	if n := countRows(t, st, `SELECT count(*) FROM usage_hourly`); n != 2 {
		t.Fatalf("%d hourly rows, want 2 (one per provider)", n)
	}
}

func TestInsertEventsInvalid(t *testing.T) {
	ctx := testCtx(t)
	user, key := uuid.New(), uuid.New()
	t0 := time.Date(2026, 10, 5, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		mutate func(*store.UsageEvent)
	}{
		{"no request id", func(e *store.UsageEvent) { e.RequestID = "" }},
		{"no time", func(e *store.UsageEvent) { e.EventTime = time.Time{} }},
		{"bad kind", func(e *store.UsageEvent) { e.Kind = "chat" }},
		{"bad provider", func(e *store.UsageEvent) { e.Provider = "vertex" }},
		{"bad flag", func(e *store.UsageEvent) { e.PriceFlag = "guess" }},
		{"bad status", func(e *store.UsageEvent) { e.Status = 1000 }},
		{"negative tokens", func(e *store.UsageEvent) { e.OutputTokens = -1 }},
		{"negative cost", func(e *store.UsageEvent) { e.CostUSD = decimal.RequireFromString("-0.1") }},
		{"negative ttft", func(e *store.UsageEvent) { e.TTFTMs = ptr(-1) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := event("valid-"+uuid.NewString(), t0, user, key)
			bad := event("invalid-"+uuid.NewString(), t0, user, key)
			tc.mutate(&bad)
			if err := bad.Validate(); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Validate = %v", err)
			}
			if _, err := testStore.Usage().InsertEvents(ctx, []store.UsageEvent{good, bad}); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("InsertEvents = %v, want ErrInvalid", err)
			}
			if _, err := testStore.Usage().GetRequest(ctx, good.RequestID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("valid event of a rejected batch was stored: %v", err)
			}
		})
	}
}

// Inside a caller's transaction the insert and its rollups roll back with it.
func TestInsertEventsInTx(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	user, key := uuid.New(), uuid.New()
	t0 := time.Date(2026, 10, 5, 9, 0, 0, 0, time.UTC)
	boom := errors.New("boom")
	err := st.WithTx(ctx, func(tx *store.Queries) error {
		n, err := tx.Usage().InsertEvents(ctx, []store.UsageEvent{event("tx-1", t0, user, key)})
		if err != nil || n != 1 {
			t.Fatalf("in tx: %d, %v", n, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WithTx = %v", err)
	}
	if n := countRows(t, st, `SELECT (SELECT count(*) FROM usage_events) + (SELECT count(*) FROM usage_dedupe) + (SELECT count(*) FROM usage_hourly)`); n != 0 {
		t.Fatalf("%d rows left after rollback", n)
	}
	if n, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{event("tx-1", t0, user, key)}); err != nil || n != 1 {
		t.Fatalf("after rollback: %d, %v", n, err)
	}
}

// Concurrent ingesters offering overlapping batches store every request once.
func TestInsertEventsConcurrent(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	user, key := uuid.New(), uuid.New()
	t0 := time.Date(2026, 10, 5, 9, 0, 0, 0, time.UTC)
	var batch []store.UsageEvent
	for i := range 500 {
		batch = append(batch, event(fmt.Sprintf("c-%03d", i), t0.Add(time.Duration(i)*time.Second), user, key))
	}
	const workers = 4
	counts := make(chan int, workers)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			b := slices.Clone(batch)
			if w%2 == 1 {
				slices.Reverse(b)
			}
			n, err := st.Usage().InsertEvents(ctx, b)
			counts <- n
			errs <- err
		}()
	}
	total := 0
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += <-counts
	}
	if total != 500 {
		t.Fatalf("workers inserted %d in all, want 500", total)
	}
	if n := countRows(t, st, `SELECT sum(requests) FROM usage_hourly`); n != 500 {
		t.Fatalf("rollups count %d requests, want 500", n)
	}
}

func partitionOf(t *testing.T, st *store.Store, requestID string) string {
	t.Helper()
	var name string
	if err := st.Pool().QueryRow(testCtx(t), `SELECT tableoid::regclass::text FROM usage_events WHERE request_id = $1`, requestID).Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestUsagePartitions(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	usage := st.Usage()
	user, key := uuid.New(), uuid.New()
	month := func(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }

	// An event that arrives before its month exists lands in the default
	// partition (written here without the store, as a stray row would be).
	stray := event("stray", time.Date(2026, 8, 20, 0, 0, 0, 0, time.UTC), user, key)
	if _, err := st.Pool().Exec(ctx, `INSERT INTO usage_events (request_id, event_time, user_id, access_key_id, kind, provider, status)
		VALUES ($1, $2, $3, $4, 'messages', 'anthropic', 200)`, stray.RequestID, stray.EventTime, user, key); err != nil {
		t.Fatal(err)
	}
	if got := partitionOf(t, st, "stray"); got != "usage_events_default" {
		t.Fatalf("stray row in %s", got)
	}

	// InsertEvents creates the months it needs; boundaries are UTC months.
	evs := []store.UsageEvent{
		event("jul", time.Date(2026, 7, 31, 23, 59, 59, 0, time.UTC), user, key),
		event("aug", time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC), user, key),
		event("aug-tz", time.Date(2026, 9, 1, 1, 0, 0, 0, time.FixedZone("CEST", 2*3600)), user, key), // 23:00 UTC Aug 31
	}
	if n, err := usage.InsertEvents(ctx, evs); err != nil || n != 3 {
		t.Fatalf("InsertEvents = %d, %v", n, err)
	}
	for id, want := range map[string]string{"jul": "usage_events_202607", "aug": "usage_events_202608", "aug-tz": "usage_events_202608", "stray": "usage_events_202608"} {
		if got := partitionOf(t, st, id); got != want {
			t.Errorf("%s in %s, want %s", id, got, want)
		}
	}
	if err := usage.EnsurePartitions(ctx, time.Date(2026, 12, 15, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	parts, err := usage.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{month(2026, 7), month(2026, 8), month(2026, 12), month(2027, 1)}
	if !slices.EqualFunc(parts, want, time.Time.Equal) {
		t.Fatalf("partitions %v, want %v", parts, want)
	}
	// Idempotent, also for another Store that has not cached anything.
	other := store.New(st.Pool())
	if err := other.Usage().EnsurePartitions(ctx, month(2026, 12)); err != nil {
		t.Fatal(err)
	}

	// Retention: drop months entirely before September; rollups stay, and the
	// dropped request ids are forgotten.
	dropped, err := usage.DropPartitionsBefore(ctx, time.Date(2026, 9, 10, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(dropped, []time.Time{month(2026, 7), month(2026, 8)}, time.Time.Equal) {
		t.Fatalf("dropped %v", dropped)
	}
	if parts, _ := usage.Partitions(ctx); !slices.EqualFunc(parts, []time.Time{month(2026, 12), month(2027, 1)}, time.Time.Equal) {
		t.Fatalf("partitions after retention %v", parts)
	}
	if n := countRows(t, st, `SELECT count(*) FROM usage_events`); n != 0 {
		t.Fatalf("%d events after retention", n)
	}
	if n := countRows(t, st, `SELECT count(*) FROM usage_dedupe`); n != 0 {
		t.Fatalf("%d dedupe rows after retention", n)
	}
	if n := countRows(t, st, `SELECT sum(requests) FROM usage_daily`); n != 3 {
		t.Fatalf("daily rollups count %d requests after retention, want 3", n)
	}
	if dropped, err := usage.DropPartitionsBefore(ctx, month(2026, 9)); err != nil || len(dropped) != 0 {
		t.Fatalf("second retention = %v, %v", dropped, err)
	}
}

// usageFixture stores a known set of events and returns the ids involved.
func usageFixture(t *testing.T, st *store.Store) (u1, u2, k1, k2 uuid.UUID) {
	t.Helper()
	u1, u2, k1, k2 = uuid.New(), uuid.New(), uuid.New(), uuid.New()
	day := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	mk := func(id string, at time.Time, user, key uuid.UUID, model string, p store.Provider, cost, session string) store.UsageEvent {
		e := event(id, at, user, key)
		e.RequestedModel, e.Provider, e.CostUSD, e.SessionID = model, p, decimal.RequireFromString(cost), session
		return e
	}
	evs := []store.UsageEvent{
		mk("e1", day.Add(9*time.Hour+10*time.Minute), u1, k1, "claude-opus-5-5", store.ProviderAnthropic, "1.000000", "s-a"),
		mk("e2", day.Add(9*time.Hour+20*time.Minute), u1, k1, "claude-opus-5-5", store.ProviderBedrock, "2.000000", "s-a"),
		mk("e3", day.Add(10*time.Hour+5*time.Minute), u1, k2, "claude-haiku-4-5", store.ProviderBedrock, "0.500000", "s-b"),
		mk("e4", day.Add(24*time.Hour+time.Hour), u1, k1, "claude-haiku-4-5", store.ProviderAnthropic, "0.250000", ""),
		mk("e5", day.Add(9*time.Hour+15*time.Minute), u2, uuid.New(), "claude-opus-5-5", store.ProviderBedrock, "8.000000", "s-c"),
	}
	evs[1].Fallback, evs[2].Status = true, 429
	if n, err := st.Usage().InsertEvents(testCtx(t), evs); err != nil || n != len(evs) {
		t.Fatalf("fixture: %d, %v", n, err)
	}
	return u1, u2, k1, k2
}

func TestUsageSummary(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	u1, _, k1, _ := usageFixture(t, st)
	day := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	type row struct {
		key               string
		requests, bedrock int64
		plan, bedrockCost string
		fallbacks, errors int64
	}
	tests := []struct {
		name string
		q    store.UsageSummaryQuery
		want []row
	}{
		{"user by hour", store.UsageSummaryQuery{UserID: &u1, From: day, To: day.AddDate(0, 0, 2), GroupBy: store.GroupByHour}, []row{
			{"2026-10-05T09:00:00Z", 2, 1, "1", "2", 1, 0},
			{"2026-10-05T10:00:00Z", 1, 1, "0", "0.5", 0, 1},
			{"2026-10-06T01:00:00Z", 1, 0, "0.25", "0", 0, 0},
		}},
		{"user by day", store.UsageSummaryQuery{UserID: &u1, From: day, To: day.AddDate(0, 0, 2), GroupBy: store.GroupByDay}, []row{
			{"2026-10-05T00:00:00Z", 3, 2, "1", "2.5", 1, 1},
			{"2026-10-06T00:00:00Z", 1, 0, "0.25", "0", 0, 0},
		}},
		{"key by model", store.UsageSummaryQuery{AccessKeyID: &k1, From: day, To: day.AddDate(0, 0, 2), GroupBy: store.GroupByModel}, []row{
			{"claude-haiku-4-5", 1, 0, "0.25", "0", 0, 0},
			{"claude-opus-5-5", 2, 1, "1", "2", 1, 0},
		}},
		{"everyone by provider, hour-aligned range", store.UsageSummaryQuery{From: day.Add(9 * time.Hour), To: day.Add(10 * time.Hour), GroupBy: store.GroupByProvider}, []row{
			{"anthropic", 1, 0, "1", "0", 0, 0},
			{"bedrock", 2, 2, "0", "10", 1, 0},
		}},
		{"user by session", store.UsageSummaryQuery{UserID: &u1, From: day, To: day.AddDate(0, 0, 2), GroupBy: store.GroupBySession}, []row{
			{"s-a", 2, 1, "1", "2", 1, 0},
			{"s-b", 1, 1, "0", "0.5", 0, 1},
			{"", 1, 0, "0.25", "0", 0, 0},
		}},
		{"nothing in range", store.UsageSummaryQuery{UserID: &u1, From: day.AddDate(0, 1, 0), To: day.AddDate(0, 2, 0), GroupBy: store.GroupByDay}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.Usage().Summary(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d groups %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Key != w.key || g.Requests != w.requests || g.BedrockRequests != w.bedrock ||
					!g.PlanCostUSD.Equal(decimal.RequireFromString(w.plan)) || !g.BedrockCostUSD.Equal(decimal.RequireFromString(w.bedrockCost)) ||
					g.Fallbacks != w.fallbacks || g.Errors != w.errors || g.InputTokens != 10*w.requests || g.CacheWrite1hTokens != 5*w.requests {
					t.Errorf("group %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
	sess, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{UserID: &u1, From: day, To: day.AddDate(0, 0, 1), GroupBy: store.GroupBySession})
	if err != nil || !sess[0].FirstAt.Equal(day.Add(9*time.Hour+10*time.Minute)) || !sess[0].LastAt.Equal(day.Add(9*time.Hour+20*time.Minute)) {
		t.Fatalf("session bounds %+v, %v", sess, err)
	}
	for _, q := range []store.UsageSummaryQuery{
		{From: day, To: day.Add(time.Hour), GroupBy: "week"},
		{From: day, To: day, GroupBy: store.GroupByDay},
	} {
		if _, err := st.Usage().Summary(ctx, q); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Summary(%+v) = %v, want ErrInvalid", q, err)
		}
	}
}

func TestMonthlySpend(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	u1, u2, _, _ := usageFixture(t, st)
	day := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		user     uuid.UUID
		provider store.Provider
		from, to time.Time
		want     string
	}{
		{"bedrock month", u1, store.ProviderBedrock, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "2.5"},
		{"plan month", u1, store.ProviderAnthropic, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "1.25"},
		{"other user", u2, store.ProviderBedrock, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "8"},
		// Half-hour edges: 09:15 excludes e1 (09:10) but includes e2 (09:20);
		// 10:04:59 excludes e3 — partial hours come from the raw events.
		{"partial hours", u1, store.ProviderBedrock, day.Add(9*time.Hour + 15*time.Minute), day.Add(10*time.Hour + 4*time.Minute), "2"},
		{"within one hour", u1, store.ProviderBedrock, day.Add(10 * time.Hour), day.Add(10*time.Hour + 30*time.Minute), "0.5"},
		{"nothing", u1, store.ProviderBedrock, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.Usage().MonthlySpend(ctx, tc.user, tc.provider, tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(decimal.RequireFromString(tc.want)) {
				t.Fatalf("spend = %s, want %s", got, tc.want)
			}
			// The many-users form agrees, for the user and a user
			// without rows (absent: zero).
			nobody := uuid.New()
			many, err := st.Usage().MonthlySpends(ctx, []uuid.UUID{tc.user, nobody}, tc.provider, tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if !many[tc.user].Equal(got) || !many[nobody].IsZero() {
				t.Fatalf("MonthlySpends = %v, want %s for the user and nothing else", many, got)
			}
		})
	}
	both, err := st.Usage().MonthlySpends(ctx, []uuid.UUID{u1, u2}, store.ProviderBedrock,
		time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || len(both) != 2 || !both[u1].Equal(decimal.RequireFromString("2.5")) || !both[u2].Equal(decimal.RequireFromString("8")) {
		t.Fatalf("MonthlySpends(u1, u2) = %v, %v; want 2.5 and 8", both, err)
	}
	// A billing month in a half-hour time zone (India, UTC+5:30).
	ist := time.FixedZone("IST", 5*3600+1800)
	got, err := st.Usage().MonthlySpend(ctx, u1, store.ProviderBedrock,
		time.Date(2026, 10, 5, 15, 0, 0, 0, ist), time.Date(2026, 11, 1, 0, 0, 0, 0, ist)) // from 09:30 UTC
	if err != nil || !got.Equal(decimal.RequireFromString("0.5")) {
		t.Fatalf("IST spend = %s, %v; want 0.5 (only e3 after 09:30 UTC)", got, err)
	}
}

func TestListUsageRequests(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	u1, _, k1, _ := usageFixture(t, st)
	collect := func(f store.UsageFilter, limit int) ([]string, int) {
		t.Helper()
		var ids []string
		cursor, pages := "", 0
		for {
			page, next, err := st.Usage().ListRequests(ctx, f, limit, cursor)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, e := range page {
				ids = append(ids, e.RequestID)
			}
			if next == "" {
				return ids, pages
			}
			cursor = next
		}
	}
	day := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		f         store.UsageFilter
		limit     int
		want      []string
		wantPages int
	}{
		{"everything, pages of 2", store.UsageFilter{}, 2, []string{"e4", "e3", "e2", "e5", "e1"}, 3},
		{"one user", store.UsageFilter{UserID: &u1}, 10, []string{"e4", "e3", "e2", "e1"}, 1},
		{"one key", store.UsageFilter{AccessKeyID: &k1}, 1, []string{"e4", "e2", "e1"}, 3},
		{"bedrock", store.UsageFilter{Provider: store.ProviderBedrock}, 0, []string{"e3", "e2", "e5"}, 1},
		{"session", store.UsageFilter{SessionID: "s-a"}, 0, []string{"e2", "e1"}, 1},
		{"time range", store.UsageFilter{From: day.Add(9*time.Hour + 15*time.Minute), To: day.Add(11 * time.Hour)}, 0, []string{"e3", "e2", "e5"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, pages := collect(tc.f, tc.limit)
			if !slices.Equal(got, tc.want) || pages != tc.wantPages {
				t.Fatalf("got %v in %d pages, want %v in %d", got, pages, tc.want, tc.wantPages)
			}
		})
	}
	if _, _, err := st.Usage().ListRequests(ctx, store.UsageFilter{}, 10, "garbage"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad cursor = %v", err)
	}
}
