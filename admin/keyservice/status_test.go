package keyservice

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

func TestDeveloperStatus(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	budget := decimal.RequireFromString("40")
	u, err := st.Users().Create(ctx, store.NewUser{Name: "dev", MonthlyBudgetUSD: &budget})
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.Users().Create(ctx, store.NewUser{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	ev := func(id string, user uuid.UUID, p store.Provider, at time.Time, cost string, in, read, w5 int64) store.UsageEvent {
		e := spendEvent(id, user, p, at, cost)
		e.InputTokens, e.CacheReadTokens, e.CacheWrite5mTokens = in, read, w5
		return e
	}
	if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{
		ev("s1", u.ID, store.ProviderAnthropic, now.Add(-2*time.Hour), "1.25", 100, 800, 100), // today
		ev("s2", u.ID, store.ProviderBedrock, now.Add(-26*time.Hour), "2.5", 1000, 0, 0),      // this month, not today
		ev("s3", u.ID, store.ProviderBedrock, now.AddDate(0, -1, 0), "9", 10, 0, 0),           // last month
		ev("s4", other.ID, store.ProviderAnthropic, now.Add(-time.Hour), "7", 10, 0, 0),       // someone else
	}); err != nil {
		t.Fatal(err)
	}
	reset := now.Add(3 * time.Hour)
	f := func(v float64) *float64 { return &v }
	if err := st.Headroom().Record(ctx, []store.HeadroomSample{
		{UserID: u.ID, AccessKeyID: uuid.New(), SampledAt: now.Add(-30 * time.Minute), Status: "allowed", Utilization5h: f(0.5), Reset5h: &reset},
		{UserID: u.ID, AccessKeyID: uuid.New(), SampledAt: now.Add(-6 * time.Minute), Status: "allowed_warning", Claim: "five_hour",
			Utilization5h: f(0.9), Reset5h: &reset},
	}); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(st, Options{Now: func() time.Time { return now }})
	resp, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: u.ID.String()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMonth() != "2026-03" || resp.GetPlanUsd() != "1.250000" || resp.GetBedrockUsd() != "2.500000" ||
		resp.GetMonthlyBudgetUsd() != "40.00" || resp.GetRequestsToday() != 1 || !resp.GetMonthResetsAt().AsTime().Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("status %v", resp)
	}
	// 800 ÷ (800 + 100 + 100).
	if resp.CacheHitRateToday == nil || resp.GetCacheHitRateToday() != 0.8 {
		t.Fatalf("cache hit rate %v", resp.CacheHitRateToday)
	}
	h := resp.GetHeadroom()
	// 0.5 → 0.9 in 24 minutes: 1.0 an hour; 0.1 left: 6 minutes after the
	// newest reading, before the reset.
	if h == nil || h.GetUtilization_5H() != 0.9 || h.GetStatus() != "allowed_warning" || h.GetClaim() != "five_hour" ||
		h.Utilization_7D != nil || h.GetLimitAt_5H() == nil || h.GetLimitAt_5H().AsTime().Sub(now).Abs() > time.Second {
		t.Fatalf("headroom %v", h)
	}
	// Nothing recorded: no headroom, no cache rate; unknown and malformed
	// users are refused.
	resp, err = srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: other.ID.String()})
	if err != nil || resp.GetHeadroom() != nil || resp.GetMonthlyBudgetUsd() != "" || resp.GetPlanUsd() != "7.000000" {
		t.Fatalf("other: %v, %v", resp, err)
	}
	if _, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: uuid.NewString()}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed user: %v", err)
	}
}

// TestDeveloperStatusBudgets: the budgets of the user, of their team and of
// the asking key, each with its exact spend in its current window (billing
// time zone Europe/Paris); nothing of other keys or other users.
func TestDeveloperStatusBudgets(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// Wednesday 2026-12-09 11:00 in Paris: the day started at 12-08 23:00Z,
	// the week (Monday 12-07) at 12-06 23:00Z, the month at 11-30 23:00Z.
	now := time.Date(2026, 12, 9, 10, 0, 0, 0, time.UTC)
	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := st.Teams().Create(ctx, store.NewTeam{Name: "me-team"})
	if err != nil {
		t.Fatal(err)
	}
	user := func(name string, team bool) uuid.UUID {
		u, err := st.Users().Create(ctx, store.NewUser{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if team {
			if _, err := st.Pool().Exec(ctx, `UPDATE users SET team_id = $1 WHERE id = $2`, tm.ID, u.ID); err != nil {
				t.Fatal(err)
			}
		}
		return u.ID
	}
	key := func(u uuid.UUID) uuid.UUID {
		k, _ := keys.Generate()
		ak, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
		if err != nil {
			t.Fatal(err)
		}
		return ak.ID
	}
	dev, mate, other := user("me-dev", true), user("me-mate", true), user("me-other", false)
	asking, second, othersKey := key(dev), key(dev), key(other)
	budget := func(scope string, subject uuid.UUID, window, metric, amount, action string, downgrade map[string]string) string {
		b, err := st.Budgets().Create(ctx, store.Budget{Scope: scope, SubjectID: subject, Window: window, Metric: metric,
			AmountUSD: decimal.RequireFromString(amount), Thresholds: []int{80, 100}, Action: action, Downgrade: downgrade})
		if err != nil {
			t.Fatal(err)
		}
		return b.ID.String()
	}
	userDaily := budget("user", dev, "daily", "all", "5", "downgrade", map[string]string{"opus": "claude-sonnet-4-5"})
	teamWeekly := budget("team", tm.ID, "weekly", "bedrock", "20", "block", nil)
	askingMonthly := budget("key", asking, "monthly", "plan_list", "10", "plan_only", nil)
	secondDaily := budget("key", second, "daily", "all", "1", "block", nil)
	budget("user", mate, "daily", "all", "1", "block", nil)
	budget("user", other, "daily", "all", "1", "block", nil)
	budget("key", othersKey, "daily", "all", "1", "block", nil)

	ev := func(id string, u, k uuid.UUID, p store.Provider, at time.Time, cost string) store.UsageEvent {
		e := spendEvent(id, u, p, at, cost)
		e.AccessKeyID = k
		return e
	}
	if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{
		ev("mb1", dev, asking, store.ProviderAnthropic, time.Date(2026, 12, 9, 9, 0, 0, 0, time.UTC), "1.25"),   // day, key month
		ev("mb2", dev, second, store.ProviderBedrock, time.Date(2026, 12, 8, 23, 30, 0, 0, time.UTC), "2.5"),    // day, week, second's day
		ev("mb3", dev, asking, store.ProviderBedrock, time.Date(2026, 12, 8, 22, 30, 0, 0, time.UTC), "0.75"),   // Tuesday: week only
		ev("mb4", mate, uuid.New(), store.ProviderBedrock, time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), "4"),  // the team's week
		ev("mb5", other, othersKey, store.ProviderBedrock, time.Date(2026, 12, 9, 9, 0, 0, 0, time.UTC), "100"), // someone else
		ev("mb6", dev, asking, store.ProviderAnthropic, time.Date(2026, 12, 6, 22, 30, 0, 0, time.UTC), "0.5"),  // last week, key month
		ev("mb7", dev, asking, store.ProviderBedrock, time.Date(2026, 12, 6, 22, 59, 0, 0, time.UTC), "3"),      // Sunday 23:59: last week
		ev("mb8", dev, asking, store.ProviderAnthropic, time.Date(2026, 11, 30, 22, 59, 0, 0, time.UTC), "8"),   // November in Paris
	}); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(st, Options{Redis: rdb, RedisPrefix: prefix, Location: paris, Now: func() time.Time { return now }})

	const (
		dayEnd   = "2026-12-09T23:00:00Z"
		weekEnd  = "2026-12-13T23:00:00Z"
		monthEnd = "2026-12-31T23:00:00Z"
	)
	// user day (all): mb1 1.25 + mb2 2.5; team week (Bedrock): mb2 2.5 +
	// mb3 0.75 + mb4 4; asking key month (Plan): mb1 1.25 + mb6 0.5; second
	// key day (all): mb2 2.5.
	keyRow := "key monthly plan_list 10.000000 1.750000 plan_only 2026-12-01 " + monthEnd + " map[]"
	teamRow := "team weekly bedrock 20.000000 7.250000 block 2026-12-07 " + weekEnd + " map[]"
	userRow := "user daily all 5.000000 3.750000 downgrade 2026-12-09 " + dayEnd + " map[opus:claude-sonnet-4-5]"
	for _, tc := range []struct {
		name  string
		keyID string
		ids   []string
		want  []string
	}{
		{"asking key", asking.String(), []string{askingMonthly, teamWeekly, userDaily}, []string{keyRow, teamRow, userRow}},
		{"no key", "", []string{teamWeekly, userDaily}, []string{teamRow, userRow}},
		{"second key", second.String(), []string{secondDaily, teamWeekly, userDaily},
			[]string{"key daily all 1.000000 2.500000 block 2026-12-09 " + dayEnd + " map[]", teamRow, userRow}},
		{"someone else's key", othersKey.String(), []string{teamWeekly, userDaily}, []string{teamRow, userRow}},
	} {
		resp, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: dev.String(), KeyId: tc.keyID})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ids, got []string
		for _, b := range resp.GetBudgets() {
			ids = append(ids, b.GetId())
			got = append(got, fmt.Sprint(b.GetScope(), " ", b.GetWindow(), " ", b.GetMetric(), " ", b.GetLimitUsd(), " ", b.GetSpentUsd(), " ",
				b.GetAction(), " ", b.GetWindowStart(), " ", b.GetResetsAt().AsTime().Format(time.RFC3339), " ", b.GetDowngrade()))
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.ids) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: budgets\n%q %q\nwant\n%q %q", tc.name, ids, got, tc.ids, tc.want)
		}
	}
	// The spend is BudgetSpend's, but the counters are the ingester's:
	// DeveloperStatus leaves them alone (a stale SET would roll one back).
	counter := billing.BudgetKey(prefix, "team", tm.ID.String(), "bedrock", billing.Window{Kind: "weekly", Key: "2026-12-07"})
	if n, err := rdb.Exists(ctx, counter).Result(); err != nil || n != 0 {
		t.Errorf("counter %s exists (%d, %v): DeveloperStatus set it", counter, n, err)
	}
	r, err := srv.BudgetSpend(ctx, &keyservicev1.BudgetSpendRequest{Scope: "team", SubjectId: tm.ID.String(), Metric: "bedrock", Window: "weekly", WindowStart: "2026-12-07"})
	if err != nil || r.GetSpendUsd() != "7.250000" {
		t.Fatalf("BudgetSpend = %v, %v; want 7.250000", r, err)
	}
	if v, err := rdb.Get(ctx, counter).Result(); err != nil || v != "7.250000" {
		t.Errorf("counter %s = %q, %v after BudgetSpend; want 7.250000 (a reused read-only answer must not skip the SET)", counter, v, err)
	}
	// Another user sees their own budget alone (without a key: not their
	// key's); a malformed key_id is refused.
	if resp, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: other.String()}); err != nil ||
		len(resp.GetBudgets()) != 1 || resp.GetBudgets()[0].GetScope() != "user" || resp.GetBudgets()[0].GetSpentUsd() != "100.000000" {
		t.Fatalf("other: %v, %v", resp.GetBudgets(), err)
	}
	if _, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: dev.String(), KeyId: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed key_id: %v", err)
	}
}
