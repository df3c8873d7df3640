package fakeanthropic

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

const host = "api.anthropic.com"

// client trusts only ca and dials every address to addr; h2 selects
// whether it offers h2.
func client(ca *fakebedrock.CA, addr string, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr}
}

func post(t *testing.T, c *http.Client, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func ok(Request) Reply {
	return Reply{Body: Message("claude-opus-5-5", "ok", Usage{Input: 1, Output: 1})}
}

func TestTLS(t *testing.T) {
	ca := fakebedrock.NewCA(t)
	s := NewTLS(t, ok, ca.Leaf(t, host))
	if _, _, err := net.SplitHostPort(s.Addr()); err != nil || !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr %q", s.Addr())
	}
	for _, tt := range []struct {
		h2    bool
		proto string
	}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
		resp, b := post(t, client(ca, s.Addr(), tt.h2), "https://"+host+"/v1/messages?beta=true", `{"model":"claude-opus-5-5","messages":[]}`)
		if resp.StatusCode != 200 || resp.Proto != tt.proto || !strings.Contains(string(b), `"text":"ok"`) {
			t.Errorf("h2=%v: %s %d %s", tt.h2, resp.Proto, resp.StatusCode, b)
		}
	}
	// A client that does not trust the CA refuses the certificate.
	_, err := (&http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr())
	}}}).Get("https://" + host + "/v1/models")
	if err == nil {
		t.Error("a client with the system roots accepted the certificate")
	}
	reqs := s.Requests("/v1/messages")
	if len(reqs) != 2 || reqs[0].Proto != "HTTP/2.0" || reqs[1].Proto != "HTTP/1.1" || reqs[0].SNI != host || reqs[1].SNI != host ||
		reqs[0].Header.Get("Host") != host || reqs[0].URLPath() != "/v1/messages" || reqs[0].Model() != "claude-opus-5-5" {
		t.Errorf("recorded %+v", reqs)
	}

	// Closed while the test runs: connections fail, the record stays.
	s.Close()
	_, err = client(ca, s.Addr(), true).Get("https://" + host + "/v1/models")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after Close: %v; want connection refused", err)
	}
	if len(s.Requests("")) != 2 || s.Count("/v1/messages", "") != 2 || len(s.Failures()) != 0 {
		t.Errorf("after Close: %d requests, failures %q", len(s.Requests("")), s.Failures())
	}
	s.Close() // and again at cleanup
}

func TestPlainHTTP(t *testing.T) {
	s := New(t, ok)
	resp, _ := post(t, http.DefaultClient, s.URL+"/v1/messages", `{}`)
	if r := s.Requests(""); resp.StatusCode != 200 || len(r) != 1 || r[0].Proto != "HTTP/1.1" || r[0].SNI != "" {
		t.Errorf("%d, recorded %+v", resp.StatusCode, r)
	}
}

func TestCount(t *testing.T) {
	s := New(t, ok)
	for _, b := range []struct{ path, body string }{
		{"/v1/messages?beta=true", `{"model":"claude-opus-5-5"}`},
		{"/v1/messages?beta=true", `{"model":"claude-haiku-4-5"}`},
		{"/v1/messages", `{"model":"claude-opus-5-5"}`},
		{"/v1/messages/count_tokens?beta=true", `{"model":"claude-opus-5-5"}`},
		{"/v1/messages", `not json`},
	} {
		post(t, http.DefaultClient, s.URL+b.path, b.body)
	}
	for _, c := range []struct {
		path, model string
		want        int
	}{
		{"/v1/messages", "claude-opus-5-5", 2},
		{"/v1/messages", "claude-haiku-4-5", 1},
		{"/v1/messages", "", 4},
		{"/v1/messages/count_tokens", "claude-opus-5-5", 1},
		{"/v1/messages/count_tokens", "claude-haiku-4-5", 0},
		{"/v1/models", "", 0},
	} {
		if got := s.Count(c.path, c.model); got != c.want {
			t.Errorf("Count(%q, %q) = %d; want %d", c.path, c.model, got, c.want)
		}
	}
}

// sse parses an SSE body into event data objects.
func sse(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(d), &m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestThinkingStream(t *testing.T) {
	const thought = "The user greets me; answer briefly."
	evs := Stream("claude-opus-5-5", Usage{Input: 5, Output: 9}, Block{Thinking: thought, Chunks: 3}, Block{RedactedThinking: "opaque=="}, Block{Text: "Hi!"})
	s := New(t, func(Request) Reply { return Reply{Events: evs} })
	_, b := post(t, http.DefaultClient, s.URL+"/v1/messages", `{"stream":true}`)
	var types []string
	var text, sig string
	for _, ev := range sse(t, b) {
		typ := ev["type"].(string)
		if d, ok := ev["delta"].(map[string]any); ok && typ == "content_block_delta" {
			typ += "/" + d["type"].(string)
			if v, ok := d["thinking"].(string); ok {
				text += v
			}
			if v, ok := d["signature"].(string); ok {
				sig = v
			}
		}
		if cb, ok := ev["content_block"].(map[string]any); ok {
			typ += "/" + cb["type"].(string)
			if cb["type"] == "thinking" && (cb["thinking"] != "" || cb["signature"] != "") {
				t.Errorf("thinking content_block_start %v; want empty thinking and signature", cb)
			}
		}
		types = append(types, typ)
	}
	want := []string{"message_start",
		"content_block_start/thinking", "content_block_delta/thinking_delta", "content_block_delta/thinking_delta", "content_block_delta/thinking_delta",
		"content_block_delta/signature_delta", "content_block_stop",
		"content_block_start/redacted_thinking", "content_block_stop",
		"content_block_start/text", "content_block_delta/text_delta", "content_block_stop",
		"ping", "message_delta", "message_stop"}
	if !slices.Equal(types, want) {
		t.Errorf("events %q;\nwant %q", types, want)
	}
	if text != thought || sig != thinking.Sign(thought) {
		t.Errorf("thinking %q signature %q", text, sig)
	}

	var msg struct {
		Content    []map[string]any
		StopReason string `json:"stop_reason"`
	}
	if err := json.Unmarshal(MessageBlocks("m", Usage{}, Block{Thinking: thought}, Block{Text: "Hi!"}, Block{ToolName: "Bash", ToolID: "t1"}), &msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 3 || msg.Content[0]["type"] != "thinking" || msg.Content[0]["thinking"] != thought ||
		msg.Content[0]["signature"] != thinking.Sign(thought) || msg.Content[1]["text"] != "Hi!" || msg.StopReason != "tool_use" {
		t.Errorf("MessageBlocks: %+v", msg)
	}
	if got, want := string(Message("m", "x", Usage{})), string(MessageBlocks("m", Usage{}, Block{Text: "x"})); got != want {
		t.Errorf("Message %s; want %s", got, want)
	}
}

// bedrockThinking returns the thinking text and signature fakebedrock
// streams for thought.
func bedrockThinking(t *testing.T, thought string) (string, string) {
	t.Helper()
	var text, sig string
	for _, ev := range fakebedrock.Stream("claude-opus-5-5", fakebedrock.Usage{}, fakebedrock.Block{Thinking: thought, Chunks: 2}) {
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
	return text, sig
}

func TestThinkingHistory(t *testing.T) {
	text, sig := bedrockThinking(t, "Bedrock thought about it.")
	if sig == "" || text != "Bedrock thought about it." {
		t.Fatalf("fakebedrock streamed %q %q", text, sig)
	}
	history := func(thinkingText, signature string) string {
		block, _ := json.Marshal(map[string]any{"type": "thinking", "thinking": thinkingText, "signature": signature})
		return `{"model":"claude-opus-5-5","messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]},` +
			`{"role":"assistant","content":[` + string(block) + `,{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a.txt","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`
	}
	s := New(t, ok)
	// A signature made by the other fake is accepted, on /v1/messages and
	// on count_tokens.
	for _, path := range []string{"/v1/messages?beta=true", "/v1/messages/count_tokens?beta=true"} {
		if resp, b := post(t, http.DefaultClient, s.URL+path, history(text, sig)); resp.StatusCode != 200 {
			t.Errorf("%s with fakebedrock's signature: %d %s", path, resp.StatusCode, b)
		}
	}
	if f := s.Failures(); len(f) != 0 {
		t.Fatalf("failures %q", f)
	}
	// An altered text or signature is refused without asking the handler.
	s.SetHandler(func(Request) Reply { t.Error("the handler was asked"); return Reply{} })
	for _, body := range []string{history(text+"!", sig), history(text, sig[:10]+"x"+sig[11:]), history(text, "")} {
		resp, b := post(t, http.DefaultClient, s.URL+"/v1/messages?beta=true", body)
		want := "{\"error\":{\"message\":\"messages.1.content.0: Invalid `signature` in `thinking` block\",\"type\":\"invalid_request_error\"},\"type\":\"error\"}"
		if resp.StatusCode != 400 || string(b) != want || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got %d %s; want 400 %s", resp.StatusCode, b, want)
		}
	}
	want := "POST /v1/messages?beta=true: messages.1.content.0: Invalid `signature` in `thinking` block"
	if f := s.Failures(); len(f) != 3 || f[0] != want {
		t.Errorf("failures %q; want 3 × %q", f, want)
	}
	if n := s.Count("/v1/messages", "claude-opus-5-5"); n != 4 {
		t.Errorf("Count = %d; want 4 (refused requests are recorded)", n)
	}
	// count_tokens is not checked.
	s.SetHandler(ok)
	if resp, b := post(t, http.DefaultClient, s.URL+"/v1/messages/count_tokens", history(text+"!", sig)); resp.StatusCode != 200 || len(s.Failures()) != 3 {
		t.Errorf("count_tokens with a bad signature: %d %s, failures %q", resp.StatusCode, b, s.Failures())
	}
}
