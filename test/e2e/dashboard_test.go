package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/dashboard"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// browserResult is what dashboard/e2e/run.mjs read off the pages.
type browserResult struct {
	Error                    string
	Key                      string
	DeveloperID              string
	GatewayStatus            int
	RecentRow, KeyRow        string
	BudgetMeter, BudgetText  string
	ListMeter                string
	RevokedStatus            int
	ExpiredTo                string
	AuditRows                int
	FirstLoadMs, LoginPageMs int
	Today                    map[string]string
	LastMonth                map[string]string
	ConsoleErrors            []string
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
	required := os.Getenv("CCPROXY_REQUIRE_BROWSER_TESTS") == "1"
	skip := func(why string) {
		if required {
			t.Fatal(why + " (CCPROXY_REQUIRE_BROWSER_TESTS=1: make test builds the dashboard and installs chromium)")
		}
		t.Skip(why + "; make test runs this test")
	}
	if !dashboard.Built() {
		skip("the dashboard is not built into this binary (make dashboard)")
	}
	chromiumPath, err := exec.LookPath("chromium")
	if err != nil {
		skip("no chromium")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", "dashboard"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "playwright-core")); err != nil {
		skip("dashboard/node_modules has no playwright-core (make dashboard)")
	}

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

	artifacts := os.Getenv("CCPROXY_BROWSER_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(t.TempDir(), "screenshots")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/run.mjs")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "ADMIN=http://"+g.AdminAddr, "GATEWAY="+g.Base, "PASSWORD="+password,
		"CONTROL="+control.URL, "ARTIFACTS="+artifacts, "CHROMIUM="+chromiumPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var res browserResult
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			if err := json.Unmarshal([]byte(v), &res); err != nil {
				t.Fatalf("browser result: %v", err)
			}
		} else {
			t.Log(sc.Text())
		}
	}
	t.Logf("screenshots in %s", artifacts)
	if runErr != nil || res.Error != "" {
		t.Fatalf("browser test failed: %v %s\n%s", runErr, res.Error, stderr.String())
	}

	// The gateway request's row, as the page shows it, and the key's last use.
	if !strings.Contains(res.RecentRow, "claude-sonnet-4-5 Plan 100K / 10K / 240K $0.66") || !strings.Contains(res.RecentRow, " 200") {
		t.Errorf("recent request row = %q", res.RecentRow)
	}
	// Created and last used: the ingester wrote last_used_at.
	if !strings.Contains(res.KeyRow, "laptop active") || len(regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d`).FindAllString(res.KeyRow, -1)) != 2 {
		t.Errorf("key row = %q", res.KeyRow)
	}
	// Plan traffic is not Bedrock spend: the budget is untouched.
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
	if res.LastMonth["tokens"] != "3.8M" || res.LastMonth["fallback"] != "33.3 %" || res.LastMonth["active"] != "2" {
		t.Errorf("last month's cards = %v", res.LastMonth)
	}
	if len(res.ConsoleErrors) > 0 {
		t.Errorf("browser console errors: %q", res.ConsoleErrors)
	}
	t.Logf("first load after login: %d ms", res.FirstLoadMs)
	for _, name := range []string{"01-login-wrong-password", "02-overview", "03-developers", "04-key-issued", "05-developer-detail", "06-models", "07-audit"} {
		if _, err := os.Stat(filepath.Join(artifacts, name+".png")); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

// seededMonth is last month's usage (UTC billing months), stored directly
// with known costs, and its totals computed by hand.
type seededMonth struct {
	from, to                       time.Time
	bedrock, plan, requests, total string
}

func seedLastMonth(t *testing.T, g *gateway) seededMonth {
	t.Helper()
	ctx := context.Background()
	dsn := g.DB.Config().ConnString()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	from := time.Date(now.Year(), now.Month()-1, 1, 0, 0, 0, 0, time.UTC)
	at := from.AddDate(0, 0, 9).Add(14 * time.Hour)
	u1, err := st.Users().Create(ctx, store.NewUser{Name: "Seeded One"})
	if err != nil {
		t.Fatal(err)
	}
	u2, err := st.Users().Create(ctx, store.NewUser{Name: "Seeded Two", RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(id string, u uuid.UUID, p store.Provider, in, out, read int64, cost string, fallback bool) store.UsageEvent {
		e := store.UsageEvent{RequestID: "seed-" + id + "-" + uuid.NewString(), EventTime: at, UserID: u, AccessKeyID: uuid.New(),
			Kind: store.KindMessages, RequestedModel: "claude-sonnet-4-5", Provider: p, Status: 200,
			InputTokens: in, OutputTokens: out, CacheReadTokens: read, CostUSD: decimal.RequireFromString(cost), PriceFlag: store.PriceExact}
		if p == store.ProviderBedrock {
			e.Region = "us-east-1"
		}
		if fallback {
			e.Fallback, e.FallbackReason = true, "plan_429"
		}
		return e
	}
	events := []store.UsageEvent{
		// 2,000,000 × 3 + 200,000 × 15 = 9.00 USD (Plan list price)
		ev("1", u1.ID, store.ProviderAnthropic, 2_000_000, 200_000, 0, "9.000000", false),
		// (1,000,000 × 3 + 100,000 × 15 + 500,000 × 0.30) × 1.1 = 5.115 USD
		ev("2", u2.ID, store.ProviderBedrock, 1_000_000, 100_000, 500_000, "5.115000", false),
		// (10,000 × 3 + 1,000 × 15) × 1.1 = 0.0495 USD, after Plan's 429
		ev("3", u1.ID, store.ProviderBedrock, 10_000, 1_000, 0, "0.049500", true),
	}
	if _, err := st.Usage().InsertEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	// Bedrock 5.115 + 0.0495 = 5.1645 → $5.16; Plan $9.00; all 14.1645 → $14.16.
	return seededMonth{from: from, to: from.AddDate(0, 1, 0), bedrock: "$5.16", plan: "$9.00", requests: "3", total: "$14.16"}
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
	cents := func(d decimal.Decimal) string { return "$" + d.Round(2).StringFixed(2) }
	return apiTotals{bedrock: cents(bedrock), plan: cents(plan), requests: fmt.Sprint(requests),
		splitTotal: cents(decimal.RequireFromString(split.Total.TotalUSD))}
}
