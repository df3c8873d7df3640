package router

import (
	"context"
	"errors"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Span names. A request's span is the parent of the others; the upstream
// processor (extproc/upstream) opens one SpanUpstreamAttempt per attempt of
// a request it rewrites, the router one for a Plan pass-through request.
const (
	SpanRequest         = "ccproxy.request"
	SpanKeyLookup       = "ccproxy.key_lookup"
	SpanBreaker         = "ccproxy.breaker"
	SpanTranslate       = "ccproxy.translate"
	SpanUpstreamAttempt = "ccproxy.upstream_attempt"
)

// Tracing is done only when Config.Tracer is set: every method below starts
// with a nil check, so that a gateway without tracing allocates nothing for
// it. Attributes are set from the router's own decisions and counts, never
// from a header value, the path (which may hold the access key) or a body.

// startSpan opens the request's span, a child of the trace context Envoy
// sent: first the ext_proc gRPC stream's metadata (Envoy's span for the
// ext_proc call, when Envoy traces), else the request's traceparent header.
func (p *Processor) startSpan(ctx context.Context, h *extprocv3.HttpHeaders) {
	carrier := propagation.MapCarrier{}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("traceparent"); len(v) > 0 {
			carrier["traceparent"] = v[0]
			if s := md.Get("tracestate"); len(s) > 0 {
				carrier["tracestate"] = s[0]
			}
		}
	}
	if carrier["traceparent"] == "" {
		for _, hv := range h.GetHeaders().GetHeaders() {
			if hv.Key == "traceparent" || hv.Key == "tracestate" {
				carrier[hv.Key] = string(rawValue(hv))
			}
		}
	}
	parent := propagation.TraceContext{}.Extract(context.WithoutCancel(ctx), carrier)
	p.spanCtx, p.span = p.r.tracer.Start(parent, SpanRequest,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(p.req.start))
}

// childSpan opens a child of the request's span; nil when not tracing.
func (p *Processor) childSpan(name string, attrs ...attribute.KeyValue) trace.Span {
	if p.span == nil {
		return nil
	}
	_, s := p.r.tracer.Start(p.spanCtx, name, trace.WithAttributes(attrs...))
	return s
}

// endChild ends s (nil: not tracing), marking it failed with reason.
func endChild(s trace.Span, failed bool, reason string) {
	if s == nil {
		return
	}
	if failed {
		s.SetStatus(otelcodes.Error, reason)
	}
	s.End()
}

// keyLookupFailure names a key lookup error for a span status: the kind,
// never the error's text.
func keyLookupFailure(err error) string {
	switch {
	case errors.Is(err, accesskey.ErrMalformed):
		return reasonMalformed
	case errors.Is(err, accesskey.ErrUnknownKey):
		return reasonUnknown
	case errors.Is(err, accesskey.ErrRevoked):
		return reasonRevoked
	}
	return reasonLookup
}

// spanContext is the request span's context, handed to the upstream
// processor; the zero value when not tracing.
func (p *Processor) spanContext() trace.SpanContext {
	if p.span == nil {
		return trace.SpanContext{}
	}
	return p.span.SpanContext()
}

// startPlanAttempt opens the span of a Plan pass-through request's upstream
// attempt (no upstream processor sees those), ended by its response headers.
func (p *Processor) startPlanAttempt() {
	if p.span == nil {
		return
	}
	p.upSpan = p.childSpan(SpanUpstreamAttempt, attribute.String("ccproxy.backend", "plan"), attribute.Int("ccproxy.attempt", 1))
}

func (p *Processor) endPlanAttempt(status int) {
	if p.upSpan == nil {
		return
	}
	p.upSpan.SetAttributes(attribute.Int("http.response.status_code", status))
	endChild(p.upSpan, status == 0 || status >= 500, usage.ErrorType(status))
	p.upSpan = nil
}

// endSpan ends the request's span with what the request came to: ev is its
// usage event, nil for a request answered by the gateway itself.
func (p *Processor) endSpan(ev *usage.Event, status int) {
	if p.span == nil {
		return
	}
	s := p.span
	p.span = nil
	p.endPlanAttempt(0)
	attrs := []attribute.KeyValue{attribute.String("ccproxy.request_id", p.req.id)}
	if p.route != "" {
		attrs = append(attrs, attribute.String("ccproxy.route", p.route))
	}
	if ev != nil {
		status = ev.Status
		u := ev.Usage
		attrs = append(attrs,
			attribute.String("ccproxy.provider", ev.Provider),
			attribute.String("ccproxy.model", ev.Model),
			attribute.Bool("ccproxy.stream", ev.Stream),
			attribute.Bool("ccproxy.fallback", ev.Fallback),
			attribute.Int64("ccproxy.tokens.input", u.InputTokens),
			attribute.Int64("ccproxy.tokens.output", u.OutputTokens),
			attribute.Int64("ccproxy.tokens.cache_read", u.CacheReadInputTokens),
			attribute.Int64("ccproxy.tokens.cache_write_5m", u.CacheWrite5mInputTokens),
			attribute.Int64("ccproxy.tokens.cache_write_1h", u.CacheWrite1hInputTokens),
			attribute.Bool("ccproxy.aborted", ev.Aborted),
		)
		if ev.Fallback {
			attrs = append(attrs, attribute.String("ccproxy.fallback_reason", ev.FallbackReason))
		}
		if ev.Region != "" {
			attrs = append(attrs, attribute.String("ccproxy.region", ev.Region))
		}
		if ev.TTFT > 0 {
			attrs = append(attrs, attribute.Int64("ccproxy.ttft_ms", ev.TTFT.Milliseconds()))
		}
		attrs = p.appendCost(attrs, ev)
	}
	if status != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", status))
	}
	s.SetAttributes(attrs...)
	if et := usage.ErrorType(status); et != "" && (ev != nil || status != 0) {
		s.SetStatus(otelcodes.Error, et)
	}
	s.End()
}

// appendCost adds the request's cost in USD and the kind of price row it
// came from, priced as the ingester prices the request's usage row (the
// rate card the control plane serves, internal/pricing's rules); nothing
// without a rate card. A count_tokens request costs nothing, as its row.
// The usage row stays the record: a price changed between this span and
// the ingester's batch prices the two differently.
func (p *Processor) appendCost(attrs []attribute.KeyValue, ev *usage.Event) []attribute.KeyValue {
	cfg := p.r.runtimeConfig()
	if cfg == nil || cfg.Prices() == nil {
		return attrs
	}
	if ev.PathKind == usage.PathCountTokens {
		return append(attrs, attribute.Float64("ccproxy.cost_usd", 0))
	}
	rates, flag := cfg.Prices().Price(ev.Provider, ev.Region, ev.Model, ev.Time)
	u := ev.Usage
	cost := pricing.Cost(rates, pricing.Tokens{Input: u.InputTokens, Output: u.OutputTokens, CacheRead: u.CacheReadInputTokens,
		CacheWrite5m: u.CacheWrite5mInputTokens, CacheWrite1h: u.CacheWrite1hInputTokens})
	return append(attrs, attribute.Float64("ccproxy.cost_usd", cost.InexactFloat64()), attribute.String("ccproxy.price", string(flag)))
}
