// Package fakeanthropic is a scriptable stand-in for Anthropic's Messages API
// used by the end-to-end tests: it records every request exactly as received
// (method, path, headers, body bytes) and answers with streamed SSE or JSON
// that the test chooses, including slow trickles, tool calls and signed
// thinking blocks. New serves plain HTTP on a loopback port; NewTLS serves
// HTTPS (h2 and HTTP/1.1) with a given certificate, e.g. one for
// api.anthropic.com issued by fakebedrock's test CA.
//
// Like the Claude API, the fake rejects a /v1/messages request whose history
// carries a thinking block with a missing or altered signature (see package
// thinking), answering 400 invalid_request_error without asking the handler,
// and records that in Failures.
package fakeanthropic

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

// Request is one request as the fake received it.
type Request struct {
	Method string
	// Path includes the query string.
	Path   string
	Header http.Header
	Body   []byte
	// Proto is "HTTP/1.1" or "HTTP/2.0".
	Proto string
	// SNI is the TLS server name the client sent ("" over plain HTTP or
	// when the client sent none).
	SNI string
}

// URLPath is Path without the query string.
func (r Request) URLPath() string {
	p, _, _ := strings.Cut(r.Path, "?")
	return p
}

// Model is the body's "model" ("" when absent or not JSON).
func (r Request) Model() string {
	var b struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(r.Body, &b)
	return b.Model
}

// JSON decodes the body into a generic map (nil when not JSON).
func (r Request) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// Usage is the token accounting the fake reports.
type Usage struct {
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int
}

// Reply is how the fake answers one request.
type Reply struct {
	Status int
	Header http.Header
	// Events are SSE events sent in order when the request asks to stream.
	Events []Event
	// Body is sent as-is for non-streaming answers.
	Body []byte
	// Gap is the pause before each event (for trickled streams).
	Gap time.Duration
}

// Event is one SSE event.
type Event struct {
	Type string
	Data any
}

// Handler chooses the reply to a request.
type Handler func(Request) Reply

// Server is the fake. Create it with New or NewTLS. Close (from the
// embedded httptest.Server) may be called while the test runs to make
// further connections fail; Requests, Count and Failures keep working.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []Request
	failures []string
	handler  Handler
}

// New starts a fake answering with h over plain HTTP on a loopback port and
// stops it when the test ends.
func New(t testing.TB, h Handler) *Server {
	s := &Server{handler: h}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// NewTLS starts a fake answering with h over HTTPS on a loopback port, with
// certificate cert (e.g. fakebedrock's ca.Leaf(t, "api.anthropic.com"),
// whose chain a client trusting ca.Pool() accepts), offering ALPN h2 and
// http/1.1, and stops it when the test ends. Clients reach it at Addr under
// the certificate's host name, e.g. https://api.anthropic.com:443 with the
// name mapped to Addr.
func NewTLS(t testing.TB, h Handler, cert tls.Certificate) *Server {
	t.Helper()
	s := &Server{handler: h}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.EnableHTTP2 = true
	s.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetHTTP2(true)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// Addr is the address the fake listens on, "127.0.0.1:port".
func (s *Server) Addr() string { return s.Listener.Addr().String() }

// Count returns how many requests were received whose path, without the
// query string, is path and whose JSON body's "model" is model; model ""
// counts every model. Claude Code makes side requests (title generation with
// a small model, count_tokens), so tests count per path and model, e.g.
// Count("/v1/messages", "claude-opus-5-5").
func (s *Server) Count(path, model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if r.URLPath() == path && (model == "" || r.Model() == model) {
			n++
		}
	}
	return n
}

// Failures returns the contract violations the fake found so far, one line
// each: "POST /v1/messages?beta=true: messages.1.content.0: Invalid
// `signature` in `thinking` block" for every thinking block of a request's
// history whose signature did not verify. Tests assert it is empty.
func (s *Server) Failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failures)
}

// ThinkingErrorBody is the 400 body the fake answers for a history with a
// bad thinking signature, as the Claude API does: {"type":"error","error":
// {"type":"invalid_request_error","message":"<err>"}}.
func ThinkingErrorBody(err *thinking.BlockError) []byte {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]any{"type": "invalid_request_error", "message": err.Error()}})
	return b
}

// SetHandler replaces the reply policy.
func (s *Server) SetHandler(h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Requests returns the requests received so far whose path starts with prefix.
func (s *Server) Requests(prefix string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.reqs {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body, Proto: r.Proto}
	if r.Host != "" {
		req.Header.Set("Host", r.Host)
	}
	if r.TLS != nil {
		req.SNI = r.TLS.ServerName
	}
	var bad error
	if req.URLPath() == "/v1/messages" {
		bad = thinking.CheckHistory(body)
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	h := s.handler
	if bad != nil {
		for _, line := range strings.Split(bad.Error(), "\n") {
			s.failures = append(s.failures, fmt.Sprintf("%s %s: %s", req.Method, req.Path, line))
		}
	}
	s.mu.Unlock()

	var reply Reply
	if be := (*thinking.BlockError)(nil); errors.As(bad, &be) {
		reply = Reply{Status: http.StatusBadRequest, Body: ThinkingErrorBody(be)}
	} else {
		reply = h(req)
	}
	for k, v := range reply.Header {
		w.Header()[k] = v
	}
	status := reply.Status
	if status == 0 {
		status = http.StatusOK
	}
	if reply.Events == nil {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(reply.Body)))
		w.WriteHeader(status)
		_, _ = w.Write(reply.Body)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	fl, _ := w.(http.Flusher)
	for _, ev := range reply.Events {
		if reply.Gap > 0 {
			select {
			case <-time.After(reply.Gap):
			case <-r.Context().Done():
				return
			}
		}
		data, _ := json.Marshal(ev.Data)
		var b bytes.Buffer
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", ev.Type, data)
		if _, err := w.Write(b.Bytes()); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

func usageJSON(u Usage, full bool) map[string]any {
	m := map[string]any{"output_tokens": u.Output}
	if full {
		m["input_tokens"] = u.Input
		m["cache_read_input_tokens"] = u.CacheRead
		m["cache_creation_input_tokens"] = u.CacheWrite5m + u.CacheWrite1h
		m["cache_creation"] = map[string]any{"ephemeral_5m_input_tokens": u.CacheWrite5m, "ephemeral_1h_input_tokens": u.CacheWrite1h}
	}
	return m
}

// Block is one content block of an answer. ToolName makes a tool_use block,
// else Thinking a thinking block, else RedactedThinking a redacted_thinking
// block, else it is a text block.
type Block struct {
	// Text is a text block's text, split into Chunks deltas when Chunks > 1.
	Text   string
	Chunks int
	// ToolName and ToolInput make a tool_use block instead.
	ToolName  string
	ToolInput map[string]any
	ToolID    string
	// Thinking makes a thinking block with this text, split into Chunks
	// thinking_delta deltas, followed by one signature_delta carrying
	// thinking.Sign(Thinking) (Signature instead when set, to script a
	// bad one).
	Thinking  string
	Signature string
	// RedactedThinking makes a redacted_thinking block with this data.
	RedactedThinking string
}

func (b Block) signature() string {
	if b.Signature != "" {
		return b.Signature
	}
	return thinking.Sign(b.Thinking)
}

// content is the block as it appears in a complete (non-streaming) message.
func (b Block) content() map[string]any {
	switch {
	case b.ToolName != "":
		in := b.ToolInput
		if in == nil {
			in = map[string]any{}
		}
		return map[string]any{"type": "tool_use", "id": b.ToolID, "name": b.ToolName, "input": in}
	case b.Thinking != "":
		return map[string]any{"type": "thinking", "thinking": b.Thinking, "signature": b.signature()}
	case b.RedactedThinking != "":
		return map[string]any{"type": "redacted_thinking", "data": b.RedactedThinking}
	}
	return map[string]any{"type": "text", "text": b.Text}
}

// Stream builds the SSE events of a complete answer with the given blocks
// and usage, as Anthropic sends them: message_start (input and cache usage,
// output 1), blocks, message_delta (cumulative output), message_stop.
func Stream(model string, u Usage, blocks ...Block) []Event {
	start := usageJSON(Usage{Input: u.Input, CacheRead: u.CacheRead, CacheWrite5m: u.CacheWrite5m, CacheWrite1h: u.CacheWrite1h, Output: 1}, true)
	evs := []Event{{"message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": start}}}}
	stop := "end_turn"
	for i, b := range blocks {
		if b.ToolName != "" {
			stop = "tool_use"
			input, _ := json.Marshal(b.ToolInput)
			evs = append(evs,
				Event{"content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": map[string]any{"type": "tool_use", "id": b.ToolID, "name": b.ToolName, "input": map[string]any{}}}},
				Event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "input_json_delta", "partial_json": string(input)}}},
				Event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": i}})
			continue
		}
		if b.Thinking != "" {
			evs = append(evs, Event{"content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": map[string]any{"type": "thinking", "thinking": "", "signature": ""}}})
			for _, part := range split(b.Thinking, b.Chunks) {
				evs = append(evs, Event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "thinking_delta", "thinking": part}}})
			}
			evs = append(evs,
				Event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "signature_delta", "signature": b.signature()}}},
				Event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": i}})
			continue
		}
		if b.RedactedThinking != "" {
			evs = append(evs,
				Event{"content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": b.content()}},
				Event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": i}})
			continue
		}
		evs = append(evs, Event{"content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": map[string]any{"type": "text", "text": ""}}})
		for _, part := range split(b.Text, b.Chunks) {
			evs = append(evs, Event{"content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "text_delta", "text": part}}})
		}
		evs = append(evs, Event{"content_block_stop", map[string]any{"type": "content_block_stop", "index": i}})
	}
	evs = append(evs,
		Event{"ping", map[string]any{"type": "ping"}},
		Event{"message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": usageJSON(u, false)}},
		Event{"message_stop", map[string]any{"type": "message_stop"}})
	return evs
}

// Message builds a complete non-streaming answer with one text block.
func Message(model, text string, u Usage) []byte {
	return MessageBlocks(model, u, Block{Text: text})
}

// MessageBlocks builds a complete non-streaming answer with the given
// blocks (stop_reason tool_use when one is a tool_use block, else end_turn);
// a thinking block carries its signature as in Stream.
func MessageBlocks(model string, u Usage, blocks ...Block) []byte {
	content := []any{}
	stop := "end_turn"
	for _, b := range blocks {
		if b.ToolName != "" {
			stop = "tool_use"
		}
		content = append(content, b.content())
	}
	b, _ := json.Marshal(map[string]any{
		"id": "msg_fake02", "type": "message", "role": "assistant", "model": model,
		"content": content, "stop_reason": stop, "stop_sequence": nil, "usage": usageJSON(u, true),
	})
	return b
}

func split(s string, n int) []string {
	if n <= 1 || len(s) < n {
		return []string{s}
	}
	var out []string
	size := (len(s) + n - 1) / n
	for len(s) > 0 {
		k := min(size, len(s))
		// Keep UTF-8 sequences whole.
		for k < len(s) && s[k]&0xC0 == 0x80 {
			k++
		}
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}
