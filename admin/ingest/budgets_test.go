package ingest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// TestBudgetCountersAndThresholds: every batch SETs the exact window spend
// of the budgets it touches, and each threshold notifies once per window,
// even with two ingesters committing the same batch at once and a batch
// delivered again.
func TestBudgetCountersAndThresholds(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	day := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	b, err := st.Budgets().Create(ctx, store.Budget{Scope: "user", SubjectID: userA, Window: "daily", Metric: "all",
		AmountUSD: dec("2"), Thresholds: []int{50, 80, 100}, Action: "notify"})
	if err != nil {
		t.Fatal(err)
	}
	// A Bedrock-only budget of the key: Plan rows do not count for it.
	if _, err := st.Budgets().Create(ctx, store.Budget{Scope: "key", SubjectID: keyA, Window: "weekly", Metric: "bedrock",
		AmountUSD: dec("1"), Thresholds: []int{100}, Action: "block"}); err != nil {
		t.Fatal(err)
	}
	in1 := newIngester(t, st, rdb, prefix, time.UTC, day)
	in2 := newIngester(t, st, rdb, prefix, time.UTC, day)
	today, _ := billing.WindowOf("daily", day, time.UTC)
	week, _ := billing.WindowOf("weekly", day, time.UTC)
	userKey := billing.BudgetKey(prefix, "user", userA.String(), "all", today)
	keyKey := billing.BudgetKey(prefix, "key", keyA.String(), "bedrock", week)

	// claude-haiku-4-5 on Plan: $1 per million input tokens.
	haiku := func(id string, at time.Time, input int64) usage.Event {
		return event(id, at, usage.ProviderAnthropic, "claude-haiku-4-5", input, 0)
	}
	alerts := func() []string {
		rows, err := st.Pool().Query(ctx, `SELECT window_start::text || ' ' || threshold FROM budget_alerts WHERE budget_id = $1 ORDER BY 1`, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	notified := func() []string {
		rows, err := st.Pool().Query(ctx, `SELECT dedupe_key FROM notification_events WHERE type = 'budget.threshold' ORDER BY dedupe_key`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	steps := []struct {
		name    string
		batches [][]usage.Event
		counter string
		alerts  []string
	}{
		{"50 %", [][]usage.Event{{haiku("b1", day, 1_000_000)}}, "1.000000", []string{"2026-12-07 50"}},
		// Two ingesters commit the same batch concurrently: one notification.
		{"80 % twice at once", [][]usage.Event{{haiku("b2", day.Add(time.Minute), 700_000)}, {haiku("b2", day.Add(time.Minute), 700_000)}},
			"1.700000", []string{"2026-12-07 50", "2026-12-07 80"}},
		{"100 %", [][]usage.Event{{haiku("b3", day.Add(2*time.Minute), 300_000)}}, "2.000000",
			[]string{"2026-12-07 100", "2026-12-07 50", "2026-12-07 80"}},
		{"redelivered", [][]usage.Event{{haiku("b3", day.Add(2*time.Minute), 300_000)}}, "2.000000",
			[]string{"2026-12-07 100", "2026-12-07 50", "2026-12-07 80"}},
		// The next day is a new window: 50 % notifies again for it (the
		// batch's own window is refreshed, as well as the current one).
		{"next day", [][]usage.Event{{haiku("b4", day.Add(24*time.Hour), 1_200_000)}}, "2.000000",
			[]string{"2026-12-07 100", "2026-12-07 50", "2026-12-07 80", "2026-12-08 50"}},
	}
	for _, s := range steps {
		var wg sync.WaitGroup
		errs := make([]error, len(s.batches))
		for i, batch := range s.batches {
			in := in1
			if i%2 == 1 {
				in = in2
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = in.Handle(ctx, batch)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		if v, err := rdb.Get(ctx, userKey).Result(); err != nil || v != s.counter {
			t.Fatalf("%s: counter %s = %q, %v; want %s", s.name, userKey, v, err, s.counter)
		}
		if got := alerts(); !equal(got, s.alerts) {
			t.Fatalf("%s: alerts %q; want %q", s.name, got, s.alerts)
		}
	}
	id := b.ID.String()
	want := []string{
		"budget.threshold:" + id + ":2026-12-07:100", "budget.threshold:" + id + ":2026-12-07:50",
		"budget.threshold:" + id + ":2026-12-07:80", "budget.threshold:" + id + ":2026-12-08:50",
	}
	if got := notified(); !equal(got, want) {
		t.Fatalf("notifications %q; want %q", got, want)
	}
	if v, err := rdb.Get(ctx, keyKey).Result(); err != nil || v != "0.000000" {
		t.Fatalf("Bedrock key counter = %q, %v; want 0.000000 (Plan rows do not count)", v, err)
	}
	if ttl := rdb.TTL(ctx, userKey).Val(); ttl <= 39*24*time.Hour {
		t.Fatalf("counter TTL %v", ttl)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTeamMonthlyBudgetNotifies: a team's monthly_budget_usd, set as the
// teams API sets it, is a budget like any other: crossing 50 % of it
// notifies once in the month.
func TestTeamMonthlyBudgetNotifies(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	day := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ten := dec("10")
	team, err := st.Teams().Create(ctx, store.NewTeam{Name: "Platform", MonthlyBudgetUSD: &ten})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO users (id, name, team_id) VALUES ($1, 'member', $2)`, userA, team.ID); err != nil {
		t.Fatal(err)
	}
	bs, err := st.Budgets().List(ctx, store.BudgetScopeTeam, team.ID)
	if err != nil || len(bs) != 1 {
		t.Fatalf("team budgets %+v, %v", bs, err)
	}
	in := newIngester(t, st, rdb, prefix, time.UTC, day)
	month, _ := billing.WindowOf("monthly", day, time.UTC)
	counter := billing.BudgetKey(prefix, "team", team.ID.String(), "bedrock", month)

	// claude-sonnet-4-5 on Bedrock: $3 per million input tokens.
	sonnet := func(id string, at time.Time, input int64) usage.Event {
		return event(id, at, usage.ProviderBedrock, "claude-sonnet-4-5", input, 0)
	}
	for _, s := range []struct {
		name    string
		batch   []usage.Event
		counter string
		alerts  []string
	}{
		{"30 %", []usage.Event{sonnet("t1", day, 1_000_000)}, "3.000000", nil},
		{"60 %", []usage.Event{sonnet("t2", day.Add(time.Hour), 1_000_000)}, "6.000000", []string{"2026-12-01 50"}},
		{"75 %: 50 % again in the month, no new alert", []usage.Event{sonnet("t3", day.Add(48*time.Hour), 500_000)}, "7.500000",
			[]string{"2026-12-01 50"}},
		{"redelivered", []usage.Event{sonnet("t2", day.Add(time.Hour), 1_000_000)}, "7.500000", []string{"2026-12-01 50"}},
	} {
		if err := in.Handle(ctx, s.batch); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if v, err := rdb.Get(ctx, counter).Result(); err != nil || v != s.counter {
			t.Fatalf("%s: counter %s = %q, %v; want %s", s.name, counter, v, err, s.counter)
		}
		rows, err := st.Pool().Query(ctx, `SELECT window_start::text || ' ' || threshold FROM budget_alerts WHERE budget_id = $1 ORDER BY 1`, bs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || !equal(got, s.alerts) {
			t.Fatalf("%s: alerts %q, %v; want %q", s.name, got, err, s.alerts)
		}
	}
	rows, err := st.Pool().Query(ctx, `SELECT dedupe_key FROM notification_events WHERE type = 'budget.threshold' ORDER BY dedupe_key`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if want := []string{"budget.threshold:" + bs[0].ID.String() + ":2026-12-01:50"}; err != nil || !equal(got, want) {
		t.Fatalf("notifications %q, %v; want %q", got, err, want)
	}
}
