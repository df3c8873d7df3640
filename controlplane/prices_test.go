package controlplane

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/ingest"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
)

// TestServedRateCardPricesAsTheIngester: the rate card the control plane
// serves, read back as extproc reads it, prices every provider, region and
// model — each mapping's id and aliases, a disabled mapping's, names the
// mappings do not know — now and after a scheduled price change exactly as
// the ingester prices a usage row from Postgres (its lookup is the oracle).
func TestServedRateCardPricesAsTheIngester(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	now := time.Now().UTC().Truncate(time.Second)
	later := now.Add(24 * time.Hour)
	dec := decimal.RequireFromString
	r := func(in string) store.PriceRates {
		d := dec(in)
		return store.PriceRates{Input: d, Output: d.Mul(dec("5")), CacheRead: d.Div(dec("10")), CacheWrite5m: d.Mul(dec("1.25")), CacheWrite1h: d.Mul(dec("2"))}
	}
	// Beyond the seeded card: a disabled mapping with a price of its own, a
	// mapping whose family is not what its name says, a scheduled change of
	// a seeded model's price, a price that has already ended, a regional
	// family price and a regional default.
	if _, err := st.Models().Create(ctx, store.NewModelMapping{AnthropicModelID: "claude-retired-1-20240101", Aliases: []string{"claude-retired-1"},
		Family: "retired", BedrockModelID: "anthropic.claude-retired-1-20240101-v1:0", Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Models().Create(ctx, store.NewModelMapping{AnthropicModelID: "claude-nova-2", Family: "opus",
		BedrockModelID: "anthropic.claude-nova-2-v1:0"}); err != nil {
		t.Fatal(err)
	}
	ended := now.Add(-time.Hour)
	for _, p := range []store.NewPrice{
		{Provider: store.ProviderAnthropic, ModelID: "claude-retired-1-20240101", PriceRates: r("7"), EffectiveFrom: now.AddDate(-1, 0, 0)},
		{Provider: store.ProviderAnthropic, ModelID: "claude-gone-1", PriceRates: r("9"), EffectiveFrom: now.AddDate(-1, 0, 0), EffectiveTo: &ended},
		{Provider: store.ProviderBedrock, Region: "eu-west-1", Family: "haiku", PriceRates: r("1.1"), EffectiveFrom: now.AddDate(-1, 0, 0)},
		{Provider: store.ProviderBedrock, Region: "ap-northeast-1", PriceRates: r("4.4"), EffectiveFrom: now.AddDate(-1, 0, 0)},
	} {
		if _, err := st.Prices().Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Prices().Supersede(ctx, store.NewPrice{Provider: store.ProviderAnthropic, ModelID: "claude-sonnet-4-5-20250929",
		PriceRates: r("2.5"), EffectiveFrom: later, Source: "scheduled change"}); err != nil {
		t.Fatal(err)
	}

	opts, err := DatabaseOptions(ctx, st, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	card, err := pricing.CardFromProto(opts.Bedrock.GetPrices())
	if err != nil || card == nil {
		t.Fatalf("served rate card: %v, %v", card, err)
	}
	mappings, err := st.Models().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"claude-opus-9", "claude-3-9-haiku-20300101", "claude-gone-1", "gpt-4o", "", "claude-sonnet-4-5[1m]", "CLAUDE-SONNET-4-5"}
	for _, m := range mappings {
		names = append(names, m.AnthropicModelID)
		names = append(names, m.Aliases...)
	}
	finder := ingest.NewRateFinder(st)
	checked := map[pricing.Flag]int{}
	for _, provider := range []store.Provider{store.ProviderAnthropic, store.ProviderBedrock} {
		for _, region := range []string{"", "us-east-1", "eu-west-1", "ap-northeast-1"} {
			for _, model := range names {
				for _, at := range []time.Time{now, later} {
					want, wantFlag, err := finder.Price(ctx, &store.UsageEvent{Provider: provider, Region: region, RequestedModel: model, EventTime: at})
					if err != nil {
						t.Fatal(err)
					}
					got, flag := card.Price(string(provider), region, model, at)
					if !ratesEqual(got, want) || string(flag) != string(wantFlag) {
						t.Errorf("%s %q %q at %s: served card %v (%s), ingester %v (%s)", provider, region, model, at, got, flag, want, wantFlag)
					}
					checked[flag]++
				}
			}
		}
	}
	// The grid reaches every kind of price, so the agreement means something.
	if checked[pricing.Exact] == 0 || checked[pricing.Family] == 0 || checked[pricing.Default] == 0 {
		t.Errorf("lookups by kind %v; want exact, family and default prices among them", checked)
	}
	t.Logf("%d names, lookups by kind %v", len(names), checked)
}

func ratesEqual(a, b store.PriceRates) bool {
	return a.Input.Equal(b.Input) && a.Output.Equal(b.Output) && a.CacheRead.Equal(b.CacheRead) &&
		a.CacheWrite5m.Equal(b.CacheWrite5m) && a.CacheWrite1h.Equal(b.CacheWrite1h)
}
