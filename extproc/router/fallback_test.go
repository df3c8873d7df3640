package router

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/translate/eventstream"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// fakeBreaker answers State with route and records Failure calls.
type fakeBreaker struct {
	route      planbreaker.Route
	preemptive bool
	states     []uuid.UUID
	failures   []uuid.UUID
}

func (b *fakeBreaker) State(_ context.Context, keyID uuid.UUID) (planbreaker.Decision, error) {
	b.states = append(b.states, keyID)
	return planbreaker.Decision{Route: b.route, Preemptive: b.preemptive}, nil
}

func (b *fakeBreaker) Failure(_ context.Context, keyID uuid.UUID) {
	b.failures = append(b.failures, keyID)
}

// fallbackRuntime is testRuntime with a plan+bedrock-us-east-1 route.
func fallbackRuntime(t testing.TB) *runtimeconfig.Config {
	t.Helper()
	cfg, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{
			{AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-opus-5-5"}},
		},
		Regions:         []string{"us-east-1"},
		FallbackRegions: []string{"us-east-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// withAttemptCount adds the router filter's response attribute to m.
func withAttemptCount(m *extprocv3.ProcessingRequest, n float64) *extprocv3.ProcessingRequest {
	m.Attributes = map[string]*structpb.Struct{dataplane.AttributesKey: {Fields: map[string]*structpb.Value{
		dataplane.AttemptCount: structpb.NewNumberValue(n)}}}
	return m
}

// TestPlanFirstFallback drives a plan_first request through the router
// processor with the attempts the upstream processor would record, and
// checks the route, which backend's answer is converted, the usage event and
// the breaker.
func TestPlanFirstFallback(t *testing.T) {
	body, err := os.ReadFile(captures + "anthropic-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	capture, err := os.ReadFile("../../testdata/bedrock-invoke-stream-capture.bin")
	if err != nil {
		t.Fatal(err)
	}
	wantSSE, err := eventstream.NewConverter().Write(nil, capture)
	if err != nil {
		t.Fatal(err)
	}
	planSSE := []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")

	type attempt struct {
		backend string
		status  int
		failure handoff.Failure
	}
	tests := []struct {
		name         string
		route        planbreaker.Route
		preemptive   bool
		attempts     []attempt
		attemptCount float64 // response attribute; 0 = not sent
		countString  string  // the attribute as a string value instead
		noResponse   bool    // the stream ends without response headers
		wantRoute    string
		wantProvider string
		wantReason   string // "" = no fallback
		wantFailures int    // breaker Failure calls (no-response Plan attempts)
	}{
		{name: "plan answers", attempts: []attempt{{dataplane.BackendPlan, 200, handoff.FailureNone}}, attemptCount: 1,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderAnthropic},
		{name: "plan 429, bedrock answers", attempts: []attempt{{dataplane.BackendPlan, 429, handoff.FailureNone}, {dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 2,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: "plan_429"},
		{name: "plan 529, bedrock answers", attempts: []attempt{{dataplane.BackendPlan, 529, handoff.FailureNone}, {dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 2,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: "plan_529"},
		{name: "plan unreachable: the router reports the failure", attempts: []attempt{{dataplane.BackendPlan, 0, handoff.FailureNone}, {dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 2,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanUnreachable, wantFailures: 1},
		{name: "plan attempt failed by the upstream processor, stalled, retried on bedrock: breaker not charged",
			attempts: []attempt{{dataplane.BackendPlan, 0, handoff.FailureLate}, {dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 2,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanAttemptFailed},
		{name: "no plan host: first attempt on bedrock, breaker not charged", attempts: []attempt{{dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 1,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanNoHost},
		{name: "no attempt record: the attempt count decides", attemptCount: 2,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanUnreachable, wantFailures: 1},
		{name: "no attempt record, one attempt: plan answered", attemptCount: 1,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderAnthropic},
		{name: "no attempt record, attempt count as a string", countString: "2",
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanUnreachable, wantFailures: 1},
		{name: "no attempt record, no attempt count: plan answered",
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderAnthropic},
		{name: "half-open probe goes to plan", route: planbreaker.RouteProbe, attempts: []attempt{{dataplane.BackendPlan, 200, handoff.FailureNone}}, attemptCount: 1,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderAnthropic},
		{name: "breaker open: straight to bedrock", route: planbreaker.RouteOpen, attempts: []attempt{{dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 1,
			wantRoute: "bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonBreakerOpen},
		{name: "breaker open pre-emptively: straight to bedrock, reason preemptive", route: planbreaker.RouteOpen, preemptive: true,
			attempts: []attempt{{dataplane.BackendBedrock, 200, handoff.FailureNone}}, attemptCount: 1,
			wantRoute: "bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPreemptive},
		{name: "neither answered, plan then bedrock tried", attempts: []attempt{{dataplane.BackendPlan, 0, handoff.FailureNone}, {dataplane.BackendBedrock, 0, handoff.FailureNone}}, noResponse: true,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderBedrock, wantReason: ReasonPlanUnreachable, wantFailures: 1},
		{name: "client gone while plan was asked: no fallback, no failure", attempts: []attempt{{dataplane.BackendPlan, 0, handoff.FailureNone}}, noResponse: true,
			wantRoute: "plan+bedrock-us-east-1", wantProvider: usage.ProviderAnthropic},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, fallbackRuntime(t), nil)
			fb := &fakeBreaker{route: tc.route, preemptive: tc.preemptive}
			h.r.bedrock.Breaker = fb
			h.r.bedrock.PreemptThreshold = 0.95
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first"]+"/v1/messages?beta=true",
				"x-api-key", "sk-client", "anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"))
			resp := mustProcess(t, p, reqBody(body))
			common := resp.GetRequestBody().GetResponse()
			set := setHeaders(common.GetHeaderMutation())
			if set[dataplane.RouteHeader] != tc.wantRoute || !common.GetClearRouteCache() {
				t.Fatalf("route %q, want %q", set[dataplane.RouteHeader], tc.wantRoute)
			}
			stored := h.requests.Get(set[dataplane.StateHeader])
			if stored == nil {
				t.Fatal("no handoff stored")
			}
			if stored.Path != "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream" {
				t.Fatalf("stored path %q", stored.Path)
			}
			// What Bedrock must not see: the client's credential and the
			// anthropic-* headers (the betas travel in the body).
			if got := strings.Join(stored.RemoveHeaders, ","); got != "x-api-key,anthropic-beta" {
				t.Fatalf("headers removed for Bedrock %q", got)
			}
			if !strings.Contains(string(stored.Body), `"anthropic_beta":["interleaved-thinking-2025-05-14"]`) {
				t.Fatalf("translated body without the allowed beta: %.300s", stored.Body)
			}
			if wantKey := tc.route != planbreaker.RouteOpen; (stored.KeyID != uuid.Nil) != wantKey {
				t.Fatalf("stored KeyID %v: the breaker key must be set exactly for routes with a Plan endpoint", stored.KeyID)
			}
			if stored.Probe != (tc.route == planbreaker.RouteProbe) {
				t.Fatalf("stored Probe %v for breaker route %v", stored.Probe, tc.route)
			}
			if want := map[bool]float64{true: 0.95, false: 0}[tc.route != planbreaker.RouteOpen]; stored.Preempt != want {
				t.Fatalf("stored Preempt %v, want %v (the default threshold, for routes with a Plan endpoint)", stored.Preempt, want)
			}
			if len(fb.states) != 1 {
				t.Fatalf("breaker asked %d times", len(fb.states))
			}
			for _, a := range tc.attempts {
				i := stored.Attempts.Start(a.backend)
				stored.Attempts.Respond(i, a.status)
				// No stream attached: the processor records the failure
				// without answering.
				stored.FailAttempt(i, a.failure)
			}

			var gotSSE []byte
			if !tc.noResponse {
				m := respHeaders("200", "content-type", "application/vnd.amazon.eventstream")
				chunks := [][]byte{capture[:100], capture[100:]}
				if tc.wantProvider == usage.ProviderAnthropic {
					m = respHeaders("200", "content-type", "text/event-stream; charset=utf-8")
					chunks = [][]byte{planSSE}
				}
				switch {
				case tc.attemptCount != 0:
					withAttemptCount(m, tc.attemptCount)
				case tc.countString != "":
					m.Attributes = map[string]*structpb.Struct{dataplane.AttributesKey: {Fields: map[string]*structpb.Value{
						dataplane.AttemptCount: structpb.NewStringValue(tc.countString)}}}
				}
				resp = mustProcess(t, p, m)
				if resp.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" {
					t.Fatalf("response headers reply %v: not streamed", resp)
				}
				for i, c := range chunks {
					r := mustProcess(t, p, respBody(c, i == len(chunks)-1))
					if b, ok := r.GetResponseBody().GetResponse().GetBodyMutation().GetMutation().(*extprocv3.BodyMutation_Body); ok {
						gotSSE = append(gotSSE, b.Body...)
					}
				}
			}
			p.Close(context.Background())
			switch {
			case tc.noResponse:
			case tc.wantProvider == usage.ProviderBedrock:
				if string(gotSSE) != string(wantSSE) {
					t.Fatalf("Bedrock's answer was not converted:\n got %q\nwant %q", gotSSE, wantSSE)
				}
			default:
				if gotSSE != nil {
					t.Fatalf("Plan's answer was changed: %q", gotSSE)
				}
			}
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events", len(evs))
			}
			ev := evs[0]
			if ev.Route != tc.wantRoute || ev.Provider != tc.wantProvider || ev.Fallback != (tc.wantReason != "") || ev.FallbackReason != tc.wantReason {
				t.Fatalf("usage event route=%q provider=%q fallback=%v reason=%q", ev.Route, ev.Provider, ev.Fallback, ev.FallbackReason)
			}
			if tc.wantProvider == usage.ProviderBedrock && (ev.BackendModel != "us.anthropic.claude-opus-5-5" || ev.Region != "us-east-1") {
				t.Fatalf("bedrock answer: backend model %q region %q", ev.BackendModel, ev.Region)
			}
			if tc.wantProvider == usage.ProviderAnthropic && (ev.BackendModel != "" || ev.Region != "" || (!tc.noResponse && ev.Usage.OutputTokens != 7)) {
				t.Fatalf("plan answer metered as %+v", ev)
			}
			if len(fb.failures) != tc.wantFailures {
				t.Fatalf("breaker Failure called %d times, want %d", len(fb.failures), tc.wantFailures)
			}
			if tc.wantReason != "" {
				if n := testutil.ToFloat64(h.metrics.fallbacks.WithLabelValues(tc.wantReason)); n != 1 {
					t.Fatalf("fallbacks{reason=%q} = %v", tc.wantReason, n)
				}
			}
			if h.requests.Len() != 0 {
				t.Fatal("handoff entry outlived the stream")
			}
		})
	}
}

// TestPlanFirstWithoutFallback: whatever makes Bedrock unusable sends a
// plan_first request to Plan alone, untouched, counted by reason.
func TestPlanFirstWithoutFallback(t *testing.T) {
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	spent := decimal.RequireFromString("5")
	tests := []struct {
		name       string
		key        string
		runtime    func(testing.TB) *runtimeconfig.Config
		body       []byte
		checkErr   error
		budgets    *fakeBudgets
		wantReason string
	}{
		{name: "plan_only user", key: "plan-only", runtime: fallbackRuntime, wantReason: planAlonePlanOnly},
		{name: "no credential", key: "plan-first-no-cred", runtime: fallbackRuntime, wantReason: planAloneNoCredential},
		{name: "region without a fallback route", key: "plan-first", runtime: testRuntime, wantReason: planAloneNoRoute},
		{name: "model not on Bedrock", key: "plan-first", runtime: fallbackRuntime,
			body: []byte(`{"model":"claude-unknown-1","stream":true,"messages":[]}`), wantReason: refuseModel},
		{name: "credential unusable", key: "plan-first", runtime: fallbackRuntime, checkErr: errors.New("kms down"), wantReason: refuseCredential},
		{name: "budget spent", key: "plan-first-budget", runtime: fallbackRuntime,
			budgets: &fakeBudgets{st: budget.Status{Spent: spent, Over: true}}, wantReason: refuseBudget},
		{name: "body Bedrock cannot take", key: "plan-first", runtime: fallbackRuntime,
			body: []byte(`{"model":"claude-opus-5-5","stream":true,"messages":[`), wantReason: refuseBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, tc.runtime(t), tc.checkErr)
			fb := &fakeBreaker{route: planbreaker.RouteOpen}
			h.r.bedrock.Breaker = fb
			if tc.budgets != nil {
				h.r.bedrock.Budgets = tc.budgets
			}
			b := body
			if tc.body != nil {
				b = tc.body
			}
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+"/v1/messages", "x-api-key", "sk-client"))
			resp := mustProcess(t, p, reqBody(b))
			common := resp.GetRequestBody().GetResponse()
			if common == nil {
				t.Fatalf("refused: %v", resp)
			}
			set := setHeaders(common.GetHeaderMutation())
			if set[dataplane.RouteHeader] != dataplane.RoutePlan || set[dataplane.StateHeader] != "" || common.GetBodyMutation() != nil {
				t.Fatalf("route %q state %q body mutation %v; want plan, untouched", set[dataplane.RouteHeader], set[dataplane.StateHeader], common.GetBodyMutation())
			}
			if len(fb.states) != 0 {
				t.Fatal("the breaker was consulted for a request that cannot fall back")
			}
			if tc.wantReason != "" {
				if n := testutil.ToFloat64(h.metrics.planAlone.WithLabelValues(tc.wantReason)); n != 1 {
					t.Fatalf("fallback_unavailable{reason=%q} = %v", tc.wantReason, n)
				}
			}
			mustProcess(t, p, respHeaders("429", "content-type", "application/json", "retry-after", "120"))
			p.Close(context.Background())
			if ev := h.sink.Events(); len(ev) != 1 || ev[0].Fallback || ev[0].Provider != usage.ProviderAnthropic || ev[0].Status != 429 {
				t.Fatalf("usage %+v", ev)
			}
		})
	}
}

// TestPlanLimitsInUsage: the subscription rate-limit headers of a Plan
// answer reach the client unchanged and the usage event parsed; a user's
// own pre-emptive failover threshold wins over the gateway's default.
func TestPlanLimitsInUsage(t *testing.T) {
	body, err := os.ReadFile(captures + "anthropic-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range []*float64{nil, ptr(0.0), ptr(0.8)} {
		name := "default threshold"
		if own != nil {
			name = fmt.Sprintf("own threshold %v", *own)
		}
		t.Run(name, func(t *testing.T) {
			h := newBedrockHarness(t, fallbackRuntime(t), nil)
			h.r.bedrock.Breaker = &fakeBreaker{}
			h.r.bedrock.PreemptThreshold = 0.95
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first"]+"/v1/messages", "x-api-key", "sk-client"))
			p.req.identity.PreemptThreshold = own
			resp := mustProcess(t, p, reqBody(body))
			stored := h.requests.Get(setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())[dataplane.StateHeader])
			want := 0.95
			if own != nil {
				want = *own
			}
			if stored == nil || stored.Preempt != want {
				t.Fatalf("stored %+v, want Preempt %v", stored, want)
			}
			m := respHeaders("200", "content-type", "application/json",
				"anthropic-ratelimit-unified-status", "allowed_warning",
				"anthropic-ratelimit-unified-representative-claim", "five_hour",
				"anthropic-ratelimit-unified-reset", "1772384400",
				"anthropic-ratelimit-unified-5h-utilization", "0.96",
				"anthropic-ratelimit-unified-5h-reset", "1772384400",
				"anthropic-ratelimit-unified-7d-utilization", "0.31",
				"anthropic-ratelimit-unified-7d-reset", "1772971200")
			withAttemptCount(m, 1)
			hr := mustProcess(t, p, m)
			if mut := hr.GetResponseHeaders().GetResponse().GetHeaderMutation(); mut != nil {
				t.Fatalf("Plan's headers were changed: %v", mut)
			}
			mustProcess(t, p, respBody([]byte(`{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}`), true))
			p.Close(context.Background())
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d events", len(evs))
			}
			r5 := time.Unix(1772384400, 0).UTC()
			wantLimits := usage.PlanLimits{Status: "allowed_warning", Claim: "five_hour", Reset: r5,
				Utilization5h: 0.96, Has5h: true, Reset5h: r5,
				Utilization7d: 0.31, Has7d: true, Reset7d: time.Unix(1772971200, 0).UTC()}
			if evs[0].PlanLimits != wantLimits {
				t.Fatalf("PlanLimits %+v, want %+v", evs[0].PlanLimits, wantLimits)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
