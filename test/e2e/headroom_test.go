package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// planWithLimits is a Plan answer carrying the subscription rate-limit
// headers of a 5-hour utilization u that resets at reset.
func planWithLimits(r fakeanthropic.Request, text string, u float64, reset time.Time) fakeanthropic.Reply {
	// One text delta, so that the raw SSE answer contains the text whole.
	rep := fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), fakeanthropic.Usage{Input: 20, Output: 9},
		fakeanthropic.Block{Text: text, Chunks: 1})}
	rs := strconv.FormatInt(reset.Unix(), 10)
	rep.Header = http.Header{
		"Anthropic-Ratelimit-Unified-Status":               {"allowed"},
		"Anthropic-Ratelimit-Unified-Representative-Claim": {"five_hour"},
		"Anthropic-Ratelimit-Unified-Reset":                {rs},
		"Anthropic-Ratelimit-Unified-5h-Utilization":       {strconv.FormatFloat(u, 'f', -1, 64)},
		"Anthropic-Ratelimit-Unified-5h-Reset":             {rs},
		"Anthropic-Ratelimit-Unified-7d-Utilization":       {"0.3"},
		"Anthropic-Ratelimit-Unified-7d-Reset":             {strconv.FormatInt(reset.Add(72*time.Hour).Unix(), 10)},
	}
	return rep
}

// getMe asks GET /ak/<key>/me.
func getMe(t *testing.T, base, key string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/ak/"+key+"/me", nil)
	status, hdr, body := do(t, req)
	if status != 200 || !strings.HasPrefix(hdr.Get("content-type"), "application/json") {
		t.Fatalf("GET /me: %d %v %s", status, hdr, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /me: %v: %s", err, body)
	}
	return out
}

// TestPreemptiveFailover: with the fake Plan reporting a rising 5-hour
// utilization, the request after the user's threshold goes to Bedrock
// without Plan seeing it (no 429 is ever produced), requests stay on
// Bedrock until the reset Plan announced, and the first request after it
// returns to Plan. Plan's rate-limit headers reach the client unchanged,
// the usage rows say preemptive, the readings land in the headroom
// history and GET /ak/<key>/me says where the next request goes.
func TestPreemptiveFailover(t *testing.T) {
	fg := startFallbackGateway(t)
	u := fg.admin.user("nearlimit", "plan_first", eastCredential())
	fg.admin.call("PATCH", "/api/v1/users/"+u.ID, map[string]any{"preempt_threshold": 0.95, "seat_type": "max_5x"}, nil)

	// The window resets a few seconds from now (unix seconds, as Plan
	// announces it); the breaker stays open until then.
	reset := time.Now().Add(4 * time.Second).Truncate(time.Second)
	readings := []float64{0.90, 0.94, 0.96}
	var planCalls atomic.Int32
	var afterReset atomic.Bool
	marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		if r.URLPath() != "/v1/messages" || r.Model() != mainModel {
			return planText(r, "side")
		}
		if afterReset.Load() {
			return planWithLimits(r, "Plan after the reset.", 0.02, reset.Add(5*time.Hour))
		}
		n := int(planCalls.Add(1)) - 1
		if n >= len(readings) {
			t.Errorf("Plan received main request %d above the threshold", n+1)
			return planLimited("60")
		}
		return planWithLimits(r, "Plan turn "+strconv.Itoa(n+1)+".", readings[n], reset)
	}, bedrockText("Bedrock took over before the limit."))

	send := func(want string) http.Header {
		t.Helper()
		status, hdr, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
		if status != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("got %d %.300s; want 200 with %q", status, body, want)
		}
		return hdr
	}
	for i, u5 := range readings {
		hdr := send("Plan turn " + strconv.Itoa(i+1) + ".")
		// Plan's headers reach the client as Plan sent them.
		if got := hdr.Get("Anthropic-Ratelimit-Unified-5h-Utilization"); got != strconv.FormatFloat(u5, 'f', -1, 64) {
			t.Fatalf("turn %d: 5h utilization header %q reached the client", i+1, got)
		}
	}
	// 0.96 ≥ 0.95: the next requests go to Bedrock, Plan sees none.
	send("Bedrock took over before the limit.")
	me := getMe(t, fg.Base, u.Key)
	route, _ := me["route"].(map[string]any)
	if route["backend"] != "bedrock" || route["reason"] != "preemptive" || route["until"] == nil {
		t.Fatalf("/me route during preemption: %v", route)
	}
	send("Bedrock took over before the limit.")
	if n := fg.planMain(marker); n != 3 {
		t.Fatalf("Plan saw %d main requests; want 3 (none above the threshold)", n)
	}

	// After the announced reset, Plan again (the half-open probe, which
	// closes the breaker with its low reading), and it stays there.
	afterReset.Store(true)
	time.Sleep(time.Until(reset) + 100*time.Millisecond)
	send("Plan after the reset.")
	send("Plan after the reset.")
	if n := fg.planMain(marker); n != 5 {
		t.Fatalf("Plan saw %d main requests after the reset; want 5", n)
	}
	rows := waitFallbackRows(t, fg.gateway, u.ID, 7)
	want := []fallbackRow{planRow, planRow, planRow, bedrockRow("preemptive"), bedrockRow("preemptive"), planRow, planRow}
	if !slices.Equal(rows, want) {
		t.Fatalf("usage rows %+v\nwant %+v", rows, want)
	}
	if route := getMe(t, fg.Base, u.Key)["route"].(map[string]any); route["backend"] != "plan" || route["reason"] != "plan_first" {
		t.Fatalf("/me route after the reset: %v", route)
	}

	// The readings are in the headroom history (one sample per 5-minute
	// bucket: the newest, the reading after the reset).
	deadline := time.Now().Add(15 * time.Second)
	for {
		var hr struct {
			Current *struct {
				Utilization5h *float64 `json:"utilization_5h"`
			} `json:"current"`
		}
		fg.admin.call("GET", "/api/v1/users/"+u.ID+"/headroom", nil, &hr)
		if hr.Current != nil && hr.Current.Utilization5h != nil && *hr.Current.Utilization5h == 0.02 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("headroom never showed the last reading: %+v", hr.Current)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusline runs `ccproxy statusline` as Claude Code would, against
// the gateway: it prints the developer's spend, budgets and Plan headroom,
// and a short fallback text within its timeout when the gateway is down.
func TestStatusline(t *testing.T) {
	fg := startFallbackGateway(t)
	u := fg.admin.user("statusline", "plan_first", eastCredential())
	fg.admin.call("PATCH", "/api/v1/users/"+u.ID, map[string]any{"monthly_budget_usd": "50.00"}, nil)
	// A budget that acts: the line shows it after the monthly Bedrock budget.
	addBudget(fg, u.ID, "all", "5.00", "downgrade", map[string]string{"opus": "claude-sonnet-4-5"})
	reset := time.Now().Add(3 * time.Hour)
	marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		return planWithLimits(r, "Plan answered.", 0.42, reset)
	}, nil)
	if status, _, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker)); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	// ccproxy statusline and ccproxy-statusline print the same line.
	commands := [][]string{{binaries.ccproxy, "statusline"}, {binaries.statusline}}
	runWith := func(command []string, baseURL, stdin string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, command[0], append(command[1:], "--timeout", "2s")...)
		cmd.Env = []string{"ANTHROPIC_BASE_URL=" + baseURL, "ANTHROPIC_API_KEY=" + apiKey, "TZ=UTC", "HOME=" + t.TempDir()}
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(command, " "), err, out)
		}
		return string(out)
	}
	run := func(baseURL, stdin string) string { return runWith(commands[0], baseURL, stdin) }
	// The usage row (and its headroom reading) is ingested asynchronously.
	deadline := time.Now().Add(15 * time.Second)
	stdin := `{"session_id":"s1","model":{"id":"claude-opus-5-5","display_name":"Opus 5.5"}}`
	// The one request's Plan list-price equivalent is under a cent; its
	// 20 input tokens read nothing from the cache: 0 %.
	want := "Opus 5.5 · $0.00 this month · Bedrock $0.00 of $50.00 · day $0.00/$5.00 → sonnet · 5h 42% (resets " + reset.UTC().Format("15:04") + ") · 7d 30% · → Plan · cache 0%"
	for {
		out := run(fg.Base+"/ak/"+u.Key, stdin)
		line := strings.TrimSuffix(out, "\n")
		if line == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statusline printed %q\nwant          %q", line, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if line := strings.TrimSuffix(runWith(commands[1], fg.Base+"/ak/"+u.Key, stdin), "\n"); line != want {
		t.Fatalf("ccproxy-statusline printed %q\nwant               %q", line, want)
	}

	// The gateway down: a port nothing listens on that accepts no
	// connection, and one that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := "http://" + ln.Addr().String()
	defer ln.Close()
	closed := "http://127.0.0.1:1"
	for _, base := range []string{closed, silent} {
		// A silent gateway would hold the command until the test's own
		// 30 s deadline killed it (an error); the 2 s timeout ends it first.
		for _, command := range commands {
			if out := runWith(command, base+"/ak/"+u.Key, ""); out != "ccproxy: gateway unreachable\n" {
				t.Fatalf("%s, gateway down (%s): printed %q", strings.Join(command, " "), base, out)
			}
		}
	}
}
