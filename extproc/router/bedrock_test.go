package router

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/translate/bedrock"
	"github.com/ccproxy/ccproxy/extproc/translate/eventstream"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/usage"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

var fiveDollars = decimal.RequireFromString("5")

// checker is a CredentialChecker with a fixed answer.
type checker struct{ err error }

func (c checker) Check(context.Context, bedrockauth.Credential) error { return c.err }

type bedrockHarness struct {
	r        *Router
	metrics  *Metrics
	requests *handoff.Store
	sink     *usage.Recorder
	keys     map[string]string // name → access key
	cred     *accesskey.BedrockCredential
}

func testRuntime(t testing.TB) *runtimeconfig.Config {
	t.Helper()
	cfg, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{
			{AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5",
				RegionModelIds: map[string]string{"": "global.anthropic.claude-opus-5-5", "us-east-1": "us.anthropic.claude-opus-5-5"}},
			{AnthropicModelId: "claude-sonnet-4-5-20250929", Aliases: []string{"claude-sonnet-4-5"}, Family: "sonnet",
				BedrockModelId: "anthropic.claude-sonnet-4-5-20250929-v1:0",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}},
		},
		Regions: []string{"us-east-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newBedrockHarness(t testing.TB, runtime *runtimeconfig.Config, checkErr error) *bedrockHarness {
	t.Helper()
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	h := &bedrockHarness{requests: handoff.NewStore(), sink: &usage.Recorder{}, keys: map[string]string{}}
	h.cred = &accesskey.BedrockCredential{ID: uuid.New(), Kind: "api_key", Region: "us-east-1", SecretCiphertext: []byte("sealed")}
	store := accesskey.MemoryStore{}
	for name, rec := range map[string]accesskey.KeyRecord{
		"bedrock":            {RoutingStrategy: accesskey.RoutingBedrockOnly, Credential: h.cred},
		"bedrock-budget":     {RoutingStrategy: accesskey.RoutingBedrockOnly, Credential: h.cred, MonthlyBudgetUSD: &fiveDollars},
		"bedrock-no-cred":    {RoutingStrategy: accesskey.RoutingBedrockOnly},
		"plan-first":         {RoutingStrategy: accesskey.RoutingPlanFirst, Credential: h.cred},
		"plan-only":          {RoutingStrategy: accesskey.RoutingPlanOnly, Credential: h.cred},
		"plan-first-no-cred": {RoutingStrategy: accesskey.RoutingPlanFirst},
		"plan-first-budget":  {RoutingStrategy: accesskey.RoutingPlanFirst, Credential: h.cred, MonthlyBudgetUSD: &fiveDollars},
		"bedrock-budgets":    {RoutingStrategy: accesskey.RoutingBedrockOnly, Credential: h.cred, Budgets: testBudgets},
		"plan-first-budgets": {RoutingStrategy: accesskey.RoutingPlanFirst, Credential: h.cred, Budgets: testBudgets},
		"plan-first-limited": {RoutingStrategy: accesskey.RoutingPlanFirst, Credential: h.cred,
			RateLimits: []accesskey.RateLimit{{Scope: accesskey.ScopeUser, ID: uuid.New(), RequestsPerMinute: 5}}},
		// A team that allows Sonnet only (teams_test.go).
		"team-sonnet": {RoutingStrategy: accesskey.RoutingPlanFirst, Credential: h.cred, TeamID: &teamID, TeamName: "Platform",
			AllowedModels: []string{"claude-sonnet-4-5"}},
	} {
		key, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		rec.KeyID, rec.UserID = uuid.New(), uuid.New()
		store.Add(hasher, key, rec)
		h.keys[name] = key
	}
	h.metrics, err = NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h.r, err = New(Config{
		Keys:    accesskey.NewStoreResolver(store, hasher, nil),
		Usage:   h.sink,
		Metrics: h.metrics,
		Bedrock: &BedrockConfig{Runtime: runtimeconfig.StaticSource{Config: runtime}, Credentials: checker{checkErr}, Requests: h.requests},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func reqHeaders(method, path string, extra ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte(method)},
		{Key: ":path", RawValue: []byte(path)},
		{Key: "x-request-id", RawValue: []byte("rid-1")},
	}}
	for i := 0; i < len(extra); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: extra[i], RawValue: []byte(extra[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

func reqBody(b []byte) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: true}}}
}

func respHeaders(status string, kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte(status)}}}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

func respBody(b []byte, end bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: end}}}
}

func mustProcess(t *testing.T, p *Processor, m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	resp, err := p.Process(context.Background(), m)
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	return resp
}

func setHeaders(hm *extprocv3.HeaderMutation) map[string]string {
	out := map[string]string{}
	for _, h := range hm.GetSetHeaders() {
		out[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	return out
}

// TestBedrockOnlyStreamingTurn drives the Claude Code capture through the
// processor for a bedrock_only user: the routing decision, the stored
// translation, and the real Bedrock event stream converted to SSE in random
// chunks, with its usage metered.
func TestBedrockOnlyStreamingTurn(t *testing.T) {
	rt := testRuntime(t)
	h := newBedrockHarness(t, rt, nil)
	body, err := os.ReadFile(captures + "anthropic-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	beta := "claude-code-20250219,interleaved-thinking-2025-05-14,brand-new-flag-2099-01-01"
	p := h.r.NewProcessor()
	mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock"]+"/v1/messages?beta=true",
		"x-api-key", "sk-client", "anthropic-version", "2023-06-01", "anthropic-beta", beta, dataplane.StateHeader, "forged"))
	resp := mustProcess(t, p, reqBody(body))
	common := resp.GetRequestBody().GetResponse()
	set := setHeaders(common.GetHeaderMutation())
	if set[dataplane.RouteHeader] != "bedrock-us-east-1" || !common.GetClearRouteCache() {
		t.Fatalf("route = %q clear=%v, want bedrock-us-east-1 with clear_route_cache", set[dataplane.RouteHeader], common.GetClearRouteCache())
	}
	id := set[dataplane.StateHeader]
	stored := h.requests.Get(id)
	if stored == nil {
		t.Fatalf("no handoff stored under %q", id)
	}
	want, err := rt.Translator.TranslateRequest(body, beta, true, "us.anthropic.claude-opus-5-5")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Path != "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream" || string(stored.Body) != string(want.Body) || !stored.ReplaceBody {
		t.Fatalf("stored request path %q replace=%v body equal=%v", stored.Path, stored.ReplaceBody, string(stored.Body) == string(want.Body))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(stored.Body, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["model"]; ok || strings.Contains(string(top["anthropic_beta"]), "brand-new-flag") || top["stream"] != nil {
		t.Fatalf("translated body kept model, stream or an unknown beta flag: %s", top["anthropic_beta"])
	}
	if got := strings.Join(stored.RemoveHeaders, ","); got != "x-api-key,anthropic-version,anthropic-beta" {
		t.Fatalf("removed headers %q", got)
	}
	if stored.Credential.ID != h.cred.ID || stored.Credential.Region != "us-east-1" {
		t.Fatalf("credential %+v", stored.Credential)
	}
	if n := testutil.ToFloat64(h.metrics.bedrockDroppedBetas); n != 2 {
		t.Fatalf("dropped betas counted %v, want 2 (claude-code, brand-new-flag)", n)
	}

	resp = mustProcess(t, p, respHeaders("200", "content-type", "application/vnd.amazon.eventstream", "content-length", "2999"))
	hm := resp.GetResponseHeaders().GetResponse().GetHeaderMutation()
	if setHeaders(hm)["content-type"] != "text/event-stream; charset=utf-8" || resp.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" {
		t.Fatalf("response headers reply %v", resp)
	}
	capture, err := os.ReadFile("../../testdata/bedrock-invoke-stream-capture.bin")
	if err != nil {
		t.Fatal(err)
	}
	wantSSE, err := eventstream.NewConverter().Write(nil, capture)
	if err != nil {
		t.Fatal(err)
	}
	var gotSSE []byte
	for off, step := 0, 1; off < len(capture); off, step = off+step, step*3%97+1 {
		end := min(off+step, len(capture))
		resp := mustProcess(t, p, respBody(capture[off:end], end == len(capture)))
		switch m := resp.GetResponseBody().GetResponse().GetBodyMutation().GetMutation().(type) {
		case *extprocv3.BodyMutation_Body:
			gotSSE = append(gotSSE, m.Body...)
		case *extprocv3.BodyMutation_ClearBody:
		default:
			t.Fatalf("chunk at %d: no body mutation", off)
		}
	}
	if string(gotSSE) != string(wantSSE) {
		t.Fatalf("SSE differs:\n got %q\nwant %q", gotSSE, wantSSE)
	}
	p.Close(context.Background())
	if h.requests.Get(id) != nil {
		t.Fatal("handoff entry outlived the stream")
	}
	evs := h.sink.Events()
	if len(evs) != 1 {
		t.Fatalf("%d usage events", len(evs))
	}
	ev := evs[0]
	if ev.Provider != usage.ProviderBedrock || ev.Route != "bedrock-us-east-1" || ev.Model != "claude-opus-5-5" ||
		ev.BackendModel != "us.anthropic.claude-opus-5-5" || ev.Usage.InputTokens != 10 || ev.Usage.OutputTokens != 15 || ev.Aborted || ev.Status != 200 {
		t.Fatalf("usage event %+v", ev)
	}
}

func TestBedrockRefusals(t *testing.T) {
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	tests := []struct {
		name       string
		runtime    bool
		checkErr   error
		key        string
		body       []byte
		wantStatus int
		wantType   string
		wantInMsg  string
		wantNoRety bool
		reason     string
	}{
		{"no credential", true, nil, "bedrock-no-cred", body, 500, "api_error", "no Bedrock credential", true, refuseNoCredential},
		{"credential does not decrypt", true, bedrockauth.ErrDecrypt, "bedrock", body, 500, "api_error", "Bedrock credential", true, refuseCredential},
		{"unmappable model", true, nil, "bedrock", []byte(`{"model":"claude-unknown-9","messages":[]}`), 400, "invalid_request_error", `"claude-unknown-9"`, true, refuseModel},
		{"model without a profile for the region", true, nil, "bedrock", []byte(`{"model":"gpt-4","messages":[]}`), 400, "invalid_request_error", `"gpt-4"`, true, refuseModel},
		{"body not JSON", true, nil, "bedrock", []byte(`{"model":"claude-opus-5-5","messages":[}`), 400, "invalid_request_error", "not a valid JSON object", true, refuseBody},
		{"no runtime configuration yet", false, nil, "bedrock", body, 503, "api_error", "not received its Bedrock configuration", false, refuseNoRuntime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rt *runtimeconfig.Config
			if tc.runtime {
				rt = testRuntime(t)
			}
			h := newBedrockHarness(t, rt, tc.checkErr)
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+"/v1/messages"))
			ir := mustProcess(t, p, reqBody(tc.body)).GetImmediateResponse()
			if ir == nil {
				t.Fatal("want an ImmediateResponse")
			}
			var e struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(ir.GetBody(), &e); err != nil {
				t.Fatal(err)
			}
			hs := setHeaders(ir.GetHeaders())
			if int(ir.GetStatus().GetCode()) != tc.wantStatus || e.Error.Type != tc.wantType || !strings.Contains(e.Error.Message, tc.wantInMsg) ||
				(hs["x-should-retry"] == "false") != tc.wantNoRety {
				t.Fatalf("got %d %s %q headers %v", ir.GetStatus().GetCode(), e.Error.Type, e.Error.Message, hs)
			}
			if n := testutil.ToFloat64(h.metrics.bedrockRefusals.WithLabelValues(tc.reason)); n != 1 {
				t.Fatalf("refusals{reason=%q} = %v, want 1", tc.reason, n)
			}
			p.Close(context.Background())
			if n := h.requests.Len(); n != 0 || len(h.sink.Events()) != 0 {
				t.Fatalf("refused request left %d handoffs, %d usage events", n, len(h.sink.Events()))
			}
		})
	}
}

// TestBedrockErrorMapping: Bedrock HTTP errors reach Claude Code as
// Anthropic errors; a rejected gateway credential is a 500, never a 401.
func TestBedrockErrorMapping(t *testing.T) {
	tests := []struct {
		name, status, errType, body string
		wantStatus                  string
		wantType                    string
		credentialRejected          float64
	}{
		{"throttled", "429", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", `{"message":"Too many requests, please wait before trying again."}`, "429", "rate_limit_error", 0},
		{"validation", "400", "ValidationException", `{"message":"messages: field required"}`, "400", "invalid_request_error", 0},
		{"unavailable", "503", "ServiceUnavailableException", `{"message":"busy"}`, "529", "overloaded_error", 0},
		{"gateway key refused", "403", "UnrecognizedClientException", `{"message":"The security token included in the request is invalid."}`, "500", "api_error", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock"]+"/v1/messages"))
			mustProcess(t, p, reqBody([]byte(`{"model":"claude-opus-5-5","max_tokens":5,"messages":[],"stream":true}`)))
			resp := mustProcess(t, p, respHeaders(tc.status, "content-type", "application/json", "x-amzn-errortype", tc.errType))
			if resp.GetModeOverride() != nil {
				t.Fatal("error response switched to STREAMED")
			}
			common := mustProcess(t, p, respBody([]byte(tc.body), true)).GetResponseBody().GetResponse()
			hs := setHeaders(common.GetHeaderMutation())
			var e struct {
				Type  string
				Error struct{ Type, Message string }
			}
			out := common.GetBodyMutation().GetBody()
			if err := json.Unmarshal(out, &e); err != nil {
				t.Fatal(err)
			}
			if hs[":status"] != tc.wantStatus || e.Type != "error" || e.Error.Type != tc.wantType || hs["content-length"] != itoa(len(out)) {
				t.Fatalf("mapped to %v %s", hs, out)
			}
			if got := testutil.ToFloat64(h.metrics.bedrockCredentialRejected); got != tc.credentialRejected {
				t.Fatalf("credential rejections counted %v, want %v", got, tc.credentialRejected)
			}
			p.Close(context.Background())
			ev := h.sink.Events()[0]
			if ev.Status != mustAtoi(tc.wantStatus) {
				t.Fatalf("usage status %d", ev.Status)
			}
			// The usage event names the refused credential, for the
			// admin's credential.refused notification.
			wantCred := uuid.Nil
			if tc.credentialRejected == 1 {
				wantCred = h.cred.ID
			}
			if ev.RejectedCredentialID != wantCred {
				t.Fatalf("usage event's rejected credential %s, want %s", ev.RejectedCredentialID, wantCred)
			}
		})
	}
}

func TestBedrockCountTokens(t *testing.T) {
	h := newBedrockHarness(t, testRuntime(t), nil)
	p := h.r.NewProcessor()
	mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock"]+"/v1/messages/count_tokens", "anthropic-beta", "token-counting-2024-11-01"))
	resp := mustProcess(t, p, reqBody([]byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`)))
	stored := h.requests.Get(setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())[dataplane.StateHeader])
	if stored == nil || stored.Path != "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens" {
		t.Fatalf("stored %+v", stored)
	}
	var wrapped struct {
		Input struct {
			InvokeModel struct{ Body string } `json:"invokeModel"`
		}
	}
	if err := json.Unmarshal(stored.Body, &wrapped); err != nil {
		t.Fatal(err)
	}
	inner, err := base64.StdEncoding.DecodeString(wrapped.Input.InvokeModel.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"messages":[{"role":"user","content":"hi"}],"anthropic_version":"` + bedrock.AnthropicVersion + `","max_tokens":1}`; string(inner) != want {
		t.Fatalf("invoke body %s\nwant %s", inner, want)
	}
	mustProcess(t, p, respHeaders("200", "content-type", "application/json"))
	common := mustProcess(t, p, respBody([]byte(`{"inputTokens":42}`), true)).GetResponseBody().GetResponse()
	if got := string(common.GetBodyMutation().GetBody()); got != `{"input_tokens":42}` {
		t.Fatalf("answer %s", got)
	}
	p.Close(context.Background())
	if ev := h.sink.Events()[0]; ev.PathKind != usage.PathCountTokens || ev.CountedInputTokens != 42 || ev.Provider != usage.ProviderBedrock {
		t.Fatalf("usage %+v", ev)
	}
}

// TestBedrockMode: Claude Code's own Bedrock mode is forwarded as sent, with
// the event stream passed through byte for byte and metered.
func TestBedrockMode(t *testing.T) {
	h := newBedrockHarness(t, testRuntime(t), nil)
	body, err := os.ReadFile(captures + "bedrock-mode-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	path := "/bedrock/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream"
	p := h.r.NewProcessor()
	mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first"]+path, "anthropic-beta", "claude-code-20250219"))
	resp := mustProcess(t, p, reqBody(body))
	set := setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())
	stored := h.requests.Get(set[dataplane.StateHeader])
	if set[dataplane.RouteHeader] != "bedrock-us-east-1" || stored == nil || stored.ReplaceBody || string(stored.Body) != string(body) ||
		stored.Path != "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream" || len(stored.RemoveHeaders) != 0 {
		t.Fatalf("route %q stored %+v", set[dataplane.RouteHeader], stored)
	}
	resp = mustProcess(t, p, respHeaders("200", "content-type", "application/vnd.amazon.eventstream"))
	if resp.GetResponseHeaders().GetResponse().GetHeaderMutation() != nil || resp.GetModeOverride() == nil {
		t.Fatalf("pass-through response headers reply %v", resp)
	}
	capture, err := os.ReadFile("../../testdata/bedrock-invoke-stream-capture.bin")
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(capture); off += 500 {
		end := min(off+500, len(capture))
		if bm := mustProcess(t, p, respBody(capture[off:end], end == len(capture))).GetResponseBody().GetResponse().GetBodyMutation(); bm != nil {
			t.Fatalf("pass-through chunk mutated: %v", bm)
		}
	}
	p.Close(context.Background())
	ev := h.sink.Events()[0]
	if ev.Model != "claude-opus-5-5" || ev.BackendModel != "us.anthropic.claude-opus-5-5" || ev.Usage.InputTokens != 10 || ev.Usage.OutputTokens != 15 || ev.Provider != usage.ProviderBedrock {
		t.Fatalf("usage %+v", ev)
	}

	t.Run("plan_only refused in Bedrock's format", func(t *testing.T) {
		p := h.r.NewProcessor()
		ir := mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-only"]+path)).GetImmediateResponse()
		if ir.GetStatus().GetCode() != 403 || setHeaders(ir.GetHeaders())["x-amzn-errortype"] != "AccessDeniedException" || !strings.Contains(string(ir.GetBody()), `"message":"ccproxy: your account is plan_only`) {
			t.Fatalf("got %v", ir)
		}
	})
	t.Run("unknown key refused in Bedrock's format", func(t *testing.T) {
		ir := mustProcess(t, h.r.NewProcessor(), reqHeaders("POST", "/ak/ak_bogus"+path)).GetImmediateResponse()
		if ir.GetStatus().GetCode() != 403 || setHeaders(ir.GetHeaders())["x-amzn-errortype"] != "AccessDeniedException" {
			t.Fatalf("got %v", ir)
		}
	})
	t.Run("inference profiles listed from the mappings", func(t *testing.T) {
		ir := mustProcess(t, h.r.NewProcessor(), reqHeaders("GET", "/ak/"+h.keys["plan-first"]+"/bedrock/inference-profiles?type=SYSTEM_DEFINED")).GetImmediateResponse()
		var out struct {
			InferenceProfileSummaries []struct {
				InferenceProfileID string `json:"inferenceProfileId"`
				Status, Type       string
			} `json:"inferenceProfileSummaries"`
		}
		if err := json.Unmarshal(ir.GetBody(), &out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range out.InferenceProfileSummaries {
			ids = append(ids, s.InferenceProfileID)
		}
		if ir.GetStatus().GetCode() != 200 || strings.Join(ids, ",") != "us.anthropic.claude-opus-5-5,us.anthropic.claude-sonnet-4-5-20250929-v1:0" {
			t.Fatalf("got %d %s", ir.GetStatus().GetCode(), ir.GetBody())
		}
	})
	t.Run("other Bedrock paths are 404", func(t *testing.T) {
		ir := mustProcess(t, h.r.NewProcessor(), reqHeaders("GET", "/ak/"+h.keys["plan-first"]+"/bedrock/foundation-models")).GetImmediateResponse()
		if ir.GetStatus().GetCode() != 404 || setHeaders(ir.GetHeaders())["x-amzn-errortype"] != "ResourceNotFoundException" {
			t.Fatalf("got %v", ir)
		}
	})
}

func TestBedrockPathParse(t *testing.T) {
	tests := []struct {
		in   string
		want bedrockPath
		ok   bool
	}{
		{"/bedrock/model/us.anthropic.claude-opus-5-5/invoke", bedrockPath{"/model/us.anthropic.claude-opus-5-5/invoke", "us.anthropic.claude-opus-5-5", "invoke"}, true},
		// The query is dropped; the path is rebuilt in the AWS SDK's escaping.
		{"/bedrock/model/anthropic.claude-3%3A0/count-tokens?x=1", bedrockPath{"/model/anthropic.claude-3%3A0/count-tokens", "anthropic.claude-3:0", "count-tokens"}, true},
		{"/bedrock/model/anthropic.claude-3:0/invoke", bedrockPath{"/model/anthropic.claude-3%3A0/invoke", "anthropic.claude-3:0", "invoke"}, true},
		{"/bedrock/model/%61nthropic.x/invoke", bedrockPath{"/model/anthropic.x/invoke", "anthropic.x", "invoke"}, true},
		// ARNs, a '/' or dot segments smuggled in escaped: refused.
		{"/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fabc/invoke", bedrockPath{}, false},
		{"/bedrock/model/..%2F..%2Fguardrail%2Fx/invoke", bedrockPath{}, false},
		{"/bedrock/model/../invoke", bedrockPath{}, false},
		{"/bedrock/model/.hidden/invoke", bedrockPath{}, false},
		{"/bedrock/model/a%00b/invoke", bedrockPath{}, false},
		{"/bedrock/model/a%20b/invoke", bedrockPath{}, false},
		{"/bedrock/model/" + strings.Repeat("a", 129) + "/invoke", bedrockPath{}, false},
		{"/bedrock/model/a/converse", bedrockPath{}, false},
		{"/bedrock/model//invoke", bedrockPath{}, false},
		{"/bedrock/model/a/b/invoke", bedrockPath{}, false},
		{"/bedrock/model/%zz/invoke", bedrockPath{}, false},
	}
	for _, tc := range tests {
		got, ok := parseBedrockPath([]byte(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseBedrockPath(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func mustAtoi(s string) int {
	var n int
	if err := json.Unmarshal([]byte(s), &n); err != nil {
		panic(errors.New("bad int " + s))
	}
	return n
}

// BenchmarkProcessorBedrock is the router processor's own cost for one
// bedrock_only request: Claude Code's 48 KB body translated for Bedrock and
// the real event-stream capture converted to SSE in 4 chunks (gRPC and the
// upstream processor's signing excluded; see extproc-bench for the whole
// server).
func BenchmarkProcessorBedrock(b *testing.B) {
	h := newBedrockHarness(b, testRuntime(b), nil)
	h.r.sink = usage.Discard{}
	body, err := os.ReadFile(captures + "anthropic-turn1.body.json")
	if err != nil {
		b.Fatal(err)
	}
	capture, err := os.ReadFile("../../testdata/bedrock-invoke-stream-capture.bin")
	if err != nil {
		b.Fatal(err)
	}
	msgs := []*extprocv3.ProcessingRequest{
		reqHeaders("POST", "/ak/"+h.keys["bedrock"]+"/v1/messages?beta=true", "x-api-key", "sk-client",
			"anthropic-version", "2023-06-01", "anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14,effort-2025-11-24"),
		reqBody(body),
		respHeaders("200", "content-type", "application/vnd.amazon.eventstream"),
	}
	size := (len(capture) + 3) / 4
	for off := 0; off < len(capture); off += size {
		end := min(off+size, len(capture))
		msgs = append(msgs, respBody(capture[off:end], end == len(capture)))
	}
	ctx := context.Background()
	b.SetBytes(int64(len(body) + len(capture)))
	b.ReportAllocs()
	for b.Loop() {
		p := h.r.NewProcessor()
		for _, m := range msgs {
			if _, err := p.Process(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
		p.Close(ctx)
	}
}

// TestBedrockCountTokensUnsupported: when Bedrock cannot count tokens for a
// model the client gets Bedrock's reason as an Anthropic 400, never a
// made-up count.
func TestBedrockCountTokensUnsupported(t *testing.T) {
	h := newBedrockHarness(t, testRuntime(t), nil)
	p := h.r.NewProcessor()
	mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock"]+"/v1/messages/count_tokens"))
	mustProcess(t, p, reqBody([]byte(`{"model":"claude-opus-5-5","messages":[{"role":"user","content":"hi"}]}`)))
	mustProcess(t, p, respHeaders("400", "content-type", "application/json", "x-amzn-errortype", "ValidationException"))
	common := mustProcess(t, p, respBody([]byte(`{"message":"The provided model doesn't support counting tokens."}`), true)).GetResponseBody().GetResponse()
	want := `{"type":"error","error":{"type":"invalid_request_error","message":"The provided model doesn't support counting tokens."}}`
	if got := string(common.GetBodyMutation().GetBody()); got != want || setHeaders(common.GetHeaderMutation())[":status"] != "400" {
		t.Fatalf("got %s %v; want 400 %s", got, setHeaders(common.GetHeaderMutation()), want)
	}
	p.Close(context.Background())
	if ev := h.sink.Events()[0]; ev.CountedInputTokens != 0 || ev.Status != 400 {
		t.Fatalf("usage %+v", ev)
	}
}

// fakeBudgets answers every check with st or err and counts the calls.
type fakeBudgets struct {
	st    budget.Status
	err   error
	calls int
	// verdict answers CheckBudgets.
	verdict budget.Verdict
}

func (f *fakeBudgets) CheckBudgets(context.Context, []accesskey.Budget) budget.Verdict {
	return f.verdict
}

func (f *fakeBudgets) Check(_ context.Context, _ uuid.UUID, b decimal.Decimal) (budget.Status, error) {
	f.calls++
	st := f.st
	st.Budget = b
	return st, f.err
}

func TestBedrockBudget(t *testing.T) {
	now := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	reset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	tests := []struct {
		name       string
		budgets    fakeBudgets
		noBudget   bool
		path       string
		wantStatus int
		wantBody   string
		wantHeader map[string]string
		unchecked  float64
	}{
		{name: "under budget is served", budgets: fakeBudgets{st: budget.Status{Spent: decimal.RequireFromString("4.99"), ResetAt: reset}}},
		{name: "over budget: 429 that Claude Code does not retry",
			budgets:    fakeBudgets{st: budget.Status{Spent: decimal.RequireFromString("5.004"), Over: true, ResetAt: reset}},
			wantStatus: 429,
			wantBody:   `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: your monthly Bedrock budget of $5.00 is used up ($5.00 spent); it resets at 2026-12-01T00:00:00Z"}}`,
			wantHeader: map[string]string{"retry-after": "3600", "x-should-retry": "false", "content-type": "application/json"}},
		{name: "over budget in Bedrock mode: Bedrock's format",
			budgets:    fakeBudgets{st: budget.Status{Spent: decimal.RequireFromString("7"), Over: true, ResetAt: reset}},
			path:       "/bedrock/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream",
			wantStatus: 429,
			wantBody:   `{"message":"ccproxy: your monthly Bedrock budget of $5.00 is used up ($7.00 spent); it resets at 2026-12-01T00:00:00Z"}`,
			wantHeader: map[string]string{"retry-after": "3600", "x-amzn-errortype": "ServiceQuotaExceededException"}},
		{name: "spend unknown: fail open, counted", budgets: fakeBudgets{err: errors.New("redis and keyservice down")}, unchecked: 1},
		{name: "no budget: not checked", noBudget: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			h.r.now = func() time.Time { return now }
			h.r.bedrock.Budgets = &tc.budgets
			key := h.keys["bedrock-budget"]
			if tc.noBudget {
				key = h.keys["bedrock"]
			}
			path := "/v1/messages"
			if tc.path != "" {
				path = tc.path
			}
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+key+path))
			resp := mustProcess(t, p, reqBody(body))
			ir := resp.GetImmediateResponse()
			if tc.wantStatus == 0 {
				if ir != nil {
					t.Fatalf("refused: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
				}
			} else {
				if ir == nil || int(ir.GetStatus().GetCode()) != tc.wantStatus || string(ir.GetBody()) != tc.wantBody {
					t.Fatalf("got %v, want %d %s", ir, tc.wantStatus, tc.wantBody)
				}
				hs := setHeaders(ir.GetHeaders())
				for k, v := range tc.wantHeader {
					if hs[k] != v {
						t.Errorf("header %s = %q, want %q", k, hs[k], v)
					}
				}
			}
			wantCalls := 1
			if tc.noBudget {
				wantCalls = 0 // a user without a budget is never checked
			}
			if tc.budgets.calls != wantCalls {
				t.Fatalf("checked %d times, want %d", tc.budgets.calls, wantCalls)
			}
			if got := testutil.ToFloat64(h.metrics.budgetUnchecked); got != tc.unchecked {
				t.Fatalf("unchecked = %v, want %v", got, tc.unchecked)
			}
		})
	}
}

// TestBedrockModeHardening: Claude Code's Bedrock mode reaches Bedrock with
// the company's credential, so only mapped models are served, the path is
// strict, the query never reaches Bedrock, and every answer is metered or
// refused — never free.
func TestBedrockModeHardening(t *testing.T) {
	body := []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)
	tests := []struct {
		name       string
		path       string
		respKV     []string // response headers after :status 200; nil: the request is refused
		respBody   string
		wantCode   int    // refusal status
		wantType   string // refusal x-amzn-errortype
		wantPath   string // the path stored for Bedrock
		wantStatus int    // usage status
		wantIn     int64
		wantOut    int64
	}{
		{name: "another vendor's model is refused", path: "/bedrock/model/meta.llama3-70b-instruct-v1:0/invoke",
			wantCode: 400, wantType: "ValidationException"},
		{name: "a provisioned-model ARN is not a Bedrock-mode path", path: "/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fabc/invoke",
			wantCode: 404, wantType: "ResourceNotFoundException"},
		{name: "an escaped path traversal is not a Bedrock-mode path", path: "/bedrock/model/..%2F..%2Fguardrail%2Fx/invoke",
			wantCode: 404, wantType: "ResourceNotFoundException"},
		{name: "the query never reaches Bedrock; usage from the body", path: "/bedrock/model/us.anthropic.claude-opus-5-5/invoke?trace=ENABLED",
			respKV:   []string{"content-type", "application/json", "x-amzn-bedrock-input-token-count", "99", "x-amzn-bedrock-output-token-count", "98"},
			respBody: `{"type":"message","usage":{"input_tokens":5,"output_tokens":6}}`,
			wantPath: "/model/us.anthropic.claude-opus-5-5/invoke", wantStatus: 200, wantIn: 5, wantOut: 6},
		{name: "a body without usage is metered from Bedrock's token-count headers", path: "/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
			respKV:   []string{"content-type", "application/json", "x-amzn-bedrock-input-token-count", "12", "x-amzn-bedrock-output-token-count", "34"},
			respBody: `{"completion":"not Anthropic's shape"}`,
			wantPath: "/model/us.anthropic.claude-opus-5-5/invoke", wantStatus: 200, wantIn: 12, wantOut: 34},
		{name: "an answer that cannot be metered is refused", path: "/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
			respKV:   []string{"content-type", "text/html"},
			wantPath: "/model/us.anthropic.claude-opus-5-5/invoke", wantStatus: 502},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			p := h.r.NewProcessor()
			resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock"]+tc.path))
			if ir := resp.GetImmediateResponse(); ir == nil {
				resp = mustProcess(t, p, reqBody(body))
			}
			if tc.respKV == nil {
				ir := resp.GetImmediateResponse()
				if int(ir.GetStatus().GetCode()) != tc.wantCode || setHeaders(ir.GetHeaders())["x-amzn-errortype"] != tc.wantType {
					t.Fatalf("got %v", resp)
				}
				p.Close(context.Background())
				if h.requests.Len() != 0 || len(h.sink.Events()) != 0 {
					t.Fatal("a refused request was stored or metered")
				}
				return
			}
			set := setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())
			stored := h.requests.Get(set[dataplane.StateHeader])
			if stored == nil || stored.Path != tc.wantPath {
				t.Fatalf("stored %+v, want path %q", stored, tc.wantPath)
			}
			resp = mustProcess(t, p, respHeaders("200", tc.respKV...))
			if tc.wantStatus != 200 {
				ir := resp.GetImmediateResponse()
				if int(ir.GetStatus().GetCode()) != tc.wantStatus || setHeaders(ir.GetHeaders())["x-amzn-errortype"] != "InternalServerException" {
					t.Fatalf("unmeterable answer passed: %v", resp)
				}
			} else {
				mustProcess(t, p, respBody([]byte(tc.respBody), true))
			}
			p.Close(context.Background())
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events", len(evs))
			}
			if ev := evs[0]; ev.Status != tc.wantStatus || ev.Usage.InputTokens != tc.wantIn || ev.Usage.OutputTokens != tc.wantOut {
				t.Fatalf("usage status=%d in=%d out=%d", ev.Status, ev.Usage.InputTokens, ev.Usage.OutputTokens)
			}
		})
	}
}
