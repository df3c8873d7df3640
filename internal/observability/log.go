package observability

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
)

// LogFormat returns the format NewLogger writes to w for the configured
// format: "json" and "text" stand; "auto" is text when w is a terminal (a
// person reads it) and JSON otherwise (a collector parses it). Any other
// format is an error.
func LogFormat(w io.Writer, format string) (string, error) {
	switch format {
	case "json", "text":
		return format, nil
	case "auto":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			return "text", nil
		}
		return "json", nil
	}
	return "", fmt.Errorf("log format %q: must be json, text or auto", format)
}

// NewLogger returns a logger writing to w in the given format: "json",
// "text", or "auto" (see LogFormat). The handler redacts attributes whose
// names mark them as secret, as a last line of defence behind the explicit
// redaction helpers.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	format, err := LogFormat(w, format)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// redactAttr replaces the value of any attribute whose key names a secret.
// Components are expected to redact explicitly (see RedactHeaders,
// RedactPath); this catches the attribute someone forgot.
//
// It also writes every duration one way, as Go writes it ("1.5s"): the
// JSON handler would otherwise write a time.Duration as integer
// nanoseconds while text lines and string attributes show "1.5s".
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindGroup:
		return a
	case slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	if IsSecretName(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	return a
}

// RedisLogger carries go-redis's own log lines (failed dials, broken pool
// and pub/sub connections) into slog, so that they come out in the
// command's format rather than as plain text. go-redis has one logger per
// process (redis.SetLogger), so one RedisLogger is installed once and
// pointed, with Use, at the logger a command builds; lines logged before
// that are dropped (no Redis client exists yet). It is safe for concurrent
// use.
type RedisLogger struct {
	target atomic.Pointer[slog.Logger]
}

// Use sends go-redis's lines to l from now on.
func (r *RedisLogger) Use(l *slog.Logger) {
	r.target.Store(l.With(slog.String("library", "go-redis")))
}

// Printf implements go-redis's logging interface. go-redis gives its lines
// no level; they report trouble, so they are warnings.
func (r *RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l := r.target.Load()
	if l == nil || !l.Enabled(ctx, slog.LevelWarn) {
		return
	}
	l.Log(ctx, slog.LevelWarn, fmt.Sprintf(format, v...))
}
