package router

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// The developer's self-service status, GET /ak/<key>/me, is answered here,
// by extproc, as an ImmediateResponse: extproc has already authenticated
// the key (the same check, cache and refusals as every other request), it
// holds the breaker state that says where the next request goes, and it
// reaches the admin service's KeyService for the rest (DeveloperStatus).
// Routing the path to the admin service instead would need an Envoy route
// and cluster for it and a second key check there, and would expose the
// admin service on the gateway's listener. The answer names only the key's
// own user, and no secret (the key itself is not repeated).

// SelfService answers the admin side of GET /ak/<key>/me: the KeyService
// client (keyservicev1.KeyServiceClient satisfies it).
type SelfService interface {
	DeveloperStatus(ctx context.Context, in *keyservicev1.DeveloperStatusRequest, opts ...grpc.CallOption) (*keyservicev1.DeveloperStatusResponse, error)
}

// breakerPeeker is the read-only view of the breaker (planbreaker.Breaker).
type breakerPeeker interface {
	Peek(ctx context.Context, keyID uuid.UUID) planbreaker.Decision
}

// selfServiceTimeout bounds the KeyService call of one /me answer.
const selfServiceTimeout = 2 * time.Second

// Route reasons of the /me answer.
const (
	meReasonPlanFirst    = "plan_first"   // Plan, Bedrock if Plan refuses
	meReasonNoFallback   = "no_fallback"  // plan_first without a usable Bedrock fallback
	meReasonPlanOnly     = "plan_only"    // the user's strategy
	meReasonBedrockOnly  = "bedrock_only" // the user's strategy
	meReasonOverBudget   = "over_budget"  // Bedrock budget spent: Plan alone
	meReasonBreakerOpen  = ReasonBreakerOpen
	meReasonPreemptive   = ReasonPreemptive
	meBackendPlan        = "plan"
	meBackendBedrock     = "bedrock"
	meDetailsSelfService = "ccproxy_me"
)

type meJSON struct {
	UserID    uuid.UUID `json:"user_id"`
	KeyPrefix string    `json:"key_prefix"`
	// Month is the billing month (YYYY-MM) the spend is for.
	Month         string     `json:"month"`
	MonthResetsAt *time.Time `json:"month_resets_at"`
	Spend         meSpend    `json:"spend"`
	Budget        meBudget   `json:"budget"`
	Plan          *mePlan    `json:"plan"`
	Route         meRoute    `json:"route"`
	Cache         meCache    `json:"cache"`
	// Budgets are the budgets that act on this key's requests (the
	// user's, the team's and this key's), never null.
	Budgets []meBudgetRow `json:"budgets"`
}

// meBudgetRow is one budget (DeveloperBudget) with its spend in the
// current window.
type meBudgetRow struct {
	ID     string `json:"id"`
	Scope  string `json:"scope"`
	Window string `json:"window"`
	Metric string `json:"metric"`
	// LimitUSD is the budget's amount, SpentUSD what it counts in the
	// window starting on the local date WindowStart, 6 decimals each.
	LimitUSD    string     `json:"limit_usd"`
	SpentUSD    string     `json:"spent_usd"`
	Action      string     `json:"action"`
	WindowStart string     `json:"window_start"`
	ResetsAt    *time.Time `json:"resets_at"`
	// DowngradeMap is the model mapping of a downgrade budget; null for
	// other actions.
	DowngradeMap map[string]string `json:"downgrade_map"`
}

type meSpend struct {
	// PlanUSD is the list-price equivalent of the month's Plan traffic,
	// BedrockUSD the Bedrock spend, TotalUSD their sum.
	PlanUSD    string `json:"plan_usd"`
	BedrockUSD string `json:"bedrock_usd"`
	TotalUSD   string `json:"total_usd"`
}

type meBudget struct {
	// MonthlyBudgetUSD caps the Bedrock spend; null means no budget.
	MonthlyBudgetUSD *string `json:"monthly_budget_usd"`
	RemainingUSD     *string `json:"remaining_usd"`
}

type mePlan struct {
	SampledAt     *time.Time `json:"sampled_at"`
	Status        string     `json:"status"`
	Claim         string     `json:"claim"`
	Utilization5h *float64   `json:"utilization_5h"`
	Reset5h       *time.Time `json:"reset_5h"`
	Utilization7d *float64   `json:"utilization_7d"`
	Reset7d       *time.Time `json:"reset_7d"`
	// LimitAt5h is when the 5-hour limit is reached at the current burn
	// rate; null when not before its reset.
	LimitAt5h *time.Time `json:"limit_at_5h"`
}

type meRoute struct {
	// Backend is where the next Messages request goes: plan or bedrock.
	Backend string `json:"backend"`
	Reason  string `json:"reason"`
	// Until is when an open breaker (breaker_open, preemptive) lets
	// requests try Plan again.
	Until *time.Time `json:"until"`
}

type meCache struct {
	HitRateToday  *float64 `json:"hit_rate_today"`
	RequestsToday int64    `json:"requests_today"`
}

func tsPtr(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

// usd6 is a decimal USD string with 6 decimals; v unchanged if it is not
// a decimal.
func usd6(v string) string {
	d, err := decimal.NewFromString(v)
	if err != nil {
		return v
	}
	return d.StringFixed(6)
}

// meBudgets converts the status's budgets; never nil, so the JSON says [].
func meBudgets(in []*keyservicev1.DeveloperBudget) []meBudgetRow {
	out := make([]meBudgetRow, 0, len(in))
	for _, b := range in {
		row := meBudgetRow{ID: b.GetId(), Scope: b.GetScope(), Window: b.GetWindow(), Metric: b.GetMetric(),
			LimitUSD: usd6(b.GetLimitUsd()), SpentUSD: usd6(b.GetSpentUsd()), Action: b.GetAction(),
			WindowStart: b.GetWindowStart(), ResetsAt: tsPtr(b.GetResetsAt())}
		if len(b.GetDowngrade()) > 0 {
			row.DowngradeMap = b.GetDowngrade()
		}
		out = append(out, row)
	}
	return out
}

// selfStatus answers GET /ak/<key>/me.
func (p *Processor) selfStatus(ctx context.Context) *extprocv3.ProcessingResponse {
	p.r.metrics.request(OutcomeSelfService)
	if p.r.self == nil {
		return immediate(503, apierror.API, "ccproxy: this gateway does not serve /me", "ccproxy_me_unavailable")
	}
	id := p.req.identity
	cctx, cancel := context.WithTimeout(ctx, selfServiceTimeout)
	defer cancel()
	// The key's id brings its own budgets (not those of the user's other
	// keys, which never act on this key's requests) in the same call.
	st, err := p.r.self.DeveloperStatus(cctx, &keyservicev1.DeveloperStatusRequest{UserId: id.UserID.String(), KeyId: id.KeyID.String()})
	if err != nil {
		p.logger().LogAttrs(ctx, slog.LevelWarn, "developer status unavailable", slog.Any("error", err))
		return immediate(503, apierror.API, "ccproxy: your status is unavailable right now; try again shortly", "ccproxy_me_failed")
	}
	plan, _ := decimal.NewFromString(st.GetPlanUsd())
	bedrock, _ := decimal.NewFromString(st.GetBedrockUsd())
	out := meJSON{
		UserID: id.UserID, KeyPrefix: id.KeyPrefix, Month: st.GetMonth(), MonthResetsAt: tsPtr(st.GetMonthResetsAt()),
		Spend:   meSpend{PlanUSD: plan.StringFixed(6), BedrockUSD: bedrock.StringFixed(6), TotalUSD: plan.Add(bedrock).StringFixed(6)},
		Cache:   meCache{RequestsToday: st.GetRequestsToday()},
		Budgets: meBudgets(st.GetBudgets()),
	}
	if st.CacheHitRateToday != nil {
		r := st.GetCacheHitRateToday()
		out.Cache.HitRateToday = &r
	}
	if b := st.GetMonthlyBudgetUsd(); b != "" {
		if d, err := decimal.NewFromString(b); err == nil {
			bs, rem := d.StringFixed(2), decimal.Max(d.Sub(bedrock), decimal.Zero).StringFixed(6)
			out.Budget = meBudget{MonthlyBudgetUSD: &bs, RemainingUSD: &rem}
		}
	}
	if h := st.GetHeadroom(); h != nil {
		out.Plan = &mePlan{SampledAt: tsPtr(h.GetSampledAt()), Status: h.GetStatus(), Claim: h.GetClaim(),
			Utilization5h: h.Utilization_5H, Reset5h: tsPtr(h.GetReset_5H()),
			Utilization7d: h.Utilization_7D, Reset7d: tsPtr(h.GetReset_7D()), LimitAt5h: tsPtr(h.GetLimitAt_5H())}
	}
	out.Route = p.currentRoute(ctx, bedrock)
	body, err := json.Marshal(out)
	if err != nil {
		return immediate(500, apierror.API, "ccproxy: could not encode your status", "ccproxy_me_failed")
	}
	resp := immediate(200, "", "", meDetailsSelfService)
	ir := resp.GetImmediateResponse()
	ir.Body = body
	ir.Headers = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
		setHeader("content-type", []byte("application/json")),
		setHeader("cache-control", []byte("no-store")),
	}}
	return resp
}

// currentRoute says where the key's next Messages request would go and
// why, without taking the breaker's probe lease.
func (p *Processor) currentRoute(ctx context.Context, bedrockSpent decimal.Decimal) meRoute {
	id := p.req.identity
	switch id.RoutingStrategy {
	case accesskey.RoutingBedrockOnly:
		return meRoute{Backend: meBackendBedrock, Reason: meReasonBedrockOnly}
	case accesskey.RoutingPlanOnly:
		return meRoute{Backend: meBackendPlan, Reason: meReasonPlanOnly}
	}
	if id.Bedrock == nil || p.r.bedrock == nil {
		return meRoute{Backend: meBackendPlan, Reason: meReasonNoFallback}
	}
	if b := id.MonthlyBudgetUSD; b != nil && bedrockSpent.GreaterThanOrEqual(*b) {
		return meRoute{Backend: meBackendPlan, Reason: meReasonOverBudget}
	}
	if pk, ok := p.r.bedrock.Breaker.(breakerPeeker); ok {
		if d := pk.Peek(ctx, id.KeyID); d.Route == planbreaker.RouteOpen {
			until := d.OpenUntil
			reason := meReasonBreakerOpen
			if d.Preemptive {
				reason = meReasonPreemptive
			}
			return meRoute{Backend: meBackendBedrock, Reason: reason, Until: &until}
		}
	}
	return meRoute{Backend: meBackendPlan, Reason: meReasonPlanFirst}
}
