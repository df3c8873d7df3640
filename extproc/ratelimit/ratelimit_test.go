package ratelimit_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
)

type env struct {
	rdb    *redis.Client
	prefix string
	lim    *ratelimit.Limiter
	reg    *prometheus.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry()}
	e.rdb, e.prefix = testenv.Redis(t)
	var err error
	e.lim, err = ratelimit.New(ratelimit.Config{Redis: e.rdb, Prefix: e.prefix, Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func scope(kind string, rpm, itpm, otpm int64) accesskey.RateLimit {
	return accesskey.RateLimit{Scope: kind, ID: uuid.New(), RequestsPerMinute: rpm, InputTokensPerMinute: itpm, OutputTokensPerMinute: otpm}
}

// redisNow is Redis's clock in µs, which the scripts use.
func (e *env) redisNow(t *testing.T) int64 {
	t.Helper()
	tm, err := e.rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMicro()
}

// setBucket stores a bucket's instant (µs) directly, to build edge states.
func (e *env) setBucket(t *testing.T, s accesskey.RateLimit, field string, tat int64) {
	t.Helper()
	key := e.prefix + "ratelimit:" + s.Scope + ":" + s.ID.String()
	if err := e.rdb.HSet(context.Background(), key, field, strconv.FormatInt(tat, 10)).Err(); err != nil {
		t.Fatal(err)
	}
}

func (e *env) check(t *testing.T, scopes ...accesskey.RateLimit) ratelimit.Decision {
	t.Helper()
	d, err := e.lim.Check(context.Background(), scopes)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRequestsBurstThenRefill: a 5 RPM limit serves 5 requests at once,
// refuses the 6th with retry-after 12 s (one request refills every 12 s),
// and the headers count down.
func TestRequestsBurstThenRefill(t *testing.T) {
	e := newEnv(t)
	s := scope(accesskey.ScopeKey, 5, 0, 0)
	for i := range 5 {
		d := e.check(t, s)
		if !d.Allowed {
			t.Fatalf("request %d refused: %+v", i+1, d)
		}
		if got, want := d.Most[ratelimit.Requests].Remaining, int64(4-i); got != want {
			t.Errorf("request %d: remaining %d; want %d", i+1, got, want)
		}
	}
	d := e.check(t, s)
	if d.Allowed {
		t.Fatal("6th request in a minute allowed")
	}
	if d.Scope != accesskey.ScopeKey || d.Limited != ratelimit.Requests {
		t.Errorf("refused by %q/%d; want key/requests", d.Scope, d.Limited)
	}
	// The first refill is 12 s after the first request; the 6th came a few
	// milliseconds later.
	if d.RetryAfter <= 11*time.Second || d.RetryAfter > 12*time.Second {
		t.Errorf("retry after %s; want just under 12s", d.RetryAfter)
	}
	if got := ratelimit.RetryAfterSeconds(d.RetryAfter); got != 12 {
		t.Errorf("retry-after %d; want 12", got)
	}
	if reset := d.Most[ratelimit.Requests].Reset.Sub(d.Now); reset <= 59*time.Second || reset > time.Minute {
		t.Errorf("full again in %s; want just under 1m", reset)
	}
	// The hash expires when the bucket is full again.
	ttl, err := e.rdb.PTTL(context.Background(), e.prefix+"ratelimit:key:"+s.ID.String()).Result()
	if err != nil || ttl <= 59*time.Second || ttl > time.Minute+time.Second {
		t.Errorf("bucket TTL %s (%v); want about 1m", ttl, err)
	}
	if got := testutil.ToFloat64(mustCounter(t, e.reg, "ccproxy_extproc_ratelimit_checks_total", "limited")); got != 1 {
		t.Errorf("limited checks %v; want 1", got)
	}
}

// TestWindowEdges builds bucket states just either side of each boundary
// (50 ms margins around Redis's clock) and checks the decision.
func TestWindowEdges(t *testing.T) {
	const margin = 50_000 // µs
	const window = 60_000_000
	for _, tc := range []struct {
		name    string
		s       accesskey.RateLimit
		field   string
		offset  int64 // the bucket's instant minus now, µs
		allowed bool
		limited ratelimit.Dimension
	}{
		// 60 RPM: one request per second; the bucket has room for one more
		// request while its instant is at most 59 s ahead.
		{"requests: room for exactly one", scope(accesskey.ScopeKey, 60, 0, 0), "r", window - 1_000_000 - margin, true, 0},
		{"requests: one refill short", scope(accesskey.ScopeKey, 60, 0, 0), "r", window - 1_000_000 + margin, false, ratelimit.Requests},
		{"requests: full bucket in the past", scope(accesskey.ScopeKey, 60, 0, 0), "r", -window, true, 0},
		{"input tokens: a few left", scope(accesskey.ScopeUser, 0, 1000, 0), "i", window - margin, true, 0},
		{"input tokens: used up", scope(accesskey.ScopeUser, 0, 1000, 0), "i", window + margin, false, ratelimit.InputTokens},
		{"input tokens: in debt", scope(accesskey.ScopeUser, 0, 1000, 0), "i", 3 * window, false, ratelimit.InputTokens},
		{"output tokens: used up", scope(accesskey.ScopeKey, 0, 0, 500), "o", window + margin, false, ratelimit.OutputTokens},
		{"output tokens: a few left", scope(accesskey.ScopeKey, 0, 0, 500), "o", window - margin, true, 0},
		{"unlimited dimension ignored", scope(accesskey.ScopeKey, 0, 0, 500), "i", 10 * window, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setBucket(t, tc.s, tc.field, e.redisNow(t)+tc.offset)
			d := e.check(t, tc.s)
			if d.Allowed != tc.allowed {
				t.Fatalf("allowed = %v; want %v (%+v)", d.Allowed, tc.allowed, d)
			}
			if !tc.allowed {
				if d.Limited != tc.limited || d.Scope != tc.s.Scope {
					t.Errorf("limited by %q/%d; want %q/%d", d.Scope, d.Limited, tc.s.Scope, tc.limited)
				}
				// Room comes back when the instant is less than a window
				// ahead (tokens) or a request's worth less (requests).
				want := time.Duration(tc.offset-window) * time.Microsecond
				if tc.limited == ratelimit.Requests {
					want += time.Second
				}
				if d.RetryAfter <= 0 || d.RetryAfter > want+time.Millisecond || d.RetryAfter < want-time.Second {
					t.Errorf("retry after %s; want about %s", d.RetryAfter, want)
				}
			}
		})
	}
}

// TestRefillAfterRetryAfter: waiting the announced time is enough.
func TestRefillAfterRetryAfter(t *testing.T) {
	e := newEnv(t)
	s := scope(accesskey.ScopeKey, 600, 0, 0) // one per 100 ms
	e.setBucket(t, s, "r", e.redisNow(t)+60_000_000)
	d := e.check(t, s)
	if d.Allowed {
		t.Fatal("full bucket allowed a request")
	}
	time.Sleep(d.RetryAfter)
	if d := e.check(t, s); !d.Allowed {
		t.Fatalf("refused after waiting the retry-after of %s: %+v", d.RetryAfter, d)
	}
}

// TestScopesAllOrNothing: a request is served only if every scope has room,
// and a refused request takes nothing from the scopes that had room.
func TestScopesAllOrNothing(t *testing.T) {
	e := newEnv(t)
	key := scope(accesskey.ScopeKey, 10, 0, 0)
	user := scope(accesskey.ScopeUser, 3, 0, 0)
	for i := range 3 {
		if d := e.check(t, key, user); !d.Allowed {
			t.Fatalf("request %d refused", i+1)
		}
	}
	for range 4 {
		d := e.check(t, key, user)
		if d.Allowed || d.Scope != accesskey.ScopeUser {
			t.Fatalf("4th request: allowed=%v scope=%q; want refused by user", d.Allowed, d.Scope)
		}
		// The headers report the most restrictive scope: the user's.
		if b := d.Most[ratelimit.Requests]; b.Limit != 3 || b.Remaining != 0 {
			t.Errorf("most restrictive bucket %+v; want limit 3, 0 remaining", b)
		}
	}
	// The key bucket was charged for the 3 served requests only.
	d := e.check(t, key)
	if !d.Allowed || d.Most[ratelimit.Requests].Remaining != 6 {
		t.Errorf("key alone: %+v; want allowed with 6 remaining", d)
	}
}

// TestTokensCharged: tokens are counted after the response; a bucket
// overdrawn by a large answer refuses until it has refilled.
func TestTokensCharged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	key := scope(accesskey.ScopeKey, 0, 1000, 100)
	user := scope(accesskey.ScopeUser, 0, 0, 0)
	if d := e.check(t, key, user); !d.Allowed || d.Most[ratelimit.InputTokens].Remaining != 1000 {
		t.Fatalf("fresh buckets: %+v", d)
	}
	e.lim.Charge([]accesskey.RateLimit{key, user}, 600, 50)
	e.lim.Flush(ctx)
	d := e.check(t, key, user)
	if !d.Allowed {
		t.Fatalf("refused with 400 input and 50 output tokens left: %+v", d)
	}
	if in := d.Most[ratelimit.InputTokens]; in.Remaining < 400 || in.Remaining > 401 {
		t.Errorf("input remaining %d; want 400", in.Remaining)
	}
	if out := d.Most[ratelimit.OutputTokens]; out.Remaining < 50 || out.Remaining > 51 {
		t.Errorf("output remaining %d; want 50", out.Remaining)
	}
	// 900 more input tokens: 500 over; 30 s to refill above zero.
	e.lim.Charge([]accesskey.RateLimit{key, user}, 900, 0)
	e.lim.Flush(ctx)
	d = e.check(t, key, user)
	if d.Allowed || d.Limited != ratelimit.InputTokens || d.Scope != accesskey.ScopeKey {
		t.Fatalf("overdrawn input bucket: %+v", d)
	}
	if d.RetryAfter <= 29*time.Second || d.RetryAfter > 30*time.Second {
		t.Errorf("retry after %s; want just under 30s", d.RetryAfter)
	}
	if d.Most[ratelimit.InputTokens].Remaining != 0 {
		t.Errorf("remaining %d; want 0", d.Most[ratelimit.InputTokens].Remaining)
	}
}

// TestConcurrentChecks: many goroutines (as many replicas would) never get
// more requests than the limit plus what refilled meanwhile.
func TestConcurrentChecks(t *testing.T) {
	e := newEnv(t)
	const limit = 30 // one refill per 2 s
	key := scope(accesskey.ScopeKey, 100, 0, 0)
	user := scope(accesskey.ScopeUser, limit, 0, 0)
	var allowed, refused atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			for range 5 {
				d, err := e.lim.Check(context.Background(), []accesskey.RateLimit{key, user})
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	refills := int64(time.Since(start) / (2 * time.Second))
	if a := allowed.Load(); a < limit || a > limit+refills {
		t.Errorf("allowed %d of 200; want %d (+%d refilled)", a, limit, refills)
	}
	if allowed.Load()+refused.Load() != 200 {
		t.Errorf("%d answers; want 200", allowed.Load()+refused.Load())
	}
}

// TestFailOpen: with Redis down, Check fails fast (after the breaker
// opens) and counts each failure; once Redis is back, limits apply again.
func TestFailOpen(t *testing.T) {
	rd := procs.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	lim, err := ratelimit.New(ratelimit.Config{Redis: rdb, Prefix: "t:", Registerer: reg, BreakerOpenDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := []accesskey.RateLimit{scope(accesskey.ScopeKey, 1, 0, 0)}
	if d, err := lim.Check(ctx, s); err != nil || !d.Allowed {
		t.Fatalf("first check: %+v %v", d, err)
	}
	rd.Stop(t)
	for i := range 5 {
		if _, err := lim.Check(ctx, s); err == nil {
			t.Fatalf("check %d with Redis down: no error", i+1)
		}
	}
	lim.Charge(s, 0, 0) // nothing to count: not queued
	lim.Charge([]accesskey.RateLimit{scope(accesskey.ScopeKey, 0, 10, 0)}, 5, 0)
	lim.Flush(ctx)
	errs := func(op string) float64 {
		return testutil.ToFloat64(mustCounter(t, reg, "ccproxy_extproc_ratelimit_errors_total", op))
	}
	if got := errs("check"); got != 5 {
		t.Errorf("check errors %v; want 5", got)
	}
	if got := errs("charge"); got != 1 {
		t.Errorf("charge errors %v; want 1", got)
	}
	rd.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := lim.Check(ctx, s)
		if err == nil {
			// The restarted Redis (no persistence) starts empty: the
			// limit applies again from a full bucket.
			if !d.Allowed {
				t.Fatalf("after restart: %+v", d)
			}
			if d2, err := lim.Check(ctx, s); err != nil || d2.Allowed {
				t.Fatalf("second request at 1 RPM after restart: %+v %v; want refused", d2, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing 10s after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChargeQueueFull: a charge that finds the queue full is dropped and
// counted, never blocks.
func TestChargeQueueFull(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	reg := prometheus.NewRegistry()
	lim, err := ratelimit.New(ratelimit.Config{Redis: rdb, Prefix: prefix, Registerer: reg, ChargeQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := []accesskey.RateLimit{scope(accesskey.ScopeKey, 0, 0, 100)}
	for range 5 {
		lim.Charge(s, 0, 10)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "ccproxy_extproc_ratelimit_errors_total", "charge_dropped")); got != 3 {
		t.Errorf("dropped %v; want 3", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := lim.Run(ctx); err != nil { // drains the 2 queued, then returns
		t.Fatal(err)
	}
	d, err := lim.Check(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Most[ratelimit.OutputTokens].Remaining; r < 80 || r > 81 {
		t.Errorf("output remaining %d; want 80 (2 charges of 10 applied)", r)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return nil
}
