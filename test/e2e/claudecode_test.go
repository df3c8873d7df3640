package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// apiKey and authToken are the developer's own Anthropic credentials as far
// as the fake is concerned; the gateway must pass them through untouched.
const (
	apiKey    = "sk-ant-api03-e2e-plan-credential"
	authToken = "sk-ant-oat01-e2e-oauth-token"
)

// TestClaudeCode runs real Claude Code through one `ccproxy dev` whose
// upstream is a fake Anthropic shared by the subtests. The subtests that
// assert the fake saw nothing run first, alone; the others run in parallel,
// each recognising its own requests by a marker in its prompt.
func TestClaudeCode(t *testing.T) {
	var sc scenarios
	fake := fakeanthropic.New(t, sc.handle)
	g := startDev(t, fake.URL)
	t.Cleanup(func() {
		if got := sc.Unrouted(); len(got) != 0 {
			t.Errorf("the fake received requests that belong to no subtest: %v", got)
		}
		// Claude Code's own probes, sent by every run, never reach the fake.
		if got := fake.Requests("/api/"); len(got) != 0 {
			t.Errorf("the fake received %v; HEAD probes are answered by the gateway", describe(got))
		}
		if got := fake.Requests("/v1/models"); len(got) != 0 {
			t.Errorf("the fake received %v; GET /v1/models is answered by the gateway", describe(got))
		}
	})

	claude := func(base string) claudecode.Run {
		return claudecode.Run{Bin: binaries.claude, BaseURL: base, APIKey: apiKey, Timeout: 2 * time.Minute}
	}

	t.Run("answered locally", func(t *testing.T) {
		testAnsweredLocally(t, g, fake)
	})

	t.Run("refused keys", func(t *testing.T) {
		unknown, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, key, message string
		}{
			{"unknown key", unknown, "ccproxy: invalid access key"},
			{"malformed key", "ak_not-a-real-key", "ccproxy: malformed access key"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := len(fake.Requests(""))
				base := g.Base + "/ak/" + tt.key

				res := claude(base).Prompt(t, "say hello")
				out := res.Stdout + res.Stderr
				if res.ExitCode == 0 || !strings.Contains(out, "Failed to authenticate") || !strings.Contains(out, "401") || !strings.Contains(out, tt.message) {
					t.Errorf("claude -p with a refused key: exit code %d, output %q; want a non-zero exit reporting the gateway's 401 %q", res.ExitCode, out, tt.message)
				}

				// The gateway's answer itself, to a client that does not retry.
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages?beta=true", strings.NewReader(`{"model":"claude-opus-5-5","max_tokens":16,"messages":[]}`))
				req.Header.Set("x-api-key", apiKey)
				req.Header.Set("content-type", "application/json")
				status, hdr, body := do(t, req)
				want := fmt.Sprintf(`{"type":"error","error":{"type":"authentication_error","message":%q}}`, tt.message)
				if status != http.StatusUnauthorized || hdr.Get("Content-Type") != "application/json" || string(body) != want {
					t.Errorf("POST with a refused key: %d %q %s; want 401 application/json %s", status, hdr.Get("Content-Type"), body, want)
				}
				if got := fake.Requests(""); len(got) != before {
					t.Errorf("the fake received %d requests for a refused key; want none: %+v", len(got)-before, describe(got[before:]))
				}
			})
		}
	})

	// The parallel subtests start once this function returns. The trickle
	// comes first so that its 17 s overlap the others.
	t.Run("streamed answer longer than 15s", func(t *testing.T) {
		t.Parallel()
		const text = "This answer trickles in for seventeen seconds, one small piece at a time, and must arrive whole."
		u := fakeanthropic.Usage{Input: 31, Output: 97, CacheRead: 1009, CacheWrite5m: 211, CacheWrite1h: 53}
		events := fakeanthropic.Stream("claude-opus-5-5", u, fakeanthropic.Block{Text: text, Chunks: 48})
		gap := 17 * time.Second / time.Duration(len(events))
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: events, Gap: gap}
		})

		start := time.Now()
		res := claude(g.BaseURL).Prompt(t, "Trickle test "+marker+": answer slowly.")
		elapsed := time.Since(start)
		wantPrinted(t, res, text)
		// Guards the premise: the answer really outlasted Envoy's 15 s default route timeout.
		if elapsed < 16*time.Second {
			t.Errorf("the run took %v; the fake's stream should have made it last over 16s", elapsed)
		}
		reqs := posts(t, fake, marker, 1)
		_, timing := checkUsage(t, g, reqs, []fakeanthropic.Usage{u})
		if timing[0].LatencyMS < 16000 {
			t.Errorf("usage latency_ms = %d; want ≥ 16000 for a 17 s stream", timing[0].LatencyMS)
		}
	})

	t.Run("streamed answer", func(t *testing.T) {
		t.Parallel()
		const text = "Hello from the fake Anthropic: ünïcødé ✓, split across deltas."
		u := fakeanthropic.Usage{Input: 1234, Output: 567, CacheRead: 89012, CacheWrite5m: 3456, CacheWrite1h: 789}
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", u, fakeanthropic.Block{Text: text, Chunks: 7})}
		})
		res := claude(g.BaseURL).Prompt(t, "Say hello "+marker)
		wantPrinted(t, res, text)
		checkUsage(t, g, posts(t, fake, marker, 1), []fakeanthropic.Usage{u})
	})

	t.Run("tool use round trip", func(t *testing.T) {
		t.Parallel()
		const text = "The command printed tool-output-42."
		uses := []fakeanthropic.Usage{
			{Input: 2101, Output: 61, CacheRead: 40001, CacheWrite5m: 1201, CacheWrite1h: 301},
			{Input: 2203, Output: 19, CacheRead: 41003, CacheWrite5m: 17, CacheWrite1h: 7},
		}
		marker := sc.add(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			if _, ok := toolResult(r); ok {
				return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", uses[1], fakeanthropic.Block{Text: text, Chunks: 3})}
			}
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", uses[0],
				fakeanthropic.Block{Text: "Running it.", Chunks: 2},
				fakeanthropic.Block{ToolName: "Bash", ToolID: "toolu_e2e01", ToolInput: map[string]any{"command": "echo tool-output-42", "description": "print"}})}
		})
		run := claude(g.BaseURL)
		run.Args = []string{"--allowedTools", "Bash(echo:*)"}
		res := run.Prompt(t, "Run echo for me "+marker)
		wantPrinted(t, res, text)

		reqs := posts(t, fake, marker, 2)
		if _, ok := toolResult(reqs[0]); ok {
			t.Errorf("the first request already carries a tool_result")
		}
		got, ok := toolResult(reqs[1])
		if want := (toolResultBlock{Type: "tool_result", ToolUseID: "toolu_e2e01", Content: "tool-output-42"}); !ok || got != want {
			t.Errorf("the second request's last message holds %+v (found: %v); want %+v", got, ok, want)
		}
		checkUsage(t, g, reqs, uses)
	})

	t.Run("pass-through is byte-identical", func(t *testing.T) {
		t.Parallel()
		const text = "Byte for byte."
		u := fakeanthropic.Usage{Input: 4441, Output: 23, CacheRead: 777, CacheWrite5m: 66, CacheWrite1h: 5}
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", u, fakeanthropic.Block{Text: text})}
		})
		rec := newRecorder(t, g.Base)
		res := claude(rec.URL+"/ak/"+g.Key).Prompt(t, "Echo the bytes "+marker)
		wantPrinted(t, res, text)

		var sent []fakeanthropic.Request
		for _, r := range rec.Requests() {
			if r.Method == http.MethodPost {
				sent = append(sent, r)
			}
		}
		got := posts(t, fake, marker, len(sent))
		if len(sent) != 1 {
			t.Fatalf("Claude Code sent %d POSTs; want 1: %v", len(sent), describe(sent))
		}
		for i := range sent {
			checkPassedThrough(t, g.Key, sent[i], got[i])
		}
		checkUsage(t, g, got, []fakeanthropic.Usage{u})
	})

	t.Run("auth token passes through", func(t *testing.T) {
		t.Parallel()
		const text = "Bearer accepted."
		u := fakeanthropic.Usage{Input: 5, Output: 7, CacheRead: 11, CacheWrite5m: 13, CacheWrite1h: 17}
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", u, fakeanthropic.Block{Text: text})}
		})
		run := claude(g.BaseURL)
		run.APIKey, run.AuthToken = "", authToken
		res := run.Prompt(t, "Use my token "+marker)
		wantPrinted(t, res, text)

		reqs := posts(t, fake, marker, 1)
		if got := reqs[0].Header.Values("Authorization"); !slices.Equal(got, []string{"Bearer " + authToken}) {
			t.Errorf("the fake received Authorization %q; want exactly [%q]", got, "Bearer "+authToken)
		}
		if got := reqs[0].Header.Values("X-Api-Key"); got != nil {
			t.Errorf("the fake received x-api-key %q; want none", got)
		}
		checkUsage(t, g, reqs, []fakeanthropic.Usage{u})
	})

	t.Run("5 MB request body", func(t *testing.T) {
		t.Parallel()
		u := fakeanthropic.Usage{Input: 1310720, Output: 3, CacheRead: 0, CacheWrite5m: 0, CacheWrite1h: 0}
		answer := fakeanthropic.Message("claude-opus-5-5", "Received.", u)
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Body: answer}
		})
		body := paddedBody(t, marker, 5<<20)
		const session = "e2e-large-body-session"

		req, _ := http.NewRequest(http.MethodPost, g.BaseURL+"/v1/messages", bytes.NewReader(body))
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-claude-code-session-id", session)
		status, _, got := do(t, req)
		if status != http.StatusOK || !bytes.Equal(got, answer) {
			t.Errorf("POST of a 5 MiB body: status %d, body %.300q; want 200 with the fake's answer %s", status, got, answer)
		}
		reqs := posts(t, fake, marker, 1)
		if r := reqs[0]; r.Path != "/v1/messages" || !bytes.Equal(r.Body, body) {
			t.Errorf("the fake received %s with a %d-byte body (identical: %v); want /v1/messages with the %d bytes sent",
				r.Path, len(r.Body), bytes.Equal(r.Body, body), len(body))
		}
		rows, timing := waitUsage(t, g, session, 1)
		want := wantUsage(reqs[0], u)
		if rows[0] != want || want.Stream {
			t.Errorf("usage row:\n got %+v\nwant %+v (not streamed)", rows[0], want)
		}
		if id := reqs[0].Header.Get("X-Request-Id"); timing[0].RequestID != id || id == "" {
			t.Errorf("usage row has request_id %q; want %q, the x-request-id the fake received", timing[0].RequestID, id)
		}
	})
}

// testAnsweredLocally checks the requests the gateway answers itself: the
// connectivity probe Claude Code sends at start and the model list.
func testAnsweredLocally(t *testing.T, g *gateway, fake *fakeanthropic.Server) {
	before := len(fake.Requests(""))

	req, _ := http.NewRequest(http.MethodHead, g.BaseURL+"/api/hello", nil)
	req.Header.Set("User-Agent", "Bun/1.4.6")
	if status, _, body := do(t, req); status != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD /api/hello: %d %q; want 200 and no body", status, body)
	}

	req, _ = http.NewRequest(http.MethodGet, g.BaseURL+"/v1/models", nil)
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("anthropic-version", "2023-06-01")
	status, hdr, body := do(t, req)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/models: %d %q %s; want 200 application/json", status, hdr.Get("Content-Type"), body)
	}
	type model struct {
		Type, ID, CreatedAt string
	}
	var list struct {
		Data []struct {
			Type        string `json:"type"`
			ID          string `json:"id"`
			DisplayName string `json:"display_name"`
			CreatedAt   string `json:"created_at"`
		} `json:"data"`
		HasMore bool    `json:"has_more"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("GET /v1/models: %v in %s", err, body)
	}
	rows, err := g.DB.Query(context.Background(),
		`SELECT anthropic_model_id FROM model_mappings WHERE enabled ORDER BY family, anthropic_model_id LIMIT 20`)
	if err != nil {
		t.Fatal(err)
	}
	var want []model
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		// extproc lists the runtime configuration's mappings, which carry
		// no creation time: created_at is the date the id ends with (as in
		// Anthropic's API), else the Unix epoch.
		created := time.Unix(0, 0).UTC()
		if i := strings.LastIndexByte(id, '-'); i >= 0 {
			if d, err := time.Parse("20060102", id[i+1:]); err == nil {
				created = d
			}
		}
		want = append(want, model{"model", id, created.Format(time.RFC3339)})
	}
	if err := rows.Err(); err != nil || len(want) == 0 {
		t.Fatalf("enabled model mappings: %d, %v; want the seeded ones", len(want), err)
	}
	var got []model
	names := map[string]string{}
	for _, m := range list.Data {
		got = append(got, model{m.Type, m.ID, m.CreatedAt})
		names[m.ID] = m.DisplayName
	}
	if !slices.Equal(got, want) {
		t.Errorf("GET /v1/models lists\n%v\nwant the enabled mappings\n%v", got, want)
	}
	if list.HasMore || list.FirstID == nil || *list.FirstID != want[0].ID || list.LastID == nil || *list.LastID != want[len(want)-1].ID {
		t.Errorf("GET /v1/models: has_more %v, first_id %v, last_id %v; want false, %s, %s", list.HasMore, list.FirstID, list.LastID, want[0].ID, want[len(want)-1].ID)
	}
	if got := names["claude-sonnet-4-5-20250929"]; got != "Claude Sonnet 4.5" {
		t.Errorf("display_name of claude-sonnet-4-5-20250929 = %q; want %q", got, "Claude Sonnet 4.5")
	}

	if got := fake.Requests(""); len(got) != before {
		t.Errorf("the fake received %v; the gateway should have answered these itself", describe(got[before:]))
	}
}

// checkPassedThrough compares what Claude Code sent (as the recorder saw
// it) with what the fake received from the gateway.
func checkPassedThrough(t *testing.T, key string, sent, got fakeanthropic.Request) {
	t.Helper()
	checkPassedThroughNeeding(t, key, sent, got, []string{"X-Api-Key", "Anthropic-Beta", "Anthropic-Version", "X-Claude-Code-Session-Id", "User-Agent"})
}

// checkPassedThroughNeeding is checkPassedThrough for a client that must
// have sent the headers need (older Claude Code releases send no session
// header).
func checkPassedThroughNeeding(t *testing.T, key string, sent, got fakeanthropic.Request, need []string) {
	t.Helper()
	if !bytes.Equal(got.Body, sent.Body) {
		t.Errorf("the fake received a %d-byte body that differs from the %d bytes Claude Code sent (first difference at byte %d)",
			len(got.Body), len(sent.Body), firstDiff(got.Body, sent.Body))
	}
	prefix := "/ak/" + key
	if !strings.HasPrefix(sent.Path, prefix+"/") {
		t.Fatalf("Claude Code sent %s; want a path under %s/", sent.Path, prefix)
	}
	if want := strings.TrimPrefix(sent.Path, prefix); got.Path != want || !strings.HasSuffix(want, "?beta=true") {
		t.Errorf("the fake received path %q; want %q (Claude Code's %q without the access key, query kept)", got.Path, want, sent.Path)
	}
	if got.Method != sent.Method {
		t.Errorf("the fake received method %s; want %s", got.Method, sent.Method)
	}
	for _, h := range need {
		if len(sent.Header.Values(h)) == 0 {
			t.Errorf("Claude Code sent no %s header; the test expects one", h)
		}
	}
	// Every other header arrives as sent too, except the ones a proxy
	// rewrites by design: hop-by-hop headers, Host (the upstream's name),
	// Accept-Encoding (identity, so that usage can be read from the body)
	// and the headers Envoy adds with use_remote_address.
	names := map[string]bool{}
	for h := range sent.Header {
		names[h] = true
	}
	for h := range got.Header {
		names[h] = true
	}
	for h := range names {
		s, g := sent.Header.Values(h), got.Header.Values(h)
		switch h {
		case "Connection", "Keep-Alive", "Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Envoy-External-Address":
			continue
		case "Accept-Encoding":
			if !slices.Equal(g, []string{"identity"}) {
				t.Errorf("the fake received Accept-Encoding %q; want [identity]", g)
			}
			continue
		case "X-Request-Id":
			if len(s) == 0 && len(g) == 1 {
				continue
			}
		}
		if strings.HasPrefix(strings.ToLower(h), "x-ccproxy-") {
			t.Errorf("the fake received gateway header %s", h)
			continue
		}
		if !slices.Equal(g, s) {
			t.Errorf("the fake received %s %q; Claude Code sent %q", h, g, s)
		}
	}
}

// checkUsage asserts one usage row per request the fake answered, each with
// the fake's token counts for that request and the request's session.
func checkUsage(t *testing.T, g *gateway, reqs []fakeanthropic.Request, uses []fakeanthropic.Usage) ([]usageRow, []usageTiming) {
	t.Helper()
	session := reqs[0].Header.Get("X-Claude-Code-Session-Id")
	if session == "" {
		t.Fatalf("Claude Code sent no x-claude-code-session-id")
	}
	rows, timing := waitUsage(t, g, session, len(reqs))
	for i, r := range reqs {
		want := wantUsage(r, uses[i])
		if want.SessionID != session || want.RequestedModel == "" || !want.Stream {
			t.Errorf("request %d: session %q, model %q, stream %v; want session %q, a model, stream true", i, want.SessionID, want.RequestedModel, want.Stream, session)
		}
		if rows[i] != want {
			t.Errorf("usage row %d of session %s:\n got %+v\nwant %+v", i, session, rows[i], want)
		}
		if id := r.Header.Get("X-Request-Id"); timing[i].RequestID != id {
			t.Errorf("usage row %d has request_id %q; want %q, the x-request-id of the request the fake answered", i, timing[i].RequestID, id)
		}
		if tt := timing[i]; tt.RequestID == "" || tt.TTFTms == nil || *tt.TTFTms > tt.LatencyMS {
			t.Errorf("usage row %d: request_id %q, ttft_ms %v, latency_ms %d; want an id and 0 ≤ ttft ≤ latency for a stream", i, tt.RequestID, tt.TTFTms, tt.LatencyMS)
		}
	}
	return rows, timing
}

// posts returns the POSTs of the scenario with marker, failing unless there
// are exactly n.
func posts(t *testing.T, fake *fakeanthropic.Server, marker string, n int) []fakeanthropic.Request {
	t.Helper()
	var out []fakeanthropic.Request
	for _, r := range carrying(fake, marker) {
		if r.Method == http.MethodPost {
			out = append(out, r)
		}
	}
	if len(out) != n {
		t.Fatalf("the fake received %d POSTs for this scenario; want %d: %v", len(out), n, describe(out))
	}
	return out
}

// wantPrinted asserts that claude -p succeeded and printed exactly text.
func wantPrinted(t *testing.T, res claudecode.Result, text string) {
	t.Helper()
	if res.ExitCode != 0 || res.Stdout != text+"\n" {
		t.Errorf("claude -p: exit code %d, stdout %q, stderr %q; want exit 0 and stdout %q", res.ExitCode, res.Stdout, res.Stderr, text+"\n")
	}
}

type toolResultBlock struct {
	Type      string `json:"type"`
	ToolUseID string `json:"tool_use_id"`
	Content   any    `json:"content"`
}

// toolResult returns the tool_result block in the last message of r, with
// text content flattened to a string.
func toolResult(r fakeanthropic.Request) (toolResultBlock, bool) {
	var body struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(r.Body, &body) != nil || len(body.Messages) == 0 {
		return toolResultBlock{}, false
	}
	var blocks []toolResultBlock
	if json.Unmarshal(body.Messages[len(body.Messages)-1].Content, &blocks) != nil {
		return toolResultBlock{}, false
	}
	for _, b := range blocks {
		if b.Type != "tool_result" {
			continue
		}
		if parts, ok := b.Content.([]any); ok {
			var s strings.Builder
			for _, p := range parts {
				if m, ok := p.(map[string]any); ok && m["type"] == "text" {
					s.WriteString(fmt.Sprint(m["text"]))
				}
			}
			b.Content = s.String()
		}
		return b, true
	}
	return toolResultBlock{}, false
}

// paddedBody returns a non-streaming Messages request of exactly size bytes
// whose user message carries marker.
func paddedBody(t *testing.T, marker string, size int) []byte {
	t.Helper()
	build := func(pad int) []byte {
		b, err := json.Marshal(map[string]any{
			"model": "claude-opus-5-5", "max_tokens": 16, "stream": false,
			"messages": []any{map[string]any{"role": "user", "content": marker + " " + strings.Repeat("lorem ipsum ", pad/12) + strings.Repeat("x", pad%12)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := len(build(0))
	b := build(size - base)
	if len(b) != size {
		t.Fatalf("padded body is %d bytes; want %d", len(b), size)
	}
	return b
}

// do sends req and returns the status, headers and whole body.
func do(t *testing.T, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), time.Minute)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp.StatusCode, resp.Header, body
}

// describe summarises requests for failure messages (no bodies: they can be MBs).
func describe(reqs []fakeanthropic.Request) []string {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, fmt.Sprintf("%s %s (%d bytes)", r.Method, r.Path, len(r.Body)))
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
