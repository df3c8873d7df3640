package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// syncBuffer is a bytes.Buffer that the goroutines of an in-process
// command may write to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devInProcess is a `ccproxy dev` running in the test's process.
type devInProcess struct {
	baseURL string // from the banner's ANTHROPIC_BASE_URL line
	stderr  *syncBuffer
	done    <-chan error // the command's result, once ctx is cancelled
}

// startDevInProcess runs `ccproxy dev` with the environment the test set
// and waits for its banner; cancelling ctx stops it.
func startDevInProcess(t *testing.T, ctx context.Context) devInProcess {
	t.Helper()
	stdout, stderr := new(syncBuffer), new(syncBuffer)
	cmd := newRootCommand(nil)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetArgs([]string{"dev"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	const announced = "export ANTHROPIC_BASE_URL="
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if v, ok := findLine(stdout.String(), announced); ok {
			return devInProcess{baseURL: v, stderr: stderr, done: done}
		}
		select {
		case err := <-done:
			t.Fatalf("ccproxy dev stopped before it was ready: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ccproxy dev printed no %q line\n%s", announced, stderr.String())
		}
	}
}

// TestDevLogsHaveNoDuplicateKeys runs `ccproxy dev` in-process with JSON
// logs at debug level, sends a model listing and a Plan request through
// it, stops it, and checks that no log line carries a key twice (slog's
// With does not replace an attribute: a component naming itself inside a
// logger its caller already named writes "component" twice).
func TestDevLogsHaveNoDuplicateKeys(t *testing.T) {
	anthropic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("request-id", "req_test")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",`+
			`"content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",`+
			`"usage":{"input_tokens":3,"output_tokens":1}}`)
	}))
	defer anthropic.Close()
	_, prefix := testenv.Redis(t)
	// Unix socket paths are limited to 108 bytes; test temp dirs carry the
	// test's name and can be longer.
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	for k, v := range map[string]string{
		"DATABASE_URL":           testenv.Postgres(t),
		"REDIS_URL":              testenv.RedisURL(),
		"CCPROXY_REDIS_PREFIX":   prefix,
		"CCPROXY_LOG_FORMAT":     "json",
		"CCPROXY_LOG_LEVEL":      "debug",
		"CCPROXY_LISTEN_ADDR":    freeAddr(t), // the control plane wants a port it can name
		"CCPROXY_XDS_ADDR":       "127.0.0.1:0",
		"CCPROXY_ADMIN_ADDR":     "127.0.0.1:0",
		"CCPROXY_METRICS_ADDR":   "",
		"CCPROXY_EXTPROC_ADDR":   "unix://" + filepath.Join(sockDir, "extproc.sock"),
		"CCPROXY_DEV_STATE_DIR":  t.TempDir(),
		"CCPROXY_ANTHROPIC_URL":  anthropic.URL,
		"CCPROXY_ADMIN_PASSWORD": "correct-horse-battery",
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"CCPROXY_SERVER_SECRET", "CCPROXY_MASTER_KEY", "CCPROXY_KMS_KEY_ID"} {
		unsetenv(t, k)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev := startDevInProcess(t, ctx)
	baseURL, stderr, done := dev.baseURL, dev.stderr, dev.done

	get, err := http.Get(baseURL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, get.Body)
	get.Body.Close()
	if get.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/models: %s", get.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5-20250929","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", "sk-ant-test")
	post, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(post.Body)
	post.Body.Close()
	if post.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/messages: %s %s", post.Status, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ccproxy dev: %v", err)
	}
	logs := stderr.String()
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		lines++
		dups, err := duplicateKeys([]byte(line))
		if err != nil {
			t.Errorf("not a JSON line: %q: %v", line, err)
			continue
		}
		if len(dups) > 0 {
			t.Errorf("keys %v appear twice in %s", dups, line)
		}
	}
	// The run logs far more than this at debug level; fewer would mean the
	// components' lines went elsewhere.
	for _, want := range []string{`"component":"controlplane"`, `"component":"runtimeconfig"`, `"component":"envoysim"`, `"component":"extproc"`, `"component":"usage"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no line with %s among %d lines", want, lines)
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// findLine returns the rest of the first line of out that starts with prefix.
func findLine(out, prefix string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// duplicateKeys returns the keys that appear twice in one object of the
// JSON text line (dotted with the keys of the objects they are in).
func duplicateKeys(line []byte) ([]string, error) {
	type frame struct {
		object    bool
		path      string
		keys      map[string]bool
		expectKey bool
		lastKey   string
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	var stack []*frame
	var dups []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.object && top.expectKey {
			if top.keys[s] {
				dups = append(dups, top.path+s)
			}
			top.keys[s] = true
			top.lastKey, top.expectKey = s, false
			continue
		}
		// A value: the enclosing object's next token is a key.
		path := ""
		if top != nil {
			path = top.path
			if top.object {
				path += top.lastKey + "."
			}
			top.expectKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, path: path, keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{path: path})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("unbalanced JSON")
	}
	return dups, nil
}

func TestDuplicateKeys(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, nil},
		{`{"component":"x","msg":"m","component":"y"}`, []string{"component"}},
		{`{"a":{"b":1,"b":2},"c":[{"d":1,"d":2}]}`, []string{"a.b", "c.d"}},
		{`{"a":[1,{"x":1}],"a":{}}`, []string{"a"}},
	} {
		got, err := duplicateKeys([]byte(tc.line))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("duplicateKeys(%s) = %v, %v; want %v", tc.line, got, err, tc.want)
		}
	}
}
