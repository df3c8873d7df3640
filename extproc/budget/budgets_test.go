package budget_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/internal/billing"
)

// TestCheckBudgets: the strongest used-up action wins; counters come from
// one MGET, a missing one from the KeyService (which sets it), and a
// budget whose spend cannot be learned is skipped.
func TestCheckBudgets(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, time.UTC)
	clk := &clock{now: time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)}
	c := e.checker(t, budget.Config{Now: clk.Now})
	user := e.newUser(t)
	team := uuid.New()
	e.spend(t, user, clk.now.Add(-time.Hour), "1.5")
	e.insert(t, user, "anthropic", clk.now.Add(-2*time.Hour), "4")

	mk := func(id, scope string, subject uuid.UUID, window, metric, amount, action string) accesskey.Budget {
		return accesskey.Budget{ID: id, Scope: scope, SubjectID: subject, Window: window, Metric: metric,
			AmountUSD: decimal.RequireFromString(amount), Action: action}
	}
	daily, _ := billing.WindowOf("daily", clk.now, time.UTC)
	for _, tc := range []struct {
		name    string
		budgets []accesskey.Budget
		action  string
		id      string
		spent   string
		resetAt time.Time
	}{
		{"none", nil, "", "", "0", time.Time{}},
		{"under", []accesskey.Budget{mk("a", "user", user, "daily", "bedrock", "2", "block")}, "", "", "0", time.Time{}},
		// Spending exactly the amount uses it up.
		{"exactly", []accesskey.Budget{mk("a", "user", user, "daily", "bedrock", "1.5", "downgrade")}, "downgrade", "a", "1.5", daily.End},
		{"plan list", []accesskey.Budget{mk("a", "user", user, "weekly", "plan_list", "4", "notify")}, "notify", "a", "4",
			time.Date(2026, 12, 14, 0, 0, 0, 0, time.UTC)},
		{"strongest wins", []accesskey.Budget{
			mk("n", "user", user, "monthly", "all", "1", "notify"),
			mk("d", "user", user, "daily", "all", "5", "downgrade"),
			mk("p", "user", user, "weekly", "bedrock", "1", "plan_only"),
			mk("b", "user", user, "daily", "plan_list", "10", "block"), // under
		}, "plan_only", "p", "1.5", time.Date(2026, 12, 14, 0, 0, 0, 0, time.UTC)},
		{"block beats all", []accesskey.Budget{
			mk("p", "user", user, "weekly", "bedrock", "1", "plan_only"),
			mk("b", "user", user, "daily", "plan_list", "0", "block"),
		}, "block", "b", "4", daily.End},
		{"a team without usage", []accesskey.Budget{mk("t", "team", team, "daily", "all", "0.01", "block")}, "", "", "0", time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := c.CheckBudgets(ctx, tc.budgets)
			if v.Action != tc.action || v.Budget.ID != tc.id || !v.Spent.Equal(decimal.RequireFromString(tc.spent)) || !v.ResetAt.Equal(tc.resetAt) || v.Unchecked != 0 || v.Stale {
				t.Fatalf("CheckBudgets = %+v; want action %q budget %q spent %s reset %s", v, tc.action, tc.id, tc.spent, tc.resetAt)
			}
		})
	}
	// The KeyService set the counters it recomputed.
	key := billing.BudgetKey(e.prefix, "user", user.String(), "all", daily)
	if v, err := e.rdb.Get(ctx, key).Result(); err != nil || v != "5.500000" {
		t.Fatalf("counter %s = %q, %v; want 5.500000", key, v, err)
	}
	// Later checks read Redis (after the cache's second), one MGET.
	e.rdb.Set(ctx, key, "9.000000", time.Hour)
	clk.Add(2 * time.Second)
	before := c.count(t, "ccproxy_extproc_budget_checks_total", "redis")
	v := c.CheckBudgets(ctx, []accesskey.Budget{mk("d", "user", user, "daily", "all", "9", "downgrade")})
	if v.Action != "downgrade" || c.count(t, "ccproxy_extproc_budget_checks_total", "redis") != before+1 {
		t.Fatalf("after a counter update: %+v", v)
	}

	// Redis and the KeyService down: a recent value is used as stale, an
	// unknown counter is skipped.
	dead := e.checker(t, budget.Config{Now: clk.Now, Redis: deadRedis(t), KeyService: deadKeyService(t)})
	v = dead.CheckBudgets(ctx, []accesskey.Budget{mk("d", "user", user, "daily", "all", "1", "block")})
	if v.Action != "" || v.Unchecked != 1 {
		t.Fatalf("dead dependencies: %+v; want nothing decided, 1 unchecked", v)
	}
}
