package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// TestTeamModelAllowList runs real Claude Code as a developer whose team
// allows Sonnet only: `--model opus` is refused by the gateway with an
// error naming the allowed models, which Claude Code prints, and the fake
// Anthropic never sees the request; `--model sonnet` is served with a
// Sonnet model id, and its usage row names the team.
func TestTeamModelAllowList(t *testing.T) {
	var sc scenarios
	fake := fakeanthropic.New(t, sc.handle)
	const password = "e2e-teams-admin-password"
	g := startDevWith(t, devConfig{AnthropicURL: fake.URL, AdminPassword: password})
	a := admin{t: t, base: "http://" + g.AdminAddr, token: adminLogin(t, g.AdminAddr, "admin", password)}

	// The Claude Code release under test resolves --model sonnet to
	// claude-sonnet-5-5, the catalog's current Sonnet.
	var team struct{ ID string }
	a.call("POST", "/api/v1/teams", map[string]any{"name": "Sonnet only", "allowed_models": []string{"claude-sonnet-5-5"}}, &team)
	var u struct{ ID string }
	a.call("POST", "/api/v1/users", map[string]any{"name": "teammate", "team_id": team.ID}, &u)
	var k struct{ Key string }
	a.call("POST", "/api/v1/users/"+u.ID+"/keys", map[string]any{"name": "laptop"}, &k)
	if team.ID == "" || u.ID == "" || k.Key == "" {
		t.Fatalf("team %q, user %q, key set %v", team.ID, u.ID, k.Key != "")
	}
	run := func(model string) claudecode.Run {
		return claudecode.Run{Bin: binaries.claude, BaseURL: g.Base + "/ak/" + k.Key, APIKey: apiKey, Timeout: 2 * time.Minute,
			Args: []string{"--model", model}}
	}

	t.Run("opus is refused", func(t *testing.T) {
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Body: fakeanthropic.Message("claude-opus-4-1", "must not be served", fakeanthropic.Usage{Input: 1, Output: 1}),
				Header: http.Header{"Content-Type": {"application/json"}}}
		})
		res := run("opus").Prompt(t, "Allow-list test "+marker)
		out := res.Stdout + res.Stderr
		const allowed = "is not allowed for your team (Sonnet only); allowed models: claude-sonnet-5-5"
		if res.ExitCode == 0 || !strings.Contains(out, allowed) || !strings.Contains(out, "400") {
			t.Errorf("claude -p --model opus: exit %d, output %q; want a failure printing the gateway's 400 %q", res.ExitCode, out, allowed)
		}
		if got := carrying(fake, marker); len(got) != 0 {
			t.Errorf("the fake received %v; the refused request must not reach it", describe(got))
		}
	})

	t.Run("sonnet is served", func(t *testing.T) {
		const text = "Sonnet served the team."
		marker := sc.add(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			var body struct{ Model string }
			_ = json.Unmarshal(r.Body, &body)
			u := fakeanthropic.Usage{Input: 11, Output: 7}
			return fakeanthropic.Reply{Events: fakeanthropic.Stream(body.Model, u, fakeanthropic.Block{Text: text, Chunks: 2})}
		})
		res := run("sonnet").Prompt(t, "Allow-list test "+marker)
		wantPrinted(t, res, text)
		reqs := posts(t, fake, marker, 1)
		var body struct{ Model string }
		if err := json.Unmarshal(reqs[0].Body, &body); err != nil || !strings.HasPrefix(body.Model, "claude-sonnet-") {
			t.Errorf("the fake saw model %q (%v); want a Sonnet model id", body.Model, err)
		}
		// The usage row names the team the developer was in.
		deadline := time.Now().Add(20 * time.Second)
		for {
			var teamID *string
			err := g.DB.QueryRow(t.Context(), `SELECT team_id::text FROM usage_events WHERE user_id = $1 AND requested_model = $2`,
				u.ID, body.Model).Scan(&teamID)
			if err == nil {
				if teamID == nil || *teamID != team.ID {
					t.Errorf("usage row team %v; want %s", teamID, team.ID)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no usage row for the served request within 20s: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}
