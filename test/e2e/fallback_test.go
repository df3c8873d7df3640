package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

const (
	// anthropicHost is Plan's real name; the fake serves TLS on it.
	anthropicHost = "api.anthropic.com"
	// mainModel is Claude Code 2.1.332's default model: its turns, not its
	// side requests, are what these tests count.
	mainModel = "claude-opus-5-5"
	// fallbackMaxOpen caps how long a Plan 429 keeps a breaker open in
	// these tests (CCPROXY_BREAKER_MAX_OPEN): far longer than any test
	// needs, so that no assertion depends on how fast Claude Code runs;
	// a test that needs the window to end ends it (endBreakerWindow).
	fallbackMaxOpen = 10 * time.Minute
)

// set registers h under an existing marker (one marker routes a subtest's
// requests at both fakes).
func (m *markers[H]) set(marker string, h H) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handlers == nil {
		m.handlers = map[string]H{}
	}
	m.handlers[marker] = h
}

// fallbackGateway is a `ccproxy dev` whose Plan and Bedrock are both TLS
// fakes on their real host names, so that plan_first users get the
// plan+bedrock-us-east-1 fallback route.
type fallbackGateway struct {
	*gateway
	admin             admin
	plan              *fakeanthropic.Server
	planSc            *scenarios
	fb                *fakebedrock.Server
	bedrockSc         *bedrockScenarios
	dbURL, state, pfx string
	env               []string
	// routeProbe is a bedrock_only user of the fallback region: once its
	// requests are routed, so are the fallback routes (same snapshot).
	routeProbe bedrockUser
}

func startFallbackGateway(t *testing.T, opts ...func(*fallbackGateway)) *fallbackGateway {
	t.Helper()
	ca := fakebedrock.NewCA(t)
	fg := &fallbackGateway{planSc: &scenarios{}, bedrockSc: &bedrockScenarios{}}
	fg.plan = fakeanthropic.NewTLS(t, fg.planSc.handle, ca.Leaf(t, anthropicHost))
	fg.fb = fakebedrock.New(t, fakebedrock.Config{
		Hosts:       []string{eastHost},
		CA:          ca,
		APIKeys:     []string{bedrockAPIKey},
		Credentials: []aws.Credentials{{AccessKeyID: awsAccessKeyID, SecretAccessKey: awsSecretKey}},
		Betas:       bedrockBetas(),
		Handler:     fg.bedrockSc.handle,
	})
	fg.dbURL, fg.state, fg.pfx = testenv.Postgres(t), t.TempDir(), "ccproxytest:"+uuid.NewString()+":"
	fg.env = []string{
		"CCPROXY_UPSTREAM_CA_FILE=" + ca.File,
		"CCPROXY_DEV_RESOLVE=" + anthropicHost + ":443=" + fg.plan.Addr() + "," + eastHost + ":443=" + fg.fb.Addr(),
		"CCPROXY_BREAKER_MAX_OPEN=" + fallbackMaxOpen.String(),
	}
	for _, o := range opts {
		o(fg)
	}
	fg.gateway = fg.start(t)
	fg.admin = admin{t: t, base: "http://" + fg.AdminAddr}
	fg.admin.token = adminLogin(t, fg.AdminAddr, "admin", adminE2EPassword)
	fg.routeProbe = fg.admin.user("routeprobe", "bedrock_only", eastCredential())
	// The fallback cluster, route and runtime region arrive in the same
	// snapshot as the bedrock-us-east-1 ones.
	waitBedrockRoutes(t, fg.gateway, fg.routeProbe.Key)
	t.Cleanup(func() {
		if f := fg.plan.Failures(); len(f) > 0 {
			t.Errorf("the Plan fake refused requests: %q", f)
		}
		if u := fg.planSc.Unrouted(); len(u) > 0 {
			t.Errorf("Plan received requests of no scenario: %q", u)
		}
	})
	return fg
}

// start runs one more `ccproxy dev` on the same installation (database,
// state, Redis prefix): another replica with its own extproc.
func (fg *fallbackGateway) start(t *testing.T) *gateway {
	t.Helper()
	return startDevWith(t, devConfig{
		AnthropicURL: "https://" + anthropicHost, AdminPassword: adminE2EPassword,
		DatabaseURL: fg.dbURL, StateDir: fg.state, RedisPrefix: fg.pfx, Env: fg.env,
	})
}

func eastCredential() map[string]string {
	return map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "us-east-1"}
}

// scenario routes both fakes' requests that carry a new marker to the
// given handlers; a nil bedrock handler fails the test if Bedrock is
// called.
func (fg *fallbackGateway) scenario(t *testing.T, plan fakeanthropic.Handler, bedrock fakebedrock.Handler) string {
	t.Helper()
	marker := fg.planSc.add(t, plan)
	if bedrock == nil {
		bedrock = func(r fakebedrock.Request) fakebedrock.Reply {
			t.Errorf("Bedrock received %s", r.RawPath)
			return fakebedrock.Error(500, "InternalServerException", "unexpected")
		}
	}
	fg.bedrockSc.set(marker, bedrock)
	return marker
}

// planMain counts Plan's /v1/messages requests of the main model carrying
// marker.
func (fg *fallbackGateway) planMain(marker string) int {
	n := 0
	for _, r := range carrying(fg.plan, marker) {
		if r.URLPath() == "/v1/messages" && r.Model() == mainModel {
			n++
		}
	}
	return n
}

func (fg *fallbackGateway) claude(key string) claudecode.Run {
	return claudecode.Run{Bin: binaries.claude, BaseURL: fg.Base + "/ak/" + key, APIKey: apiKey, Timeout: 2 * time.Minute}
}

// planLimited is Anthropic's 429 for an exhausted rate limit.
// endBreakerWindow ends the open window of the circuit breaker of userID's
// access key as if the reset Plan announced were now: the next request is
// the half-open probe. The time-based reset itself is tested with a fake
// clock in extproc/planbreaker; here it would make the test wait, and depend on
// how fast Claude Code ran the turns before it.
func endBreakerWindow(t *testing.T, g *gateway, userID string) {
	t.Helper()
	ctx := context.Background()
	var keyID string
	if err := g.DB.QueryRow(ctx, `SELECT id::text FROM access_keys WHERE user_id = $1 AND status = 'active'`, userID).Scan(&keyID); err != nil {
		t.Fatalf("access key of %s: %v", userID, err)
	}
	opts, err := redis.ParseURL(g.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	// The breaker's open hash (extproc/planbreaker, redis.go): "until" ends the
	// open window, "exp" the half-open one, both in unix ms.
	open := g.RedisPrefix + "breaker:{" + keyID + "}:open"
	n, err := rdb.HSet(ctx, open, "until", time.Now().UnixMilli()).Result()
	if err != nil || n != 0 {
		t.Fatalf("HSET %s until: %d fields added, %v; want the existing open window changed", open, n, err)
	}
}

func planLimited(retryAfter string) fakeanthropic.Reply {
	return fakeanthropic.Reply{Status: http.StatusTooManyRequests,
		Header: http.Header{"Retry-After": {retryAfter}, "Anthropic-Ratelimit-Unified-Status": {"rejected"}, "Request-Id": {"req_fake_limited"}},
		Body:   []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}`)}
}

func planText(r fakeanthropic.Request, text string, blocks ...fakeanthropic.Block) fakeanthropic.Reply {
	blocks = append(blocks, fakeanthropic.Block{Text: text, Chunks: 3})
	return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), fakeanthropic.Usage{Input: 20, Output: 9}, blocks...)}
}

func bedrockText(text string) fakebedrock.Handler {
	return func(r fakebedrock.Request) fakebedrock.Reply {
		// One text delta, so that raw SSE answers contain the text whole.
		return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 1, fakebedrock.Usage{Input: 30, Output: 11})
	}
}

type fallbackRow struct {
	Provider string
	Fallback bool
	Reason   string
	Status   int
}

// waitFallbackRows returns the user's main-model message rows in time
// order, once there are want of them.
func waitFallbackRows(t *testing.T, g *gateway, userID string, want int) []fallbackRow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows, err := g.DB.Query(context.Background(), `
			SELECT provider, fallback, fallback_reason, status FROM usage_events
			WHERE user_id = $1 AND kind = 'messages' AND requested_model = $2 ORDER BY event_time`, userID, mainModel)
		if err != nil {
			t.Fatal(err)
		}
		var out []fallbackRow
		for rows.Next() {
			var r fallbackRow
			if err := rows.Scan(&r.Provider, &r.Fallback, &r.Reason, &r.Status); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		rows.Close()
		if len(out) >= want || time.Now().After(deadline) {
			if len(out) != want {
				t.Fatalf("usage_events has %d main-model rows for the user, want %d: %+v", len(out), want, out)
			}
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countLogLines counts g's JSON log lines whose string fields include
// every entry of match.
func countLogLines(t *testing.T, g *gateway, match map[string]string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(g.stderr.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			continue
		}
		ok := true
		for k, v := range match {
			if s, _ := fields[k].(string); s != v {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// waitUsageReasonCount waits until the gateway's database holds exactly
// want usage rows with fallback_reason reason.
func waitUsageReasonCount(t *testing.T, g *gateway, reason string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := g.DB.QueryRow(context.Background(), `SELECT count(*) FROM usage_events WHERE fallback_reason = $1`, reason).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d usage rows with fallback_reason %q, want %d (one per logged fallback)", n, reason, want)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bedrockRow is the usage row of a main turn Bedrock answered for reason.
func bedrockRow(reason string) fallbackRow { return fallbackRow{"bedrock", true, reason, 200} }

// planRow is the usage row of a main turn Plan answered.
var planRow = fallbackRow{"anthropic", false, "", 200}

// streamBody is a streaming Messages request carrying marker.
func streamBody(marker string) string {
	return `{"model":"` + mainModel + `","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"` + marker + `"}]}`
}

// TestFallback runs plan_first users through Plan-first routing with
// Bedrock fallback: Envoy's retry moves a refused request to
// Bedrock, the per-access-key circuit breaker (shared through Redis) keeps
// the next requests on Bedrock until the announced reset, and one probe
// returns the user to Plan.
func TestFallback(t *testing.T) {
	fg := startFallbackGateway(t)
	// Registered after the gateway's own cleanups, so it runs first: once
	// every subtest is done, while the gateway still serves /metrics.
	var limitedDone atomic.Bool // the subtest that produces these metrics passed
	var others struct {
		sync.Mutex
		gateways []*gateway // replicas started by subtests, stopped by now
	}
	t.Cleanup(func() {
		if !limitedDone.Load() {
			return
		}
		// Claude Code's side requests make the totals of parallel subtests
		// vary from run to run, but every fallback and every breaker
		// transition is logged once, metered once and stored once: the
		// counts must agree exactly.
		others.Lock()
		defer others.Unlock()
		for _, reason := range []string{"plan_429", "plan_529", "breaker_open", "plan_unreachable"} {
			match := map[string]string{"msg": "plan_first request fell back to Bedrock", "reason": reason}
			logged := countLogLines(t, fg.gateway, match)
			if v := metricValue(t, fg.gateway, `ccproxy_extproc_fallbacks_total{reason="`+reason+`"}`); v != float64(logged) {
				t.Errorf("fallbacks_total{reason=%q} = %v, but the gateway logged %d such fallbacks", reason, v, logged)
			}
			for _, o := range others.gateways {
				logged += countLogLines(t, o, match)
			}
			waitUsageReasonCount(t, fg.gateway, reason, logged)
		}
		for _, to := range []string{"open", "half_open", "closed"} {
			logged := countLogLines(t, fg.gateway, map[string]string{"msg": "plan circuit breaker state changed", "to": to, "store": "redis"})
			if v := metricValue(t, fg.gateway, `ccproxy_extproc_breaker_transitions_total{store="redis",to="`+to+`"}`); v != float64(logged) {
				t.Errorf("breaker_transitions_total{to=%q} = %v, but the gateway logged %d such transitions", to, v, logged)
			}
		}
		for _, series := range []string{`ccproxy_extproc_fallbacks_total{reason="plan_429"}`, `ccproxy_extproc_fallbacks_total{reason="breaker_open"}`,
			`ccproxy_extproc_breaker_transitions_total{store="redis",to="open"}`} {
			if metricValue(t, fg.gateway, series) == 0 {
				t.Errorf("%s = 0 after the 429 subtest passed", series)
			}
		}
	})

	t.Run("a 429 falls back, the breaker holds for three turns, one probe returns to Plan", func(t *testing.T) {
		t.Parallel()
		u := fg.admin.user("limited", "plan_first", eastCredential())
		var limited atomic.Bool
		limited.Store(true)
		var bedrockTurn atomic.Int32
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			if limited.Load() {
				return planLimited("120")
			}
			return planText(r, "Plan is back.")
		}, func(r fakebedrock.Request) fakebedrock.Reply {
			n := bedrockTurn.Add(1)
			return bedrockText("Bedrock answered turn " + string(rune('0'+n)) + ".")(r)
		})
		res := fg.claude(u.Key).Prompt(t, "Turn one "+marker)
		wantPrinted(t, res, "Bedrock answered turn 1.")
		if n := fg.planMain(marker); n != 1 {
			t.Fatalf("Plan saw %d main-model requests for the turn; want exactly 1 (the one it refused)", n)
		}
		for turn := 2; turn <= 4; turn++ {
			res := fg.claude(u.Key).Prompt(t, "Next turn "+marker)
			wantPrinted(t, res, "Bedrock answered turn "+string(rune('0'+turn))+".")
			if n := fg.planMain(marker); n != 1 {
				t.Fatalf("turn %d reached Plan (%d main-model requests); want Bedrock only while the breaker is open", turn, n)
			}
		}
		limited.Store(false)
		// Plan announced its reset 120 s after the first 429; rather than
		// wait for it, the test moves the reset to now.
		endBreakerWindow(t, fg.gateway, u.ID)
		res = fg.claude(u.Key).Prompt(t, "Probe turn "+marker)
		wantPrinted(t, res, "Plan is back.")
		if n := fg.planMain(marker); n != 2 {
			t.Fatalf("Plan saw %d main-model requests after the reset; want 2 (one probe)", n)
		}
		res = fg.claude(u.Key).Prompt(t, "Last turn "+marker)
		wantPrinted(t, res, "Plan is back.")
		if n, b := fg.planMain(marker), bedrockTurn.Load(); n != 3 || b != 4 {
			t.Fatalf("after the probe: Plan %d, Bedrock %d main requests; want 3 and 4 (traffic back on Plan)", n, b)
		}
		rows := waitFallbackRows(t, fg.gateway, u.ID, 6)
		want := []fallbackRow{bedrockRow("plan_429"), bedrockRow("breaker_open"), bedrockRow("breaker_open"), bedrockRow("breaker_open"), planRow, planRow}
		if !slices.Equal(rows, want) {
			t.Fatalf("usage rows %+v\nwant %+v", rows, want)
		}
		limitedDone.Store(true)
	})

	t.Run("a conversation crosses providers, thinking signatures and all", func(t *testing.T) {
		t.Parallel()
		u := fg.admin.user("crossing", "plan_first", eastCredential())
		const (
			planThought1    = "The user wants a command run; Bash can echo the token."
			planThought2    = "The tool printed the token; report it."
			bedrockThought  = "Bedrock considers turn two of the same conversation."
			planThought3    = "Back on Plan for turn three."
			turnOneAnswer   = "Turn one done: cross-tool-7."
			turnTwoAnswer   = "Turn two from Bedrock."
			turnThreeAnswer = "Turn three from Plan."
		)
		var phase atomic.Int32
		phase.Store(1)
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			switch phase.Load() {
			case 1:
				if bytes.Contains(r.Body, []byte(`"tool_result"`)) {
					return planText(r, turnOneAnswer, fakeanthropic.Block{Thinking: planThought2, Chunks: 2})
				}
				return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), fakeanthropic.Usage{Input: 40, Output: 12},
					fakeanthropic.Block{Thinking: planThought1, Chunks: 2},
					fakeanthropic.Block{ToolName: "Bash", ToolID: "toolu_cross_01", ToolInput: map[string]any{"command": "echo cross-tool-7", "description": "print"}})}
			case 2:
				return planLimited("1")
			default:
				return planText(r, turnThreeAnswer, fakeanthropic.Block{Thinking: planThought3, Chunks: 2})
			}
		}, func(r fakebedrock.Request) fakebedrock.Reply {
			return fakebedrock.Answer(fakebedrock.AnthropicModel(r.ModelID), fakebedrock.Usage{Input: 50, Output: 14},
				fakebedrock.Block{Thinking: bedrockThought, Chunks: 2}, fakebedrock.Block{Text: turnTwoAnswer, Chunks: 2})
		})
		home, dir := t.TempDir(), t.TempDir()
		run := fg.claude(u.Key)
		run.Home, run.Dir = home, dir
		run.Args = []string{"--allowedTools", "Bash(echo:*)"}
		wantPrinted(t, run.Prompt(t, "Run echo cross-tool-7 for me "+marker), turnOneAnswer)

		phase.Store(2)
		run.Args = append(run.Args, "--continue")
		wantPrinted(t, run.Prompt(t, "Now turn two"), turnTwoAnswer)
		breq := fg.fb.Carrying(marker)
		if len(breq) != 1 {
			t.Fatalf("Bedrock received %d requests for turn two; want 1", len(breq))
		}
		body := breq[0].InvokeBody()
		for _, want := range []string{
			// Plan's thinking blocks reach Bedrock with Plan's signatures,
			// byte for byte: signatures are valid across platforms.
			`"signature":"` + thinking.Sign(planThought1) + `"`,
			`"signature":"` + thinking.Sign(planThought2) + `"`,
			`"type":"tool_use"`, `"tool_use_id":"toolu_cross_01"`, `"cache_control"`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("Bedrock's turn-two request lacks %s", want)
			}
		}

		// The 429 announced a 1 s reset: after it the next request is the
		// breaker's probe and goes to Plan.
		phase.Store(3)
		time.Sleep(1500 * time.Millisecond)
		wantPrinted(t, run.Prompt(t, "And turn three"), turnThreeAnswer)
		preqs := carrying(fg.plan, marker)
		last := preqs[len(preqs)-1]
		if !strings.Contains(string(last.Body), `"signature":"`+thinking.Sign(bedrockThought)+`"`) {
			t.Errorf("Plan's turn-three request lacks Bedrock's thinking signature: %.600s", last.Body)
		}
		if len(fg.fb.Carrying(marker)) != 1 {
			t.Errorf("Bedrock saw turn three")
		}
		rows := waitFallbackRows(t, fg.gateway, u.ID, 4)
		want := []fallbackRow{planRow, planRow, bedrockRow("plan_429"), planRow}
		if !slices.Equal(rows, want) {
			t.Fatalf("usage rows %+v\nwant %+v", rows, want)
		}
	})

	t.Run("more concurrent fallbacks than Envoy's default retry limit", func(t *testing.T) {
		t.Parallel()
		const n = 8 // Envoy's default circuit_breakers.max_retries is 3
		u := fg.admin.user("burst", "plan_first", eastCredential())
		var mu sync.Mutex
		arrived := 0
		all := make(chan struct{})
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			mu.Lock()
			arrived++
			if arrived == n {
				close(all)
			}
			mu.Unlock()
			select { // every request waits at Plan, so all n retries overlap
			case <-all:
			case <-time.After(20 * time.Second):
			}
			return planLimited("120")
		}, func(r fakebedrock.Request) fakebedrock.Reply {
			rep := bedrockText("Bedrock took the burst.")(r)
			rep.Gap = 50 * time.Millisecond
			return rep
		})
		var wg sync.WaitGroup
		results := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
				if status != 200 || !strings.Contains(string(body), "Bedrock took the burst.") {
					results[i] = string(body)
				}
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r != "" {
				t.Errorf("request %d was not answered by Bedrock: %.300s", i, r)
			}
		}
		if got := len(fg.fb.Carrying(marker)); got != n {
			t.Fatalf("Bedrock received %d requests; want %d", got, n)
		}
	})

	t.Run("529 falls back", func(t *testing.T) {
		t.Parallel()
		u := fg.admin.user("overloaded", "plan_first", eastCredential())
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Status: 529, Body: []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)}
		}, bedrockText("Bedrock stood in for an overloaded Plan."))
		wantPrinted(t, fg.claude(u.Key).Prompt(t, "Overload "+marker), "Bedrock stood in for an overloaded Plan.")
		if n := fg.planMain(marker); n != 1 {
			t.Fatalf("Plan saw %d main-model requests; want 1", n)
		}
		if rows := waitFallbackRows(t, fg.gateway, u.ID, 1); rows[0] != bedrockRow("plan_529") {
			t.Fatalf("usage row %+v", rows[0])
		}
	})

	t.Run("a 400 from Plan reaches Claude Code unchanged and Bedrock sees nothing", func(t *testing.T) {
		t.Parallel()
		u := fg.admin.user("badrequest", "plan_first", eastCredential())
		// A message Claude Code has no special handling for, so it prints
		// the API's own words.
		const msg = "fake Plan refuses this request as invalid, verbatim"
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Status: 400, Body: []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"` + msg + `"}}`)}
		}, nil)
		res := fg.claude(u.Key).Prompt(t, "Too long "+marker)
		if !strings.Contains(res.Stdout+res.Stderr, msg) {
			t.Fatalf("Claude Code did not print Plan's error; stdout %q stderr %q", res.Stdout, res.Stderr)
		}
		// Claude Code answers a 400 by retrying with fewer beta flags, one
		// request each; every one of them must reach Plan and come back as
		// Plan's 400 (none retried on Bedrock, whose fake fails the test if
		// called).
		n := fg.planMain(marker)
		if n == 0 {
			t.Fatal("Plan saw no request")
		}
		for i, row := range waitFallbackRows(t, fg.gateway, u.ID, n) {
			if row != (fallbackRow{"anthropic", false, "", 400}) {
				t.Fatalf("usage row %d: %+v", i, row)
			}
		}
	})

	t.Run("without a Bedrock credential Plan's 429 passes unchanged", func(t *testing.T) {
		t.Parallel()
		u := fg.admin.user("nocredential", "plan_first", nil)
		sent := planLimited("120")
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			return sent
		}, nil)
		status, hdr, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
		if status != 429 || string(body) != string(sent.Body) || hdr.Get("Retry-After") != "120" || hdr.Get("Request-Id") != "req_fake_limited" {
			t.Fatalf("got %d %v %s; want Plan's 429 unchanged", status, hdr, body)
		}
		if n := fg.planMain(marker); n != 1 {
			t.Fatalf("Plan saw %d requests; want 1 (the plan route never retries a 429)", n)
		}
	})

	t.Run("two extproc replicas share the breaker", func(t *testing.T) {
		t.Parallel()
		other := fg.start(t) // a second gateway replica on the same installation
		others.Lock()
		others.gateways = append(others.gateways, other)
		others.Unlock()
		u := fg.admin.user("shared", "plan_first", eastCredential())
		marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
			return planLimited("120")
		}, bedrockText("Bedrock, via either replica."))
		waitBedrockRoutes(t, other, fg.routeProbe.Key)
		status, _, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
		if status != 200 || !strings.Contains(string(body), "Bedrock, via either replica.") {
			t.Fatalf("replica A: %d %.300s", status, body)
		}
		status, _, body = postJSON(t, other.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker))
		if status != 200 || !strings.Contains(string(body), "Bedrock, via either replica.") {
			t.Fatalf("replica B: %d %.300s", status, body)
		}
		if n := fg.planMain(marker); n != 1 {
			t.Fatalf("Plan saw %d requests; want 1: replica B must honour the breaker replica A opened", n)
		}
		rows := waitFallbackRows(t, fg.gateway, u.ID, 2)
		if want := []fallbackRow{bedrockRow("plan_429"), bedrockRow("breaker_open")}; !slices.Equal(rows, want) {
			t.Fatalf("usage rows %+v, want %+v", rows, want)
		}
	})

}

// TestFallbackPlanUnreachable: a refused connection to Plan falls back too.
func TestFallbackPlanUnreachable(t *testing.T) {
	ca := fakebedrock.NewCA(t)
	var sc bedrockScenarios
	fb := fakebedrock.New(t, fakebedrock.Config{
		Hosts: []string{eastHost}, CA: ca, APIKeys: []string{bedrockAPIKey}, Betas: bedrockBetas(), Handler: sc.handle,
	})
	// A port nothing listens on any more: every connection is refused.
	closed := freeAddrs(t, 1)[0]
	g := startDevWith(t, devConfig{
		AnthropicURL: "https://" + anthropicHost, AdminPassword: adminE2EPassword,
		Env: []string{
			"CCPROXY_UPSTREAM_CA_FILE=" + ca.File,
			"CCPROXY_DEV_RESOLVE=" + anthropicHost + ":443=" + closed + "," + eastHost + ":443=" + fb.Addr(),
		},
	})
	a := admin{t: t, base: "http://" + g.AdminAddr}
	a.token = adminLogin(t, g.AdminAddr, "admin", adminE2EPassword)
	probe := a.user("routeprobe", "bedrock_only", eastCredential())
	u := a.user("unreachable", "plan_first", eastCredential())
	waitBedrockRoutes(t, g, probe.Key)
	const text = "Bedrock answered while Plan was unreachable."
	marker := sc.add(bedrockText(text))
	run := claudecode.Run{Bin: binaries.claude, BaseURL: g.Base + "/ak/" + u.Key, APIKey: apiKey, Timeout: 2 * time.Minute}
	wantPrinted(t, run.Prompt(t, "Anyone there? "+marker), text)
	if n := len(fb.Carrying(marker)); n != 1 {
		t.Fatalf("Bedrock received %d requests; want 1", n)
	}
	rows := waitFallbackRows(t, g, u.ID, 1)
	if rows[0] != bedrockRow("plan_unreachable") {
		t.Fatalf("usage row %+v", rows[0])
	}
}
