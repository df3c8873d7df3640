package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// TestBackupRestoreDrill is the drill of docs/operations.md: a gateway
// meters a request; its database is dumped with pg_dump, restored with
// pg_restore into a new database, and a gateway on the restored database
// (fresh Redis namespace: nothing cached) serves the same access key and
// keeps metering on top of the restored usage.
func TestBackupRestoreDrill(t *testing.T) {
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for the backup drill (Debian: apt-get install postgresql-client): %v", tool, err)
		}
	}
	anthropic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",`+
			`"content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}`)
	}))
	defer anthropic.Close()
	state := t.TempDir() // the server secret and the demo key: the same for both gateways
	original := testenv.Postgres(t)

	base := runDevOn(t, original, state, func(baseURL string) {
		sendMessage(t, baseURL)
		waitForUsageRows(t, original, 1)
	}, anthropic.URL)

	dump := filepath.Join(t.TempDir(), "ccproxy.dump")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("pg_dump", "--format=custom", "--file="+dump, "--dbname="+original)
	restored := testenv.Postgres(t) // a new, empty database
	run("pg_restore", "--no-owner", "--exit-on-error", "--dbname="+restored, dump)

	for _, table := range []string{"users", "access_keys", "usage_events", "admins", "model_mappings", "goose_db_version"} {
		if a, b := count(t, original, table), count(t, restored, table); a != b || a == 0 {
			t.Errorf("%s: %d rows in the original, %d restored", table, a, b)
		}
	}

	again := runDevOn(t, restored, state, func(baseURL string) {
		sendMessage(t, baseURL)
		waitForUsageRows(t, restored, 2)
	}, anthropic.URL)
	key := func(u string) string { return u[strings.LastIndex(u, "/ak/")+len("/ak/"):] }
	if key(again) != key(base) {
		t.Fatalf("the gateway on the restored database announced %s, want the restored key of %s", again, base)
	}
}

// runDevOn runs `ccproxy dev` in-process on database dsn with its state in
// state and a Redis namespace of its own, calls use with the announced base
// URL, stops it and returns that URL.
func runDevOn(t *testing.T, dsn, state string, use func(baseURL string), anthropicURL string) string {
	t.Helper()
	_, prefix := testenv.Redis(t)
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	for k, v := range map[string]string{
		"DATABASE_URL": dsn, "REDIS_URL": testenv.RedisURL(), "CCPROXY_REDIS_PREFIX": prefix,
		"CCPROXY_LOG_FORMAT": "json", "CCPROXY_LISTEN_ADDR": freeAddr(t), "CCPROXY_XDS_ADDR": "127.0.0.1:0",
		"CCPROXY_ADMIN_ADDR": "127.0.0.1:0", "CCPROXY_METRICS_ADDR": "",
		"CCPROXY_EXTPROC_ADDR":  "unix://" + filepath.Join(sockDir, "extproc.sock"),
		"CCPROXY_DEV_STATE_DIR": state, "CCPROXY_ANTHROPIC_URL": anthropicURL, "CCPROXY_ADMIN_PASSWORD": "correct-horse-battery",
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"CCPROXY_SERVER_SECRET", "CCPROXY_MASTER_KEY", "CCPROXY_KMS_KEY_ID"} {
		unsetenv(t, k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev := startDevInProcess(t, ctx)
	baseURL := dev.baseURL
	use(baseURL)
	cancel()
	if err := <-dev.done; err != nil {
		t.Fatalf("ccproxy dev: %v", err)
	}
	return baseURL
}

func sendMessage(t *testing.T, baseURL string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5-20250929","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", "sk-ant-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/messages: %s %s", resp.Status, body)
	}
}

func count(t *testing.T, dsn, table string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// waitForUsageRows waits until the usage pipeline (Redis stream, then the
// admin service's ingester) has written n usage rows.
func waitForUsageRows(t *testing.T, dsn string, n int) {
	t.Helper()
	for count(t, dsn, "usage_events") < n {
		time.Sleep(50 * time.Millisecond)
	}
}
