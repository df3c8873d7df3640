package admin_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/admin"
)

// TestHTTPServerLimits opens connections that misbehave in each way the
// limits cover and checks that the server ends them. The guard deadline
// only keeps a failing test from hanging; nothing here measures speed.
func TestHTTPServerLimits(t *testing.T) {
	e := newEnv(t)
	api, err := admin.New(admin.Options{Store: e.st, Sealer: e.sealer, Hasher: e.hasher})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("defaults", func(t *testing.T) {
		srv := api.HTTPServer(admin.HTTPLimits{})
		d := admin.DefaultHTTPLimits()
		got := admin.HTTPLimits{ReadHeaderTimeout: srv.ReadHeaderTimeout, ReadTimeout: srv.ReadTimeout,
			WriteTimeout: srv.WriteTimeout, IdleTimeout: srv.IdleTimeout, MaxHeaderBytes: srv.MaxHeaderBytes}
		if got != d || srv.ErrorLog == nil || srv.Handler == nil {
			t.Fatalf("server limits %+v, want %+v", got, d)
		}
		if d.ReadHeaderTimeout <= 0 || d.ReadTimeout <= 0 || d.WriteTimeout <= 0 || d.IdleTimeout <= 0 || d.MaxHeaderBytes <= 0 {
			t.Fatalf("a default is unset: %+v", d)
		}
	})

	srv := api.HTTPServer(admin.HTTPLimits{
		ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond,
		IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4096,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	const guard = time.Minute
	tests := []struct {
		name string
		// send writes to the connection; a complete request is answered
		// and its response read before the connection is watched.
		send, complete string
		// wantStatus is the status line the server answers before it
		// closes, "" when it closes without a word.
		wantStatus string
	}{
		{
			name: "headers never finished (slowloris)",
			send: "GET /api/v1/openapi.json HTTP/1.1\r\nHost: admin\r\nX-Slow: 1\r\n",
		},
		{
			name:       "body never finished",
			send:       "POST /api/v1/auth/login HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
			wantStatus: "HTTP/1.1 400 Bad Request",
		},
		{
			name:     "idle keep-alive",
			complete: "GET /api/v1/openapi.json HTTP/1.1\r\nHost: admin\r\n\r\n",
		},
		{
			name:       "headers too large",
			send:       "GET /api/v1/openapi.json HTTP/1.1\r\nHost: admin\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n",
			wantStatus: "HTTP/1.1 431 Request Header Fields Too Large",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.SetDeadline(time.Now().Add(guard)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			if tc.complete != "" {
				if _, err := io.WriteString(conn, tc.complete); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Close {
					t.Fatalf("first request: %d, close %v", resp.StatusCode, resp.Close)
				}
			}
			if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(br)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the connection was still open after %v", guard)
			}
			if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
				t.Fatalf("read: %v", err)
			}
			status, _, _ := strings.Cut(string(rest), "\r\n")
			if status != tc.wantStatus {
				t.Fatalf("the server answered %q before closing, want %q", status, tc.wantStatus)
			}
		})
	}
}
