package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// The Bedrock credentials registered with the gateway: an API key for the
// us-east-1 user, static AWS credentials (the "ambient chain" of the
// gateway process) for the us-west-2 user.
const (
	bedrockAPIKey    = "ABSKZTJlLWJlZHJvY2sta2V5LWZvci1jY3Byb3h5LXRlc3Rz"
	awsAccessKeyID   = "AKIAE2ECCPROXYTEST01"
	awsSecretKey     = "e2e/ccproxy/secret/access/key/0123456789"
	eastHost         = "bedrock-runtime.us-east-1.amazonaws.com"
	euHost           = "bedrock-runtime.eu-west-1.amazonaws.com"
	westHost         = "bedrock-runtime.us-west-2.amazonaws.com"
	adminE2EPassword = "e2e-admin-password-bedrock"
)

// bedrockScenarios routes the fake Bedrock's requests to the subtest whose
// marker they carry; unmarked requests get the fake's echo answer.
type bedrockScenarios struct {
	markers[fakebedrock.Handler]
}

func (s *bedrockScenarios) handle(r fakebedrock.Request) fakebedrock.Reply {
	if h, ok := s.find(r.InvokeBody()); ok {
		return h(r)
	}
	return fakebedrock.Reply{}
}

// bedrockBetas is what the fake Bedrock accepts: every flag the gateway's
// allow-list forwards (and nothing else, so a leaked flag fails the request
// as it would on Bedrock).
func bedrockBetas() []string {
	var out []string
	for _, r := range bedrockpolicy.DefaultBetaTable().Rules {
		switch r.Action {
		case bedrockpolicy.BetaKeep:
			out = append(out, r.Anthropic)
		case bedrockpolicy.BetaRename:
			out = append(out, r.Bedrock)
		}
	}
	return out
}

type bedrockUser struct {
	ID, Key string
}

// admin is a minimal client of the gateway's admin API.
type admin struct {
	t     *testing.T
	base  string
	token string
}

func (a admin) call(method, path string, in any, out any) {
	a.t.Helper()
	var body bytes.Buffer
	if in != nil {
		_ = json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, a.base+path, &body)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var p bytes.Buffer
		_, _ = p.ReadFrom(resp.Body)
		a.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, p.String())
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			a.t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
}

// user creates a user with the given strategy and (optional) Bedrock
// credential, and issues an access key.
func (a admin) user(name, strategy string, cred map[string]string) bedrockUser {
	a.t.Helper()
	var u struct{ ID string }
	a.call("POST", "/api/v1/users", map[string]any{"name": name, "routing_strategy": strategy}, &u)
	if cred != nil {
		a.call("PUT", "/api/v1/users/"+u.ID+"/bedrock", cred, nil)
	}
	var k struct{ Key string }
	a.call("POST", "/api/v1/users/"+u.ID+"/keys", map[string]any{"name": "laptop"}, &k)
	if k.Key == "" {
		a.t.Fatal("issued key has no plaintext key")
	}
	return bedrockUser{ID: u.ID, Key: k.Key}
}

// bedrockGateway is a `ccproxy dev` with fake Bedrocks on Bedrock's real
// host names (TLS with a test CA, names mapped to loopback) and users of
// every kind.
type bedrockGateway struct {
	*gateway
	admin admin
	// fb serves us-east-1 and us-west-2; fbMode serves eu-west-1, where
	// Claude Code's own Bedrock mode is tested.
	fb, fbMode *fakebedrock.Server
	// east: bedrock_only, API key, us-east-1. west: bedrock_only,
	// aws_default_chain, us-west-2. noCred: bedrock_only without a
	// credential. planFirst: plan_first with an API key in eu-west-1.
	east, west, noCred, planFirst bedrockUser
}

// startBedrockGateway starts the gateway with plan as the fake Anthropic
// and routes both fake Bedrocks' requests through sc. configure, when
// given, adjusts the us-east-1/us-west-2 fake's configuration and the
// gateway's before they start.
func startBedrockGateway(t *testing.T, sc *bedrockScenarios, plan *fakeanthropic.Server, configure ...func(*fakebedrock.Config, *devConfig)) *bedrockGateway {
	t.Helper()
	ca := fakebedrock.NewCA(t)
	fbCfg := fakebedrock.Config{
		Hosts:       []string{eastHost, westHost},
		CA:          ca,
		APIKeys:     []string{bedrockAPIKey},
		Credentials: []aws.Credentials{{AccessKeyID: awsAccessKeyID, SecretAccessKey: awsSecretKey}},
		Betas:       bedrockBetas(),
		Handler:     sc.handle,
	}
	var dc devConfig
	for _, c := range configure {
		c(&fbCfg, &dc)
	}
	fb := fakebedrock.New(t, fbCfg)
	// Claude Code's own Bedrock mode is forwarded as Claude Code sent it,
	// anthropic-* headers included (it sends them to Bedrock itself); its
	// user's region has a fake of its own that accepts them.
	fbMode := fakebedrock.New(t, fakebedrock.Config{
		Hosts:                 []string{euHost},
		CA:                    ca,
		APIKeys:               []string{bedrockAPIKey},
		Betas:                 fakebedrock.ClaudeCodeBetas,
		Handler:               sc.handle,
		AllowAnthropicHeaders: true,
	})
	g := startDevWith(t, devConfig{
		AnthropicURL:  plan.URL,
		AdminPassword: adminE2EPassword,
		Env: append([]string{
			// Bedrock's real names, served from loopback: SNI, Host and the
			// certificate are checked against them (default CCPROXY_BEDROCK_URL).
			"CCPROXY_UPSTREAM_CA_FILE=" + ca.File,
			"CCPROXY_DEV_RESOLVE=" + eastHost + ":443=" + fb.Addr() + "," + westHost + ":443=" + fb.Addr() + "," + euHost + ":443=" + fbMode.Addr(),
			// The ambient AWS credential chain of the gateway process.
			"AWS_ACCESS_KEY_ID=" + awsAccessKeyID,
			"AWS_SECRET_ACCESS_KEY=" + awsSecretKey,
			"AWS_EC2_METADATA_DISABLED=true",
		}, dc.Env...),
	})
	bg := &bedrockGateway{gateway: g, fb: fb, fbMode: fbMode}
	bg.admin = admin{t: t, base: "http://" + g.AdminAddr}
	bg.admin.token = adminLogin(t, g.AdminAddr, "admin", adminE2EPassword)
	a := bg.admin
	bg.east = a.user("east", "bedrock_only", map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "us-east-1"})
	bg.west = a.user("west", "bedrock_only", map[string]string{"type": "aws_default_chain", "region": "us-west-2"})
	bg.noCred = a.user("nocred", "bedrock_only", nil)
	bg.planFirst = a.user("planfirst", "plan_first", map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "eu-west-1"})
	// A bedrock_only user in eu-west-1 only to see that region routed.
	euProbe := a.user("euprobe", "bedrock_only", map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "eu-west-1"})
	waitBedrockRoutes(t, g, bg.east.Key, bg.west.Key, euProbe.Key)
	return bg
}

// TestBedrock runs real Claude Code against the gateway for bedrock_only
// users, with a fake Bedrock serving TLS on Bedrock's real host names.
func TestBedrock(t *testing.T) {
	var sc bedrockScenarios
	// Plan must never be called for these users.
	plan := fakeanthropic.New(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		t.Errorf("Plan received %s %s for a Bedrock user", r.Method, r.Path)
		return fakeanthropic.Reply{Status: http.StatusInternalServerError}
	})
	bg := startBedrockGateway(t, &sc, plan)
	g, fb, fbMode := bg.gateway, bg.fb, bg.fbMode
	east, west, noCred, planFirst := bg.east, bg.west, bg.noCred, bg.planFirst

	claude := func(key string) claudecode.Run {
		return claudecode.Run{Bin: binaries.claude, BaseURL: g.Base + "/ak/" + key, APIKey: apiKey, Timeout: 2 * time.Minute}
	}

	t.Run("text answer with an API key", func(t *testing.T) {
		t.Parallel()
		const text = "Bedrock says hello through the gateway."
		u := fakebedrock.Usage{Input: 1234, Output: 56, CacheRead: 7000, CacheWrite5m: 300}
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 5, u)
		})
		res := claude(east.Key).Prompt(t, "Say hello "+marker)
		wantPrinted(t, res, text)
		reqs := fb.Carrying(marker)
		if len(reqs) != 1 {
			t.Fatalf("Bedrock received %d requests for the turn; want 1", len(reqs))
		}
		r := reqs[0]
		checkBedrockRequest(t, r, eastHost, fakebedrock.AuthBearer, bedrockAPIKey)
		if r.RawPath != "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream" {
			t.Errorf("path %q", r.RawPath)
		}
		rows := waitBedrockUsage(t, g, sessionOfRequest(t, g, r.Header.Get("X-Request-Id")), 1)
		want := bedrockUsageRow{Provider: "bedrock", RequestedModel: "claude-opus-5-5", BedrockModel: "us.anthropic.claude-opus-5-5",
			Status: 200, Input: 1234, Output: 56, CacheRead: 7000, CacheWrite5m: 300}
		if rows[0] != want {
			t.Errorf("usage row %+v, want %+v", rows[0], want)
		}
	})

	t.Run("tool use round trip", func(t *testing.T) {
		t.Parallel()
		const text = "The command printed bedrock-tool-7."
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			model := fakebedrock.AnthropicModel(r.ModelID)
			if strings.Contains(string(r.Body), `"tool_result"`) {
				return fakebedrock.Text(model, text, 3, fakebedrock.Usage{Input: 40, Output: 9})
			}
			return fakebedrock.ToolUse(model, "Running it.", "toolu_bdrk_e2e01", "Bash",
				map[string]any{"command": "echo bedrock-tool-7", "description": "print"}, fakebedrock.Usage{Input: 30, Output: 12})
		})
		run := claude(east.Key)
		run.Args = []string{"--allowedTools", "Bash(echo:*)"}
		res := run.Prompt(t, "Run echo for me "+marker)
		wantPrinted(t, res, text)
		reqs := fb.Carrying(marker)
		if len(reqs) != 2 {
			t.Fatalf("Bedrock received %d requests; want 2 (tool_use, then tool_result)", len(reqs))
		}
		if !strings.Contains(string(reqs[1].Body), `"tool_use_id":"toolu_bdrk_e2e01"`) || !strings.Contains(string(reqs[1].Body), "bedrock-tool-7") {
			t.Errorf("the second request does not carry the tool result: %.400s", reqs[1].Body)
		}
		for _, r := range reqs {
			checkBedrockRequest(t, r, eastHost, fakebedrock.AuthBearer, bedrockAPIKey)
		}
	})

	t.Run("SigV4 with the ambient AWS credentials", func(t *testing.T) {
		t.Parallel()
		const text = "Signed and verified."
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 2, fakebedrock.Usage{Input: 10, Output: 4})
		})
		// A dated model: its Bedrock id holds a ':' that travels escaped
		// (%3A) and is signed double-escaped (%253A), as AWS checks.
		run := claude(west.Key)
		run.Args = []string{"--model", "claude-sonnet-4-5"}
		res := run.Prompt(t, "Sign this "+marker)
		wantPrinted(t, res, text)
		reqs := fb.Carrying(marker)
		if len(reqs) != 1 {
			t.Fatalf("Bedrock received %d requests; want 1", len(reqs))
		}
		if reqs[0].RawPath != "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream" {
			t.Errorf("path %q", reqs[0].RawPath)
		}
		checkBedrockRequest(t, reqs[0], westHost, fakebedrock.AuthSigV4, awsAccessKeyID)
		if reqs[0].Auth.Region != "us-west-2" || reqs[0].Auth.Service != "bedrock" {
			t.Errorf("signed for %s/%s; want us-west-2/bedrock", reqs[0].Auth.Region, reqs[0].Auth.Service)
		}
	})

	t.Run("throttled Bedrock is a 429 Claude Code retries", func(t *testing.T) {
		t.Parallel()
		const text = "Answered after a throttle."
		var mu sync.Mutex
		calls := 0
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				return fakebedrock.Throttled()
			}
			return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 2, fakebedrock.Usage{Input: 3, Output: 5})
		})
		res := claude(east.Key).Prompt(t, "Retry me "+marker)
		wantPrinted(t, res, text)
		reqs := fb.Carrying(marker)
		if len(reqs) != 2 || reqs[0].Status != 429 || reqs[1].Status != 200 {
			t.Fatalf("Bedrock saw %d requests (%v); want a throttled one, then a served retry", len(reqs), statuses(reqs))
		}
		// The gateway's own answer to the throttle, to a client that does
		// not retry.
		marker2 := sc.add(func(fakebedrock.Request) fakebedrock.Reply { return fakebedrock.Throttled() })
		status, hdr, body := postJSON(t, g.Base+"/ak/"+east.Key+"/v1/messages",
			`{"model":"claude-opus-5-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"`+marker2+`"}]}`)
		want := `{"type":"error","error":{"type":"rate_limit_error","message":"Too many requests, please wait before trying again."}}`
		if status != 429 || hdr.Get("Content-Type") != "application/json" || string(body) != want {
			t.Errorf("throttled: %d %q %s; want 429 %s", status, hdr.Get("Content-Type"), body, want)
		}
	})

	t.Run("count_tokens through Bedrock CountTokens", func(t *testing.T) {
		t.Parallel()
		marker := sc.add(func(fakebedrock.Request) fakebedrock.Reply { return fakebedrock.CountTokens(321) })
		status, _, body := postJSON(t, g.Base+"/ak/"+east.Key+"/v1/messages/count_tokens",
			`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"count `+marker+`"}]}`)
		if status != 200 || string(body) != `{"input_tokens":321}` {
			t.Fatalf("count_tokens: %d %s", status, body)
		}
		reqs := fb.Carrying(marker)
		if len(reqs) != 1 || reqs[0].RawPath != "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens" {
			t.Fatalf("Bedrock received %v", reqs)
		}
		checkBedrockRequest(t, reqs[0], eastHost, fakebedrock.AuthBearer, bedrockAPIKey)
	})

	t.Run("unknown beta flag and body field are dropped and counted", func(t *testing.T) {
		t.Parallel()
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), "ok", 1, fakebedrock.Usage{Input: 1, Output: 1})
		})
		before := metricValue(t, g, `ccproxy_extproc_bedrock_dropped_total{kind="beta"}`)
		beforeFields := metricValue(t, g, `ccproxy_extproc_bedrock_dropped_total{kind="field"}`)
		req, _ := http.NewRequest(http.MethodPost, g.Base+"/ak/"+east.Key+"/v1/messages",
			strings.NewReader(`{"model":"claude-opus-5-5","max_tokens":8,"future_knob_2099":{"level":3},"messages":[{"role":"user","content":"`+marker+`"}]}`))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("anthropic-beta", "interleaved-thinking-2025-05-14,brand-new-flag-2099-01-01")
		status, _, body := do(t, req)
		if status != 200 {
			t.Fatalf("status %d %s", status, body)
		}
		reqs := fb.Carrying(marker)
		if len(reqs) != 1 {
			t.Fatalf("Bedrock received %d requests", len(reqs))
		}
		if got := strings.Join(reqs[0].Betas(), ","); got != "interleaved-thinking-2025-05-14" {
			t.Errorf("anthropic_beta %q", got)
		}
		if _, ok := reqs[0].JSON()["future_knob_2099"]; ok {
			t.Error("the unknown body field reached Bedrock")
		}
		if d := metricValue(t, g, `ccproxy_extproc_bedrock_dropped_total{kind="beta"}`) - before; d < 1 {
			t.Errorf("dropped betas counter grew by %v", d)
		}
		if d := metricValue(t, g, `ccproxy_extproc_bedrock_dropped_total{kind="field"}`) - beforeFields; d < 1 {
			t.Errorf("dropped fields counter grew by %v", d)
		}
	})

	t.Run("refusals before routing", func(t *testing.T) {
		t.Parallel()
		// The refused requests carry a marker of their own: the other
		// subtests send to Bedrock at the same time, so counting all of
		// Bedrock's requests would count theirs.
		const marker = "refused-before-routing-5d1c"
		tests := []struct {
			name, key, body string
			status          int
			want            string
		}{
			{"unmappable model", east.Key, `{"model":"claude-imaginary-9","max_tokens":8,"messages":[{"role":"user","content":"` + marker + `"}]}`, 400,
				`{"type":"error","error":{"type":"invalid_request_error","message":"ccproxy: model \"claude-imaginary-9\" is not available on Bedrock for region us-east-1; choose another model or ask the gateway administrator to map it"}}`},
			{"no Bedrock credential", noCred.Key, `{"model":"claude-opus-5-5","max_tokens":8,"messages":[{"role":"user","content":"` + marker + `"}]}`, 500,
				`{"type":"error","error":{"type":"api_error","message":"ccproxy: no Bedrock credential is registered for your account; ask the gateway administrator to add one"}}`},
		}
		for _, tc := range tests {
			status, hdr, body := postJSON(t, g.Base+"/ak/"+tc.key+"/v1/messages", tc.body)
			if status != tc.status || string(body) != tc.want || hdr.Get("X-Should-Retry") != "false" {
				t.Errorf("%s: %d %s (x-should-retry %q); want %d %s", tc.name, status, body, hdr.Get("X-Should-Retry"), tc.status, tc.want)
			}
		}
		if n := len(fb.Carrying(marker)); n != 0 {
			t.Errorf("Bedrock received %d requests for refused ones", n)
		}
	})

	t.Run("Claude Code in its own Bedrock mode", func(t *testing.T) {
		t.Parallel()
		const text = "Bedrock mode works through the gateway."
		marker := sc.add(func(r fakebedrock.Request) fakebedrock.Reply {
			return fakebedrock.Text(fakebedrock.AnthropicModel(r.ModelID), text, 4, fakebedrock.Usage{Input: 77, Output: 8})
		})
		run := claudecode.Run{Bin: binaries.claude, Timeout: 2 * time.Minute, Env: []string{
			"CLAUDE_CODE_USE_BEDROCK=1",
			"ANTHROPIC_BEDROCK_BASE_URL=" + g.Base + "/ak/" + planFirst.Key + "/bedrock",
			"CLAUDE_CODE_SKIP_BEDROCK_AUTH=1",
			"AWS_REGION=eu-west-1",
		}}
		res := run.Prompt(t, "Bedrock mode "+marker)
		wantPrinted(t, res, text)
		reqs := fbMode.Carrying(marker)
		if len(reqs) != 1 {
			t.Fatalf("Bedrock received %d requests; want 1", len(reqs))
		}
		r := reqs[0]
		checkBedrockRequest(t, r, euHost, fakebedrock.AuthBearer, bedrockAPIKey)
		if r.Op != fakebedrock.OpInvokeStream {
			t.Errorf("operation %q", r.Op)
		}
		rows := waitBedrockUsage(t, g, sessionOfRequest(t, g, r.Header.Get("X-Request-Id")), 1)
		if rows[0].Provider != "bedrock" || rows[0].Input != 77 || rows[0].Output != 8 || rows[0].BedrockModel != r.ModelID {
			t.Errorf("usage row %+v", rows[0])
		}
	})
}

// checkBedrockRequest asserts what every request reaching Bedrock must
// satisfy; the fake itself fails the test for the body rules, content-length,
// SNI/Host, and client credentials or anthropic-* headers leaking.
func checkBedrockRequest(t *testing.T, r fakebedrock.Request, host, authMode, key string) {
	t.Helper()
	if r.Host != host || r.SNI != host {
		t.Errorf("%s: Host %q SNI %q; want %q", r, r.Host, r.SNI, host)
	}
	if !r.Auth.OK || r.Auth.Mode != authMode || r.Auth.Key != key {
		t.Errorf("%s: auth %+v; want %s with %s", r, r.Auth, authMode, key)
	}
	if r.Header.Get("X-Api-Key") != "" {
		t.Errorf("%s: x-api-key reached Bedrock", r)
	}
	if len(r.Problems) != 0 {
		t.Errorf("%s: %v", r, r.Problems)
	}
}

func statuses(reqs []fakebedrock.Request) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, r.Status)
	}
	return out
}

func postJSON(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", apiKey)
	return do(t, req)
}

// waitBedrockRoutes waits until the control plane has pushed the users'
// regions to envoysim and extproc (clusters and runtime configuration
// follow a database notification).
func waitBedrockRoutes(t *testing.T, g *gateway, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, key := range keys {
		for {
			// An unknown model is refused by the router only once the
			// runtime configuration holds the region; before, it is a 503.
			status, _, body := postJSON(t, g.Base+"/ak/"+key+"/v1/messages", `{"model":"claude-not-a-model","max_tokens":1,"messages":[]}`)
			if status == 400 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Bedrock routes not ready after 30s: %d %s", status, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// metricValue reads one sample from the gateway's /metrics (0 if absent).
func metricValue(t *testing.T, g *gateway, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}

type bedrockUsageRow struct {
	Provider, RequestedModel, BedrockModel string
	Status                                 int
	Input, Output, CacheRead, CacheWrite5m int64
}

// waitBedrockUsage returns the usage rows of one Claude Code session (each
// run has its own), once there are want of them.
// sessionOfRequest returns the Claude Code session of the usage row of
// requestID (Envoy's x-request-id, which Bedrock receives), once it is
// stored. Bedrock itself never sees the session header: the gateway sends it
// only the headers it vouches for.
func sessionOfRequest(t *testing.T, g *gateway, requestID string) string {
	t.Helper()
	if requestID == "" {
		t.Fatal("Bedrock received no x-request-id")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var session string
		err := g.DB.QueryRow(context.Background(), `SELECT coalesce(session_id, '') FROM usage_events WHERE request_id = $1`, requestID).Scan(&session)
		if err == nil {
			return session
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usage row for request %s: %v", requestID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitBedrockUsage(t *testing.T, g *gateway, session string, want int) []bedrockUsageRow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, err := g.DB.Query(context.Background(), `
			SELECT provider, requested_model, coalesce(bedrock_model_id, ''), status, input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens
			FROM usage_events WHERE session_id = $1 AND kind = 'messages' ORDER BY event_time`, session)
		if err != nil {
			t.Fatal(err)
		}
		var out []bedrockUsageRow
		for rows.Next() {
			var r bedrockUsageRow
			if err := rows.Scan(&r.Provider, &r.RequestedModel, &r.BedrockModel, &r.Status, &r.Input, &r.Output, &r.CacheRead, &r.CacheWrite5m); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		rows.Close()
		if len(out) >= want || time.Now().After(deadline) {
			if len(out) != want {
				t.Fatalf("usage_events has %d rows for session %q, want %d: %+v", len(out), session, want, out)
			}
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}
