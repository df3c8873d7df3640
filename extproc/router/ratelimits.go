package router

import (
	"context"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Per-minute rate limits (extproc/ratelimit), checked for every model call
// of a key whose lookup carries limits (its own, its user's, its team's),
// in the request-headers phase: before the body is buffered, before any
// routing, so a refusal never reaches an upstream, the Plan breaker or the
// Bedrock fallback. Keys without limits skip the check entirely: no Redis
// call, no allocation.

// RateLimiter is implemented by ratelimit.Limiter.
type RateLimiter interface {
	// Check takes one request from every scope if all have room.
	Check(ctx context.Context, scopes []accesskey.RateLimit) (ratelimit.Decision, error)
	// Charge counts a response's tokens, without waiting.
	Charge(scopes []accesskey.RateLimit, input, output int64)
}

// rateLimited reports whether the request counts against rate limits: a
// Messages request, or a model call of Claude Code's Bedrock mode.
// count_tokens requests are free, as on Anthropic's API, which limits them
// separately.
func (p *Processor) rateLimited() bool {
	switch p.req.kind {
	case pathMessages:
		return true
	case pathBedrockModel:
		return p.req.bedrock.op == "invoke" || p.req.bedrock.op == "invoke-with-response-stream"
	}
	return false
}

// checkRateLimits takes one request from the key's rate limits and returns
// the refusal when a limit is reached, nil when the request may go on. When
// Redis cannot answer the request goes on (fail open; the limiter counts
// and logs it).
func (p *Processor) checkRateLimits(ctx context.Context) *extprocv3.ProcessingResponse {
	scopes := p.req.identity.RateLimits
	if len(scopes) == 0 || p.r.rateLimits == nil || !p.rateLimited() {
		return nil
	}
	p.charge = true
	d, err := p.r.rateLimits.Check(ctx, scopes)
	if err != nil || d.Allowed {
		return nil
	}
	p.charge = false
	return p.refuseRateLimit(d)
}

// chargeTokens counts the request's tokens against its token limits once
// its usage is known (the end of the response, or of the stream).
func (p *Processor) chargeTokens(ev *usage.Event) {
	if !p.charge {
		return
	}
	u := ev.Usage
	// Anthropic counts cache writes, not cache reads, towards input-token
	// limits.
	p.r.rateLimits.Charge(p.req.identity.RateLimits, u.InputTokens+u.CacheWrite5mInputTokens+u.CacheWrite1hInputTokens, u.OutputTokens)
}

// scopeWords names a scope for the developer reading the refusal.
func scopeWords(scope string) string {
	switch scope {
	case accesskey.ScopeKey:
		return "your access key"
	case accesskey.ScopeTeam:
		return "your team"
	}
	return "your account"
}

// dimensionWords names what a limit counts.
func dimensionWords(d ratelimit.Dimension) string {
	switch d {
	case ratelimit.InputTokens:
		return "input tokens"
	case ratelimit.OutputTokens:
		return "output tokens"
	}
	return "requests"
}

// refuseRateLimit is the refusal of a request over a rate limit: a 429
// rate_limit_error that Claude Code retries after retry-after
// (x-should-retry true), with the anthropic-ratelimit-* headers, or
// Bedrock's ThrottlingException for Claude Code's Bedrock mode (its AWS
// SDK retries that with its own back-off).
func (p *Processor) refuseRateLimit(d ratelimit.Decision) *extprocv3.ProcessingResponse {
	p.r.metrics.request(OutcomeRateLimited)
	p.forward = false
	var limit int64
	for _, s := range p.req.identity.RateLimits {
		if s.Scope == d.Scope {
			limit = [...]int64{s.RequestsPerMinute, s.InputTokensPerMinute, s.OutputTokensPerMinute}[d.Limited]
			break
		}
	}
	wait := ratelimit.RetryAfterSeconds(d.RetryAfter)
	what := dimensionWords(d.Limited)
	if limit == 1 {
		what = strings.TrimSuffix(what, "s")
	}
	msg := "ccproxy: rate limit reached: " + scopeWords(d.Scope) + " may use " + strconv.FormatInt(limit, 10) + " " +
		what + " per minute; retry in " + strconv.FormatInt(wait, 10) + " s"
	var resp *extprocv3.ProcessingResponse
	if p.isBedrockMode() {
		resp = bedrockReply(429, "ThrottlingException", msg)
	} else {
		resp = immediate(429, apierror.RateLimit, msg, "")
	}
	ir := resp.GetImmediateResponse()
	ir.Details = "ccproxy_rate_limited"
	hs := ir.GetHeaders().GetSetHeaders()
	for _, h := range hs {
		if h.GetHeader().GetKey() == "x-should-retry" {
			h.Header.RawValue = []byte("true")
		}
	}
	for _, h := range d.Headers() {
		hs = append(hs, setHeader(h.Name, []byte(h.Value)))
	}
	ir.Headers.SetHeaders = hs
	return resp
}
