package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// TestUserRollupMatchesRawEvents: the per-user day, week and month rollup
// equals the raw events summed the same way, and user groups and the
// developer list equal the raw events' sums, for data spanning three
// months inserted out of order, with events arriving weeks late, replays,
// a price correction re-costing stored events and their rollups, and the
// retention job dropping the oldest month (whose rollup rows stay as they
// were).
func TestUserRollupMatchesRawEvents(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	rng := rand.New(rand.NewPCG(5, 6))
	var users []uuid.UUID
	for i := range 4 {
		u, err := st.Users().Create(ctx, store.NewUser{Name: "rollup " + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
	}
	keys := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	// 2026-08-20 to 2026-11-05: three month boundaries, weeks crossing them.
	start := time.Date(2026, 8, 20, 0, 0, 0, 0, time.UTC)
	span := 77 * 24 * time.Hour
	var n int
	gen := func(size int, from time.Time, within time.Duration) []store.UsageEvent {
		evs := make([]store.UsageEvent, size)
		for i := range evs {
			n++
			e := event("ur-"+strconv.Itoa(n), from.Add(time.Duration(rng.Int64N(int64(within)))),
				users[rng.IntN(len(users))], keys[rng.IntN(len(keys))])
			e.RequestedModel = []string{"claude-opus-5-5", "claude-sonnet-4-6", "claude-haiku-4-5"}[rng.IntN(3)]
			if rng.IntN(3) == 0 {
				e.Provider, e.Fallback = store.ProviderBedrock, rng.IntN(2) == 0
			}
			e.Status = []int{200, 200, 529, 0}[rng.IntN(4)]
			e.Aborted = rng.IntN(9) == 0
			e.InputTokens, e.OutputTokens, e.CacheReadTokens = rng.Int64N(10000), rng.Int64N(2000), rng.Int64N(5000)
			e.CacheWrite5mTokens, e.CacheWrite1hTokens = rng.Int64N(500), rng.Int64N(300)
			e.CostUSD = decimal.New(rng.Int64N(1_000_000), -6)
			evs[i] = e
		}
		return evs
	}
	insert := func(evs []store.UsageEvent) int {
		t.Helper()
		got, err := st.Usage().InsertEvents(ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Batches in random time order over the whole span, then late events:
	// batches for weeks already rolled up, after newer ones.
	for range 6 {
		insert(gen(250, start, span))
	}
	late := gen(200, start.Add(3*24*time.Hour), 20*24*time.Hour)
	insert(gen(100, start.Add(70*24*time.Hour), 7*24*time.Hour))
	insert(late)
	// Replays, and a replay with another time, count nowhere.
	if got := insert(late[:60]); got != 0 {
		t.Fatalf("replay stored %d", got)
	}
	moved := late[0]
	moved.EventTime = moved.EventTime.Add(40 * 24 * time.Hour)
	if got := insert([]store.UsageEvent{moved}); got != 0 {
		t.Fatalf("replay with another time stored %d", got)
	}

	check := func(stage string) {
		t.Helper()
		want := textQuery(t, st, userRollup+userSpansOf("usage_events", true))
		got := textQuery(t, st, userRollup+`usage_user_rollup WHERE requests <> 0`)
		if got != want || want == "" {
			t.Fatalf("%s: usage_user_rollup =\n%s\nwant the raw events'\n%s", stage, got, want)
		}
	}
	check("after inserts")

	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	day := func(y int, m time.Month, d int, loc *time.Location) time.Time {
		return time.Date(y, m, d, 0, 0, 0, 0, loc)
	}
	ranges := [][2]time.Time{
		{day(2026, 10, 1, time.UTC), day(2026, 11, 1, time.UTC)},                                             // a month
		{day(2026, 8, 1, time.UTC), day(2026, 12, 1, time.UTC)},                                              // months
		{day(2026, 10, 3, time.UTC), day(2026, 11, 2, time.UTC)},                                             // 30 days: days, weeks, days
		{day(2026, 9, 7, time.UTC), day(2026, 9, 14, time.UTC)},                                              // one week
		{day(2026, 8, 25, time.UTC), day(2026, 10, 9, time.UTC)},                                             // weeks, a month, weeks
		{day(2026, 10, 1, paris), day(2026, 11, 1, paris)},                                                   // a month of another zone
		{day(2026, 10, 3, paris), day(2026, 11, 2, paris)},                                                   // its 30 days, across DST
		{day(2026, 9, 30, time.UTC).Add(90 * time.Minute), day(2026, 10, 17, time.UTC).Add(7 * time.Minute)}, // neither
		{day(2026, 9, 2, time.UTC).Add(5 * time.Hour), day(2026, 9, 2, time.UTC).Add(9 * time.Hour)},
		{day(2026, 9, 2, time.UTC).Add(2 * time.Hour), day(2026, 9, 2, time.UTC).Add(21*time.Hour + 30*time.Minute)},
		{day(2026, 10, 31, paris), day(2026, 11, 1, paris)}, // "today" in Paris: 1 + 23 hours of two UTC days         // hours
	}
	checkGroups := func(stage string) {
		t.Helper()
		for _, r := range ranges {
			name := fmt.Sprintf("%s [%s, %s)", stage, r[0].Format(time.RFC3339), r[1].Format(time.RFC3339))
			got, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{From: r[0], To: r[1], GroupBy: store.GroupByUser})
			if err != nil {
				t.Fatal(name, err)
			}
			for i := range got {
				got[i].Bucket = time.Time{}
			}
			// Hour buckets starting in [from, to): the events from the
			// first whole hour at or after from to the one at or after to.
			want := rawSummary(t, st, "user_id::text", "", ceilHour(r[0]), ceilHour(r[1]))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: user groups\n%v\nwant\n%v", name, got, want)
			}
			// Top users: the raw groups ranked by cost, then by id.
			ranked := append([]store.UsageGroup(nil), want...)
			slices.SortStableFunc(ranked, func(a, b store.UsageGroup) int {
				if c := b.PlanCostUSD.Add(b.BedrockCostUSD).Cmp(a.PlanCostUSD.Add(a.BedrockCostUSD)); c != 0 {
					return c
				}
				return strings.Compare(a.Key, b.Key)
			})
			top, active, err := st.Usage().TopUsers(ctx, r[0], r[1], store.ScoreCost, 2)
			if err != nil {
				t.Fatal(name, err)
			}
			if active != len(want) || fmt.Sprint(top) != fmt.Sprint(ranked[:min(2, len(ranked))]) {
				t.Errorf("%s: top users (%d active)\n%v\nwant (%d active)\n%v", name, active, top, len(want), ranked[:min(2, len(ranked))])
			}
			devs, total, err := st.Usage().Developers(ctx, store.DeveloperQuery{From: r[0], To: r[1], Sort: store.SortByName})
			if err != nil || total != len(users) {
				t.Fatalf("%s: developers: %d, %v", name, total, err)
			}
			byUser := map[string]store.UsageGroup{}
			for _, g := range want {
				byUser[g.Key] = g
			}
			for _, d := range devs {
				w := byUser[d.ID.String()]
				if d.Requests != w.Requests || !d.PlanCostUSD.Equal(w.PlanCostUSD) || !d.BedrockCostUSD.Equal(w.BedrockCostUSD) {
					t.Errorf("%s: developer %s: %d %s %s, want %d %s %s", name, d.Name, d.Requests, d.PlanCostUSD,
						d.BedrockCostUSD, w.Requests, w.PlanCostUSD, w.BedrockCostUSD)
				}
			}
		}
	}
	checkGroups("after inserts")

	// A price correction re-costs a model's stored events and applies the
	// same change to the hourly and daily rollups (the rollups follow
	// whatever changes usage_daily).
	for _, sql := range []string{
		`UPDATE usage_events SET cost_usd = round(cost_usd * 1.25, 6) WHERE requested_model = 'claude-sonnet-4-6'`,
		`UPDATE usage_hourly h SET cost_usd = e.cost FROM (
			SELECT date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, user_id, access_key_id,
				requested_model, provider, sum(cost_usd) AS cost
			FROM usage_events WHERE requested_model = 'claude-sonnet-4-6' GROUP BY 1, 2, 3, 4, 5) e
		WHERE (h.bucket, h.user_id, h.access_key_id, h.model, h.provider) = (e.bucket, e.user_id, e.access_key_id, e.requested_model, e.provider)`,
		`UPDATE usage_daily h SET cost_usd = e.cost FROM (
			SELECT date_trunc('day', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, user_id, access_key_id,
				requested_model, provider, sum(cost_usd) AS cost
			FROM usage_events WHERE requested_model = 'claude-sonnet-4-6' GROUP BY 1, 2, 3, 4, 5) e
		WHERE (h.bucket, h.user_id, h.access_key_id, h.model, h.provider) = (e.bucket, e.user_id, e.access_key_id, e.requested_model, e.provider)`,
	} {
		if _, err := st.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	check("after a price correction")
	checkGroups("after a price correction")

	// Retention drops August's raw events; the rollups keep August as it
	// was and still equal the raw events for the months kept.
	august := userRollup + `usage_user_rollup WHERE requests <> 0 AND bucket < '2026-09-01'`
	before := textQuery(t, st, august)
	if dropped, err := st.Usage().DropPartitionsBefore(ctx, day(2026, 9, 1, time.UTC)); err != nil || len(dropped) != 1 {
		t.Fatalf("retention dropped %v, %v", dropped, err)
	}
	if got := textQuery(t, st, august); got != before || before == "" {
		t.Fatalf("August's rollup rows after retention =\n%s\nwant\n%s", got, before)
	}
	kept := userRollup + `usage_user_rollup WHERE requests <> 0 AND bucket >= '2026-09-01'`
	if got, want := textQuery(t, st, kept), textQuery(t, st, userRollup+userSpansOf("usage_events", true)+` WHERE bucket >= '2026-09-01'`); got != want {
		t.Fatalf("after retention: rollup rows of the months kept =\n%s\nwant\n%s", got, want)
	}
	// Late events for the kept months after retention still add up.
	insert(gen(150, day(2026, 9, 1, time.UTC), 60*24*time.Hour))
	if got, want := textQuery(t, st, kept), textQuery(t, st, userRollup+userSpansOf("usage_events", true)+` WHERE bucket >= '2026-09-01'`); got != want {
		t.Fatalf("after late events: rollup rows =\n%s\nwant\n%s", got, want)
	}
}

// ceilHour is the first whole hour at or after t.
func ceilHour(t time.Time) time.Time {
	h := t.Truncate(time.Hour)
	if h.Before(t) {
		h = h.Add(time.Hour)
	}
	return h
}
