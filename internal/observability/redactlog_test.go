package observability

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactingHandler(t *testing.T) {
	mask := strings.NewReplacer("hunter2", "[REDACTED]").Replace
	var buf bytes.Buffer
	log := slog.New(RedactingHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}), mask))
	log.With("url", "postgres://u:hunter2@db").WithGroup("g").Info("dial hunter2",
		"err", errors.New("auth hunter2 failed"), "n", 3, "m", map[string]string{"pw": "hunter2"},
		slog.Group("inner", "s", "x hunter2"))
	want := `{"level":"INFO","msg":"dial [REDACTED]","url":"postgres://u:[REDACTED]@db","g":{"err":"auth [REDACTED] failed","n":3,"m":"map[pw:[REDACTED]]","inner":{"s":"x [REDACTED]"}}}` + "\n"
	if got := buf.String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
