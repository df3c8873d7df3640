package store_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// allUsersRollup is usage_hourly_all's content, ordered, as text.
const allUsersRollup = `SELECT string_agg(concat_ws(' ', bucket, model, provider, requests, input_tokens, output_tokens,
	cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted), E'\n'
	ORDER BY bucket, model, provider) FROM `

// perUserRollupSummed is usage_hourly summed over users and keys, in the
// same shape (rows whose counters are all zero left out, as the all-users
// table never had them).
const perUserRollupSummed = `(SELECT bucket, model, provider, sum(requests) requests, sum(input_tokens) input_tokens,
	sum(output_tokens) output_tokens, sum(cache_read_tokens) cache_read_tokens,
	sum(cache_write_5m_tokens) cache_write_5m_tokens, sum(cache_write_1h_tokens) cache_write_1h_tokens,
	sum(cost_usd) cost_usd, sum(fallbacks) fallbacks, sum(errors) errors, sum(aborted) aborted
	FROM usage_hourly GROUP BY 1, 2, 3) s`

func textQuery(t *testing.T, st *store.Store, sql string) string {
	t.Helper()
	var s *string
	if err := st.Pool().QueryRow(testCtx(t), sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// TestAllUsersRollup checks that the all-users hourly rollup equals the
// per-user hourly rollups summed, through new rows, upserts into existing
// rows, replays and deletes, and that all-users summaries equal what the
// per-user rollups give.
func TestAllUsersRollup(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	users := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	keys := []uuid.UUID{uuid.New(), uuid.New()}
	models := []string{"claude-opus-5-5", "claude-sonnet-4-6", "claude-haiku-4-5"}
	start := time.Date(2026, 9, 29, 0, 0, 0, 0, time.UTC) // crosses a month boundary
	var n int
	batch := func(size int) []store.UsageEvent {
		evs := make([]store.UsageEvent, size)
		for i := range evs {
			n++
			e := event("all-"+strconv.Itoa(n), start.Add(time.Duration(rng.Int64N(int64(4*24*time.Hour)))),
				users[rng.IntN(len(users))], keys[rng.IntN(len(keys))])
			e.RequestedModel = models[rng.IntN(len(models))]
			if rng.IntN(3) == 0 {
				e.Provider, e.Fallback = store.ProviderBedrock, rng.IntN(2) == 0
			}
			e.Status = []int{200, 200, 429, 0}[rng.IntN(4)]
			e.Aborted = rng.IntN(10) == 0
			e.InputTokens, e.OutputTokens = rng.Int64N(10000), rng.Int64N(2000)
			e.CostUSD = decimal.New(rng.Int64N(1_000_000), -6)
			evs[i] = e
		}
		return evs
	}
	check := func(stage string) {
		t.Helper()
		want := textQuery(t, st, allUsersRollup+perUserRollupSummed+` WHERE requests <> 0`)
		got := textQuery(t, st, allUsersRollup+`usage_hourly_all WHERE requests <> 0`)
		if got != want || want == "" {
			t.Fatalf("%s: usage_hourly_all =\n%s\nwant\n%s", stage, got, want)
		}
	}

	// New rows, then batches that mostly add to existing rows.
	for range 5 {
		evs := batch(200)
		if _, err := st.Usage().InsertEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
		// A replay counts nowhere.
		if got, err := st.Usage().InsertEvents(ctx, evs[:50]); err != nil || got != 0 {
			t.Fatalf("replay = %d, %v", got, err)
		}
	}
	check("after inserts")

	// Summaries without a filter read usage_hourly_all; they must equal the
	// per-user rollups' answer with the old rules (hour/model/provider:
	// hourly buckets starting in [from, to), or daily ones when both bounds
	// are midnight; day: daily buckets starting in [from, to)).
	bounds := [][2]time.Time{
		{start, start.Add(4 * 24 * time.Hour)},                                   // midnights
		{start.Add(5 * time.Hour), start.Add(50 * time.Hour)},                    // hours
		{start.Add(90 * time.Minute), start.Add(3*24*time.Hour + 7*time.Minute)}, // neither
		{start.Add(25 * time.Hour), start.Add(26 * time.Hour)},                   // one hour, no whole day
		{start.Add(-24 * time.Hour), start.Add(24*time.Hour + 30*time.Minute)},   // before the data
		{start.Add(2 * 24 * time.Hour), start.Add(2*24*time.Hour + time.Second)}, // a midnight only
	}
	for _, b := range bounds {
		for _, gb := range []store.UsageGroupBy{store.GroupByHour, store.GroupByDay, store.GroupByModel, store.GroupByProvider} {
			got, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{From: b[0], To: b[1], GroupBy: gb})
			if err != nil {
				t.Fatal(err)
			}
			want := perUserSummary(t, st, gb, b[0], b[1])
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Summary(%s, [%s, %s)) =\n%v\nwant\n%v", gb, b[0], b[1], got, want)
			}
		}
	}

	// Direct changes to usage_hourly (corrections, deletes) are followed too.
	if _, err := st.Pool().Exec(ctx, `UPDATE usage_hourly SET requests = requests + 1, cost_usd = cost_usd + 0.5
		WHERE user_id = $1`, users[0]); err != nil {
		t.Fatal(err)
	}
	check("after update")
	if _, err := st.Pool().Exec(ctx, `UPDATE usage_hourly SET model = 'renamed' WHERE user_id = $1 AND model = 'claude-opus-5-5'`, users[1]); err != nil {
		t.Fatal(err)
	}
	check("after re-keying")
	if _, err := st.Pool().Exec(ctx, `DELETE FROM usage_hourly WHERE user_id = $1`, users[2]); err != nil {
		t.Fatal(err)
	}
	check("after delete")
}

// perUserSummary computes an all-users summary from the per-user rollups
// the way Summary did before usage_hourly_all.
func perUserSummary(t *testing.T, st *store.Store, gb store.UsageGroupBy, from, to time.Time) []store.UsageGroup {
	t.Helper()
	midnight := func(x time.Time) bool { return x.Equal(x.Truncate(24 * time.Hour)) }
	table := "usage_hourly"
	if gb == store.GroupByDay || gb != store.GroupByHour && midnight(from) && midnight(to) {
		table = "usage_daily"
	}
	key := map[store.UsageGroupBy]string{store.GroupByHour: "bucket", store.GroupByDay: "bucket", store.GroupByModel: "model", store.GroupByProvider: "provider"}[gb]
	rows, err := st.Pool().Query(testCtx(t), `SELECT `+key+`::text, sum(requests)::bigint,
		coalesce(sum(requests) FILTER (WHERE provider = 'bedrock'), 0)::bigint, sum(input_tokens)::bigint,
		sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint, sum(cache_write_5m_tokens)::bigint,
		sum(cache_write_1h_tokens)::bigint, coalesce(sum(cost_usd) FILTER (WHERE provider = 'anthropic'), 0),
		coalesce(sum(cost_usd) FILTER (WHERE provider = 'bedrock'), 0), sum(fallbacks)::bigint,
		sum(errors)::bigint, sum(aborted)::bigint
		FROM `+table+` WHERE bucket >= $1 AND bucket < $2 GROUP BY 1 ORDER BY 1`, from, to)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []store.UsageGroup
	for rows.Next() {
		var g store.UsageGroup
		var key string
		if err := rows.Scan(&key, &g.Requests, &g.BedrockRequests, &g.InputTokens, &g.OutputTokens, &g.CacheReadTokens,
			&g.CacheWrite5mTokens, &g.CacheWrite1hTokens, &g.PlanCostUSD, &g.BedrockCostUSD, &g.Fallbacks, &g.Errors,
			&g.Aborted); err != nil {
			t.Fatal(err)
		}
		g.Key = key
		if gb == store.GroupByHour || gb == store.GroupByDay {
			b, err := time.Parse("2006-01-02 15:04:05-07", key)
			if err != nil {
				t.Fatal(err)
			}
			g.Bucket = b.UTC()
			g.Key = g.Bucket.Format(time.RFC3339)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
