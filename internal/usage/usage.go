// Package usage owns the usage event: what the gateway records about each
// request that reached an upstream (who, which model and provider, tokens,
// timings, fallback), the Sink interface events go to, and small sinks
// (logging, fan-out, in-memory). It is the contract between extproc, which
// emits events (extproc/metering reads the usage from responses), the Redis
// stream that carries them (internal/usagestream) and the admin service's
// ingester (admin/ingest), which prices and stores them.
package usage

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Path kinds of requests that produce usage events.
const (
	PathMessages    = "messages"     // POST /v1/messages
	PathCountTokens = "count_tokens" // POST /v1/messages/count_tokens
)

// ProviderAnthropic is Event.Provider for requests answered by Anthropic's
// API (Plan).
const ProviderAnthropic = "anthropic"

// ProviderBedrock is Event.Provider for requests answered by AWS Bedrock.
const ProviderBedrock = "bedrock"

// Usage is the token usage of one response, in Anthropic's terms.
type Usage struct {
	// InputTokens excludes cached tokens, as in Anthropic's usage object.
	InputTokens  int64
	OutputTokens int64
	// CacheReadInputTokens are input tokens read from the prompt cache.
	CacheReadInputTokens int64
	// CacheWrite5mInputTokens and CacheWrite1hInputTokens are input tokens
	// written to the prompt cache with a 5-minute or 1-hour lifetime
	// (usage.cache_creation.ephemeral_5m_input_tokens / _1h_). A response
	// that gives only cache_creation_input_tokens is counted as 5 minutes,
	// the API's default lifetime.
	CacheWrite5mInputTokens int64
	CacheWrite1hInputTokens int64
}

// Event describes one request that reached an upstream. Exactly one is
// emitted per such request, when its ext_proc stream ends.
type Event struct {
	// RequestID is Envoy's x-request-id.
	RequestID string
	// Time is when the request headers reached extproc.
	Time   time.Time
	UserID uuid.UUID
	KeyID  uuid.UUID
	// TeamID is the user's team when the request was served; uuid.Nil
	// when in none (a value, not a pointer: events stay comparable).
	TeamID uuid.UUID
	// SessionID and AgentID are Claude Code's x-claude-code-session-id and
	// x-claude-code-agent-id headers (empty when absent).
	SessionID string
	AgentID   string
	// ParentAgentID is the x-claude-code-parent-agent-id header: the agent
	// that spawned AgentID, when the client says so (Claude Code 2.1.332
	// does not send it; the admin service then infers the parent).
	ParentAgentID string
	// AgentSpawns counts the tool_use blocks of a streamed answer that call
	// Claude Code's subagent tool (Agent, or Task in older releases): each
	// starts a subagent. Read from the answer's content_block_start events,
	// never from the request body; 0 for non-streamed answers.
	AgentSpawns int
	// ClientVersion is the Claude Code version from a User-Agent such as
	// "claude-cli/2.1.332 (external, sdk-cli)"; for other clients it is the
	// first User-Agent product token (e.g. "python-httpx/0.28.1"), at most
	// 64 bytes.
	ClientVersion string
	// PathKind is PathMessages or PathCountTokens.
	PathKind string
	// Model is the model the request asked for (the body's "model"), at
	// most 256 bytes.
	Model string
	// Route is the routing decision (e.g. "plan").
	Route string
	// Provider is the backend that answered: ProviderAnthropic or
	// ProviderBedrock.
	Provider string
	// Region is the AWS region of a Bedrock request ("" for Anthropic):
	// Bedrock prices differ per region.
	Region string
	// Stream reports the request's "stream": true.
	Stream bool
	// Status is the upstream's HTTP status, 0 if no response headers came.
	Status int
	Usage  Usage
	// CountedInputTokens is the input_tokens answer of a count_tokens
	// request. It is not usage: counting tokens is not billed.
	CountedInputTokens int64
	// TTFT is the time from the request headers to the first token: the
	// response body chunk that completed the first content_block_delta
	// event for SSE responses, the response headers otherwise. Zero when
	// no token arrived.
	TTFT time.Duration
	// Latency is the time from the request headers to the end of the
	// response (or of the ext_proc stream, for aborted requests).
	Latency time.Duration
	// Aborted reports that the response did not end: the client went away
	// or the upstream broke mid-response. Usage then holds what was seen.
	Aborted bool
	// Fallback, FallbackReason and BackendModel describe a Bedrock fallback
	// (later issues fill them).
	Fallback       bool
	FallbackReason string
	BackendModel   string
	// BudgetAction is what a budget did to the request (BudgetDowngrade or
	// BudgetPlanOnly; "" when none acted) and OriginalModel, for a
	// downgrade, the model the client asked for (Model is then the model
	// served).
	BudgetAction  string
	OriginalModel string
	// RejectedCredentialID is the gateway's Bedrock credential that AWS
	// refused for this request (AccessDenied, UnrecognizedClient, an
	// invalid signature or an expired token); the zero UUID otherwise. The
	// admin service notifies the administrators of it.
	RejectedCredentialID uuid.UUID
	// PlanLimits is the subscription rate-limit state the Plan answer
	// announced (anthropic-ratelimit-unified-* headers); zero when it
	// announced none (API-key traffic, Bedrock answers).
	PlanLimits PlanLimits
}

// Budget actions a usage event records (docs/budgets.md).
const (
	BudgetDowngrade = "downgrade"
	BudgetPlanOnly  = "plan_only"
)

// Unified rate-limit statuses (anthropic-ratelimit-unified-status and the
// per-window statuses).
const (
	PlanStatusAllowed        = "allowed"
	PlanStatusAllowedWarning = "allowed_warning"
	PlanStatusRejected       = "rejected"
)

// PlanLimits is a Plan subscription's rate-limit state as one answer
// announced it. Anthropic sends it on subscription traffic as the
// anthropic-ratelimit-unified-* response headers: status, representative-
// claim (the window that binds: five_hour, seven_day, …), reset (of that
// window), and per window 5h-/7d-utilization (a fraction, 1 = the limit)
// and 5h-/7d-reset (unix seconds).
type PlanLimits struct {
	// Status is allowed, allowed_warning or rejected ("" when absent).
	Status string
	// Claim is the representative claim ("" when absent).
	Claim string
	// Utilization5h and Utilization7d are valid when Has5h and Has7d.
	Utilization5h float64
	Utilization7d float64
	Has5h, Has7d  bool
	// Reset5h, Reset7d and Reset are zero when absent.
	Reset5h time.Time
	Reset7d time.Time
	Reset   time.Time
}

// Present reports whether the answer carried any of the headers read.
func (l PlanLimits) Present() bool {
	return l.Status != "" || l.Claim != "" || l.Has5h || l.Has7d || !l.Reset.IsZero() ||
		!l.Reset5h.IsZero() || !l.Reset7d.IsZero()
}

// A Sink receives usage events. Record is called on the ext_proc stream's
// goroutine when the response has ended — before the reply that releases
// its end to the client — or, for a response that did not end, when the
// stream closes. It holds up the end of the response while it runs, so it
// must return quickly: a sink that does I/O either queues the event and
// delivers it elsewhere, or bounds its wait (the Redis producer's
// synchronous XADD). Sinks must be safe for concurrent use.
type Sink interface {
	Record(ctx context.Context, ev Event)
}

// SinkFunc adapts a function to the Sink interface.
type SinkFunc func(ctx context.Context, ev Event)

// Record calls f(ctx, ev).
func (f SinkFunc) Record(ctx context.Context, ev Event) { f(ctx, ev) }

// FanOut is a Sink that records every event in each of its sinks, in order.
type FanOut []Sink

// Record records ev in every sink of f.
func (f FanOut) Record(ctx context.Context, ev Event) {
	for _, s := range f {
		s.Record(ctx, ev)
	}
}

// Discard is a Sink that drops every event.
type Discard struct{}

// Record does nothing.
func (Discard) Record(context.Context, Event) {}

// Error types of failed requests (ErrorType): Anthropic's error types for
// the statuses the API documents, and two of the gateway's own. The set is
// closed so that metric dimensions and labels built on it stay bounded.
const (
	ErrorInvalidRequest = "invalid_request_error" // 400
	ErrorAuthentication = "authentication_error"  // 401
	ErrorPermission     = "permission_error"      // 403
	ErrorNotFound       = "not_found_error"       // 404
	ErrorTooLarge       = "request_too_large"     // 413
	ErrorRateLimit      = "rate_limit_error"      // 429
	ErrorAPI            = "api_error"             // 500 and other 5xx
	ErrorUnavailable    = "unavailable"           // 502, 503: no upstream could take it
	ErrorTimeout        = "timeout_error"         // 504
	ErrorOverloaded     = "overloaded_error"      // 529
	ErrorClient         = "client_error"          // other 4xx
	ErrorNoResponse     = "no_response"           // no response headers at all (status 0)
)

// ErrorType classifies the status a request ended with: "" for a success
// (1xx–3xx), else one of the Error* constants.
func ErrorType(status int) string {
	switch {
	case status == 0:
		return ErrorNoResponse
	case status < 400:
		return ""
	}
	switch status {
	case 400:
		return ErrorInvalidRequest
	case 401:
		return ErrorAuthentication
	case 403:
		return ErrorPermission
	case 404:
		return ErrorNotFound
	case 413:
		return ErrorTooLarge
	case 429:
		return ErrorRateLimit
	case 502, 503:
		return ErrorUnavailable
	case 504:
		return ErrorTimeout
	case 529:
		return ErrorOverloaded
	}
	if status < 500 {
		return ErrorClient
	}
	return ErrorAPI
}

// Request outcomes (Outcome): the "outcome" label of the request-duration
// and time-to-first-token histograms.
const (
	OutcomeSuccess = "success" // a 1xx–3xx answer that ended
	OutcomeError   = "error"   // an error status, or no answer
	OutcomeAborted = "aborted" // a success that did not end: the client went away or the upstream broke off
)

// Outcome is the outcome of the request ev describes.
func Outcome(ev *Event) string {
	switch {
	case ErrorType(ev.Status) != "":
		return OutcomeError
	case ev.Aborted:
		return OutcomeAborted
	}
	return OutcomeSuccess
}
