package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

func rates(input string) store.PriceRates {
	in := decimal.RequireFromString(input)
	return store.PriceRates{Input: in, Output: in.Mul(decimal.NewFromInt(5)), CacheRead: in.Div(decimal.NewFromInt(10)),
		CacheWrite5m: in.Mul(decimal.RequireFromString("1.25")), CacheWrite1h: in.Mul(decimal.NewFromInt(2))}
}

func TestPriceAt(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	prices := st.Prices()
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mustPrice := func(n store.NewPrice) store.Price {
		t.Helper()
		if n.EffectiveFrom.IsZero() {
			n.EffectiveFrom = from
		}
		p, err := prices.Create(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Bedrock prices that differ from the seed, to see which row wins.
	mustPrice(store.NewPrice{Provider: store.ProviderBedrock, Region: "eu-west-1", Family: "opus", PriceRates: rates("7")})
	mustPrice(store.NewPrice{Provider: store.ProviderBedrock, Region: "eu-west-1", PriceRates: rates("9")})
	// A mapped model without a price of its own is priced by its family.
	if _, err := st.Models().Create(ctx, store.NewModelMapping{AnthropicModelID: "claude-haiku-9", Family: "haiku", BedrockModelID: "anthropic.claude-haiku-9"}); err != nil {
		t.Fatal(err)
	}

	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		q         store.PriceQuery
		wantInput string
		wantFlag  store.PriceFlag
	}{
		{"exact model", store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-opus-5-5", At: at}, "4", store.PriceExact},
		{"alias resolves to its model", store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-haiku-4-5", At: at}, "1", store.PriceExact},
		{"unpriced model of a known family", store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-opus-9", Family: "opus", At: at}, "5", store.PriceFamily},
		{"family from the mapping", store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-haiku-9", At: at}, "1", store.PriceFamily},
		{"unknown model and family", store.PriceQuery{Provider: store.ProviderAnthropic, Model: "gpt-7", At: at}, "5", store.PriceDefault},
		{"model any-region beats family in region", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "claude-opus-5-5", At: at}, "4", store.PriceExact},
		{"model in region (seeded eu. profile premium) beats model any-region", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "claude-sonnet-4-5", At: at}, "3.3", store.PriceExact},
		{"model any-region where the global profile serves", store.PriceQuery{Provider: store.ProviderBedrock, Region: "sa-east-1", Model: "claude-sonnet-4-5", At: at}, "3", store.PriceExact},
		{"seeded geographic-profile premium", store.PriceQuery{Provider: store.ProviderBedrock, Region: "us-east-1", Model: "claude-opus-4-8", At: at}, "5.5", store.PriceExact},
		{"no premium before Sonnet 4.5", store.PriceQuery{Provider: store.ProviderBedrock, Region: "us-east-1", Model: "claude-opus-4-1", At: at}, "15", store.PriceExact},
		{"no premium for Plan", store.PriceQuery{Provider: store.ProviderAnthropic, Region: "", Model: "claude-opus-4-8", At: at}, "5", store.PriceExact},
		{"family in region beats family any-region", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "claude-opus-9", Family: "opus", At: at}, "7", store.PriceFamily},
		{"family beats default in region", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "claude-haiku-9", At: at}, "1", store.PriceFamily},
		{"default in region beats default any-region", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "gpt-7", At: at}, "9", store.PriceDefault},
		{"region rows not yet effective", store.PriceQuery{Provider: store.ProviderBedrock, Region: "eu-west-1", Model: "gpt-7", At: from.Add(-time.Second)}, "5", store.PriceDefault},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, flag, err := prices.PriceAt(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Input.Equal(decimal.RequireFromString(tc.wantInput)) || flag != tc.wantFlag {
				t.Fatalf("PriceAt = input %s flag %q (row %s/%s/%s/%s), want %s %q", p.Input, flag,
					p.Provider, p.Region, p.ModelID, p.Family, tc.wantInput, tc.wantFlag)
			}
		})
	}
	if _, _, err := prices.PriceAt(ctx, store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-opus-5-5", At: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PriceAt before any price = %v", err)
	}
}

func TestPriceEffectiveDates(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	prices := st.Prices()
	change := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	seed, _, err := prices.PriceAt(ctx, store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-opus-5-5", At: change})
	if err != nil {
		t.Fatal(err)
	}
	np, err := prices.Supersede(ctx, store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "claude-opus-5-5",
		PriceRates: rates("3"), EffectiveFrom: change, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := prices.Get(ctx, seed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.EffectiveTo == nil || !old.EffectiveTo.Equal(change) || np.EffectiveTo != nil || np.Source != "test" {
		t.Fatalf("after supersede: old %v–%v, new %v–%v", old.EffectiveFrom, old.EffectiveTo, np.EffectiveFrom, np.EffectiveTo)
	}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{change.Add(-time.Microsecond), "4"},
		{change, "3"},
		{change.AddDate(5, 0, 0), "3"},
	} {
		p, _, err := prices.PriceAt(ctx, store.PriceQuery{Provider: store.ProviderAnthropic, Model: "claude-opus-5-5", At: tc.at})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Input.Equal(decimal.RequireFromString(tc.want)) {
			t.Errorf("price at %v = %s, want %s", tc.at, p.Input, tc.want)
		}
	}

	tests := []struct {
		name string
		np   store.NewPrice
		want error
	}{
		{"overlapping range", store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "claude-opus-5-5", PriceRates: rates("1"), EffectiveFrom: change.AddDate(0, 1, 0)}, store.ErrConflict},
		{"model and family", store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "m", Family: "opus", PriceRates: rates("1"), EffectiveFrom: change}, store.ErrInvalid},
		{"negative", store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "m", PriceRates: rates("-1"), EffectiveFrom: change}, store.ErrInvalid},
		{"unknown provider", store.NewPrice{Provider: "vertex", ModelID: "m", PriceRates: rates("1"), EffectiveFrom: change}, store.ErrInvalid},
		{"no start", store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "m", PriceRates: rates("1")}, store.ErrInvalid},
		{"end before start", store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "m", PriceRates: rates("1"), EffectiveFrom: change, EffectiveTo: ptr(change.Add(-time.Hour))}, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := prices.Create(ctx, tc.np); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}
	// Adjacent ranges do not overlap.
	bounded, err := prices.Create(ctx, store.NewPrice{Provider: store.ProviderBedrock, ModelID: "claude-x", PriceRates: rates("1"),
		EffectiveFrom: change, EffectiveTo: ptr(change.AddDate(0, 1, 0))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prices.Create(ctx, store.NewPrice{Provider: store.ProviderBedrock, ModelID: "claude-x", PriceRates: rates("2"),
		EffectiveFrom: change.AddDate(0, 1, 0)}); err != nil {
		t.Fatalf("adjacent range: %v", err)
	}

	upd, err := prices.Update(ctx, bounded.ID, store.PricePatch{Rates: store.Some(rates("1.5")), Source: store.Some("fixed")})
	if err != nil || !upd.Input.Equal(decimal.RequireFromString("1.5")) || !upd.Output.Equal(decimal.RequireFromString("7.5")) || upd.Source != "fixed" {
		t.Fatalf("Update = %+v, %v", upd, err)
	}
	if _, err := prices.Update(ctx, bounded.ID, store.PricePatch{EffectiveTo: store.Some[*time.Time](nil)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("opening a range onto its successor = %v, want ErrConflict", err)
	}
	list, err := prices.List(ctx, store.PriceFilter{Provider: store.ProviderBedrock, ModelID: "claude-x"})
	if err != nil || len(list) != 2 || list[0].ID != bounded.ID {
		t.Fatalf("List = %v, %v", list, err)
	}
	list, err = prices.List(ctx, store.PriceFilter{Provider: store.ProviderAnthropic, At: ptr(change)})
	if err != nil || len(list) != 22 {
		t.Fatalf("List anthropic at %v = %d rows, %v; want 22", change, len(list), err)
	}
	if err := prices.Delete(ctx, bounded.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := prices.Get(ctx, bounded.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get deleted = %v", err)
	}
	if err := prices.Delete(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delete unknown = %v", err)
	}
}
