package observability

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRedactPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/ak/ak_abcdef/v1/messages?beta=true", "/ak/[REDACTED]/v1/messages?beta=true"},
		{"/ak/ak_abcdef", "/ak/[REDACTED]"},
		{"/ak/ak_abcdef?x=1", "/ak/[REDACTED]?x=1"},
		{"/v1/messages", "/v1/messages"},
		{"http://gw/ak/ak_x/bedrock/model", "http://gw/ak/[REDACTED]/bedrock/model"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := RedactPath(tt.in); got != tt.want {
				t.Errorf("RedactPath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactHeaderValue(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"Authorization", "Bearer sk-ant-xyz", Redacted},
		{"x-api-key", "sk-ant-xyz", Redacted},
		{"X-Ccproxy-Key", "ak_xyz", Redacted},
		{"cookie", "s=1", Redacted},
		{"x-amz-security-token", "t", Redacted},
		{"anthropic-beta", "claude-code-20250219", "claude-code-20250219"},
		{":path", "/ak/ak_secret/v1/messages", "/ak/[REDACTED]/v1/messages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactHeaderValue(tt.name, tt.value); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedactKeyAndURL(t *testing.T) {
	if got := RedactKey("ak_0123456789abcdef"); got != "ak_0123…" {
		t.Errorf("RedactKey = %q", got)
	}
	if got := RedactKey("ak_1"); got != Redacted {
		t.Errorf("short key = %q", got)
	}
	if got := RedactURL("postgres://u:pw@h:5432/db"); got != "postgres://u:xxxxx@h:5432/db" {
		t.Errorf("RedactURL = %q", got)
	}
	if got := RedactURL("://bad url with pw"); got != Redacted {
		t.Errorf("RedactURL(bad) = %q", got)
	}
}

func TestLoggerRedactsSecretAttributesAndHeaders(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, format, slog.LevelDebug)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{"Authorization": {"Bearer sk-ant-SECRET1"}, "Anthropic-Version": {"2023-06-01"}}
			log.Info("req", "headers", RedactHeaders(h), "api_key", "sk-ant-SECRET2", "password", "SECRET3", "path", RedactPath("/ak/ak_SECRET4/v1"))
			out := buf.String()
			for _, s := range []string{"SECRET1", "SECRET2", "SECRET3", "SECRET4"} {
				if strings.Contains(out, s) {
					t.Errorf("%s leaked: %s", s, out)
				}
			}
			if !strings.Contains(out, "2023-06-01") {
				t.Errorf("non-secret header missing: %s", out)
			}
		})
	}
}

func TestHealthHandler(t *testing.T) {
	h := NewHealth()
	srv := httptest.NewServer(Handler(NewRegistry(), h))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthz = %d %q", code, body)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("readyz with no checks = %d", code)
	}
	h.Add("postgres", func(context.Context) error { return errors.New("connection refused") })
	if code, body := get("/readyz"); code != 503 || body != "{\"failed\":{\"postgres\":\"connection refused\"},\"status\":\"unavailable\"}\n" {
		t.Fatalf("readyz failing = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics = %d", code)
	}
}
