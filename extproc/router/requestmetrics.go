package router

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// modelOther is the model label of requests for a model the catalog does
// not list, so that a client cannot grow the label set.
const modelOther = "other"

// requestMetrics are the per-request histograms and error counts by
// provider and model. Their label children are cached by label values:
// WithLabelValues allocates its variadic argument on every call, a map
// lookup under a read lock allocates nothing, and the label sets are
// bounded (catalog models, "other", closed sets of outcomes and types).
type requestMetrics struct {
	duration *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	errors   *prometheus.CounterVec

	mu        sync.RWMutex
	observers map[observerKey]requestObservers
	errCounts map[errorKey]prometheus.Counter
}

type observerKey struct{ provider, model, outcome string }

type requestObservers struct{ duration, ttft prometheus.Observer }

type errorKey struct{ provider, errType string }

func newRequestMetrics() *requestMetrics {
	buckets := []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
	return &requestMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ccproxy_extproc_request_duration_seconds",
			Help:    "Time from a metered request's headers to the end of its response (or of its stream, when aborted), by provider, model (catalog models; \"other\") and outcome (success, error, aborted).",
			Buckets: buckets,
		}, []string{"provider", "model", "outcome"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ccproxy_extproc_ttft_seconds",
			Help:    "Time from a metered request's headers to its first token (streamed responses) or its response headers, by provider, model (catalog models; \"other\") and outcome (success, error, aborted).",
			Buckets: buckets,
		}, []string{"provider", "model", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_errors_total",
			Help: "Metered requests that ended in an error, by provider and type (Anthropic's error types by status: invalid_request_error, authentication_error, permission_error, not_found_error, request_too_large, rate_limit_error, api_error, unavailable, timeout_error, overloaded_error, client_error; no_response when no response came).",
		}, []string{"provider", "type"}),
		observers: map[observerKey]requestObservers{},
		errCounts: map[errorKey]prometheus.Counter{},
	}
}

func (m *requestMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.ttft, m.errors}
}

// observe records ev, whose model label is model.
func (m *requestMetrics) observe(ev *usage.Event, model string) {
	outcome := usage.Outcome(ev)
	k := observerKey{ev.Provider, model, outcome}
	m.mu.RLock()
	o, ok := m.observers[k]
	m.mu.RUnlock()
	if !ok {
		o = requestObservers{
			duration: m.duration.WithLabelValues(k.provider, k.model, k.outcome),
			ttft:     m.ttft.WithLabelValues(k.provider, k.model, k.outcome),
		}
		m.mu.Lock()
		m.observers[k] = o
		m.mu.Unlock()
	}
	o.duration.Observe(ev.Latency.Seconds())
	if ev.TTFT > 0 {
		o.ttft.Observe(ev.TTFT.Seconds())
	}
	if et := usage.ErrorType(ev.Status); et != "" {
		ek := errorKey{ev.Provider, et}
		m.mu.RLock()
		c, ok := m.errCounts[ek]
		m.mu.RUnlock()
		if !ok {
			c = m.errors.WithLabelValues(ek.provider, ek.errType)
			m.mu.Lock()
			m.errCounts[ek] = c
			m.mu.Unlock()
		}
		c.Inc()
	}
}

// catalogModel is the model label of a requested model: its catalog id when
// the catalog (the GET /v1/models list) has it, by id or by the id without
// its date suffix (claude-sonnet-4-5 for claude-sonnet-4-5-20250929), else
// "other".
func catalogModel(models []Model, requested string) string {
	for i := range models {
		id := models[i].ID
		if id == requested {
			return id
		}
		if n := len(requested); n > 0 && len(id) > n+1 && id[:n] == requested && id[n] == '-' && allDigits(id[n+1:]) {
			return id
		}
	}
	return modelOther
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
