package admin_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/usageexport"
	"github.com/ccproxy/ccproxy/internal/store"
)

// sums are what the checks add up.
type sums struct {
	requests                         int64
	input, output, read, w5m, w1h    int64
	cost, billed, plan, bedrock, lst decimal.Decimal
}

// csvSums reads an export and adds up its x_ and FOCUS columns.
func csvSums(t *testing.T, body []byte, header []string) (sums, int) {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], header) {
		t.Fatalf("header = %v, want %v", rows[0], header)
	}
	col := func(name string) int { return slices.Index(header, name) }
	var s sums
	for _, r := range rows[1:] {
		num := func(name string) int64 {
			n, err := strconv.ParseInt(r[col(name)], 10, 64)
			if err != nil {
				t.Fatalf("%s = %q: %v", name, r[col(name)], err)
			}
			return n
		}
		dec := func(name string) decimal.Decimal { return decimal.RequireFromString(r[col(name)]) }
		s.requests += num("x_Requests")
		s.input += num("x_InputTokens")
		s.output += num("x_OutputTokens")
		s.read += num("x_CacheReadTokens")
		s.w5m += num("x_CacheWrite5mTokens")
		s.w1h += num("x_CacheWrite1hTokens")
		s.cost = s.cost.Add(dec("x_CostUSD"))
		s.billed = s.billed.Add(dec("BilledCost"))
		s.lst = s.lst.Add(dec("ListCost"))
		if r[col("x_Provider")] == "bedrock" {
			s.bedrock = s.bedrock.Add(dec("x_CostUSD"))
		} else {
			s.plan = s.plan.Add(dec("x_CostUSD"))
		}
	}
	return s, len(rows) - 1
}

// TestUsageExportSumsToTheAPITotals seeds a month of usage (several users,
// models and both providers, costs to the micro-dollar, a few events just
// outside the month) and checks that both CSV exports of that month add up
// exactly to GET /usage's totals: requests, every token kind, Plan and
// Bedrock cost, and FOCUS BilledCost = Bedrock spend, ListCost = both.
func TestUsageExportSumsToTheAPITotals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	month := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	next := month.AddDate(0, 1, 0)
	users := []string{e.createUser("Ada"), e.createUser("=HYPERLINK(\"x\")"), e.createUser("Grace")}
	keys := map[string]uuid.UUID{}
	for _, u := range users {
		keys[u] = uuid.New()
	}
	models := []string{"claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "-weird-model"}
	rng := rand.New(rand.NewPCG(1, 2))
	var evs []store.UsageEvent
	for i := 0; i < 3000; i++ {
		at := month.Add(time.Duration(rng.Int64N(int64(next.Sub(month)))))
		if i%500 == 0 {
			at = month.Add(-time.Duration(1+rng.IntN(3600)) * time.Second) // the month before
		}
		if i%700 == 0 {
			at = next.Add(time.Duration(rng.IntN(3600)) * time.Second) // the month after
		}
		u := users[rng.IntN(len(users))]
		p := store.ProviderAnthropic
		region := ""
		if rng.IntN(3) == 0 {
			p, region = store.ProviderBedrock, "us-east-1"
		}
		evs = append(evs, store.UsageEvent{
			RequestID: fmt.Sprintf("exp-%d", i), EventTime: at, UserID: uuid.MustParse(u), AccessKeyID: keys[u],
			Kind: store.KindMessages, RequestedModel: models[rng.IntN(len(models))], Provider: p, Region: region, Status: 200,
			InputTokens: rng.Int64N(50000), OutputTokens: rng.Int64N(5000), CacheReadTokens: rng.Int64N(100000),
			CacheWrite5mTokens: rng.Int64N(3000), CacheWrite1hTokens: rng.Int64N(1000),
			CostUSD:   decimal.New(rng.Int64N(2_000_000), -6),
			PriceFlag: store.PriceExact, LatencyMs: 500,
		})
	}
	for i := 0; i < len(evs); i += 500 {
		if _, err := e.st.Usage().InsertNewEvents(ctx, evs[i:min(i+500, len(evs))]); err != nil {
			t.Fatal(err)
		}
	}
	q := "from=" + month.Format(time.RFC3339) + "&to=" + next.Format(time.RFC3339)
	resp := e.do(http.MethodGet, "/api/v1/usage?group_by=model&"+q, nil)
	want(t, resp, http.StatusOK)
	var api struct {
		Groups []struct {
			Requests           int64  `json:"requests"`
			InputTokens        int64  `json:"input_tokens"`
			OutputTokens       int64  `json:"output_tokens"`
			CacheReadTokens    int64  `json:"cache_read_tokens"`
			CacheWrite5mTokens int64  `json:"cache_write_5m_tokens"`
			CacheWrite1hTokens int64  `json:"cache_write_1h_tokens"`
			PlanCostUSD        string `json:"plan_cost_usd"`
			BedrockCostUSD     string `json:"bedrock_cost_usd"`
		} `json:"groups"`
	}
	resp.decode(t, &api)
	var total sums
	for _, g := range api.Groups {
		total.requests += g.Requests
		total.input += g.InputTokens
		total.output += g.OutputTokens
		total.read += g.CacheReadTokens
		total.w5m += g.CacheWrite5mTokens
		total.w1h += g.CacheWrite1hTokens
		total.plan = total.plan.Add(decimal.RequireFromString(g.PlanCostUSD))
		total.bedrock = total.bedrock.Add(decimal.RequireFromString(g.BedrockCostUSD))
	}
	total.cost = total.plan.Add(total.bedrock)
	total.billed, total.lst = total.bedrock, total.cost
	if total.requests < 2900 || total.requests >= int64(len(evs)) {
		t.Fatalf("API counts %d requests in the month: the seed is not what the test means", total.requests)
	}

	check := func(name string, got sums) {
		t.Helper()
		if got.requests != total.requests || got.input != total.input || got.output != total.output || got.read != total.read ||
			got.w5m != total.w5m || got.w1h != total.w1h {
			t.Errorf("%s: counts %+v, API %+v", name, got, total)
		}
		for _, c := range []struct {
			what      string
			got, want decimal.Decimal
		}{{"cost", got.cost, total.cost}, {"plan cost", got.plan, total.plan}, {"bedrock cost", got.bedrock, total.bedrock},
			{"BilledCost", got.billed, total.billed}, {"ListCost", got.lst, total.lst}} {
			if !c.got.Equal(c.want) {
				t.Errorf("%s: %s %s, API %s", name, c.what, c.got, c.want)
			}
		}
	}
	resp = e.do(http.MethodGet, "/api/v1/usage/export/requests?"+q, nil)
	want(t, resp, http.StatusOK)
	if ct := resp.header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	// Streamed: flushed before the end, so no length was known up front.
	if cl := resp.header.Get("Content-Length"); cl != "" {
		t.Errorf("Content-Length %s: the export was buffered whole", cl)
	}
	got, n := csvSums(t, resp.body, usageexport.RequestColumns)
	if int64(n) != total.requests {
		t.Errorf("per-request export has %d rows, want %d", n, total.requests)
	}
	check("per-request export", got)
	if strings.Contains(string(resp.body), ",=HYPERLINK") || !strings.Contains(string(resp.body), `"'=HYPERLINK(""x"")"`) ||
		!strings.Contains(string(resp.body), ",'-weird-model,") {
		t.Error("formula-like cells were not neutralised")
	}

	resp = e.do(http.MethodGet, "/api/v1/usage/export/daily?"+q, nil)
	want(t, resp, http.StatusOK)
	got, n = csvSums(t, resp.body, usageexport.DailyColumns)
	if n > 30*len(users)*len(models)*2 || n < 30 {
		t.Errorf("daily export has %d rows", n)
	}
	check("daily export", got)

	// A missing bound is a problem, not an empty CSV.
	resp = e.do(http.MethodGet, "/api/v1/usage/export/daily?from="+month.Format(time.RFC3339), nil)
	want(t, resp, http.StatusUnprocessableEntity)
	if p := resp.problem(t); !slices.Equal(p.fields(), []string{"to"}) {
		t.Errorf("fields %v", p.fields())
	}
}
