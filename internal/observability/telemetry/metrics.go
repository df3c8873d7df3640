package telemetry

import (
	"context"
	"fmt"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// RequestMetrics is the per-request metric set as OpenTelemetry
// instruments, with the CloudWatch names (proxy.requests, proxy.latency,
// …) and the same dimensions as attributes: provider, model, status,
// stream, token_type, error_type, from_provider, to_provider, reason and,
// for the opt-in per-user set, user_id.
type RequestMetrics struct {
	perUser      bool
	requests     metric.Int64Counter
	latency      metric.Float64Histogram
	ttft         metric.Float64Histogram
	tokens       metric.Int64Counter
	cost         metric.Float64Counter
	errors       metric.Int64Counter
	fallbacks    metric.Int64Counter
	userRequests metric.Int64Counter
	userTokens   metric.Int64Counter
	userCost     metric.Float64Counter
}

// NewRequestMetrics creates the instruments on m; the proxy.user.* ones
// only record when perUser is set. A nil m gives a nil *RequestMetrics,
// whose Record does nothing.
func NewRequestMetrics(m metric.Meter, perUser bool) (*RequestMetrics, error) {
	if m == nil {
		return nil, nil
	}
	r := &RequestMetrics{perUser: perUser}
	var err error
	ms := metric.WithExplicitBucketBoundaries(50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
	errs := []error{}
	add := func(e error) { errs = append(errs, e) }
	r.requests, err = m.Int64Counter(emf.MetricRequests, metric.WithUnit("{request}"), metric.WithDescription("Requests that reached an upstream, by provider, model, status and stream."))
	add(err)
	r.latency, err = m.Float64Histogram(emf.MetricLatency, metric.WithUnit("ms"), metric.WithDescription("Time from the request to the end of the response."), ms)
	add(err)
	r.ttft, err = m.Float64Histogram(emf.MetricTTFT, metric.WithUnit("ms"), metric.WithDescription("Time to the first token of streamed responses."), ms)
	add(err)
	r.tokens, err = m.Int64Counter(emf.MetricTokens, metric.WithUnit("{token}"), metric.WithDescription("Tokens by provider, model and token type (input, output, cache_read, cache_write, cache_write_5m, cache_write_1h)."))
	add(err)
	r.cost, err = m.Float64Counter(emf.MetricCost, metric.WithUnit("USD"), metric.WithDescription("Cost in US dollars (Bedrock spend; the list-price equivalent for Plan)."))
	add(err)
	r.errors, err = m.Int64Counter(emf.MetricErrors, metric.WithUnit("{request}"), metric.WithDescription("Failed requests by provider and error type."))
	add(err)
	r.fallbacks, err = m.Int64Counter(emf.MetricFallbacks, metric.WithUnit("{request}"), metric.WithDescription("Requests Bedrock answered instead of Plan, by reason."))
	add(err)
	if perUser {
		r.userRequests, err = m.Int64Counter(emf.MetricUserRequests, metric.WithUnit("{request}"), metric.WithDescription("Requests by user id."))
		add(err)
		r.userTokens, err = m.Int64Counter(emf.MetricUserTokens, metric.WithUnit("{token}"), metric.WithDescription("Tokens of every type by user id."))
		add(err)
		r.userCost, err = m.Float64Counter(emf.MetricUserCost, metric.WithUnit("USD"), metric.WithDescription("Cost in US dollars by user id."))
		add(err)
	}
	for _, e := range errs {
		if e != nil {
			return nil, fmt.Errorf("telemetry: instruments: %w", e)
		}
	}
	return r, nil
}

// Record records the metrics of one request.
func (m *RequestMetrics) Record(ctx context.Context, r emf.Request) {
	if m == nil {
		return
	}
	provider, model := dim(r.Provider), dim(r.Model)
	pm := attribute.NewSet(attribute.String("provider", provider), attribute.String("model", model))
	full := metric.WithAttributes(attribute.String("provider", provider), attribute.String("model", model),
		attribute.String("status", strconv.Itoa(r.Status)), attribute.Bool("stream", r.Stream))
	m.requests.Add(ctx, 1, full)
	m.latency.Record(ctx, float64(r.Latency.Milliseconds()), full)
	if r.Stream && r.HasTTFT {
		m.ttft.Record(ctx, float64(r.TTFT.Milliseconds()), metric.WithAttributeSet(pm))
	}
	cost := r.CostUSD.InexactFloat64()
	m.cost.Add(ctx, cost, metric.WithAttributeSet(pm))
	for _, tt := range [...]struct {
		kind string
		n    int64
	}{
		{emf.TokenInput, r.Input}, {emf.TokenOutput, r.Output}, {emf.TokenCacheRead, r.CacheRead},
		{emf.TokenCacheWrite, r.CacheWrite5m + r.CacheWrite1h}, {emf.TokenCacheWrite5m, r.CacheWrite5m}, {emf.TokenCacheWrite1h, r.CacheWrite1h},
	} {
		if tt.n > 0 {
			m.tokens.Add(ctx, tt.n, metric.WithAttributes(attribute.String("provider", provider), attribute.String("model", model), attribute.String("token_type", tt.kind)))
		}
	}
	if et := usage.ErrorType(r.Status); et != "" {
		m.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("provider", provider), attribute.String("error_type", et)))
	}
	if r.FallbackReason != "" {
		m.fallbacks.Add(ctx, 1, metric.WithAttributes(attribute.String("from_provider", usage.ProviderAnthropic),
			attribute.String("to_provider", provider), attribute.String("reason", r.FallbackReason)))
	}
	if m.perUser && r.UserID != "" {
		u := metric.WithAttributes(attribute.String("user_id", r.UserID))
		m.userRequests.Add(ctx, 1, u)
		m.userTokens.Add(ctx, r.Input+r.Output+r.CacheRead+r.CacheWrite5m+r.CacheWrite1h, u)
		m.userCost.Add(ctx, cost, u)
	}
}

func dim(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}
