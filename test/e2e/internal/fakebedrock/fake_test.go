package fakebedrock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

const (
	host      = DefaultHost
	westHost  = "bedrock-runtime.us-west-2.amazonaws.com"
	key       = "ABSKZmFrZWJlZHJvY2sta2V5"
	model     = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
	modelPath = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
	streamURL = "https://" + host + modelPath + "/invoke-with-response-stream"
	invokeURL = "https://" + host + modelPath + "/invoke"
	name      = "claude-sonnet-4-5-20250929"
)

var creds = aws.Credentials{AccessKeyID: "AKIAFAKEBEDROCK00001", SecretAccessKey: "fake/secret/key/for/the/e2e/tests+0001"}

// body is a minimal valid InvokeModel body.
func body(extra string) string {
	return `{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]` + extra + `}`
}

// frame is one decoded event-stream message, in a form easy to compare.
type frame struct {
	Headers string // "name=value" joined by " "
	Event   string // the decoded Anthropic event JSON for chunks, else the payload
}

// decode decodes a whole event-stream body with the SDK's decoder and checks
// that chunk payloads have exactly the keys bytes and p, in that order.
func decode(t *testing.T, b []byte) []frame {
	t.Helper()
	dec := eventstream.NewDecoder()
	r := bytes.NewReader(b)
	var out []frame
	for r.Len() > 0 {
		m, err := dec.Decode(r, nil)
		if err != nil {
			t.Fatalf("frame %d: %v", len(out), err)
		}
		var hs []string
		for _, h := range m.Headers {
			hs = append(hs, h.Name+"="+h.Value.String())
		}
		f := frame{Headers: strings.Join(hs, " "), Event: string(m.Payload)}
		if m.Headers.Get(":message-type").String() == "event" {
			keys, err := topLevelKeys(m.Payload)
			if err != nil || !slices.Equal(keys, []string{"bytes", "p"}) {
				t.Errorf("frame %d payload %s: keys %q (%v); want [bytes p]", len(out), m.Payload, keys, err)
			}
			var p struct{ Bytes, P string }
			_ = json.Unmarshal(m.Payload, &p)
			if p.P == "" || !strings.HasPrefix(padding, p.P) {
				t.Errorf("frame %d padding %q; want a non-empty prefix of the alphabet", len(out), p.P)
			}
			ev, err := base64.StdEncoding.DecodeString(p.Bytes)
			if err != nil {
				t.Errorf("frame %d: %v", len(out), err)
			}
			f.Event = string(ev)
		}
		out = append(out, f)
	}
	return out
}

const chunkHeaders = ":event-type=chunk :content-type=application/json :message-type=event"

// TestCaptureShape checks the fake's frames against the real capture: the
// same headers in the same order, the same payload keys, and the same
// events (but for the message id and the way the text is split).
func TestCaptureShape(t *testing.T) {
	capture, err := os.ReadFile("../../../../testdata/bedrock-invoke-stream-capture.bin")
	if err != nil {
		t.Fatal(err)
	}
	real := decode(t, capture)
	const text = "Hi! 👋 How are you doing today?"
	mine := decode(t, mustEncode(t, Text(name, text, 1, Usage{Input: 10, Output: 15})))
	if len(real) != 10 || len(mine) != 6 {
		t.Fatalf("%d real frames, %d of mine; want 10 and 6", len(real), len(mine))
	}
	for i, f := range real {
		if f.Headers != chunkHeaders {
			t.Errorf("real frame %d headers %q", i, f.Headers)
		}
	}
	for i, f := range mine {
		if f.Headers != chunkHeaders {
			t.Errorf("frame %d headers %q; want %q as in the capture", i, f.Headers, chunkHeaders)
		}
	}
	realStart := strings.Replace(real[0].Event, "msg_bdrk_012GBPzpcoMCLP1b2pcJsSHk", MessageID, 1)
	pairs := [][2]string{
		{realStart, mine[0].Event},
		{real[1].Event, mine[1].Event},
		{strings.Replace(real[2].Event, `"Hi"`, `"`+text+`"`, 1), mine[2].Event},
		{real[7].Event, mine[3].Event},
		{real[8].Event, mine[4].Event},
		{real[9].Event, mine[5].Event},
	}
	for i, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("event %d:\n got %s\nwant %s", i, p[1], p[0])
		}
	}
	var joined string
	for _, f := range real[2:7] {
		var ev struct{ Delta struct{ Text string } }
		_ = json.Unmarshal([]byte(f.Event), &ev)
		joined += ev.Delta.Text
	}
	if joined != text {
		t.Errorf("capture text %q; want %q", joined, text)
	}
}

func mustEncode(t *testing.T, r Reply) []byte {
	t.Helper()
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call sends one request with the fake's client and returns status, the
// x-amzn-ErrorType header and the body.
func call(t *testing.T, c *http.Client, method, url, body string, hdr http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return do(t, c, req)
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func bearer() http.Header {
	return http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}}
}

const (
	startUsage35 = `{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1}`
	start35      = `{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_bdrk_01FakeBedrock0000000000","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":` + startUsage35 + `}}`
)

func TestStream(t *testing.T) {
	cached := Usage{Input: 3, Output: 5, CacheRead: 700, CacheWrite5m: 20, CacheWrite1h: 2}
	tests := []struct {
		name   string
		reply  Reply
		status int
		ctype  string
		frames []frame
		body   string
	}{
		{
			name: "text", reply: Text(name, "Hello <there>", 2, Usage{Input: 3, Output: 5}), status: 200,
			ctype: "application/vnd.amazon.eventstream",
			frames: []frame{
				{chunkHeaders, start35},
				{chunkHeaders, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
				{chunkHeaders, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello <"}}`},
				{chunkHeaders, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there>"}}`},
				{chunkHeaders, `{"type":"content_block_stop","index":0}`},
				{chunkHeaders, `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}`},
				{chunkHeaders, `{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":5,"invocationLatency":1798,"firstByteLatency":1507}}`},
			},
		},
		{
			name: "tool use with cache", reply: ToolUse(name, "Running it.", "toolu_01", "Bash", map[string]any{"command": "echo hi"}, cached), status: 200,
			ctype: "application/vnd.amazon.eventstream",
			frames: []frame{
				{chunkHeaders, `{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_bdrk_01FakeBedrock0000000000","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":22,"cache_read_input_tokens":700,"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":2},"output_tokens":1}}}`},
				{chunkHeaders, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
				{chunkHeaders, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Running it."}}`},
				{chunkHeaders, `{"type":"content_block_stop","index":0}`},
				{chunkHeaders, `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"Bash","input":{}}}`},
				{chunkHeaders, `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\":"}}`},
				{chunkHeaders, `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"echo hi\"}"}}`},
				{chunkHeaders, `{"type":"content_block_stop","index":1}`},
				{chunkHeaders, `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":5}}`},
				{chunkHeaders, `{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":5,"invocationLatency":1798,"firstByteLatency":1507,"cacheReadInputTokenCount":700,"cacheWriteInputTokenCount":22}}`},
			},
		},
		{
			name:   "in-stream throttling exception",
			reply:  StreamException("throttlingException", "Too many tokens, please wait before trying again.", Stream(name, Usage{Input: 3, Output: 5})[:1]...),
			status: 200, ctype: "application/vnd.amazon.eventstream",
			frames: []frame{
				{chunkHeaders, start35},
				{":exception-type=throttlingException :content-type=application/json :message-type=exception", `{"message":"Too many tokens, please wait before trying again."}`},
			},
		},
		{
			name:   "in-stream model stream error",
			reply:  StreamException("modelStreamErrorException", "Model stream broke."),
			status: 200, ctype: "application/vnd.amazon.eventstream",
			frames: []frame{
				{":exception-type=modelStreamErrorException :content-type=application/json :message-type=exception", `{"message":"Model stream broke."}`},
			},
		},
		{
			name:   "throttled",
			reply:  Throttled(),
			status: 429, ctype: "application/json",
			body: `{"message":"Too many requests, please wait before trying again."}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{APIKeys: []string{key}})
			fake.Push(tt.reply)
			status, hdr, got := call(t, fake.HTTP1Client(), "POST", streamURL, body(""), bearer())
			if status != tt.status || hdr.Get("Content-Type") != tt.ctype {
				t.Fatalf("status %d, content-type %q; want %d %q (body %q)", status, hdr.Get("Content-Type"), tt.status, tt.ctype, got)
			}
			if tt.status == 200 {
				if v := hdr.Get("X-Amzn-Bedrock-Content-Type"); v != "application/json" {
					t.Errorf("x-amzn-bedrock-content-type %q", v)
				}
				if frames := decode(t, got); !slices.Equal(frames, tt.frames) {
					t.Errorf("frames:\n got %q\nwant %q", frames, tt.frames)
				}
			} else {
				if string(got) != tt.body || hdr.Get("X-Amzn-ErrorType") != "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/" {
					t.Errorf("body %s, x-amzn-ErrorType %q", got, hdr.Get("X-Amzn-ErrorType"))
				}
			}
			if hdr.Get("X-Amzn-RequestId") == "" {
				t.Errorf("no x-amzn-RequestId")
			}
			reqs := fake.Requests()
			if len(reqs) != 1 || reqs[0].Status != tt.status || reqs[0].Op != OpInvokeStream || reqs[0].ModelID != model ||
				reqs[0].RawPath != modelPath+"/invoke-with-response-stream" || reqs[0].Proto != "HTTP/1.1" {
				t.Errorf("recorded %+v", reqs)
			}
		})
	}
}

func TestInvoke(t *testing.T) {
	fake := New(t, Config{APIKeys: []string{key}})
	fake.Push(Text(name, "Plain answer.", 3, Usage{Input: 12, Output: 4, CacheRead: 5}))
	status, hdr, got := call(t, fake.Client(), "POST", invokeURL, body(""), bearer())
	want := `{"model":"claude-sonnet-4-5-20250929","id":"msg_bdrk_01FakeBedrock0000000000","type":"message","role":"assistant","content":[{"type":"text","text":"Plain answer."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":4}}`
	if status != 200 || string(got) != want || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("got %d %q %s; want 200 application/json %s", status, hdr.Get("Content-Type"), got, want)
	}
	for k, v := range map[string]string{"X-Amzn-Bedrock-Input-Token-Count": "12", "X-Amzn-Bedrock-Output-Token-Count": "4",
		"X-Amzn-Bedrock-Invocation-Latency": "1798", "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "5"} {
		if hdr.Get(k) != v {
			t.Errorf("%s: %q; want %q", k, hdr.Get(k), v)
		}
	}
	if r := fake.Requests(); len(r) != 1 || r[0].Proto != "HTTP/2.0" || r[0].ContentLength != int64(len(body(""))) || r[0].Op != OpInvoke {
		t.Errorf("recorded %+v", r)
	}
}

func TestEchoAndQueue(t *testing.T) {
	fake := New(t, Config{APIKeys: []string{key}})
	msgs := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[` +
		`{"role":"user","content":[{"type":"text","text":"<system-reminder>x</system-reminder>"},{"type":"text","text":" hello fake "}]},` +
		`{"role":"system","content":[{"type":"text","text":"env"}]}]}`
	toolResult := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"run it"},` +
		`{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"tool-output-42"}]}]}]}`
	handlerSaw := 0
	fake.SetHandler(func(r Request) Reply {
		handlerSaw++
		if strings.Contains(string(r.Body), "scripted") {
			return Text(name, "from the handler", 1, Usage{Input: 1, Output: 3})
		}
		return Reply{} // the default
	})
	fake.Push(Text(name, "queued first", 1, Usage{Input: 1, Output: 2}))

	texts := func(b []byte) (string, string) {
		var text, delta string
		for _, f := range decode(t, b) {
			var ev struct {
				Type  string
				Delta struct{ Text string }
				Usage json.RawMessage
			}
			_ = json.Unmarshal([]byte(f.Event), &ev)
			text += ev.Delta.Text
			if ev.Type == "message_delta" {
				delta = string(ev.Usage)
			}
		}
		return text, delta
	}
	tests := []struct {
		name, body, text, usage string
	}{
		{"queue first", body(`,"metadata":{"user_id":"scripted"}`), "queued first", `{"output_tokens":2}`},
		{"handler", body(`,"metadata":{"user_id":"scripted"}`), "from the handler", `{"output_tokens":3}`},
		{"echo of the last user text", msgs, "fakebedrock heard: hello fake", `{"output_tokens":4}`},
		{"echo of a tool result", toolResult, "fakebedrock heard: tool result: tool-output-42", `{"output_tokens":5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, got := call(t, fake.Client(), "POST", streamURL, tt.body, bearer())
			text, usage := texts(got)
			if status != 200 || text != tt.text || usage != tt.usage {
				t.Errorf("got %d %q usage %s; want 200 %q %s", status, text, usage, tt.text, tt.usage)
			}
		})
	}
	if handlerSaw != 3 {
		t.Errorf("the handler saw %d requests; want 3 (not the queued one)", handlerSaw)
	}
	r := fake.Requests()[2]
	if got, want := EchoUsage(r), (Usage{Input: (len(msgs) + 3) / 4, Output: 4}); got != want {
		t.Errorf("EchoUsage = %+v; want %+v", got, want)
	}
}

func TestCountTokens(t *testing.T) {
	inner := `{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"messages":[{"role":"user","content":"count me"}]}`
	wrap := func(s string) string {
		return `{"input":{"invokeModel":{"body":"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"}}}`
	}
	const base = "anthropic.claude-sonnet-4-5-20250929-v1:0"
	const basePath = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
	tests := []struct {
		name, path, body string
		push             []Reply
		status           int
		errType, want    string
		problem          bool
	}{
		{"default count", basePath, wrap(inner), nil, 200, "", fmt.Sprintf(`{"inputTokens":%d}`, (len(inner)+3)/4), false},
		{"scripted count", basePath, wrap(inner), []Reply{CountTokens(42)}, 200, "", `{"inputTokens":42}`, false},
		{"unsupported model", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens", wrap(inner), nil, 400,
			"ValidationException", `{"message":"The provided model doesn't support counting tokens."}`, false},
		{"inference profile", "/model/us." + base[:len(base)-2] + "%3A0/count-tokens", wrap(inner), nil, 400,
			"ValidationException", `{"message":"The provided model identifier is invalid."}`, true},
		{"inner body validated", basePath, wrap(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"model":"x","messages":[]}`), nil, 400,
			"ValidationException", `{"message":"Malformed input request: #: extraneous key [model] is not permitted, please reformat your input and try again."}`, true},
		{"not base64", basePath, `{"input":{"invokeModel":{"body":"%%%"}}}`, nil, 400,
			"SerializationException", `{"message":"Could not decode base64 body."}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{APIKeys: []string{key}, NoCountTokens: []string{"anthropic.claude-3-haiku-20240307-v1:0"}, AllowProblems: true})
			fake.PushCountTokens(tt.push...)
			status, hdr, got := call(t, fake.Client(), "POST", "https://"+host+tt.path, tt.body, bearer())
			errType, _, _ := strings.Cut(hdr.Get("X-Amzn-ErrorType"), ":")
			if status != tt.status || errType != tt.errType || string(got) != tt.want {
				t.Errorf("got %d %q %s; want %d %q %s", status, errType, got, tt.status, tt.errType, tt.want)
			}
			r := fake.Requests()[0]
			if (len(r.Problems) > 0) != tt.problem || r.Op != OpCountTokens {
				t.Errorf("recorded op %q problems %q; want problems: %v", r.Op, r.Problems, tt.problem)
			}
			if tt.status == 200 && string(r.InvokeBody()) != inner {
				t.Errorf("InvokeBody = %s", r.InvokeBody())
			}
		})
	}
}

const (
	unrecognized = `{"message":"The security token included in the request is invalid."}`
	mismatch     = `{"message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}`
	coral        = ":http://internal.amazon.com/coral/com.amazon.coral.service/"
)

func TestBearer(t *testing.T) {
	tests := []struct {
		name, authz string
		status      int
		errType     string
		want        string
		mode        string
	}{
		{"registered key", "Bearer " + key, 200, "", "", AuthBearer},
		{"other key", "Bearer ABSKbm90LXRoZS1rZXk=", 403, "UnrecognizedClientException", unrecognized, AuthBearer},
		{"no authorization", "", 403, "MissingAuthenticationTokenException", `{"message":"Missing Authentication Token"}`, AuthNone},
		{"sigv4 unknown to a bearer-only fake", "AWS4-HMAC-SHA256 Credential=AKIAX/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
			403, "UnrecognizedClientException", unrecognized, AuthSigV4},
		{"basic", "Basic Zm9vOmJhcg==", 403, "UnrecognizedClientException", unrecognized, AuthOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{APIKeys: []string{key}, AllowProblems: true})
			h := http.Header{"X-Amz-Date": {time.Now().UTC().Format(amzDateFormat)}}
			if tt.authz != "" {
				h.Set("Authorization", tt.authz)
			}
			status, hdr, got := call(t, fake.Client(), "POST", streamURL, body(""), h)
			if status != tt.status || (tt.want != "" && string(got) != tt.want) {
				t.Errorf("got %d %s; want %d %s", status, got, tt.status, tt.want)
			}
			if tt.errType != "" && hdr.Get("X-Amzn-ErrorType") != tt.errType+coral {
				t.Errorf("x-amzn-ErrorType %q; want %q", hdr.Get("X-Amzn-ErrorType"), tt.errType+coral)
			}
			r := fake.Requests()[0]
			if r.Auth.Mode != tt.mode || r.Auth.OK != (tt.status == 200) || r.Auth.Error != tt.errType || r.ErrorType != tt.errType {
				t.Errorf("recorded auth %+v, error type %q", r.Auth, r.ErrorType)
			}
			if tt.mode == AuthBearer && (r.Auth.Key != strings.TrimPrefix(tt.authz, "Bearer ") || r.Auth.Region != "us-east-1") {
				t.Errorf("recorded auth %+v", r.Auth)
			}
			if n := len(fake.Failures()); (n > 0) == (tt.status == 200) {
				t.Errorf("failures %q", fake.Failures())
			}
		})
	}
}

func TestSigV4(t *testing.T) {
	now := time.Now().UTC()
	session := aws.Credentials{AccessKeyID: "ASIAFAKEBEDROCK00002", SecretAccessKey: "second-secret", SessionToken: "session-token-2"}
	good := body("")
	tests := []struct {
		name string
		// signURL and signBody are what the client signs; sendURL and
		// sendBody what it sends (defaults: the signed ones).
		signURL, signBody, sendURL, sendBody string
		opaque                               bool
		creds                                aws.Credentials
		region                               string
		at                                   time.Time
		mutate                               func(*http.Request)
		http1                                bool
		status                               int
		errType, want                        string
	}{
		{name: "escaped path, h2", signURL: streamURL, status: 200},
		{name: "escaped path, http/1.1", signURL: streamURL, http1: true, status: 200},
		{name: "path pre-escaped in URL.Opaque", signURL: streamURL, opaque: true, http1: true, status: 200},
		{name: "raw colon signed and sent", signURL: "https://" + host + "/model/" + model + "/invoke", status: 200},
		{name: "session token", signURL: streamURL, creds: session, status: 200},
		{name: "unsigned header added after signing", signURL: streamURL, mutate: func(r *http.Request) { r.Header.Set("X-Extra", "1") }, status: 200},
		{name: "other host region", signURL: "https://" + westHost + modelPath + "/invoke", region: "us-west-2", status: 200},
		{name: "tampered body", signURL: streamURL, sendBody: body(`,"temperature":1`), status: 403, errType: "InvalidSignatureException", want: mismatch},
		{name: "tampered path", signURL: streamURL, sendURL: "https://" + host + "/model/us.anthropic.claude-opus-4-1-20250805-v1%3A0/invoke-with-response-stream",
			status: 403, errType: "InvalidSignatureException", want: mismatch},
		{name: "decoded path signed, escaped path sent", signURL: "https://" + host + "/model/" + model + "/invoke-with-response-stream", sendURL: streamURL,
			status: 403, errType: "InvalidSignatureException", want: mismatch},
		{name: "tampered signed header", signURL: streamURL, mutate: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
			status: 403, errType: "InvalidSignatureException", want: mismatch},
		{name: "wrong secret", signURL: streamURL, creds: aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: "nope"},
			status: 403, errType: "InvalidSignatureException", want: mismatch},
		{name: "missing session token", signURL: streamURL, creds: aws.Credentials{AccessKeyID: session.AccessKeyID, SecretAccessKey: session.SecretAccessKey},
			status: 403, errType: "UnrecognizedClientException", want: unrecognized},
		{name: "unknown access key", signURL: streamURL, creds: aws.Credentials{AccessKeyID: "AKIAUNKNOWN", SecretAccessKey: "x"},
			status: 403, errType: "UnrecognizedClientException", want: unrecognized},
		{name: "wrong region", signURL: streamURL, region: "us-west-2",
			status: 403, errType: "InvalidSignatureException", want: `{"message":"Credential should be scoped to a valid region. "}`},
		{name: "expired", signURL: streamURL, at: now.Add(-20 * time.Minute), status: 403, errType: "InvalidSignatureException",
			want: fmt.Sprintf(`{"message":"Signature expired: %s is now earlier than %s (%s - 15 min.)"}`,
				now.Add(-20*time.Minute).Format(amzDateFormat), now.Add(-15*time.Minute).Format(amzDateFormat), now.Format(amzDateFormat))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{Hosts: []string{host, westHost}, Credentials: []aws.Credentials{creds, session},
				AllowProblems: true, Now: func() time.Time { return now }})
			c := tt.creds
			if c.AccessKeyID == "" {
				c = creds
			}
			region := tt.region
			if region == "" {
				region = "us-east-1"
			}
			at := tt.at
			if at.IsZero() {
				at = now
			}
			signBody := good
			if tt.signBody != "" {
				signBody = tt.signBody
			}
			sendURL, sendBody := tt.sendURL, tt.sendBody
			if sendURL == "" {
				sendURL = tt.signURL
			}
			if sendBody == "" {
				sendBody = signBody
			}
			signReq, err := http.NewRequest("POST", tt.signURL, strings.NewReader(signBody))
			if err != nil {
				t.Fatal(err)
			}
			if tt.opaque {
				signReq.URL.Opaque = "//" + signReq.URL.Host + signReq.URL.EscapedPath()
			}
			signReq.Header.Set("Content-Type", "application/json")
			signReq.Header.Set("Accept", "application/vnd.amazon.eventstream")
			sum := sha256.Sum256([]byte(signBody))
			if err := v4.NewSigner().SignHTTP(context.Background(), c, signReq, hex.EncodeToString(sum[:]), "bedrock", region, at); err != nil {
				t.Fatal(err)
			}
			sendReq := signReq
			if sendURL != tt.signURL || sendBody != signBody {
				sendReq, _ = http.NewRequest("POST", sendURL, strings.NewReader(sendBody))
				sendReq.Header = signReq.Header.Clone()
			}
			if tt.mutate != nil {
				tt.mutate(sendReq)
			}
			client := fake.Client()
			if tt.http1 {
				client = fake.HTTP1Client()
			}
			status, hdr, got := do(t, client, sendReq)
			if status != tt.status || (tt.want != "" && string(got) != tt.want) {
				t.Errorf("got %d %s; want %d %s", status, got, tt.status, tt.want)
			}
			if tt.errType != "" && hdr.Get("X-Amzn-ErrorType") != tt.errType+coral {
				t.Errorf("x-amzn-ErrorType %q; want %q", hdr.Get("X-Amzn-ErrorType"), tt.errType+coral)
			}
			r := fake.Requests()[0]
			if r.Auth.Mode != AuthSigV4 || r.Auth.OK != (tt.status == 200) || r.Auth.Key != c.AccessKeyID || r.Auth.Region != region || r.Auth.Service != "bedrock" {
				t.Errorf("recorded auth %+v", r.Auth)
			}
			if tt.status == 200 && (len(r.Problems) != 0 || !strings.HasSuffix(r.ModelID, "-v1:0")) {
				t.Errorf("recorded model %q problems %q", r.ModelID, r.Problems)
			}
			if tt.status != 200 && r.Auth.Detail == "" {
				t.Errorf("no detail for the refusal: %+v", r.Auth)
			}
		})
	}
}

// TestTLS checks the certificate, SNI and Host checks.
func TestTLS(t *testing.T) {
	ca := NewCA(t)
	pem, err := os.ReadFile(ca.File)
	if err != nil || !bytes.Equal(pem, ca.PEM) || !bytes.HasPrefix(pem, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Fatalf("CA file %s: %v %q", ca.File, err, pem)
	}
	fake := New(t, Config{CA: ca, Hosts: []string{host, westHost}, AllowProblems: true})
	if fake.CAFile() != ca.File || fake.URLTemplate() != fmt.Sprintf("https://bedrock-runtime.{region}.amazonaws.com:%d", fake.Port()) {
		t.Errorf("CAFile %q, URLTemplate %q", fake.CAFile(), fake.URLTemplate())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA PEM does not parse")
	}
	client := func(sni string, verify bool, h2 bool) *http.Client {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: sni, InsecureSkipVerify: !verify},
			ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", fake.Addr())
			},
		}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: tr}
	}
	tests := []struct {
		name, url, sni  string
		verify, h2      bool
		proto, wantSNI  string
		handshakeFailed bool
		problems        []string
	}{
		{name: "h2 with the host name", url: streamURL, verify: true, h2: true, proto: "HTTP/2.0", wantSNI: host},
		{name: "http/1.1 with the other host name", url: "https://" + westHost + modelPath + "/invoke", verify: true, proto: "HTTP/1.1", wantSNI: westHost},
		{name: "host with port", url: "https://" + host + ":8443" + modelPath + "/invoke", verify: true, proto: "HTTP/1.1", wantSNI: host,
			problems: []string{`Host "bedrock-runtime.us-east-1.amazonaws.com:8443"; want one of ["bedrock-runtime.us-east-1.amazonaws.com" "bedrock-runtime.us-west-2.amazonaws.com"] (the host name, without port)`}},
		{name: "SNI differs from Host", url: streamURL, sni: westHost, verify: true, proto: "HTTP/1.1", wantSNI: westHost,
			problems: []string{`Host "bedrock-runtime.us-east-1.amazonaws.com" differs from TLS SNI "bedrock-runtime.us-west-2.amazonaws.com"`}},
		{name: "unknown SNI", url: streamURL, sni: "bedrock.example.com", proto: "HTTP/1.1", wantSNI: "bedrock.example.com",
			problems: []string{`TLS SNI "bedrock.example.com"; want one of ["bedrock-runtime.us-east-1.amazonaws.com" "bedrock-runtime.us-west-2.amazonaws.com"]`,
				`Host "bedrock-runtime.us-east-1.amazonaws.com" differs from TLS SNI "bedrock.example.com"`}},
		{name: "the certificate is not valid for another name", url: streamURL, sni: "bedrock.example.com", verify: true, handshakeFailed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fake.Requests())
			beforeFailures := len(fake.Failures())
			req, _ := http.NewRequest("POST", tt.url, strings.NewReader(body("")))
			resp, err := client(tt.sni, tt.verify, tt.h2).Do(req)
			if tt.handshakeFailed {
				var verr *tls.CertificateVerificationError
				if !errors.As(err, &verr) {
					t.Fatalf("err = %v; want a certificate verification error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			reqs := fake.Requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("%d requests recorded", len(reqs))
			}
			r := reqs[0]
			if r.Proto != tt.proto || r.SNI != tt.wantSNI || !slices.Equal(r.Problems, tt.problems) {
				t.Errorf("recorded proto %q SNI %q problems %q;\nwant %q %q %q", r.Proto, r.SNI, r.Problems, tt.proto, tt.wantSNI, tt.problems)
			}
			wantFailures := len(tt.problems)
			if tt.sni == "bedrock.example.com" {
				wantFailures++ // the handshake itself
			}
			if got := fake.Failures()[beforeFailures:]; len(got) != wantFailures {
				t.Errorf("new failures %q; want %d", got, wantFailures)
			}
		})
	}
	// A client without the CA refuses the certificate.
	_, err = (&http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", fake.Addr())
	}}}).Get(streamURL)
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Errorf("a client with the system roots: %v; want x509.UnknownAuthorityError", err)
	}
	if leaf := ca.Leaf(t, host, westHost).Leaf; !slices.Equal(leaf.DNSNames, []string{host, westHost}) {
		t.Errorf("leaf SANs %q", leaf.DNSNames)
	}
}

func TestValidation(t *testing.T) {
	const malformed = `{"message":"Malformed input request: %s, please reformat your input and try again."}`
	tests := []struct {
		name     string
		body     string
		header   http.Header
		chunked  bool
		status   int
		errType  string
		want     string
		problems []string
	}{
		{name: "valid", body: body(`,"anthropic_beta":["interleaved-thinking-2025-05-14"],"system":"s","tools":[],"thinking":{"type":"enabled","budget_tokens":1024}`), status: 200},
		{name: "unknown beta", body: body(`,"anthropic_beta":["interleaved-thinking-2025-05-14","claude-code-20250219"]`), status: 400,
			errType: "ValidationException", want: `{"message":"invalid beta flag"}`,
			problems: []string{`anthropic_beta "claude-code-20250219" is not a flag Bedrock knows (allowed: ["interleaved-thinking-2025-05-14" "tool-search-tool-2025-10-19"])`}},
		{name: "extraneous key", body: body(`,"context_management":{}`), status: 400, errType: "ValidationException",
			want: fmt.Sprintf(malformed, "#: extraneous key [context_management] is not permitted"), problems: []string{`body has extraneous key "context_management"`}},
		{name: "cache_control with a scope", body: body(`,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","scope":"global"}}]`), status: 400,
			errType: "ValidationException", want: fmt.Sprintf(malformed, "#: extraneous key [scope] is not permitted"),
			problems: []string{`a cache_control object has extraneous key "scope"`}},
		{name: "cache_control with a ttl", body: body(`,"messages":[{"role":"user","content":[{"type":"text","text":"q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]`), status: 200},
		{name: "model and stream", body: `{"model":"claude-sonnet-4-5","stream":true,` + body("")[1:], status: 400, errType: "ValidationException",
			want: fmt.Sprintf(malformed, "#: 2 schema violations found"), problems: []string{`body has "model"`, `body has "stream"`}},
		{name: "no anthropic_version", body: `{"max_tokens":1,"messages":[]}`, status: 400, errType: "ValidationException",
			want: fmt.Sprintf(malformed, "#: required key [anthropic_version] not found"), problems: []string{"body has no anthropic_version"}},
		{name: "wrong anthropic_version", body: `{"anthropic_version":"2023-06-01","max_tokens":1,"messages":[]}`, status: 400, errType: "ValidationException",
			want: `{"message":"Invalid API version"}`, problems: []string{`anthropic_version "2023-06-01"; want "bedrock-2023-05-31"`}},
		{name: "no max_tokens", body: `{"anthropic_version":"bedrock-2023-05-31","messages":[]}`, status: 400, errType: "ValidationException",
			want: fmt.Sprintf(malformed, "#: required key [max_tokens] not found"), problems: []string{"body has no max_tokens"}},
		{name: "not JSON", body: `nope`, status: 400, errType: "ValidationException",
			want: fmt.Sprintf(malformed, "#: expected type: JSONObject"), problems: []string{"body is not a JSON object: invalid character 'o' in literal null (expecting 'u')"}},
		{name: "client headers leak", body: body(""), header: http.Header{"X-Api-Key": {"sk-ant"}, "Anthropic-Version": {"2023-06-01"},
			"Anthropic-Beta": {"claude-code-20250219"}, "X-Ccproxy-State": {"abc"}}, status: 200,
			problems: []string{`header anthropic-beta must not reach Bedrock (["claude-code-20250219"])`, `header anthropic-version must not reach Bedrock (["2023-06-01"])`,
				`header x-api-key must not reach Bedrock (["sk-ant"])`, `header x-ccproxy-state must not reach Bedrock (["abc"])`}},
		{name: "chunked body", body: body(""), chunked: true, status: 200,
			problems: []string{fmt.Sprintf("no content-length header (body of %d bytes)", len(body(""))), `transfer-encoding ["chunked"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{APIKeys: []string{key}, Betas: []string{"interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19"}, AllowProblems: true})
			var rd io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				rd = io.MultiReader(rd) // unknown length
			}
			req, _ := http.NewRequest("POST", streamURL, rd)
			req.Header = bearer()
			for k, v := range tt.header {
				req.Header[k] = v
			}
			status, hdr, got := do(t, fake.HTTP1Client(), req)
			if status != tt.status || (tt.want != "" && string(got) != tt.want) {
				t.Errorf("got %d %s; want %d %s", status, got, tt.status, tt.want)
			}
			if tt.errType != "" && hdr.Get("X-Amzn-ErrorType") != tt.errType+":http://internal.amazon.com/coral/com.amazon.bedrock/" {
				t.Errorf("x-amzn-ErrorType %q", hdr.Get("X-Amzn-ErrorType"))
			}
			r := fake.Requests()[0]
			if !slices.Equal(r.Problems, tt.problems) || string(r.Body) != tt.body || r.Status != tt.status || r.ErrorType != tt.errType {
				t.Errorf("recorded problems %q status %d error %q; want %q", r.Problems, r.Status, r.ErrorType, tt.problems)
			}
			if got := fake.Failures(); len(got) != len(tt.problems) {
				t.Errorf("failures %q", got)
			}
		})
	}
}

func TestUnknownOperation(t *testing.T) {
	fake := New(t, Config{APIKeys: []string{key}, AllowProblems: true})
	status, hdr, _ := call(t, fake.Client(), "POST", "https://"+host+"/model/x/converse", body(""), bearer())
	if status != 404 || hdr.Get("X-Amzn-ErrorType") != "UnknownOperationException"+coral {
		t.Errorf("got %d %q", status, hdr.Get("X-Amzn-ErrorType"))
	}
}

func TestAbortAndGap(t *testing.T) {
	fake := New(t, Config{APIKeys: []string{key}})
	evs := Stream(name, Usage{Input: 1, Output: 1}, Block{Text: "x"})
	fake.Push(Reply{Events: evs[:2], Abort: true, Gap: 20 * time.Millisecond})
	start := time.Now()
	req, _ := http.NewRequest("POST", streamURL, strings.NewReader(body("")))
	req.Header = bearer()
	resp, err := fake.HTTP1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("read the aborted stream without error")
	}
	if frames := decode(t, got); len(frames) != 2 {
		t.Errorf("%d frames before the abort; want 2", len(frames))
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("took %v; want ≥ 40ms for two gaps", d)
	}
}

func TestConcurrent(t *testing.T) {
	fake := New(t, Config{APIKeys: []string{key}})
	c := fake.Client()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", streamURL, strings.NewReader(body(fmt.Sprintf(`,"metadata":{"user_id":"u%d"}`, i))))
			req.Header = bearer()
			resp, err := c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			_ = fake.Requests()
			_ = fake.Failures()
		})
	}
	wg.Wait()
	if n := len(fake.Requests()); n != 20 {
		t.Errorf("%d requests recorded", n)
	}
	if got := fake.Carrying(`"u7"`); len(got) != 1 || got[0].Status != 200 {
		t.Errorf("Carrying: %+v", got)
	}
}

func TestAnthropicModel(t *testing.T) {
	for in, want := range map[string]string{
		"us.anthropic.claude-sonnet-4-5-20250929-v1:0": "claude-sonnet-4-5-20250929",
		"anthropic.claude-opus-4-6-v1":                 "claude-opus-4-6",
		"us.anthropic.claude-opus-5-5":                 "claude-opus-5-5",
		"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0": "claude-haiku-4-5-20251001",
	} {
		if got := AnthropicModel(in); got != want {
			t.Errorf("AnthropicModel(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestClaudeCodeBody sends the body Claude Code itself sends in its own
// Bedrock mode: it passes validation with the default betas, and the default
// answer echoes the prompt.
func TestClaudeCodeBody(t *testing.T) {
	b, err := os.ReadFile("../../../../testdata/claude-code-2.1.332/bedrock-mode-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	fake := New(t, Config{APIKeys: []string{key}})
	status, _, got := call(t, fake.HTTP1Client(), "POST", "https://"+host+"/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream", string(b), bearer())
	var text string
	for _, f := range decode(t, got) {
		var ev struct{ Delta struct{ Text string } }
		_ = json.Unmarshal([]byte(f.Event), &ev)
		text += ev.Delta.Text
	}
	if status != 200 || text != "fakebedrock heard: hello" {
		t.Errorf("got %d %q; want 200 %q", status, text, "fakebedrock heard: hello")
	}
	r := fake.Requests()[0]
	if !slices.Equal(r.Betas(), ClaudeCodeBetas) || r.ModelID != "us.anthropic.claude-opus-5-5" || len(r.Problems) != 0 {
		t.Errorf("recorded betas %q model %q problems %q", r.Betas(), r.ModelID, r.Problems)
	}
}

func TestThinking(t *testing.T) {
	const thought = "Think <first>, then answer."
	sig := thinking.Sign(thought)
	fake := New(t, Config{APIKeys: []string{key}})
	fake.Push(Answer(name, Usage{Input: 3, Output: 5}, Block{Thinking: thought, Chunks: 2}, Block{RedactedThinking: "opaque=="}, Block{Text: "Hi", Chunks: 1}))
	_, _, got := call(t, fake.HTTP1Client(), "POST", streamURL, body(""), bearer())
	var events []string
	for _, f := range decode(t, got) {
		events = append(events, f.Event)
	}
	want := []string{start35,
		`{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Think <first>,"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" then answer."}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"` + sig + `"}}`,
		`{"type":"content_block_stop","index":0}`,
		`{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"opaque=="}}`,
		`{"type":"content_block_stop","index":1}`,
		`{"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}`,
		`{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi"}}`,
		`{"type":"content_block_stop","index":2}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}`,
		`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":5,"invocationLatency":1798,"firstByteLatency":1507}}`,
	}
	if !slices.Equal(events, want) {
		t.Errorf("events:\n got %q\nwant %q", events, want)
	}
	msg := string(Message(name, Usage{}, Block{Thinking: thought}, Block{RedactedThinking: "opaque=="}, Block{Text: "Hi"}))
	if wantContent := `"content":[{"type":"thinking","thinking":"Think <first>, then answer.","signature":"` + sig + `"},{"type":"redacted_thinking","data":"opaque=="},{"type":"text","text":"Hi"}]`; !strings.Contains(msg, wantContent) {
		t.Errorf("Message %s; want content %s", msg, wantContent)
	}
}

// anthropicSignature returns the thinking text and signature fakeanthropic
// streams for thought.
func anthropicSignature(t *testing.T, thought string) (string, string) {
	t.Helper()
	var text, sig string
	for _, ev := range fakeanthropic.Stream("claude-opus-5-5", fakeanthropic.Usage{}, fakeanthropic.Block{Thinking: thought, Chunks: 2}) {
		var d struct {
			Delta struct{ Type, Thinking, Signature string }
		}
		b, _ := json.Marshal(ev.Data)
		_ = json.Unmarshal(b, &d)
		text += d.Delta.Thinking
		if d.Delta.Type == "signature_delta" {
			sig = d.Delta.Signature
		}
	}
	if text != thought || sig == "" {
		t.Fatalf("fakeanthropic streamed %q %q", text, sig)
	}
	return text, sig
}

func TestThinkingHistory(t *testing.T) {
	text, sig := anthropicSignature(t, "The Claude API thought about it.")
	history := func(thinkingText, signature string) string {
		block, _ := json.Marshal(map[string]any{"type": "thinking", "thinking": thinkingText, "signature": signature})
		return `{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[` +
			`{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]},` +
			`{"role":"assistant","content":[{"type":"redacted_thinking","data":"opaque=="},` + string(block) + `,{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a.txt","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`
	}
	const bad = "messages.1.content.1: Invalid `signature` in `thinking` block"
	tests := []struct {
		name, url, body string
		status          int
		want            string
	}{
		{name: "fakeanthropic's signature", url: streamURL, body: history(text, sig), status: 200},
		{name: "fakeanthropic's signature, invoke", url: invokeURL, body: history(text, sig), status: 200},
		{name: "altered text", url: streamURL, body: history(text+"!", sig), status: 400, want: bad},
		{name: "altered signature", url: invokeURL, body: history(text, "A"+sig[1:]), status: 400, want: bad},
		{name: "no signature", url: streamURL, body: history(text, ""), status: 400, want: bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := New(t, Config{APIKeys: []string{key}, AllowProblems: true})
			status, hdr, got := call(t, fake.Client(), "POST", tt.url, tt.body, bearer())
			if status != tt.status {
				t.Fatalf("got %d %s; want %d", status, got, tt.status)
			}
			if tt.status == 200 {
				if f := fake.Failures(); len(f) != 0 {
					t.Errorf("failures %q", f)
				}
				return
			}
			if want := `{"message":"` + tt.want + `"}`; string(got) != want || hdr.Get("X-Amzn-ErrorType") != "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/" {
				t.Errorf("got %s %q; want %s ValidationException", got, hdr.Get("X-Amzn-ErrorType"), want)
			}
			if r := fake.Requests()[0]; !slices.Equal(r.Problems, []string{tt.want}) || r.ErrorType != "ValidationException" {
				t.Errorf("recorded problems %q error %q", r.Problems, r.ErrorType)
			}
		})
	}
	// count-tokens does not check signatures.
	fake := New(t, Config{APIKeys: []string{key}})
	inner := base64.StdEncoding.EncodeToString([]byte(history(text+"!", sig)))
	status, _, got := call(t, fake.Client(), "POST", "https://"+host+"/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens",
		`{"input":{"invokeModel":{"body":"`+inner+`"}}}`, bearer())
	if status != 200 {
		t.Errorf("count-tokens: %d %s", status, got)
	}
}
