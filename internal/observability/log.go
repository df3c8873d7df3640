package observability

import (
	"io"
	"log/slog"
	"os"
)

// NewLogger returns a logger writing to w in the given format: "json",
// "text", or "auto" (text when w is a terminal, JSON otherwise). The
// handler redacts attributes whose names mark them as secret, as a last line
// of defence behind the explicit redaction helpers.
func NewLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// redactAttr replaces the value of any attribute whose key names a secret.
// Components are expected to redact explicitly (see RedactHeaders,
// RedactPath); this catches the attribute someone forgot.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a
	}
	if IsSecretName(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	return a
}
