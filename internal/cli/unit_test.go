package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestProblemError(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		status            int
		want              string
	}{
		{"problem", "application/problem+json", `{"type":"x","title":"conflict","status":409,"detail":"name taken"}`, 409, "conflict: name taken"},
		{"field errors", "application/problem+json; charset=utf-8",
			`{"title":"validation failed","status":422,"errors":[{"field":"a","message":"bad"},{"field":"b","message":"worse"}]}`, 422,
			"validation failed\n  a: bad\n  b: worse"},
		{"html from a proxy is not echoed", "text/html", "<html>secret</html>", 502, "bad gateway"},
		{"broken problem", "application/problem+json", `{"title":`, 500, "internal server error"},
		{"unknown status", "", "", 599, "HTTP status 599"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{"Content-Type": {tc.ctype}}}
			if got := problemError(resp, []byte(tc.body)).Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzProblemError: the error keeps the status; a problem document's title
// (else the status text), detail and field errors are taken exactly, and
// nothing of any other body is echoed.
func FuzzProblemError(f *testing.F) {
	const problem = "application/problem+json"
	f.Add(`{"title":"t","detail":"d","errors":[{"field":"f","message":"m"}]}`, 422, problem)
	f.Add(`{"title":""}`, 404, problem+"; charset=utf-8")
	f.Add(`not json`, 500, problem)
	f.Add(`{"title":"t","detail":"d"}`, 502, "text/html")
	f.Add(`{"detail":"d","errors":null}`, 299, "Application/Problem+JSON")
	f.Add(`{"title":1}`, 400, problem)
	f.Fuzz(func(t *testing.T, body string, status int, ctype string) {
		resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ctype}}}
		e := problemError(resp, []byte(body))
		want := APIError{Status: status, Title: strings.ToLower(http.StatusText(status))}
		if want.Title == "" {
			want.Title = fmt.Sprintf("HTTP status %d", status)
		}
		var doc struct {
			Title  string       `json:"title"`
			Detail string       `json:"detail"`
			Errors []FieldError `json:"errors"`
		}
		if mt, _, err := mime.ParseMediaType(ctype); err == nil && mt == problem && json.Unmarshal([]byte(body), &doc) == nil {
			if doc.Title != "" {
				want.Title = doc.Title
			}
			want.Detail, want.Errors = doc.Detail, doc.Errors
		}
		if !reflect.DeepEqual(*e, want) {
			t.Fatalf("problemError(%d, %q, %q) = %+v, want %+v", status, ctype, body, *e, want)
		}
	})
}

func TestReadSecret(t *testing.T) {
	tests := []struct{ name, in, want, wantErr string }{
		{"newline", "s3cret\n", "s3cret", ""},
		{"crlf", "s3cret\r\n", "s3cret", ""},
		{"no newline", "s3cret", "s3cret", ""},
		{"first line only", "a\nb\n", "a", ""},
		{"empty", "", "", "no key on stdin"},
		{"too long", strings.Repeat("x", maxSecretBytes+1), "", "the key on stdin is longer than 65536 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readSecret(strings.NewReader(tc.in), "key")
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
				t.Errorf("readSecret = %q, %v; want %q, %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestNormalizeServer(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://admin.example.com/", "https://admin.example.com"},
		{"http://127.0.0.1:8081", "http://127.0.0.1:8081"},
		{" https://h/prefix/ ", "https://h/prefix"},
		{"ftp://h", ""},
		{"https://user:pw@h", ""},
		{"h:8081", ""},
		{"https://h/?q=1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := normalizeServer(tc.in)
			if got != tc.want || (err == nil) != (tc.want != "") {
				t.Errorf("normalizeServer(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestConfigPath(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"override", map[string]string{EnvConfig: "/x/c.json", "HOME": "/home/u"}, "/x/c.json"},
		{"xdg", map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/u"}, "/cfg/ccproxy/cli.json"},
		{"relative xdg is ignored", map[string]string{"XDG_CONFIG_HOME": "cfg", "HOME": "/home/u"}, "/home/u/.config/ccproxy/cli.json"},
		{"home", map[string]string{"HOME": "/home/u"}, "/home/u/.config/ccproxy/cli.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newApp(func(k string) string { return tc.env[k] }, nil)
			if got, err := a.configPath(); got != tc.want || err != nil {
				t.Errorf("configPath = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestClientResolution(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cli.json")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := saveSession(path, savedSession{Server: "https://a.example", Token: "tok", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		env       map[string]string
		server    string
		at        time.Time
		wantBase  string
		wantToken string
		wantErr   string
	}{
		{"saved", nil, "", now, "https://a.example", "tok", ""},
		{"same server by flag", nil, "https://a.example/", now, "https://a.example", "tok", ""},
		{"other server gets no saved token", nil, "https://b.example", now, "", "", ErrNotLoggedIn.Error()},
		{"env token and server", map[string]string{EnvToken: "t2", EnvServer: "https://b.example"}, "", now, "https://b.example", "t2", ""},
		{"expired", nil, "", now.Add(2 * time.Hour), "", "", `the session expired at 2026-01-01T01:00:00Z: run "ccproxy login" again`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{EnvConfig: path}
			for k, v := range tc.env {
				env[k] = v
			}
			a := newApp(func(k string) string { return env[k] }, nil)
			c, err := a.client(&globals{server: tc.server, output: "table"}, tc.at)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.base != tc.wantBase || c.token != tc.wantToken {
				t.Fatalf("client %+v, %v; want %q %q", c, err, tc.wantBase, tc.wantToken)
			}
		})
	}
	if _, err := newApp(func(k string) string { return map[string]string{EnvConfig: filepath.Join(t.TempDir(), "none.json")}[k] }, nil).
		client(&globals{output: "json"}, now); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("no session: %v", err)
	}
}
