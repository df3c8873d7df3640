package admin

import (
	"testing"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// TestSplitCost: the parts follow the rates' proportions, rounded to the
// micro-dollar, and always add up to the stored cost exactly.
func TestSplitCost(t *testing.T) {
	d := decimal.RequireFromString
	sonnet := store.PriceRates{Input: d("3"), Output: d("15"), CacheRead: d("0.3"), CacheWrite5m: d("3.75"), CacheWrite1h: d("6")}
	tests := []struct {
		name                  string
		cost                  string
		tok                   store.UsageTotals
		in, out, read, w5, w1 string
		savings               string
	}{
		{"list price", "0.0066", store.UsageTotals{InputTokens: 1000, OutputTokens: 100, CacheReadTokens: 2000, CacheWrite5mTokens: 400},
			"0.003", "0.0015", "0.0006", "0.0015", "0", "0.0051"},
		{"regional premium scales every part", "0.0561", store.UsageTotals{InputTokens: 10000, OutputTokens: 1000, CacheWrite1hTokens: 1000},
			"0.033", "0.0165", "0", "0", "0.0066", "-0.0033"},
		// Three equal weights of 15: a third of 10 µ$ each rounds to 3 µ$;
		// the last part takes the remaining micro-dollar.
		{"rounding remainder", "0.00001", store.UsageTotals{InputTokens: 5, OutputTokens: 1, CacheWrite5mTokens: 4},
			"0.000003", "0.000003", "0", "0.000004", "0", "-0.000001"},
		{"nothing to weigh by", "0.25", store.UsageTotals{}, "0.25", "0", "0", "0", "0", "0"},
		{"free", "0", store.UsageTotals{InputTokens: 10}, "0", "0", "0", "0", "0", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := splitCost(d(tc.cost), tc.tok, sonnet)
			got := []decimal.Decimal{c.in, c.out, c.read, c.w5m, c.w1h, c.savings}
			for i, w := range []string{tc.in, tc.out, tc.read, tc.w5, tc.w1, tc.savings} {
				if !got[i].Equal(d(w)) {
					t.Errorf("part %d = %s, want %s (all %v)", i, got[i], w, got)
				}
			}
			if sum := c.in.Add(c.out).Add(c.read).Add(c.w5m).Add(c.w1h); !sum.Equal(d(tc.cost)) {
				t.Errorf("parts add up to %s, want %s", sum, tc.cost)
			}
		})
	}
}
