package observability

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
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

func TestDurationsLoggedOneWay(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := NewLogger(&buf, format, slog.LevelInfo)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", "d", 200*time.Millisecond, "s", (200 * time.Millisecond).String())
		got := buf.String()
		want := map[string]string{"json": `"d":"200ms","s":"200ms"`, "text": `d=200ms s=200ms`}[format]
		if !strings.Contains(got, want) {
			t.Errorf("%s: %s does not contain %s", format, got, want)
		}
	}
}
