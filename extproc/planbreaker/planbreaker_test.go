package planbreaker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a fake Config.Now shared by the "replicas" of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newBreaker(t *testing.T, client redis.UniversalClient, prefix string, clk *clock, mod func(*Config)) *Breaker {
	t.Helper()
	cfg := Config{Redis: client, Prefix: prefix, Now: clk.Now, Registerer: prometheus.NewRegistry()}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deadRedis is a client for a port nothing listens on.
func deadRedis(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

const (
	opAdvance = "" // only moves the clock
	noReset   = time.Duration(-1 << 63)
)

// step runs one operation at t0+at on replica on.
type step struct {
	at    time.Duration
	on    int
	op    string        // opState, opRateLimited, opFailure, opSuccess, opPreempt
	reset time.Duration // opRateLimited, opPreempt: resetAt = t0+reset; noReset: zero
	// State's expected answer: route, open-until (t0+until; 0 = zero) and
	// whether pre-emptive failover opened the breaker.
	route Route
	until time.Duration
	pre   bool
	// to is the transition the step must make ("" for none).
	to string
}

var scenarios = []struct {
	name  string
	steps []step
}{
	{"closed by default", []step{
		{op: opState, route: RouteClosed},
		{on: 1, op: opSuccess},
		{on: 1, op: opState, route: RouteClosed},
	}},
	{"429 with retry-after 120 opens until now+120 s on every replica; one probe; its success closes", []step{
		{at: 5 * time.Second, op: opRateLimited, reset: 125 * time.Second, to: toOpen},
		{at: 5 * time.Second, on: 1, op: opState, route: RouteOpen, until: 125 * time.Second},
		{at: 124999 * time.Millisecond, on: 1, op: opState, route: RouteOpen, until: 125 * time.Second},
		{at: 125 * time.Second, op: opState, route: RouteProbe, until: 125 * time.Second, to: toHalfOpen},
		{at: 125 * time.Second, on: 1, op: opState, route: RouteOpen, until: 125 * time.Second},
		{at: 126 * time.Second, op: opState, route: RouteOpen, until: 125 * time.Second},
		{at: 127 * time.Second, on: 1, op: opSuccess, to: toClosed},
		{at: 127 * time.Second, op: opState, route: RouteClosed},
		{at: 127 * time.Second, on: 1, op: opState, route: RouteClosed},
	}},
	{"rate limited without a reset opens for DefaultOpen", []step{
		{op: opRateLimited, reset: noReset, to: toOpen},
		{on: 1, op: opState, route: RouteOpen, until: 60 * time.Second},
	}},
	{"reset capped at MaxOpen", []step{
		{op: opRateLimited, reset: 5 * time.Hour, to: toOpen},
		{on: 1, op: opState, route: RouteOpen, until: time.Hour},
	}},
	{"reset in the past opens for MinOpen", []step{
		{at: time.Minute, op: opRateLimited, reset: 0, to: toOpen},
		{at: time.Minute, on: 1, op: opState, route: RouteOpen, until: time.Minute + time.Second},
	}},
	{"open-until only moves later", []step{
		{op: opRateLimited, reset: 120 * time.Second, to: toOpen},
		{on: 1, op: opRateLimited, reset: 30 * time.Second},
		{op: opState, route: RouteOpen, until: 120 * time.Second},
		{at: 10 * time.Second, on: 1, op: opRateLimited, reset: 300 * time.Second},
		{at: 10 * time.Second, op: opState, route: RouteOpen, until: 300 * time.Second},
	}},
	{"failed probe reopens for DefaultOpen", []step{
		{op: opRateLimited, reset: 10 * time.Second, to: toOpen},
		{at: 10 * time.Second, on: 1, op: opState, route: RouteProbe, until: 10 * time.Second, to: toHalfOpen},
		{at: 12 * time.Second, op: opFailure, to: toOpen},
		{at: 12 * time.Second, on: 1, op: opState, route: RouteOpen, until: 72 * time.Second},
		{at: 72 * time.Second, op: opState, route: RouteProbe, until: 72 * time.Second, to: toHalfOpen},
	}},
	{"rate-limited probe reopens until the new reset", []step{
		{op: opFailure}, {op: opFailure}, {on: 1, op: opFailure, to: toOpen},
		{at: 60 * time.Second, op: opState, route: RouteProbe, until: 60 * time.Second, to: toHalfOpen},
		{at: 61 * time.Second, on: 1, op: opRateLimited, reset: 90 * time.Second, to: toOpen},
		{at: 61 * time.Second, op: opState, route: RouteOpen, until: 90 * time.Second},
	}},
	{"3 failures within 60 s open", []step{
		{op: opFailure},
		{at: 30 * time.Second, on: 1, op: opFailure},
		{at: 59999 * time.Millisecond, op: opFailure, to: toOpen},
		{at: 59999 * time.Millisecond, on: 1, op: opState, route: RouteOpen, until: 119999 * time.Millisecond},
	}},
	{"3 failures spread over 60 s or more do not open", []step{
		{op: opFailure},
		{at: 30 * time.Second, on: 1, op: opFailure},
		{at: 60 * time.Second, op: opFailure}, // the first is exactly 60 s old: out
		{at: 60 * time.Second, on: 1, op: opState, route: RouteClosed},
		{at: 90 * time.Second, on: 1, op: opFailure}, // 60 s and 90 s in (30 s, 90 s]
		{at: 90 * time.Second, op: opState, route: RouteClosed},
		{at: 119999 * time.Millisecond, op: opFailure, to: toOpen},
		{at: 119999 * time.Millisecond, on: 1, op: opState, route: RouteOpen, until: 179999 * time.Millisecond},
	}},
	{"successes while closed do not clear the failure window", []step{
		{op: opFailure}, {op: opSuccess}, {on: 1, op: opFailure}, {on: 1, op: opSuccess},
		{at: time.Second, op: opFailure, to: toOpen},
		{at: time.Second, op: opState, route: RouteOpen, until: 61 * time.Second},
	}},
	{"outcomes of older requests while open change nothing", []step{
		{op: opRateLimited, reset: 100 * time.Second, to: toOpen},
		{at: time.Second, on: 1, op: opSuccess},
		{at: time.Second, op: opFailure},
		{at: time.Second, on: 1, op: opFailure},
		{at: time.Second, op: opFailure},
		{at: 2 * time.Second, op: opState, route: RouteOpen, until: 100 * time.Second},
	}},
	{"a probe that never reports loses its lease after ProbeLease", []step{
		{op: opRateLimited, reset: 10 * time.Second, to: toOpen},
		{at: 10 * time.Second, op: opState, route: RouteProbe, until: 10 * time.Second, to: toHalfOpen},
		{at: 39999 * time.Millisecond, on: 1, op: opState, route: RouteOpen, until: 10 * time.Second},
		{at: 40 * time.Second, on: 1, op: opState, route: RouteProbe, until: 10 * time.Second, to: toHalfOpen},
		{at: 40 * time.Second, op: opState, route: RouteOpen, until: 10 * time.Second},
	}},
	{"a half-open breaker nobody probes for DefaultOpen is forgotten", []step{
		{op: opRateLimited, reset: 10 * time.Second, to: toOpen},
		{at: 70 * time.Second, on: 1, op: opState, route: RouteClosed, to: toClosed},
		{at: 70 * time.Second, op: opState, route: RouteClosed},
	}},
	{"an idle half-open breaker is kept until DefaultOpen after the last lease", []step{
		{op: opRateLimited, reset: 10 * time.Second, to: toOpen},
		{at: 69999 * time.Millisecond, op: opState, route: RouteProbe, until: 10 * time.Second, to: toHalfOpen},
		// lease until 99.999 s, kept until 159.999 s
		{at: 159998 * time.Millisecond, on: 1, op: opState, route: RouteProbe, until: 10 * time.Second, to: toHalfOpen},
		{at: 259998 * time.Millisecond, on: 1, op: opState, route: RouteClosed, to: toClosed},
	}},
	{"preempt opens until the announced reset with preemptive decisions; the probe's success closes", []step{
		{at: time.Second, op: opPreempt, reset: 30 * time.Minute, to: toOpen},
		{at: time.Second, on: 1, op: opState, route: RouteOpen, until: 30 * time.Minute, pre: true},
		{at: 30 * time.Minute, op: opState, route: RouteProbe, until: 30 * time.Minute, pre: true, to: toHalfOpen},
		{at: 30 * time.Minute, on: 1, op: opState, route: RouteOpen, until: 30 * time.Minute, pre: true},
		{at: 30*time.Minute + time.Second, op: opSuccess, to: toClosed},
		{at: 30*time.Minute + time.Second, on: 1, op: opState, route: RouteClosed},
	}},
	{"a probe still above the threshold preempts again", []step{
		{op: opPreempt, reset: 10 * time.Second, to: toOpen},
		{at: 10 * time.Second, op: opState, route: RouteProbe, until: 10 * time.Second, pre: true, to: toHalfOpen},
		{at: 11 * time.Second, on: 1, op: opPreempt, reset: 20 * time.Minute, to: toOpen},
		{at: 11 * time.Second, op: opState, route: RouteOpen, until: 20 * time.Minute, pre: true},
	}},
	{"preempt is capped at MaxOpen", []step{
		{op: opPreempt, reset: 4 * time.Hour, to: toOpen},
		{on: 1, op: opState, route: RouteOpen, until: time.Hour, pre: true},
	}},
	{"the later reset decides the reason", []step{
		{op: opPreempt, reset: 100 * time.Second, to: toOpen},
		{on: 1, op: opRateLimited, reset: 50 * time.Second},
		{op: opState, route: RouteOpen, until: 100 * time.Second, pre: true},
		{on: 1, op: opRateLimited, reset: 200 * time.Second},
		{op: opState, route: RouteOpen, until: 200 * time.Second},
		{op: opPreempt, reset: 150 * time.Second},
		{on: 1, op: opState, route: RouteOpen, until: 200 * time.Second},
	}},
	{"failures reopen without the preemptive reason", []step{
		{op: opPreempt, reset: 10 * time.Second, to: toOpen},
		{at: 10 * time.Second, op: opState, route: RouteProbe, until: 10 * time.Second, pre: true, to: toHalfOpen},
		{at: 11 * time.Second, op: opFailure, to: toOpen},
		{at: 11 * time.Second, on: 1, op: opState, route: RouteOpen, until: 71 * time.Second},
	}},
	{"failure after a forgotten breaker counts as closed", []step{
		{op: opRateLimited, reset: 10 * time.Second, to: toOpen},
		{at: 100 * time.Second, op: opFailure, to: toClosed},
		{at: 100 * time.Second, op: opFailure},
		{at: 100 * time.Second, on: 1, op: opState, route: RouteClosed},
		{at: 101 * time.Second, op: opFailure, to: toOpen},
	}},
}

// transitions sums the transition counters of bs.
func transitions(bs []*Breaker) map[string]float64 {
	out := map[string]float64{}
	for _, b := range bs {
		for k, c := range b.metrics.transitions {
			out[k[0]] += testutil.ToFloat64(c)
		}
	}
	return out
}

func runSteps(t *testing.T, clk *clock, bs []*Breaker, id uuid.UUID, steps []step) {
	t.Helper()
	ctx := context.Background()
	for i, s := range steps {
		clk.Set(t0.Add(s.at))
		b := bs[s.on%len(bs)]
		before := transitions(bs)
		switch s.op {
		case opState:
			d, err := b.State(ctx, id)
			if err != nil {
				t.Fatalf("step %d: State: %v", i, err)
			}
			want := Decision{Route: s.route, Preemptive: s.pre}
			if s.until != 0 {
				want.OpenUntil = t0.Add(s.until)
			}
			if d.Route != want.Route || !d.OpenUntil.Equal(want.OpenUntil) || d.Preemptive != want.Preemptive {
				t.Fatalf("step %d at +%s on %d: State = %+v, want %+v", i, s.at, s.on, d, want)
			}
		case opRateLimited:
			var reset time.Time
			if s.reset != noReset {
				reset = t0.Add(s.reset)
			}
			b.RateLimited(ctx, id, reset)
		case opPreempt:
			var reset time.Time
			if s.reset != noReset {
				reset = t0.Add(s.reset)
			}
			b.Preempt(ctx, id, reset)
		case opFailure:
			b.Failure(ctx, id)
		case opSuccess:
			b.Success(ctx, id)
		case opAdvance:
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		after := transitions(bs)
		for _, to := range []string{toOpen, toHalfOpen, toClosed} {
			want := 0.0
			if to == s.to {
				want = 1
			}
			if got := after[to] - before[to]; got != want {
				t.Fatalf("step %d at +%s (%s on %d): %g transitions to %s, want %g", i, s.at, s.op, s.on, got, to, want)
			}
		}
	}
}

// TestScenariosRedis runs every scenario on two replicas sharing one Redis.
func TestScenariosRedis(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			client, prefix := testenv.Redis(t)
			clk := &clock{t: t0}
			bs := []*Breaker{newBreaker(t, client, prefix, clk, nil), newBreaker(t, client, prefix, clk, nil)}
			runSteps(t, clk, bs, uuid.New(), sc.steps)
			for _, b := range bs {
				for op, c := range b.metrics.fallbacks {
					if n := testutil.ToFloat64(c); n != 0 {
						t.Errorf("%g redis fallbacks for %s", n, op)
					}
				}
				if n := testutil.ToFloat64(b.metrics.transitions[[2]string{toOpen, storeLocal}]); n != 0 {
					t.Errorf("%g local transitions", n)
				}
			}
		})
	}
}

// TestScenariosLocal runs every scenario on one replica whose Redis is
// unreachable: the local breaker must behave exactly like the scripts.
func TestScenariosLocal(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			clk := &clock{t: t0}
			b := newBreaker(t, deadRedis(t), "x:", clk, nil)
			runSteps(t, clk, []*Breaker{b}, uuid.New(), sc.steps)
			var fallbacks float64
			for _, c := range b.metrics.fallbacks {
				fallbacks += testutil.ToFloat64(c)
			}
			if fallbacks != float64(len(sc.steps)) {
				t.Errorf("%g redis fallbacks, want %d", fallbacks, len(sc.steps))
			}
			for k, c := range b.metrics.transitions {
				if n := testutil.ToFloat64(c); k[1] == storeRedis && n != 0 {
					t.Errorf("%g redis transitions to %s", n, k[0])
				}
			}
		})
	}
}

func TestKeysAndTTLs(t *testing.T) {
	client, prefix := testenv.Redis(t)
	clk := &clock{t: t0}
	b := newBreaker(t, client, prefix, clk, nil)
	id := uuid.MustParse("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")
	ctx := context.Background()
	base := prefix + "breaker:{" + id.String() + "}:"

	b.Failure(ctx, id)
	if got := client.ZCard(ctx, base+"fail").Val(); got != 1 {
		t.Fatalf("fail zset has %d members, want 1", got)
	}
	if ttl := client.PTTL(ctx, base+"fail").Val(); ttl <= 59*time.Second || ttl > 60*time.Second {
		t.Fatalf("fail ttl = %s, want 60 s", ttl)
	}

	b.RateLimited(ctx, id, t0.Add(120*time.Second))
	h := client.HGetAll(ctx, base+"open").Val()
	want := map[string]string{
		"until": "1772366520000", // t0+120 s
		"exp":   "1772366580000", // +60 s
		"why":   "r",             // a rate limit
	}
	if len(h) != 3 || h["until"] != want["until"] || h["exp"] != want["exp"] || h["why"] != want["why"] {
		t.Fatalf("open hash = %v, want %v", h, want)
	}
	if ttl := client.PTTL(ctx, base+"open").Val(); ttl <= 179*time.Second || ttl > 180*time.Second {
		t.Fatalf("open ttl = %s, want 180 s", ttl)
	}
	if n := client.Exists(ctx, base+"fail", base+"probe").Val(); n != 0 {
		t.Fatalf("%d of fail/probe exist after opening, want 0", n)
	}

	clk.Set(t0.Add(120 * time.Second))
	if d, _ := b.State(ctx, id); d.Route != RouteProbe {
		t.Fatalf("State = %v, want probe", d.Route)
	}
	if v := client.Get(ctx, base+"probe").Val(); v != "1772366550000" { // +30 s
		t.Fatalf("probe lease = %q", v)
	}
	if ttl := client.PTTL(ctx, base+"probe").Val(); ttl <= 29*time.Second || ttl > 30*time.Second {
		t.Fatalf("probe ttl = %s, want 30 s", ttl)
	}
	if v := client.HGet(ctx, base+"open", "exp").Val(); v != "1772366610000" { // lease + 60 s
		t.Fatalf("exp after the lease = %q", v)
	}

	b.Success(ctx, id)
	if n := client.Exists(ctx, base+"open", base+"fail", base+"probe").Val(); n != 0 {
		t.Fatalf("%d keys left after the probe succeeded, want 0", n)
	}
}

// TestOneProbe: after open-until, exactly one of many concurrent State
// calls across two replicas gets the probe.
func TestOneProbe(t *testing.T) {
	client, prefix := testenv.Redis(t)
	clk := &clock{t: t0}
	bs := []*Breaker{newBreaker(t, client, prefix, clk, nil), newBreaker(t, client, prefix, clk, nil)}
	id := uuid.New()
	ctx := context.Background()
	bs[0].RateLimited(ctx, id, t0.Add(time.Minute))
	clk.Set(t0.Add(time.Minute))

	const n = 64
	var wg sync.WaitGroup
	routes := make([]Route, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			d, err := bs[i%2].State(ctx, id)
			if err != nil {
				t.Error(err)
			}
			routes[i] = d.Route
		})
	}
	close(start)
	wg.Wait()
	count := map[Route]int{}
	for _, r := range routes {
		count[r]++
	}
	if count[RouteProbe] != 1 || count[RouteOpen] != n-1 {
		t.Fatalf("routes = %v, want 1 probe and %d open", count, n-1)
	}
	var probes float64
	for _, b := range bs {
		probes += testutil.ToFloat64(b.metrics.decisions[RouteProbe])
	}
	if probes != 1 {
		t.Fatalf("probe decisions = %g, want 1", probes)
	}
}

// TestOneProbeLocal: the same for the local breaker.
func TestOneProbeLocal(t *testing.T) {
	clk := &clock{t: t0}
	b := newBreaker(t, deadRedis(t), "x:", clk, nil)
	id := uuid.New()
	ctx := context.Background()
	b.RateLimited(ctx, id, t0.Add(time.Minute))
	clk.Set(t0.Add(time.Minute))
	var wg sync.WaitGroup
	var mu sync.Mutex
	count := map[Route]int{}
	for range 32 {
		wg.Go(func() {
			d, _ := b.State(ctx, id)
			mu.Lock()
			count[d.Route]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if count[RouteProbe] != 1 || count[RouteOpen] != 31 {
		t.Fatalf("routes = %v, want 1 probe and 31 open", count)
	}
}

// logBuffer is a concurrency-safe slog destination.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// TestRedisDown: a replica whose Redis dies keeps a working breaker of its
// own, logs the switch once each way, counts every fallback, and uses the
// shared state again when Redis is back.
func TestRedisDown(t *testing.T) {
	srv := procs.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	clk := &clock{t: t0}
	logs := &logBuffer{}
	b := newBreaker(t, client, "p:", clk, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.RedisBreakerFailures = 1000 // keep asking Redis: this test restarts it
	})
	other := newBreaker(t, client, "p:", clk, nil)
	id := uuid.New()
	ctx := context.Background()

	// Works on Redis; NOSCRIPT after a flush falls back to EVAL.
	if err := client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b.Failure(ctx, id)
	if got := client.ZCard(ctx, "p:breaker:{"+id.String()+"}:fail").Val(); got != 1 {
		t.Fatalf("fail zset has %d members after a script flush, want 1", got)
	}

	srv.Kill(t)
	b.RateLimited(ctx, id, t0.Add(120*time.Second))
	for range 3 {
		d, err := b.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Decision{Route: RouteOpen, OpenUntil: t0.Add(120 * time.Second)}); d != want {
			t.Fatalf("State while Redis is down = %+v, want %+v", d, want)
		}
	}
	clk.Set(t0.Add(120 * time.Second))
	if d, _ := b.State(ctx, id); d.Route != RouteProbe {
		t.Fatalf("State after the reset = %v, want probe", d.Route)
	}
	b.Success(ctx, id)
	if d, _ := b.State(ctx, id); d.Route != RouteClosed {
		t.Fatalf("State after the probe succeeded = %v, want closed", d.Route)
	}
	wantFallbacks := map[string]float64{opState: 5, opRateLimited: 1, opFailure: 0, opSuccess: 1}
	for op, want := range wantFallbacks {
		if got := testutil.ToFloat64(b.metrics.fallbacks[op]); got != want {
			t.Errorf("fallbacks{op=%s} = %g, want %g", op, got, want)
		}
	}
	wantTransitions := map[[2]string]float64{
		{toOpen, storeLocal}: 1, {toHalfOpen, storeLocal}: 1, {toClosed, storeLocal}: 1,
		{toOpen, storeRedis}: 0, {toHalfOpen, storeRedis}: 0, {toClosed, storeRedis}: 0,
	}
	for k, want := range wantTransitions {
		if got := testutil.ToFloat64(b.metrics.transitions[k]); got != want {
			t.Errorf("transitions{to=%s,store=%s} = %g, want %g", k[0], k[1], got, want)
		}
	}
	if n := logs.count("redis unavailable"); n != 1 {
		t.Errorf("logged the switch to the local breaker %d times, want 1:\n%s", n, logs.buf.String())
	}

	// Redis is back (empty: no persistence): the shared state rules again.
	srv.Start(t)
	other.RateLimited(ctx, id, t0.Add(200*time.Second))
	if d, err := b.State(ctx, id); err != nil || d.Route != RouteOpen || !d.OpenUntil.Equal(t0.Add(200*time.Second)) {
		t.Fatalf("State after Redis came back = %+v, %v; want open until +200 s", d, err)
	}
	if n := logs.count("redis reachable again"); n != 1 {
		t.Errorf("logged the switch back %d times, want 1", n)
	}
	if got := testutil.ToFloat64(b.metrics.fallbacks[opState]); got != 5 {
		t.Errorf("fallbacks{op=state} = %g after Redis came back, want 5", got)
	}
}

// TestRedisBreakerTrips: consecutive Redis failures open the gobreaker, so
// further calls do not wait for Redis; they are still answered and counted.
func TestRedisBreakerTrips(t *testing.T) {
	clk := &clock{t: t0}
	b := newBreaker(t, deadRedis(t), "x:", clk, nil)
	id := uuid.New()
	for range 3 {
		b.Failure(context.Background(), id)
	}
	if s := b.RedisBreakerState(); s != gobreaker.StateOpen {
		t.Fatalf("redis breaker = %s, want open", s)
	}
	if d, err := b.State(context.Background(), id); err != nil || d != (Decision{Route: RouteOpen, OpenUntil: t0.Add(time.Minute)}) {
		t.Fatalf("State = %+v, %v; want open until +60 s", d, err)
	}
	if got := testutil.ToFloat64(b.metrics.fallbacks[opFailure]); got != 3 {
		t.Fatalf("fallbacks{op=failure} = %g, want 3", got)
	}
}

// TestCanceledContext: State reports the caller's cancellation (with a
// usable Decision) and does not count it as a Redis failure; outcomes are
// recorded regardless of cancellation.
func TestCanceledContext(t *testing.T) {
	client, prefix := testenv.Redis(t)
	clk := &clock{t: t0}
	b := newBreaker(t, client, prefix, clk, nil)
	id := uuid.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.RateLimited(ctx, id, t0.Add(time.Minute))
	d, err := b.State(ctx, id)
	if err == nil || d.Route != RouteClosed {
		t.Fatalf("State(canceled) = %+v, %v; want closed (local) and an error", d, err)
	}
	for op, c := range b.metrics.fallbacks {
		if n := testutil.ToFloat64(c); n != 0 {
			t.Errorf("%g fallbacks for %s", n, op)
		}
	}
	if d, err := b.State(context.Background(), id); err != nil || d.Route != RouteOpen {
		t.Fatalf("State = %+v, %v; want open (recorded despite the canceled context)", d, err)
	}
}

func TestLocalEviction(t *testing.T) {
	clk := &clock{t: t0}
	b := newBreaker(t, deadRedis(t), "x:", clk, func(c *Config) { c.MaxLocalEntries = 2 })
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	b.RateLimited(ctx, ids[0], t0.Add(time.Minute))
	b.RateLimited(ctx, ids[1], t0.Add(2*time.Minute))
	b.RateLimited(ctx, ids[2], t0.Add(3*time.Minute))
	if n := len(b.local.entries); n != 2 {
		t.Fatalf("%d local entries, want 2", n)
	}
	if d, _ := b.State(ctx, ids[0]); d.Route != RouteClosed {
		t.Fatalf("evicted key: %v, want closed (the soonest open-until is evicted)", d.Route)
	}
	if d, _ := b.State(ctx, ids[2]); d.Route != RouteOpen {
		t.Fatalf("newest key: %v, want open", d.Route)
	}
	// Entries that hold nothing are dropped.
	b.Success(ctx, uuid.New())
	b.State(ctx, uuid.New())
	if n := len(b.local.entries); n != 2 {
		t.Fatalf("%d local entries, want 2", n)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Redis succeeded")
	}
	reg := prometheus.NewRegistry()
	client, _ := testenv.Redis(t)
	if _, err := New(Config{Redis: client, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Redis: client, Registerer: reg}); err == nil {
		t.Fatal("registering the metrics twice succeeded")
	}
	b, _ := New(Config{Redis: client})
	c := b.cfg
	if c.DefaultOpen != time.Minute || c.MaxOpen != time.Hour || c.FailureThreshold != 3 || c.FailureWindow != time.Minute ||
		c.ProbeLease != 30*time.Second || c.RedisTimeout != 100*time.Millisecond {
		t.Fatalf("defaults = %+v", c)
	}
	for r, want := range map[Route]string{RouteClosed: "closed", RouteOpen: "open", RouteProbe: "probe", 7: "Route(7)"} {
		if r.String() != want {
			t.Errorf("Route(%d).String() = %q, want %q", int(r), r.String(), want)
		}
	}
}

// TestReport: a Plan 429 with retry-after 120 reported through one replica
// opens the breaker until now+120 s for the other; a 529 counts as a
// failure; the probe's 200 closes it.
func TestReport(t *testing.T) {
	client, prefix := testenv.Redis(t)
	clk := &clock{t: t0}
	a, b := newBreaker(t, client, prefix, clk, nil), newBreaker(t, client, prefix, clk, nil)
	id := uuid.New()
	ctx := context.Background()
	if o := a.Report(ctx, id, 529, headerFunc()); o != OutcomeFailure {
		t.Fatalf("Report(529) = %s", o)
	}
	if o := a.Report(ctx, id, 429, headerFunc("retry-after", "120")); o != OutcomeRateLimited {
		t.Fatalf("Report(429) = %s", o)
	}
	if d, _ := b.State(ctx, id); d != (Decision{Route: RouteOpen, OpenUntil: t0.Add(120 * time.Second)}) {
		t.Fatalf("State = %+v, want open until +120 s", d)
	}
	clk.Set(t0.Add(120 * time.Second))
	if d, _ := b.State(ctx, id); d.Route != RouteProbe {
		t.Fatalf("State = %+v, want probe", d)
	}
	if o := b.Report(ctx, id, 200, headerFunc("anthropic-ratelimit-unified-status", "allowed")); o != OutcomeSuccess {
		t.Fatalf("Report(200) = %s", o)
	}
	if d, _ := a.State(ctx, id); d.Route != RouteClosed {
		t.Fatalf("State = %+v, want closed", d)
	}
}

// BenchmarkPlanRequest is what the breaker adds to one plan_first request
// that may fall back: State before routing and Report of Plan's 200, each
// one script on Redis.
func BenchmarkPlanRequest(b *testing.B) {
	client, prefix := testenv.Redis(b)
	br, err := New(Config{Redis: client, Prefix: prefix, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	id := uuid.New()
	get := func(string) string { return "" }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := br.State(ctx, id); err != nil {
			b.Fatal(err)
		}
		br.Report(ctx, id, 200, get)
	}
}
