package extproc

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
	"github.com/ccproxy/ccproxy/extproc/router"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

// TestRateLimits: per-minute limits carried by the key lookup are enforced
// before routing with a retryable Anthropic 429 and Anthropic's rate-limit
// headers; tokens are charged from the streamed answer's usage; keys
// without limits never reach the limiter.
func TestRateLimits(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	lim, err := ratelimit.New(ratelimit.Config{Redis: rdb, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	rpmKey, tokKey, freeKey, bedKey := newKey(t), newKey(t), newKey(t), newKey(t)
	rpmID, tokUser, bedID := uuid.New(), uuid.New(), uuid.New()
	mem := accesskey.MemoryStore{}
	mem.Add(hasher, rpmKey, accesskey.KeyRecord{KeyID: rpmID, UserID: uuid.New(), Prefix: keys.DisplayPrefix(rpmKey),
		RateLimits: []accesskey.RateLimit{{Scope: accesskey.ScopeKey, ID: rpmID, RequestsPerMinute: 2}}})
	mem.Add(hasher, tokKey, accesskey.KeyRecord{KeyID: uuid.New(), UserID: tokUser, Prefix: keys.DisplayPrefix(tokKey),
		RateLimits: []accesskey.RateLimit{{Scope: accesskey.ScopeUser, ID: tokUser, InputTokensPerMinute: 100_000, OutputTokensPerMinute: 130}}})
	mem.Add(hasher, bedKey, accesskey.KeyRecord{KeyID: bedID, UserID: uuid.New(), Prefix: keys.DisplayPrefix(bedKey),
		RateLimits: []accesskey.RateLimit{{Scope: accesskey.ScopeKey, ID: bedID, RequestsPerMinute: 1}}})
	mem.Add(hasher, freeKey, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(freeKey)})
	counted := &countingLimiter{RateLimiter: lim}
	e := startEnvWith(t, mem, func(o *Options) {
		o.RateLimits = counted
		o.Limits = router.Limits{MaxConcurrentPerKey: 1}
	})

	headersOf := func(key, rid string) []header {
		return []header{{":method", "POST"}, {":path", "/ak/" + key + "/v1/messages"}, {":scheme", "https"},
			{":authority", "gw.example"}, {"content-type", "application/json"}, {"x-request-id", rid}}
	}
	t.Run("requests per minute", func(t *testing.T) {
		// A request refused for concurrency (one in flight per key here)
		// takes nothing from the rate limit.
		held := e.open(t)
		if got := held.send(requestHeaders(headersOf(rpmKey, "rpm-a"), false)); got.GetRequestHeaders() == nil {
			t.Fatalf("request 1: %v; want it let through", got)
		}
		busy := e.open(t)
		if got := busy.send(requestHeaders(headersOf(rpmKey, "rpm-busy"), false)); got.GetImmediateResponse().GetDetails() != "ccproxy_key_concurrency_limit" {
			t.Fatalf("second request in flight: %v; want the concurrency 429", got)
		}
		busy.expectEnd()
		held.close()
		s := e.open(t)
		if got := s.send(requestHeaders(headersOf(rpmKey, "rpm-b"), false)); got.GetRequestHeaders() == nil {
			t.Fatalf("request 2: %v; want it let through", got)
		}
		s.close()
		s = e.open(t)
		got := s.send(requestHeaders(headersOf(rpmKey, "rpm-c"), false))
		ir := got.GetImmediateResponse()
		const want = `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: rate limit reached: your access key may use 2 requests per minute; retry in 30 s"}}`
		if ir.GetStatus().GetCode() != 429 || string(ir.GetBody()) != want || ir.GetDetails() != "ccproxy_rate_limited" {
			t.Fatalf("3rd request: %v; want 429 %s", got, want)
		}
		s.expectEnd()
		hdrs := map[string]string{}
		for _, h := range ir.GetHeaders().GetSetHeaders() {
			hdrs[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
		}
		for k, v := range map[string]string{
			"content-type": "application/json", "x-should-retry": "true", "retry-after": "30",
			"anthropic-ratelimit-requests-limit": "2", "anthropic-ratelimit-requests-remaining": "0",
		} {
			if hdrs[k] != v {
				t.Errorf("header %s = %q; want %q (all: %v)", k, hdrs[k], v, hdrs)
			}
		}
		if _, ok := hdrs["anthropic-ratelimit-requests-reset"]; !ok || len(hdrs) != 6 {
			t.Errorf("headers %v; want the requests reset too and nothing else", hdrs)
		}
		// The refusal gave its concurrency slot back: the next request is
		// refused by the rate limit again, not for concurrency.
		s = e.open(t)
		if got := s.send(requestHeaders(headersOf(rpmKey, "rpm-d"), false)); got.GetImmediateResponse().GetDetails() != "ccproxy_rate_limited" {
			t.Fatalf("after a refusal: %v; want the rate-limit 429", got)
		}
		s.expectEnd()
		if n := metric(t, e, "ccproxy_extproc_requests_total", "outcome", "rate_limited", "route", "local"); n != 2 {
			t.Errorf("rate_limited = %v; want 2", n)
		}
	})

	t.Run("tokens charged from the stream", func(t *testing.T) {
		// The fixture's usage: 6 input, 1024 + 10808 cache-write, 143
		// output tokens. At 130 output tokens per minute, 143 leave the
		// bucket 6 s in debt.
		sse := readFile(t, sseFixtures+"stream-tool-use.sse")
		body := readFile(t, captures+"anthropic-turn1.body.json")
		s := e.open(t)
		if got := s.send(requestHeaders(headersOf(tokKey, "tok-a"), false)); got.GetRequestHeaders() == nil {
			t.Fatalf("headers: %v", got)
		}
		s.send(requestBody(body, true))
		s.send(responseHeaders([]header{{":status", "200"}, {"content-type", "text/event-stream"}}, false))
		s.send(responseBody(sse, true))
		s.close()
		if _, err := e.rec.Wait(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		lim.Flush(context.Background())

		s = e.open(t)
		got := s.send(requestHeaders(headersOf(tokKey, "tok-b"), false))
		ir := got.GetImmediateResponse()
		const want = `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: rate limit reached: your account may use 130 output tokens per minute; retry in 6 s"}}`
		if ir.GetStatus().GetCode() != 429 || string(ir.GetBody()) != want {
			t.Fatalf("after the stream: %v; want 429 %s", got, want)
		}
		hdrs := map[string]string{}
		for _, h := range ir.GetHeaders().GetSetHeaders() {
			hdrs[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
		}
		// 100,000 − 11,838 input tokens, plus what refilled since (1,667
		// a second).
		in, _ := strconv.Atoi(hdrs["anthropic-ratelimit-input-tokens-remaining"])
		if hdrs["retry-after"] != "6" || hdrs["anthropic-ratelimit-output-tokens-remaining"] != "0" ||
			hdrs["anthropic-ratelimit-tokens-limit"] != "130" || in < 88162 || in > 90000 {
			t.Errorf("headers %v; want retry-after 6, output 0 of 130 left (the tokens-* headers), about 88,162 input left", hdrs)
		}
		if _, ok := hdrs["anthropic-ratelimit-requests-limit"]; ok {
			t.Errorf("requests headers without a request limit: %v", hdrs)
		}
	})

	t.Run("Claude Code's Bedrock mode", func(t *testing.T) {
		// Model calls count, count-tokens does not; the refusal is in
		// Bedrock's format, a ThrottlingException its AWS SDK retries.
		for i, op := range []string{"invoke", "count-tokens"} {
			s := e.open(t)
			hs := []header{{":method", "POST"}, {":path", "/ak/" + bedKey + "/bedrock/model/us.anthropic.claude-opus-5-5/" + op},
				{"content-type", "application/json"}, {"x-request-id", "bed-" + op}}
			if got := s.send(requestHeaders(hs, false)); got.GetRequestHeaders() == nil {
				t.Fatalf("request %d (%s): %v; want it let through", i+1, op, got)
			}
			s.close()
		}
		s := e.open(t)
		got := s.send(requestHeaders([]header{{":method", "POST"}, {":path", "/ak/" + bedKey + "/bedrock/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream"},
			{"content-type", "application/json"}, {"x-request-id", "bed-stream"}}, false))
		ir := got.GetImmediateResponse()
		const want = `{"message":"ccproxy: rate limit reached: your access key may use 1 request per minute; retry in 60 s"}`
		if ir.GetStatus().GetCode() != 429 || string(ir.GetBody()) != want || ir.GetDetails() != "ccproxy_rate_limited" {
			t.Fatalf("2nd model call: %v; want 429 %s", got, want)
		}
		hdrs := map[string]string{}
		for _, h := range ir.GetHeaders().GetSetHeaders() {
			hdrs[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
		}
		if hdrs["x-amzn-errortype"] != "ThrottlingException" || hdrs["retry-after"] != "60" {
			t.Errorf("headers %v; want ThrottlingException, retry-after 60", hdrs)
		}
	})

	t.Run("no limits, no check", func(t *testing.T) {
		before := counted.checks.Load()
		for i := range 5 {
			s := e.open(t)
			if got := s.send(requestHeaders(headersOf(freeKey, "free-"+string(rune('a'+i))), false)); got.GetRequestHeaders() == nil {
				t.Fatalf("request %d: %v", i+1, got)
			}
			s.close()
		}
		if n := counted.checks.Load(); n != before {
			t.Errorf("%d limiter checks for a key without limits; want none", n-before)
		}
	})
	if evs := e.rec.Events(); len(evs) != 1 {
		t.Errorf("%d usage events; want 1 (the streamed request; refusals have none)", len(evs))
	}
}

// countingLimiter counts the checks that reach the limiter.
type countingLimiter struct {
	router.RateLimiter
	checks atomic.Int64
}

func (c *countingLimiter) Check(ctx context.Context, scopes []accesskey.RateLimit) (ratelimit.Decision, error) {
	c.checks.Add(1)
	return c.RateLimiter.Check(ctx, scopes)
}
