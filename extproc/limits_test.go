package extproc

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/extproc/router"
)

// messagesHeaders are a Messages request's headers with the access key in the path.
func messagesHeaders(e *env, id string, extra ...header) []header {
	return append([]header{{":method", "POST"}, {":path", "/ak/" + e.key + "/v1/messages"}, {":scheme", "https"},
		{":authority", "gw.example"}, {"content-type", "application/json"}, {"x-request-id", id}}, extra...)
}

// TestKeyConcurrencyLimit: past MaxConcurrentPerKey requests in flight, a key's next request
// gets a retryable Anthropic 429; a slot frees when a request's stream ends.
func TestKeyConcurrencyLimit(t *testing.T) {
	e := startEnvWith(t, nil, func(o *Options) { o.Limits = router.Limits{MaxConcurrentPerKey: 2} })
	const want = `{"type":"error","error":{"type":"rate_limit_error","message":"ccproxy: too many concurrent requests for this access key (limit 2); retry shortly"}}`
	s1, s2 := e.open(t), e.open(t)
	for i, s := range []*stream{s1, s2} {
		got := s.send(requestHeaders(messagesHeaders(e, "rid-"+strconv.Itoa(i)), false))
		if got.GetRequestHeaders() == nil {
			t.Fatalf("request %d: %v, want it let through", i, got)
		}
	}
	s3 := e.open(t)
	got := s3.send(requestHeaders(messagesHeaders(e, "rid-3"), false))
	ir := got.GetImmediateResponse()
	if ir.GetStatus().GetCode() != 429 || string(ir.GetBody()) != want || ir.GetDetails() != "ccproxy_key_concurrency_limit" {
		t.Fatalf("third request: %v; want 429 %s", got, want)
	}
	hdrs := map[string]string{}
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		hdrs[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	if hdrs["retry-after"] != "1" || hdrs["x-should-retry"] != "true" || hdrs["content-type"] != "application/json" {
		t.Errorf("429 headers %v; want retry-after 1, x-should-retry true, JSON", hdrs)
	}
	s3.expectEnd()
	// The refused request took no slot; the end of one in flight frees one.
	s1.close()
	s4 := e.open(t)
	if got := s4.send(requestHeaders(messagesHeaders(e, "rid-4"), false)); got.GetRequestHeaders() == nil {
		t.Fatalf("after a request ended: %v, want it let through", got)
	}
	// A locally answered request (the model list) takes no slot.
	s5 := e.open(t)
	if got := s5.send(requestHeaders([]header{{":method", "GET"}, {":path", "/ak/" + e.key + "/v1/models"}}, true)); got.GetImmediateResponse().GetStatus().GetCode() != 200 {
		t.Fatalf("models at the limit: %v", got)
	}
	if n := metric(t, e, "ccproxy_extproc_requests_total", "outcome", "concurrency_limited", "route", "local"); n != 1 {
		t.Errorf("concurrency_limited = %v, want 1", n)
	}
}

// TestRequestBodyLimit: a body over MaxRequestBodyBytes is refused with an Anthropic 413,
// from its content-length before Envoy buffers it, or from its size when it has none.
func TestRequestBodyLimit(t *testing.T) {
	e := startEnvWith(t, nil, func(o *Options) {
		o.Limits = router.Limits{MaxRequestBodyBytes: 1000, MaxConcurrentPerKey: 1}
	})
	const want = `{"type":"error","error":{"type":"request_too_large","message":"ccproxy: request body too large: the gateway accepts at most 1000 bytes"}}`
	big := `{"model":"claude-opus-5-5","max_tokens":1,"messages":[{"role":"user","content":"` + strings.Repeat("x", 1000) + `"}]}`

	t.Run("content-length", func(t *testing.T) {
		s := e.open(t)
		got := s.send(requestHeaders(messagesHeaders(e, "rid-cl", header{"content-length", strconv.Itoa(len(big))}), false))
		assertProto(t, "reply", got, immediateReply(413, want, "ccproxy_request_too_large"))
		s.expectEnd()
	})
	t.Run("chunked", func(t *testing.T) {
		s := e.open(t)
		if got := s.send(requestHeaders(messagesHeaders(e, "rid-chunked"), false)); got.GetRequestHeaders() == nil {
			t.Fatalf("headers: %v", got)
		}
		got := s.send(requestBody([]byte(big), true))
		assertProto(t, "reply", got, immediateReply(413, want, "ccproxy_request_too_large"))
		s.expectEnd()
	})
	t.Run("at the limit", func(t *testing.T) {
		// The slot of the refused chunked request was given back (limit 1).
		s := e.open(t)
		small := `{"model":"claude-opus-5-5","max_tokens":1,"messages":[]}`
		if got := s.send(requestHeaders(messagesHeaders(e, "rid-ok", header{"content-length", strconv.Itoa(len(small))}), false)); got.GetRequestHeaders() == nil {
			t.Fatalf("headers: %v", got)
		}
		if got := s.send(requestBody([]byte(small), true)); got.GetRequestBody() == nil {
			t.Fatalf("body: %v", got)
		}
	})
	if evs := e.rec.Events(); len(evs) != 0 {
		t.Errorf("usage events for refused requests: %+v", evs)
	}
}
