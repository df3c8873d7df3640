package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// browserResult is what dashboard/e2e/run.mjs read off the pages.
type browserResult struct {
	Error                   string
	Key                     string
	DeveloperID             string
	GatewayStatus           int
	RecentRow, KeyRow       string
	BudgetMeter, BudgetText string
	RateLimits              string
	ListMeter               string
	RevokedStatus           int
	ExpiredTo               string
	AuditRows               int
	FirstLoadMs, LoginMs    int
	NumbersMs               int
	HeadroomRow, SeatRow    string
	TeamAdminNav            []string
	TeamAdminDevelopers     []string
	TeamAdminForbidden      []string
	TeamAdminOverviewTo     string
	ForecastRow             string
	LoginPageMs             int
	Today                   map[string]string
	LastMonth               map[string]string
	ConsoleErrors           []string
	OverviewCLS             float64
	Overflow1024            int
}

// TestDashboardInBrowser drives the admin dashboard in Debian's chromium
// (playwright-core) against a real `ccproxy dev`: log in (a wrong password
// first), create a developer, issue a key and read it from the dialog,
// send a request through the gateway with it, find it in the developer's
// recent requests and in the overview's totals with its cost, set a
// budget and see the bar, revoke the key and see the gateway refuse it,
// and come back to the page asked for after the session expired. A month
// seeded with known usage must show on the overview exactly what the API
// says and what is computed here by hand. Screenshots of every page go to
// $CCPROXY_BROWSER_ARTIFACTS (default: the test's temporary directory).
func TestDashboardInBrowser(t *testing.T) {
	browser := needDashboardBrowser(t)

	// The fake Anthropic answers every request with the same usage:
	// claude-sonnet-4-5 at the seeded list price (input 3, output 15,
	// cache read 0.30, cache write 5 m 3.75 USD per million tokens) costs
	// 0.30 + 0.15 + 0.06 + 0.15 = 0.66 USD.
	fake := fakeanthropic.New(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		return fakeanthropic.Reply{Header: http.Header{"Content-Type": {"application/json"}},
			Body: fakeanthropic.Message("claude-sonnet-4-5", "hello from the fake",
				fakeanthropic.Usage{Input: 100_000, Output: 10_000, CacheRead: 200_000, CacheWrite5m: 40_000})}
	})
	const password = "dashboard-browser-test-pw"
	g := startDevWith(t, devConfig{AnthropicURL: fake.URL, AdminPassword: password})
	seeded := seedLastMonth(t, g)
	seedHeadroom(t, g)
	seedTeamAdmin(t, g, password)

	// The control server lets the script end every admin session and wait
	// for the ingester.
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/wait-usage" {
			// Until the ingester stored the session's requests.
			want, _ := strconv.Atoi(r.URL.Query().Get("n"))
			for deadline := time.Now().Add(90 * time.Second); ; {
				var n int
				if err := g.DB.QueryRow(r.Context(), `SELECT count(*) FROM usage_events WHERE session_id = $1`, r.URL.Query().Get("session")).Scan(&n); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				if n >= want {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				if time.Now().After(deadline) {
					http.Error(w, fmt.Sprintf("%d usage rows after 90 s", n), http.StatusGatewayTimeout)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if r.Method != http.MethodPost || r.URL.Path != "/expire-sessions" {
			http.NotFound(w, r)
			return
		}
		if _, err := g.DB.Exec(r.Context(), `UPDATE admin_sessions SET expires_at = now() - interval '1 second' WHERE expires_at > now()`); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer control.Close()

	var res browserResult
	browser.run(t, 5*time.Minute, "e2e/run.mjs", []string{"ADMIN=http://" + g.AdminAddr, "GATEWAY=" + g.Base, "PASSWORD=" + password,
		"CONTROL=" + control.URL}, &res)

	// The gateway request's row, as the page shows it, and the key's last use.
	if !strings.Contains(res.RecentRow, "claude-sonnet-4-5 Plan 100K / 10K / 240K $0.66") || !strings.Contains(res.RecentRow, " 200") {
		t.Errorf("recent request row = %q", res.RecentRow)
	}
	// Created and last used: the ingester wrote last_used_at.
	if !strings.Contains(res.KeyRow, "laptop active") || len(regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d`).FindAllString(res.KeyRow, -1)) != 2 {
		t.Errorf("key row = %q", res.KeyRow)
	}
	// Plan traffic is not Bedrock spend: the budget is untouched.
	if want := "In effect for all of the developer's keys together: 5 requests per minute, 20,000 output tokens per minute. Every gateway replica shares them; over a limit, requests get 429 with retry-after."; res.RateLimits != want {
		t.Errorf("rate limits = %q, want %q", res.RateLimits, want)
	}
	if res.BudgetMeter != "$0.00 of $1.00 (0.0 %)" || res.ListMeter != res.BudgetMeter {
		t.Errorf("budget bar %q, list %q", res.BudgetMeter, res.ListMeter)
	}
	if res.GatewayStatus != 200 || res.RevokedStatus != 401 {
		t.Errorf("gateway %d before revocation, %d after", res.GatewayStatus, res.RevokedStatus)
	}
	if res.ExpiredTo != "/login?next=%2Faudit%3Faction%3Dkey.revoke" || res.AuditRows != 1 {
		t.Errorf("after expiry: %q, %d audit rows", res.ExpiredTo, res.AuditRows)
	}
	wantToday := map[string]string{"plan": "$0.66", "bedrock": "$0.00", "requests": "1", "tokens": "350K", "cache": "58.8 %", "active": "1"}
	for k, v := range wantToday {
		if res.Today[k] != v {
			t.Errorf("today's %s card = %q, want %q", k, res.Today[k], v)
		}
	}
	// The key's last use is written by the ingester.
	var lastUsed *time.Time
	if err := g.DB.QueryRow(context.Background(), `SELECT last_used_at FROM access_keys WHERE user_id = $1`, res.DeveloperID).Scan(&lastUsed); err != nil || lastUsed == nil {
		t.Errorf("last_used_at of the browser's key = %v, %v", lastUsed, err)
	}

	// Plan & seats, and the developer's headroom panel.
	if want := "Seeded Plan 42 %"; !strings.HasPrefix(res.HeadroomRow, want) || !strings.Contains(res.HeadroomRow, "10 %") ||
		!strings.Contains(res.HeadroomRow, "allowed_warning 95 %") {
		t.Errorf("headroom row = %q", res.HeadroomRow)
	}
	if !strings.HasPrefix(res.SeatRow, "Seeded Plan Max 5× $100.00 ") || !strings.Contains(res.SeatRow, "Keep") {
		t.Errorf("seat row = %q", res.SeatRow)
	}
	if !strings.HasPrefix(res.ForecastRow, "5 hours 42 %") {
		t.Errorf("forecast row = %q", res.ForecastRow)
	}

	// A team admin's dashboard is its team: its developers and the team,
	// and no page calls a route the API refuses it.
	if !slices.Equal(res.TeamAdminNav, []string{"Developers", "Team"}) || !slices.Equal(res.TeamAdminDevelopers, []string{"Seeded Plan"}) ||
		len(res.TeamAdminForbidden) != 0 || res.TeamAdminOverviewTo != "/developers" {
		t.Errorf("team admin: nav %q, developers %q, refused calls %q, / went to %q", res.TeamAdminNav, res.TeamAdminDevelopers,
			res.TeamAdminForbidden, res.TeamAdminOverviewTo)
	}

	// The seeded month: the page, the API and the hand-computed totals agree.
	api := seeded.apiTotals(t, g, password)
	for _, c := range []struct{ card, hand, api string }{
		{"bedrock", seeded.bedrock, api.bedrock},
		{"plan", seeded.plan, api.plan},
		{"requests", seeded.requests, api.requests},
		{"splitTotal", seeded.total, api.splitTotal},
	} {
		if res.LastMonth[c.card] != c.hand || c.api != c.hand {
			t.Errorf("last month's %s: page %q, API %q, by hand %q", c.card, res.LastMonth[c.card], c.api, c.hand)
		}
	}
	if res.LastMonth["tokens"] != seeded.tokens || res.LastMonth["fallback"] != seeded.fallbackRate || res.LastMonth["active"] != "3" {
		t.Errorf("last month's cards = %v; want tokens %s, fallback rate %s, 3 active", res.LastMonth, seeded.tokens, seeded.fallbackRate)
	}
	// No horizontal scrolling at 1024 px, and the page does not jump as
	// its numbers arrive (0.1 is the "good" cumulative layout shift).
	if res.Overflow1024 != 0 || res.OverviewCLS >= 0.1 {
		t.Errorf("overview: %d px overflow at 1024 px, layout shift %.3f", res.Overflow1024, res.OverviewCLS)
	}
	if len(res.ConsoleErrors) > 0 {
		t.Errorf("browser console errors: %q", res.ConsoleErrors)
	}
	t.Logf("login answered in %d ms; the overview showed its numbers %d ms later and its charts %d ms later", res.LoginMs, res.NumbersMs, res.FirstLoadMs)
	for _, name := range []string{"01-login-wrong-password", "02-overview", "02-overview-1024", "03-developers", "04-key-issued", "05-developer-detail", "06-models", "07-plan", "08-audit", "09-team-admin"} {
		if _, err := os.Stat(filepath.Join(browser.Artifacts, name+".png")); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

// seededMonth is last month's usage (UTC billing months), stored directly
// with known costs, and its totals computed here by hand.
type seededMonth struct {
	from, to                       time.Time
	bedrock, plan, requests, total string
	tokens, fallbackRate           string
}

func seedLastMonth(t *testing.T, g *gateway) seededMonth {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, g.DB.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	from := time.Date(now.Year(), now.Month()-1, 1, 0, 0, 0, 0, time.UTC)
	var users []uuid.UUID
	for _, n := range []struct {
		name string
		rs   store.RoutingStrategy
	}{{"Seeded Plan", store.PlanFirst}, {"Seeded Bedrock", store.BedrockOnly}, {"Seeded Fallback", store.PlanFirst}} {
		u, err := st.Users().Create(ctx, store.NewUser{Name: n.name, RoutingStrategy: n.rs})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
	}
	// Rates per million tokens of claude-sonnet-4-5: Plan list price, and
	// Bedrock in us-east-1 (10 % more).
	million := decimal.NewFromInt(1_000_000)
	plan := [3]decimal.Decimal{decimal.RequireFromString("3"), decimal.RequireFromString("15"), decimal.RequireFromString("0.3")}
	bedrock := [3]decimal.Decimal{decimal.RequireFromString("3.3"), decimal.RequireFromString("16.5"), decimal.RequireFromString("0.33")}
	var (
		events                  []store.UsageEvent
		planSum, bedrockSum     decimal.Decimal
		tokens, fallbacks, reqs int64
	)
	add := func(day, hour int, user uuid.UUID, p store.Provider, in, out, read int64, status int, reason string) {
		rates, sum := plan, &planSum
		if p == store.ProviderBedrock {
			rates, sum = bedrock, &bedrockSum
		}
		cost := rates[0].Mul(decimal.NewFromInt(in)).Add(rates[1].Mul(decimal.NewFromInt(out))).Add(rates[2].Mul(decimal.NewFromInt(read))).Div(million)
		*sum = sum.Add(cost)
		tokens += in + out + read
		reqs++
		e := store.UsageEvent{RequestID: uuid.NewString(), EventTime: from.AddDate(0, 0, day-1).Add(time.Duration(hour) * time.Hour),
			UserID: user, AccessKeyID: uuid.New(), SessionID: fmt.Sprintf("seed-%d", day), Kind: store.KindMessages,
			RequestedModel: "claude-sonnet-4-5", Provider: p, Status: status, InputTokens: in, OutputTokens: out,
			CacheReadTokens: read, CostUSD: cost, PriceFlag: store.PriceExact}
		if p == store.ProviderBedrock {
			e.Region = "us-east-1"
		}
		if reason != "" {
			e.Fallback, e.FallbackReason = true, reason
			fallbacks++
		}
		events = append(events, e)
	}
	for day := 1; day <= 28; day++ {
		add(day, 9, users[0], store.ProviderAnthropic, 200_000+10_000*int64(day), 20_000, 400_000, 200, "")
		if day%2 == 0 {
			add(day, 11, users[1], store.ProviderBedrock, 100_000, 10_000, 50_000, 200, "")
		}
		if day%7 == 0 {
			add(day, 15, users[2], store.ProviderBedrock, 10_000, 1_000, 0, 200, "plan_429")
		}
		if day == 3 || day == 17 {
			add(day, 16, users[2], store.ProviderAnthropic, 0, 0, 0, 529, "")
		}
	}
	add(20, 10, users[2], store.ProviderBedrock, 20_000, 2_000, 0, 200, "plan_unreachable")
	if _, err := st.Usage().InsertEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	return seededMonth{from: from, to: from.AddDate(0, 1, 0), bedrock: cents(bedrockSum), plan: cents(planSum),
		requests: fmt.Sprint(reqs), total: cents(planSum.Add(bedrockSum)), tokens: compact(tokens),
		fallbackRate: decimal.NewFromInt(fallbacks*100).Div(decimal.NewFromInt(reqs)).Round(1).StringFixed(1) + " %"}
}

// cents formats money as the dashboard does: dollars and cents, half away
// from zero, with thousands separators.
func cents(d decimal.Decimal) string {
	s := d.Round(2).StringFixed(2)
	whole, frac, _ := strings.Cut(s, ".")
	for i := len(whole) - 3; i > 0; i -= 3 {
		whole = whole[:i] + "," + whole[i:]
	}
	return "$" + whole + "." + frac
}

// compact formats a count as the dashboard's token cards do ("12.3M").
func compact(n int64) string {
	for _, u := range []struct {
		div    int64
		suffix string
	}{{1_000_000_000, "B"}, {1_000_000, "M"}, {1_000, "K"}} {
		if n >= u.div {
			return strings.TrimSuffix(decimal.NewFromInt(n).Div(decimal.NewFromInt(u.div)).Round(1).StringFixed(1), ".0") + u.suffix
		}
	}
	return fmt.Sprint(n)
}

type apiTotals struct{ bedrock, plan, requests, splitTotal string }

// apiTotals reads the seeded month's totals from the admin API and formats
// them as the dashboard does (cents, half away from zero).
func (s seededMonth) apiTotals(t *testing.T, g *gateway, password string) apiTotals {
	t.Helper()
	a := admin{t: t, base: "http://" + g.AdminAddr, token: adminLogin(t, g.AdminAddr, "admin", password)}
	span := "from=" + url.QueryEscape(s.from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(s.to.Format(time.RFC3339))
	var u struct {
		Groups []struct {
			Requests       int64  `json:"requests"`
			PlanCostUSD    string `json:"plan_cost_usd"`
			BedrockCostUSD string `json:"bedrock_cost_usd"`
		} `json:"groups"`
	}
	a.call("GET", "/api/v1/usage?group_by=provider&"+span, nil, &u)
	var bedrock, plan decimal.Decimal
	var requests int64
	for _, gr := range u.Groups {
		bedrock = bedrock.Add(decimal.RequireFromString(gr.BedrockCostUSD))
		plan = plan.Add(decimal.RequireFromString(gr.PlanCostUSD))
		requests += gr.Requests
	}
	var split struct {
		Total struct {
			TotalUSD string `json:"total_usd"`
		} `json:"total"`
	}
	a.call("GET", "/api/v1/usage/cost-split?"+span, nil, &split)
	return apiTotals{bedrock: cents(bedrock), plan: cents(plan), requests: fmt.Sprint(requests),
		splitTotal: cents(decimal.RequireFromString(split.Total.TotalUSD))}
}

// seedTeamAdmin puts the seeded Plan developer in a team, "Seeded Team",
// and creates its team admin "lead" (the admin's password) through the API.
func seedTeamAdmin(t *testing.T, g *gateway, password string) {
	t.Helper()
	ctx := context.Background()
	var team uuid.UUID
	if err := g.DB.QueryRow(ctx, `INSERT INTO teams (name) VALUES ('Seeded Team') RETURNING id`).Scan(&team); err != nil {
		t.Fatal(err)
	}
	if _, err := g.DB.Exec(ctx, `UPDATE users SET team_id = $1 WHERE name = 'Seeded Plan'`, team); err != nil {
		t.Fatal(err)
	}
	a := admin{t: t, base: "http://" + g.AdminAddr, token: adminLogin(t, g.AdminAddr, "admin", password)}
	a.call("POST", "/api/v1/admins", map[string]any{"username": "lead", "password": password, "role": "team_admin", "team_id": team}, nil)
}

// seedHeadroom gives the seeded Plan developer a Max 5× seat, a
// pre-emptive failover threshold of 95 % and one Plan headroom reading.
func seedHeadroom(t *testing.T, g *gateway) {
	t.Helper()
	ctx := context.Background()
	var id uuid.UUID
	if err := g.DB.QueryRow(ctx, `UPDATE users SET seat_type = 'max_5x', preempt_threshold = 0.95 WHERE name = 'Seeded Plan' RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// The reading's bucket is its own time's, as the ingester stores it: a
	// bucket after the reading (now's, in the first minute of a 5-minute
	// bucket) would put it outside the forecast's range.
	sampled := now.Add(-time.Minute)
	if _, err := g.DB.Exec(ctx, `INSERT INTO plan_headroom (user_id, bucket, sampled_at, access_key_id, status, claim,
		utilization_5h, reset_5h, utilization_7d, reset_7d, reset_at) VALUES ($1, $2, $3, $4, 'allowed_warning', 'five_hour', 0.42, $5, 0.1, $6, $5)`,
		id, sampled.Truncate(5*time.Minute), sampled, uuid.New(), now.Add(2*time.Hour), now.Add(100*time.Hour)); err != nil {
		t.Fatal(err)
	}
}
