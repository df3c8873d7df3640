package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// releasesUnderTest returns the releases of claudecode.Releases the run
// covers: CCPROXY_E2E_RELEASES=all (make e2e-releases) runs every one, a
// comma-separated list of versions runs those, and the default runs the
// ones marked ci.
func releasesUnderTest(t *testing.T) []claudecode.Release {
	t.Helper()
	all, err := claudecode.Releases()
	if err != nil {
		t.Fatal(err)
	}
	sel := os.Getenv("CCPROXY_E2E_RELEASES")
	var out []claudecode.Release
	for _, r := range all {
		switch {
		case sel == "all",
			sel == "" && r.CI,
			sel != "" && strings.Contains(","+sel+",", ","+r.Version+","):
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		t.Fatalf("CCPROXY_E2E_RELEASES=%q selects no release of releases.txt", sel)
	}
	return out
}

// warmupText is what the subagent warm-up requests of old releases (2.1.1
// and older send one per subagent at start, with the user message
// "Warmup" instead of the prompt) are answered with.
const warmupText = "warm"

var warmupUsage = fakeanthropic.Usage{Input: 20, Output: 9}

// TestClaudeCodeReleases runs each release of the last year (releases.txt)
// through one gateway: a Plan turn streamed and metered, a bedrock_only
// turn translated for Bedrock, and a Plan 429 that falls back to Bedrock.
// The fakes refuse what the real services would (Bedrock: unknown betas and
// members), so a request shape the gateway does not handle fails here.
func TestClaudeCodeReleases(t *testing.T) {
	releases := releasesUnderTest(t)
	bins := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, r := range releases {
		bin, err := claudecode.InstallVersion(ctx, r.Version)
		if err != nil {
			t.Fatal(err)
		}
		bins[r.Version] = bin
	}

	fg := startFallbackGateway(t)
	// Warm-up requests carry no marker; they are served like any other.
	fg.planSc.set(`"text":"Warmup"`, func(r fakeanthropic.Request) fakeanthropic.Reply {
		return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), warmupUsage, fakeanthropic.Block{Text: warmupText, Chunks: 1})}
	})
	t.Cleanup(func() {
		for _, r := range fg.plan.Requests("") {
			if r.Method == http.MethodHead {
				t.Errorf("Plan received HEAD %s; the gateway answers probes itself", r.Path)
			}
		}
	})
	run := func(bin, key string) claudecode.Run {
		return claudecode.Run{Bin: bin, BaseURL: fg.Base + "/ak/" + key, APIKey: apiKey, Timeout: 2 * time.Minute}
	}

	for _, rel := range releases {
		v, bin := rel.Version, bins[rel.Version]
		t.Run(v, func(t *testing.T) {
			t.Parallel()

			t.Run("Plan stream passed through", func(t *testing.T) {
				u := fakeanthropic.Usage{Input: 1201, Output: 34, CacheRead: 5003, CacheWrite5m: 107, CacheWrite1h: 11}
				text := "Plan answers Claude Code " + v + "."
				marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
					return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), u, fakeanthropic.Block{Text: text, Chunks: 3})}
				}, nil)
				user := fg.admin.user("plan-"+v, "plan_first", eastCredential())
				// Through a recorder, to compare what the release sent with
				// what Plan received.
				rec := newRecorder(t, fg.Base)
				r := run(bin, user.Key)
				r.BaseURL = rec.URL + "/ak/" + user.Key
				res := r.Prompt(t, "Say hello "+marker)
				wantPrinted(t, res, text)

				main := posts(t, fg.plan, marker, 1)[0]
				session := requestSession(main)
				if session == "" {
					t.Fatalf("Claude Code %s named no session (header or metadata.user_id)", v)
				}
				var sent []fakeanthropic.Request
				for _, s := range rec.Requests() {
					if s.Method == http.MethodPost && strings.Contains(string(s.Body), marker) {
						sent = append(sent, s)
					}
				}
				if len(sent) != 1 {
					t.Fatalf("Claude Code sent %d requests carrying the marker; want 1", len(sent))
				}
				need := []string{"X-Api-Key", "Anthropic-Beta", "Anthropic-Version", "User-Agent"}
				if main.Header.Get("X-Claude-Code-Session-Id") != "" {
					need = append(need, "X-Claude-Code-Session-Id")
				}
				checkPassedThroughNeeding(t, user.Key, sent[0], main, need)
				// Every request of the session, warm-ups included, is one row.
				var reqs []fakeanthropic.Request
				for _, r := range fg.plan.Requests("") {
					if r.Method == http.MethodPost && requestSession(r) == session {
						reqs = append(reqs, r)
					}
				}
				rows, timing := waitUsage(t, fg.gateway, session, len(reqs))
				byID := map[string]usageRow{}
				for i, row := range rows {
					byID[timing[i].RequestID] = row
				}
				for _, r := range reqs {
					ru := warmupUsage
					if strings.Contains(string(r.Body), marker) {
						ru = u
					}
					want := wantUsage(r, ru)
					want.SessionID = session
					if got, ok := byID[r.Header.Get("X-Request-Id")]; !ok || got != want {
						t.Errorf("usage row of request %s:\n got %+v\nwant %+v", r.Header.Get("X-Request-Id"), got, want)
					}
				}
			})

			t.Run("Bedrock only", func(t *testing.T) {
				bu := fakebedrock.Usage{Input: 321, Output: 12, CacheRead: 4001, CacheWrite5m: 55}
				text := "Bedrock answers Claude Code " + v + "."
				marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
					t.Errorf("Plan received %s for a bedrock_only user", r.Path)
					return fakeanthropic.Reply{Status: http.StatusInternalServerError}
				}, func(r fakebedrock.Request) fakebedrock.Reply {
					return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 3, bu)
				})
				user := fg.admin.user("bedrock-"+v, "bedrock_only", eastCredential())
				res := run(bin, user.Key).Prompt(t, "Say hello "+marker)
				wantPrinted(t, res, text)
				reqs := fg.fb.Carrying(marker)
				if len(reqs) != 1 {
					t.Fatalf("Bedrock received %d requests for the turn; want 1", len(reqs))
				}
				checkReleaseBedrockRow(t, fg, reqs[0], bu, false, "")
			})

			t.Run("Plan 429 falls back to Bedrock", func(t *testing.T) {
				bu := fakebedrock.Usage{Input: 77, Output: 8, CacheRead: 900}
				text := "Bedrock stands in for Plan for Claude Code " + v + "."
				marker := fg.scenario(t, func(fakeanthropic.Request) fakeanthropic.Reply {
					return planLimited("120")
				}, func(r fakebedrock.Request) fakebedrock.Reply {
					return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 2, bu)
				})
				user := fg.admin.user("fallback-"+v, "plan_first", eastCredential())
				res := run(bin, user.Key).Prompt(t, "Say hello "+marker)
				wantPrinted(t, res, text)
				posts(t, fg.plan, marker, 1)
				reqs := fg.fb.Carrying(marker)
				if len(reqs) != 1 {
					t.Fatalf("Bedrock received %d requests for the turn; want 1", len(reqs))
				}
				checkReleaseBedrockRow(t, fg, reqs[0], bu, true, "plan_429")
			})
		})
	}
}

// checkReleaseBedrockRow checks the request Bedrock answered with u and its
// usage row, found by the request id Bedrock received.
func checkReleaseBedrockRow(t *testing.T, fg *fallbackGateway, r fakebedrock.Request, u fakebedrock.Usage, fallback bool, reason string) {
	t.Helper()
	if len(r.Problems) > 0 {
		t.Errorf("Bedrock would refuse the request: %q", r.Problems)
	}
	checkBedrockRequest(t, r, eastHost, fakebedrock.AuthBearer, bedrockAPIKey)
	// The translated body keeps metadata, so the session is read from it.
	var body struct {
		Metadata struct {
			UserID string `json:"user_id"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(r.InvokeBody(), &body)
	session := metadataSession(body.Metadata.UserID)
	if session == "" {
		t.Fatalf("Bedrock request has no session in metadata.user_id %q", body.Metadata.UserID)
	}
	type row struct {
		Provider, RequestedModel, BedrockModel, SessionID, Reason string
		Status                                                    int
		Fallback                                                  bool
		Input, Output, CacheRead, CacheWrite5m                    int64
	}
	id := r.Header.Get("X-Request-Id")
	var got row
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fg.DB.QueryRow(context.Background(), `
			SELECT provider, requested_model, coalesce(bedrock_model_id, ''), coalesce(session_id, ''), coalesce(fallback_reason, ''),
			       status, fallback, input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens
			FROM usage_events WHERE request_id = $1`, id).Scan(&got.Provider, &got.RequestedModel, &got.BedrockModel, &got.SessionID, &got.Reason,
			&got.Status, &got.Fallback, &got.Input, &got.Output, &got.CacheRead, &got.CacheWrite5m)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usage row for request %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := row{Provider: "bedrock", RequestedModel: fakebedrock.AnthropicModel(r.ModelID), BedrockModel: r.ModelID, SessionID: session,
		Reason: reason, Status: 200, Fallback: fallback, Input: int64(u.Input), Output: int64(u.Output), CacheRead: int64(u.CacheRead), CacheWrite5m: int64(u.CacheWrite5m)}
	if got != want {
		t.Errorf("usage row of request %s:\n got %+v\nwant %+v", id, got, want)
	}
}

// requestSession is the Claude Code session a request names: its
// x-claude-code-session-id, else (releases before the header) the one in
// metadata.user_id.
func requestSession(r fakeanthropic.Request) string {
	if s := r.Header.Get("X-Claude-Code-Session-Id"); s != "" {
		return s
	}
	var body struct {
		Metadata struct {
			UserID string `json:"user_id"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(r.Body, &body)
	return metadataSession(body.Metadata.UserID)
}

// metadataSession reads the session out of a metadata.user_id in either of
// the forms Claude Code used over the year.
func metadataSession(userID string) string {
	if strings.HasPrefix(userID, "{") {
		var v struct {
			SessionID string `json:"session_id"`
		}
		_ = json.Unmarshal([]byte(userID), &v)
		return v.SessionID
	}
	_, s, _ := strings.Cut(userID, "_session_")
	return s
}
