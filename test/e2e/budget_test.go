package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// TestBudget: a $0.01 monthly budget blocks the next Bedrock request once
// spent, with the specified 429; a plan_first user over budget is still
// served by Plan; and the spend survives a Redis flush (rebuilt from
// Postgres through the admin service).
func TestBudget(t *testing.T) {
	var planSc scenarios
	var bedSc bedrockScenarios
	plan := fakeanthropic.New(t, planSc.handle)
	bg := startBedrockGateway(t, &bedSc, plan)
	a := bg.admin
	// 10,000 input tokens at Bedrock's us-east-1 price for claude-opus-5-5
	// ($4.40 per million) cost $0.044: one request spends the budget.
	big := fakebedrock.Usage{Input: 10_000, Output: 10}
	answer := func(fakebedrock.Request) fakebedrock.Reply {
		return fakebedrock.Answer("claude-opus-5-5", big, fakebedrock.Block{Text: "spent"})
	}
	only := a.user("budget-bedrock", "bedrock_only", map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "us-east-1"})
	first := a.user("budget-planfirst", "plan_first", map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "us-east-1"})
	for _, u := range []bedrockUser{only, first} {
		a.call("PATCH", "/api/v1/users/"+u.ID, map[string]any{"monthly_budget_usd": "0.01"}, nil)
	}

	bedrockReq := func(key, marker string) (int, http.Header, []byte) {
		return postJSON(t, bg.Base+"/ak/"+key+"/v1/messages",
			`{"model":"claude-opus-5-5","max_tokens":16,"messages":[{"role":"user","content":"`+marker+`"}]}`)
	}
	// Spend the budget: the first request is under it and served.
	marker := bedSc.add(answer)
	if status, _, body := bedrockReq(only.Key, marker); status != 200 {
		t.Fatalf("first Bedrock request: %d %s", status, body)
	}
	// Claude Code's own Bedrock mode spends the plan_first user's budget.
	req, _ := http.NewRequest(http.MethodPost, bg.Base+"/ak/"+first.Key+"/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
		strings.NewReader(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":16,"messages":[{"role":"user","content":"`+bedSc.add(answer)+`"}]}`))
	req.Header.Set("content-type", "application/json")
	if status, _, body := do(t, req); status != 200 {
		t.Fatalf("Bedrock-mode request: %d %s", status, body)
	}

	ctx := context.Background()
	opts, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	counter := bg.RedisPrefix + "spend:" + only.ID + ":" + time.Now().UTC().Format("2006-01")
	// The spend is known once the admin ingested the first request's usage
	// row and set the counter; extproc then sees it after its 1 s cache.
	waitSpend := func(t *testing.T) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			v, err := rdb.Get(ctx, counter).Result()
			if err == nil && v != "0.000000" {
				if v != "0.044220" {
					t.Fatalf("spend counter %s = %s; want 0.044220 (10,000 in × $4.40 + 10 out × $22 per million)", counter, v)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("spend counter %s not set within 20s: %v %q", counter, err, v)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	wantRefusal := func(t *testing.T) {
		t.Helper()
		marker := bedSc.add(answer)
		status, hdr, body := bedrockReq(only.Key, marker)
		now := time.Now().UTC()
		reset := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		want := `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: your monthly Bedrock budget of $0.01 is used up ($0.04 spent); it resets at ` + reset.Format(time.RFC3339) + `"}}`
		ra, _ := strconv.Atoi(hdr.Get("Retry-After"))
		if status != 429 || string(body) != want || hdr.Get("X-Should-Retry") != "false" ||
			ra < int(time.Until(reset).Seconds())-60 || ra > int(time.Until(reset).Seconds())+60 {
			t.Fatalf("over budget: %d %s (retry-after %q, x-should-retry %q); want 429 %s", status, body, hdr.Get("Retry-After"), hdr.Get("X-Should-Retry"), want)
		}
		if n := len(bg.fb.Carrying(marker)); n != 0 {
			t.Fatalf("Bedrock received the refused request")
		}
	}
	t.Run("spent budget blocks the next Bedrock request", func(t *testing.T) {
		waitSpend(t)
		wantRefusal(t)
	})

	t.Run("plan_first over budget is still served by Plan", func(t *testing.T) {
		marker := planSc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Body: fakeanthropic.Message("claude-opus-5-5", "plan serves", fakeanthropic.Usage{Input: 5, Output: 2}),
				Header: http.Header{"Content-Type": {"application/json"}}}
		})
		if status, _, body := bedrockReq(first.Key, marker); status != 200 || !strings.Contains(string(body), "plan serves") {
			t.Fatalf("plan_first over budget: %d %s", status, body)
		}
	})

	t.Run("the spend survives a Redis flush", func(t *testing.T) {
		keys, err := rdb.Keys(ctx, bg.RedisPrefix+"spend:*").Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("spend counters before the flush: %v, %v", keys, err)
		}
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // past extproc's 1 s in-process cache
		wantRefusal(t)
		if v, err := rdb.Get(ctx, counter).Result(); err != nil || v != "0.044220" {
			t.Fatalf("the counter was not rebuilt from Postgres: %q, %v", v, err)
		}
	})
}
