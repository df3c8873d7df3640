package e2e

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// sessionNode is the part of the session tree API's nodes the test reads.
type sessionNode struct {
	AgentID        string        `json:"agent_id"`
	ParentAgentID  string        `json:"parent_agent_id"`
	ParentSource   string        `json:"parent_source"`
	SpawnedBy      string        `json:"spawned_by_request_id"`
	Requests       int           `json:"requests"`
	Models         []string      `json:"models"`
	CostUSD        string        `json:"cost_usd"`
	SubtreeCostUSD string        `json:"subtree_cost_usd"`
	SubagentCalls  int           `json:"subagent_calls"`
	Children       []sessionNode `json:"children"`
}

// TestSessionTree runs real Claude Code on a task that spawns a subagent:
// the fake Anthropic answers the main agent's turn with an Agent tool call,
// the subagent's first turn with a Bash call and its second with its
// report, and the main agent's next turn (carrying the report) with the
// final answer. The session tree from the admin API must show the main
// agent and the subagent, each with the cost of its own requests at the
// seeded prices, summing exactly to the session's cost. Then, with a
// conversation whose fifth turn lost its cache seeded for the same
// developer, the dashboard's session and prompt-cache pages are checked in
// chromium when it is available.
func TestSessionTree(t *testing.T) {
	// claude-opus-5-5 at the seeded list prices (USD per million tokens:
	// input 4, output 20, cache read 0.20, 5-minute write 5):
	//   main 1: 3000×4 + 120×20 + 20000×5            = 0.1144
	//   main 2: 100×4 + 40×20 + 20000×0.2 + 900×5    = 0.0097
	//   sub 1:  500×4 + 60×20 + 4000×5               = 0.0232
	//   sub 2:  200×4 + 30×20 + 4000×0.2 + 300×5     = 0.0037
	// main agent 0.1241, subagent 0.0269, session 0.151.
	uses := map[string]fakeanthropic.Usage{
		"main1": {Input: 3000, Output: 120, CacheWrite5m: 20000},
		"main2": {Input: 100, Output: 40, CacheRead: 20000, CacheWrite5m: 900},
		"sub1":  {Input: 500, Output: 60, CacheWrite5m: 4000},
		"sub2":  {Input: 200, Output: 30, CacheRead: 4000, CacheWrite5m: 300},
	}
	const (
		final     = "The subagent reported: subagent-output-77."
		report    = "subagent-output-77"
		spawnTool = "toolu_e2e_spawn1"
		bashTool  = "toolu_e2e_sub_bash1"
	)
	var sc scenarios
	fake := fakeanthropic.New(t, sc.handle)
	const password = "e2e-sessions-admin-password"
	g := startDevWith(t, devConfig{AnthropicURL: fake.URL, AdminPassword: password})

	// The handler runs on the fake's goroutines and names the marker that
	// sc.add returns: it reads it through markerV, stored once add returns
	// (before Claude Code, which sends it, is started).
	var markerV atomic.Value
	marker := sc.add(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		marker, _ := markerV.Load().(string)
		model := r.Model()
		reply := func(key string, blocks ...fakeanthropic.Block) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream(model, uses[key], blocks...)}
		}
		// A tool result is not always the last message: Claude Code may
		// append a system reminder after it.
		answered := func(tool string) bool { return bytes.Contains(r.Body, []byte(`"tool_use_id":"`+tool+`"`)) }
		if r.Header.Get("X-Claude-Code-Agent-Id") != "" {
			if answered(bashTool) {
				return reply("sub2", fakeanthropic.Block{Text: report})
			}
			return reply("sub1", fakeanthropic.Block{ToolName: "Bash", ToolID: bashTool,
				ToolInput: map[string]any{"command": "echo " + report, "description": "print the report"}})
		}
		if answered(spawnTool) {
			return reply("main2", fakeanthropic.Block{Text: final})
		}
		return reply("main1", fakeanthropic.Block{Text: "Delegating.", Chunks: 2}, fakeanthropic.Block{ToolName: "Agent", ToolID: spawnTool,
			ToolInput: map[string]any{"description": "Print the report", "subagent_type": "general-purpose", "run_in_background": false,
				"prompt": "Run echo " + report + " with Bash and report what it printed (" + marker + ")."}})
	})

	markerV.Store(marker)

	run := claudecode.Run{Bin: binaries.claude, BaseURL: g.BaseURL, APIKey: apiKey, Timeout: 2 * time.Minute}
	run.Args = []string{"--allowedTools", "Agent,Bash(echo:*)"}
	res := run.Prompt(t, "Delegate this to a subagent "+marker)
	wantPrinted(t, res, final)

	reqs := posts(t, fake, marker, 4)
	session := reqs[0].Header.Get("X-Claude-Code-Session-Id")
	var agent, spawnRequest string
	for _, r := range reqs {
		if a := r.Header.Get("X-Claude-Code-Agent-Id"); a != "" {
			if agent != "" && a != agent {
				t.Fatalf("two subagent ids: %q and %q", agent, a)
			}
			agent = a
		} else if !bytes.Contains(r.Body, []byte(`"tool_use_id":"`+spawnTool+`"`)) {
			spawnRequest = r.Header.Get("X-Request-Id")
		}
		if got := r.Header.Get("X-Claude-Code-Session-Id"); got != session {
			t.Errorf("request in session %q; want %q", got, session)
		}
	}
	if agent == "" || session == "" || spawnRequest == "" {
		t.Fatalf("subagent id %q, session %q, spawning request %q: Claude Code sent no subagent header", agent, session, spawnRequest)
	}
	waitUsage(t, g, session, 4)
	var userID string
	var spawns int
	if err := g.DB.QueryRow(context.Background(),
		`SELECT user_id::text, agent_spawns FROM usage_events WHERE request_id = $1`, spawnRequest).Scan(&userID, &spawns); err != nil {
		t.Fatal(err)
	}
	if spawns != 1 {
		t.Errorf("the spawning answer's row counts %d subagent calls; want 1", spawns)
	}

	a := admin{t: t, base: "http://" + g.AdminAddr, token: adminLogin(t, g.AdminAddr, "admin", password)}
	var tree struct {
		TreeSource string      `json:"tree_source"`
		Requests   int         `json:"requests"`
		CostUSD    string      `json:"cost_usd"`
		Root       sessionNode `json:"root"`
	}
	a.call("GET", "/api/v1/users/"+userID+"/sessions/"+session, nil, &tree)
	root := tree.Root
	if tree.TreeSource != "inferred" || tree.Requests != 4 || tree.CostUSD != "0.151" {
		t.Errorf("session: source %q, %d requests, cost %s; want inferred, 4, 0.151", tree.TreeSource, tree.Requests, tree.CostUSD)
	}
	if root.AgentID != "" || root.ParentSource != "root" || root.Requests != 2 || root.CostUSD != "0.1241" ||
		root.SubtreeCostUSD != "0.151" || root.SubagentCalls != 1 || len(root.Children) != 1 {
		t.Fatalf("main agent %+v; want 2 requests costing 0.1241, one subagent", root)
	}
	sub := root.Children[0]
	if sub.AgentID != agent || sub.ParentSource != "spawn" || sub.SpawnedBy != spawnRequest || sub.Requests != 2 ||
		sub.CostUSD != "0.0269" || sub.SubtreeCostUSD != "0.0269" || len(sub.Children) != 0 {
		t.Errorf("subagent %+v; want %s spawned by %s, 2 requests costing 0.0269", sub, agent, spawnRequest)
	}
	if sum := decimal.RequireFromString(root.CostUSD).Add(decimal.RequireFromString(sub.CostUSD)); !sum.Equal(decimal.RequireFromString(tree.CostUSD)) {
		t.Errorf("main %s + subagent %s = %s; want the session's %s", root.CostUSD, sub.CostUSD, sum, tree.CostUSD)
	}

	t.Run("dashboard", func(t *testing.T) {
		conv := seedCacheBreak(t, g, uuid.MustParse(userID))
		browseSessions(t, g, password, userID, session, agent, conv)
	})
}

// seedCacheBreak stores, for user, a six-turn session whose fifth turn lost
// its cache (claude-opus-5-5 at the seeded prices): turn 4 left 23500
// tokens warm, turn 5 re-wrote them at 5 instead of reading them at 0.20,
// wasting 23500 × 4.80 / 1e6 = 0.1128 USD. It returns the session id.
func seedCacheBreak(t *testing.T, g *gateway, user uuid.UUID) string {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, g.DB.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var key uuid.UUID
	if err := g.DB.QueryRow(ctx, `SELECT id FROM access_keys WHERE user_id = $1 LIMIT 1`, user).Scan(&key); err != nil {
		t.Fatal(err)
	}
	session := "seeded-break-" + uuid.NewString()[:8]
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	rates := map[string]decimal.Decimal{"in": decimal.NewFromInt(4), "out": decimal.NewFromInt(20), "read": decimal.RequireFromString("0.2"), "w5": decimal.NewFromInt(5)}
	var rows []store.UsageEvent
	for i, tk := range [][3]int64{{10, 0, 20000}, {12, 20000, 1500}, {8, 21500, 800}, {9, 22300, 1200}, {7, 0, 24700}, {10, 24700, 600}} {
		cost := rates["in"].Mul(decimal.NewFromInt(tk[0])).Add(rates["out"].Mul(decimal.NewFromInt(100))).
			Add(rates["read"].Mul(decimal.NewFromInt(tk[1]))).Add(rates["w5"].Mul(decimal.NewFromInt(tk[2]))).Shift(-6)
		rows = append(rows, store.UsageEvent{RequestID: session + "-turn-" + string(rune('1'+i)), EventTime: t0.Add(time.Duration(i) * 30 * time.Second),
			UserID: user, AccessKeyID: key, SessionID: session, ClientVersion: "2.1.332", Kind: store.KindMessages,
			RequestedModel: "claude-opus-5-5", Provider: store.ProviderAnthropic, Stream: true, Status: 200,
			InputTokens: tk[0], OutputTokens: 100, CacheReadTokens: tk[1], CacheWrite5mTokens: tk[2],
			CostUSD: cost, PriceFlag: store.PriceExact, LatencyMs: 5000})
	}
	if _, err := st.Usage().InsertEvents(ctx, rows); err != nil {
		t.Fatal(err)
	}
	return session
}

// browseSessions checks the session and prompt-cache pages in chromium
// (dashboard/e2e/sessions.mjs), skipping like TestDashboardInBrowser when
// the dashboard or chromium is missing.
func browseSessions(t *testing.T, g *gateway, password, userID, session, agent, conv string) {
	browser := needDashboardBrowser(t)
	var res struct {
		Error         string
		ConsoleErrors []string
	}
	browser.run(t, 3*time.Minute, "e2e/sessions.mjs", []string{"ADMIN=http://" + g.AdminAddr, "PASSWORD=" + password, "USER_ID=" + userID,
		"SESSION=" + session, "AGENT=" + agent, "CONV=" + conv}, &res)
	if len(res.ConsoleErrors) > 0 {
		t.Errorf("console errors: %q", res.ConsoleErrors)
	}
}
