package router

import (
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// bedrockJSONAnswer is a non-streamed InvokeModel answer (Anthropic's
// message JSON, as Bedrock returns it for Anthropic models).
const bedrockJSONAnswer = `{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-opus-5-5",` +
	`"content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":21,"cache_creation_input_tokens":4,"cache_read_input_tokens":8,"output_tokens":13}}`

// TestBedrockNonStreamedMetering: every non-streamed Bedrock answer is
// metered from its JSON body — Claude Code's Bedrock mode (/invoke and
// /count-tokens) and a translated stream:false request.
func TestBedrockNonStreamedMetering(t *testing.T) {
	wantMsgUsage := usage.Usage{InputTokens: 21, OutputTokens: 13, CacheReadInputTokens: 8, CacheWrite5mInputTokens: 4}
	tests := []struct {
		name        string
		key         string
		path        string
		body        string
		answer      string
		wantPath    string // stored for the upstream processor
		wantKind    string
		wantUsage   usage.Usage
		wantCounted int64
		wantAnswer  string // the body the client gets; "" = unchanged
	}{
		{
			name: "Bedrock mode invoke", key: "plan-first",
			path:     "/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
			body:     `{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
			answer:   bedrockJSONAnswer,
			wantPath: "/model/us.anthropic.claude-opus-5-5/invoke",
			wantKind: usage.PathMessages, wantUsage: wantMsgUsage,
		},
		{
			name: "Bedrock mode count-tokens", key: "plan-first",
			path:     "/bedrock/model/anthropic.claude-opus-5-5/count-tokens",
			body:     `{"input":{"invokeModel":{"body":"e30="}}}`,
			answer:   `{"inputTokens":37}`,
			wantPath: "/model/anthropic.claude-opus-5-5/count-tokens",
			wantKind: usage.PathCountTokens, wantCounted: 37,
		},
		{
			name: "translated stream:false", key: "bedrock",
			path:     "/v1/messages",
			body:     `{"model":"claude-opus-5-5","max_tokens":5,"stream":false,"messages":[{"role":"user","content":"hi"}]}`,
			answer:   bedrockJSONAnswer,
			wantPath: "/model/us.anthropic.claude-opus-5-5/invoke",
			wantKind: usage.PathMessages, wantUsage: wantMsgUsage,
		},
		{
			name: "translated count_tokens", key: "bedrock",
			path:     "/v1/messages/count_tokens",
			body:     `{"model":"claude-opus-5-5","messages":[{"role":"user","content":"hi"}]}`,
			answer:   `{"inputTokens":9}`,
			wantPath: "/model/anthropic.claude-opus-5-5/count-tokens",
			wantKind: usage.PathCountTokens, wantCounted: 9, wantAnswer: `{"input_tokens":9}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+tc.path))
			resp := mustProcess(t, p, reqBody([]byte(tc.body)))
			stored := h.requests.Get(setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())[dataplane.StateHeader])
			if stored == nil || stored.Path != tc.wantPath {
				t.Fatalf("stored %+v, want path %s", stored, tc.wantPath)
			}
			resp = mustProcess(t, p, respHeaders("200", "content-type", "application/json"))
			if resp.GetModeOverride() != nil {
				t.Fatalf("a JSON answer must stay BUFFERED: %v", resp)
			}
			common := mustProcess(t, p, respBody([]byte(tc.answer), true)).GetResponseBody().GetResponse()
			if got := string(common.GetBodyMutation().GetBody()); got != tc.wantAnswer {
				t.Fatalf("answer rewritten to %q, want %q", got, tc.wantAnswer)
			}
			p.Close(context.Background())
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events, want 1", len(evs))
			}
			ev := evs[0]
			if ev.Provider != usage.ProviderBedrock || ev.PathKind != tc.wantKind || ev.Usage != tc.wantUsage ||
				ev.CountedInputTokens != tc.wantCounted || ev.Status != 200 || ev.Aborted || ev.Stream {
				t.Fatalf("usage event %+v\nwant kind %s usage %+v counted %d", ev, tc.wantKind, tc.wantUsage, tc.wantCounted)
			}
		})
	}
}

// TestBedrockNeverSeesClientCredentials: the developer's own Anthropic
// credential, in either header Claude Code uses, is removed from every
// request the gateway translates for Bedrock (the upstream processor removes
// what the stored request lists).
func TestBedrockNeverSeesClientCredentials(t *testing.T) {
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	tests := []struct {
		name, key, path string
		runtime         func(testing.TB) *runtimeconfig.Config
	}{
		{"bedrock_only", "bedrock", "/v1/messages", testRuntime},
		{"bedrock_only count_tokens", "bedrock", "/v1/messages/count_tokens", testRuntime},
		{"plan_first with fallback", "plan-first", "/v1/messages", fallbackRuntime},
	}
	for _, tc := range tests {
		for _, cred := range [][]string{
			{"authorization", "Bearer sk-ant-oat01-subscription"},
			{"x-api-key", "sk-ant-api03-key"},
			{"x-api-key", "sk-ant-api03-key", "authorization", "Bearer sk-ant-oat01-subscription"},
		} {
			t.Run(tc.name+" "+strings.Join(cred, " "), func(t *testing.T) {
				h := newBedrockHarness(t, tc.runtime(t), nil)
				p := h.r.NewProcessor()
				mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+tc.path, cred...))
				resp := mustProcess(t, p, reqBody(body))
				stored := h.requests.Get(setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())[dataplane.StateHeader])
				if stored == nil {
					t.Fatal("nothing stored for the upstream processor")
				}
				var want []string
				for i := 0; i < len(cred); i += 2 {
					want = append(want, cred[i])
				}
				if got := strings.Join(stored.RemoveHeaders, ","); got != strings.Join(want, ",") {
					t.Fatalf("headers removed for Bedrock %q, want %q", got, strings.Join(want, ","))
				}
				p.Close(context.Background())
			})
		}
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCompressedResponses: an upstream answer with a content-encoding other
// than identity passes to the client byte for byte, its usage is not read
// from compressed bytes, and the unreadable usage is counted and logged.
func TestCompressedResponses(t *testing.T) {
	sse := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	tests := []struct {
		name        string
		key         string
		body        string
		contentType string
		encoding    string
		answer      string
		streamed    bool
		wantUsage   usage.Usage
		unreadable  float64
	}{
		{name: "Plan SSE, gzip", key: "plan-only", body: `{"model":"claude-opus-5-5","stream":true,"messages":[]}`,
			contentType: "text/event-stream", encoding: "gzip", answer: sse, streamed: true, unreadable: 1},
		{name: "Plan JSON, gzip", key: "plan-only", body: `{"model":"claude-opus-5-5","messages":[]}`,
			contentType: "application/json", encoding: "gzip", answer: bedrockJSONAnswer, unreadable: 1},
		{name: "Bedrock JSON, gzip", key: "bedrock", body: `{"model":"claude-opus-5-5","max_tokens":5,"stream":false,"messages":[]}`,
			contentType: "application/json", encoding: "gzip", answer: bedrockJSONAnswer, unreadable: 1},
		{name: "Plan SSE, identity is read", key: "plan-only", body: `{"model":"claude-opus-5-5","stream":true,"messages":[]}`,
			contentType: "text/event-stream", encoding: "identity", answer: sse, streamed: true,
			wantUsage: usage.Usage{InputTokens: 3, OutputTokens: 7}},
		{name: "Bedrock JSON, identity is read", key: "bedrock", body: `{"model":"claude-opus-5-5","max_tokens":5,"stream":false,"messages":[]}`,
			contentType: "application/json", encoding: "identity", answer: bedrockJSONAnswer,
			wantUsage: usage.Usage{InputTokens: 21, OutputTokens: 13, CacheReadInputTokens: 8, CacheWrite5mInputTokens: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+"/v1/messages"))
			mustProcess(t, p, reqBody([]byte(tc.body)))
			wire := []byte(tc.answer)
			if tc.encoding == "gzip" {
				wire = gzipped(t, wire)
			}
			resp := mustProcess(t, p, respHeaders("200", "content-type", tc.contentType, "content-encoding", tc.encoding))
			if (resp.GetModeOverride() != nil) != tc.streamed {
				t.Fatalf("mode override %v, want streamed=%v", resp.GetModeOverride(), tc.streamed)
			}
			if m := resp.GetResponseHeaders().GetResponse().GetHeaderMutation(); m != nil {
				t.Fatalf("response headers changed: %v", m)
			}
			chunks := [][]byte{wire}
			if tc.streamed {
				chunks = [][]byte{wire[:len(wire)/2], wire[len(wire)/2:]}
			}
			for i, c := range chunks {
				bm := mustProcess(t, p, respBody(c, i == len(chunks)-1)).GetResponseBody().GetResponse().GetBodyMutation()
				if bm != nil {
					t.Fatalf("chunk %d mutated: %v", i, bm)
				}
			}
			p.Close(context.Background())
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events, want 1", len(evs))
			}
			if evs[0].Usage != tc.wantUsage || evs[0].Status != 200 {
				t.Fatalf("usage %+v status %d, want %+v", evs[0].Usage, evs[0].Status, tc.wantUsage)
			}
			if got := testutil.ToFloat64(h.metrics.unparsed.WithLabelValues("content_encoding")); got != tc.unreadable {
				t.Fatalf("usage_unreadable_total{reason=content_encoding} = %v, want %v", got, tc.unreadable)
			}
		})
	}
}

// TestRefusedKeys: the router refuses every key it must not serve with an
// Anthropic 401 before anything reaches an upstream, counted by reason.
func TestRefusedKeys(t *testing.T) {
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	store := accesskey.MemoryStore{}
	recs := map[string]accesskey.KeyRecord{
		"active":           {},
		"revoked":          {RevokedAt: now.Add(-time.Minute)},
		"revoked later":    {RevokedAt: now.Add(time.Hour)},
		"grace over":       {ExpiresAt: now.Add(-time.Second)},
		"user disabled":    {UserDisabled: true},
		"revoked just now": {RevokedAt: now},
	}
	keyOf := map[string]string{}
	for name, rec := range recs {
		k, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		rec.KeyID, rec.UserID = uuid.New(), uuid.New()
		store.Add(hasher, k, rec)
		keyOf[name] = k
	}
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, path string
		headers         []string
		wantStatus      int32
		wantMsg         string
		reason          string
	}{
		{"active key served", keyOf["active"], "", nil, 0, "", ""},
		{"revocation scheduled in the future still served", keyOf["revoked later"], "", nil, 0, "", ""},
		{"revoked", keyOf["revoked"], "", nil, 401, "ccproxy: access key revoked", reasonRevoked},
		{"revoked at this very instant", keyOf["revoked just now"], "", nil, 401, "ccproxy: access key revoked", reasonRevoked},
		{"rotation grace period over", keyOf["grace over"], "", nil, 401, "ccproxy: access key revoked", reasonRevoked},
		{"user disabled", keyOf["user disabled"], "", nil, 401, "ccproxy: access key revoked", reasonRevoked},
		{"revoked, in the header", "", "/v1/messages", []string{dataplane.KeyHeader, keyOf["revoked"]}, 401, "ccproxy: access key revoked", reasonRevoked},
		{"unknown", unknown, "", nil, 401, "ccproxy: invalid access key", reasonUnknown},
		{"malformed", "ak_short", "", nil, 401, "ccproxy: malformed access key", reasonMalformed},
		{"missing", "", "/v1/messages", nil, 401, "ccproxy: no access key; set ANTHROPIC_BASE_URL to the gateway URL ending in /ak/<your access key>", reasonMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			sink := &usage.Recorder{}
			r, err := New(Config{Keys: accesskey.NewStoreResolver(store, hasher, func() time.Time { return now }), Usage: sink, Metrics: m})
			if err != nil {
				t.Fatal(err)
			}
			path := tc.path
			if path == "" {
				path = "/ak/" + tc.key + "/v1/messages"
			}
			p := r.NewProcessor()
			resp := mustProcess(t, p, reqHeaders("POST", path, tc.headers...))
			ir := resp.GetImmediateResponse()
			if tc.wantStatus == 0 {
				if ir != nil {
					t.Fatalf("refused: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
				}
				return
			}
			want := `{"type":"error","error":{"type":"authentication_error","message":"` + tc.wantMsg + `"}}`
			if ir == nil || int32(ir.GetStatus().GetCode()) != tc.wantStatus || string(ir.GetBody()) != want {
				t.Fatalf("got %v, want %d %s", resp, tc.wantStatus, want)
			}
			if hs := setHeaders(ir.GetHeaders()); hs["content-type"] != "application/json" || hs["x-should-retry"] != "false" {
				t.Fatalf("refusal headers %v", hs)
			}
			p.Close(context.Background())
			if got := testutil.ToFloat64(m.authFailures.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("auth_failures_total{reason=%q} = %v, want 1", tc.reason, got)
			}
			if got := testutil.ToFloat64(m.requests.WithLabelValues(OutcomeRefused, routeLocal)); got != 1 {
				t.Fatalf("requests_total{outcome=unauthorized} = %v, want 1", got)
			}
			if n := len(sink.Events()); n != 0 {
				t.Fatalf("a refused request emitted %d usage events", n)
			}
		})
	}
}

// TestUsageRecordedBeforeResponseEndIsReleased: the usage event of a
// response that ended is recorded while the message that ended it is
// processed — before its reply releases the end to the client — not when
// the stream closes later; a response that did not end is recorded at
// Close, once.
func TestUsageRecordedBeforeResponseEndIsReleased(t *testing.T) {
	sse := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	tests := []struct {
		name        string
		key         string
		body        string
		contentType string
		chunks      []string
		ends        bool
		wantUsage   usage.Usage
	}{
		{name: "Plan SSE", key: "plan-only", body: `{"model":"claude-opus-5-5","stream":true,"messages":[]}`,
			contentType: "text/event-stream", chunks: []string{sse[:40], sse[40:]}, ends: true,
			wantUsage: usage.Usage{InputTokens: 3, OutputTokens: 7}},
		{name: "Bedrock JSON", key: "bedrock", body: `{"model":"claude-opus-5-5","max_tokens":5,"stream":false,"messages":[]}`,
			contentType: "application/json", chunks: []string{bedrockJSONAnswer}, ends: true,
			wantUsage: usage.Usage{InputTokens: 21, OutputTokens: 13, CacheReadInputTokens: 8, CacheWrite5mInputTokens: 4}},
		{name: "Plan SSE abandoned", key: "plan-only", body: `{"model":"claude-opus-5-5","stream":true,"messages":[]}`,
			contentType: "text/event-stream", chunks: []string{sse[:40]}, ends: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, testRuntime(t), nil)
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+"/v1/messages"))
			mustProcess(t, p, reqBody([]byte(tc.body)))
			mustProcess(t, p, respHeaders("200", "content-type", tc.contentType))
			for i, c := range tc.chunks {
				if n := len(h.sink.Events()); n != 0 {
					t.Fatalf("%d usage events before chunk %d, want 0", n, i)
				}
				mustProcess(t, p, respBody([]byte(c), tc.ends && i == len(tc.chunks)-1))
			}
			if n, want := len(h.sink.Events()), map[bool]int{true: 1, false: 0}[tc.ends]; n != want {
				t.Fatalf("%d usage events once the last chunk was processed, want %d", n, want)
			}
			p.Close(context.Background())
			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events after Close, want 1", len(evs))
			}
			if evs[0].Aborted == tc.ends {
				t.Errorf("aborted = %v, want %v", evs[0].Aborted, !tc.ends)
			}
			if tc.ends && evs[0].Usage != tc.wantUsage {
				t.Errorf("usage %+v, want %+v", evs[0].Usage, tc.wantUsage)
			}
		})
	}
}
