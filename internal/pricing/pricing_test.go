package pricing

import (
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/types/known/timestamppb"

	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func rates(in, out, read, w5, w1 string) Rates {
	return Rates{Input: dec(in), Output: dec(out), CacheRead: dec(read), CacheWrite5m: dec(w5), CacheWrite1h: dec(w1)}
}

func TestCost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rates  Rates
		tokens Tokens
		want   string
	}{
		// 1200 × 3 + 300 × 15 + 50 000 × 0.3 + 2000 × 3.75 + 1000 × 6 = 36 600 → $0.0366
		{"every kind", rates("3", "15", "0.3", "3.75", "6"), Tokens{1200, 300, 50_000, 2000, 1000}, "0.0366"},
		// 7 × 0.25 = 1.75 millionths, rounded half away from zero to 2.
		{"rounded to six places", rates("0.25", "0", "0", "0", "0"), Tokens{Input: 7}, "0.000002"},
		{"nothing", rates("3", "15", "0.3", "3.75", "6"), Tokens{}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cost(tc.rates, tc.tokens); !got.Equal(dec(tc.want)) {
				t.Errorf("Cost = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFamilyOf(t *testing.T) {
	for in, want := range map[string]string{
		"claude-opus-9-1": "opus", "claude-3-5-haiku-20241022": "haiku", "us.anthropic.claude-sonnet-4-5-20250929-v1:0": "sonnet",
		"Claude-Fable-5[1m]": "fable", "gpt-4o": "", "claude-4": "", "": "", "claude": "",
	} {
		if got := FamilyOf(in); got != want {
			t.Errorf("FamilyOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCardPrice(t *testing.T) {
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mar := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var (
		plainSonnet  = rates("3", "15", "0.3", "3.75", "6")
		euSonnet     = rates("3.3", "16.5", "0.33", "4.125", "6.6")
		marchSonnet  = rates("2", "10", "0.2", "2.5", "4")
		opusFamily   = rates("5", "25", "0.5", "6.25", "10")
		euOpusFamily = rates("5.5", "27.5", "0.55", "6.875", "11")
		planDefault  = rates("1", "2", "0.1", "1.25", "2")
	)
	card := NewCard([]Row{
		{Provider: "anthropic", ModelID: "claude-sonnet-4-5-20250929", Rates: plainSonnet, From: jan, To: mar},
		{Provider: "anthropic", ModelID: "claude-sonnet-4-5-20250929", Rates: marchSonnet, From: mar},
		{Provider: "bedrock", ModelID: "claude-sonnet-4-5-20250929", Rates: plainSonnet, From: jan},
		{Provider: "bedrock", Region: "eu-west-1", ModelID: "claude-sonnet-4-5-20250929", Rates: euSonnet, From: jan},
		{Provider: "anthropic", Family: "opus", Rates: opusFamily, From: jan},
		{Provider: "bedrock", Region: "eu-west-1", Family: "opus", Rates: euOpusFamily, From: jan},
		{Provider: "anthropic", Rates: planDefault, From: jan},
	}, []Model{
		{ID: "claude-sonnet-4-5-20250929", Aliases: []string{"claude-sonnet-4-5"}, Family: "sonnet"},
		// A mapping whose family differs from what its name says: the
		// mapping's family prices it.
		{ID: "claude-next-1", Family: "opus"},
	})
	feb := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                    string
		provider, region, model string
		at                      time.Time
		want                    Rates
		flag                    Flag
	}{
		{"model row", "anthropic", "", "claude-sonnet-4-5-20250929", feb, plainSonnet, Exact},
		{"alias resolves to its model", "anthropic", "", "claude-sonnet-4-5", feb, plainSonnet, Exact},
		{"the next price from its start", "anthropic", "", "claude-sonnet-4-5", mar, marchSonnet, Exact},
		{"the old price until just before", "anthropic", "", "claude-sonnet-4-5", mar.Add(-time.Nanosecond), plainSonnet, Exact},
		{"region row beats any region", "bedrock", "eu-west-1", "claude-sonnet-4-5", feb, euSonnet, Exact},
		{"any-region row elsewhere", "bedrock", "us-east-1", "claude-sonnet-4-5", feb, plainSonnet, Exact},
		{"family by the mapping", "anthropic", "", "claude-next-1", feb, opusFamily, Family},
		{"family by the name of an unknown model", "anthropic", "", "claude-opus-9", feb, opusFamily, Family},
		{"a region's family row", "bedrock", "eu-west-1", "claude-opus-9", feb, euOpusFamily, Family},
		{"provider default", "anthropic", "", "claude-haiku-9", feb, planDefault, Default},
		{"default for a name without a family", "anthropic", "", "gpt-4o", feb, planDefault, Default},
		{"fallback: nothing for the provider", "bedrock", "us-east-1", "claude-haiku-9", feb, Fallback(), Default},
		{"fallback: before every row", "anthropic", "", "claude-sonnet-4-5", jan.Add(-time.Hour), Fallback(), Default},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, flag := card.Price(tc.provider, tc.region, tc.model, tc.at)
			if !ratesEqual(got, tc.want) || flag != tc.flag {
				t.Errorf("Price = %v, %s; want %v, %s", got, flag, tc.want, tc.flag)
			}
		})
	}
}

func ratesEqual(a, b Rates) bool {
	return a.Input.Equal(b.Input) && a.Output.Equal(b.Output) && a.CacheRead.Equal(b.CacheRead) &&
		a.CacheWrite5m.Equal(b.CacheWrite5m) && a.CacheWrite1h.Equal(b.CacheWrite1h)
}

func TestCardFromProto(t *testing.T) {
	from := timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	to := timestamppb.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	row := func(edit func(*runtimev1.PriceRow)) *runtimev1.PriceRow {
		r := &runtimev1.PriceRow{Provider: "anthropic", ModelId: "claude-x-1", Input: "3", Output: "15", CacheRead: "0.3",
			CacheWrite_5M: "3.75", CacheWrite_1H: "6", EffectiveFrom: from, EffectiveTo: to}
		if edit != nil {
			edit(r)
		}
		return r
	}
	t.Run("nil is no card", func(t *testing.T) {
		if c, err := CardFromProto(nil); c != nil || err != nil || c.Len() != 0 {
			t.Errorf("CardFromProto(nil) = %v, %v", c, err)
		}
	})
	t.Run("valid", func(t *testing.T) {
		c, err := CardFromProto(&runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(nil)},
			Models: []*runtimev1.PricedModel{{AnthropicModelId: "claude-x-1", Aliases: []string{"x"}, Family: "x"}}})
		if err != nil || c.Len() != 1 {
			t.Fatalf("CardFromProto = %d rows, %v; want 1", c.Len(), err)
		}
		got, flag := c.Price("anthropic", "", "x", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
		if !ratesEqual(got, rates("3", "15", "0.3", "3.75", "6")) || flag != Exact {
			t.Errorf("Price = %v, %s", got, flag)
		}
		if _, flag := c.Price("anthropic", "", "x", to.AsTime()); flag != Default {
			t.Errorf("at effective_to: %s, want the fallback", flag)
		}
	})
	for _, tc := range []struct {
		name string
		card *runtimev1.PriceCard
		want string
	}{
		{"bad decimal", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.Output = "1,5" })}}, `output "1,5" is not a price`},
		{"negative", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.CacheRead = "-0.1" })}}, `cache_read "-0.1" is not a price`},
		{"empty rate", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.CacheWrite_1H = "" })}}, `cache_write_1h "" is not a price`},
		{"no start", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.EffectiveFrom = nil })}}, "no effective_from"},
		{"no provider", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.Provider = "" })}}, "empty provider"},
		{"model and family", &runtimev1.PriceCard{Rows: []*runtimev1.PriceRow{row(func(r *runtimev1.PriceRow) { r.Family = "x" })}}, "not both"},
		{"nameless model", &runtimev1.PriceCard{Models: []*runtimev1.PricedModel{{Family: "x"}}}, "empty anthropic_model_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CardFromProto(tc.card)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CardFromProto = %v, %v; want an error saying %q", c, err, tc.want)
			}
		})
	}
}
