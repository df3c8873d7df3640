package router

import (
	"context"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
)

// refusingLimiter refuses every check, as a limit that is reached does,
// and records what reached it. (The limiter itself is tested against real
// Redis in extproc/ratelimit; this is about what the router does with its
// answer.)
type refusingLimiter struct {
	checks  int
	charges int
}

func (l *refusingLimiter) Check(context.Context, []accesskey.RateLimit) (ratelimit.Decision, error) {
	l.checks++
	d := ratelimit.Decision{RetryAfter: 11 * time.Second, Scope: accesskey.ScopeUser, Limited: ratelimit.Requests, Now: time.Unix(1_765_000_000, 0)}
	d.Most[ratelimit.Requests] = ratelimit.Bucket{Limit: 5, Reset: d.Now.Add(time.Minute)}
	return d, nil
}

func (l *refusingLimiter) Charge([]accesskey.RateLimit, int64, int64) { l.charges++ }

// TestRateLimitRefusalIsLocal: a plan_first request with a Bedrock fallback
// that is over its rate limit is refused in the request-headers phase, in
// the gateway's own name: no route, no handoff, no breaker decision and so
// no Bedrock fallback or breaker charge, no usage event, no token charge.
func TestRateLimitRefusalIsLocal(t *testing.T) {
	h := newBedrockHarness(t, fallbackRuntime(t), nil)
	fb := &fakeBreaker{}
	h.r.bedrock.Breaker = fb
	lim := &refusingLimiter{}
	h.r.rateLimits = lim

	p := h.r.NewProcessor()
	resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first-limited"]+"/v1/messages?beta=true", "x-api-key", "sk-client"))
	ir := resp.GetImmediateResponse()
	const want = `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: rate limit reached: your account may use 5 requests per minute; retry in 11 s"}}`
	if ir.GetStatus().GetCode() != 429 || string(ir.GetBody()) != want {
		t.Fatalf("reply %v; want 429 %s", resp, want)
	}
	p.Close(context.Background())
	if p.route != "" || p.backend != nil || h.requests.Len() != 0 {
		t.Errorf("route %q, backend %v, %d handoffs; want none", p.route, p.backend, h.requests.Len())
	}
	if len(fb.states) != 0 || len(fb.failures) != 0 {
		t.Errorf("breaker asked %d times, charged %d; want neither", len(fb.states), len(fb.failures))
	}
	if evs := h.sink.Events(); len(evs) != 0 || lim.charges != 0 {
		t.Errorf("%d usage events, %d charges; want none", len(evs), lim.charges)
	}

	// A key without limits never asks the limiter.
	p = h.r.NewProcessor()
	if resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first"]+"/v1/messages", "x-api-key", "sk-client")); resp.GetImmediateResponse() != nil {
		t.Fatalf("key without limits refused: %v", resp)
	}
	p.Close(context.Background())
	if lim.checks != 1 {
		t.Errorf("%d limiter checks; want 1 (the limited key's)", lim.checks)
	}
}
