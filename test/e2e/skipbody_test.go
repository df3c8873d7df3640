package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// TestSkippedPlanRequestBodies runs real Claude Code through a gateway with
// CCPROXY_PLAN_REQUEST_BODY=skip. The dev user is plan_first without a
// Bedrock credential, so its requests go to Plan alone and are routed on
// their headers: envoysim must release the body it held while the headers
// were processed to the upstream unchanged, the usage rows must say what
// they say when the body is read (the model and stream flag now come from
// the answer), and extproc must never see a request body.
func TestSkippedPlanRequestBodies(t *testing.T) {
	var sc scenarios
	fake := fakeanthropic.New(t, sc.handle)
	g := startDevWith(t, devConfig{AnthropicURL: fake.URL, Env: []string{"CCPROXY_PLAN_REQUEST_BODY=skip"}})

	const text = "The command printed tool-output-17."
	uses := []fakeanthropic.Usage{
		{Input: 2111, Output: 63, CacheRead: 40011, CacheWrite5m: 1211, CacheWrite1h: 311},
		{Input: 2213, Output: 21, CacheRead: 41013, CacheWrite5m: 27, CacheWrite1h: 17},
	}
	marker := sc.add(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		// Anthropic's answer names the requested model; so does the fake's.
		if _, ok := toolResult(r); ok {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), uses[1], fakeanthropic.Block{Text: text, Chunks: 3})}
		}
		return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), uses[0],
			fakeanthropic.Block{Text: "Running it.", Chunks: 2},
			fakeanthropic.Block{ToolName: "Bash", ToolID: "toolu_skip01", ToolInput: map[string]any{"command": "echo tool-output-17", "description": "print"}})}
	})
	// Through a recorder, to compare what Claude Code sent with what Plan got.
	rec := newRecorder(t, g.Base)
	run := claudecode.Run{Bin: binaries.claude, BaseURL: rec.URL + "/ak/" + g.Key, APIKey: apiKey, Timeout: 2 * time.Minute,
		Args: []string{"--allowedTools", "Bash(echo:*)"}}
	res := run.Prompt(t, "Run echo for me "+marker)
	wantPrinted(t, res, text)

	var sent []fakeanthropic.Request
	for _, r := range rec.Requests() {
		if r.Method == http.MethodPost {
			sent = append(sent, r)
		}
	}
	got := posts(t, fake, marker, 2)
	if len(sent) != 2 {
		t.Fatalf("Claude Code sent %d POSTs; want 2: %v", len(sent), describe(sent))
	}
	for i := range sent {
		checkPassedThrough(t, g.Key, sent[i], got[i])
	}
	if r, ok := toolResult(got[1]); !ok || r.Content != "tool-output-17" {
		t.Errorf("the second request's tool result is %+v (found: %v); want tool-output-17", r, ok)
	}
	checkUsage(t, g, got, uses)

	if n := metricValue(t, g, `ccproxy_extproc_phase_duration_seconds_count{phase="request_body"}`); n != 0 {
		t.Errorf("extproc processed %v request bodies; want none with CCPROXY_PLAN_REQUEST_BODY=skip", n)
	}
	if n := metricValue(t, g, `ccproxy_extproc_phase_duration_seconds_count{phase="request_headers"}`); n < 2 {
		t.Errorf("extproc processed %v request headers; want at least the 2 requests'", n)
	}
}
