package usage

import (
	"context"
	"log/slog"
	"sync"
)

// LogSink writes each event as one structured log line.
type LogSink struct {
	Logger *slog.Logger
	// Level is the level of the lines; the zero value is slog.LevelInfo.
	Level slog.Level
}

// Record logs ev.
func (s LogSink) Record(ctx context.Context, ev Event) {
	if !s.Logger.Enabled(ctx, s.Level) {
		return
	}
	s.Logger.LogAttrs(ctx, s.Level, "usage",
		slog.String("request_id", ev.RequestID),
		slog.String("user_id", ev.UserID.String()),
		slog.String("key_id", ev.KeyID.String()),
		slog.String("session_id", ev.SessionID),
		slog.String("agent_id", ev.AgentID),
		slog.String("client_version", ev.ClientVersion),
		slog.String("path", ev.PathKind),
		slog.String("model", ev.Model),
		slog.String("route", ev.Route),
		slog.String("provider", ev.Provider),
		slog.Bool("stream", ev.Stream),
		slog.Int("status", ev.Status),
		slog.Int64("input_tokens", ev.Usage.InputTokens),
		slog.Int64("output_tokens", ev.Usage.OutputTokens),
		slog.Int64("cache_read_tokens", ev.Usage.CacheReadInputTokens),
		slog.Int64("cache_write_5m_tokens", ev.Usage.CacheWrite5mInputTokens),
		slog.Int64("cache_write_1h_tokens", ev.Usage.CacheWrite1hInputTokens),
		slog.Int64("counted_input_tokens", ev.CountedInputTokens),
		slog.Duration("ttft", ev.TTFT),
		slog.Duration("latency", ev.Latency),
		slog.Bool("aborted", ev.Aborted),
	)
}

// Recorder is a Sink that keeps every event in memory, for tests and for
// the dev command's diagnostics.
type Recorder struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{} // closed and replaced on every Record
}

// Record appends ev.
func (r *Recorder) Record(_ context.Context, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.notify != nil {
		close(r.notify)
		r.notify = nil
	}
}

// Events returns a copy of the events recorded so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Wait blocks until at least n events have been recorded or ctx is done, and
// returns a copy of the events recorded so far.
func (r *Recorder) Wait(ctx context.Context, n int) ([]Event, error) {
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			evs := append([]Event(nil), r.events...)
			r.mu.Unlock()
			return evs, nil
		}
		if r.notify == nil {
			r.notify = make(chan struct{})
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return r.Events(), ctx.Err()
		}
	}
}
