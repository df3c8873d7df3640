package admin_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/ingest"
	"github.com/ccproxy/ccproxy/internal/store"
)

// opus55 are the seeded list rates of claude-opus-5-5 on Plan, USD per
// million tokens: input 4, output 20, cache read 0.20, 5-minute write 5,
// 1-hour write 8.
var opus55 = store.PriceRates{Input: decimal.NewFromInt(4), Output: decimal.NewFromInt(20),
	CacheRead: decimal.RequireFromString("0.2"), CacheWrite5m: decimal.NewFromInt(5), CacheWrite1h: decimal.NewFromInt(8)}

// seedConversation stores a Claude Code session of six main-agent turns,
// 30 s apart and answered in 5 s, whose fifth turn lost its cache (it read
// nothing and re-wrote the whole prefix), and a subagent spawned by the
// second turn's answer (two requests, the second reading what the first
// wrote). It returns the session's total cost.
func seedConversation(t *testing.T, e *env, user, key string, t0 time.Time) decimal.Decimal {
	t.Helper()
	total := decimal.Zero
	var rows []store.UsageEvent
	add := func(id, agent string, at, latency time.Duration, in, read, w5 int64, spawns int) {
		r := store.UsageEvent{RequestID: id, EventTime: t0.Add(at), UserID: uuid.MustParse(user), AccessKeyID: uuid.MustParse(key),
			SessionID: "conv-1", AgentID: agent, AgentSpawns: spawns, ClientVersion: "2.1.332", Kind: store.KindMessages,
			RequestedModel: "claude-opus-5-5", Provider: store.ProviderAnthropic, Stream: true, Status: 200,
			InputTokens: in, OutputTokens: 100, CacheReadTokens: read, CacheWrite5mTokens: w5,
			PriceFlag: store.PriceExact, LatencyMs: int(latency.Milliseconds())}
		r.CostUSD = ingest.Cost(opus55, &r)
		total = total.Add(r.CostUSD)
		rows = append(rows, r)
	}
	s := time.Second
	add("turn-1", "", 0, 5*s, 10, 0, 20000, 0)
	add("turn-2", "", 30*s, 5*s, 12, 20000, 1500, 1)
	add("sub-1", "a8f3c2d1e0b9", 36*s, 2*s, 50, 0, 3000, 0)
	add("sub-2", "a8f3c2d1e0b9", 40*s, 2*s, 60, 3000, 0, 0)
	add("turn-3", "", 60*s, 5*s, 8, 21500, 800, 0)
	add("turn-4", "", 90*s, 5*s, 9, 22300, 1200, 0)
	add("turn-5", "", 120*s, 5*s, 7, 0, 24700, 0)
	add("turn-6", "", 150*s, 5*s, 10, 24700, 600, 0)
	if _, err := e.st.Usage().InsertEvents(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	return total
}

func TestSessionsAPI(t *testing.T) {
	e := newEnv(t)
	user := e.createUser("Ada Lovelace")
	resp := e.do("POST", "/api/v1/users/"+user+"/keys", map[string]any{"name": "laptop"})
	want(t, resp, http.StatusCreated)
	var k struct{ ID string }
	resp.decode(t, &k)
	t0 := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	total := seedConversation(t, e, user, k.ID, t0)
	// A cheaper, later session.
	cheap := store.UsageEvent{RequestID: "other-1", EventTime: t0.Add(time.Hour), UserID: uuid.MustParse(user),
		AccessKeyID: uuid.MustParse(k.ID), SessionID: "conv-2", Kind: store.KindMessages, RequestedModel: "claude-opus-5-5",
		Provider: store.ProviderAnthropic, Status: 200, InputTokens: 10, OutputTokens: 10, PriceFlag: store.PriceExact}
	cheap.CostUSD = ingest.Cost(opus55, &cheap)
	if _, err := e.st.Usage().InsertEvents(context.Background(), []store.UsageEvent{cheap}); err != nil {
		t.Fatal(err)
	}
	rng := "from=" + url.QueryEscape(t0.Add(-time.Minute).Format(time.RFC3339)) + "&to=" + url.QueryEscape(t0.Add(90*time.Minute).Format(time.RFC3339))

	t.Run("session list by cost", func(t *testing.T) {
		for _, tt := range []struct{ sort, first string }{{"cost", "conv-1"}, {"recent", "conv-2"}, {"", "conv-2"}} {
			resp := e.do("GET", "/api/v1/users/"+user+"/sessions?sort="+tt.sort+"&"+rng, nil)
			want(t, resp, http.StatusOK)
			var pg struct {
				Items []struct {
					SessionID string `json:"session_id"`
					Agents    int64  `json:"agents"`
					CostUSD   string `json:"cost_usd"`
				} `json:"items"`
			}
			resp.decode(t, &pg)
			if len(pg.Items) != 2 || pg.Items[0].SessionID != tt.first {
				t.Fatalf("sort %q: %s", tt.sort, resp.body)
			}
			for _, it := range pg.Items {
				if it.SessionID == "conv-1" && (it.Agents != 2 || it.CostUSD != total.String()) {
					t.Errorf("conv-1: %+v; want 2 agents costing %s", it, total)
				}
			}
		}
		e.do("GET", "/api/v1/users/"+user+"/sessions?sort=wasteful", nil).problem(t)
	})

	t.Run("session tree and cache break", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/users/"+user+"/sessions/conv-1", nil)
		want(t, resp, http.StatusOK)
		var got struct {
			TreeSource string `json:"tree_source"`
			Requests   int    `json:"requests"`
			CostUSD    string `json:"cost_usd"`
			DurationMs int64  `json:"duration_ms"`
			Root       struct {
				AgentID        string `json:"agent_id"`
				ParentSource   string `json:"parent_source"`
				Requests       int    `json:"requests"`
				CostUSD        string `json:"cost_usd"`
				SubtreeCostUSD string `json:"subtree_cost_usd"`
				SubagentCalls  int    `json:"subagent_calls"`
				Children       []struct {
					AgentID       string `json:"agent_id"`
					ParentSource  string `json:"parent_source"`
					SpawnedBy     string `json:"spawned_by_request_id"`
					Requests      int    `json:"requests"`
					CostUSD       string `json:"cost_usd"`
					DurationMs    int64  `json:"duration_ms"`
					ParentAgentID string `json:"parent_agent_id"`
				} `json:"children"`
			} `json:"root"`
			Cache struct {
				HitRate        string `json:"hit_rate"`
				SavedUSD       string `json:"saved_usd"`
				Unread5mTokens int64  `json:"unread_5m_tokens"`
				Unread5mUSD    string `json:"unread_5m_usd"`
				Breaks         int64  `json:"breaks"`
				BreakWastedUSD string `json:"break_wasted_usd"`
			} `json:"cache"`
			CacheBreaks []struct {
				RequestID         string `json:"request_id"`
				Turn              int    `json:"turn"`
				PreviousRequestID string `json:"previous_request_id"`
				GapMs             int64  `json:"gap_ms"`
				ExpectedTokens    int64  `json:"expected_tokens"`
				LostTokens        int64  `json:"lost_tokens"`
				WastedUSD         string `json:"wasted_usd"`
			} `json:"cache_breaks"`
		}
		resp.decode(t, &got)
		r := got.Root
		if got.TreeSource != "inferred" || got.Requests != 8 || got.CostUSD != total.String() || got.DurationMs != 155000 ||
			r.AgentID != "" || r.ParentSource != "root" || r.Requests != 6 || r.SubtreeCostUSD != total.String() || r.SubagentCalls != 1 ||
			len(r.Children) != 1 {
			t.Fatalf("tree %s", resp.body)
		}
		c := r.Children[0]
		if c.AgentID != "a8f3c2d1e0b9" || c.ParentSource != "spawn" || c.SpawnedBy != "turn-2" || c.ParentAgentID != "" ||
			c.Requests != 2 || c.DurationMs != 6000 {
			t.Errorf("subagent %+v", c)
		}
		own := decimal.RequireFromString(r.CostUSD).Add(decimal.RequireFromString(c.CostUSD))
		if !own.Equal(total) {
			t.Errorf("main %s + subagent %s = %s; want the session's %s", r.CostUSD, c.CostUSD, own, total)
		}
		// Turn 4 left 22300 + 1200 = 23500 tokens warm; turn 5 read none:
		// 23500 re-written at 5 instead of read at 0.20 = 23500 × 4.80 / 1e6.
		if len(got.CacheBreaks) != 1 {
			t.Fatalf("breaks %s", resp.body)
		}
		b := got.CacheBreaks[0]
		if b.RequestID != "turn-5" || b.Turn != 5 || b.PreviousRequestID != "turn-4" || b.GapMs != 25000 ||
			b.ExpectedTokens != 23500 || b.LostTokens != 23500 || b.WastedUSD != "0.1128" {
			t.Errorf("break %+v; want turn 5 wasting 0.1128", b)
		}
		// Saved, main agent: (−20000 + 74500 + 80900 + 83540 − 24700 + 93260) / 1e6
		// = 0.2875; subagent: (−3000 + 3000 × 3.8) / 1e6 = 0.0084. Never
		// read: turn 6's 600 tokens × 5 / 1e6. Hit rate 91500 / 143466.
		ca := got.Cache
		if ca.SavedUSD != "0.2959" || ca.Unread5mTokens != 600 || ca.Unread5mUSD != "0.003" || ca.HitRate != "0.637782" ||
			ca.Breaks != 1 || ca.BreakWastedUSD != "0.1128" {
			t.Errorf("cache %+v", ca)
		}
	})

	t.Run("cache breaks and economics", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/cache/breaks?user_id="+user+"&"+rng, nil)
		want(t, resp, http.StatusOK)
		var bl struct {
			Breaks []struct {
				RequestID string `json:"request_id"`
				SessionID string `json:"session_id"`
				Turn      int    `json:"turn"`
				WastedUSD string `json:"wasted_usd"`
			} `json:"breaks"`
		}
		resp.decode(t, &bl)
		if len(bl.Breaks) != 1 || bl.Breaks[0].RequestID != "turn-5" || bl.Breaks[0].Turn != 5 || bl.Breaks[0].SessionID != "conv-1" ||
			bl.Breaks[0].WastedUSD != "0.1128" {
			t.Errorf("breaks %s", resp.body)
		}
		for _, tt := range []struct{ groupBy, key, saved string }{
			{"session", "conv-1", "0.2959"}, {"model", "claude-opus-5-5", "0.2959"}, {"user", user, "0.2959"},
			{"day", t0.Format(time.DateOnly), ""},
		} {
			resp := e.do("GET", "/api/v1/cache/economics?group_by="+tt.groupBy+"&"+rng, nil)
			want(t, resp, http.StatusOK)
			var ec struct {
				Total struct {
					Requests int64  `json:"requests"`
					SavedUSD string `json:"saved_usd"`
				} `json:"total"`
				Groups []struct {
					Key      string `json:"key"`
					Name     string `json:"name"`
					SavedUSD string `json:"saved_usd"`
					Breaks   int64  `json:"breaks"`
				} `json:"groups"`
			}
			resp.decode(t, &ec)
			if ec.Total.Requests != 9 || ec.Total.SavedUSD != "0.2959" {
				t.Errorf("group_by %s: total %+v", tt.groupBy, ec.Total)
			}
			found := false
			for _, g := range ec.Groups {
				if g.Key == tt.key {
					found = true
					if tt.saved != "" && g.SavedUSD != tt.saved {
						t.Errorf("group_by %s: %+v; want saved %s", tt.groupBy, g, tt.saved)
					}
					if wantName := map[bool]string{true: "Ada Lovelace"}[tt.groupBy == "user"]; g.Name != wantName {
						t.Errorf("group_by %s: name %q; want %q", tt.groupBy, g.Name, wantName)
					}
				}
			}
			if !found && t0.Format(time.DateOnly) == t0.Add(150*time.Second).Format(time.DateOnly) {
				t.Errorf("group_by %s: no group %q in %s", tt.groupBy, tt.key, resp.body)
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tt := range []struct {
			path   string
			status int
		}{
			{"/api/v1/users/" + user + "/sessions/no-such-session", http.StatusNotFound},
			{"/api/v1/users/" + randomID + "/sessions/conv-1", http.StatusNotFound},
			{"/api/v1/users/not-a-uuid/sessions/conv-1", http.StatusNotFound},
			{"/api/v1/cache/economics?group_by=week", http.StatusUnprocessableEntity},
			{"/api/v1/cache/economics?user_id=nope", http.StatusUnprocessableEntity},
			{"/api/v1/cache/economics?key_id=" + k.ID, http.StatusUnprocessableEntity},
			{"/api/v1/cache/breaks?limit=0", http.StatusUnprocessableEntity},
			{"/api/v1/cache/breaks?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", http.StatusUnprocessableEntity},
		} {
			resp := e.do("GET", tt.path, nil)
			if resp.status != tt.status {
				t.Errorf("GET %s: %d %s; want %d", tt.path, resp.status, resp.body, tt.status)
			}
			resp.problem(t)
		}
		resp := e.do("GET", "/api/v1/cache/breaks", nil, noAuth)
		want(t, resp, http.StatusUnauthorized)
	})
}
