package router

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// testBudgets gives a harness key budgets, so that the router asks the
// fake checker (whose verdict the test sets).
var testBudgets = []accesskey.Budget{{ID: "b", Scope: "user", SubjectID: uuid.New(), Window: "daily", Metric: "all",
	AmountUSD: decimal.NewFromInt(5), Action: "notify"}}

// budgetRuntime is the budget tests' catalog: Opus 5.5 and Sonnet 4.5 with
// their us-east-1 inference profiles, us-east-1 with a fallback route.
func budgetRuntime(t *testing.T) *runtimeconfig.Config {
	t.Helper()
	cfg, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{
			{AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-opus-5-5"}},
			{AnthropicModelId: "claude-sonnet-4-5-20250929", Aliases: []string{"claude-sonnet-4-5"}, Family: "sonnet",
				BedrockModelId: "anthropic.claude-sonnet-4-5-20250929-v1:0",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}},
		},
		Regions:         []string{"us-east-1"},
		FallbackRegions: []string{"us-east-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestBudgetActions: the strongest used-up budget's action, as the checker
// reports it, decides the request's fate before routing.
func TestBudgetActions(t *testing.T) {
	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	reset := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	verdict := func(action, metric string) budget.Verdict {
		return budget.Verdict{Action: action, Spent: decimal.RequireFromString("5.2"), ResetAt: reset,
			Budget: accesskey.Budget{ID: "b", Scope: "user", Window: "daily", Metric: metric, AmountUSD: decimal.NewFromInt(5), Action: action,
				Downgrade: map[string]string{"opus": "claude-sonnet-4-5"}}}
	}
	tests := []struct {
		name       string
		key        string
		verdict    budget.Verdict
		wantStatus int
		wantBody   string
		wantRoute  string
		wantModel  string // the body sent upstream ("" unchanged)
		recorded   string
	}{
		{name: "nothing used up", key: "plan-first-budgets", wantRoute: dataplane.FallbackRoute("us-east-1")},
		{name: "notify changes nothing", key: "plan-first-budgets", verdict: verdict("notify", "all"), wantRoute: dataplane.FallbackRoute("us-east-1")},
		{name: "block refuses Plan traffic too", key: "plan-first-budgets", verdict: verdict("block", "all"), wantStatus: 429,
			wantBody: `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: your daily Plan and Bedrock budget of $5.00 is used up ($5.20 spent); requests are refused until it resets at 2026-12-08T00:00:00Z"}}`},
		{name: "a Bedrock block budget only withholds Bedrock", key: "plan-first-budgets", verdict: verdict("block", "bedrock"),
			wantRoute: dataplane.RoutePlan, recorded: "plan_only"},
		{name: "plan_only: plan_first goes to Plan alone", key: "plan-first-budgets", verdict: verdict("plan_only", "all"),
			wantRoute: dataplane.RoutePlan, recorded: "plan_only"},
		{name: "plan_only: bedrock_only is refused", key: "bedrock-budgets", verdict: verdict("plan_only", "all"), wantStatus: 429,
			wantBody: `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: your daily Plan and Bedrock budget of $5.00 is used up ($5.20 spent); Bedrock is not used until it resets at 2026-12-08T00:00:00Z"}}`},
		{name: "downgrade rewrites the model before routing", key: "plan-first-budgets", verdict: verdict("downgrade", "all"),
			wantRoute: dataplane.FallbackRoute("us-east-1"), wantModel: "claude-sonnet-4-5", recorded: "downgrade"},
		{name: "downgrade on Bedrock too", key: "bedrock-budgets", verdict: verdict("downgrade", "bedrock"),
			wantRoute: dataplane.BedrockRoute("us-east-1"), wantModel: "claude-sonnet-4-5", recorded: "downgrade"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, budgetRuntime(t), nil)
			h.r.now = func() time.Time { return now }
			h.r.bedrock.Budgets = &fakeBudgets{verdict: tc.verdict}
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+"/v1/messages"))
			resp := mustProcess(t, p, reqBody(body))
			if ir := resp.GetImmediateResponse(); tc.wantStatus != 0 {
				if ir == nil || int(ir.GetStatus().GetCode()) != tc.wantStatus || string(ir.GetBody()) != tc.wantBody {
					t.Fatalf("got %v, want %d %s", ir, tc.wantStatus, tc.wantBody)
				}
				if hs := setHeaders(ir.GetHeaders()); hs["retry-after"] != "3600" || hs["x-should-retry"] != "false" {
					t.Fatalf("refusal headers %v", hs)
				}
				return
			} else if ir != nil {
				t.Fatalf("refused: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
			}
			common := resp.GetRequestBody().GetResponse()
			set := setHeaders(common.GetHeaderMutation())
			if set[dataplane.RouteHeader] != tc.wantRoute {
				t.Fatalf("route %q, want %q", set[dataplane.RouteHeader], tc.wantRoute)
			}
			if tc.wantModel == "" {
				if common.GetBodyMutation() != nil {
					t.Fatalf("body changed: %s", common.GetBodyMutation().GetBody())
				}
			} else {
				want := `{"model":"` + tc.wantModel + `","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
				if got := string(common.GetBodyMutation().GetBody()); got != want || set["content-length"] != strconv.Itoa(len(want)) {
					t.Fatalf("body %s (content-length %q); want %s (%d)", got, set["content-length"], want, len(want))
				}
				if p.req.fields.model != tc.wantModel || p.req.budget.originalModel != "claude-opus-5-5" {
					t.Fatalf("model %q (original %q)", p.req.fields.model, p.req.budget.originalModel)
				}
			}
			if p.req.budget.recorded != tc.recorded {
				t.Fatalf("recorded budget action %q, want %q", p.req.budget.recorded, tc.recorded)
			}
		})
	}
}

// TestBudgetDowngradeBedrockMode: in Claude Code's Bedrock mode the model
// is the path's Bedrock id, so a downgrade rewrites the path to the
// target's id for the user's region — its inference profile, or its base
// id for count-tokens — and the usage event records the downgrade.
func TestBudgetDowngradeBedrockMode(t *testing.T) {
	reset := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	downgrade := func(m map[string]string) budget.Verdict {
		return budget.Verdict{Action: "downgrade", Spent: decimal.RequireFromString("5.2"), ResetAt: reset,
			Budget: accesskey.Budget{ID: "b", Scope: "user", Window: "daily", Metric: "all", AmountUSD: decimal.NewFromInt(5), Action: "downgrade", Downgrade: m}}
	}
	tests := []struct {
		name     string
		path     string
		verdict  budget.Verdict
		wantPath string // the path sent to Bedrock
		served   string // the Anthropic id served and metered
		recorded string
	}{
		{name: "a stream goes to the target's inference profile", path: "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream",
			verdict: downgrade(map[string]string{"opus": "claude-sonnet-4-5"}), wantPath: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream",
			served: "claude-sonnet-4-5-20250929", recorded: "downgrade"},
		{name: "the base id asked for, by its canonical key", path: "/model/anthropic.claude-opus-5-5/invoke",
			verdict: downgrade(map[string]string{"claude-opus-5-5": "claude-sonnet-4-5-20250929"}), wantPath: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
			served: "claude-sonnet-4-5-20250929", recorded: "downgrade"},
		{name: "count-tokens takes the base id", path: "/model/us.anthropic.claude-opus-5-5/count-tokens",
			verdict: downgrade(map[string]string{"opus": "claude-sonnet-4-5"}), wantPath: "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens",
			served: "claude-sonnet-4-5-20250929", recorded: "downgrade"},
		{name: "a model the map does not name is served as asked", path: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
			verdict: downgrade(map[string]string{"opus": "claude-sonnet-4-5"}), wantPath: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
			served: "claude-sonnet-4-5-20250929"},
		{name: "a target the catalog cannot invoke leaves the request alone", path: "/model/us.anthropic.claude-opus-5-5/invoke",
			verdict: downgrade(map[string]string{"opus": "claude-haiku-9"}), wantPath: "/model/us.anthropic.claude-opus-5-5/invoke",
			served: "claude-opus-5-5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, budgetRuntime(t), nil)
			h.r.bedrock.Budgets = &fakeBudgets{verdict: tc.verdict}
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["bedrock-budgets"]+"/bedrock"+tc.path))
			resp := mustProcess(t, p, reqBody([]byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)))
			if ir := resp.GetImmediateResponse(); ir != nil {
				t.Fatalf("refused: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
			}
			set := setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())
			stored := h.requests.Get(set[dataplane.StateHeader])
			if stored == nil || stored.Path != tc.wantPath || set[dataplane.RouteHeader] != dataplane.BedrockRoute("us-east-1") {
				t.Fatalf("route %q, stored %+v; want path %s", set[dataplane.RouteHeader], stored, tc.wantPath)
			}
			if p.req.fields.model != tc.served || p.req.budget.recorded != tc.recorded {
				t.Fatalf("model %q, recorded %q; want %q, %q", p.req.fields.model, p.req.budget.recorded, tc.served, tc.recorded)
			}
			wantOriginal := ""
			if tc.recorded != "" {
				wantOriginal = "claude-opus-5-5"
			}
			if p.req.budget.originalModel != wantOriginal {
				t.Fatalf("original model %q, want %q", p.req.budget.originalModel, wantOriginal)
			}
		})
	}
}
