package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

func TestBudgets(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	u1, u2, k1, _ := usageFixture(t, st)
	bs := st.Budgets()

	b, err := bs.Create(ctx, store.Budget{Scope: "user", SubjectID: u1, Window: "daily", Metric: "all",
		AmountUSD: decimal.RequireFromString("3.50"), Thresholds: []int{50, 100}, Action: "downgrade",
		Downgrade: map[string]string{"claude-opus-5-5": "claude-sonnet-4-5"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := bs.Get(ctx, b.ID)
	if err != nil || got.Downgrade["claude-opus-5-5"] != "claude-sonnet-4-5" || len(got.Thresholds) != 2 || got.Thresholds[1] != 100 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := bs.Create(ctx, store.Budget{Scope: "user", SubjectID: u1, Window: "daily", Metric: "all", Action: "block"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate budget: %v; want ErrConflict", err)
	}
	for _, tc := range []struct {
		name string
		b    store.Budget
	}{
		{"scope", store.Budget{Scope: "org", SubjectID: u1, Window: "daily", Metric: "all", Action: "block"}},
		{"window", store.Budget{Scope: "user", SubjectID: u1, Window: "hourly", Metric: "all", Action: "block"}},
		{"threshold", store.Budget{Scope: "user", SubjectID: u1, Window: "weekly", Metric: "all", Action: "block", Thresholds: []int{0}}},
		{"downgrade without map", store.Budget{Scope: "user", SubjectID: u1, Window: "weekly", Metric: "all", Action: "downgrade"}},
		{"cents", store.Budget{Scope: "user", SubjectID: u1, Window: "weekly", Metric: "all", Action: "block", AmountUSD: decimal.RequireFromString("0.001")}},
	} {
		if _, err := bs.Create(ctx, tc.b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: Create = %v; want ErrInvalid", tc.name, err)
		}
	}
	kb, err := bs.Create(ctx, store.Budget{Scope: "key", SubjectID: k1, Window: "monthly", Metric: "bedrock", AmountUSD: decimal.NewFromInt(1), Action: "block"})
	if err != nil {
		t.Fatal(err)
	}

	// Spend per scope and metric on 2026-10-05 (usageFixture): u1 has
	// Plan 1.00 (k1), Bedrock 2.00 (k1) and 0.50 (k2).
	day := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		scope, metric string
		subject       uuid.UUID
		from, to      time.Time
		want          string
	}{
		{"user", "all", u1, day, day.AddDate(0, 0, 1), "3.5"},
		{"user", "bedrock", u1, day, day.AddDate(0, 0, 1), "2.5"},
		{"user", "plan_list", u1, day, day.AddDate(0, 0, 1), "1"},
		{"key", "all", k1, day, day.AddDate(0, 0, 1), "3"},
		{"key", "bedrock", k1, day.Add(9*time.Hour + 15*time.Minute), day.Add(10 * time.Hour), "2"},
		{"user", "bedrock", u2, day, day.AddDate(0, 0, 1), "8"},
		{"team", "all", uuid.New(), day, day.AddDate(0, 0, 1), "0"},
	} {
		s, err := bs.Spend(ctx, tc.scope, tc.subject, tc.metric, tc.from, tc.to)
		if err != nil || !s.Equal(decimal.RequireFromString(tc.want)) {
			t.Errorf("Spend(%s, %s) = %s, %v; want %s", tc.scope, tc.metric, s, err, tc.want)
		}
	}

	// A team's budgets, its monthly_budget_usd and plan_budget_usd among
	// them, reach its members' requests.
	var member uuid.UUID
	tm, err := st.Teams().Create(ctx, store.NewTeam{Name: "platform", MonthlyBudgetUSD: ptr(decimal.NewFromInt(100)),
		PlanBudgetUSD: ptr(decimal.NewFromInt(40))})
	if err != nil {
		t.Fatal(err)
	}
	team := tm.ID
	if err := st.Pool().QueryRow(ctx, `INSERT INTO users (name, team_id) VALUES ('member', $1) RETURNING id`, team).Scan(&member); err != nil {
		t.Fatal(err)
	}
	tb, err := bs.Create(ctx, store.Budget{Scope: "team", SubjectID: team, Window: "weekly", Metric: "bedrock", AmountUSD: decimal.NewFromInt(5), Action: "plan_only"})
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := bs.ForRequest(ctx, k1, member)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range reqs {
		lines = append(lines, fmt.Sprint(r.Scope, " ", r.Window, " ", r.Metric, " ", r.AmountUSD.StringFixed(2), " ", r.Action, " ", r.Thresholds))
	}
	want := []string{
		"key monthly bedrock 1.00 block []",
		"team monthly bedrock 100.00 block [50 80 100]",
		"team monthly plan_list 40.00 notify [50 80 100]",
		"team weekly bedrock 5.00 plan_only []",
	}
	if len(lines) != len(want) {
		t.Fatalf("ForRequest = %q; want %q", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Fatalf("ForRequest = %q; want %q", lines, want)
		}
	}
	// A developer sees their own and their team's budgets, and the asking
	// key's only when it is theirs: mk is member's, k1 (u1's in the usage
	// fixture) is not an access key of member's.
	mk, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: member, Name: "laptop", Hash: randomHash(t), Prefix: "ak_abcdefgh"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Create(ctx, store.Budget{Scope: "key", SubjectID: mk.ID, Window: "daily", Metric: "all", AmountUSD: decimal.NewFromInt(2), Action: "block"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Create(ctx, store.Budget{Scope: "user", SubjectID: member, Window: "monthly", Metric: "all", AmountUSD: decimal.NewFromInt(9), Action: "notify"}); err != nil {
		t.Fatal(err)
	}
	teamRows := []string{"team monthly bedrock", "team monthly plan_list", "team weekly bedrock"}
	for _, tc := range []struct {
		name      string
		user, key uuid.UUID
		want      []string
	}{
		{"member with their key", member, mk.ID, append([]string{"key daily all"}, append(teamRows, "user monthly all")...)},
		{"member without a key", member, uuid.Nil, append(teamRows[:3:3], "user monthly all")},
		{"member with another's key", member, k1, append(teamRows[:3:3], "user monthly all")},
		{"u1 with member's key", u1, mk.ID, []string{"user daily all"}},
		{"u2", u2, uuid.Nil, nil},
	} {
		devs, err := bs.ForDeveloper(ctx, tc.user, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range devs {
			got = append(got, r.Scope+" "+r.Window+" "+r.Metric)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: ForDeveloper = %q; want %q", tc.name, got, tc.want)
		}
	}
	if l, err := bs.List(ctx, "team", uuid.Nil); err != nil || len(l) != 3 || l[2].ID != tb.ID {
		t.Fatalf("List(team) = %+v, %v", l, err)
	}
	if l, err := bs.List(ctx, "", u1); err != nil || len(l) != 1 || l[0].ID != b.ID {
		t.Fatalf("List(u1) = %+v, %v", l, err)
	}

	// An alert is recorded once per window and threshold.
	for i, want := range []bool{true, false} {
		if ok, err := bs.RecordAlert(ctx, kb.ID, "2026-10-01", 80); err != nil || ok != want {
			t.Fatalf("RecordAlert #%d = %v, %v; want %v", i, ok, err, want)
		}
	}
	if ok, err := bs.RecordAlert(ctx, kb.ID, "2026-11-01", 80); err != nil || !ok {
		t.Fatalf("RecordAlert next window = %v, %v", ok, err)
	}
	b.Action, b.Downgrade = "notify", nil
	if up, err := bs.Update(ctx, b); err != nil || up.Action != "notify" || len(up.Downgrade) != 0 {
		t.Fatalf("Update = %+v, %v", up, err)
	}
	if err := bs.Delete(ctx, kb.ID); err != nil {
		t.Fatal(err)
	}
	if err := bs.Delete(ctx, kb.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
}
