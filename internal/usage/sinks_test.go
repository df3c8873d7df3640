package usage

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestSinks(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	rec := &Recorder{}
	var called []string
	sink := FanOut{LogSink{Logger: logger}, rec, SinkFunc(func(_ context.Context, ev Event) { called = append(called, ev.RequestID) }), Discard{}}
	ev := Event{
		RequestID: "rid", Time: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		UserID: uuid.MustParse("00000000-0000-0000-0000-000000000001"), KeyID: uuid.MustParse("00000000-0000-0000-0000-000000000002"),
		PathKind: PathMessages, Model: "claude-opus-5-5", Route: "plan", Provider: ProviderAnthropic, Stream: true, Status: 200,
		Usage: Usage{InputTokens: 1, OutputTokens: 2, CacheReadInputTokens: 3, CacheWrite5mInputTokens: 4, CacheWrite1hInputTokens: 5},
		TTFT:  time.Second, Latency: 2 * time.Second,
	}
	sink.Record(context.Background(), ev)

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	want := map[string]any{
		"level": "INFO", "msg": "usage", "request_id": "rid",
		"user_id": "00000000-0000-0000-0000-000000000001", "key_id": "00000000-0000-0000-0000-000000000002",
		"session_id": "", "agent_id": "", "client_version": "", "path": "messages", "model": "claude-opus-5-5",
		"route": "plan", "provider": "anthropic", "stream": true, "status": float64(200),
		"input_tokens": float64(1), "output_tokens": float64(2), "cache_read_tokens": float64(3),
		"cache_write_5m_tokens": float64(4), "cache_write_1h_tokens": float64(5), "counted_input_tokens": float64(0),
		"ttft": float64(time.Second), "latency": float64(2 * time.Second), "aborted": false,
	}
	if len(got) != len(want) {
		t.Fatalf("log line has %d fields, want %d: %s", len(got), len(want), buf.String())
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("log field %s = %v, want %v", k, got[k], v)
		}
	}
	if evs := rec.Events(); len(evs) != 1 || evs[0] != ev {
		t.Errorf("Recorder.Events = %+v", evs)
	}
	if len(called) != 1 || called[0] != "rid" {
		t.Errorf("SinkFunc calls = %v", called)
	}

	// Wait returns once enough events arrived, or when ctx ends.
	go rec.Record(context.Background(), ev)
	if evs, err := rec.Wait(context.Background(), 2); err != nil || len(evs) != 2 {
		t.Fatalf("Wait(2) = %d events, %v", len(evs), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if evs, err := rec.Wait(ctx, 3); err == nil || len(evs) != 2 {
		t.Fatalf("Wait(3) = %d events, %v; want 2 and a deadline error", len(evs), err)
	}
}
