package observability

import (
	"context"
	"fmt"
	"log/slog"
)

// RedactingHandler wraps h so that redact is applied to every message and
// every string, error and other value of every attribute before h formats
// it. A command passes the masking of its secret settings' values
// (config.Binding.Redactor): a library's error that quotes a connection
// URL, or a log line that names a password, comes out masked whatever the
// attribute is called.
func RedactingHandler(h slog.Handler, redact func(string) string) slog.Handler {
	return &redactingHandler{h: h, redact: redact}
}

type redactingHandler struct {
	h      slog.Handler
	redact func(string) string
}

func (r *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return r.h.Enabled(ctx, l)
}

func (r *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &redactingHandler{h: r.h.WithAttrs(r.attrs(attrs)), redact: r.redact}
}

func (r *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{h: r.h.WithGroup(name), redact: r.redact}
}

func (r *redactingHandler) attrs(in []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(in))
	for i, a := range in {
		out[i] = r.attr(a)
	}
	return out
}

func (r *redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.redact(v.String()))
	case slog.KindGroup:
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(r.attrs(v.Group())...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if s := x.Error(); r.redact(s) != s {
				return slog.String(a.Key, r.redact(s))
			}
		default:
			// A struct, map or slice: the handler prints it with %+v or
			// encoding/json; mask it whole when its text holds a secret.
			if s := fmt.Sprintf("%+v", x); r.redact(s) != s {
				return slog.String(a.Key, r.redact(s))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
