package admin_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

// dashboardData is a month of usage with hand-computed costs at the seeded
// list rates of claude-sonnet-4-5 (input 3, output 15, cache read 0.30,
// cache write 5 m 3.75, 1 h 6 USD per million tokens; Bedrock in us-east-1
// 10 % more).
type dashboardData struct {
	month              time.Time // start of the current UTC month
	ada, grace         string    // user ids
	adaKey, graceKey   string
	adaSpent           string // Bedrock spend this month
	e1, e2, e3, before store.UsageEvent
}

func seedDashboard(t *testing.T, e *env) dashboardData {
	t.Helper()
	now := time.Now().UTC()
	d := dashboardData{month: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)}
	d.ada = e.createUser("Ada Lovelace")
	d.grace = e.createUser("Grace Hopper")
	want(t, e.do("PATCH", "/api/v1/users/"+d.ada, map[string]any{"monthly_budget_usd": "10.00", "email": "ada@example.com"}), http.StatusOK)
	want(t, e.do("PATCH", "/api/v1/users/"+d.grace, map[string]any{"routing_strategy": "bedrock_only", "status": "disabled"}), http.StatusOK)
	issue := func(user string) string {
		resp := e.do("POST", "/api/v1/users/"+user+"/keys", map[string]any{"name": "laptop"})
		want(t, resp, http.StatusCreated)
		var k struct{ ID string }
		resp.decode(t, &k)
		return k.ID
	}
	d.adaKey, d.graceKey = issue(d.ada), issue(d.grace)
	ev := func(id string, at time.Duration, user, key string, p store.Provider, in, out, read, w5, w1 int64, cost string) store.UsageEvent {
		r := store.UsageEvent{RequestID: id, EventTime: d.month.Add(at), UserID: uuid.MustParse(user), AccessKeyID: uuid.MustParse(key),
			SessionID: "session-" + user[:8], Kind: store.KindMessages, RequestedModel: "claude-sonnet-4-5", Provider: p, Status: 200,
			InputTokens: in, OutputTokens: out, CacheReadTokens: read, CacheWrite5mTokens: w5, CacheWrite1hTokens: w1,
			CostUSD: decimal.RequireFromString(cost), PriceFlag: store.PriceExact, LatencyMs: 900}
		if p == store.ProviderBedrock {
			r.Region = "us-east-1"
		}
		return r
	}
	// 1000×3 + 100×15 + 2000×0.30 + 400×3.75 = 6,600 µ$
	d.e1 = ev("dash-1", 10*time.Hour+15*time.Minute, d.ada, d.adaKey, store.ProviderAnthropic, 1000, 100, 2000, 400, 0, "0.0066")
	// (10000×3 + 1000×15 + 1000×6) × 1.1 = 56,100 µ$, a fallback
	d.e2 = ev("dash-2", 33*time.Hour, d.ada, d.adaKey, store.ProviderBedrock, 10000, 1000, 0, 0, 1000, "0.0561")
	d.e2.Fallback, d.e2.FallbackReason = true, "plan_429"
	// 500×3 + 50×15 = 2,250 µ$
	d.e3 = ev("dash-3", 47*time.Hour+30*time.Minute, d.grace, d.graceKey, store.ProviderAnthropic, 500, 50, 0, 0, 0, "0.00225")
	// Last month: counted nowhere in this month.
	d.before = ev("dash-0", -time.Hour, d.ada, d.adaKey, store.ProviderBedrock, 100000, 0, 0, 0, 0, "1.0")
	if _, err := e.st.Usage().InsertEvents(context.Background(), []store.UsageEvent{d.e1, d.e2, d.e3, d.before}); err != nil {
		t.Fatal(err)
	}
	d.adaSpent = "0.056100"
	return d
}

func TestDashboardAPI(t *testing.T) {
	e := newEnv(t, func(o *admin.Options) { o.GatewayURL = "https://gw.example.com" })
	d := seedDashboard(t, e)
	month := "from=" + url.QueryEscape(d.month.Format(time.RFC3339)) + "&to=" + url.QueryEscape(d.month.AddDate(0, 1, 0).Format(time.RFC3339))

	t.Run("every new endpoint needs auth", func(t *testing.T) {
		for _, p := range []string{"/api/v1/auth/session", "/api/v1/developers", "/api/v1/users/" + d.ada + "/budget",
			"/api/v1/users/" + d.ada + "/sessions", "/api/v1/usage/top-users", "/api/v1/usage/cost-split"} {
			want(t, e.do("GET", p, nil, noAuth), http.StatusUnauthorized)
		}
	})

	t.Run("session", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/auth/session", nil)
		want(t, resp, http.StatusOK)
		var s struct {
			Username  string    `json:"username"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		resp.decode(t, &s)
		if s.Username != testAdmin || s.ExpiresAt.IsZero() {
			t.Errorf("session = %+v", s)
		}
		var raw map[string]any
		resp.decode(t, &raw)
		if raw["billing_timezone"] != "UTC" || raw["gateway_url"] != "https://gw.example.com" {
			t.Errorf("session = %s", resp.body)
		}
	})

	type dev struct {
		ID             string  `json:"id"`
		Name           string  `json:"name"`
		Keys           int     `json:"keys"`
		ActiveKeys     int     `json:"active_keys"`
		Requests       int64   `json:"requests"`
		PlanCostUSD    string  `json:"plan_cost_usd"`
		BedrockCostUSD string  `json:"bedrock_cost_usd"`
		Budget         *string `json:"monthly_budget_usd"`
	}
	type devPage struct {
		Items      []dev   `json:"items"`
		NextCursor *string `json:"next_cursor"`
		Total      int     `json:"total"`
		Month      string  `json:"month"`
	}
	t.Run("developers", func(t *testing.T) {
		ten := "10.00"
		ada := dev{ID: d.ada, Name: "Ada Lovelace", Keys: 1, ActiveKeys: 1, Requests: 2, PlanCostUSD: "0.006600", BedrockCostUSD: d.adaSpent, Budget: &ten}
		grace := dev{ID: d.grace, Name: "Grace Hopper", Keys: 1, ActiveKeys: 1, Requests: 1, PlanCostUSD: "0.002250", BedrockCostUSD: "0.000000"}
		tests := []struct {
			query string
			want  []dev
			total int
		}{
			{"", []dev{ada, grace}, 2},
			{"sort=spend&order=desc", []dev{ada, grace}, 2},
			{"sort=spend", []dev{grace, ada}, 2},
			{"sort=plan_cost&order=desc", []dev{ada, grace}, 2},
			{"q=HOPP", []dev{grace}, 1},
			{"q=ada%40example", []dev{ada}, 1},
			{"q=%25", nil, 0},
			{"status=disabled", []dev{grace}, 1},
			{"routing_strategy=plan_first", []dev{ada}, 1},
			{"limit=1", []dev{ada}, 2},
		}
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				resp := e.do("GET", "/api/v1/developers?"+tc.query, nil)
				want(t, resp, http.StatusOK)
				var pg devPage
				resp.decode(t, &pg)
				if pg.Total != tc.total || len(pg.Items) != len(tc.want) || pg.Month != d.month.Format("2006-01") {
					t.Fatalf("page = %s", resp.body)
				}
				for i := range tc.want {
					g, w := pg.Items[i], tc.want[i]
					if g.ID != w.ID || g.Name != w.Name || g.Keys != w.Keys || g.ActiveKeys != w.ActiveKeys || g.Requests != w.Requests ||
						g.PlanCostUSD != w.PlanCostUSD || g.BedrockCostUSD != w.BedrockCostUSD || (g.Budget == nil) != (w.Budget == nil) {
						t.Errorf("item %d = %+v, want %+v", i, g, w)
					}
				}
			})
		}
		t.Run("paging", func(t *testing.T) {
			resp := e.do("GET", "/api/v1/developers?limit=1", nil)
			var first devPage
			resp.decode(t, &first)
			if first.NextCursor == nil {
				t.Fatal("no next cursor")
			}
			resp = e.do("GET", "/api/v1/developers?limit=1&cursor="+*first.NextCursor, nil)
			var second devPage
			resp.decode(t, &second)
			if len(second.Items) != 1 || second.Items[0].ID != d.grace || second.NextCursor != nil {
				t.Fatalf("second page = %s", resp.body)
			}
		})
		t.Run("another month", func(t *testing.T) {
			// Last month holds only Ada's event "before".
			last := d.month.AddDate(0, -1, 0).Format("2006-01")
			resp := e.do("GET", "/api/v1/developers?sort=spend&order=desc&month="+last, nil)
			want(t, resp, http.StatusOK)
			var pg devPage
			resp.decode(t, &pg)
			if pg.Month != last || pg.Total != 2 || len(pg.Items) != 2 || pg.Items[0].ID != d.ada || pg.Items[0].BedrockCostUSD != "1.000000" ||
				pg.Items[0].Requests != 1 || pg.Items[1].Requests != 0 || pg.Items[1].BedrockCostUSD != "0.000000" {
				t.Fatalf("page of %s = %s", last, resp.body)
			}
		})
		for _, q := range []string{"sort=budget", "order=up", "status=gone", "routing_strategy=x", "cursor=%21", "month=2026-13", "month=2026-1", "month=last"} {
			t.Run("invalid "+q, func(t *testing.T) { want(t, e.do("GET", "/api/v1/developers?"+q, nil), http.StatusUnprocessableEntity) })
		}
	})

	t.Run("budget", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/users/"+d.ada+"/budget", nil)
		want(t, resp, http.StatusOK)
		var b struct {
			Budget    *string   `json:"monthly_budget_usd"`
			Spent     string    `json:"spent_usd"`
			Remaining *string   `json:"remaining_usd"`
			Percent   *float64  `json:"percent"`
			Month     string    `json:"month"`
			Resets    time.Time `json:"resets_at"`
		}
		resp.decode(t, &b)
		if *b.Budget != "10.00" || b.Spent != d.adaSpent || *b.Remaining != "9.943900" || *b.Percent != 0.56 ||
			b.Month != d.month.Format("2006-01") || !b.Resets.Equal(d.month.AddDate(0, 1, 0)) {
			t.Errorf("budget = %s", resp.body)
		}
		resp = e.do("GET", "/api/v1/users/"+d.grace+"/budget", nil)
		want(t, resp, http.StatusOK)
		var nb map[string]any
		resp.decode(t, &nb)
		if nb["monthly_budget_usd"] != nil || nb["percent"] != nil || nb["remaining_usd"] != nil || nb["spent_usd"] != "0.000000" {
			t.Errorf("no budget = %s", resp.body)
		}
		want(t, e.do("GET", "/api/v1/users/"+randomID+"/budget", nil), http.StatusNotFound)
	})

	t.Run("sessions", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/users/"+d.ada+"/sessions?"+month, nil)
		want(t, resp, http.StatusOK)
		var pg struct {
			Items []struct {
				SessionID      string    `json:"session_id"`
				FirstAt        time.Time `json:"first_at"`
				LastAt         time.Time `json:"last_at"`
				Models         []string  `json:"models"`
				Requests       int64     `json:"requests"`
				PlanCostUSD    string    `json:"plan_cost_usd"`
				BedrockCostUSD string    `json:"bedrock_cost_usd"`
				Fallbacks      int64     `json:"fallbacks"`
			} `json:"items"`
		}
		resp.decode(t, &pg)
		if len(pg.Items) != 1 {
			t.Fatalf("sessions = %s", resp.body)
		}
		s := pg.Items[0]
		if s.SessionID != "session-"+d.ada[:8] || !s.FirstAt.Equal(d.e1.EventTime) || !s.LastAt.Equal(d.e2.EventTime) ||
			!slices.Equal(s.Models, []string{"claude-sonnet-4-5"}) || s.Requests != 2 || s.PlanCostUSD != "0.0066" ||
			s.BedrockCostUSD != "0.0561" || s.Fallbacks != 1 {
			t.Errorf("session = %+v", s)
		}
	})

	t.Run("top users", func(t *testing.T) {
		for _, tc := range []struct {
			by    string
			order []string
		}{{"", []string{d.ada, d.grace}}, {"plan", []string{d.ada, d.grace}}, {"requests", []string{d.ada, d.grace}}} {
			resp := e.do("GET", "/api/v1/usage/top-users?"+month+"&by="+tc.by, nil)
			want(t, resp, http.StatusOK)
			var top struct {
				ActiveUsers int `json:"active_users"`
				Items       []struct {
					UserID         string `json:"user_id"`
					Name           string `json:"name"`
					BedrockCostUSD string `json:"bedrock_cost_usd"`
				} `json:"items"`
			}
			resp.decode(t, &top)
			if top.ActiveUsers != 2 || len(top.Items) != 2 || top.Items[0].UserID != tc.order[0] || top.Items[1].UserID != tc.order[1] ||
				top.Items[0].Name != "Ada Lovelace" || top.Items[0].BedrockCostUSD != "0.0561" {
				t.Errorf("by %q: %s", tc.by, resp.body)
			}
		}
		resp := e.do("GET", "/api/v1/usage/top-users?"+month+"&limit=1", nil)
		var top struct{ Items []any }
		resp.decode(t, &top)
		if len(top.Items) != 1 {
			t.Errorf("limit 1: %s", resp.body)
		}
		want(t, e.do("GET", "/api/v1/usage/top-users?by=vibes", nil), http.StatusUnprocessableEntity)
	})

	t.Run("cost split", func(t *testing.T) {
		type comps struct {
			Model    string `json:"model"`
			Provider string `json:"provider"`
			In       string `json:"input_usd"`
			Out      string `json:"output_usd"`
			Read     string `json:"cache_read_usd"`
			W5       string `json:"cache_write_5m_usd"`
			W1       string `json:"cache_write_1h_usd"`
			Total    string `json:"total_usd"`
			Savings  string `json:"cache_savings_usd"`
		}
		tests := []struct {
			name, query string
			total       comps
			models      []comps
		}{
			{"all users", month,
				comps{In: "0.037500", Out: "0.018750", Read: "0.000600", W5: "0.001500", W1: "0.006600", Total: "0.064950", Savings: "0.001800"},
				[]comps{
					// e1 + e3: 4,500 + 2,250 + 600 + 1,500 µ$; savings 2000×2.70 − 400×0.75
					{Model: "claude-sonnet-4-5", Provider: "anthropic", In: "0.004500", Out: "0.002250", Read: "0.000600", W5: "0.001500", W1: "0.000000", Total: "0.008850", Savings: "0.005100"},
					// e2: ×1.1; savings −1000×3.00×1.1
					{Model: "claude-sonnet-4-5", Provider: "bedrock", In: "0.033000", Out: "0.016500", Read: "0.000000", W5: "0.000000", W1: "0.006600", Total: "0.056100", Savings: "-0.003300"},
				}},
			{"one user", month + "&user_id=" + d.grace,
				comps{In: "0.001500", Out: "0.000750", Read: "0.000000", W5: "0.000000", W1: "0.000000", Total: "0.002250", Savings: "0.000000"},
				[]comps{{Model: "claude-sonnet-4-5", Provider: "anthropic", In: "0.001500", Out: "0.000750", Read: "0.000000", W5: "0.000000", W1: "0.000000", Total: "0.002250", Savings: "0.000000"}}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.do("GET", "/api/v1/usage/cost-split?"+tc.query, nil)
				want(t, resp, http.StatusOK)
				var cs struct {
					Total  comps   `json:"total"`
					Models []comps `json:"models"`
				}
				resp.decode(t, &cs)
				if cs.Total != tc.total || !slices.Equal(cs.Models, tc.models) {
					t.Errorf("cost split = %s", resp.body)
				}
			})
		}
	})

	t.Run("usage groups", func(t *testing.T) {
		tests := []struct {
			query string
			keys  []string
			reqs  []int64
		}{
			{"group_by=user", sorted(d.ada, d.grace), nil},
			{"group_by=key&user_id=" + d.ada, []string{d.adaKey}, []int64{2}},
			{"group_by=fallback_reason", []string{"plan_429"}, []int64{1}},
			// Days of Asia/Tokyo (UTC+9): e1 (10:15 UTC) is day 1's 19:15,
			// e2 (day 2 09:00 UTC) day 2's 18:00, e3 (day 2 23:30 UTC) day 3's 08:30.
			{"group_by=day&tz=Asia/Tokyo", []string{
				d.month.Add(-9 * time.Hour).Format(time.RFC3339), d.month.Add(15 * time.Hour).Format(time.RFC3339),
				d.month.Add(39 * time.Hour).Format(time.RFC3339)}, []int64{1, 1, 1}},
		}
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				resp := e.do("GET", "/api/v1/usage?"+month+"&"+tc.query, nil)
				want(t, resp, http.StatusOK)
				var u struct {
					Groups []struct {
						Key      string `json:"key"`
						Requests int64  `json:"requests"`
					} `json:"groups"`
				}
				resp.decode(t, &u)
				var keys []string
				var reqs []int64
				for _, g := range u.Groups {
					keys, reqs = append(keys, g.Key), append(reqs, g.Requests)
				}
				if !slices.Equal(keys, tc.keys) || tc.reqs != nil && !slices.Equal(reqs, tc.reqs) {
					t.Errorf("groups %v %v, want %v %v", keys, reqs, tc.keys, tc.reqs)
				}
			})
		}
		want(t, e.do("GET", "/api/v1/usage?group_by=day&tz=Mars/Olympus", nil), http.StatusUnprocessableEntity)
	})

	t.Run("bedrock credential, never the key", func(t *testing.T) {
		want(t, e.do("GET", "/api/v1/users/"+d.ada+"/bedrock", nil), http.StatusNotFound)
		want(t, e.do("PUT", "/api/v1/users/"+d.ada+"/bedrock", map[string]any{"type": "api_key", "api_key": "bedrock-secret-123", "region": "eu-west-1"}), http.StatusNoContent)
		want(t, e.do("PUT", "/api/v1/keys/"+d.adaKey+"/bedrock", map[string]any{"type": "aws_default_chain", "region": "us-west-2"}), http.StatusNoContent)
		for path, wantType := range map[string]string{"/api/v1/users/" + d.ada + "/bedrock": "api_key eu-west-1", "/api/v1/keys/" + d.adaKey + "/bedrock": "aws_default_chain us-west-2"} {
			resp := e.do("GET", path, nil)
			want(t, resp, http.StatusOK)
			var c struct{ Type, Region string }
			resp.decode(t, &c)
			if c.Type+" "+c.Region != wantType {
				t.Errorf("%s = %s", path, resp.body)
			}
		}
		want(t, e.do("GET", "/api/v1/keys/"+d.graceKey+"/bedrock", nil), http.StatusNotFound)
		if strings.Contains(e.allBodies(), "bedrock-secret-123") {
			t.Error("the API returned the Bedrock API key")
		}
	})

	t.Run("audit by actor", func(t *testing.T) {
		for actor, n := range map[string]int{testAdmin: 1, "nobody": 0} {
			resp := e.do("GET", "/api/v1/audit?action=user.create&actor="+actor, nil)
			want(t, resp, http.StatusOK)
			var pg struct{ Items []any }
			resp.decode(t, &pg)
			if len(pg.Items) != n*2 {
				t.Errorf("actor %s: %d entries, want %d", actor, len(pg.Items), n*2)
			}
		}
	})
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// TestDashboardUI: with a UI handler, paths outside /api/ are the UI's and
// unknown API paths stay problem documents.
func TestDashboardUI(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ui " + r.URL.Path)) })
	e := newEnv(t, func(o *admin.Options) { o.UI = ui })
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "ui /"},
		{"/developers/abc", 200, "ui /developers/abc"},
		{"/api/v1/nope", 404, ""},
		{"/api/other", 404, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(e.srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || tc.body != "" && string(body) != tc.body {
				t.Errorf("%s: %d %q", tc.path, resp.StatusCode, body)
			}
			if tc.status == 404 && resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s: content type %q", tc.path, resp.Header.Get("Content-Type"))
			}
		})
	}
}
