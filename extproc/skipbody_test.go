package extproc

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// skipOverride is the request headers' mode_override of a request routed on
// its headers: no request body, the rest as configured.
var skipOverride = &extprocfilterv3.ProcessingMode{
	RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
	ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
	RequestBodyMode:     extprocfilterv3.ProcessingMode_NONE,
	ResponseBodyMode:    extprocfilterv3.ProcessingMode_BUFFERED,
	RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
	ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
}

// streamedSkipOverride is the response headers' mode_override of a
// streaming answer to such a request: the request body stays NONE.
var streamedSkipOverride = &extprocfilterv3.ProcessingMode{
	RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
	ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
	RequestBodyMode:     extprocfilterv3.ProcessingMode_NONE,
	ResponseBodyMode:    extprocfilterv3.ProcessingMode_STREAMED,
	RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
	ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
}

// TestSkipPlanRequestBodies: with SkipPlanRequestBodies, a Plan-alone
// Messages request of a current Claude Code release is routed on its
// headers and Envoy is told not to send its body; the usage row takes the
// model and the stream flag from the answer. Requests whose body the gateway
// needs are read as before.
func TestSkipPlanRequestBodies(t *testing.T) {
	e := startEnvWith(t, nil, func(o *Options) { o.SkipPlanRequestBodies = true })
	turn1 := readFile(t, captures+"anthropic-turn1.body.json")
	sse := readFile(t, sseFixtures+"stream-tool-use.sse")
	errBody := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."},"request_id":"req_011"}`)
	pathAndRoute := &extprocv3.CommonResponse{
		HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true"), set("x-ccproxy-route", "plan")},
			RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
		},
		ClearRouteCache: true,
	}
	pathOnly := &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
		SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
		RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
	}}
	without := func(hs []header, name string) []header {
		var out []header
		for _, h := range hs {
			if h.k != name {
				out = append(out, h)
			}
		}
		return out
	}
	tests := []struct {
		name     string
		headers  []header
		body     []byte // sent only when the body is read
		skipped  bool
		respHdrs []header
		respBody []byte
		override *extprocfilterv3.ProcessingMode // of the response headers reply
		want     usage.Event                     // RequestID, Time, user, key, TTFT, Latency filled in
	}{
		{
			name:     "streamed answer: model and stream from the answer, as when the body is read",
			headers:  captureHeaders(t, "anthropic-turn1", e.key, "rid-skip-sse"),
			skipped:  true,
			respHdrs: []header{{":status", "200"}, {"content-type", "text/event-stream; charset=utf-8"}},
			respBody: sse,
			override: streamedSkipOverride,
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: usage.PathMessages,
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Stream: true, Status: 200,
				Usage: usage.Usage{InputTokens: 6, OutputTokens: 143, CacheReadInputTokens: 14217,
					CacheWrite5mInputTokens: 1024, CacheWrite1hInputTokens: 10808}},
		},
		{
			name:     "JSON answer",
			headers:  captureHeaders(t, "anthropic-turn1", e.key, "rid-skip-json"),
			skipped:  true,
			respHdrs: []header{{":status", "200"}, {"content-type", "application/json"}},
			respBody: readFile(t, sseFixtures+"message.json"),
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: usage.PathMessages,
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Status: 200,
				Usage: usage.Usage{InputTokens: 12, OutputTokens: 9, CacheReadInputTokens: 2000,
					CacheWrite5mInputTokens: 40, CacheWrite1hInputTokens: 60}},
		},
		{
			name:     "a refusal names no model: the setting's documented cost",
			headers:  captureHeaders(t, "anthropic-turn1", e.key, "rid-skip-429"),
			skipped:  true,
			respHdrs: []header{{":status", "429"}, {"content-type", "application/json"}, {"retry-after", "17"}},
			respBody: errBody,
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: usage.PathMessages,
				Route: "plan", Provider: "anthropic", Status: 429},
		},
		{
			name:     "release without the session header: read",
			headers:  captureHeaders(t, "../claude-code-releases/2.0.56/anthropic-main", e.key, "rid-skip-2.0.56"),
			body:     readFile(t, captures+"../claude-code-releases/2.0.56/anthropic-main.body.json"),
			respHdrs: []header{{":status", "200"}, {"content-type", "application/json"}},
			respBody: readFile(t, sseFixtures+"message.json"),
			want: usage.Event{SessionID: "1e20d4a2-4997-4bee-85ad-363aa50e87ee", ClientVersion: "2.0.56", PathKind: usage.PathMessages,
				Model: "claude-sonnet-4-5-20250929", Route: "plan", Provider: "anthropic", Stream: true, Status: 200,
				Usage: usage.Usage{InputTokens: 12, OutputTokens: 9, CacheReadInputTokens: 2000,
					CacheWrite5mInputTokens: 40, CacheWrite1hInputTokens: 60}},
		},
		{
			name:     "no content-length (chunked): read, so that its size is checked",
			headers:  without(captureHeaders(t, "anthropic-turn1", e.key, "rid-skip-chunked"), "content-length"),
			body:     turn1,
			respHdrs: []header{{":status", "429"}, {"content-type", "application/json"}},
			respBody: errBody,
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: usage.PathMessages,
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Stream: true, Status: 429},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := e.clock.Now()
			s := e.open(t)
			got := s.send(requestHeaders(tt.headers, false))
			if tt.skipped {
				want := headersReply(pathAndRoute)
				want.ModeOverride = skipOverride
				assertProto(t, "request headers reply", got, want)
			} else {
				assertProto(t, "request headers reply", got, headersReply(pathOnly))
				assertProto(t, "request body reply", s.send(requestBody(tt.body, true)), requestBodyReply(routePlan))
			}
			e.clock.Advance(300 * time.Millisecond)
			assertProto(t, "response headers reply", s.send(responseHeaders(tt.respHdrs, false)), responseHeadersReply(tt.override))
			var ttft time.Duration
			if tt.override == nil {
				ttft = e.clock.Now().Sub(start)
			}
			chunks := [][]byte{tt.respBody}
			deltaEnd := -1 // the first token's last byte, streamed answers only
			if tt.override != nil {
				chunks = split(tt.respBody, 97, nil)
				deltaEnd = firstDeltaEnd(t, tt.respBody)
			}
			off := 0
			for k, c := range chunks {
				e.clock.Advance(time.Millisecond)
				assertProto(t, "response body reply", s.send(responseBody(c, k == len(chunks)-1)), unchangedChunk)
				if off <= deltaEnd && deltaEnd < off+len(c) {
					ttft = e.clock.Now().Sub(start)
				}
				off += len(c)
			}
			latency := e.clock.Now().Sub(start)
			s.close()
			evs, err := e.rec.Wait(context.Background(), i+1)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.RequestID = tt.headers[len(tt.headers)-1].v
			want.Time, want.UserID, want.KeyID, want.TTFT, want.Latency = start, e.userID, e.keyID, ttft, latency
			if got := evs[i]; got != want {
				t.Fatalf("usage event\ngot:  %+v\nwant: %+v", got, want)
			}
		})
	}
}
