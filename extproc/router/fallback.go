package router

import (
	"context"
	"log/slog"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// Fallback reasons (usage events' fallback_reason and the label "reason" of
// ccproxy_extproc_fallbacks_total). An answered Plan attempt that Envoy
// retried gives "plan_<status>", e.g. plan_429.
const (
	// ReasonBreakerOpen: the access key's circuit breaker was open, so the
	// request went straight to Bedrock.
	ReasonBreakerOpen = "breaker_open"
	// ReasonPlanUnreachable: the Plan attempt got no response headers (a
	// connect failure, a reset or a per-try timeout).
	ReasonPlanUnreachable = "plan_unreachable"
	// reasonPlanPrefix starts the reason of an answered Plan attempt.
	reasonPlanPrefix = "plan_"
)

// Why a plan_first request of a user with a Bedrock credential goes to Plan
// alone (label "reason" of ccproxy_extproc_fallback_unavailable_total),
// besides the bedrockFailure reasons.
const (
	planAloneNoRoute = "no_fallback_route"
)

// Breaker is the per-access-key Plan circuit breaker (planbreaker.Breaker).
type Breaker interface {
	// State decides how to route the key's next plan_first request.
	State(ctx context.Context, keyID uuid.UUID) (planbreaker.Decision, error)
	// Failure records a Plan attempt that got no response.
	Failure(ctx context.Context, keyID uuid.UUID)
}

// mayFallBack reports whether the request is a plan_first request that
// Bedrock could answer if Plan does not.
func (p *Processor) mayFallBack() bool {
	return (p.kind == pathMessages || p.kind == pathCountTokens) &&
		p.identity.RoutingStrategy == accesskey.RoutingPlanFirst &&
		p.identity.Bedrock != nil && p.r.bedrock != nil
}

// routePlanFirst routes a plan_first request whose user has a Bedrock
// credential (DESIGN.md "Routing policy"). Anything that makes a fallback
// impossible — no fallback route for the region yet, a spent budget, an
// unusable credential, a model Bedrock does not serve, a body that cannot
// be translated — sends it to Plan alone, which answers it (or refuses it)
// exactly as it would without the gateway. Otherwise the translated request
// is stored for the upstream processor and the access key's circuit
// breaker decides: closed (or this request is the half-open probe) →
// plan+bedrock-<region>, Plan first with Envoy's retry on Bedrock; open →
// bedrock-<region>.
func (p *Processor) routePlanFirst(ctx context.Context, body []byte, common *extprocv3.CommonResponse) {
	bc := p.r.bedrock
	region := p.identity.Bedrock.Region
	planAlone := func(reason string) {
		p.r.metrics.planAlone.WithLabelValues(reason).Inc()
		p.r.log.LogAttrs(ctx, slog.LevelDebug, "plan_first request sent to Plan without a fallback",
			slog.String("request_id", p.requestID), slog.String("reason", reason))
		p.setRoute(common, dataplane.RoutePlan)
	}
	cfg := bc.Runtime.Current()
	if cfg == nil {
		planAlone(refuseNoRuntime)
		return
	}
	if !cfg.HasFallback(region) {
		planAlone(planAloneNoRoute)
		return
	}
	if _, over := p.budgetSpent(ctx); over {
		planAlone(refuseBudget)
		return
	}
	r, bf := p.prepareBedrock(ctx, body, cfg)
	if bf != nil {
		planAlone(bf.reason)
		return
	}
	var d planbreaker.Decision
	if bc.Breaker != nil {
		// State answers from this replica's breaker when Redis fails; the
		// error only says ctx ended, and then routing hardly matters.
		d, _ = bc.Breaker.State(ctx, p.identity.KeyID)
	}
	if d.Route == planbreaker.RouteOpen && cfg.HasRegion(region) {
		p.fallback, p.fallbackReason = true, ReasonBreakerOpen
		p.r.metrics.fallbacks.WithLabelValues(ReasonBreakerOpen).Inc()
		p.r.log.LogAttrs(ctx, slog.LevelInfo, "plan_first request fell back to Bedrock",
			slog.String("request_id", p.requestID), slog.String("reason", ReasonBreakerOpen),
			slog.Time("open_until", d.OpenUntil))
		p.handOff(common, r, dataplane.BedrockRoutePrefix+region)
		return
	}
	// Plan first: the response tells which backend answered (whoAnswered).
	r.KeyID = p.identity.KeyID
	r.Probe = d.Route == planbreaker.RouteProbe
	p.fallbackKind, p.fallbackModel = p.bedrockKind, p.backendModel
	p.bedrockKind, p.backendModel = bedrockNone, ""
	p.handOff(common, r, dataplane.FallbackRoutePrefix+region)
}

// readResponseAttributes notes the response attributes Envoy sends with the
// response headers.
func (p *Processor) readResponseAttributes(req *extprocv3.ProcessingRequest) {
	v := req.GetAttributes()[dataplane.AttributesKey].GetFields()[dataplane.AttemptCount]
	switch x := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		// A CEL uint64 becomes a number value (ext_proc matching_utils.cc).
		p.attemptCount = int(x.NumberValue)
	case *structpb.Value_StringValue:
		p.attemptCount, _ = strconv.Atoi(x.StringValue)
	}
}

// whoAnswered decides, for a plan+bedrock route, which backend answered
// (or, when called from Close without a response, which one was tried
// last): from the attempts the upstream processor recorded, else from the
// attempt count (with previous_priorities and one retry, a second attempt
// is Bedrock's). When it was Bedrock, the response is converted as for a
// Bedrock route and the usage event carries the fallback and its reason.
// A Plan attempt without response headers is reported to the breaker here:
// the upstream processor, which reports answered attempts, never learns of
// it.
func (p *Processor) whoAnswered(ctx context.Context) {
	kind := p.fallbackKind
	p.fallbackKind = bedrockNone // decided once
	var attempts []handoff.Attempt
	if p.handoffReq != nil {
		attempts = p.handoffReq.Attempts.List()
	}
	last := dataplane.BackendPlan
	switch {
	case len(attempts) > 0:
		last = attempts[len(attempts)-1].Backend
	case p.attemptCount >= 2:
		last = dataplane.BackendBedrock
	}
	if last != dataplane.BackendBedrock {
		return
	}
	p.bedrockKind, p.backendModel = kind, p.fallbackModel
	p.fallback = true
	p.fallbackReason = ReasonPlanUnreachable
	for _, a := range attempts {
		if a.Backend == dataplane.BackendPlan {
			if a.Status != 0 {
				p.fallbackReason = reasonPlanPrefix + strconv.Itoa(a.Status)
			}
			break
		}
	}
	if p.fallbackReason == ReasonPlanUnreachable && p.r.bedrock.Breaker != nil {
		p.r.bedrock.Breaker.Failure(ctx, p.identity.KeyID)
	}
	p.r.metrics.fallbacks.WithLabelValues(p.fallbackReason).Inc()
	p.r.log.LogAttrs(ctx, slog.LevelInfo, "plan_first request fell back to Bedrock",
		slog.String("request_id", p.requestID), slog.String("reason", p.fallbackReason),
		slog.Int("attempts", max(len(attempts), p.attemptCount)))
}
