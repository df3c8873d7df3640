package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// unsetenv removes an environment variable for the rest of the test.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "") // restores the original value when the test ends
	os.Unsetenv(key)
}

// TestLogFormatChoice: --log-format / CCPROXY_LOG_FORMAT choose the format,
// the flag over the variable; auto writes JSON when stderr is not a
// terminal (a buffer here); anything else stops the command with the
// setting's name.
func TestLogFormatChoice(t *testing.T) {
	tests := []struct {
		name    string
		env     string // CCPROXY_LOG_FORMAT; "" leaves it unset
		args    []string
		want    string // json or text
		wantErr string
	}{
		{name: "default is auto: json off a terminal", want: "json"},
		{name: "auto flag off a terminal", args: []string{"--log-format=auto"}, want: "json"},
		{name: "auto variable off a terminal", env: "auto", want: "json"},
		{name: "text variable", env: "text", want: "text"},
		{name: "text flag", args: []string{"--log-format=text"}, want: "text"},
		{name: "flag wins over variable", env: "text", args: []string{"--log-format=json"}, want: "json"},
		{name: "flag wins over variable, other way", env: "json", args: []string{"--log-format=text"}, want: "text"},
		{name: "invalid variable", env: "yaml",
			wantErr: `setting --log-format / CCPROXY_LOG_FORMAT = "yaml" is invalid: must be json, text or auto`},
		{name: "invalid flag", env: "json", args: []string{"--log-format=pretty"},
			wantErr: `setting --log-format / CCPROXY_LOG_FORMAT = "pretty" is invalid: must be json, text or auto`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Nothing listens on port 1: migrate up logs its first line and
			// fails to connect.
			t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:1/ccproxy?sslmode=disable")
			if tt.env == "" {
				unsetenv(t, "CCPROXY_LOG_FORMAT")
			} else {
				t.Setenv("CCPROXY_LOG_FORMAT", tt.env)
			}
			cmd := newRootCommand(nil)
			var stdout, stderr bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			cmd.SetArgs(append([]string{"migrate", "up"}, tt.args...))
			err := cmd.ExecuteContext(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if stderr.Len() != 0 {
					t.Fatalf("logged before the settings were valid: %q", stderr.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "connect") {
				t.Fatalf("err = %v, want a connection error", err)
			}
			line, _, _ := strings.Cut(stderr.String(), "\n")
			switch tt.want {
			case "json":
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not a JSON line: %q (%v)", line, err)
				}
				if rec["level"] != "INFO" || rec["msg"] != "migrating up" {
					t.Fatalf("JSON line = %v", rec)
				}
			case "text":
				if !strings.HasPrefix(line, "time=") || !strings.Contains(line, ` level=INFO msg="migrating up" database=`) {
					t.Fatalf("not a text line: %q", line)
				}
			}
		})
	}
}
