package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

func TestTeamCreateGetUpdate(t *testing.T) {
	ctx := testCtx(t)
	teams := testStore.Teams()
	name := "Platform " + uuid.NewString()
	tm, err := teams.Create(ctx, store.NewTeam{Name: name, MonthlyBudgetUSD: ptr(decimal.RequireFromString("500")),
		PlanBudgetUSD: ptr(decimal.RequireFromString("2000.50")), PlanBudgetEnforced: true,
		RoutingStrategy: ptr(store.BedrockOnly), AllowedModels: []string{"claude-sonnet-4-5"}, PreemptThreshold: ptr(0.9)})
	if err != nil {
		t.Fatal(err)
	}
	if tm.Name != name || tm.MonthlyBudgetUSD.String() != "500" || tm.PlanBudgetUSD.String() != "2000.5" || !tm.PlanBudgetEnforced ||
		*tm.RoutingStrategy != store.BedrockOnly || !slices.Equal(tm.AllowedModels, []string{"claude-sonnet-4-5"}) ||
		*tm.PreemptThreshold != 0.9 || tm.Members != 0 || tm.DeletedAt != nil {
		t.Fatalf("created %+v", tm)
	}
	wantTeamBudgets(t, tm.ID, "bedrock 500.00 block [50 80 100]", "plan_list 2000.50 block [50 80 100]")

	tests := []struct {
		name string
		nt   store.NewTeam
		want error
	}{
		{"duplicate name, other case", store.NewTeam{Name: strings.ToUpper(name)}, store.ErrConflict},
		{"unknown strategy", store.NewTeam{Name: "x", RoutingStrategy: ptr(store.RoutingStrategy("sometimes"))}, store.ErrInvalid},
		{"negative budget", store.NewTeam{Name: "x", PlanBudgetUSD: ptr(decimal.RequireFromString("-1"))}, store.ErrInvalid},
		{"empty allow-list", store.NewTeam{Name: "x", AllowedModels: []string{}}, store.ErrInvalid},
		{"model twice", store.NewTeam{Name: "x", AllowedModels: []string{"a", "a"}}, store.ErrInvalid},
		{"threshold above 1", store.NewTeam{Name: "x", PreemptThreshold: ptr(1.5)}, store.ErrInvalid},
		{"empty name", store.NewTeam{Name: ""}, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := teams.Create(ctx, tc.nt); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}

	got, err := teams.Update(ctx, tm.ID, store.TeamPatch{AllowedModels: store.Some[[]string](nil),
		MonthlyBudgetUSD: store.Some[*decimal.Decimal](nil), PlanBudgetEnforced: store.Some(false)})
	if err != nil {
		t.Fatal(err)
	}
	if got.AllowedModels != nil || got.MonthlyBudgetUSD != nil || got.PlanBudgetEnforced || got.PlanBudgetUSD.String() != "2000.5" ||
		!got.UpdatedAt.After(tm.UpdatedAt) {
		t.Fatalf("after patch %+v", got)
	}
	wantTeamBudgets(t, tm.ID, "plan_list 2000.50 notify [50 80 100]")
	if _, err := teams.Get(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get unknown = %v", err)
	}
	if _, err := teams.Update(ctx, uuid.New(), store.TeamPatch{Name: store.Some("x")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}
}

func TestTeamMembersAndDelete(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	teams, users := st.Teams(), st.Users()
	withStrategy, err := teams.Create(ctx, store.NewTeam{Name: "Bedrock people", RoutingStrategy: ptr(store.BedrockOnly)})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := teams.Create(ctx, store.NewTeam{Name: "Plain"})
	if err != nil {
		t.Fatal(err)
	}

	// Joining on creation takes the team's strategy unless one is given.
	a, err := users.Create(ctx, store.NewUser{Name: "a", TeamID: &withStrategy.ID})
	if err != nil {
		t.Fatal(err)
	}
	b, err := users.Create(ctx, store.NewUser{Name: "b", TeamID: &withStrategy.ID, RoutingStrategy: store.PlanOnly})
	if err != nil {
		t.Fatal(err)
	}
	c, err := users.Create(ctx, store.NewUser{Name: "c", TeamID: &plain.ID})
	if err != nil {
		t.Fatal(err)
	}
	if *a.TeamID != withStrategy.ID || a.RoutingStrategy != store.BedrockOnly || b.RoutingStrategy != store.PlanOnly ||
		*c.TeamID != plain.ID || c.RoutingStrategy != store.PlanFirst {
		t.Fatalf("a %+v\nb %+v\nc %+v", a, b, c)
	}
	if _, err := users.Create(ctx, store.NewUser{Name: "d", TeamID: ptr(uuid.New())}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unknown team = %v", err)
	}

	// Moving c into the team takes its strategy; saving the same team again
	// keeps a strategy changed since; leaving keeps the strategy.
	c, err = users.Update(ctx, c.ID, store.UserPatch{TeamID: store.Some(&withStrategy.ID)})
	if err != nil || c.RoutingStrategy != store.BedrockOnly {
		t.Fatalf("join: %+v, %v", c, err)
	}
	c, err = users.Update(ctx, c.ID, store.UserPatch{RoutingStrategy: store.Some(store.PlanFirst)})
	if err != nil {
		t.Fatal(err)
	}
	c, err = users.Update(ctx, c.ID, store.UserPatch{TeamID: store.Some(&withStrategy.ID)})
	if err != nil || c.RoutingStrategy != store.PlanFirst {
		t.Fatalf("same team again: %+v, %v", c, err)
	}

	got, err := teams.Get(ctx, withStrategy.ID)
	if err != nil || got.Members != 3 {
		t.Fatalf("members = %d, %v", got.Members, err)
	}
	inTeam, _, err := users.List(ctx, store.UserListOptions{TeamID: &withStrategy.ID})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range inTeam {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("team's users %v", names)
	}

	// The key lookup carries the team.
	k := mustKeyIn(t, st, a.ID)
	l, err := st.AccessKeys().LookupByHash(ctx, k.Hash)
	if err != nil || l.Team == nil || l.Team.ID != withStrategy.ID || l.Team.Name != "Bedrock people" || *l.Team.RoutingStrategy != store.BedrockOnly {
		t.Fatalf("lookup %+v, %v", l.Team, err)
	}

	// A team with members is not deleted.
	err = teams.SoftDelete(ctx, withStrategy.ID)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "the team still has 3 member(s) and 0 team admin(s)") {
		t.Fatalf("delete with members = %v", err)
	}
	for _, u := range []store.User{a, b} {
		if _, err := users.Update(ctx, u.ID, store.UserPatch{TeamID: store.Some[*uuid.UUID](nil)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := users.SoftDelete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := teams.SoftDelete(ctx, withStrategy.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := teams.Get(ctx, withStrategy.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get deleted = %v", err)
	}
	if err := teams.SoftDelete(ctx, withStrategy.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice = %v", err)
	}
	if _, err := users.Update(ctx, a.ID, store.UserPatch{TeamID: store.Some(&withStrategy.ID)}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("join deleted team = %v", err)
	}
	// A deleted team's name is free again, and the lookup no longer names it.
	if _, err := teams.Create(ctx, store.NewTeam{Name: "Bedrock People"}); err != nil {
		t.Fatal(err)
	}
	if l, err = st.AccessKeys().LookupByHash(ctx, k.Hash); err != nil || l.Team != nil {
		t.Fatalf("lookup after leaving %+v, %v", l.Team, err)
	}

	// Listing: keyset pages, and one team by id.
	page1, next, err := teams.List(ctx, store.TeamListOptions{Limit: 1})
	if err != nil || len(page1) != 1 || page1[0].Name != "Plain" || next == "" {
		t.Fatalf("page 1 %+v %q %v", page1, next, err)
	}
	page2, next, err := teams.List(ctx, store.TeamListOptions{Limit: 1, Cursor: next})
	if err != nil || len(page2) != 1 || page2[0].Name != "Bedrock People" || next != "" {
		t.Fatalf("page 2 %+v %q %v", page2, next, err)
	}
	all, _, err := teams.List(ctx, store.TeamListOptions{IncludeDeleted: true})
	if err != nil || len(all) != 3 {
		t.Fatalf("with deleted %d %v", len(all), err)
	}
	one, _, err := teams.List(ctx, store.TeamListOptions{ID: &plain.ID})
	if err != nil || len(one) != 1 || one[0].ID != plain.ID {
		t.Fatalf("by id %+v %v", one, err)
	}
	namesByID, err := teams.Names(ctx, []uuid.UUID{withStrategy.ID, plain.ID})
	if err != nil || namesByID[withStrategy.ID] != "Bedrock people" || namesByID[plain.ID] != "Plain" {
		t.Fatalf("names %v %v", namesByID, err)
	}
}

func mustKeyIn(t testing.TB, st *store.Store, userID uuid.UUID) store.AccessKey {
	t.Helper()
	k, err := st.AccessKeys().Create(testCtx(t), store.NewAccessKey{UserID: userID, Name: "laptop", Hash: randomHash(t), Prefix: "ak_abcdefgh"})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestUsageByTeam: events record the team they were served for; usage
// groups by it and filters on it from the raw events.
func TestUsageByTeam(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	team, err := st.Teams().Create(ctx, store.NewTeam{Name: "Platform"})
	if err != nil {
		t.Fatal(err)
	}
	user, key := uuid.New(), uuid.New()
	at := time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)
	ev := func(id string, team *uuid.UUID, cost string) store.UsageEvent {
		return store.UsageEvent{RequestID: id, EventTime: at, UserID: user, AccessKeyID: key, Kind: store.KindMessages,
			RequestedModel: "claude-sonnet-4-5", Provider: store.ProviderBedrock, Status: 200, InputTokens: 10,
			CostUSD: decimal.RequireFromString(cost), PriceFlag: store.PriceExact, TeamID: team}
	}
	if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{ev("a", &team.ID, "1"), ev("b", &team.ID, "2"), ev("c", nil, "4")}); err != nil {
		t.Fatal(err)
	}
	from, to := at.Add(-time.Hour), at.Add(time.Hour)
	groups, err := st.Usage().Summary(ctx, store.UsageSummaryQuery{From: from, To: to, GroupBy: store.GroupByTeam})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range groups {
		got = append(got, g.Key+"="+g.BedrockCostUSD.String()+"/"+strconv.FormatInt(g.Requests, 10))
	}
	if want := []string{"=4/1", team.ID.String() + "=3/2"}; !slices.Equal(got, want) {
		t.Fatalf("by team %v, want %v", got, want)
	}
	groups, err = st.Usage().Summary(ctx, store.UsageSummaryQuery{From: from, To: to, GroupBy: store.GroupByModel, TeamID: &team.ID})
	if err != nil || len(groups) != 1 || groups[0].Key != "claude-sonnet-4-5" || groups[0].Requests != 2 {
		t.Fatalf("team's models %+v, %v", groups, err)
	}
	groups, err = st.Usage().Summary(ctx, store.UsageSummaryQuery{From: from, To: to, GroupBy: store.GroupByDay, TeamID: &team.ID})
	if err != nil || len(groups) != 1 || groups[0].Key != "2026-03-10T00:00:00Z" || groups[0].Requests != 2 {
		t.Fatalf("team's days %+v, %v", groups, err)
	}
	evs, _, err := st.Usage().ListRequests(ctx, store.UsageFilter{TeamID: &team.ID}, 10, "")
	if err != nil || len(evs) != 2 || *evs[0].TeamID != team.ID {
		t.Fatalf("team's requests %+v, %v", evs, err)
	}
	one, err := st.Usage().GetRequest(ctx, "c")
	if err != nil || one.TeamID != nil {
		t.Fatalf("request without team %+v, %v", one, err)
	}
}

// wantTeamBudgets checks the budget rows of a team: "metric amount action
// thresholds", ordered by metric.
func wantTeamBudgets(t *testing.T, team uuid.UUID, want ...string) {
	t.Helper()
	bs, err := testStore.Budgets().List(testCtx(t), store.BudgetScopeTeam, team)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range bs {
		if b.Window != store.BudgetMonthly {
			continue
		}
		got = append(got, fmt.Sprint(b.Metric, " ", b.AmountUSD.StringFixed(2), " ", b.Action, " ", b.Thresholds))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("team budgets %q, want %q", got, want)
	}
}

// TestTeamBudgetRows: a team's monthly_budget_usd and plan_budget_usd are
// budget rows, written with the team and read back with it, and changes
// made through the budgets repository show on the team.
func TestTeamBudgetRows(t *testing.T) {
	ctx := testCtx(t)
	teams, budgets := testStore.Teams(), testStore.Budgets()
	dec := decimal.RequireFromString

	// plan_budget_enforced without a Plan budget is ignored.
	tm, err := teams.Create(ctx, store.NewTeam{Name: "Budgets " + uuid.NewString(), PlanBudgetEnforced: true})
	if err != nil {
		t.Fatal(err)
	}
	if tm.MonthlyBudgetUSD != nil || tm.PlanBudgetUSD != nil || tm.PlanBudgetEnforced {
		t.Fatalf("created %+v", tm)
	}
	wantTeamBudgets(t, tm.ID)

	steps := []struct {
		name          string
		patch         store.TeamPatch
		edit          func(b *store.Budget) // applied to the plan_list row through Budgets().Update
		monthly, plan string                // "" for none
		enforced      bool
		want          []string
	}{
		{name: "enforced alone, no Plan budget", patch: store.TeamPatch{PlanBudgetEnforced: store.Some(true)}},
		{name: "budgets created", patch: store.TeamPatch{MonthlyBudgetUSD: store.Some(ptr(dec("10"))), PlanBudgetUSD: store.Some(ptr(dec("20")))},
			monthly: "10.00", plan: "20.00", want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 20.00 notify [50 80 100]"}},
		{name: "enforced", patch: store.TeamPatch{PlanBudgetEnforced: store.Some(true)},
			monthly: "10.00", plan: "20.00", enforced: true, want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 20.00 block [50 80 100]"}},
		{name: "budgets API: downgrade, own thresholds",
			edit: func(b *store.Budget) {
				b.Action, b.Downgrade, b.Thresholds = store.BudgetDowngrade, map[string]string{"claude-opus-4-1": "claude-sonnet-4-5"}, []int{90}
			},
			monthly: "10.00", plan: "20.00", enforced: true, want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 20.00 downgrade [90]"}},
		{name: "enforced again keeps downgrade; amount keeps thresholds",
			patch:   store.TeamPatch{PlanBudgetEnforced: store.Some(true), PlanBudgetUSD: store.Some(ptr(dec("25.5")))},
			monthly: "10.00", plan: "25.50", enforced: true, want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 25.50 downgrade [90]"}},
		{name: "not enforced: notify", patch: store.TeamPatch{PlanBudgetEnforced: store.Some(false)},
			monthly: "10.00", plan: "25.50", want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 25.50 notify [90]"}},
		{name: "budgets API: amount", edit: func(b *store.Budget) { b.AmountUSD = dec("30") },
			monthly: "10.00", plan: "30.00", want: []string{"bedrock 10.00 block [50 80 100]", "plan_list 30.00 notify [90]"}},
		{name: "null deletes", patch: store.TeamPatch{MonthlyBudgetUSD: store.Some[*decimal.Decimal](nil), PlanBudgetUSD: store.Some[*decimal.Decimal](nil),
			PlanBudgetEnforced: store.Some(true)}},
	}
	for _, st := range steps {
		if st.edit != nil {
			bs, err := budgets.List(ctx, store.BudgetScopeTeam, tm.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bs {
				if b.Metric == store.BudgetMetricPlanList {
					st.edit(&b)
					if _, err := budgets.Update(ctx, b); err != nil {
						t.Fatalf("%s: %v", st.name, err)
					}
				}
			}
		} else if tm, err = teams.Update(ctx, tm.ID, st.patch); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		returned := tm // what Update returned; for an edit, replaced below by what Get reads
		if tm, err = teams.Get(ctx, tm.ID); err != nil {
			t.Fatal(err)
		}
		if st.edit != nil {
			returned = tm
		}
		listed, _, err := teams.List(ctx, store.TeamListOptions{ID: &tm.ID})
		if err != nil || len(listed) != 1 {
			t.Fatalf("%s: list %+v, %v", st.name, listed, err)
		}
		money := func(d *decimal.Decimal) string {
			if d == nil {
				return ""
			}
			return d.StringFixed(2)
		}
		for _, tg := range []store.Team{returned, tm, listed[0]} {
			if money(tg.MonthlyBudgetUSD) != st.monthly || money(tg.PlanBudgetUSD) != st.plan || tg.PlanBudgetEnforced != st.enforced {
				t.Fatalf("%s: team %s/%s/%v, want %s/%s/%v", st.name, money(tg.MonthlyBudgetUSD), money(tg.PlanBudgetUSD), tg.PlanBudgetEnforced,
					st.monthly, st.plan, st.enforced)
			}
		}
		wantTeamBudgets(t, tm.ID, st.want...)
	}

	// A deleted or unknown team's budgets are not written.
	unknown := uuid.New()
	if _, err := teams.Update(ctx, unknown, store.TeamPatch{MonthlyBudgetUSD: store.Some(ptr(dec("1")))}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}
	wantTeamBudgets(t, unknown)
	if _, err := teams.Update(ctx, tm.ID, store.TeamPatch{MonthlyBudgetUSD: store.Some(ptr(dec("-1")))}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("negative budget = %v", err)
	}
}
