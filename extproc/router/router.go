// Package router owns the router-level ext_proc processor: the per-request
// state machine that runs in Envoy's HTTP connection manager before the
// router filter, where every decision that can refuse a request is made
// (docs/design.md, "Two ext_proc filters").
//
// For each request a Processor authenticates the access key, answers what
// the gateway answers itself (HEAD probes, GET /v1/models, refusals, unknown
// paths), strips the key from the path, chooses one backend and the route
// (route.go) — Plan pass-through (plan.go), Bedrock Messages
// (bedrock_messages.go), Bedrock CountTokens (bedrock_counttokens.go),
// Claude Code's Bedrock mode (bedrock_mode.go) or Plan first with Bedrock
// fallback (fallback.go) — and hands that backend the response, which it
// converts where needed and meters into a usage.Event. A Plan pass-through
// request and its answer are never changed, nor the client's credential
// headers on their way to Plan.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Claude Code's attribution headers.
const (
	sessionIDHeader = "x-claude-code-session-id"
	agentIDHeader   = "x-claude-code-agent-id"
	parentIDHeader  = "x-claude-code-parent-agent-id"
)

// Model is one entry of the GET /v1/models answer.
type Model struct {
	ID          string
	DisplayName string
	CreatedAt   time.Time
}

// Config configures a Router.
type Config struct {
	// Keys resolves access keys. Required.
	Keys accesskey.Resolver
	// Usage receives one event per request that reached an upstream.
	// Required.
	Usage usage.Sink
	// Models is the GET /v1/models answer, in order.
	Models []Model
	// ModelsFunc, when set, supplies the GET /v1/models answer for each
	// request instead of Models (e.g. from the control plane's runtime
	// configuration, which changes while extproc runs).
	ModelsFunc func() []Model
	// Logger receives the router's logs; nil discards them.
	Logger *slog.Logger
	// Metrics records the router's metrics. Required (see NewMetrics).
	Metrics *Metrics
	// Now is the clock for usage timings; nil means time.Now.
	Now func() time.Time
	// Bedrock serves bedrock_only users and Claude Code's Bedrock mode;
	// nil refuses them with a clear error.
	Bedrock *BedrockConfig
	// Limits bound each access key's concurrency and request size.
	Limits Limits
	// SkipPlanRequestBodies routes the Messages requests that go to Plan
	// alone on their headers, without their bodies (Processor.skipsBody):
	// cheaper, but the usage rows of Plan's refusals then name no model.
	SkipPlanRequestBodies bool
	// Tracer, when set, traces every request (tracing.go); nil traces
	// nothing and costs nothing.
	Tracer trace.Tracer
	// RateLimits enforces the per-minute limits that key lookups carry
	// (ratelimit.Limiter); nil enforces none.
	RateLimits RateLimiter
	// SelfService answers GET /ak/<key>/me (the KeyService client); nil
	// answers it 503.
	SelfService SelfService
}

// Router holds what every request's Processor shares. It is safe for
// concurrent use.
type Router struct {
	keys    accesskey.Resolver
	sink    usage.Sink
	models  []Model
	modelsF func() []Model
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	bedrock *BedrockConfig
	limits  Limits
	slots   *keySlots
	// skipPlanBodies is Config.SkipPlanRequestBodies.
	skipPlanBodies bool
	tracer         trace.Tracer

	rateLimits RateLimiter
	self       SelfService
}

// New returns a Router for cfg.
func New(cfg Config) (*Router, error) {
	if cfg.Keys == nil {
		return nil, errors.New("router: Config.Keys is required")
	}
	if cfg.Usage == nil {
		return nil, errors.New("router: Config.Usage is required")
	}
	if cfg.Metrics == nil {
		return nil, errors.New("router: Config.Metrics is required")
	}
	if b := cfg.Bedrock; b != nil && (b.Runtime == nil || b.Credentials == nil || b.Requests == nil) {
		return nil, errors.New("router: Config.Bedrock needs Runtime, Credentials and Requests")
	}
	for i, m := range cfg.Models {
		if m.ID == "" {
			return nil, fmt.Errorf("router: model %d has no ID", i)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limits.MaxConcurrentPerKey < 0 || cfg.Limits.MaxRequestBodyBytes < 0 {
		return nil, errors.New("router: Config.Limits must not be negative")
	}
	return &Router{
		limits:  cfg.Limits,
		slots:   newKeySlots(cfg.Limits.MaxConcurrentPerKey),
		keys:    cfg.Keys,
		sink:    cfg.Usage,
		models:  append([]Model(nil), cfg.Models...),
		modelsF: cfg.ModelsFunc,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		now:     cfg.Now,
		bedrock: cfg.Bedrock,

		skipPlanBodies: cfg.SkipPlanRequestBodies,
		tracer:         cfg.Tracer,
		rateLimits:     cfg.RateLimits,
		self:           cfg.SelfService,
	}, nil
}

// modelList is the current GET /v1/models answer.
func (r *Router) modelList() []Model {
	if r.modelsF != nil {
		return r.modelsF()
	}
	return r.models
}

// NewProcessor returns the processor for one ext_proc stream (one HTTP
// request). The caller feeds it every ProcessingRequest of the stream and
// calls Close when the stream ends.
func (r *Router) NewProcessor() *Processor {
	return &Processor{r: r}
}

// emit records ev in the sink and the metrics.
func (r *Router) emit(ctx context.Context, ev usage.Event) {
	// Metrics first: once the sink has the event, anything waiting for it
	// (tests, a flush at shutdown) may read the metrics.
	r.metrics.usageEmitted(ev)
	r.metrics.perRequest.observe(&ev, catalogModel(r.modelList(), ev.Model))
	r.sink.Record(ctx, ev)
}
