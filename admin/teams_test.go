package admin_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

type teamDoc struct {
	ID                 string   `json:"id"`
	Name               string   `json:"name"`
	MonthlyBudgetUSD   *string  `json:"monthly_budget_usd"`
	PlanBudgetUSD      *string  `json:"plan_budget_usd"`
	PlanBudgetEnforced bool     `json:"plan_budget_enforced"`
	RoutingStrategy    *string  `json:"routing_strategy"`
	AllowedModels      []string `json:"allowed_models"`
	PreemptThreshold   *float64 `json:"preempt_threshold"`
	Members            int      `json:"members"`
}

type teamUserDoc struct {
	ID              string  `json:"id"`
	RoutingStrategy string  `json:"routing_strategy"`
	TeamID          *string `json:"team_id"`
}

// TestTeamsAPI covers the teams resource: create with validation against
// the model catalog, read, change (invalidating members' key lookups),
// members joining with the team's strategy, deletion refused while members
// remain, the audit log and the team's rate limits.
func TestTeamsAPI(t *testing.T) {
	e := newEnv(t)

	t.Run("validation", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			body  map[string]any
			field string
			msg   string
		}{
			{"no name", map[string]any{}, "name", "must be 1 to 200 characters without control characters"},
			{"unknown model", map[string]any{"name": "x", "allowed_models": []string{"gpt-4"}}, "allowed_models",
				`"gpt-4" is not a model id or alias of the model catalog (GET /api/v1/models)`},
			{"empty allow-list", map[string]any{"name": "x", "allowed_models": []string{}}, "allowed_models",
				"must name at least one model; null allows every model"},
			{"model twice", map[string]any{"name": "x", "allowed_models": []string{"claude-sonnet-4-5", "claude-sonnet-4-5"}},
				"allowed_models", `lists "claude-sonnet-4-5" twice`},
			{"bad budget", map[string]any{"name": "x", "plan_budget_usd": "1.005"}, "plan_budget_usd",
				`must be a non-negative decimal string with at most 2 decimals, like "12.50"`},
			{"bad strategy", map[string]any{"name": "x", "routing_strategy": "sometimes"}, "routing_strategy",
				"must be plan_first, bedrock_only or plan_only"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do("POST", "/api/v1/teams", tc.body)
				want(t, r, http.StatusUnprocessableEntity)
				if p := r.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != tc.field || p.Errors[0].Message != tc.msg {
					t.Errorf("problem %+v", p)
				}
			})
		}
	})

	var team teamDoc
	r := e.do("POST", "/api/v1/teams", map[string]any{"name": "Platform", "monthly_budget_usd": "500", "plan_budget_usd": "2000.5",
		"plan_budget_enforced": true, "routing_strategy": "bedrock_only",
		"allowed_models": []string{"claude-sonnet-4-5", "claude-haiku-4-5-20251001"}})
	want(t, r, http.StatusCreated)
	r.decode(t, &team)
	if r.header.Get("Location") != "/api/v1/teams/"+team.ID || team.Name != "Platform" || *team.MonthlyBudgetUSD != "500.00" ||
		*team.PlanBudgetUSD != "2000.50" || !team.PlanBudgetEnforced || *team.RoutingStrategy != "bedrock_only" ||
		!slices.Equal(team.AllowedModels, []string{"claude-sonnet-4-5", "claude-haiku-4-5-20251001"}) || team.PreemptThreshold != nil || team.Members != 0 {
		t.Fatalf("created %+v", team)
	}
	want(t, e.do("POST", "/api/v1/teams", map[string]any{"name": "platform"}), http.StatusConflict)

	// Joining: on creation without a strategy, the team's; with one, its own.
	var joined, own, later teamUserDoc
	r = e.do("POST", "/api/v1/users", map[string]any{"name": "joined", "team_id": team.ID})
	want(t, r, http.StatusCreated)
	r.decode(t, &joined)
	r = e.do("POST", "/api/v1/users", map[string]any{"name": "own", "team_id": team.ID, "routing_strategy": "plan_only"})
	want(t, r, http.StatusCreated)
	r.decode(t, &own)
	if joined.RoutingStrategy != "bedrock_only" || *joined.TeamID != team.ID || own.RoutingStrategy != "plan_only" {
		t.Fatalf("joined %+v, own %+v", joined, own)
	}
	r = e.do("POST", "/api/v1/users", map[string]any{"name": "later"})
	want(t, r, http.StatusCreated)
	r.decode(t, &later)
	if later.TeamID != nil || later.RoutingStrategy != "plan_first" {
		t.Fatalf("later %+v", later)
	}
	r = e.do("PATCH", "/api/v1/users/"+later.ID, map[string]any{"team_id": team.ID})
	want(t, r, http.StatusOK)
	r.decode(t, &later)
	if later.RoutingStrategy != "bedrock_only" || *later.TeamID != team.ID {
		t.Fatalf("later joined %+v", later)
	}
	r = e.do("PATCH", "/api/v1/users/"+later.ID, map[string]any{"team_id": randomID})
	want(t, r, http.StatusUnprocessableEntity)

	// Listing the team's users.
	var page struct{ Items []teamUserDoc }
	e.do("GET", "/api/v1/users?team_id="+team.ID, nil).decode(t, &page)
	if len(page.Items) != 3 {
		t.Fatalf("team's users %+v", page.Items)
	}
	e.do("GET", "/api/v1/teams/"+team.ID, nil).decode(t, &team)
	if team.Members != 3 {
		t.Fatalf("members %d", team.Members)
	}

	// A change reaches every member's cached key lookups.
	e.do("POST", "/api/v1/users/"+joined.ID+"/keys", map[string]any{"name": "k"})
	e.do("POST", "/api/v1/users/"+own.ID+"/keys", map[string]any{"name": "k"})
	before := len(e.inv.all())
	r = e.do("PATCH", "/api/v1/teams/"+team.ID, map[string]any{"allowed_models": nil, "preempt_threshold": 0.9, "monthly_budget_usd": nil})
	want(t, r, http.StatusOK)
	r.decode(t, &team)
	if team.AllowedModels != nil || *team.PreemptThreshold != 0.9 || team.MonthlyBudgetUSD != nil || *team.PlanBudgetUSD != "2000.50" {
		t.Fatalf("patched %+v", team)
	}
	// The budgets are budget rows: the Bedrock one is gone, the Plan one
	// blocks with the default thresholds; the list reads them too.
	bs, err := e.st.Budgets().List(context.Background(), store.BudgetScopeTeam, uuid.MustParse(team.ID))
	if err != nil || len(bs) != 1 || bs[0].Metric != "plan_list" || bs[0].Window != "monthly" || bs[0].Action != "block" ||
		!slices.Equal(bs[0].Thresholds, []int{50, 80, 100}) || bs[0].AmountUSD.StringFixed(2) != "2000.50" {
		t.Fatalf("team budgets %+v, %v", bs, err)
	}
	var teamList struct{ Items []teamDoc }
	e.do("GET", "/api/v1/teams", nil).decode(t, &teamList)
	if len(teamList.Items) != 1 || teamList.Items[0].MonthlyBudgetUSD != nil || *teamList.Items[0].PlanBudgetUSD != "2000.50" ||
		!teamList.Items[0].PlanBudgetEnforced {
		t.Fatalf("listed %+v", teamList.Items)
	}
	invs := e.inv.all()[before:]
	var users []string
	for _, inv := range invs {
		users = append(users, inv.UserID.String())
		if len(inv.KeyIDs) != 1 {
			t.Errorf("invalidation of %s: %d keys", inv.UserID, len(inv.KeyIDs))
		}
	}
	slices.Sort(users)
	wantUsers := []string{joined.ID, own.ID}
	slices.Sort(wantUsers)
	if !slices.Equal(users, wantUsers) {
		t.Errorf("invalidated users %v; want %v", users, wantUsers)
	}

	// Team rate limits.
	r = e.do("PUT", "/api/v1/teams/"+team.ID+"/rate-limits", map[string]any{"requests_per_minute": 60,
		"input_tokens_per_minute": nil, "output_tokens_per_minute": nil})
	want(t, r, http.StatusOK)
	l, err := e.st.RateLimits().Get(context.Background(), store.RateLimitTeam, uuid.MustParse(team.ID))
	if err != nil || *l.RequestsPerMinute != 60 {
		t.Fatalf("team limits %+v, %v", l, err)
	}
	want(t, e.do("GET", "/api/v1/teams/"+randomID+"/rate-limits", nil), http.StatusNotFound)

	// Deletion waits for the members to leave.
	r = e.do("DELETE", "/api/v1/teams/"+team.ID, nil)
	want(t, r, http.StatusConflict)
	if p := r.problem(t); p.Detail != "the team still has 3 member(s) and 0 team admin(s); move them to another team or remove them first" {
		t.Errorf("detail %q", p.Detail)
	}
	for _, id := range []string{joined.ID, own.ID} {
		want(t, e.do("PATCH", "/api/v1/users/"+id, map[string]any{"team_id": nil}), http.StatusOK)
	}
	want(t, e.do("DELETE", "/api/v1/users/"+later.ID, nil), http.StatusNoContent)
	want(t, e.do("DELETE", "/api/v1/teams/"+team.ID, nil), http.StatusNoContent)
	want(t, e.do("GET", "/api/v1/teams/"+team.ID, nil), http.StatusNotFound)
	if got := e.auditActions(team.ID); !slices.Equal(got, []string{"team.create", "team.update", "rate_limits.team.put", "team.delete"}) &&
		!slices.Equal(got, []string{"team.delete", "rate_limits.team.put", "team.update", "team.create"}) {
		t.Errorf("audit %v", got)
	}
}

// TestTeamAdmin: a team admin reads its own team, manages its developers
// and their keys, reads its team's usage, and reaches nothing else.
func TestTeamAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var mine, other teamDoc
	e.do("POST", "/api/v1/teams", map[string]any{"name": "Mine"}).decode(t, &mine)
	e.do("POST", "/api/v1/teams", map[string]any{"name": "Other"}).decode(t, &other)
	want(t, e.do("POST", "/api/v1/admins", map[string]any{"username": "lead", "password": testPassword, "role": "team_admin", "team_id": mine.ID}),
		http.StatusCreated)
	auth := withHeader("Authorization", "Bearer "+e.login("lead", testPassword).Token)

	var inOther teamUserDoc
	e.do("POST", "/api/v1/users", map[string]any{"name": "stranger", "team_id": other.ID}).decode(t, &inOther)
	outsider := e.createUser("outsider")

	// It creates developers in its own team only.
	var dev teamUserDoc
	r := e.do("POST", "/api/v1/users", map[string]any{"name": "dev"}, auth)
	want(t, r, http.StatusCreated)
	r.decode(t, &dev)
	if dev.TeamID == nil || *dev.TeamID != mine.ID {
		t.Fatalf("created %+v", dev)
	}
	r = e.do("POST", "/api/v1/users", map[string]any{"name": "dev2", "team_id": other.ID}, auth)
	want(t, r, http.StatusUnprocessableEntity)
	r = e.do("PATCH", "/api/v1/users/"+dev.ID, map[string]any{"team_id": nil}, auth)
	want(t, r, http.StatusUnprocessableEntity)
	want(t, e.do("PATCH", "/api/v1/users/"+dev.ID, map[string]any{"routing_strategy": "plan_only"}, auth), http.StatusOK)

	// Keys of its developers.
	var key struct {
		ID string `json:"id"`
	}
	r = e.do("POST", "/api/v1/users/"+dev.ID+"/keys", map[string]any{"name": "laptop"}, auth)
	want(t, r, http.StatusCreated)
	r.decode(t, &key)
	want(t, e.do("GET", "/api/v1/users/"+dev.ID+"/keys", nil, auth), http.StatusOK)
	want(t, e.do("POST", "/api/v1/keys/"+key.ID+"/rotate", map[string]any{}, auth), http.StatusCreated)
	// What the dashboard's developer page reads of one of its developers,
	// and of nobody else.
	for _, sub := range []string{"/budget", "/rate-limits", "/headroom", "/sessions"} {
		want(t, e.do("GET", "/api/v1/users/"+dev.ID+sub, nil, auth), http.StatusOK)
		want(t, e.do("GET", "/api/v1/users/"+inOther.ID+sub, nil, auth), http.StatusForbidden)
	}
	want(t, e.do("GET", "/api/v1/users/"+dev.ID+"/sessions/none-yet", nil, auth), http.StatusNotFound)
	want(t, e.do("GET", "/api/v1/users/"+inOther.ID+"/sessions/none-yet", nil, auth), http.StatusForbidden)

	// Lists show its team only.
	var users struct{ Items []teamUserDoc }
	e.do("GET", "/api/v1/users", nil, auth).decode(t, &users)
	if len(users.Items) != 1 || users.Items[0].ID != dev.ID {
		t.Errorf("users %+v", users.Items)
	}
	var teams struct{ Items []teamDoc }
	e.do("GET", "/api/v1/teams", nil, auth).decode(t, &teams)
	if len(teams.Items) != 1 || teams.Items[0].ID != mine.ID {
		t.Errorf("teams %+v", teams.Items)
	}
	want(t, e.do("GET", "/api/v1/teams/"+mine.ID, nil, auth), http.StatusOK)
	// The dashboard's developer list: its team's, whatever it asks; an
	// admin may filter by team.
	var devs struct {
		Items []teamUserDoc `json:"items"`
		Total int           `json:"total"`
	}
	e.do("GET", "/api/v1/developers?team_id="+other.ID, nil, auth).decode(t, &devs)
	if devs.Total != 1 || len(devs.Items) != 1 || devs.Items[0].ID != dev.ID || devs.Items[0].TeamID == nil || *devs.Items[0].TeamID != mine.ID {
		t.Errorf("team admin's developers %+v", devs)
	}
	e.do("GET", "/api/v1/developers?team_id="+other.ID, nil).decode(t, &devs)
	if devs.Total != 1 || len(devs.Items) != 1 || devs.Items[0].ID != inOther.ID {
		t.Errorf("admin's developers of the other team %+v", devs)
	}
	want(t, e.do("GET", "/api/v1/developers?team_id=nope", nil), http.StatusUnprocessableEntity)

	// Usage: its team's, whatever it asks.
	at := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	devID, strangerID := uuid.MustParse(dev.ID), uuid.MustParse(inOther.ID)
	mineID, otherID := uuid.MustParse(mine.ID), uuid.MustParse(other.ID)
	ev := func(id string, user, team uuid.UUID) store.UsageEvent {
		return store.UsageEvent{RequestID: id, EventTime: at, UserID: user, AccessKeyID: uuid.New(), Kind: store.KindMessages,
			RequestedModel: "claude-sonnet-4-5", Provider: store.ProviderBedrock, Status: 200, InputTokens: 10,
			CostUSD: decimal.RequireFromString("1.5"), PriceFlag: store.PriceExact, TeamID: &team}
	}
	if _, err := e.st.Usage().InsertEvents(ctx, []store.UsageEvent{ev("mine-1", devID, mineID), ev("other-1", strangerID, otherID)}); err != nil {
		t.Fatal(err)
	}
	var usage struct {
		Groups []struct {
			Key            string `json:"key"`
			Requests       int64  `json:"requests"`
			BedrockCostUSD string `json:"bedrock_cost_usd"`
		} `json:"groups"`
	}
	e.do("GET", "/api/v1/usage?group_by=team&team_id="+other.ID, nil, auth).decode(t, &usage)
	if len(usage.Groups) != 1 || usage.Groups[0].Key != mine.ID || usage.Groups[0].Requests != 1 || usage.Groups[0].BedrockCostUSD != "1.5" {
		t.Errorf("team admin's usage %+v", usage.Groups)
	}
	// An admin sees both teams.
	e.do("GET", "/api/v1/usage?group_by=team", nil).decode(t, &usage)
	if len(usage.Groups) != 2 {
		t.Errorf("admin's usage by team %+v", usage.Groups)
	}
	var reqs struct {
		Items []struct {
			RequestID string  `json:"request_id"`
			TeamID    *string `json:"team_id"`
		} `json:"items"`
	}
	e.do("GET", "/api/v1/usage/requests", nil, auth).decode(t, &reqs)
	if len(reqs.Items) != 1 || reqs.Items[0].RequestID != "mine-1" || *reqs.Items[0].TeamID != mine.ID {
		t.Errorf("team admin's requests %+v", reqs.Items)
	}

	// Nothing outside its team.
	const outside = "your role (team_admin) reaches only your own team's developers, keys and usage"
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/users/" + inOther.ID},
		{"PATCH", "/api/v1/users/" + outsider},
		{"DELETE", "/api/v1/users/" + inOther.ID},
		{"POST", "/api/v1/users/" + outsider + "/keys"},
		{"GET", "/api/v1/teams/" + other.ID},
	} {
		r := e.do(c.method, c.path, map[string]any{}, auth)
		want(t, r, http.StatusForbidden)
		if p := r.problem(t); p.Detail != outside {
			t.Errorf("%s %s: %q", c.method, c.path, p.Detail)
		}
	}
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/v1/teams"},
		{"PATCH", "/api/v1/teams/" + mine.ID},
		{"GET", "/api/v1/usage/cost-split"},
		{"GET", "/api/v1/models"},
	} {
		want(t, e.do(c.method, c.path, map[string]any{}, auth), http.StatusForbidden)
	}
	// Deleting its own developer works.
	want(t, e.do("DELETE", "/api/v1/users/"+dev.ID, nil, auth), http.StatusNoContent)
}
