package cli

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
)

const (
	adminUser     = "admin"
	adminPassword = "pw-correct-horse-battery"
	bedrockSecret = "ABSKQmVkcm9ja0FQSUtleS1zZWNyZXQtdmFsdWU="
)

// harness is a real admin server on a fresh database and the CLI pointed
// at it through a private config file. It keeps everything the CLI wrote,
// so a test can check that no secret ever appeared.
type harness struct {
	t      *testing.T
	st     *store.Store
	url    string
	env    map[string]string
	config string
	all    bytes.Buffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	sealer, err := secrets.NewLocal(randomBytes(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	hasher, err := keys.NewHasher(randomBytes(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(admin.Options{Store: st, Sealer: sealer, Hasher: hasher})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.EnsureFirstAdmin(ctx, st, adminUser, adminPassword); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	config := filepath.Join(t.TempDir(), "sub", "cli.json")
	return &harness{t: t, st: st, url: hs.URL, config: config, env: map[string]string{EnvConfig: config}}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// run executes one command line with stdin and returns stdout, stderr and
// the error the root command would get.
func (h *harness) run(stdin string, args ...string) (string, string, error) {
	h.t.Helper()
	a := newApp(func(k string) string { return h.env[k] }, &http.Client{Timeout: 10 * time.Second})
	root := &cobra.Command{Use: "ccproxy", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(a.commands()...)
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	h.all.WriteString(out.String() + errOut.String())
	if err != nil {
		h.all.WriteString(err.Error())
	}
	return out.String(), errOut.String(), err
}

// ok runs a command that must succeed and returns its stdout.
func (h *harness) ok(stdin string, args ...string) string {
	h.t.Helper()
	out, errOut, err := h.run(stdin, args...)
	if err != nil {
		h.t.Fatalf("%v: %v (stderr %q)", args, err, errOut)
	}
	return out
}

func (h *harness) login() {
	h.t.Helper()
	h.ok(adminPassword+"\n", "login", "--server", h.url+"/", "--username", adminUser, "--password-stdin")
}

func TestEndToEnd(t *testing.T) {
	h := newHarness(t)

	// Nothing works before login.
	if _, _, err := h.run("", "users", "list"); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("users list before login: %v, want ErrNotLoggedIn", err)
	}
	if _, _, err := h.run("wrong-password\n", "login", "--server", h.url, "--username", adminUser, "--password-stdin"); err == nil ||
		!strings.HasPrefix(err.Error(), "unauthorized") {
		t.Fatalf("login with a bad password: %v", err)
	}
	if _, err := os.Stat(h.config); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed login wrote the config: %v", err)
	}

	out := h.ok(adminPassword+"\n", "login", "--server", h.url+"/", "--username", adminUser, "--password-stdin")
	if want := "Logged in to " + h.url + " as admin; the session expires at "; !strings.HasPrefix(out, want) {
		t.Fatalf("login printed %q, want prefix %q", out, want)
	}
	fi, err := os.Stat(h.config)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", fi.Mode().Perm())
	}
	saved, _, err := newApp(func(k string) string { return h.env[k] }, nil).loadSession()
	if err != nil || saved.Server != h.url || saved.Token == "" || saved.ExpiresAt.Before(time.Now()) {
		t.Fatalf("saved session %+v, %v", saved, err)
	}
	if strings.Contains(h.all.String(), saved.Token) {
		t.Fatal("the session token was printed")
	}

	// Users.
	var u user
	out = h.ok("", "users", "create", "--name", "Alice", "--email", "alice@example.com", "--monthly-budget-usd", "12.50", "-o", "json")
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatalf("users create -o json printed %q: %v", out, err)
	}
	if u.Name != "Alice" || *u.Email != "alice@example.com" || *u.MonthlyBudgetUSD != "12.5" && *u.MonthlyBudgetUSD != "12.50" || u.RoutingStrategy != "plan_first" {
		t.Errorf("created user %+v", u)
	}
	created := u.CreatedAt.UTC().Format(time.RFC3339)
	budget := *u.MonthlyBudgetUSD
	if got, want := h.ok("", "users", "list"), tableOf(
		[]string{"ID", "NAME", "EMAIL", "ROUTING", "BUDGET_USD", "STATUS", "CREATED"},
		[]string{u.ID, "Alice", "alice@example.com", "plan_first", budget, "active", created},
	); got != want {
		t.Errorf("users list:\n%s\nwant:\n%s", got, want)
	}
	out = h.ok("", "users", "update", u.ID, "--routing-strategy", "bedrock_only", "--monthly-budget-usd", "none", "--email", "")
	for _, line := range []string{"Routing strategy:    bedrock_only\n", "Monthly budget USD:  -\n", "Email:               -\n", "ID:                  " + u.ID + "\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("users update printed:\n%s\nwant a line %q", out, line)
		}
	}

	// Keys.
	out = h.ok("", "keys", "create", u.ID, "--name", "laptop")
	m := regexp.MustCompile(`(?m)^Key:\s+(ak_\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create printed no ak_ key:\n%s", out)
	}
	accessKey := m[1]
	keyID := regexp.MustCompile(`(?m)^ID:\s+(\S+)$`).FindStringSubmatch(out)[1]
	out = h.ok("", "keys", "list", u.ID)
	if strings.Contains(out, accessKey) || !strings.Contains(out, keyID) || !strings.Contains(out, "laptop") {
		t.Errorf("keys list:\n%s", out)
	}

	// Bedrock: the secret goes in through stdin and never comes out.
	if got, want := h.ok(bedrockSecret+"\n", "bedrock", "set", "--user", u.ID, "--type", "api_key", "--api-key-stdin", "--region", "us-east-1"),
		"Set the Bedrock credential of user "+u.ID+" (api_key, us-east-1).\n"; got != want {
		t.Errorf("bedrock set printed %q, want %q", got, want)
	}
	if got, want := h.ok("", "bedrock", "set", "--key", keyID, "--type", "aws_default_chain", "--region", "eu-west-1"),
		"Set the Bedrock credential of key "+keyID+" (aws_default_chain, eu-west-1).\n"; got != want {
		t.Errorf("bedrock set --key printed %q, want %q", got, want)
	}
	if got, want := h.ok("", "bedrock", "delete", "--key", keyID), "Removed the Bedrock credential of key "+keyID+".\n"; got != want {
		t.Errorf("bedrock delete printed %q, want %q", got, want)
	}

	// Rate limits: set replaces, a limit not given is none.
	if got, want := h.ok("", "rate-limits", "set", "--user", u.ID, "--requests-per-minute", "5", "--output-tokens-per-minute", "2000"),
		"Set the rate limits of user "+u.ID+".\nRequests per minute:       5\nInput tokens per minute:   -\nOutput tokens per minute:  2000\n"; got != want {
		t.Errorf("rate-limits set printed %q, want %q", got, want)
	}
	if got, want := h.ok("", "rate-limits", "get", "--key", keyID),
		"Requests per minute:       -\nInput tokens per minute:   -\nOutput tokens per minute:  -\n"; got != want {
		t.Errorf("rate-limits get --key printed %q, want %q", got, want)
	}
	if got, want := h.ok("", "rate-limits", "delete", "--user", u.ID), "Removed the rate limits of user "+u.ID+".\n"; got != want {
		t.Errorf("rate-limits delete printed %q, want %q", got, want)
	}

	// Budgets.
	out = h.ok("", "budgets", "create", "--user", u.ID, "--amount", "5", "--window", "daily", "--metric", "all",
		"--action", "downgrade", "--downgrade", "opus=claude-sonnet-4-5", "--thresholds", "80,100", "-o", "json")
	var bd struct{ ID string }
	if err := json.Unmarshal([]byte(out), &bd); err != nil || bd.ID == "" {
		t.Fatalf("budgets create -o json printed %q: %v", out, err)
	}
	budgetHeader := []string{"ID", "SUBJECT", "WINDOW", "METRIC", "AMOUNT", "SPENT", "PERCENT", "THRESHOLDS", "ACTION"}
	if got, want := h.ok("", "budgets", "list", "--scope", "user"), tableOf(budgetHeader,
		[]string{bd.ID, "user " + u.ID, "daily", "all", "5.00", "0.000000", "0.00%", "80,100", "downgrade (opus→claude-sonnet-4-5)"},
	); got != want {
		t.Errorf("budgets list:\n%s\nwant:\n%s", got, want)
	}
	if got, want := h.ok("", "budgets", "update", bd.ID, "--action", "block", "--amount", "7.5"), tableOf(budgetHeader,
		[]string{bd.ID, "user " + u.ID, "daily", "all", "7.50", "0.000000", "0.00%", "80,100", "block (opus→claude-sonnet-4-5)"},
	); got != want {
		t.Errorf("budgets update:\n%s\nwant:\n%s", got, want)
	}
	if got, want := h.ok("", "budgets", "delete", bd.ID), "Deleted budget "+bd.ID+".\n"; got != want {
		t.Errorf("budgets delete printed %q, want %q", got, want)
	}

	// Usage.
	uid, kid := uuid.MustParse(u.ID), uuid.MustParse(keyID)
	at := time.Date(2026, 3, 4, 10, 15, 0, 0, time.UTC)
	evs := []store.UsageEvent{
		{RequestID: "req-1", EventTime: at, UserID: uid, AccessKeyID: kid, SessionID: "s1", Kind: store.KindMessages,
			RequestedModel: "claude-test-4", Provider: store.ProviderBedrock, Region: "us-west-2", Status: 200, Fallback: true, FallbackReason: "plan_429",
			InputTokens: 1000, OutputTokens: 200, CacheReadTokens: 50, CostUSD: decimal.RequireFromString("0.0060"), PriceFlag: store.PriceExact, LatencyMs: 900},
		{RequestID: "req-2", EventTime: at.Add(time.Minute), UserID: uid, AccessKeyID: kid, SessionID: "s1", Kind: store.KindMessages,
			RequestedModel: "claude-test-4", Provider: store.ProviderAnthropic, Status: 200,
			InputTokens: 10, OutputTokens: 5, CostUSD: decimal.RequireFromString("0.0001"), PriceFlag: store.PriceExact, LatencyMs: 100},
		{RequestID: "req-3", EventTime: at.Add(2 * time.Minute), UserID: uid, AccessKeyID: kid, SessionID: "s2", Kind: store.KindMessages,
			RequestedModel: "claude-test-4", Provider: store.ProviderAnthropic, Status: 200,
			InputTokens: 20, OutputTokens: 7, CacheWrite5mTokens: 3, CostUSD: decimal.RequireFromString("0.0002"), PriceFlag: store.PriceExact, LatencyMs: 120},
	}
	if _, err := h.st.Usage().InsertEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	summary := []string{"usage", "summary", "--user", u.ID, "--from", "2026-03-04", "--to", "2026-03-05T00:00:00Z", "--group-by", "provider"}
	if got, want := h.ok("", summary...), "Usage from 2026-03-04T00:00:00Z to 2026-03-05T00:00:00Z by provider\n\n"+tableOf(
		[]string{"KEY", "REQUESTS", "BEDROCK_REQ", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE_5M", "CACHE_WRITE_1H", "PLAN_USD", "BEDROCK_USD", "FALLBACKS", "ERRORS", "ABORTED"},
		[]string{"anthropic", "2", "0", "30", "12", "0", "3", "0", "0.0003", "0", "0", "0", "0"},
		[]string{"bedrock", "1", "1", "1000", "200", "50", "0", "0", "0", "0.006", "1", "0", "0"},
		[]string{"TOTAL", "3", "1", "1030", "212", "50", "3", "0", "0.0003", "0.006", "1", "0", "0"},
	); got != want {
		t.Errorf("usage summary:\n%s\nwant:\n%s", got, want)
	}
	if got, want := h.ok("", append(summary, "-o", "json")...), `{
  "from": "2026-03-04T00:00:00Z",
  "to": "2026-03-05T00:00:00Z",
  "group_by": "provider",
  "groups": [
    {
      "key": "anthropic",
      "requests": 2,
      "bedrock_requests": 0,
      "input_tokens": 30,
      "output_tokens": 12,
      "cache_read_tokens": 0,
      "cache_write_5m_tokens": 3,
      "cache_write_1h_tokens": 0,
      "plan_cost_usd": "0.0003",
      "bedrock_cost_usd": "0",
      "fallbacks": 0,
      "errors": 0,
      "aborted": 0
    },
    {
      "key": "bedrock",
      "requests": 1,
      "bedrock_requests": 1,
      "input_tokens": 1000,
      "output_tokens": 200,
      "cache_read_tokens": 50,
      "cache_write_5m_tokens": 0,
      "cache_write_1h_tokens": 0,
      "plan_cost_usd": "0",
      "bedrock_cost_usd": "0.006",
      "fallbacks": 1,
      "errors": 0,
      "aborted": 0
    }
  ]
}
`; got != want {
		t.Errorf("usage summary -o json:\n%s\nwant:\n%s", got, want)
	}
	out, errOut, err := h.run("", "usage", "requests", "--user", u.ID, "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if want := tableOf(
		[]string{"TIME", "REQUEST_ID", "USER", "MODEL", "PROVIDER", "REGION", "FALLBACK", "STATUS", "INPUT", "OUTPUT", "COST_USD", "LATENCY_MS"},
		[]string{"2026-03-04T10:17:00Z", "req-3", u.ID, "claude-test-4", "anthropic", "-", "false", "200", "20", "7", "0.0002", "120"},
		[]string{"2026-03-04T10:16:00Z", "req-2", u.ID, "claude-test-4", "anthropic", "-", "false", "200", "10", "5", "0.0001", "100"},
	); out != want {
		t.Errorf("usage requests:\n%s\nwant:\n%s", out, want)
	}
	if !strings.HasPrefix(errOut, "more results: add --cursor ") {
		t.Errorf("usage requests stderr %q, want a cursor hint", errOut)
	}

	// The CSV export lands in the file, complete, with one row per request.
	csvPath := filepath.Join(t.TempDir(), "usage.csv")
	_, errOut, err = h.run("", "usage", "export", "--user", u.ID, "--from", "2026-03-01", "--to", "2026-04-01", "-o", csvPath)
	if err != nil || errOut != "wrote "+csvPath+"\n" {
		t.Fatalf("usage export: %v (stderr %q)", err, errOut)
	}
	raw, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n"), "\r\n")
	if len(lines) != 1+3 || !strings.HasPrefix(lines[0], "BilledCost,EffectiveCost,ListCost,") ||
		!strings.Contains(lines[1], ",req-1,") || !strings.Contains(lines[3], ",req-3,") {
		t.Errorf("usage export wrote:\n%s", raw)
	}
	out = h.ok("", "usage", "export", "--daily", "--user", u.ID, "--from", "2026-03-01", "--to", "2026-04-01", "-o", "-")
	if !strings.Contains(out, ",2026-03-04,") {
		t.Errorf("usage export --daily printed:\n%s", out)
	}
	// A failed export leaves no file.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if _, _, err := h.run("", "usage", "export", "--from", "2026-04-01", "--to", "2026-03-01", "-o", bad); !isStatus(err, http.StatusUnprocessableEntity) {
		t.Errorf("usage export with from after to: %v, want 422", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 0 {
		t.Errorf("a failed export left %v", ents)
	}

	// Rotation shows the new key once; revocation.
	out = h.ok("", "keys", "rotate", keyID, "--grace", "1h")
	m = regexp.MustCompile(`(?m)^Key:\s+(ak_\S+)$`).FindStringSubmatch(out)
	if m == nil || m[1] == accessKey || !strings.Contains(out, "Replaces:") {
		t.Fatalf("keys rotate printed:\n%s", out)
	}
	if got, want := h.ok("", "keys", "revoke", keyID), "Revoked key "+keyID+".\n"; got != want {
		t.Errorf("keys revoke printed %q, want %q", got, want)
	}
	if got, want := h.ok("", "users", "delete", u.ID), "Deleted user "+u.ID+".\n"; got != want {
		t.Errorf("users delete printed %q, want %q", got, want)
	}

	if strings.Contains(h.all.String(), bedrockSecret) {
		t.Error("the Bedrock API key appeared in the CLI's output")
	}

	// A saved token is never sent to another server.
	if _, _, err := h.run("", "users", "list", "--server", "http://127.0.0.1:1"); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("users list --server elsewhere: %v, want ErrNotLoggedIn", err)
	}

	// Logout revokes the session and removes the file.
	if got, want := h.ok("", "logout"), "Logged out of "+h.url+".\n"; got != want {
		t.Errorf("logout printed %q, want %q", got, want)
	}
	if _, err := os.Stat(h.config); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config after logout: %v", err)
	}
	if _, _, err := h.run("", "users", "list"); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("users list after logout: %v, want ErrNotLoggedIn", err)
	}
	h.env[EnvServer], h.env[EnvToken] = h.url, saved.Token
	if _, _, err := h.run("", "users", "list"); !isStatus(err, http.StatusUnauthorized) ||
		!strings.HasSuffix(err.Error(), "\n(run \"ccproxy login\" to start a new session)") {
		t.Errorf("users list with the revoked token: %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	h := newHarness(t)
	h.login()
	missing := uuid.NewString()
	tests := []struct {
		name    string
		args    []string
		status  int
		wantErr string
	}{
		{"bad routing strategy", []string{"users", "create", "--name", "Bob", "--routing-strategy", "sometimes"}, http.StatusUnprocessableEntity,
			"validation failed: the request has invalid fields\n  routing_strategy: must be plan_first, bedrock_only or plan_only"},
		{"bad budget", []string{"users", "create", "--name", "Bob", "--monthly-budget-usd", "lots"}, http.StatusUnprocessableEntity,
			"validation failed: the request has invalid fields\n  monthly_budget_usd: must be a non-negative decimal string with at most 2 decimals, like \"12.50\""},
		{"unknown user", []string{"users", "get", missing}, http.StatusNotFound, "not found"},
		{"malformed id", []string{"users", "get", "../../auth/logout"}, http.StatusNotFound, "not found: no resource has this id"},
		{"keys of unknown user", []string{"keys", "create", missing}, http.StatusNotFound, "not found"},
		{"bedrock of unknown user", []string{"bedrock", "set", "--user", missing, "--type", "aws_default_chain", "--region", "us-east-1"}, http.StatusNotFound, "not found"},
		{"bad group by", []string{"usage", "summary", "--group-by", "week"}, http.StatusUnprocessableEntity,
			"validation failed: the request has invalid fields\n  group_by: must be hour, day, model, provider, session, user, key, fallback_reason or team"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.run("", tc.args...)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || err.Error() != tc.wantErr {
				t.Errorf("error %q (%T), want HTTP %d %q", err, err, tc.status, tc.wantErr)
			}
		})
	}
}

func TestLocalErrors(t *testing.T) {
	h := newHarness(t)
	h.login()
	tests := []struct {
		name, stdin string
		args        []string
		wantErr     string
	}{
		{"bedrock needs one target", "", []string{"bedrock", "set", "--region", "us-east-1", "--type", "aws_default_chain"}, "give exactly one of --user USER_ID or --key KEY_ID"},
		{"bedrock two targets", "", []string{"bedrock", "delete", "--user", "a", "--key", "b"}, "give exactly one of --user USER_ID or --key KEY_ID"},
		{"bedrock api key missing", "", []string{"bedrock", "set", "--user", "a", "--region", "us-east-1"}, "--type api_key needs the key: use --api-key-stdin or set " + EnvBedrockAPIKey},
		{"bedrock empty stdin", "", []string{"bedrock", "set", "--user", "a", "--region", "us-east-1", "--api-key-stdin"}, "no Bedrock API key on stdin"},
		{"bedrock bad type", "", []string{"bedrock", "set", "--user", "a", "--region", "us-east-1", "--type", "iam"}, `--type must be api_key or aws_default_chain, not "iam"`},
		{"bad output", "", []string{"users", "list", "-o", "yaml"}, `--output must be table or json, not "yaml"`},
		{"empty update", "", []string{"users", "update", "x"}, "nothing to change: give at least one of --name, --email, --routing-strategy, --monthly-budget-usd, --team, --status"},
		{"bad grace", "", []string{"keys", "rotate", "x", "--grace", "-1s"}, "--grace must be a non-negative whole number of seconds, e.g. 0s, 90m or 24h"},
		{"bad from", "", []string{"usage", "summary", "--from", "yesterday"}, `--from: "yesterday" is neither an RFC 3339 time nor a YYYY-MM-DD date`},
		{"login without password", "", []string{"login", "--server", h.url, "--username", "admin"}, "no password: use --password-stdin or set " + EnvPassword},
		{"login bad server", "", []string{"login", "--server", "ftp://x", "--username", "admin"}, `server "ftp://x" must be an http:// or https:// URL without credentials, query or fragment`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := h.run(tc.stdin, tc.args...); err == nil || err.Error() != tc.wantErr {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoginPasswordFromEnv(t *testing.T) {
	h := newHarness(t)
	h.env[EnvPassword] = adminPassword
	h.ok("", "login", "--server", h.url, "--username", adminUser)
	h.env[EnvPassword] = ""
	if got, want := h.ok("", "users", "list"), "ID  NAME  EMAIL  ROUTING  BUDGET_USD  STATUS  CREATED\n"; got != want {
		t.Errorf("users list %q, want %q", got, want)
	}
}

// tableOf renders rows the way the commands do.
func tableOf(rows ...[]string) string {
	var b bytes.Buffer
	if err := table(&b, rows); err != nil {
		panic(err)
	}
	return b.String()
}
