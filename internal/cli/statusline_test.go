package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/statusline"
)

const meAnswer = `{"user_id":"0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69","key_prefix":"ak_abcd","month":"2026-12",
"spend":{"plan_usd":"9.140000","bedrock_usd":"3.200000","total_usd":"12.340000"},
"budget":{"monthly_budget_usd":"50.00","remaining_usd":"46.800000"},
"plan":{"status":"allowed","claim":"five_hour","utilization_5h":0.42,"reset_5h":"2026-12-07T14:05:00Z","utilization_7d":0.1,"reset_7d":"2026-12-10T00:00:00Z","limit_at_5h":null},
"route":{"backend":"plan","reason":"plan_first","until":null},
"cache":{"hit_rate_today":0.834,"requests_today":12}}`

func runStatusline(t *testing.T, env map[string]string, stdin io.Reader, args ...string) string {
	t.Helper()
	a := newApp(func(k string) string { return env[k] }, &http.Client{})
	a.isTerminal = func(io.Reader) bool { return false }
	cmd := a.statuslineCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetIn(stdin)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestStatusline(t *testing.T) {
	// The handler runs on the server's goroutines, and the slow one goes on
	// after the status line gave up: what it saw is read under mu.
	var (
		mu                             sync.Mutex
		gotPath, gotAuth, gotKeyHeader string
	)
	seen := func() (path, auth, keyHeader string) {
		mu.Lock()
		defer mu.Unlock()
		return gotPath, gotAuth, gotKeyHeader
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotPath, gotAuth, gotKeyHeader = r.URL.Path, r.Header.Get("x-api-key")+r.Header.Get("authorization"), r.Header.Get("x-ccproxy-key")
		mu.Unlock()
		switch r.URL.Path {
		case "/ak/ak_good/me", "/me":
			io.WriteString(w, meAnswer)
		case "/ak/ak_budgets/me":
			io.WriteString(w, strings.TrimSuffix(meAnswer, "}")+`,"budgets":[`+
				`{"id":"b1","scope":"team","window":"weekly","metric":"bedrock","limit_usd":"20.000000","spent_usd":"7.250000","action":"block",`+
				`"window_start":"2026-12-07","resets_at":"2026-12-13T23:00:00Z","downgrade_map":null},`+
				`{"id":"b2","scope":"user","window":"daily","metric":"all","limit_usd":"5.000000","spent_usd":"4.200000","action":"downgrade",`+
				`"window_start":"2026-12-07","resets_at":"2026-12-08T00:00:00Z","downgrade_map":{"opus":"claude-sonnet-4-5"}}]}`)
		case "/ak/ak_slow/me":
			time.Sleep(2 * time.Second)
			io.WriteString(w, meAnswer)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"ccproxy: invalid access key"}}`)
		}
	}))
	defer srv.Close()
	const line = "$12.34 this month · Bedrock $3.20 of $50.00 · 5h 42% (resets 14:05) · 7d 10% · → Plan · cache 83%\n"
	tests := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		want  string
	}{
		{"spend, budget, headroom, route and cache", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_good/", "ANTHROPIC_API_KEY": "sk-secret", "TZ": "UTC"},
			"", nil, line},
		{"the most constraining acting budget", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_budgets"}, "", nil,
			"$12.34 this month · Bedrock $3.20 of $50.00 · day $4.20/$5.00 → sonnet · 5h 42% (resets 14:05) · 7d 10% · → Plan · cache 83%\n"},
		{"Claude Code's JSON on stdin names the model", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_good"},
			`{"session_id":"s","model":{"id":"claude-opus-5-5","display_name":"Opus 5.5"}}`, nil, "Opus 5.5 · " + line},
		{"the key in a custom header", map[string]string{statusline.EnvBaseURL: srv.URL, statusline.EnvCustomHeaders: "x-ccproxy-key: ak_hdr\nx-other: 1"},
			"", nil, line},
		{"a refused key: the fallback", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_bad"}, "", nil, statusline.Fallback + "\n"},
		{"no ANTHROPIC_BASE_URL: the fallback", map[string]string{}, "", nil, statusline.Fallback + "\n"},
		{"a slow gateway: the fallback within the timeout", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_slow"}, "", []string{"--timeout", "100ms"},
			statusline.Fallback + "\n"},
		{"the timeout from the environment", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_slow", statusline.EnvTimeout: "50ms"}, "", nil,
			statusline.Fallback + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			got := runStatusline(t, tt.env, strings.NewReader(tt.stdin), tt.args...)
			if strings.Contains(tt.name, "slow") && time.Since(start) > time.Second {
				t.Fatalf("took %s: the timeout did not bound it", time.Since(start))
			}
			// The line's times are local; the test compares in UTC.
			got = strings.Replace(got, time.Date(2026, 12, 7, 14, 5, 0, 0, time.UTC).Local().Format("15:04"), "14:05", 1)
			if got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
			path, auth, keyHeader := seen()
			if strings.Contains(tt.name, "custom header") && (keyHeader != "ak_hdr" || path != "/me") {
				t.Fatalf("custom header: path %q, x-ccproxy-key %q", path, keyHeader)
			}
			if auth != "" {
				t.Fatalf("the Anthropic credential was sent: %q", auth)
			}
		})
	}
	if path, _, _ := seen(); path != "/ak/ak_slow/me" {
		t.Fatalf("last path %q", path)
	}
}
