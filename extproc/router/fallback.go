package router

import (
	"context"
	"log/slog"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Fallback reasons (usage events' fallback_reason and the label "reason" of
// ccproxy_extproc_fallbacks_total). An answered Plan attempt that Envoy
// retried gives "plan_<status>", e.g. plan_429.
const (
	// ReasonBreakerOpen: the access key's circuit breaker was open, so the
	// request went straight to Bedrock.
	ReasonBreakerOpen = "breaker_open"
	// ReasonPreemptive: the access key's breaker was open because the
	// user's Plan utilization reached their pre-emptive failover threshold
	// (planbreaker.Preempt), so the request went to Bedrock before Plan
	// could refuse it.
	ReasonPreemptive = "preemptive"
	// ReasonPlanUnreachable: the Plan attempt got no response headers (a
	// connect failure, a reset or a per-try timeout).
	ReasonPlanUnreachable = "plan_unreachable"
	// ReasonPlanNoHost: Envoy had no Plan host (a STRICT_DNS name that does
	// not resolve leaves priority 0 empty), so the first attempt already
	// went to Bedrock. That is Envoy's state, not Plan's: the breaker is not
	// charged.
	ReasonPlanNoHost = "plan_no_host"
	// ReasonPlanAttemptFailed: the gateway's own upstream processor failed
	// the Plan attempt (its reply missed Envoy's message timeout, or its
	// stream failed), the attempt stalled until its per-try timeout (Envoy
	// releases before 1.36) and Envoy retried on Bedrock. The gateway
	// failed, not Plan: the breaker is not charged. The router-level
	// processor normally answers such a request at once (AttemptFailed), so
	// this reason only appears when that answer did not reach Envoy.
	ReasonPlanAttemptFailed = "plan_attempt_failed"
	// reasonPlanPrefix starts the reason of an answered Plan attempt.
	reasonPlanPrefix = "plan_"
)

// Why a Messages request goes to Plan alone (label "reason" of
// ccproxy_extproc_fallback_unavailable_total), besides the bedrockFailure
// reasons of a plan_first user with a Bedrock credential.
const (
	planAloneNoRoute = "no_fallback_route"
	// planAlonePlanOnly: the user's routing strategy is plan_only.
	planAlonePlanOnly = "plan_only"
	// planAloneNoCredential: a plan_first user without a Bedrock credential.
	planAloneNoCredential = "no_credential"
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
	return (p.req.kind == pathMessages || p.req.kind == pathCountTokens) &&
		p.req.identity.RoutingStrategy == accesskey.RoutingPlanFirst &&
		p.req.identity.Bedrock != nil && p.r.bedrock != nil
}

// routePlanFirst routes a plan_first request whose user has a Bedrock
// credential (docs/design.md, "Plan first, Bedrock second"). Anything that
// makes a fallback impossible — no fallback route for the region yet, a
// spent budget, an unusable credential, a model Bedrock does not serve, a
// body that cannot be translated — sends it to Plan alone, which answers it
// (or refuses it) exactly as it would without the gateway. Otherwise the
// translated request is stored for the upstream processor and the access
// key's circuit breaker decides: closed (or this request is the half-open
// probe) → plan+bedrock-<region>, Plan first with Envoy's retry on Bedrock;
// open → bedrock-<region>.
func (p *Processor) routePlanFirst(ctx context.Context, body []byte, common *extprocv3.CommonResponse) {
	bc := p.r.bedrock
	region := p.req.identity.Bedrock.Region
	planAlone := func(reason string) {
		p.r.metrics.planAlone.WithLabelValues(reason).Inc()
		p.logger().LogAttrs(ctx, slog.LevelDebug, "plan_first request sent to Plan without a fallback", slog.String("reason", reason))
		p.backend = &plan{}
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
	if p.req.budget.noBedrock {
		// A plan_only budget (or a used-up Bedrock block budget): Plan's
		// refusals reach the client instead of falling back.
		p.req.budget.recorded = usage.BudgetPlanOnly
		planAlone(refuseBudget)
		return
	}
	ts := p.childSpan(SpanTranslate)
	bedrock, r, bf := p.newBedrockBackend(ctx, body, cfg)
	if ts != nil {
		endChild(ts, bf != nil, "refused")
	}
	if bf != nil {
		planAlone(bf.reason)
		return
	}
	var d planbreaker.Decision
	if bc.Breaker != nil {
		// State answers from this replica's breaker when Redis fails; the
		// error only says ctx ended, and then routing hardly matters.
		bs := p.childSpan(SpanBreaker)
		d, _ = bc.Breaker.State(ctx, p.req.identity.KeyID)
		if bs != nil {
			bs.SetAttributes(attribute.String("ccproxy.breaker.route", d.Route.String()))
			bs.End()
		}
	}
	if d.Route == planbreaker.RouteOpen && cfg.HasRegion(region) {
		reason := ReasonBreakerOpen
		if d.Preemptive {
			reason = ReasonPreemptive
		}
		p.r.metrics.fallbacks.WithLabelValues(reason).Inc()
		p.logger().LogAttrs(ctx, slog.LevelInfo, "plan_first request fell back to Bedrock",
			slog.String("reason", reason), slog.Time("open_until", d.OpenUntil))
		p.backend = &planFirst{bedrock: bedrock, chosen: bedrock, reason: reason}
		p.handOff(common, r, dataplane.BedrockRoute(region))
		return
	}
	// Plan first: the response tells which backend answered (decide).
	r.KeyID = p.req.identity.KeyID
	r.Probe = d.Route == planbreaker.RouteProbe
	r.Preempt = p.preemptThreshold()
	p.backend = &planFirst{bedrock: bedrock}
	p.handOff(common, r, dataplane.FallbackRoute(region))
}

// planFirst is the backend of a plan_first request that may fall back: Plan
// answers through the plan backend, unless Envoy's retry moved the request
// to Bedrock (or the breaker sent it there at once), and then the Bedrock
// backend converts and meters the answer. Which one answered is decided once,
// from the attempts the upstream processor recorded, with Envoy's attempt
// count as a cross-check.
type planFirst struct {
	plan    plan
	bedrock bedrockBackend
	chosen  backend // nil until decided
	reason  string  // why Bedrock answered; "" when Plan did
	// attemptCount is upstream.request_attempt_count, 0 when not sent.
	attemptCount int
}

func (b *planFirst) responseHeaders(ctx context.Context, p *Processor, req *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	if b.chosen == nil {
		b.readAttemptCount(req)
		b.decide(ctx, p)
	}
	b.chosen.responseHeaders(ctx, p, req, rh, resp)
}

func (b *planFirst) responseBody(ctx context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse {
	if b.chosen == nil {
		b.decide(ctx, p) // a body without headers does not happen; stay safe
	}
	return b.chosen.responseBody(ctx, p, body, end)
}

func (b *planFirst) streamEnded(ctx context.Context, p *Processor) {
	if b.chosen == nil && p.resp.status == 0 {
		// No response reached this filter: whatever Plan attempt there was
		// got none either.
		b.decide(ctx, p)
	}
}

func (b *planFirst) meter(p *Processor, ev *usage.Event) {
	if b.chosen == nil {
		b.plan.meter(p, ev)
		return
	}
	b.chosen.meter(p, ev)
	if b.reason != "" {
		ev.Fallback, ev.FallbackReason = true, b.reason
	}
}

// readAttemptCount notes the response attribute Envoy sends with the
// response headers.
func (b *planFirst) readAttemptCount(req *extprocv3.ProcessingRequest) {
	v := req.GetAttributes()[dataplane.AttributesKey].GetFields()[dataplane.AttemptCount]
	switch x := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		// A CEL uint64 becomes a number value (ext_proc matching_utils.cc).
		b.attemptCount = int(x.NumberValue)
	case *structpb.Value_StringValue:
		b.attemptCount, _ = strconv.Atoi(x.StringValue)
	}
}

// decide settles which backend answered (or, when called without a
// response, which one was tried last): from the attempts the upstream
// processor recorded, else from the attempt count (with previous_priorities
// and one retry, a second attempt is Bedrock's). A Plan attempt without
// response headers that Envoy retried on Bedrock is reported to the breaker
// here: the upstream processor, which reports answered attempts, never
// learns of it. Envoy's own failures — no Plan host, a local reply that
// ended a Plan attempt (never retried) — and the upstream processor's own
// (an attempt it recorded as failed) charge nothing.
func (b *planFirst) decide(ctx context.Context, p *Processor) {
	var attempts []handoff.Attempt
	if p.stored.req != nil {
		attempts = p.stored.req.Attempts.List()
	}
	last := dataplane.BackendPlan
	switch {
	case len(attempts) > 0:
		last = attempts[len(attempts)-1].Backend
	case b.attemptCount >= 2:
		last = dataplane.BackendBedrock
	}
	if last != dataplane.BackendBedrock {
		b.chosen = &b.plan
		return
	}
	b.chosen = b.bedrock
	b.reason = ReasonPlanUnreachable
	if len(attempts) > 0 {
		// The upstream processor saw every attempt: none on Plan means Envoy
		// found no Plan host and sent the first attempt to priority 1
		// (docs/envoy.md, "Retries and priorities").
		b.reason = ReasonPlanNoHost
	}
	for _, a := range attempts {
		if a.Backend == dataplane.BackendPlan {
			switch {
			case a.Status != 0:
				b.reason = reasonPlanPrefix + strconv.Itoa(a.Status)
			case a.Failure != handoff.FailureNone:
				b.reason = ReasonPlanAttemptFailed
			default:
				b.reason = ReasonPlanUnreachable
			}
			break
		}
	}
	if b.reason == ReasonPlanUnreachable && p.r.bedrock.Breaker != nil {
		p.r.bedrock.Breaker.Failure(ctx, p.req.identity.KeyID)
	}
	p.r.metrics.fallbacks.WithLabelValues(b.reason).Inc()
	p.logger().LogAttrs(ctx, slog.LevelInfo, "plan_first request fell back to Bedrock",
		slog.String("reason", b.reason), slog.Int("attempts", max(len(attempts), b.attemptCount)))
}
