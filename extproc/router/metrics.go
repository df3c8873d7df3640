package router

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Request outcomes (label "outcome" of ccproxy_extproc_requests_total).
const (
	OutcomeForwarded   = "forwarded"    // sent to an upstream
	OutcomeProbe       = "probe"        // HEAD answered locally
	OutcomeModels      = "models"       // GET /v1/models answered locally
	OutcomeSelfService = "self_service" // GET /me answered locally
	OutcomeRefused     = "unauthorized" // 401
	OutcomeNotFound    = "not_found"    // 404
	OutcomeLookupError = "lookup_error" // key lookup failed: 500
	// OutcomeBedrockRefused: a Bedrock-bound request the gateway could not
	// serve (no credential, unmappable model, …; see
	// ccproxy_extproc_bedrock_refusals_total for the reason).
	OutcomeBedrockRefused = "bedrock_refused"
	// OutcomeConcurrencyLimited: 429, the access key had
	// Limits.MaxConcurrentPerKey requests in flight.
	OutcomeConcurrencyLimited = "concurrency_limited"
	// OutcomeTooLarge: 413, the body exceeded Limits.MaxRequestBodyBytes.
	OutcomeTooLarge = "too_large"
	// OutcomeRateLimited: 429, a per-minute rate limit of the key, its
	// user or its team was reached (extproc/ratelimit).
	OutcomeRateLimited = "rate_limited"
	// OutcomeModelNotAllowed: the model is not on the user's team's
	// allow-list.
	OutcomeModelNotAllowed = "model_not_allowed"
)

// routeLocal labels requests the gateway answered itself.
const routeLocal = "local"

// Auth failure reasons (label "reason" of ccproxy_extproc_auth_failures_total).
const (
	reasonMissing   = "missing"
	reasonMalformed = "malformed"
	reasonUnknown   = "unknown"
	reasonRevoked   = "revoked"
	reasonLookup    = "lookup_error"
)

// Processing phases (label "phase" of ccproxy_extproc_phase_duration_seconds).
const (
	phaseRequestHeaders = iota
	phaseRequestBody
	phaseResponseHeaders
	phaseResponseBody
	phaseTrailers
	numPhases
)

var phaseNames = [numPhases]string{"request_headers", "request_body", "response_headers", "response_body", "trailers"}

// Metrics are the router's Prometheus metrics. Label children used on the
// hot path are resolved once, here.
type Metrics struct {
	requests     *prometheus.CounterVec
	phase        [numPhases]prometheus.Observer
	usageEvents  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	tokens       [5]prometheus.Counter
	unparsed     *prometheus.CounterVec

	forwardedPlan prometheus.Counter

	bedrockRefusals           *prometheus.CounterVec
	bedrockDroppedBetas       prometheus.Counter
	bedrockDroppedFields      prometheus.Counter
	bedrockCredentialRejected prometheus.Counter
	bedrockGuessed            prometheus.Counter
	budgetUnchecked           prometheus.Counter

	fallbacks    *prometheus.CounterVec
	planAlone    *prometheus.CounterVec
	localReplies *prometheus.CounterVec
	// attemptFailures counts requests answered because the upstream
	// processor failed their attempt (AttemptFailed).
	attemptFailures *prometheus.CounterVec
	// perRequest are the duration and TTFT histograms and the error counts
	// by provider and model (requestmetrics.go).
	perRequest *requestMetrics
}

// NewMetrics creates the router's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_requests_total",
			Help: "Requests seen by the router ext_proc processor, by outcome and route.",
		}, []string{"outcome", "route"}),
		usageEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_usage_events_total",
			Help: "Usage events emitted, by path kind and whether the request was aborted.",
		}, []string{"path", "aborted"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_auth_failures_total",
			Help: "Requests refused or failed at access-key authentication, by reason.",
		}, []string{"reason"}),
		unparsed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_usage_unreadable_total",
			Help: "Responses whose usage could not be read, by reason.",
		}, []string{"reason"}),
	}
	phase := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ccproxy_extproc_phase_duration_seconds",
		Help:    "Time the router processor spends on one ext_proc message, by phase (gRPC transport excluded).",
		Buckets: prometheus.ExponentialBuckets(5e-6, 4, 10), // 5µs … 1.3s
	}, []string{"phase"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_tokens_total",
		Help: "Tokens in emitted usage events, by kind.",
	}, []string{"kind"})
	m.bedrockRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_bedrock_refusals_total",
		Help: "Bedrock-bound requests refused before routing, by reason.",
	}, []string{"reason"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_bedrock_dropped_total",
		Help: "anthropic-beta flags and body fields removed by the Bedrock allow-lists (names are logged).",
	}, []string{"kind"})
	m.bedrockDroppedBetas = dropped.WithLabelValues("beta")
	m.bedrockDroppedFields = dropped.WithLabelValues("field")
	m.bedrockCredentialRejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ccproxy_extproc_bedrock_credential_rejected_total",
		Help: "Bedrock answers rejecting the gateway's own Bedrock credential (an administrator must act).",
	})
	m.bedrockGuessed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ccproxy_extproc_bedrock_model_guessed_total",
		Help: "Requests whose Bedrock model id was guessed by the profile rule for want of a mapping.",
	})
	m.budgetUnchecked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ccproxy_extproc_budget_unchecked_total",
		Help: "Bedrock-bound requests served without a budget check because the spend could not be learned (fail open).",
	})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_fallbacks_total",
		Help: "plan_first requests answered by Bedrock, by reason (plan_<status> after a Plan answer Envoy retried, plan_unreachable after a connect failure, reset or per-try timeout, plan_no_host when Envoy had no Plan host, breaker_open when the access key's circuit breaker sent it straight to Bedrock, preemptive when pre-emptive failover had opened it).",
	}, []string{"reason"})
	m.planAlone = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_fallback_unavailable_total",
		Help: "Messages and count_tokens requests sent to Plan without a Bedrock fallback, by reason: plan_only (the user's strategy), no_credential (plan_first without a Bedrock credential), not_configured (the gateway has no Bedrock configuration), and for plan_first users with a credential over_budget, unmappable_model, credential_unusable, invalid_body, no_fallback_route, no_runtime_config.",
	}, []string{"reason"})
	m.localReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_envoy_local_replies_total",
		Help: "Envoy's own error replies (no healthy upstream, timeouts, a failed upstream ext_proc stream) that reached the router-level processor and were answered as Anthropic errors, by status (Envoy 1.37 and later send them to the processor).",
	}, []string{"status"})
	m.attemptFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_upstream_processor_failure_replies_total",
		Help: "Requests the router-level processor answered with an error itself because the upstream processor failed their attempt (failure late: 504, stream_failed: 500), before Envoy's own reply or instead of a stalled attempt, by the attempt's backend and failure.",
	}, []string{"backend", "failure"})
	m.perRequest = newRequestMetrics()
	for _, c := range append(m.perRequest.collectors(), m.requests, m.usageEvents, m.authFailures, m.unparsed, phase, tokens,
		m.bedrockRefusals, dropped, m.bedrockCredentialRejected, m.bedrockGuessed, m.budgetUnchecked, m.fallbacks, m.planAlone, m.localReplies,
		m.attemptFailures) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("router: register metrics: %w", err)
		}
	}
	for i, name := range phaseNames {
		m.phase[i] = phase.WithLabelValues(name)
	}
	for i, kind := range []string{"input", "output", "cache_read", "cache_write_5m", "cache_write_1h"} {
		m.tokens[i] = tokens.WithLabelValues(kind)
	}
	m.forwardedPlan = m.requests.WithLabelValues(OutcomeForwarded, dataplane.RoutePlan)
	return m, nil
}

func (m *Metrics) request(outcome string) {
	m.requests.WithLabelValues(outcome, routeLocal).Inc()
}

// forwarded counts a request routed upstream.
func (m *Metrics) forwarded(route string) {
	if route == dataplane.RoutePlan {
		m.forwardedPlan.Inc()
		return
	}
	m.requests.WithLabelValues(OutcomeForwarded, route).Inc()
}

// localReply counts one of Envoy's local replies. The label takes the
// statuses Envoy answers with and "other", so that it stays bounded.
func (m *Metrics) localReply(status int) {
	label := "other"
	switch status {
	case 408, 413, 500, 502, 503, 504, 507:
		label = strconv.Itoa(status)
	}
	m.localReplies.WithLabelValues(label).Inc()
}

func (m *Metrics) authFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

func (m *Metrics) usageEmitted(ev usage.Event) {
	aborted := "false"
	if ev.Aborted {
		aborted = "true"
	}
	m.usageEvents.WithLabelValues(ev.PathKind, aborted).Inc()
	u := ev.Usage
	for i, n := range [...]int64{u.InputTokens, u.OutputTokens, u.CacheReadInputTokens, u.CacheWrite5mInputTokens, u.CacheWrite1hInputTokens} {
		if n > 0 {
			m.tokens[i].Add(float64(n))
		}
	}
}
