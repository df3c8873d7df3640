package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTeamCommands runs the teams commands and users' --team against a real
// admin server.
func TestTeamCommands(t *testing.T) {
	h := newHarness(t)
	h.login()

	var tm team
	out := h.ok("", "teams", "create", "--name", "Platform", "--monthly-budget-usd", "500", "--plan-budget-usd", "2000",
		"--plan-budget-enforced", "true", "--routing-strategy", "bedrock_only", "--allowed-models", "claude-sonnet-4-5, claude-haiku-4-5-20251001", "-o", "json")
	if err := json.Unmarshal([]byte(out), &tm); err != nil {
		t.Fatalf("teams create -o json printed %q: %v", out, err)
	}
	if tm.Name != "Platform" || *tm.MonthlyBudgetUSD != "500.00" || !tm.PlanBudgetEnforced || *tm.RoutingStrategy != "bedrock_only" ||
		tm.models() != "claude-sonnet-4-5,claude-haiku-4-5-20251001" {
		t.Fatalf("created team %+v", tm)
	}

	// A user joins with --team and takes the team's strategy.
	var u user
	if err := json.Unmarshal([]byte(h.ok("", "users", "create", "--name", "Ada", "-o", "json")), &u); err != nil {
		t.Fatal(err)
	}
	out = h.ok("", "users", "update", u.ID, "--team", tm.ID)
	for _, line := range []string{"Team:                " + tm.ID + "\n", "Routing strategy:    bedrock_only\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("users update --team printed:\n%s\nwant a line %q", out, line)
		}
	}

	if got, want := h.ok("", "teams", "list"), tableOf(
		[]string{"ID", "NAME", "MEMBERS", "BUDGET_USD", "PLAN_BUDGET_USD", "ROUTING", "MODELS"},
		[]string{tm.ID, "Platform", "1", "500.00", "2000.00 (enforced)", "bedrock_only", "claude-sonnet-4-5,claude-haiku-4-5-20251001"},
	); got != want {
		t.Errorf("teams list:\n%s\nwant:\n%s", got, want)
	}
	out = h.ok("", "teams", "update", tm.ID, "--allowed-models", "all", "--monthly-budget-usd", "none", "--preempt-threshold", "0.9")
	for _, line := range []string{"Allowed models:      all\n", "Monthly budget USD:  -\n", "Preempt threshold:   0.9\n", "Members:             1\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("teams update printed:\n%s\nwant a line %q", out, line)
		}
	}

	// Deletion is refused while the team has members.
	if _, _, err := h.run("", "teams", "delete", tm.ID); err == nil ||
		!strings.Contains(err.Error(), "the team still has 1 member(s) and 0 team admin(s)") {
		t.Errorf("deleting a team with members: %v", err)
	}
	h.ok("", "users", "update", u.ID, "--team", "none")
	if out := h.ok("", "teams", "delete", tm.ID); out != "Deleted team "+tm.ID+".\n" {
		t.Errorf("teams delete printed %q", out)
	}

	for _, tc := range []struct{ args []string }{
		{[]string{"teams", "update", tm.ID}},
		{[]string{"teams", "create", "--name", "x", "--plan-budget-enforced", "maybe"}},
	} {
		if _, _, err := h.run("", tc.args...); err == nil {
			t.Errorf("%v: no error", tc.args)
		}
	}
}
