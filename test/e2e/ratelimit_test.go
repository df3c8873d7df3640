package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// balancer spreads requests over several gateways in turn, as a load
// balancer in front of a fleet does, and records what each answered.
type balancer struct {
	*httptest.Server
	next    atomic.Int64
	proxies []*httputil.ReverseProxy
	mu      sync.Mutex
	log     []balanced
}

// balanced is one request through the balancer.
type balanced struct {
	path       string
	replica    int
	status     int
	retryAfter string
	at         time.Time // when the answer's headers arrived
}

func newBalancer(t *testing.T, gateways ...*gateway) *balancer {
	t.Helper()
	b := &balancer{}
	for i, g := range gateways {
		u, err := url.Parse(g.Base)
		if err != nil {
			t.Fatal(err)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // stream SSE through
		p.ModifyResponse = func(resp *http.Response) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.log = append(b.log, balanced{path: resp.Request.URL.Path, replica: i, status: resp.StatusCode,
				retryAfter: resp.Header.Get("retry-after"), at: time.Now()})
			return nil
		}
		b.proxies = append(b.proxies, p)
	}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The balancer buffers each request body before it forwards it, as
		// buffering L7 balancers do. Streaming it would race: the gateway
		// may answer from the request headers alone (a rate-limit 429,
		// sent with Connection: close), and net/http's server, writing
		// that answer back, drains the unread request body the proxy's
		// transport is still sending, which then fails and closes the
		// upstream connection under the answer's body.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "balancer: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		n := b.next.Add(1) - 1
		b.proxies[int(n)%len(b.proxies)].ServeHTTP(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

// messages returns the log of Messages requests (probes and the model list
// excluded).
func (b *balancer) messages() []balanced {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []balanced
	for _, e := range b.log {
		if strings.HasSuffix(e.path, "/v1/messages") {
			out = append(out, e)
		}
	}
	return out
}

// TestRateLimitAcrossReplicas: a user's limit of 5 requests per minute is
// one budget across two extproc replicas (two gateway stacks sharing Redis
// and Postgres, behind a round-robin balancer): the 6th request in a minute
// is refused with Anthropic's 429 and rate-limit headers, whichever replica
// gets it, and real Claude Code, refused the same way, waits retry-after and
// succeeds — without the 429 reaching the upstream or triggering anything
// there.
func TestRateLimitAcrossReplicas(t *testing.T) {
	const password = "e2e-admin-password-ratelimit"
	var upstreamCalls atomic.Int64
	fake := fakeanthropic.New(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		upstreamCalls.Add(1)
		u := fakeanthropic.Usage{Input: 12, Output: 3}
		if stream, _ := r.JSON()["stream"].(bool); stream {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-sonnet-4-5", u, fakeanthropic.Block{Text: "limited but served", Chunks: 3})}
		}
		return fakeanthropic.Reply{Body: fakeanthropic.Message("claude-sonnet-4-5", "limited but served", u)}
	})
	shared := devConfig{
		AnthropicURL:  fake.URL,
		DatabaseURL:   testenv.Postgres(t),
		StateDir:      t.TempDir(),
		RedisPrefix:   fmt.Sprintf("ccproxytest:ratelimit:%d:", time.Now().UnixNano()),
		AdminPassword: password,
	}
	ga := startDevWith(t, shared)
	gb := startDevWith(t, shared)
	if ga.Key != gb.Key {
		t.Fatal("the two gateways announced different demo keys")
	}
	lb := newBalancer(t, ga, gb)

	// The demo user gets 5 requests per minute, through the first
	// gateway's admin API; the second gateway's extproc learns it from the
	// shared key lookup (the change invalidates every replica's cache).
	token := adminLogin(t, ga.AdminAddr, "admin", password)
	a := admin{t: t, base: "http://" + ga.AdminAddr, token: token}
	var users struct {
		Items []struct{ ID string } `json:"items"`
	}
	a.call("GET", "/api/v1/users", nil, &users)
	if len(users.Items) != 1 {
		t.Fatalf("%d users; want the demo user", len(users.Items))
	}
	a.call("PUT", "/api/v1/users/"+users.Items[0].ID+"/rate-limits",
		map[string]any{"requests_per_minute": 5, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}, nil)

	ask := func() (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, lb.URL+"/ak/"+ga.Key+"/v1/messages",
			strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, body
	}
	start := time.Now()
	for i := range 5 {
		if status, _, body := ask(); status != http.StatusOK {
			t.Fatalf("request %d of 5: %d %s", i+1, status, body)
		}
	}
	status, h, body := ask()
	if status != http.StatusTooManyRequests {
		t.Fatalf("6th request in a minute: %d %s; want 429", status, body)
	}
	var e struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.Error.Type != "rate_limit_error" ||
		!strings.HasPrefix(e.Error.Message, "ccproxy: rate limit reached: your account may use 5 requests per minute; retry in ") {
		t.Errorf("429 body %s; want an Anthropic rate_limit_error naming the limit", body)
	}
	// Five requests at once leave the bucket empty; one request comes back
	// 12 s after the first.
	least := 12 - int(time.Since(start)/time.Second) - 1
	if ra, err := strconv.Atoi(h.Get("retry-after")); err != nil || ra < max(least, 1) || ra > 12 {
		t.Errorf("retry-after %q; want 12 s less the time since the first request (at least %d)", h.Get("retry-after"), least)
	}
	for k, v := range map[string]string{"anthropic-ratelimit-requests-limit": "5", "anthropic-ratelimit-requests-remaining": "0", "x-should-retry": "true"} {
		if h.Get(k) != v {
			t.Errorf("%s = %q; want %q", k, h.Get(k), v)
		}
	}
	if reset, err := time.Parse(time.RFC3339, h.Get("anthropic-ratelimit-requests-reset")); err != nil || time.Until(reset) > time.Minute+time.Second {
		t.Errorf("anthropic-ratelimit-requests-reset %q (%v); want an RFC 3339 time within a minute", h.Get("anthropic-ratelimit-requests-reset"), err)
	}
	log := lb.messages()
	if len(log) != 6 || log[4].replica == log[5].replica {
		t.Fatalf("balancer log %s; want 6 requests alternating between the replicas", balancedStatuses(log))
	}
	if got := upstreamCalls.Load(); got != 5 {
		t.Errorf("the upstream saw %d requests; want 5 (the refusal is the gateway's own)", got)
	}

	// Real Claude Code through the balancer: its request is refused the
	// same way, it waits retry-after and its retry is served.
	res := claudecode.Run{Bin: binaries.claude, BaseURL: lb.URL + "/ak/" + ga.Key, APIKey: apiKey, Timeout: 2 * time.Minute}.
		Prompt(t, "Say something while limited")
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "limited but served") {
		t.Fatalf("claude exit %d\nstdout: %s\nstderr: %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	log = lb.messages()[6:]
	first429 := -1
	for i, e := range log {
		if e.status == http.StatusTooManyRequests {
			first429 = i
			break
		}
	}
	if first429 < 0 {
		t.Fatalf("Claude Code's requests %s; want one refused with 429 first", balancedStatuses(log))
	}
	refused := log[first429]
	wait, _ := strconv.Atoi(refused.retryAfter)
	var served *balanced
	for i := first429 + 1; i < len(log); i++ {
		if log[i].status == http.StatusOK {
			served = &log[i]
			break
		}
	}
	if served == nil {
		t.Fatalf("Claude Code's requests %s; want a served retry after the 429", balancedStatuses(log))
	}
	// Claude Code honours retry-after: its retry comes no earlier than
	// announced (a second of slack for the rounding up to whole seconds).
	if gap := served.at.Sub(refused.at); gap < time.Duration(wait-1)*time.Second {
		t.Errorf("Claude Code retried %s after a 429 with retry-after %d", gap.Round(time.Millisecond), wait)
	}
	t.Logf("Claude Code: 429 (retry-after %ds) from replica %d, retried %s later, served by replica %d",
		wait, refused.replica, served.at.Sub(refused.at).Round(time.Millisecond), served.replica)

	// A refusal is no upstream failure: the upstream saw every served
	// request and nothing else.
	served200 := 0
	for _, e := range lb.messages() {
		if e.status == http.StatusOK {
			served200++
		}
	}
	if got := upstreamCalls.Load(); got != int64(served200) {
		t.Errorf("the upstream saw %d requests; the gateways served %d", got, served200)
	}
}

// balancedStatuses describes a balancer log without the paths (they hold the key).
func balancedStatuses(log []balanced) string {
	var b strings.Builder
	for _, e := range log {
		fmt.Fprintf(&b, "[replica %d: %d retry-after %q] ", e.replica, e.status, e.retryAfter)
	}
	return b.String()
}
