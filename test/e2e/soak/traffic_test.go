package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// kind is one sort of request in the mix.
type kind string

const (
	planStream     kind = "plan-stream"
	planJSON       kind = "plan-json"
	planAbort      kind = "plan-abort"
	planCount      kind = "plan-count-tokens"
	bedrockStream  kind = "bedrock-stream"
	bedrockJSON    kind = "bedrock-json"
	bedrockAbort   kind = "bedrock-abort"
	bedrockCount   kind = "bedrock-count-tokens"
	fallbackStream kind = "fallback-stream"
	badKey         kind = "bad-key"
	revocable      kind = "revocable-key"
)

// mix is the weighted request mix.
var mix = []struct {
	k kind
	w int
}{
	{planStream, 20}, {planJSON, 12}, {planAbort, 6}, {planCount, 5},
	{bedrockStream, 12}, {bedrockJSON, 8}, {bedrockAbort, 4}, {bedrockCount, 5},
	{fallbackStream, 10}, {badKey, 6}, {revocable, 12},
}

// outcome is what the client saw.
type outcome string

const (
	served    outcome = "served"    // 2xx, complete answer
	aborted   outcome = "aborted"   // 2xx, the client went away after message_start on purpose
	truncated outcome = "truncated" // 2xx, but the answer broke off
	refused   outcome = "refused"   // 4xx
	failed    outcome = "failed"    // 5xx
	noAnswer  outcome = "no-answer" // connection error before a status
	hung      outcome = "hung"      // no complete answer within requestTimeout
)

// spec is one request: what the fakes answer and what the client saw.
type spec struct {
	id     string
	kind   kind
	usage  fakeanthropic.Usage
	key    string
	keyID  string
	sentAt time.Time
	status int
	out    outcome
	took   time.Duration
}

// registry holds every request's spec, by id; the fakes look requests up
// by the id the body carries.
type registry struct {
	mu sync.Mutex
	m  map[string]*spec
	n  atomic.Int64
}

var idPattern = regexp.MustCompile(`soak-[0-9]+`)

func (r *registry) find(body []byte) *spec {
	id := idPattern.Find(body)
	if id == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[string(id)]
}

func (r *registry) add(k kind) *spec {
	n := r.n.Add(1)
	s := &spec{id: fmt.Sprintf("soak-%d", n), kind: k,
		// Distinct counts per request; the row must carry exactly these.
		usage: fakeanthropic.Usage{Input: 1000 + int(n), Output: 5 + int(n%40), CacheRead: int(n%7) * 10, CacheWrite5m: int(n % 3), CacheWrite1h: int(n % 2)}}
	r.mu.Lock()
	r.m[s.id] = s
	r.mu.Unlock()
	return s
}

func (r *registry) all() []*spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*spec, 0, len(r.m))
	for _, s := range r.m {
		out = append(out, s)
	}
	return out
}

// abortGap trickles aborted streams so the client can leave mid-body.
const abortGap = 40 * time.Millisecond

// plan is the fake Anthropic's handler.
func (r *registry) plan(req fakeanthropic.Request) fakeanthropic.Reply {
	s := r.find(req.Body)
	if s == nil {
		return fakeanthropic.Reply{Status: http.StatusNotFound, Body: []byte(`{"type":"error","error":{"type":"not_found_error","message":"soak: unknown request"}}`)}
	}
	switch {
	case s.kind == fallbackStream:
		return fakeanthropic.Reply{Status: http.StatusTooManyRequests,
			Header: http.Header{"Retry-After": {"1"}, "Anthropic-Ratelimit-Unified-Status": {"rejected"}},
			Body:   []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}`)}
	case strings.HasSuffix(req.URLPath(), "/count_tokens"):
		return fakeanthropic.Reply{Body: fmt.Appendf(nil, `{"input_tokens":%d}`, s.usage.Input), Header: http.Header{"Content-Type": {"application/json"}}}
	case s.kind == planJSON || s.kind == revocable:
		return fakeanthropic.Reply{Body: fakeanthropic.Message(model, "soak", s.usage), Header: http.Header{"Content-Type": {"application/json"}}}
	}
	rep := fakeanthropic.Reply{Events: fakeanthropic.Stream(model, s.usage, fakeanthropic.Block{Text: "soak answer", Chunks: 3})}
	if s.kind == planAbort {
		rep.Gap = abortGap
	}
	return rep
}

// bedrock is the fake Bedrock's handler.
func (r *registry) bedrock(req fakebedrock.Request) fakebedrock.Reply {
	s := r.find(req.InvokeBody())
	if s == nil {
		return fakebedrock.Error(http.StatusBadRequest, "ValidationException", "soak: unknown request")
	}
	if req.Op == fakebedrock.OpCountTokens {
		return fakebedrock.CountTokens(s.usage.Input)
	}
	u := fakebedrock.Usage{Input: s.usage.Input, Output: s.usage.Output, CacheRead: s.usage.CacheRead,
		CacheWrite5m: s.usage.CacheWrite5m, CacheWrite1h: s.usage.CacheWrite1h}
	rep := fakebedrock.Answer(model, u, fakebedrock.Block{Text: "soak answer", Chunks: 3})
	if s.kind == bedrockAbort {
		rep.Gap = abortGap
	}
	return rep
}

// traffic drives the request mix from several workers, each with its own
// seeded random source, and revokes keys as it goes.
type traffic struct {
	env     *soakEnv
	seed    uint64
	workers int

	mu      sync.Mutex
	current issued // the revocable key in use
	revoked []revocation
	// revokeErrors counts revocations the admin API did not acknowledge.
	revokeErrors int
}

// revocation is a key revoked during the soak.
type revocation struct {
	keyID, key string
	ackAt      time.Time
}

func newTraffic(env *soakEnv, seed uint64, workers int) *traffic {
	return &traffic{env: env, seed: seed, workers: workers}
}

func (tr *traffic) runFor(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for w := range tr.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(tr.seed, uint64(w)+1))
			for ctx.Err() == nil {
				tr.one(ctx, rng)
				// A pause between requests, like a developer's client
				// between turns, leaves CPU to the processes under test
				// on a small shared machine.
				sleep(ctx, time.Duration(rng.IntN(40))*time.Millisecond)
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); tr.revoker(ctx, rand.New(rand.NewPCG(tr.seed, 0))) }()
	wg.Wait()
}

func pick(rng *rand.Rand) kind {
	total := 0
	for _, m := range mix {
		total += m.w
	}
	n := rng.IntN(total)
	for _, m := range mix {
		if n < m.w {
			return m.k
		}
		n -= m.w
	}
	return mix[0].k
}

// one sends one request of a random kind and records its outcome. It
// returns nil when there was nothing to send (no revocable key yet).
func (tr *traffic) one(ctx context.Context, rng *rand.Rand) *spec {
	k := pick(rng)
	env := tr.env
	var key, keyID string
	switch k {
	case planStream, planJSON, planAbort, planCount:
		key = env.users.plan.Key
	case bedrockStream, bedrockJSON, bedrockAbort, bedrockCount:
		key = env.users.bedrock.Key
	case fallbackStream:
		key = env.users.fallback.Key
	case badKey:
		key = "ak_" + strings.Repeat("0", 20) + fmt.Sprint(rng.Uint64())
	case revocable:
		tr.mu.Lock()
		cur := tr.current
		// Half the time, a key revoked earlier: it must be refused.
		if len(tr.revoked) > 0 && rng.IntN(2) == 0 {
			r := tr.revoked[rng.IntN(len(tr.revoked))]
			cur = issued{ID: r.keyID, Key: r.key}
		}
		tr.mu.Unlock()
		if cur.Key == "" {
			return nil
		}
		key, keyID = cur.Key, cur.ID
	}
	s := env.reqs.add(k)
	s.key, s.keyID = key, keyID
	stream := k == planStream || k == planAbort || k == bedrockStream || k == bedrockAbort || k == fallbackStream
	path := "/v1/messages"
	if k == planCount || k == bedrockCount {
		path = "/v1/messages/count_tokens"
	}
	var body string
	if path == "/v1/messages" {
		body = fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":%t,"messages":[{"role":"user","content":"hello %s"}]}`, model, stream, s.id)
	} else {
		body = fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"count %s"}]}`, model, s.id)
	}
	abort := k == planAbort || k == bedrockAbort
	s.sentAt = time.Now()
	s.status, s.out = send(ctx, env.gateway+"/ak/"+key+path, body, s.id, abort)
	s.took = time.Since(s.sentAt)
	return s
}

// send makes one request and classifies what came back.
func send(parent context.Context, url, body, session string, abort bool) (int, outcome) {
	// The soak's own end does not cancel requests in flight: they finish
	// (or hang) on their own timeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), requestTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", planCredential)
	req.Header.Set("x-claude-code-session-id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, hung
		}
		return 0, noAnswer
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, failed
	case resp.StatusCode >= 300:
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, refused
	}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		seen.Write(buf[:n])
		if abort && bytes.Contains(seen.Bytes(), []byte("event: message_start")) {
			cancel()
			return resp.StatusCode, aborted
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return resp.StatusCode, hung
			}
			return resp.StatusCode, truncated
		}
	}
	b := seen.Bytes()
	complete := bytes.Contains(b, []byte("event: message_stop")) || // streams
		bytes.Contains(b, []byte(`"input_tokens"`)) // messages and count_tokens JSON
	if !complete || abort {
		return resp.StatusCode, truncated
	}
	return resp.StatusCode, served
}

// revoker issues a key for the plan user, lets the workers use it for a
// while, revokes it through the admin API and records when the revocation
// was acknowledged (the DELETE's 2xx).
func (tr *traffic) revoker(ctx context.Context, rng *rand.Rand) {
	env := tr.env
	for ctx.Err() == nil {
		k, err := env.issueKey(ctx, env.users.plan.ID)
		if err != nil {
			sleep(ctx, 500*time.Millisecond) // admin or Postgres down: try again
			continue
		}
		tr.mu.Lock()
		tr.current = k
		tr.mu.Unlock()
		sleep(ctx, time.Duration(2000+rng.IntN(4000))*time.Millisecond)
		// Revoke even after the soak's end, so no key is left half-used.
		for {
			status, err := env.call(context.WithoutCancel(ctx), "DELETE", "/api/v1/keys/"+k.ID, nil, nil)
			if err == nil && status < 300 {
				tr.mu.Lock()
				tr.revoked = append(tr.revoked, revocation{keyID: k.ID, key: k.Key, ackAt: time.Now()})
				tr.current = issued{}
				tr.mu.Unlock()
				break
			}
			tr.mu.Lock()
			tr.revokeErrors++
			tr.mu.Unlock()
			time.Sleep(500 * time.Millisecond)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func newCmd(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return cmd
}
