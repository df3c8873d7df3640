package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/usagestream"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// markers lets subtests running in parallel share one fake upstream: each
// subtest registers a handler under a random marker that it puts in its
// prompt (and so in every request body of its conversation), and requests
// are routed by the marker they carry.
type markers[H any] struct {
	mu       sync.Mutex
	handlers map[string]H
}

// add registers h and returns the marker that routes to it.
func (m *markers[H]) add(h H) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	marker := "e2e-" + hex.EncodeToString(b)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handlers == nil {
		m.handlers = map[string]H{}
	}
	m.handlers[marker] = h
	return marker
}

// find returns the handler whose marker body carries.
func (m *markers[H]) find(body []byte) (H, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for marker, h := range m.handlers {
		if bytes.Contains(body, []byte(marker)) {
			return h, true
		}
	}
	var zero H
	return zero, false
}

// scenarios routes the fake Anthropic's requests by marker.
type scenarios struct {
	markers[fakeanthropic.Handler]
	mu sync.Mutex
	// unrouted describes the requests that carried no marker.
	unrouted []string
}

// add registers h and returns the marker that routes to it.
func (s *scenarios) add(t *testing.T, h fakeanthropic.Handler) string {
	t.Helper()
	return s.markers.add(h)
}

func (s *scenarios) handle(r fakeanthropic.Request) fakeanthropic.Reply {
	h, ok := s.find(r.Body)
	if !ok {
		s.mu.Lock()
		s.unrouted = append(s.unrouted, fmt.Sprintf("%s %s (%d bytes)", r.Method, r.Path, len(r.Body)))
		s.mu.Unlock()
		return fakeanthropic.Reply{Status: http.StatusNotFound, Body: []byte(`{"type":"error","error":{"type":"not_found_error","message":"fake: no scenario for this request"}}`)}
	}
	return h(r)
}

// Unrouted returns the requests that matched no scenario.
func (s *scenarios) Unrouted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unrouted...)
}

// carrying returns the requests the fake received whose body holds marker.
func carrying(fake *fakeanthropic.Server, marker string) []fakeanthropic.Request {
	var out []fakeanthropic.Request
	for _, r := range fake.Requests("") {
		if bytes.Contains(r.Body, []byte(marker)) {
			out = append(out, r)
		}
	}
	return out
}

// recorder is a minimal reverse proxy that keeps every request exactly as
// the client sent it (header map and body bytes) and forwards it unchanged:
// no X-Forwarded-*, no hop-by-hop filtering beyond what net/http itself does
// on the wire, no compression negotiation of its own.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []fakeanthropic.Request
}

func newRecorder(t *testing.T, upstream string) *recorder {
	rec := &recorder{}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, fakeanthropic.Request{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body})
		rec.mu.Unlock()

		out, err := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := client.Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		fl := w.(http.Flusher)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				fl.Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(rec.Close)
	return rec
}

// Requests returns the requests recorded so far.
func (rec *recorder) Requests() []fakeanthropic.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]fakeanthropic.Request(nil), rec.reqs...)
}

// usageRow is the part of a usage_events row the tests assert exactly.
type usageRow struct {
	Kind, RequestedModel, Provider, SessionID string
	Status                                    int
	Stream, Aborted                           bool
	Input, Output, CacheRead, CacheWrite5m    int64
	CacheWrite1h                              int64
}

// usageTiming is the part of a row that varies from run to run.
type usageTiming struct {
	RequestID string
	TTFTms    *int32
	LatencyMS int32
}

// waitUsage polls usage_events for the rows of session until there are
// want of them (the writer batches, so rows land shortly after a request
// ends), then makes sure no further row arrives, and returns them in time
// order.
func waitUsage(t *testing.T, g *gateway, session string, want int) ([]usageRow, []usageTiming) {
	t.Helper()
	ctx := context.Background()
	query := func() ([]usageRow, []usageTiming) {
		rows, err := g.DB.Query(ctx, `
			SELECT kind, requested_model, provider, session_id, status, stream, aborted,
			       input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
			       request_id, ttft_ms, latency_ms
			FROM usage_events WHERE session_id = $1 ORDER BY event_time, request_id`, session)
		if err != nil {
			t.Fatalf("query usage_events: %v", err)
		}
		defer rows.Close()
		var out []usageRow
		var tim []usageTiming
		for rows.Next() {
			var r usageRow
			var ti usageTiming
			if err := rows.Scan(&r.Kind, &r.RequestedModel, &r.Provider, &r.SessionID, &r.Status, &r.Stream, &r.Aborted,
				&r.Input, &r.Output, &r.CacheRead, &r.CacheWrite5m, &r.CacheWrite1h,
				&ti.RequestID, &ti.TTFTms, &ti.LatencyMS); err != nil {
				t.Fatalf("scan usage_events: %v", err)
			}
			out = append(out, r)
			tim = append(tim, ti)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("read usage_events: %v", err)
		}
		return out, tim
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, tim := query()
		if len(rows) >= want || time.Now().After(deadline) {
			if len(rows) == want {
				// Only now is the count final.
				waitUsageSettled(t, g)
				rows, tim = query()
			}
			if len(rows) != want {
				t.Fatalf("usage_events has %d rows for session %q, want %d (one per request the fake answered): %+v", len(rows), session, want, rows)
			}
			return rows, tim
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitUsageSettled waits until no usage event of g can still be stored:
// extproc's producer holds none in its buffer, and the ingesters' consumer
// group has read every entry of the stream and acknowledged (committed)
// every one it read. A duplicate could only come from an entry that is
// still pending (redelivered after a crash or a failed commit), so once
// nothing is pending and nothing unread, the row count is final.
func waitUsageSettled(t *testing.T, g *gateway) {
	t.Helper()
	ctx := context.Background()
	opts, err := redis.ParseURL(g.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	stream := usagestream.StreamKey(g.RedisPrefix)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state string
		buffered := metricValue(t, g, "ccproxy_usage_stream_buffer_events")
		groups, err := rdb.XInfoGroups(ctx, stream).Result()
		switch {
		case err != nil:
			state = err.Error()
		case buffered != 0:
			state = fmt.Sprintf("%v events in extproc's buffer", buffered)
		default:
			state = "no consumer group " + usagestream.Group
			for _, gr := range groups {
				if gr.Name == usagestream.Group {
					if gr.Pending == 0 && gr.Lag == 0 {
						return
					}
					state = fmt.Sprintf("%d pending, %d unread", gr.Pending, gr.Lag)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage stream %s not settled after 60 s: %s", stream, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantUsage is the row the gateway should write for a streamed Claude Code
// request answered with u.
func wantUsage(req fakeanthropic.Request, u fakeanthropic.Usage) usageRow {
	var body struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.Unmarshal(req.Body, &body)
	return usageRow{
		Kind: "messages", RequestedModel: body.Model, Provider: "anthropic",
		SessionID: req.Header.Get("X-Claude-Code-Session-Id"),
		Status:    http.StatusOK, Stream: body.Stream, Aborted: false,
		Input: int64(u.Input), Output: int64(u.Output), CacheRead: int64(u.CacheRead),
		CacheWrite5m: int64(u.CacheWrite5m), CacheWrite1h: int64(u.CacheWrite1h),
	}
}
