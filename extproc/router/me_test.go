package router

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// fakeSelf answers DeveloperStatus with resp, or err.
type fakeSelf struct {
	resp     *keyservicev1.DeveloperStatusResponse
	err      error
	asked    []string
	askedKey []string
}

func (f *fakeSelf) DeveloperStatus(_ context.Context, in *keyservicev1.DeveloperStatusRequest, _ ...grpc.CallOption) (*keyservicev1.DeveloperStatusResponse, error) {
	f.asked = append(f.asked, in.GetUserId())
	f.askedKey = append(f.askedKey, in.GetKeyId())
	return f.resp, f.err
}

// peekBreaker is a breaker whose Peek says decision; State must not be
// called by /me (it would take the probe lease).
type peekBreaker struct {
	fakeBreaker
	decision planbreaker.Decision
}

func (b *peekBreaker) Peek(context.Context, uuid.UUID) planbreaker.Decision { return b.decision }

// TestSelfStatus: GET /ak/<key>/me is answered by the gateway, for the
// key's own user only, with the route its next request would take.
func TestSelfStatus(t *testing.T) {
	until := time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)
	reset := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	u5, hit := 0.97, 0.5
	status := &keyservicev1.DeveloperStatusResponse{
		Month: "2026-12", MonthResetsAt: timestamppb.New(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)),
		PlanUsd: "9.5", BedrockUsd: "2.25", MonthlyBudgetUsd: "5.00",
		Headroom:          &keyservicev1.PlanHeadroom{Status: "allowed_warning", Claim: "five_hour", Utilization_5H: &u5, Reset_5H: timestamppb.New(reset)},
		CacheHitRateToday: &hit, RequestsToday: 4,
		Budgets: []*keyservicev1.DeveloperBudget{
			{Id: "b-key", Scope: "key", Window: "monthly", Metric: "plan_list", LimitUsd: "10.000000", SpentUsd: "1.750000", Action: "plan_only",
				WindowStart: "2026-12-01", ResetsAt: timestamppb.New(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))},
			{Id: "b-user", Scope: "user", Window: "daily", Metric: "all", LimitUsd: "5", SpentUsd: "4.2", Action: "downgrade",
				WindowStart: "2026-12-07", ResetsAt: timestamppb.New(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)),
				Downgrade: map[string]string{"opus": "claude-sonnet-4-5"}},
		},
	}
	tests := []struct {
		name     string
		key      string
		decision planbreaker.Decision
		resp     *keyservicev1.DeveloperStatusResponse
		err      error
		code     int
		route    meRoute
	}{
		{"plan first", "plan-first", planbreaker.Decision{}, status, nil, 200, meRoute{Backend: "plan", Reason: "plan_first"}},
		{"preemptive", "plan-first", planbreaker.Decision{Route: planbreaker.RouteOpen, OpenUntil: until, Preemptive: true}, status, nil, 200,
			meRoute{Backend: "bedrock", Reason: "preemptive", Until: &until}},
		{"breaker open", "plan-first", planbreaker.Decision{Route: planbreaker.RouteOpen, OpenUntil: until}, status, nil, 200,
			meRoute{Backend: "bedrock", Reason: "breaker_open", Until: &until}},
		{"bedrock only", "bedrock", planbreaker.Decision{}, status, nil, 200, meRoute{Backend: "bedrock", Reason: "bedrock_only"}},
		{"plan only", "plan-only", planbreaker.Decision{}, status, nil, 200, meRoute{Backend: "plan", Reason: "plan_only"}},
		{"no credential", "plan-first-no-cred", planbreaker.Decision{}, status, nil, 200, meRoute{Backend: "plan", Reason: "no_fallback"}},
		{"over budget", "plan-first-budget", planbreaker.Decision{Route: planbreaker.RouteOpen, OpenUntil: until},
			&keyservicev1.DeveloperStatusResponse{Month: "2026-12", PlanUsd: "0", BedrockUsd: "5.000000", MonthlyBudgetUsd: "5.00"}, nil, 200,
			meRoute{Backend: "plan", Reason: "over_budget"}},
		{"key service down", "plan-first", planbreaker.Decision{}, nil, errors.New("unavailable"), 503, meRoute{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newBedrockHarness(t, fallbackRuntime(t), nil)
			brk := &peekBreaker{decision: tt.decision}
			h.r.bedrock.Breaker = brk
			self := &fakeSelf{resp: tt.resp, err: tt.err}
			h.r.self = self
			p := h.r.NewProcessor()
			resp := mustProcess(t, p, reqHeadersEnd("GET", "/ak/"+h.keys[tt.key]+"/me"))
			ir := resp.GetImmediateResponse()
			if ir == nil || int(ir.GetStatus().GetCode()) != tt.code {
				t.Fatalf("reply %v, want an immediate %d", resp, tt.code)
			}
			if len(brk.states) != 0 {
				t.Fatal("/me asked the breaker's State (it takes the probe lease); it must Peek")
			}
			if len(self.asked) != 1 || self.asked[0] != p.req.identity.UserID.String() || self.askedKey[0] != p.req.identity.KeyID.String() {
				t.Fatalf("asked about %v (keys %v), want only the key's user %s and the key %s", self.asked, self.askedKey, p.req.identity.UserID, p.req.identity.KeyID)
			}
			if tt.code != 200 {
				return
			}
			var got meJSON
			if err := json.Unmarshal(ir.GetBody(), &got); err != nil {
				t.Fatalf("%v: %s", err, ir.GetBody())
			}
			if got.Route.Backend != tt.route.Backend || got.Route.Reason != tt.route.Reason ||
				(got.Route.Until == nil) != (tt.route.Until == nil) || (got.Route.Until != nil && !got.Route.Until.Equal(*tt.route.Until)) {
				t.Fatalf("route %+v, want %+v", got.Route, tt.route)
			}
			if got.UserID != p.req.identity.UserID || got.Month != "2026-12" {
				t.Fatalf("status %s", ir.GetBody())
			}
			if tt.name == "over budget" && !strings.HasSuffix(string(ir.GetBody()), `,"budgets":[]}`) {
				t.Fatalf("without budgets the list is empty, not null: %s", ir.GetBody())
			}
			if tt.name == "plan first" {
				want := `{"user_id":"` + got.UserID.String() + `","key_prefix":"` + got.KeyPrefix + `","month":"2026-12",` +
					`"month_resets_at":"2027-01-01T00:00:00Z","spend":{"plan_usd":"9.500000","bedrock_usd":"2.250000","total_usd":"11.750000"},` +
					`"budget":{"monthly_budget_usd":"5.00","remaining_usd":"2.750000"},` +
					`"plan":{"sampled_at":null,"status":"allowed_warning","claim":"five_hour","utilization_5h":0.97,"reset_5h":"2026-12-07T21:00:00Z",` +
					`"utilization_7d":null,"reset_7d":null,"limit_at_5h":null},` +
					`"route":{"backend":"plan","reason":"plan_first","until":null},"cache":{"hit_rate_today":0.5,"requests_today":4},` +
					`"budgets":[{"id":"b-key","scope":"key","window":"monthly","metric":"plan_list","limit_usd":"10.000000","spent_usd":"1.750000",` +
					`"action":"plan_only","window_start":"2026-12-01","resets_at":"2027-01-01T00:00:00Z","downgrade_map":null},` +
					`{"id":"b-user","scope":"user","window":"daily","metric":"all","limit_usd":"5.000000","spent_usd":"4.200000",` +
					`"action":"downgrade","window_start":"2026-12-07","resets_at":"2026-12-08T00:00:00Z","downgrade_map":{"opus":"claude-sonnet-4-5"}}]}`
				if string(ir.GetBody()) != want {
					t.Fatalf("body\n got %s\nwant %s", ir.GetBody(), want)
				}
			}
		})
	}
	t.Run("POST /me is refused", func(t *testing.T) {
		h := newBedrockHarness(t, fallbackRuntime(t), nil)
		h.r.self = &fakeSelf{}
		resp := mustProcess(t, h.r.NewProcessor(), reqHeadersEnd("POST", "/ak/"+h.keys["plan-first"]+"/me"))
		if c := resp.GetImmediateResponse().GetStatus().GetCode(); c != 405 {
			t.Fatalf("status %v", c)
		}
	})
	t.Run("a bad key gets the usual 401", func(t *testing.T) {
		h := newBedrockHarness(t, fallbackRuntime(t), nil)
		self := &fakeSelf{}
		h.r.self = self
		resp := mustProcess(t, h.r.NewProcessor(), reqHeadersEnd("GET", "/ak/ak_notakey/me"))
		if c := resp.GetImmediateResponse().GetStatus().GetCode(); c != 401 || len(self.asked) != 0 {
			t.Fatalf("status %v, asked %v", c, self.asked)
		}
	})
}

// reqHeadersEnd is reqHeaders for a request without a body.
func reqHeadersEnd(method, path string) *extprocv3.ProcessingRequest {
	m := reqHeaders(method, path)
	m.GetRequestHeaders().EndOfStream = true
	return m
}
