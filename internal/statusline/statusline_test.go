package statusline

import (
	"testing"
	"time"
)

func TestStatuslineRoutes(t *testing.T) {
	until := time.Date(2026, 12, 7, 14, 5, 0, 0, time.UTC)
	base := meStatus{}
	base.Spend.TotalUSD, base.Spend.BedrockUSD = "1", "0"
	tests := []struct {
		backend, reason string
		until           *time.Time
		want            string
	}{
		{"plan", "plan_first", nil, "→ Plan"},
		{"bedrock", "preemptive", &until, "→ Bedrock (preemptive until 14:05)"},
		{"bedrock", "breaker_open", &until, "→ Bedrock (breaker open until 14:05)"},
		{"bedrock", "bedrock_only", nil, "→ Bedrock"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			st := base
			st.Route.Backend, st.Route.Reason, st.Route.Until = tt.backend, tt.reason, tt.until
			want := "$1.00 this month · no budget · 5h n/a · " + tt.want
			if got := formatStatus(st, time.UTC); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestStatuslineBudgets: the most constraining acting budget (highest
// spent ÷ limit among block, plan_only and downgrade; ties to the stronger
// action, then the earlier reset) is shown after the monthly Bedrock
// budget, or instead of "no budget".
func TestStatuslineBudgets(t *testing.T) {
	day := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	week := time.Date(2026, 12, 14, 0, 0, 0, 0, time.UTC)
	b := func(window, limit, spent, action string, resets time.Time, downgrade map[string]string) meBudget {
		return meBudget{Window: window, LimitUSD: limit, SpentUSD: spent, Action: action, ResetsAt: &resets, DowngradeMap: downgrade}
	}
	sonnet := map[string]string{"opus": "claude-sonnet-4-5"}
	fifty := "50.00"
	tests := []struct {
		name    string
		monthly *string
		budgets []meBudget
		want    string
	}{
		{"none", nil, nil, "no budget"},
		{"only notify", nil, []meBudget{b("daily", "1.000000", "5.000000", "notify", day, nil)}, "no budget"},
		{"downgrade", nil, []meBudget{b("daily", "5.000000", "4.200000", "downgrade", day, sonnet)}, "day $4.20/$5.00 → sonnet"},
		{"block", nil, []meBudget{b("weekly", "20.000000", "7.250000", "block", week, nil)}, "week $7.25/$20.00 block"},
		{"plan only", nil, []meBudget{b("monthly", "10.000000", "1.750000", "plan_only", week, nil)}, "month $1.75/$10.00 plan only"},
		{"downgrade to two families", nil, []meBudget{b("daily", "5", "1", "downgrade", day,
			map[string]string{"opus": "claude-sonnet-4-5", "sonnet": "claude-3-5-haiku-20241022"})}, "day $1.00/$5.00 → haiku/sonnet"},
		{"downgrade without a map", nil, []meBudget{b("daily", "5", "1", "downgrade", day, nil)}, "day $1.00/$5.00 downgrade"},
		{"the highest ratio wins", nil, []meBudget{
			b("weekly", "20.000000", "7.250000", "block", week, nil),
			b("daily", "5.000000", "4.200000", "downgrade", day, sonnet),
			b("monthly", "10.000000", "1.750000", "plan_only", week, nil),
			b("daily", "1.000000", "3.000000", "notify", day, nil),
		}, "day $4.20/$5.00 → sonnet"},
		{"an equal ratio: the stronger action", nil, []meBudget{
			b("daily", "2.000000", "1.000000", "downgrade", day, sonnet),
			b("weekly", "4.000000", "2.000000", "block", week, nil),
			b("monthly", "6.000000", "3.000000", "plan_only", week, nil),
		}, "week $2.00/$4.00 block"},
		{"an equal ratio and action: the earlier reset", nil, []meBudget{
			b("weekly", "4.000000", "2.000000", "block", week, nil),
			b("daily", "2.000000", "1.000000", "block", day, nil),
		}, "day $1.00/$2.00 block"},
		{"a zero limit is used up", nil, []meBudget{
			b("daily", "5.000000", "4.990000", "downgrade", day, sonnet),
			b("weekly", "0.000000", "0.000000", "plan_only", week, nil),
		}, "week $0.00/$0.00 plan only"},
		{"with the monthly Bedrock budget", &fifty, []meBudget{b("daily", "5.000000", "5.100000", "block", day, nil)},
			"Bedrock $0.00 of $50.00 · day $5.10/$5.00 block"},
		{"the monthly Bedrock budget alone", &fifty, []meBudget{b("daily", "5.000000", "5.100000", "notify", day, nil)},
			"Bedrock $0.00 of $50.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st meStatus
			st.Spend.TotalUSD, st.Spend.BedrockUSD = "1", "0"
			st.Budget.MonthlyBudgetUSD = tt.monthly
			st.Budgets = tt.budgets
			st.Route.Backend = "plan"
			want := "$1.00 this month · " + tt.want + " · 5h n/a · → Plan"
			if got := formatStatus(st, time.UTC); got != want {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	for _, tt := range []struct {
		env     string
		want    time.Duration
		wantErr bool
	}{
		{"", DefaultTimeout, false},
		{"500ms", 500 * time.Millisecond, false},
		{"1m", time.Minute, false},
		{"0s", 0, true},
		{"-1s", 0, true},
		{"61s", 0, true},
		{"300", 0, true},
	} {
		got, err := Timeout(func(k string) string {
			if k == EnvTimeout {
				return tt.env
			}
			return ""
		})
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("Timeout(%s=%q) = %v, %v; want %v, error %v", EnvTimeout, tt.env, got, err, tt.want, tt.wantErr)
		}
	}
}
