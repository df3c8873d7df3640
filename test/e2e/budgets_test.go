package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// addBudget creates a user's daily budget through the admin API, as an
// administrator would; downgrade is the action's map (nil without one).
func addBudget(fg *fallbackGateway, userID, metric, amount, action string, downgrade map[string]string) {
	in := map[string]any{"scope": "user", "subject_id": userID, "window": "daily", "metric": metric,
		"amount_usd": amount, "thresholds": []int{50, 100}, "action": action}
	if downgrade != nil {
		in["downgrade_map"] = downgrade
	}
	fg.admin.call("POST", "/api/v1/budgets", in, nil)
}

// waitBudgetSpent waits until the user's daily budget counter (billing time
// zone UTC) reaches amount, then past extproc's 1 s cache.
func waitBudgetSpent(t *testing.T, fg *fallbackGateway, userID, metric, amount string) {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	key := fg.RedisPrefix + "budget:user:" + userID + ":" + metric + ":daily:" + time.Now().UTC().Format("2006-01-02")
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := rdb.Get(context.Background(), key).Result()
		if err == nil && decimal.RequireFromString(v).GreaterThanOrEqual(decimal.RequireFromString(amount)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget counter %s = %q, %v after 30 s; want at least %s", key, v, err, amount)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond)
}

// TestBudgetDowngrade: a user's daily budget (metric all, action downgrade
// opus → sonnet) spent by a first turn makes the next `claude --model opus`
// turn reach the upstream with the Sonnet model id; the response says so in
// its headers and the usage row records it.
func TestBudgetDowngrade(t *testing.T) {
	fg := startFallbackGateway(t)
	u := fg.admin.user("downgraded", "plan_first", eastCredential())
	addBudget(fg, u.ID, "all", "0.01", "downgrade", map[string]string{"opus": "claude-sonnet-4-5"})
	const sonnet = "claude-sonnet-4-5"
	// 100,000 input tokens at Opus list prices cost far more than $0.01.
	marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), fakeanthropic.Usage{Input: 100_000, Output: 9},
			fakeanthropic.Block{Text: "Served by " + r.Model() + ".", Chunks: 1})}
	}, nil)
	run := fg.claude(u.Key)
	run.Args = []string{"--model", "opus"}
	wantPrinted(t, run.Prompt(t, "First turn "+marker), "Served by "+mainModel+".")
	waitBudgetSpent(t, fg, u.ID, "all", "0.01")

	before := len(carrying(fg.plan, marker))
	wantPrinted(t, run.Prompt(t, "Second turn "+marker), "Served by "+sonnet+".")
	var models []string
	for _, r := range carrying(fg.plan, marker)[before:] {
		if r.URLPath() == "/v1/messages" {
			models = append(models, r.Model())
			if strings.Contains(r.Model(), "opus") {
				t.Errorf("Plan received %s after the budget was used up", r.Model())
			}
		}
	}
	if !containsString(models, sonnet) {
		t.Fatalf("Plan saw models %q for the second turn; want %s", models, sonnet)
	}

	// The response tells the client.
	status, hdr, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
	if status != 200 || hdr.Get("X-Ccproxy-Budget-Action") != "downgrade" || hdr.Get("X-Ccproxy-Original-Model") != mainModel ||
		!strings.Contains(string(body), "Served by "+sonnet+".") {
		t.Fatalf("downgraded request: %d %v %.300s", status, hdr, body)
	}

	// Claude Code's own Bedrock mode names the model in the path: the
	// gateway rewrites it to Sonnet's inference profile for the user's
	// region.
	bedrockMarker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		t.Errorf("Plan received %s in Bedrock mode", r.URLPath())
		return fakeanthropic.Reply{Status: 500}
	}, func(r fakebedrock.Request) fakebedrock.Reply {
		return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), "Bedrock served "+r.ModelID+".", 2, fakebedrock.Usage{Input: 50, Output: 6})
	})
	const sonnetProfile = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
	bedrockMode := claudecode.Run{Bin: binaries.claude, Timeout: 2 * time.Minute, Env: []string{
		"CLAUDE_CODE_USE_BEDROCK=1",
		"ANTHROPIC_BEDROCK_BASE_URL=" + fg.Base + "/ak/" + u.Key + "/bedrock",
		"CLAUDE_CODE_SKIP_BEDROCK_AUTH=1",
		"AWS_REGION=us-east-1",
		"ANTHROPIC_MODEL=us.anthropic.claude-opus-5-5",
	}}
	wantPrinted(t, bedrockMode.Prompt(t, "Bedrock mode "+bedrockMarker), "Bedrock served "+sonnetProfile+".")
	for _, r := range fg.fb.Carrying(bedrockMarker) {
		if r.ModelID != sonnetProfile {
			t.Errorf("Bedrock received %s in Bedrock mode with the budget used up; want %s", r.ModelID, sonnetProfile)
		}
	}

	// The usage rows record the downgrade.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := fg.DB.QueryRow(context.Background(), `SELECT count(*) FROM usage_events
			WHERE user_id = $1 AND kind = 'messages' AND budget_action = 'downgrade' AND original_model = $2 AND requested_model = $3`,
			u.ID, mainModel, sonnet).Scan(&n); err != nil {
			t.Fatal(err)
		}
		var bedrockRows int
		if err := fg.DB.QueryRow(context.Background(), `SELECT count(*) FROM usage_events
			WHERE user_id = $1 AND provider = 'bedrock' AND budget_action = 'downgrade' AND original_model = $2
			  AND requested_model = 'claude-sonnet-4-5-20250929' AND bedrock_model_id = $3`,
			u.ID, mainModel, sonnetProfile).Scan(&bedrockRows); err != nil {
			t.Fatal(err)
		}
		if n >= 2 && bedrockRows >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d downgraded usage rows on Plan, %d in Bedrock mode; want at least 2 (the Claude Code turn and the direct request) and 1",
				n, bedrockRows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBudgetPlanOnly: a plan_first user over a plan_only budget gets
// Plan's 429 passed through instead of a Bedrock fallback, in Claude Code
// and on the wire; Bedrock sees nothing.
func TestBudgetPlanOnly(t *testing.T) {
	fg := startFallbackGateway(t)
	u := fg.admin.user("planonly", "plan_first", eastCredential())
	addBudget(fg, u.ID, "plan_list", "0.01", "plan_only", nil)
	var limited atomic.Bool
	marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		if limited.Load() {
			return planLimited("120")
		}
		return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), fakeanthropic.Usage{Input: 100_000, Output: 9},
			fakeanthropic.Block{Text: "Plan spent it.", Chunks: 1})}
	}, func(r fakebedrock.Request) fakebedrock.Reply {
		t.Errorf("Bedrock received %s with the plan_only budget used up", r.RawPath)
		return fakebedrock.Error(500, "InternalServerException", "unexpected")
	})
	run := fg.claude(u.Key)
	wantPrinted(t, run.Prompt(t, "First turn "+marker), "Plan spent it.")
	waitBudgetSpent(t, fg, u.ID, "plan_list", "0.01")
	limited.Store(true)

	// Claude Code gets Plan's 429 (no retries, so the run ends at once).
	run.Env = append(run.Env, "CLAUDE_CODE_MAX_RETRIES=0")
	before := fg.planMain(marker)
	res := run.Prompt(t, "Second turn "+marker)
	if res.ExitCode == 0 && !strings.Contains(res.Stdout+res.Stderr, "limit") {
		t.Fatalf("claude -p over a plan_only budget: exit %d, stdout %q, stderr %q; want Plan's rate limit reported", res.ExitCode, res.Stdout, res.Stderr)
	}
	if n := fg.planMain(marker) - before; n < 1 {
		t.Fatalf("Plan saw %d main-model requests for the second turn; want at least 1", n)
	}

	// On the wire the 429 passes unchanged.
	sent := planLimited("120")
	status, hdr, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
	if status != http.StatusTooManyRequests || string(body) != string(sent.Body) || hdr.Get("Retry-After") != "120" || hdr.Get("Request-Id") != "req_fake_limited" {
		t.Fatalf("got %d %v %s; want Plan's 429 unchanged", status, hdr, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := fg.DB.QueryRow(context.Background(), `SELECT count(*) FROM usage_events
			WHERE user_id = $1 AND kind = 'messages' AND budget_action = 'plan_only' AND provider = 'anthropic' AND status = 429 AND NOT fallback`,
			u.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d plan_only 429 usage rows; want at least 2", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
