package extproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/usage"
)

const sseFixtures = "metering/testdata/"

func set(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
		Append: wrapperspb.Bool(false),
	}
}

func headersReply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

func requestBodyReply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: c}}}
}

func responseHeadersReply(mode *extprocfilterv3.ProcessingMode) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}},
		ModeOverride: mode,
	}
}

// unchangedChunk is the reply to every response body message: CONTINUE,
// no mutation.
var unchangedChunk = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
	ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}

var routePlan = &extprocv3.CommonResponse{
	HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-ccproxy-route", "plan")}},
	ClearRouteCache: true,
}

var streamedOverride = &extprocfilterv3.ProcessingMode{
	RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
	ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
	RequestBodyMode:     extprocfilterv3.ProcessingMode_BUFFERED,
	ResponseBodyMode:    extprocfilterv3.ProcessingMode_STREAMED,
	RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
	ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
}

func immediateReply(code typev3.StatusCode, body, details string) *extprocv3.ProcessingResponse {
	ir := &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: code}, Details: details}
	if body != "" {
		ir.Body = []byte(body)
		ir.Headers = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("content-type", "application/json")}}
		if code >= 400 && code < 500 {
			// Refusals are final: Claude Code must not retry them.
			ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, set("x-should-retry", "false"))
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
}

func TestImmediateResponses(t *testing.T) {
	e := startEnv(t, nil)
	claude := func(method, path string, extra ...header) []header {
		hs := []header{{":method", method}, {":path", path}, {":scheme", "https"}, {":authority", "gw.example"},
			{"user-agent", "claude-cli/2.1.332 (external, sdk-cli)"}, {"x-api-key", "sk-ant-test"}, {"x-request-id", "rid-1"}}
		return append(hs, extra...)
	}
	const modelsAll = `{"data":[` +
		`{"type":"model","id":"claude-opus-5-5","display_name":"Claude Opus 5.5","created_at":"2026-05-01T00:00:00Z"},` +
		`{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"},` +
		`{"type":"model","id":"claude-haiku-4-5-20251001","display_name":"claude-haiku-4-5-20251001","created_at":"2025-10-01T00:00:00Z"}` +
		`],"has_more":false,"first_id":"claude-opus-5-5","last_id":"claude-haiku-4-5-20251001"}`
	authErr := func(msg string) string {
		return `{"type":"error","error":{"type":"authentication_error","message":"` + msg + `"}}`
	}
	tests := []struct {
		name    string
		headers []header
		want    *extprocv3.ProcessingResponse
		reason  string // auth failure reason counted, if any
	}{
		{"HEAD probe from capture", captureHeaders(t, "probe-head", e.key, "rid-probe"),
			immediateReply(200, "", "ccproxy_probe"), ""},
		{"HEAD any path, header key", claude("HEAD", "/", header{"x-ccproxy-key", e.key}),
			immediateReply(200, "", "ccproxy_probe"), ""},
		{"capture's placeholder key is malformed", captureHeaders(t, "anthropic-turn1", "", "rid-2"),
			immediateReply(401, authErr("ccproxy: malformed access key"), "ccproxy_auth_malformed"), "malformed"},
		{"HEAD probe still needs a valid key", captureHeaders(t, "probe-head", e.unknown, "rid-3"),
			immediateReply(401, authErr("ccproxy: invalid access key"), "ccproxy_auth_unknown"), "unknown"},
		{"no key", claude("POST", "/v1/messages?beta=true"),
			immediateReply(401, authErr("ccproxy: no access key; set ANTHROPIC_BASE_URL to the gateway URL ending in /ak/<your access key>"), "ccproxy_auth_missing"), "missing"},
		{"empty path key", claude("POST", "/ak//v1/messages"),
			immediateReply(401, authErr("ccproxy: malformed access key"), "ccproxy_auth_malformed"), "malformed"},
		{"malformed header key", claude("POST", "/v1/messages", header{"x-ccproxy-key", "ak_" + strings.Repeat("!", 43)}),
			immediateReply(401, authErr("ccproxy: malformed access key"), "ccproxy_auth_malformed"), "malformed"},
		{"unknown key", claude("POST", "/ak/"+e.unknown+"/v1/messages"),
			immediateReply(401, authErr("ccproxy: invalid access key"), "ccproxy_auth_unknown"), "unknown"},
		{"revoked key", claude("POST", "/ak/"+e.revoked+"/v1/messages"),
			immediateReply(401, authErr("ccproxy: access key revoked"), "ccproxy_auth_revoked"), "revoked"},
		{"revoked header key", claude("POST", "/v1/messages", header{"x-ccproxy-key", e.revoked}),
			immediateReply(401, authErr("ccproxy: access key revoked"), "ccproxy_auth_revoked"), "revoked"},
		{"path key wins over header key", claude("POST", "/ak/"+e.revoked+"/v1/messages", header{"x-ccproxy-key", e.key}),
			immediateReply(401, authErr("ccproxy: access key revoked"), "ccproxy_auth_revoked"), "revoked"},
		{"models", claude("GET", "/ak/"+e.key+"/v1/models"),
			immediateReply(200, modelsAll, "ccproxy_models"), ""},
		{"models, header key, limit", claude("GET", "/v1/models?limit=1", header{"x-ccproxy-key", e.key}),
			immediateReply(200, `{"data":[{"type":"model","id":"claude-opus-5-5","display_name":"Claude Opus 5.5","created_at":"2026-05-01T00:00:00Z"}],"has_more":true,"first_id":"claude-opus-5-5","last_id":"claude-opus-5-5"}`, "ccproxy_models"), ""},
		{"models after_id", claude("GET", "/ak/"+e.key+"/v1/models?after_id=claude-sonnet-4-5-20250929"),
			immediateReply(200, `{"data":[{"type":"model","id":"claude-haiku-4-5-20251001","display_name":"claude-haiku-4-5-20251001","created_at":"2025-10-01T00:00:00Z"}],"has_more":false,"first_id":"claude-haiku-4-5-20251001","last_id":"claude-haiku-4-5-20251001"}`, "ccproxy_models"), ""},
		{"models before_id", claude("GET", "/ak/"+e.key+"/v1/models?before_id=claude-haiku-4-5-20251001&limit=1"),
			immediateReply(200, `{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],"has_more":true,"first_id":"claude-sonnet-4-5-20250929","last_id":"claude-sonnet-4-5-20250929"}`, "ccproxy_models"), ""},
		{"models unknown cursor", claude("GET", "/ak/"+e.key+"/v1/models?after_id=nope"),
			immediateReply(200, `{"data":[],"has_more":false,"first_id":null,"last_id":null}`, "ccproxy_models"), ""},
		{"models bad limit", claude("GET", "/ak/"+e.key+"/v1/models?limit=0"),
			immediateReply(400, `{"type":"error","error":{"type":"invalid_request_error","message":"limit: must be an integer between 1 and 1000"}}`, "ccproxy_models_bad_limit"), ""},
		{"unknown path", claude("GET", "/ak/"+e.key+"/api/hello"),
			immediateReply(404, `{"type":"error","error":{"type":"not_found_error","message":"ccproxy: not found; the gateway serves the Anthropic API under /v1/"}}`, "ccproxy_not_found"), ""},
		{"bare key path with query", claude("GET", "/ak/"+e.key+"?x=1"),
			immediateReply(404, `{"type":"error","error":{"type":"not_found_error","message":"ccproxy: not found; the gateway serves the Anthropic API under /v1/"}}`, "ccproxy_not_found"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, e, "ccproxy_extproc_auth_failures_total", "reason", tt.reason)
			s := e.open(t)
			got := s.send(requestHeaders(tt.headers, true))
			assertProto(t, "reply", got, tt.want)
			s.expectEnd()
			for _, k := range []string{e.key, e.unknown, e.revoked} {
				if bytes.Contains(got.GetImmediateResponse().GetBody(), []byte(k)) {
					t.Fatal("response body contains an access key")
				}
			}
			if tt.reason != "" {
				if d := metric(t, e, "ccproxy_extproc_auth_failures_total", "reason", tt.reason) - before; d != 1 {
					t.Errorf("auth failures{reason=%s} grew by %v, want 1", tt.reason, d)
				}
			}
		})
	}
	if evs := e.rec.Events(); len(evs) != 0 {
		t.Fatalf("usage events for locally answered requests: %+v", evs)
	}
}

// metric returns the value of the counter or gauge name with exactly the
// given labels (name=value pairs), 0 if absent.
func metric(t testing.TB, e *env, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel())*2 != len(labels) {
				continue
			}
			for i, lp := range m.GetLabel() {
				if lp.GetName() != labels[2*i] || lp.GetValue() != labels[2*i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// split cuts b into chunks of size bytes (0: random sizes from rng).
func split(b []byte, size int, rng *rand.Rand) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := size
		if n == 0 {
			n = 1 + rng.IntN(min(len(b), 512))
		}
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// firstDeltaEnd returns the offset of the last byte of the first
// content_block_delta event (the LF of its blank line).
func firstDeltaEnd(t testing.TB, sse []byte) int {
	i := bytes.Index(sse, []byte("event: content_block_delta"))
	j := bytes.Index(sse[i:], []byte("\n\n"))
	if i < 0 || j < 0 {
		t.Fatal("fixture has no content_block_delta")
	}
	return i + j + 1
}

var claudeSession = "b473eea4-d18b-43ee-8233-a866e4a71422"

func TestPassThroughStreaming(t *testing.T) {
	e := startEnv(t, nil)
	body := readFile(t, captures+"anthropic-turn1.body.json")
	sse := readFile(t, sseFixtures+"stream-tool-use.sse")
	deltaEnd := firstDeltaEnd(t, sse)
	rng := rand.New(rand.NewPCG(7, 8))
	const step = 10 * time.Millisecond
	tests := []struct {
		name string
		size int
		eos  bool // the last chunk carries end_of_stream
	}{
		{"one end-of-stream chunk", len(sse), true},
		{"1-byte chunks", 1, true},
		{"random chunks", 0, true},
		{"no end_of_stream after message_stop (trailers)", 0, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rid := "rid-stream-" + string(rune('a'+i))
			start := e.clock.Now()
			s := e.open(t)
			hs := captureHeaders(t, "anthropic-turn1", e.key, rid)
			assertProto(t, "request headers reply", s.send(requestHeaders(hs, false)), headersReply(&extprocv3.CommonResponse{
				HeaderMutation: &extprocv3.HeaderMutation{
					SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
					RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
				},
			}))
			e.clock.Advance(2 * time.Millisecond)
			assertProto(t, "request body reply", s.send(requestBody(body, true)), requestBodyReply(routePlan))
			e.clock.Advance(time.Second)
			got := s.send(responseHeaders([]header{{":status", "200"}, {"content-type", "text/event-stream; charset=utf-8"},
				{"request-id", "req_011CX"}, {"anthropic-ratelimit-unified-status", "allowed"}}, false))
			assertProto(t, "response headers reply", got, responseHeadersReply(streamedOverride))

			chunks := split(sse, tt.size, rng)
			var ttft time.Duration
			off := 0
			for k, c := range chunks {
				e.clock.Advance(step)
				eos := tt.eos && k == len(chunks)-1
				assertProto(t, "response body reply", s.send(responseBody(c, eos)), unchangedChunk)
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
			want := usage.Event{
				RequestID: rid, Time: start, UserID: e.userID, KeyID: e.keyID,
				SessionID: claudeSession, ClientVersion: "2.1.332",
				PathKind: usage.PathMessages, Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic",
				Stream: true, Status: 200,
				Usage: usage.Usage{InputTokens: 6, OutputTokens: 143, CacheReadInputTokens: 14217,
					CacheWrite5mInputTokens: 1024, CacheWrite1hInputTokens: 10808},
				TTFT: ttft, Latency: latency,
				// The answer's anthropic-ratelimit-unified-status.
				PlanLimits: usage.PlanLimits{Status: usage.PlanStatusAllowed},
			}
			if !tt.eos {
				// Without end_of_stream the end is only known at stream close.
				want.Latency = e.clock.Now().Sub(start)
			}
			if got := evs[i]; got != want {
				t.Fatalf("usage event\ngot:  %+v\nwant: %+v", got, want)
			}
		})
	}
	if got := metric(t, e, "ccproxy_extproc_requests_total", "outcome", "forwarded", "route", "plan"); got != float64(len(tests)) {
		t.Errorf("forwarded requests = %v, want %d", got, len(tests))
	}
	if got := metric(t, e, "ccproxy_extproc_usage_events_total", "aborted", "false", "path", "messages"); got != float64(len(tests)) {
		t.Errorf("usage events = %v, want %d", got, len(tests))
	}
	if got := metric(t, e, "ccproxy_extproc_tokens_total", "kind", "output"); got != float64(143*len(tests)) {
		t.Errorf("output tokens = %v", got)
	}
}

func TestPassThroughBuffered(t *testing.T) {
	e := startEnv(t, nil)
	turn2 := readFile(t, captures+"anthropic-turn2-tool-result.body.json")
	nonStream := bytes.Replace(turn2, []byte(`"stream":true}`), []byte(`"stream":false}`), 1)
	if bytes.Equal(nonStream, turn2) {
		t.Fatal("capture does not end with stream:true")
	}
	countBody := []byte(`{"model":"claude-sonnet-4-5-20250929","messages":[{"role":"user","content":"count me"}]}`)
	errBody := []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."},"request_id":"req_011"}`)
	jsonHeaders := func(status string) []header {
		return []header{{":status", status}, {"content-type", "application/json"}, {"content-length", "577"}}
	}
	tests := []struct {
		name        string
		headers     []header
		body        []byte
		wantHeaders *extprocv3.CommonResponse
		respHeaders []header
		respBody    []byte
		want        usage.Event // RequestID, Time, TTFT, Latency, user and key filled in
	}{
		{
			name:    "non-streaming message",
			headers: captureHeaders(t, "anthropic-turn2-tool-result", e.key, "rid-json"),
			body:    nonStream,
			wantHeaders: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
				RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
			}},
			respHeaders: jsonHeaders("200"),
			respBody:    readFile(t, sseFixtures+"message.json"),
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: "messages",
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Status: 200,
				Usage: usage.Usage{InputTokens: 12, OutputTokens: 9, CacheReadInputTokens: 2000,
					CacheWrite5mInputTokens: 40, CacheWrite1hInputTokens: 60}},
		},
		{
			name: "count_tokens with header key and a spoofed route",
			headers: []header{{":method", "POST"}, {":path", "/v1/messages/count_tokens?beta=true"}, {":scheme", "https"},
				{":authority", "gw.example"}, {"content-type", "application/json"}, {"user-agent", "python-httpx/0.28.1"},
				{"x-ccproxy-key", e.key}, {"x-ccproxy-route", "plan"}, {"authorization", "Bearer sk-ant-oat01-xyz"},
				{"x-claude-code-agent-id", "agent-7"}, {"x-request-id", "rid-count"}},
			body: countBody,
			wantHeaders: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state", "x-ccproxy-key"},
			}},
			respHeaders: jsonHeaders("200"),
			respBody:    readFile(t, sseFixtures+"count_tokens.json"),
			want: usage.Event{AgentID: "agent-7", ClientVersion: "python-httpx/0.28.1", PathKind: "count_tokens",
				Model: "claude-sonnet-4-5-20250929", Route: "plan", Provider: "anthropic", Status: 200,
				CountedInputTokens: 14503},
		},
		{
			// Releases up to 2.1.85 send no x-claude-code-session-id; the
			// session is read from metadata.user_id instead.
			name:    "release without the session header",
			headers: captureHeaders(t, "../claude-code-releases/2.0.56/anthropic-main", e.key, "rid-2.0.56"),
			body:    readFile(t, captures+"../claude-code-releases/2.0.56/anthropic-main.body.json"),
			wantHeaders: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
				RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
			}},
			respHeaders: jsonHeaders("200"),
			respBody:    readFile(t, sseFixtures+"message.json"),
			want: usage.Event{SessionID: "1e20d4a2-4997-4bee-85ad-363aa50e87ee", ClientVersion: "2.0.56", PathKind: "messages",
				Model: "claude-sonnet-4-5-20250929", Route: "plan", Provider: "anthropic", Stream: true, Status: 200,
				Usage: usage.Usage{InputTokens: 12, OutputTokens: 9, CacheReadInputTokens: 2000,
					CacheWrite5mInputTokens: 40, CacheWrite1hInputTokens: 60}},
		},
		{
			name:    "rate-limited: error passes through",
			headers: captureHeaders(t, "anthropic-turn1", e.key, "rid-429"),
			body:    readFile(t, captures+"anthropic-turn1.body.json"),
			wantHeaders: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
				RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
			}},
			respHeaders: []header{{":status", "429"}, {"content-type", "application/json"}, {"retry-after", "17"}},
			respBody:    errBody,
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: "messages",
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Stream: true, Status: 429},
		},
		{
			name:    "malformed JSON body still goes to Plan",
			headers: captureHeaders(t, "anthropic-turn1", e.key, "rid-bad"),
			body:    []byte(`{"model":"claude-opus-5-5","messages":[`),
			wantHeaders: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true")},
				RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
			}},
			respHeaders: []header{{":status", "400"}, {"content-type", "application/json"}},
			respBody:    []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"invalid JSON"}}`),
			want: usage.Event{SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: "messages",
				Model: "claude-opus-5-5", Route: "plan", Provider: "anthropic", Status: 400},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := e.clock.Now()
			s := e.open(t)
			assertProto(t, "request headers reply", s.send(requestHeaders(tt.headers, false)), headersReply(tt.wantHeaders))
			assertProto(t, "request body reply", s.send(requestBody(tt.body, true)), requestBodyReply(routePlan))
			e.clock.Advance(300 * time.Millisecond)
			assertProto(t, "response headers reply", s.send(responseHeaders(tt.respHeaders, false)), responseHeadersReply(nil))
			ttft := e.clock.Now().Sub(start)
			e.clock.Advance(5 * time.Millisecond)
			assertProto(t, "response body reply", s.send(responseBody(tt.respBody, true)), unchangedChunk)
			latency := e.clock.Now().Sub(start)
			e.clock.Advance(time.Millisecond)
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

func TestAbortedStream(t *testing.T) {
	e := startEnv(t, nil)
	sse := readFile(t, sseFixtures+"stream-tool-use.sse")
	start := e.clock.Now()
	s := e.open(t)
	s.send(requestHeaders(captureHeaders(t, "anthropic-turn1", e.key, "rid-abort"), false))
	s.send(requestBody(readFile(t, captures+"anthropic-turn1.body.json"), true))
	s.send(responseHeaders([]header{{":status", "200"}, {"content-type", "text/event-stream"}}, false))
	// message_start and the first deltas arrive, then the client goes away:
	// Envoy resets the stream.
	cut := firstDeltaEnd(t, sse) + 1
	e.clock.Advance(40 * time.Millisecond)
	assertProto(t, "reply", s.send(responseBody(sse[:cut], false)), unchangedChunk)
	ttft := e.clock.Now().Sub(start)
	e.clock.Advance(time.Second)
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := e.rec.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := usage.Event{
		RequestID: "rid-abort", Time: start, UserID: e.userID, KeyID: e.keyID,
		SessionID: claudeSession, ClientVersion: "2.1.332", PathKind: "messages", Model: "claude-opus-5-5",
		Route: "plan", Provider: "anthropic", Stream: true, Status: 200,
		Usage: usage.Usage{InputTokens: 6, OutputTokens: 2, CacheReadInputTokens: 14217,
			CacheWrite5mInputTokens: 1024, CacheWrite1hInputTokens: 10808},
		TTFT: ttft, Latency: e.clock.Now().Sub(start), Aborted: true,
	}
	if evs[0] != want {
		t.Fatalf("usage event\ngot:  %+v\nwant: %+v", evs[0], want)
	}
	if got := metric(t, e, "ccproxy_extproc_usage_events_total", "aborted", "true", "path", "messages"); got != 1 {
		t.Errorf("aborted usage events = %v, want 1", got)
	}
}

func TestBodilessForwarded(t *testing.T) {
	e := startEnv(t, nil)
	s := e.open(t)
	// A request without a body: the headers reply is the last request
	// phase, so it carries the route and clear_route_cache. It is metered
	// like any forwarded request.
	got := s.send(requestHeaders([]header{{":method", "POST"}, {":path", "/ak/" + e.key + "/v1/messages?beta=true"},
		{":scheme", "https"}, {":authority", "gw.example"}, {"x-ccproxy-route", "bedrock-us-east-1"}, {"x-request-id", "rid-bodiless"}}, true))
	assertProto(t, "request headers reply", got, headersReply(&extprocv3.CommonResponse{
		HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/v1/messages?beta=true"), set("x-ccproxy-route", "plan")},
			RemoveHeaders: []string{"x-ccproxy-route", "x-ccproxy-state"},
		},
		ClearRouteCache: true,
	}))
	assertProto(t, "response headers reply", s.send(responseHeaders([]header{{":status", "400"}, {"content-type", "application/json"}}, false)), responseHeadersReply(nil))
	assertProto(t, "response body reply", s.send(responseBody([]byte(`{"type":"error","error":{"type":"invalid_request_error","message":"body"}}`), true)), unchangedChunk)
	s.close()
	evs := e.rec.Events()
	if len(evs) != 1 || evs[0].RequestID != "rid-bodiless" || evs[0].Status != 400 || evs[0].Route != "plan" {
		t.Fatalf("usage events %+v; want one for rid-bodiless, status 400, route plan", evs)
	}
}

// TestOnlyMeteredEndpointsForwarded: every request that goes upstream produces a usage row,
// so endpoints that are not metered are answered 404 by the gateway instead of forwarded
// unmetered with the developer's credential.
func TestOnlyMeteredEndpointsForwarded(t *testing.T) {
	e := startEnv(t, nil)
	const notServed = `{"type":"error","error":{"type":"not_found_error","message":"ccproxy: not found; the gateway serves POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models"}}`
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/files?limit=2"},
		{"POST", "/v1/files"},
		{"POST", "/v1/messages/batches"},
		{"GET", "/v1/models/claude-opus-5-5"},
		{"POST", "/v1/models"},
		{"DELETE", "/v1/models"},
		{"POST", "/v1/complete"},
		{"POST", "/v1/organizations/usage_report"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			s := e.open(t)
			got := s.send(requestHeaders([]header{{":method", tc.method}, {":path", "/ak/" + e.key + tc.path},
				{":scheme", "https"}, {":authority", "gw.example"}, {"x-request-id", "rid-x"}}, true))
			assertProto(t, "reply", got, immediateReply(404, notServed, "ccproxy_endpoint_not_served"))
			s.expectEnd()
		})
	}
	if evs := e.rec.Events(); len(evs) != 0 {
		t.Fatalf("usage events for refused requests: %+v", evs)
	}
}

func TestProtocolViolation(t *testing.T) {
	e := startEnv(t, nil)
	s := e.open(t)
	hs := captureHeaders(t, "anthropic-turn1", e.key, "rid-dup")
	s.send(requestHeaders(hs, false))
	if err := s.s.Send(requestHeaders(hs, false)); err != nil {
		t.Fatal(err)
	}
	_, err := s.s.Recv()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second request headers: err = %v, want FailedPrecondition", err)
	}
}

func TestLookupFailure(t *testing.T) {
	e := startEnv(t, failingStore{})
	s := e.open(t)
	got := s.send(requestHeaders(captureHeaders(t, "anthropic-turn1", e.key, "rid-lookup"), false))
	assertProto(t, "reply", got, immediateReply(500,
		`{"type":"error","error":{"type":"api_error","message":"ccproxy: the access key could not be checked; try again"}}`,
		"ccproxy_key_lookup_failed"))
	if got := metric(t, e, "ccproxy_extproc_auth_failures_total", "reason", "lookup_error"); got != 1 {
		t.Errorf("lookup errors = %v, want 1", got)
	}
}

func TestHealth(t *testing.T) {
	e := startEnv(t, nil)
	hc := healthpb.NewHealthClient(e.conn)
	for _, svc := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, %v; want SERVING", svc, resp, err)
		}
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "listen")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "x.sock")

	// A socket file left behind by a dead process is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	for _, addr := range []string{"unix://" + sock, "unix:" + sock} {
		lis, err := Listen(addr)
		if err != nil {
			t.Fatalf("Listen(%q) over a stale socket: %v", addr, err)
		}
		// A live one is not.
		if _, err := Listen(addr); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Fatalf("Listen(%q) over a live socket: err = %v", addr, err)
		}
		lis.(*socketListener).SetUnlinkOnClose(false)
		lis.(*socketListener).UnixListener.Close()
	}
	// Nor is a regular file.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://" + file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: err = %v", err)
	}
	if _, err := Listen("unix://"); err == nil {
		t.Fatal("Listen with an empty path: no error")
	}
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
}

func TestNewServerValidation(t *testing.T) {
	if _, err := NewServer(Options{Usage: usage.Discard{}}); err == nil {
		t.Error("NewServer without Keys: no error")
	}
	e := startEnv(t, nil)
	// A second server on the same registry must fail, not panic.
	if _, err := NewServer(Options{Keys: failingResolver{}, Usage: usage.Discard{}, Registerer: e.reg}); err == nil {
		t.Error("NewServer with metrics already registered: no error")
	}
}

type failingResolver struct{}

func (failingResolver) Resolve(context.Context, string) (accesskey.Identity, error) {
	return accesskey.Identity{}, errors.New("down")
}

func TestServeDrainTimeout(t *testing.T) {
	srv, err := NewServer(Options{Keys: failingResolver{}, Usage: usage.Discard{}, DrainTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A stream that never ends, like a long streamed answer.
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(responseHeaders([]header{{":status", "200"}}, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain timeout")
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("stream still open after Serve returned")
	}
}

// TestPassThroughSubagentAttribution: a subagent's request carries its
// agent id (and, from a client that sends one, its parent's); an answer
// calling the Agent tool twice is counted in the usage event, and the
// answer still reaches the client unchanged.
func TestPassThroughSubagentAttribution(t *testing.T) {
	e := startEnv(t, nil)
	body := readFile(t, captures+"anthropic-turn1.body.json")
	start := func(i int) string {
		return fmt.Sprintf("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"+
			"{\"type\":\"tool_use\",\"id\":\"toolu_%d\",\"name\":\"Agent\",\"input\":{}}}\n\n", i, i)
	}
	sse := []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n" +
		start(0) + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n" +
		start(1) + "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	s := e.open(t)
	hs := append(captureHeaders(t, "anthropic-turn1", e.key, "rid-subagent"),
		header{"x-claude-code-agent-id", "a8f3c2d1e0b9"}, header{"x-claude-code-parent-agent-id", "a0000000parent"})
	s.send(requestHeaders(hs, false))
	assertProto(t, "request body reply", s.send(requestBody(body, true)), requestBodyReply(routePlan))
	assertProto(t, "response headers reply", s.send(responseHeaders([]header{{":status", "200"}, {"content-type", "text/event-stream"}}, false)),
		responseHeadersReply(streamedOverride))
	for _, c := range split(sse, 5, nil) {
		assertProto(t, "response body reply", s.send(responseBody(c, false)), unchangedChunk)
	}
	assertProto(t, "response body reply", s.send(responseBody(nil, true)), unchangedChunk)
	s.close()
	evs, err := e.rec.Wait(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	if ev.AgentID != "a8f3c2d1e0b9" || ev.ParentAgentID != "a0000000parent" || ev.AgentSpawns != 2 || ev.SessionID != claudeSession ||
		ev.Usage != (usage.Usage{InputTokens: 7, OutputTokens: 40}) {
		t.Errorf("usage event %+v; want the agent, its parent and 2 subagent calls", ev)
	}
}
