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
		{"spend, budget, headroom, route and cache", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_good/", "ANTHROPIC_API_KEY": "sk-secret", "TZ": "UTC"},
			"", nil, line},
		{"the most constraining acting budget", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_budgets"}, "", nil,
			"$12.34 this month · Bedrock $3.20 of $50.00 · day $4.20/$5.00 → sonnet · 5h 42% (resets 14:05) · 7d 10% · → Plan · cache 83%\n"},
		{"Claude Code's JSON on stdin names the model", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_good"},
			`{"session_id":"s","model":{"id":"claude-opus-5-5","display_name":"Opus 5.5"}}`, nil, "Opus 5.5 · " + line},
		{"the key in a custom header", map[string]string{EnvBaseURL: srv.URL, EnvCustomHeaders: "x-ccproxy-key: ak_hdr\nx-other: 1"},
			"", nil, line},
		{"a refused key: the fallback", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_bad"}, "", nil, statuslineFallback + "\n"},
		{"no ANTHROPIC_BASE_URL: the fallback", map[string]string{}, "", nil, statuslineFallback + "\n"},
		{"a slow gateway: the fallback within the timeout", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_slow"}, "", []string{"--timeout", "100ms"},
			statuslineFallback + "\n"},
		{"the timeout from the environment", map[string]string{EnvBaseURL: srv.URL + "/ak/ak_slow", EnvStatuslineTimeout: "50ms"}, "", nil,
			statuslineFallback + "\n"},
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

func TestStatuslineRoutes(t *testing.T) {
	until := time.Date(2026, 12, 7, 14, 5, 0, 0, time.UTC)
	base := meStatus{}
	base.Spend.TotalUSD, base.Spend.BedrockUSD = "1", "0"
	tests := []struct {
		backend, reason string
		until           *time.Time
		want            string
	}{
		{"plan", "plan_first", nil, "→ Plan"},
		{"bedrock", "preemptive", &until, "→ Bedrock (preemptive until 14:05)"},
		{"bedrock", "breaker_open", &until, "→ Bedrock (breaker open until 14:05)"},
		{"bedrock", "bedrock_only", nil, "→ Bedrock"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			st := base
			st.Route.Backend, st.Route.Reason, st.Route.Until = tt.backend, tt.reason, tt.until
			want := "$1.00 this month · no budget · 5h n/a · " + tt.want
			if got := formatStatus(st, time.UTC); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestStatuslineBudgets: the most constraining acting budget (highest
// spent ÷ limit among block, plan_only and downgrade; ties to the stronger
// action, then the earlier reset) is shown after the monthly Bedrock
// budget, or instead of "no budget".
func TestStatuslineBudgets(t *testing.T) {
	day := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	week := time.Date(2026, 12, 14, 0, 0, 0, 0, time.UTC)
	b := func(window, limit, spent, action string, resets time.Time, downgrade map[string]string) meBudget {
		return meBudget{Window: window, LimitUSD: limit, SpentUSD: spent, Action: action, ResetsAt: &resets, DowngradeMap: downgrade}
	}
	sonnet := map[string]string{"opus": "claude-sonnet-4-5"}
	fifty := "50.00"
	tests := []struct {
		name    string
		monthly *string
		budgets []meBudget
		want    string
	}{
		{"none", nil, nil, "no budget"},
		{"only notify", nil, []meBudget{b("daily", "1.000000", "5.000000", "notify", day, nil)}, "no budget"},
		{"downgrade", nil, []meBudget{b("daily", "5.000000", "4.200000", "downgrade", day, sonnet)}, "day $4.20/$5.00 → sonnet"},
		{"block", nil, []meBudget{b("weekly", "20.000000", "7.250000", "block", week, nil)}, "week $7.25/$20.00 block"},
		{"plan only", nil, []meBudget{b("monthly", "10.000000", "1.750000", "plan_only", week, nil)}, "month $1.75/$10.00 plan only"},
		{"downgrade to two families", nil, []meBudget{b("daily", "5", "1", "downgrade", day,
			map[string]string{"opus": "claude-sonnet-4-5", "sonnet": "claude-3-5-haiku-20241022"})}, "day $1.00/$5.00 → haiku/sonnet"},
		{"downgrade without a map", nil, []meBudget{b("daily", "5", "1", "downgrade", day, nil)}, "day $1.00/$5.00 downgrade"},
		{"the highest ratio wins", nil, []meBudget{
			b("weekly", "20.000000", "7.250000", "block", week, nil),
			b("daily", "5.000000", "4.200000", "downgrade", day, sonnet),
			b("monthly", "10.000000", "1.750000", "plan_only", week, nil),
			b("daily", "1.000000", "3.000000", "notify", day, nil),
		}, "day $4.20/$5.00 → sonnet"},
		{"an equal ratio: the stronger action", nil, []meBudget{
			b("daily", "2.000000", "1.000000", "downgrade", day, sonnet),
			b("weekly", "4.000000", "2.000000", "block", week, nil),
			b("monthly", "6.000000", "3.000000", "plan_only", week, nil),
		}, "week $2.00/$4.00 block"},
		{"an equal ratio and action: the earlier reset", nil, []meBudget{
			b("weekly", "4.000000", "2.000000", "block", week, nil),
			b("daily", "2.000000", "1.000000", "block", day, nil),
		}, "day $1.00/$2.00 block"},
		{"a zero limit is used up", nil, []meBudget{
			b("daily", "5.000000", "4.990000", "downgrade", day, sonnet),
			b("weekly", "0.000000", "0.000000", "plan_only", week, nil),
		}, "week $0.00/$0.00 plan only"},
		{"with the monthly Bedrock budget", &fifty, []meBudget{b("daily", "5.000000", "5.100000", "block", day, nil)},
			"Bedrock $0.00 of $50.00 · day $5.10/$5.00 block"},
		{"the monthly Bedrock budget alone", &fifty, []meBudget{b("daily", "5.000000", "5.100000", "notify", day, nil)},
			"Bedrock $0.00 of $50.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st meStatus
			st.Spend.TotalUSD, st.Spend.BedrockUSD = "1", "0"
			st.Budget.MonthlyBudgetUSD = tt.monthly
			st.Budgets = tt.budgets
			st.Route.Backend = "plan"
			want := "$1.00 this month · " + tt.want + " · 5h n/a · → Plan"
			if got := formatStatus(st, time.UTC); got != want {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
		})
	}
}
