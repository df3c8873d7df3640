package store_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// userRollup is usage_user_rollup's content, ordered, as text.
const userRollup = `SELECT string_agg(concat_ws(' ', span, bucket, user_id, requests, bedrock_requests, input_tokens,
	output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, plan_cost_usd, bedrock_cost_usd,
	fallbacks, errors, aborted), E'\n' ORDER BY span, bucket, user_id) FROM `

// userSpansOf sums rows with a bucket (or event_time, for the raw
// events) into usage_user_rollup's spans and columns; counters are the
// rollups' counter columns or, for the raw events, the events counted
// and flagged.
func userSpansOf(source string, raw bool) string {
	at, requests, fallbacks, errors, aborted := "bucket", "requests", "fallbacks", "errors", "aborted"
	if raw {
		at, requests = "event_time", "1"
		fallbacks, errors, aborted = "fallback::int", "(status = 0 OR status >= 400)::int", "aborted::int"
	}
	return `(SELECT s.span, date_trunc(s.span, d.` + at + ` AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, d.user_id,
		sum(` + requests + `) AS requests, coalesce(sum(` + requests + `) FILTER (WHERE provider = 'bedrock'), 0) AS bedrock_requests,
		sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens,
		sum(cache_write_5m_tokens) AS cache_write_5m_tokens, sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
		coalesce(sum(cost_usd) FILTER (WHERE provider = 'anthropic'), 0)::numeric(18,6) AS plan_cost_usd,
		coalesce(sum(cost_usd) FILTER (WHERE provider = 'bedrock'), 0)::numeric(18,6) AS bedrock_cost_usd,
		sum(` + fallbacks + `) AS fallbacks, sum(` + errors + `) AS errors, sum(` + aborted + `) AS aborted
		FROM ` + source + ` d CROSS JOIN (VALUES ('day'), ('week'), ('month')) s(span) GROUP BY 1, 2, 3) x`
}

// TestDashboardRollups: usage_user_rollup equals usage_daily summed over
// keys, models and providers into days, weeks and months through inserts, replays, updates and deletes; user,
// key, fallback-reason and time-zone day groups equal the same sums over
// the raw events (hour buckets starting in the range) for aligned and
// unaligned bounds; the developer list's spend matches.
func TestDashboardRollups(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	rng := rand.New(rand.NewPCG(3, 4))
	var users []uuid.UUID
	for i := range 3 {
		u, err := st.Users().Create(ctx, store.NewUser{Name: "dash " + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
	}
	keys := []uuid.UUID{uuid.New(), uuid.New()}
	start := time.Date(2026, 9, 29, 0, 0, 0, 0, time.UTC)
	var n int
	for range 4 {
		evs := make([]store.UsageEvent, 150)
		for i := range evs {
			n++
			e := event("dash-"+strconv.Itoa(n), start.Add(time.Duration(rng.Int64N(int64(4*24*time.Hour)))),
				users[rng.IntN(len(users))], keys[rng.IntN(len(keys))])
			e.RequestedModel = []string{"claude-opus-5-5", "claude-haiku-4-5"}[rng.IntN(2)]
			if rng.IntN(3) == 0 {
				e.Provider, e.Fallback = store.ProviderBedrock, rng.IntN(2) == 0
				if e.Fallback {
					e.FallbackReason = []string{"plan_429", "plan_5xx"}[rng.IntN(2)]
				}
			}
			e.Status = []int{200, 200, 529, 0}[rng.IntN(4)]
			e.InputTokens, e.OutputTokens, e.CacheReadTokens = rng.Int64N(10000), rng.Int64N(2000), rng.Int64N(5000)
			e.CostUSD = decimal.New(rng.Int64N(1_000_000), -6)
			evs[i] = e
		}
		if _, err := st.Usage().InsertEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if got, err := st.Usage().InsertEvents(ctx, evs[:40]); err != nil || got != 0 {
			t.Fatalf("replay = %d, %v", got, err)
		}
	}
	check := func(stage string) {
		t.Helper()
		want := textQuery(t, st, userRollup+userSpansOf("usage_daily", false)+` WHERE requests <> 0`)
		got := textQuery(t, st, userRollup+`usage_user_rollup WHERE requests <> 0`)
		if got != want || want == "" {
			t.Fatalf("%s: usage_user_rollup =\n%s\nwant\n%s", stage, got, want)
		}
	}
	check("after inserts")

	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	bounds := [][2]time.Time{
		{start, start.Add(4 * 24 * time.Hour)},
		{start.Add(5 * time.Hour), start.Add(50 * time.Hour)},
		{start.Add(90 * time.Minute), start.Add(3*24*time.Hour + 7*time.Minute)},
		{start.Add(25 * time.Hour), start.Add(26 * time.Hour)},
		{start.Add(-24 * time.Hour), start.Add(24*time.Hour + 30*time.Minute)},
	}
	// Hour buckets starting in [from, to) are the events from the first
	// whole hour at or after from to the last one before to.
	hourBounds := func(from, to time.Time) (time.Time, time.Time) {
		f := from.Truncate(time.Hour)
		if f.Before(from) {
			f = f.Add(time.Hour)
		}
		tt := to.Truncate(time.Hour)
		if tt.Before(to) {
			tt = tt.Add(time.Hour)
		}
		return f, tt
	}
	for _, b := range bounds {
		hf, ht := hourBounds(b[0], b[1])
		for _, tc := range []struct {
			gb     store.UsageGroupBy
			user   *uuid.UUID
			loc    *time.Location
			key    string
			filter string
			from   time.Time
			to     time.Time
		}{
			{store.GroupByUser, nil, nil, "user_id::text", "", hf, ht},
			{store.GroupByUser, &users[1], nil, "user_id::text", " AND user_id = '" + users[1].String() + "'", hf, ht},
			{store.GroupByKey, &users[0], nil, "access_key_id::text", " AND user_id = '" + users[0].String() + "'", hf, ht},
			{store.GroupByFallbackReason, nil, nil, "fallback_reason", " AND fallback", hf, ht},
			{store.GroupByFallbackReason, &users[0], nil, "fallback_reason", " AND fallback AND user_id = '" + users[0].String() + "'", hf, ht},
			{store.GroupByDay, nil, paris, "to_char(date_trunc('day', date_trunc('hour', event_time), 'Europe/Paris') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", "", hf, ht},
			{store.GroupByDay, &users[2], paris, "to_char(date_trunc('day', date_trunc('hour', event_time), 'Europe/Paris') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", " AND user_id = '" + users[2].String() + "'", hf, ht},
		} {
			name := fmt.Sprintf("%s user=%v tz=%v [%s, %s)", tc.gb, tc.user != nil, tc.loc != nil, b[0].Format(time.RFC3339), b[1].Format(time.RFC3339))
			got, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{UserID: tc.user, From: b[0], To: b[1], GroupBy: tc.gb, Location: tc.loc})
			if err != nil {
				t.Fatal(name, err)
			}
			want := rawSummary(t, st, tc.key, tc.filter, tc.from, tc.to)
			for i := range got {
				got[i].Bucket = time.Time{}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s:\n%v\nwant\n%v", name, got, want)
			}
		}
	}

	// The developer list's spend is the user groups' spend.
	devs, total, err := st.Usage().Developers(ctx, store.DeveloperQuery{From: bounds[2][0], To: bounds[2][1], Sort: store.SortBySpend, Desc: true})
	if err != nil || total != 3 || len(devs) != 3 {
		t.Fatalf("developers = %d of %d, %v", len(devs), total, err)
	}
	groups, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{From: bounds[2][0], To: bounds[2][1], GroupBy: store.GroupByUser})
	if err != nil {
		t.Fatal(err)
	}
	spend := map[string]string{}
	for _, g := range groups {
		spend[g.Key] = g.BedrockCostUSD.String() + " " + g.PlanCostUSD.String() + " " + strconv.FormatInt(g.Requests, 10)
	}
	for i, d := range devs {
		if got := d.BedrockCostUSD.String() + " " + d.PlanCostUSD.String() + " " + strconv.FormatInt(d.Requests, 10); got != spend[d.ID.String()] {
			t.Errorf("developer %s: %s, want %s", d.Name, got, spend[d.ID.String()])
		}
		if i > 0 && d.BedrockCostUSD.GreaterThan(devs[i-1].BedrockCostUSD) {
			t.Errorf("not sorted by spend: %v", devs)
		}
	}

	// Direct changes to usage_daily are followed too.
	if _, err := st.Pool().Exec(ctx, `UPDATE usage_daily SET requests = requests + 1, cost_usd = cost_usd + 0.5 WHERE user_id = $1`, users[0]); err != nil {
		t.Fatal(err)
	}
	check("after update")
	if _, err := st.Pool().Exec(ctx, `DELETE FROM usage_daily WHERE user_id = $1`, users[2]); err != nil {
		t.Fatal(err)
	}
	check("after delete")
}

// rawSummary sums the raw events by key over [from, to).
func rawSummary(t *testing.T, st *store.Store, key, filter string, from, to time.Time) []store.UsageGroup {
	t.Helper()
	rows, err := st.Pool().Query(testCtx(t), `SELECT `+key+`, count(*), count(*) FILTER (WHERE provider = 'bedrock'),
		sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint,
		sum(cache_write_5m_tokens)::bigint, sum(cache_write_1h_tokens)::bigint,
		coalesce(sum(cost_usd) FILTER (WHERE provider = 'anthropic'), 0), coalesce(sum(cost_usd) FILTER (WHERE provider = 'bedrock'), 0),
		count(*) FILTER (WHERE fallback), count(*) FILTER (WHERE status = 0 OR status >= 400), count(*) FILTER (WHERE aborted)
		FROM usage_events WHERE event_time >= $1 AND event_time < $2`+filter+` GROUP BY 1 ORDER BY 1`, from, to)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []store.UsageGroup
	for rows.Next() {
		var g store.UsageGroup
		if err := rows.Scan(&g.Key, &g.Requests, &g.BedrockRequests, &g.InputTokens, &g.OutputTokens, &g.CacheReadTokens,
			&g.CacheWrite5mTokens, &g.CacheWrite1hTokens, &g.PlanCostUSD, &g.BedrockCostUSD, &g.Fallbacks, &g.Errors, &g.Aborted); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
