// Package fakeanthropic is a scriptable stand-in for Anthropic's Messages API
// used by the end-to-end tests: it records every request exactly as received
// (method, path, headers, body bytes) and answers with streamed SSE or JSON
// that the test chooses, including slow trickles and tool calls.
package fakeanthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request is one request as the fake received it.
type Request struct {
	Method string
	// Path includes the query string.
	Path   string
	Header http.Header
	Body   []byte
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

// Server is the fake. Create it with New.
type Server struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []Request
	handler Handler
}

// New starts a fake answering with h and stops it when the test ends.
func New(t testing.TB, h Handler) *Server {
	s := &Server{handler: h}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
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
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body}
	if r.Host != "" {
		req.Header.Set("Host", r.Host)
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	h := s.handler
	s.mu.Unlock()

	reply := h(req)
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

// Block is one content block of an answer.
type Block struct {
	// Text is a text block's text, split into Chunks deltas when Chunks > 1.
	Text   string
	Chunks int
	// ToolName and ToolInput make a tool_use block instead.
	ToolName  string
	ToolInput map[string]any
	ToolID    string
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

// Message builds a complete non-streaming answer.
func Message(model, text string, u Usage) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": "msg_fake02", "type": "message", "role": "assistant", "model": model,
		"content":     []any{map[string]any{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil, "usage": usageJSON(u, true),
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
