package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLogFormat(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	tests := []struct {
		name    string
		w       io.Writer
		format  string
		want    string
		wantErr string
	}{
		{name: "auto to a buffer", w: &bytes.Buffer{}, format: "auto", want: "json"},
		{name: "auto to a file", w: file, format: "auto", want: "json"},
		{name: "auto to /dev/null", w: devNull, format: "auto", want: "json"},
		{name: "text to a buffer", w: &bytes.Buffer{}, format: "text", want: "text"},
		{name: "json to a buffer", w: &bytes.Buffer{}, format: "json", want: "json"},
		{name: "unknown", w: &bytes.Buffer{}, format: "yaml", wantErr: `log format "yaml": must be json, text or auto`},
		{name: "empty", w: &bytes.Buffer{}, format: "", wantErr: `log format "": must be json, text or auto`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LogFormat(tt.w, tt.format)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("LogFormat = %q, %v; want error %q", got, err, tt.wantErr)
				}
				if _, err := NewLogger(tt.w, tt.format, slog.LevelInfo); err == nil || err.Error() != tt.wantErr {
					t.Fatalf("NewLogger error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("LogFormat = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNewLoggerWritesTheChosenFormat(t *testing.T) {
	for _, tt := range []struct{ format, want string }{
		{"json", `{"level":"INFO","msg":"hello","k":"v"}` + "\n"},
		{"text", `level=INFO msg=hello k=v` + "\n"},
		{"auto", `{"level":"INFO","msg":"hello","k":"v"}` + "\n"}, // a buffer is no terminal
	} {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.format, slog.LevelInfo)
			if err != nil {
				t.Fatal(err)
			}
			// Without the time, which changes from run to run.
			log = slog.New(withoutTime{log.Handler()})
			log.Info("hello", "k", "v")
			if got := buf.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// withoutTime drops the record's time; handlers omit a zero time.
type withoutTime struct{ slog.Handler }

func (h withoutTime) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	return h.Handler.Handle(ctx, r)
}

func TestRedisLogger(t *testing.T) {
	var r RedisLogger
	// Before Use: dropped, and no panic.
	r.Printf(context.Background(), "redis: early %d", 1)

	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	r.Use(log.With("component", "extproc"))
	r.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %s", 5, "refused")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	if rec["level"] != "WARN" || rec["msg"] != "redis: connection pool: failed to dial after 5 attempts: refused" ||
		rec["library"] != "go-redis" || rec["component"] != "extproc" || len(rec) != 5 {
		t.Fatalf("logged %v", rec)
	}

	// Below the logger's level: nothing.
	buf.Reset()
	quiet, _ := NewLogger(&buf, "json", slog.LevelError)
	r.Use(quiet)
	r.Printf(context.Background(), "redis: %s", "ignored")
	if buf.Len() != 0 {
		t.Fatalf("logged below the level: %q", buf.String())
	}
}
