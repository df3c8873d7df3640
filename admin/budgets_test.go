package admin_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

func TestBudgetsAPI(t *testing.T) {
	e := newEnv(t)
	var u struct{ ID string }
	resp := e.do("POST", "/api/v1/users", map[string]any{"name": "Budgeted"})
	want(t, resp, http.StatusCreated)
	resp.decode(t, &u)

	type budget struct {
		ID         string            `json:"id"`
		Scope      string            `json:"scope"`
		SubjectID  string            `json:"subject_id"`
		Window     string            `json:"window"`
		Metric     string            `json:"metric"`
		AmountUSD  string            `json:"amount_usd"`
		Thresholds []int             `json:"thresholds"`
		Action     string            `json:"action"`
		Downgrade  map[string]string `json:"downgrade_map"`
		Current    *struct {
			SpendUSD string   `json:"spend_usd"`
			Percent  *float64 `json:"percent"`
		} `json:"current"`
	}
	resp = e.do("POST", "/api/v1/budgets", map[string]any{"scope": "user", "subject_id": u.ID, "window": "daily", "metric": "all",
		"amount_usd": "5", "action": "downgrade", "downgrade_map": map[string]string{"opus": "claude-sonnet-4-5"}})
	want(t, resp, http.StatusCreated)
	var b budget
	resp.decode(t, &b)
	if b.Scope != "user" || b.SubjectID != u.ID || b.Window != "daily" || b.Metric != "all" || b.AmountUSD != "5.00" ||
		len(b.Thresholds) != 3 || b.Thresholds[2] != 100 || b.Action != "downgrade" || b.Downgrade["opus"] != "claude-sonnet-4-5" ||
		b.Current == nil || b.Current.SpendUSD != "0.000000" || b.Current.Percent == nil || *b.Current.Percent != 0 {
		t.Fatalf("created %+v", b)
	}
	if loc := resp.header.Get("Location"); loc != "/api/v1/budgets/"+b.ID {
		t.Errorf("Location %q", loc)
	}
	// The same subject, window and metric twice is a conflict.
	want(t, e.do("POST", "/api/v1/budgets", map[string]any{"scope": "user", "subject_id": u.ID, "window": "daily", "metric": "all", "amount_usd": "1"}), http.StatusConflict)

	for _, tc := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"threshold 0", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1", "thresholds": []int{0, 50}}, "thresholds"},
		{"threshold 101", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1", "thresholds": []int{101}}, "thresholds"},
		{"downgrade without map", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1", "action": "downgrade"}, "downgrade_map"},
		{"unknown target", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1", "action": "downgrade", "downgrade_map": map[string]string{"opus": "gpt-9"}}, "downgrade_map"},
		{"window", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1", "window": "hourly"}, "window"},
		{"amount", map[string]any{"scope": "user", "subject_id": u.ID, "amount_usd": "1.001"}, "amount_usd"},
		{"no amount", map[string]any{"scope": "user", "subject_id": u.ID}, "amount_usd"},
		{"scope", map[string]any{"scope": "org", "subject_id": u.ID, "amount_usd": "1"}, "scope"},
		{"unknown user", map[string]any{"scope": "user", "subject_id": "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d", "amount_usd": "1"}, "subject_id"},
	} {
		resp := e.do("POST", "/api/v1/budgets", tc.body)
		want(t, resp, http.StatusUnprocessableEntity)
		if p := resp.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
			t.Errorf("%s: problem %+v; want one error on %s", tc.name, p, tc.field)
		}
	}

	resp = e.do("PATCH", "/api/v1/budgets/"+b.ID, map[string]any{"action": "block", "amount_usd": "7.5", "thresholds": []int{80}})
	want(t, resp, http.StatusOK)
	resp.decode(t, &b)
	if b.Action != "block" || b.AmountUSD != "7.50" || len(b.Thresholds) != 1 || b.Window != "daily" {
		t.Fatalf("patched %+v", b)
	}
	want(t, e.do("PATCH", "/api/v1/budgets/"+b.ID, map[string]any{"scope": "team"}), http.StatusUnprocessableEntity)

	var list struct{ Budgets []budget }
	resp = e.do("GET", "/api/v1/budgets?scope=user&subject_id="+u.ID, nil)
	want(t, resp, http.StatusOK)
	resp.decode(t, &list)
	if len(list.Budgets) != 1 || list.Budgets[0].ID != b.ID {
		t.Fatalf("list %+v", list)
	}
	resp = e.do("GET", "/api/v1/budgets?scope=key", nil)
	want(t, resp, http.StatusOK)
	resp.decode(t, &list)
	if len(list.Budgets) != 0 {
		t.Fatalf("list of key budgets %+v", list)
	}
	want(t, e.do("GET", "/api/v1/budgets?scope=org", nil), http.StatusUnprocessableEntity)

	want(t, e.do("DELETE", "/api/v1/budgets/"+b.ID, nil), http.StatusNoContent)
	want(t, e.do("GET", "/api/v1/budgets/"+b.ID, nil), http.StatusNotFound)
	want(t, e.do("DELETE", "/api/v1/budgets/"+b.ID, nil), http.StatusNotFound)

	var audit struct {
		Items []struct{ Action string }
	}
	resp = e.do("GET", "/api/v1/audit?target_type=budget", nil)
	want(t, resp, http.StatusOK)
	resp.decode(t, &audit)
	var actions []string
	for _, a := range audit.Items {
		actions = append(actions, a.Action)
	}
	if len(actions) != 3 {
		t.Fatalf("audit actions %q; want create, update, delete", actions)
	}
}

// TestTeamBudgetsAreBudgets: a team's monthly_budget_usd and
// plan_budget_usd are budgets of the budgets API (default thresholds), and
// what the budgets API changes shows on the team.
func TestTeamBudgetsAreBudgets(t *testing.T) {
	e := newEnv(t)
	var team teamDoc
	resp := e.do("POST", "/api/v1/teams", map[string]any{"name": "Budgeted", "monthly_budget_usd": "100", "plan_budget_usd": "50"})
	want(t, resp, http.StatusCreated)
	resp.decode(t, &team)

	type budget struct {
		ID         string `json:"id"`
		Window     string `json:"window"`
		Metric     string `json:"metric"`
		AmountUSD  string `json:"amount_usd"`
		Thresholds []int  `json:"thresholds"`
		Action     string `json:"action"`
	}
	list := func() (lines []string, ids map[string]string) {
		t.Helper()
		var l struct{ Budgets []budget }
		resp := e.do("GET", "/api/v1/budgets?scope=team&subject_id="+team.ID, nil)
		want(t, resp, http.StatusOK)
		resp.decode(t, &l)
		ids = map[string]string{}
		for _, b := range l.Budgets {
			lines = append(lines, fmt.Sprint(b.Window, " ", b.Metric, " ", b.AmountUSD, " ", b.Action, " ", b.Thresholds))
			ids[b.Metric] = b.ID
		}
		slices.Sort(lines)
		return lines, ids
	}
	lines, ids := list()
	if want := []string{"monthly bedrock 100.00 block [50 80 100]", "monthly plan_list 50.00 notify [50 80 100]"}; !slices.Equal(lines, want) {
		t.Fatalf("team budgets %q; want %q", lines, want)
	}

	get := func() teamDoc {
		t.Helper()
		var tm teamDoc
		resp := e.do("GET", "/api/v1/teams/"+team.ID, nil)
		want(t, resp, http.StatusOK)
		resp.decode(t, &tm)
		return tm
	}
	str := func(s *string) string {
		if s == nil {
			return "null"
		}
		return *s
	}
	for _, tc := range []struct {
		name, method, path string
		body               map[string]any
		status             int
		monthly, plan      string
		enforced           bool
	}{
		{"plan_only acts: enforced", "PATCH", "/api/v1/budgets/" + ids["plan_list"], map[string]any{"action": "plan_only", "amount_usd": "60"},
			http.StatusOK, "100.00", "60.00", true},
		{"notify: not enforced", "PATCH", "/api/v1/budgets/" + ids["plan_list"], map[string]any{"action": "notify"},
			http.StatusOK, "100.00", "60.00", false},
		{"monthly deleted", "DELETE", "/api/v1/budgets/" + ids["bedrock"], nil, http.StatusNoContent, "null", "60.00", false},
		{"monthly created", "POST", "/api/v1/budgets", map[string]any{"scope": "team", "subject_id": team.ID, "window": "monthly",
			"metric": "bedrock", "amount_usd": "7"}, http.StatusCreated, "7.00", "60.00", false},
		{"the team's own budget is the same row", "POST", "/api/v1/budgets", map[string]any{"scope": "team", "subject_id": team.ID,
			"window": "monthly", "metric": "plan_list", "amount_usd": "1"}, http.StatusConflict, "7.00", "60.00", false},
	} {
		want(t, e.do(tc.method, tc.path, tc.body), tc.status)
		tm := get()
		if str(tm.MonthlyBudgetUSD) != tc.monthly || str(tm.PlanBudgetUSD) != tc.plan || tm.PlanBudgetEnforced != tc.enforced {
			t.Fatalf("%s: team %s/%s/%v; want %s/%s/%v", tc.name, str(tm.MonthlyBudgetUSD), str(tm.PlanBudgetUSD), tm.PlanBudgetEnforced,
				tc.monthly, tc.plan, tc.enforced)
		}
	}

	// Through the teams API: enforced blocks, null deletes.
	want(t, e.do("PATCH", "/api/v1/teams/"+team.ID, map[string]any{"plan_budget_enforced": true, "monthly_budget_usd": nil}), http.StatusOK)
	lines, _ = list()
	if want := []string{"monthly plan_list 60.00 block [50 80 100]"}; !slices.Equal(lines, want) {
		t.Fatalf("team budgets %q; want %q", lines, want)
	}
}
