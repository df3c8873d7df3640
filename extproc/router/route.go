package router

import (
	"context"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// chooseRoute decides where the request goes, in the reply to its last
// request phase (body is nil when the headers ended the request): it either
// refuses the request (the returned ImmediateResponse) or chooses its backend
// and sets the route in common. Every refusal is decided here, before
// routing, because Envoy does not let the upstream filter refuse cleanly
// (docs/design.md, "Two ext_proc filters").
func (p *Processor) chooseRoute(ctx context.Context, body []byte, common *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if body != nil && (p.req.kind == pathMessages || p.req.kind == pathCountTokens) {
		p.req.fields = scanRequest(body)
		if p.req.sessionID == "" {
			p.req.sessionID = p.req.fields.session
		}
	}
	if body != nil && p.req.kind == pathBedrockModel && p.req.sessionID == "" {
		p.req.sessionID = sessionFromBody(body)
	}
	if p.req.kind == pathMessages || p.req.kind == pathCountTokens {
		// The team's allow-list, before the budgets (skipsBody keeps the
		// body of such users).
		if refusal := p.checkModel(ctx, p.req.fields.model); refusal != nil {
			return refusal
		}
	}
	if refusal := p.applyBudgets(ctx, &body, common); refusal != nil {
		return refusal
	}
	switch {
	case p.req.budget.noBedrock && p.wantsBedrock():
		return p.refuseBudgetAction(ctx)
	case p.wantsBedrock():
		if body == nil {
			return p.refuseBedrock(ctx, refuseBody, 400, "ccproxy: the request has no body", nil)
		}
		return p.routeBedrock(ctx, body, common)
	case body != nil && p.mayFallBack():
		p.routePlanFirst(ctx, body, common)
	default:
		if reason := p.noFallbackReason(); reason != "" {
			p.r.metrics.planAlone.WithLabelValues(reason).Inc()
		}
		p.backend = &plan{}
		p.setRoute(common, dataplane.RoutePlan)
		if p.span != nil {
			p.startPlanAttempt()
		}
	}
	return nil
}

// noFallbackReason says why a Messages or count_tokens request that goes to
// Plan could not have fallen back to Bedrock, for
// ccproxy_extproc_fallback_unavailable_total: the user is plan_only, or
// plan_first without a Bedrock credential, or the gateway has no Bedrock
// configuration. Other requests ("" ) are not counted.
func (p *Processor) noFallbackReason() string {
	if p.req.kind != pathMessages && p.req.kind != pathCountTokens {
		return ""
	}
	switch {
	case p.req.identity.RoutingStrategy == accesskey.RoutingPlanOnly:
		return planAlonePlanOnly
	case p.req.identity.RoutingStrategy != accesskey.RoutingPlanFirst:
		return ""
	case p.req.identity.Bedrock == nil:
		return planAloneNoCredential
	case p.r.bedrock == nil:
		return refuseNotConfigured
	}
	return ""
}

// routeBedrock decides everything about a request that must go to Bedrock
// (a bedrock_only user's, or Claude Code's Bedrock mode): it either refuses
// it or stores the rewritten request for the upstream processor and routes
// it to the user's region.
func (p *Processor) routeBedrock(ctx context.Context, body []byte, common *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	bc := p.r.bedrock
	if bc == nil {
		return p.refuseBedrock(ctx, refuseNotConfigured, 503, "ccproxy: this gateway has no Bedrock configuration; ask the gateway administrator", nil)
	}
	cfg := bc.Runtime.Current()
	if cfg == nil {
		return p.refuseBedrock(ctx, refuseNoRuntime, 503, "ccproxy: the gateway has not received its Bedrock configuration from the control plane yet; try again shortly", nil)
	}
	c := p.req.identity.Bedrock
	if c == nil {
		return p.refuseBedrock(ctx, refuseNoCredential, 500, "ccproxy: no Bedrock credential is registered for your account; ask the gateway administrator to add one", nil)
	}
	if !cfg.HasRegion(c.Region) {
		return p.refuseBedrock(ctx, refuseNoRegion, 503, "ccproxy: the gateway has no Bedrock route for region "+c.Region+" yet; try again shortly", nil)
	}
	if st, over := p.budgetSpent(ctx); over {
		return p.refuseBudget(ctx, st)
	}
	ts := p.childSpan(SpanTranslate)
	b, r, bf := p.newBedrockBackend(ctx, body, cfg)
	if ts != nil {
		endChild(ts, bf != nil, "refused")
	}
	if bf != nil {
		return p.refuseBedrock(ctx, bf.reason, bf.code, bf.msg, bf.cause)
	}
	p.backend = b
	p.handOff(common, r, dataplane.BedrockRoute(c.Region))
	return nil
}

// handOff stores r for the upstream processor and routes the request to
// route with the handoff header.
func (p *Processor) handOff(common *extprocv3.CommonResponse, r *handoff.Request, route string) {
	r.Peer = p.peer
	r.Watcher = p
	r.Trace = p.spanContext()
	p.stored = storedRequest{id: p.r.bedrock.Requests.Put(r), req: r}
	p.setRoute(common, route)
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setHeader(dataplane.StateHeader, []byte(p.stored.id)))
}

// setRoute sets the route header and clear_route_cache in common, which
// must be the reply to the last request phase: Envoy re-matches the route
// only when clear_route_cache comes with a header mutation in the same
// CommonResponse.
func (p *Processor) setRoute(common *extprocv3.CommonResponse, route string) {
	p.route = route
	p.r.metrics.forwarded(route)
	if common.HeaderMutation == nil {
		common.HeaderMutation = &extprocv3.HeaderMutation{}
	}
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setHeader(dataplane.RouteHeader, []byte(p.route)))
	common.ClearRouteCache = true
}
