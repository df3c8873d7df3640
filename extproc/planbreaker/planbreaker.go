// Package planbreaker is extproc's per-access-key circuit breaker for the Plan
// upstream (docs/design.md, "The circuit breaker"). Its state lives in Redis so that every extproc replica, and both gRPC
// streams of one request (the router's and the upstream processor's), agree.
//
// # Use
//
// The router asks State before routing a plan_first request:
//
//   - RouteClosed: use Plan normally (Envoy falls back to Bedrock);
//   - RouteOpen: go straight to Bedrock (fallback reason breaker_open);
//   - RouteProbe: this caller holds the single half-open probe lease and
//     sends the request to Plan.
//
// Whoever sees a Plan attempt's outcome reports it (the upstream processor in
// its response-headers phase; the router, from its response attributes, for
// connect failures, resets and timeouts, which have no response headers):
//
//   - RateLimited: a Plan 429, or a Plan response announcing its limit is
//     exhausted (LimitExhausted), with the reset it announced
//     (ResetFromHeaders): the breaker opens at once until then;
//   - Failure: a 500/502/503/504/529, a connect failure, a reset or a
//     timeout: counted in a sliding window, FailureThreshold of them within
//     FailureWindow open the breaker for DefaultOpen;
//   - Success: any other Plan answer (a 2xx, and other 4xx, which are the
//     client's problem);
//   - Preempt: a successful Plan answer whose subscription utilization
//     (anthropic-ratelimit-unified-5h/7d-utilization) reached the key's
//     pre-emptive failover threshold: the breaker opens until the window's
//     announced reset, like RateLimited, but its decisions carry
//     Preemptive so the router names the reason "preemptive". The
//     threshold rides along with the request (it is the user's setting);
//     the check costs nothing below it and nothing at all when it is off.
//
// Report does all three from a response's status and headers (Classify);
// the caller only reports Failure itself for attempts without a response.
//
// # States
//
// A breaker is closed, open (now < open-until) or half-open (open-until has
// passed). While half-open, State hands exactly one caller across all
// replicas a probe lease (ProbeLease long) and answers RouteOpen to everyone
// else. The probe's outcome decides: Success closes the breaker (clearing
// open-until, the failure window and the lease), Failure reopens it for
// DefaultOpen, RateLimited reopens it until the announced reset. A probe that
// never reports (its replica died, the client went away) loses its lease when
// the lease expires, and the next State call gets the probe. Outcomes carry no
// token: a Success while half-open closes the breaker whoever reports it (only
// the probe, or a request admitted before the breaker opened, can reach Plan
// then, and either proves Plan answers); a Success while open changes nothing
// (an older request admitted before the 429). A Failure while open changes
// nothing either; a RateLimited while open moves open-until only later. A
// half-open breaker that nobody probes for DefaultOpen (after open-until or
// after the last lease) is forgotten, that is closed, so idle keys cost
// nothing.
//
// # Redis
//
// Each access key has up to three keys, all with a TTL and all in one Redis
// Cluster hash slot (the key id is a hash tag); their names come from
// internal/breakerkeys, which the admin service reads them with:
//
//	<prefix>breaker:{<keyID>}:open   hash  until = open-until (unix ms),
//	                                       exp = when a half-open breaker is forgotten (unix ms),
//	                                       why = what opened it: p (pre-emptive), r (rate limit), f (failures)
//	<prefix>breaker:{<keyID>}:fail   zset  one member per failure, score = its time (unix ms)
//	<prefix>breaker:{<keyID>}:probe  string  the probe lease's expiry (unix ms)
//
// Every operation is one Lua script (redis.NewScript: EVALSHA, falling back
// to EVAL when the script is not cached) that reads and transitions these
// keys atomically: stateScript (decide, take the probe lease: "SET NX" with
// an explicit expiry), openScript (open-until, set only if later),
// failureScript (sliding window; open at the threshold; reopen on a failed
// probe) and successScript (close after the probe). The scripts get the
// current time from the caller (Config.Now) and compare it with the stored
// timestamps instead of trusting TTLs to have fired; the TTLs, computed from
// the same clock, only reclaim memory. The replicas' clocks must therefore
// agree to well under a second (NTP does); a replica whose clock is ahead
// takes the probe early, nothing worse.
//
// # When Redis is unreachable
//
// Every Redis call has a timeout (RedisTimeout, default 100 ms) and goes
// through a sony/gobreaker circuit breaker, so a dead Redis costs one fast
// error, not a timeout per request. When a call fails, this replica answers
// from its own in-process breaker with the same semantics, per access key
// (docs/design.md, "The circuit breaker"); the switch
// is logged once in each direction and every fallback is counted
// (ccproxy_extproc_breaker_redis_fallbacks_total). The local breaker is a
// small state machine of its own, not a gobreaker.CircuitBreaker per key:
// gobreaker's open period is a fixed Settings.Timeout chosen when the breaker
// is built, so it cannot stay open "until the reset the 429 announced", and
// its Execute(func) / Allow() API wants the outcome from the caller that was
// admitted, while here the outcome arrives on another gRPC stream. What the
// local breaker learns during an outage is not copied to Redis afterwards:
// the next Plan 429 reopens the shared breaker.
//
// # Metrics
//
//   - ccproxy_extproc_breaker_decisions_total{route}: State answers (closed,
//     open, probe);
//   - ccproxy_extproc_breaker_transitions_total{to,store}: transitions to
//     open, half_open (a probe lease granted) and closed, by where the state
//     lives (redis, local); each transition is counted once across the fleet;
//   - ccproxy_extproc_breaker_redis_fallbacks_total{op}: operations answered
//     by the local breaker because Redis failed.
package planbreaker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Defaults for zero Config fields.
const (
	DefaultDefaultOpen           = 60 * time.Second
	DefaultMaxOpen               = time.Hour
	DefaultFailureThreshold      = 3
	DefaultFailureWindow         = 60 * time.Second
	DefaultProbeLease            = 30 * time.Second
	DefaultRedisTimeout          = 100 * time.Millisecond
	DefaultRedisBreakerFailures  = 3
	DefaultRedisBreakerOpenDelay = 5 * time.Second
	DefaultMaxLocalEntries       = 100000
)

// MinOpen is the shortest time RateLimited opens a breaker for.
const MinOpen = time.Second

// Config configures a Breaker.
type Config struct {
	// Redis holds the shared state. Required.
	Redis redis.UniversalClient
	// Prefix starts every Redis key (CCPROXY_REDIS_PREFIX).
	Prefix string
	// DefaultOpen is how long RateLimited without a reset, FailureThreshold
	// failures, or a failed probe open the breaker (default 60 s). It is
	// also how long a half-open breaker nobody probes is kept.
	DefaultOpen time.Duration
	// MaxOpen caps the reset a response announces (default 1 h).
	MaxOpen time.Duration
	// FailureThreshold failures within FailureWindow open the breaker
	// (defaults 3 and 60 s).
	FailureThreshold int
	FailureWindow    time.Duration
	// ProbeLease is how long the half-open probe may take to report before
	// another caller gets the probe (default 30 s).
	ProbeLease time.Duration
	// RedisTimeout bounds one Redis call (default 100 ms).
	RedisTimeout time.Duration
	// RedisBreakerFailures consecutive Redis failures make this replica use
	// its local breaker without asking Redis for RedisBreakerOpenDelay
	// (defaults 3 and 5 s).
	RedisBreakerFailures  uint32
	RedisBreakerOpenDelay time.Duration
	// MaxLocalEntries bounds the access keys the local breaker remembers
	// (default 100000).
	MaxLocalEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives transitions and Redis failures; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Route is what State tells the router to do. The zero Route is RouteClosed.
type Route int

// Routes.
const (
	// RouteClosed: use Plan normally, with Envoy's fallback to Bedrock.
	RouteClosed Route = iota
	// RouteOpen: go straight to Bedrock.
	RouteOpen
	// RouteProbe: send this request to Plan as the single half-open probe,
	// and report its outcome.
	RouteProbe
)

// String returns the metric label of r: closed, open or probe.
func (r Route) String() string {
	switch r {
	case RouteClosed:
		return "closed"
	case RouteOpen:
		return "open"
	case RouteProbe:
		return "probe"
	}
	return fmt.Sprintf("Route(%d)", int(r))
}

// Decision is State's answer.
type Decision struct {
	Route Route
	// OpenUntil is the breaker's open-until (zero when closed). It is in the
	// past when Route is RouteProbe, and when Route is RouteOpen because
	// another caller holds the probe lease.
	OpenUntil time.Time
	// Preemptive reports that pre-emptive failover opened the breaker
	// (Preempt): the subscription is close to its limit, Plan did not
	// refuse.
	Preemptive bool
}

// Transition targets (label "to" of the transitions metric).
const (
	toNone     = ""
	toOpen     = "open"
	toHalfOpen = "half_open"
	toClosed   = "closed"
)

// Stores (label "store" of the transitions metric).
const (
	storeRedis = "redis"
	storeLocal = "local"
)

// Operations (label "op" of the fallbacks metric).
const (
	opState       = "state"
	opRateLimited = "rate_limited"
	opFailure     = "failure"
	opSuccess     = "success"
	opPreempt     = "preempt"
)

// backend is one place the state can live: Redis or this process. Every
// method is one atomic transition at now and returns the transition it made
// (toNone for none).
type backend interface {
	state(ctx context.Context, id uuid.UUID, now time.Time) (Decision, string, error)
	open(ctx context.Context, id uuid.UUID, now, until time.Time, preemptive bool) (string, error)
	failure(ctx context.Context, id uuid.UUID, now time.Time) (string, error)
	success(ctx context.Context, id uuid.UUID, now time.Time) (string, error)
}

// Breaker is the per-access-key circuit breaker; see the package doc. It is
// safe for concurrent use.
type Breaker struct {
	cfg     Config
	redis   *redisBackend
	local   *localBackend
	redisCB *gobreaker.CircuitBreaker[any]
	metrics metrics
	// degraded reports that the last Redis call failed, so the switch to
	// and from the local breaker is logged once each way.
	degraded atomic.Bool
}

type metrics struct {
	decisions   [3]prometheus.Counter
	transitions map[[2]string]prometheus.Counter
	fallbacks   map[string]prometheus.Counter
	collectors  []prometheus.Collector
}

func newMetrics() metrics {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_breaker_decisions_total",
		Help: "Plan circuit breaker decisions before routing, by route (closed, open, probe).",
	}, []string{"route"})
	transitions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_breaker_transitions_total",
		Help: "Plan circuit breaker state transitions, by target state (open, half_open, closed) and store (redis, local).",
	}, []string{"to", "store"})
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccproxy_extproc_breaker_redis_fallbacks_total",
		Help: "Plan circuit breaker operations answered by the per-replica breaker because Redis failed, by operation.",
	}, []string{"op"})
	m := metrics{
		transitions: map[[2]string]prometheus.Counter{},
		fallbacks:   map[string]prometheus.Counter{},
		collectors:  []prometheus.Collector{decisions, transitions, fallbacks},
	}
	for _, r := range []Route{RouteClosed, RouteOpen, RouteProbe} {
		m.decisions[r] = decisions.WithLabelValues(r.String())
	}
	for _, to := range []string{toOpen, toHalfOpen, toClosed} {
		for _, s := range []string{storeRedis, storeLocal} {
			m.transitions[[2]string{to, s}] = transitions.WithLabelValues(to, s)
		}
	}
	for _, op := range []string{opState, opRateLimited, opFailure, opSuccess, opPreempt} {
		m.fallbacks[op] = fallbacks.WithLabelValues(op)
	}
	return m
}

// New returns a Breaker, registering its metrics on cfg.Registerer.
func New(cfg Config) (*Breaker, error) {
	if cfg.Redis == nil {
		return nil, errors.New("planbreaker: Redis is required")
	}
	if cfg.DefaultOpen <= 0 {
		cfg.DefaultOpen = DefaultDefaultOpen
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = DefaultMaxOpen
	}
	cfg.MaxOpen = max(cfg.MaxOpen, MinOpen)
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = DefaultFailureWindow
	}
	if cfg.ProbeLease <= 0 {
		cfg.ProbeLease = DefaultProbeLease
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = DefaultRedisTimeout
	}
	if cfg.RedisBreakerFailures == 0 {
		cfg.RedisBreakerFailures = DefaultRedisBreakerFailures
	}
	if cfg.RedisBreakerOpenDelay <= 0 {
		cfg.RedisBreakerOpenDelay = DefaultRedisBreakerOpenDelay
	}
	if cfg.MaxLocalEntries <= 0 {
		cfg.MaxLocalEntries = DefaultMaxLocalEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Breaker{
		cfg:     cfg,
		redis:   newRedisBackend(cfg, instanceID()),
		local:   newLocalBackend(cfg),
		metrics: newMetrics(),
	}
	if cfg.Registerer != nil {
		for _, col := range b.metrics.collectors {
			if err := cfg.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("planbreaker: register metrics: %w", err)
			}
		}
	}
	b.redisCB = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        "breaker-redis",
		Timeout:     cfg.RedisBreakerOpenDelay,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.RedisBreakerFailures },
		// The caller giving up says nothing about Redis.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			cfg.Logger.Warn("circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
		},
	})
	return b, nil
}

// RedisBreakerState reports the state of the gobreaker guarding Redis calls.
func (b *Breaker) RedisBreakerState() gobreaker.State { return b.redisCB.State() }

// State decides how to route the next Plan request of access key keyID (see
// Route). It always returns a usable Decision: when Redis fails it answers
// from the local breaker. The error is non-nil only when ctx ended first
// (the Decision is then the local breaker's).
func (b *Breaker) State(ctx context.Context, keyID uuid.UUID) (Decision, error) {
	now := b.cfg.Now()
	var d Decision
	var to string
	err := b.withRedis(ctx, func(ctx context.Context) error {
		var err error
		d, to, err = b.redis.state(ctx, keyID, now)
		return err
	})
	store := storeRedis
	if err != nil {
		store = storeLocal
		d, to, _ = b.local.state(ctx, keyID, now)
		b.fellBack(ctx, opState, err)
	}
	b.transitioned(keyID, to, store, d.OpenUntil)
	b.metrics.decisions[d.Route].Inc()
	if err != nil && ctx.Err() != nil {
		return d, fmt.Errorf("planbreaker: %w", ctx.Err())
	}
	return d, nil
}

// RateLimited records a Plan 429, or a Plan response announcing its limit
// is exhausted: the breaker opens at once until resetAt (from
// ResetFromHeaders), clamped to [now+MinOpen, now+MaxOpen]; a zero resetAt
// means now+DefaultOpen. An open breaker only ever opens for longer. It ends
// a probe. ctx's cancellation is ignored (the outcome is recorded even when
// the stream ends); RedisTimeout bounds the call.
func (b *Breaker) RateLimited(ctx context.Context, keyID uuid.UUID, resetAt time.Time) {
	now := b.cfg.Now()
	until := b.clampReset(now, resetAt)
	b.record(ctx, keyID, opRateLimited, until, func(ctx context.Context, be backend) (string, error) {
		return be.open(ctx, keyID, now, until, false)
	})
}

// Preempt records a Plan answer that was a success but announced a
// subscription utilization at or above the key's pre-emptive failover
// threshold (Preempt in headers.go): the breaker opens until resetAt (the
// window's announced reset), clamped like RateLimited, and its decisions
// say Preemptive, so that the requests routed to Bedrock meanwhile carry
// the fallback reason preemptive. At the reset the usual half-open probe
// asks Plan again: a reading still at or above the threshold reopens it,
// a lower one closes it. Cancellation as for RateLimited.
func (b *Breaker) Preempt(ctx context.Context, keyID uuid.UUID, resetAt time.Time) {
	now := b.cfg.Now()
	until := b.clampReset(now, resetAt)
	b.record(ctx, keyID, opPreempt, until, func(ctx context.Context, be backend) (string, error) {
		return be.open(ctx, keyID, now, until, true)
	})
}

func (b *Breaker) clampReset(now, resetAt time.Time) time.Time {
	if resetAt.IsZero() {
		return now.Add(b.cfg.DefaultOpen)
	}
	if lo := now.Add(MinOpen); resetAt.Before(lo) {
		return lo
	}
	if hi := now.Add(b.cfg.MaxOpen); resetAt.After(hi) {
		return hi
	}
	return resetAt
}

// Failure records a Plan 500, 502, 503, 504 or 529, a connect failure, a
// reset or a timeout: FailureThreshold of them within FailureWindow open
// the breaker for DefaultOpen, and one while half-open (a failed probe)
// reopens it at once. Cancellation as for RateLimited.
func (b *Breaker) Failure(ctx context.Context, keyID uuid.UUID) {
	now := b.cfg.Now()
	b.record(ctx, keyID, opFailure, now.Add(b.cfg.DefaultOpen), func(ctx context.Context, be backend) (string, error) {
		return be.failure(ctx, keyID, now)
	})
}

// Success records a Plan answer that is neither a failure nor a rate limit:
// while half-open (the probe succeeded) it closes the breaker, clearing
// open-until, the failure window and the probe lease; otherwise it changes
// nothing. Cancellation as for RateLimited.
func (b *Breaker) Success(ctx context.Context, keyID uuid.UUID) {
	b.record(ctx, keyID, opSuccess, time.Time{}, func(ctx context.Context, be backend) (string, error) {
		return be.success(ctx, keyID, b.cfg.Now())
	})
}

// Report records a Plan attempt's response: Classify(status, get), then
// RateLimited (with ResetFromHeaders), Failure or Success. It returns the
// outcome, e.g. for a fallback reason. Cancellation as for RateLimited.
func (b *Breaker) Report(ctx context.Context, keyID uuid.UUID, status int, get func(name string) string) Outcome {
	o := Classify(status, get)
	switch o {
	case OutcomeRateLimited:
		b.RateLimited(ctx, keyID, ResetFromHeaders(get, b.cfg.Now()))
	case OutcomeFailure:
		b.Failure(ctx, keyID)
	default:
		b.Success(ctx, keyID)
	}
	return o
}

// record runs one outcome transition on Redis, else locally.
func (b *Breaker) record(ctx context.Context, keyID uuid.UUID, op string, until time.Time, f func(context.Context, backend) (string, error)) {
	ctx = context.WithoutCancel(ctx)
	var to string
	err := b.withRedis(ctx, func(ctx context.Context) error {
		var err error
		to, err = f(ctx, b.redis)
		return err
	})
	store := storeRedis
	if err != nil {
		store = storeLocal
		to, _ = f(ctx, b.local)
		b.fellBack(ctx, op, err)
	}
	b.transitioned(keyID, to, store, until)
}

// withRedis runs f through the Redis gobreaker with RedisTimeout.
func (b *Breaker) withRedis(ctx context.Context, f func(context.Context) error) error {
	_, err := b.redisCB.Execute(func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, b.cfg.RedisTimeout)
		defer cancel()
		return nil, f(ctx)
	})
	if err == nil && b.degraded.CompareAndSwap(true, false) {
		b.cfg.Logger.Info("plan circuit breaker: redis reachable again; using the shared breaker")
	}
	return err
}

func (b *Breaker) fellBack(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return // the caller gave up; Redis may be fine
	}
	b.metrics.fallbacks[op].Inc()
	if b.degraded.CompareAndSwap(false, true) {
		b.cfg.Logger.WarnContext(ctx, "plan circuit breaker: redis unavailable; using this replica's breaker", "err", err)
	}
}

func (b *Breaker) transitioned(keyID uuid.UUID, to, store string, until time.Time) {
	if to == toNone {
		return
	}
	b.metrics.transitions[[2]string{to, store}].Inc()
	attrs := []any{"key_id", keyID, "to", to, "store", store}
	if to == toOpen && !until.IsZero() {
		attrs = append(attrs, "open_until", until.UTC().Format(time.RFC3339))
	}
	b.cfg.Logger.Info("plan circuit breaker state changed", attrs...)
}

// instanceID distinguishes this process's failure-window members from other
// replicas'.
func instanceID() string {
	var buf [6]byte
	_, _ = rand.Read(buf[:])
	return hex.EncodeToString(buf[:])
}

// Peek reports the key's breaker without changing it: no probe lease is
// taken and nothing is forgotten, so it is for showing the state (the
// developer's GET /ak/<key>/me), never for routing. A half-open breaker is
// reported closed (the next request goes to Plan, as the probe). One
// HMGET; when Redis fails, the local breaker's view.
func (b *Breaker) Peek(ctx context.Context, keyID uuid.UUID) Decision {
	now := b.cfg.Now()
	var vals []any
	err := b.withRedis(ctx, func(ctx context.Context) error {
		var err error
		vals, err = b.cfg.Redis.HMGet(ctx, b.redis.keys(keyID)[0], "until", "why").Result()
		return err
	})
	if err != nil {
		b.local.mu.Lock()
		defer b.local.mu.Unlock()
		if e, ok := b.local.entries[keyID]; ok && now.Before(e.until) {
			return Decision{Route: RouteOpen, OpenUntil: e.until, Preemptive: e.preemptive}
		}
		return Decision{}
	}
	until, _ := vals[0].(string)
	ms, perr := strconv.ParseInt(until, 10, 64)
	if perr != nil || now.UnixMilli() >= ms {
		return Decision{}
	}
	why, _ := vals[1].(string)
	return Decision{Route: RouteOpen, OpenUntil: time.UnixMilli(ms).UTC(), Preemptive: why == "p"}
}
