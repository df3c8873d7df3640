// Package ratelimit enforces per-minute request and token limits in extproc
// across every replica, with state in Redis (docs/design.md, "Rate limits").
//
// # Algorithm
//
// Every limit is a token bucket that holds one minute's worth of its
// dimension and refills continuously — the model Anthropic's own limits
// follow, so the anthropic-ratelimit-* headers mean what Claude Code
// expects. A bucket is stored as a single number, its theoretical arrival
// time (GCRA): the instant at which it would be full again. With a limit of
// L per minute each unit moves that instant by 60 s / L; the bucket's room
// at time now is (60 s − (tat − now)) × L / 60 s. One Redis hash per scope
// (<prefix>ratelimit:<scope>:<id>) holds the instants of its three buckets
// (fields r, i, o), and expires when all three are full, so idle scopes
// cost no memory.
//
//   - Requests: Check takes one unit from the request bucket of every scope
//     in one Lua script, only if every scope has a unit left; a refused
//     request takes nothing.
//   - Tokens: a response's usage is only known at its end, so Charge adds
//     the input and output tokens to the token buckets then (the bucket may
//     go into debt: one large answer can overdraw it), and Check refuses
//     while a token bucket is empty or overdrawn, until it has refilled
//     above zero.
//
// Time is Redis's (the TIME command inside the script), so replicas with
// skewed clocks share one timeline. The state is exact: there is no
// sampling or local pre-aggregation, and the only inaccuracy is that tokens
// are charged after the response, so requests already in flight when a
// bucket empties are still served.
//
// # Availability policy
//
// A Redis failure (error, timeout, open circuit breaker) FAILS OPEN: Check
// returns an error, the caller serves the request, and the failure is
// counted (ccproxy_extproc_ratelimit_errors_total) and logged at most once
// per LogEvery. A rate limit protects the fleet's shared capacity; refusing
// every request of every limited developer while Redis is down would turn a
// cache outage into a gateway outage. A failed Charge is counted and
// dropped.
//
// Requests of keys with no limits never reach this package: the router
// skips the check, so they cost no Redis round trip.
package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/internal/depbreaker"
)

// Window is the period every limit is expressed in.
const Window = time.Minute

// Defaults for zero Config fields.
const (
	DefaultRedisTimeout     = 250 * time.Millisecond
	DefaultBreakerFailures  = 3
	DefaultBreakerOpenDelay = 5 * time.Second
	DefaultChargeQueue      = 4096
	DefaultLogEvery         = 10 * time.Second
)

//go:embed check.lua
var checkLua string

//go:embed charge.lua
var chargeLua string

// Config configures a Limiter.
type Config struct {
	// Redis holds the buckets. Required.
	Redis redis.UniversalClient
	// Prefix starts every Redis key (CCPROXY_REDIS_PREFIX).
	Prefix string
	// RedisTimeout bounds one script call (default DefaultRedisTimeout).
	RedisTimeout time.Duration
	// BreakerFailures consecutive failures open the circuit breaker, which
	// then fails calls at once for BreakerOpenDelay.
	BreakerFailures  uint32
	BreakerOpenDelay time.Duration
	// ChargeQueue bounds the charges waiting for Run (default
	// DefaultChargeQueue); a charge that finds it full is dropped and
	// counted.
	ChargeQueue int
	// LogEvery is the least time between two logs of Redis failures
	// (default DefaultLogEvery); the ones in between are counted in the
	// next log.
	LogEvery time.Duration
	// Logger receives the failures; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Dimension names what a bucket counts.
type Dimension uint8

// Dimensions of a scope's limits.
const (
	Requests Dimension = iota
	InputTokens
	OutputTokens
	numDimensions
)

// Bucket is the state of one limit after a check.
type Bucket struct {
	// Limit is the limit per minute; 0 means the dimension is unlimited in
	// every scope (the other fields are then zero).
	Limit int64
	// Remaining is what is left now, never negative.
	Remaining int64
	// Reset is when the bucket is full again.
	Reset time.Time
}

// Decision is the outcome of a Check.
type Decision struct {
	// Allowed reports that every scope had room; the request took one unit
	// of each request bucket.
	Allowed bool
	// RetryAfter is, for a refused request, how long until every bucket
	// that refused it has room again.
	RetryAfter time.Duration
	// Scope is the scope ("key", "user", "team") of the bucket that refused
	// the request, or "" when it was allowed.
	Scope string
	// Limited is the dimension that refused the request.
	Limited Dimension
	// Now is Redis's time of the check.
	Now time.Time
	// Most is, per dimension, the most restrictive bucket over all scopes
	// (the least remaining): what the anthropic-ratelimit-* headers report.
	Most [numDimensions]Bucket
}

// Limiter checks and charges rate limits; see the package doc. It is safe
// for concurrent use. Charges are applied by Run.
type Limiter struct {
	cfg     Config
	check   *redis.Script
	charge  *redis.Script
	cb      *gobreaker.CircuitBreaker[[]int64]
	charges chan charge
	metrics metrics
	logMu   sync.Mutex
	lastLog time.Time
	quiet   int // failures not logged since lastLog
}

type charge struct {
	scopes        []accesskey.RateLimit
	input, output int64
}

type metrics struct {
	checks        *prometheus.CounterVec
	allowed       prometheus.Counter
	limited       prometheus.Counter
	errors        *prometheus.CounterVec
	checkErrors   prometheus.Counter
	chargeErrors  prometheus.Counter
	chargeDropped prometheus.Counter
	collectors    []prometheus.Collector
}

func newMetrics() metrics {
	m := metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_ratelimit_checks_total",
			Help: "Rate-limit checks answered by Redis, by result (allowed, limited).",
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_ratelimit_errors_total",
			Help: "Rate-limit Redis calls that failed, by operation: check (the request was served unchecked: fail open), charge (the tokens were not counted), charge_dropped (the charge queue was full).",
		}, []string{"operation"}),
	}
	m.allowed = m.checks.WithLabelValues("allowed")
	m.limited = m.checks.WithLabelValues("limited")
	m.checkErrors = m.errors.WithLabelValues("check")
	m.chargeErrors = m.errors.WithLabelValues("charge")
	m.chargeDropped = m.errors.WithLabelValues("charge_dropped")
	m.collectors = []prometheus.Collector{m.checks, m.errors}
	return m
}

// New returns a Limiter, registering its metrics on cfg.Registerer.
func New(cfg Config) (*Limiter, error) {
	if cfg.Redis == nil {
		return nil, errors.New("ratelimit: Redis is required")
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = DefaultRedisTimeout
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBreakerFailures
	}
	if cfg.BreakerOpenDelay <= 0 {
		cfg.BreakerOpenDelay = DefaultBreakerOpenDelay
	}
	if cfg.ChargeQueue <= 0 {
		cfg.ChargeQueue = DefaultChargeQueue
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = DefaultLogEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{
		cfg:     cfg,
		check:   redis.NewScript(checkLua),
		charge:  redis.NewScript(chargeLua),
		charges: make(chan charge, cfg.ChargeQueue),
		metrics: newMetrics(),
	}
	if cfg.Registerer != nil {
		for _, c := range l.metrics.collectors {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
			}
		}
	}
	l.cb = gobreaker.NewCircuitBreaker[[]int64](depbreaker.Settings("ratelimit-redis",
		cfg.BreakerFailures, cfg.BreakerOpenDelay, cfg.Logger, func(err error) bool { return err == nil }))
	return l, nil
}

// key is the Redis hash of one scope's buckets.
func (l *Limiter) key(s accesskey.RateLimit) string {
	return l.cfg.Prefix + "ratelimit:" + s.Scope + ":" + s.ID.String()
}

// Check takes one request from every scope's request bucket if every bucket
// of every scope has room, and reports the buckets' state. An error means
// Redis could not answer: the caller fails open (the package doc).
func (l *Limiter) Check(ctx context.Context, scopes []accesskey.RateLimit) (Decision, error) {
	keys := make([]string, len(scopes))
	args := make([]any, 0, 3*len(scopes))
	for i, s := range scopes {
		keys[i] = l.key(s)
		args = append(args, s.RequestsPerMinute, s.InputTokensPerMinute, s.OutputTokensPerMinute)
	}
	res, err := l.run(ctx, l.check, keys, args)
	if err != nil {
		l.metrics.checkErrors.Inc()
		l.logFailure(ctx, "check", err)
		return Decision{}, fmt.Errorf("ratelimit: check: %w", err)
	}
	if len(res) != 3+3*len(scopes) {
		l.metrics.checkErrors.Inc()
		return Decision{}, fmt.Errorf("ratelimit: check: %d values from the script for %d scopes", len(res), len(scopes))
	}
	d := decide(scopes, res)
	if d.Allowed {
		l.metrics.allowed.Inc()
	} else {
		l.metrics.limited.Inc()
	}
	return d, nil
}

// decide turns the check script's answer — allowed, retry (µs), now (µs),
// then per scope the three buckets' theoretical arrival times (µs) — into a
// Decision.
func decide(scopes []accesskey.RateLimit, res []int64) Decision {
	now := res[2]
	d := Decision{Allowed: res[0] == 1, RetryAfter: time.Duration(res[1]) * time.Microsecond, Now: time.UnixMicro(now)}
	window := Window.Microseconds()
	first := true
	for i, s := range scopes {
		limits := [numDimensions]int64{s.RequestsPerMinute, s.InputTokensPerMinute, s.OutputTokensPerMinute}
		for dim, limit := range limits {
			if limit <= 0 {
				continue
			}
			tat := max(res[3+3*i+dim], now)
			b := Bucket{Limit: limit, Reset: time.UnixMicro(tat)}
			// Room = (window − (tat − now)) × limit / window, rounded down.
			if used := tat - now; used < window {
				b.Remaining = int64((float64(window-used) * float64(limit)) / float64(window))
			}
			if cur := d.Most[dim]; cur.Limit == 0 || b.Remaining < cur.Remaining ||
				(b.Remaining == cur.Remaining && b.Reset.After(cur.Reset)) {
				d.Most[dim] = b
			}
			if !d.Allowed && first && refuses(Dimension(dim), tat, now, limit, window) {
				d.Scope, d.Limited, first = s.Scope, Dimension(dim), false
			}
		}
	}
	return d
}

// refuses reports whether a bucket in this state refuses a request: a
// request bucket without a whole unit left, a token bucket with none.
func refuses(dim Dimension, tat, now, limit, window int64) bool {
	if dim == Requests {
		return tat-now+window/limit > window
	}
	return tat-now >= window
}

// Charge counts a response's tokens against every scope's token buckets.
// It does not wait: Run applies it. A charge that finds the queue full is
// dropped and counted.
func (l *Limiter) Charge(scopes []accesskey.RateLimit, input, output int64) {
	if input <= 0 && output <= 0 {
		return
	}
	some := false
	for _, s := range scopes {
		if (s.InputTokensPerMinute > 0 && input > 0) || (s.OutputTokensPerMinute > 0 && output > 0) {
			some = true
			break
		}
	}
	if !some {
		return
	}
	select {
	case l.charges <- charge{scopes: scopes, input: input, output: output}:
	default:
		l.metrics.chargeDropped.Inc()
	}
}

// Run applies charges until ctx ends, then applies what is queued and
// returns nil. Each charge is bounded by RedisTimeout, not by ctx: a
// charge taken from the queue is applied even if ctx ends meanwhile.
func (l *Limiter) Run(ctx context.Context) error {
	actx := context.WithoutCancel(ctx)
	for {
		select {
		case c := <-l.charges:
			l.apply(actx, c)
		case <-ctx.Done():
			l.Flush(actx)
			return nil
		}
	}
}

// Flush applies the queued charges now, for tests and callers without Run.
func (l *Limiter) Flush(ctx context.Context) {
	for {
		select {
		case c := <-l.charges:
			l.apply(ctx, c)
		default:
			return
		}
	}
}

func (l *Limiter) apply(ctx context.Context, c charge) {
	keys := make([]string, len(c.scopes))
	args := make([]any, 0, 2+2*len(c.scopes))
	args = append(args, c.input, c.output)
	for i, s := range c.scopes {
		keys[i] = l.key(s)
		args = append(args, s.InputTokensPerMinute, s.OutputTokensPerMinute)
	}
	if _, err := l.run(ctx, l.charge, keys, args); err != nil {
		l.metrics.chargeErrors.Inc()
		l.logFailure(ctx, "charge", err)
	}
}

// run runs a script through the circuit breaker, bounded by RedisTimeout.
func (l *Limiter) run(ctx context.Context, s *redis.Script, keys []string, args []any) ([]int64, error) {
	return l.cb.Execute(func() ([]int64, error) {
		ctx, cancel := context.WithTimeout(ctx, l.cfg.RedisTimeout)
		defer cancel()
		return s.Run(ctx, l.cfg.Redis, keys, args...).Int64Slice()
	})
}

// logFailure logs a Redis failure, at most once per LogEvery: during an
// outage every limited request fails, and one line per request would flood
// the logs.
func (l *Limiter) logFailure(ctx context.Context, op string, err error) {
	now := time.Now()
	l.logMu.Lock()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.cfg.LogEvery {
		l.quiet++
		l.logMu.Unlock()
		return
	}
	suppressed := l.quiet
	l.lastLog, l.quiet = now, 0
	l.logMu.Unlock()
	msg := "rate limits unchecked: redis unavailable, serving requests (fail open)"
	if op == "charge" {
		msg = "rate-limit tokens not counted: redis unavailable"
	}
	l.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, msg, slog.String("operation", op),
		slog.Int("suppressed", suppressed), slog.Any("error", err))
}

// BreakerState reports the Redis circuit breaker's state.
func (l *Limiter) BreakerState() gobreaker.State { return l.cb.State() }

// itoa is strconv.FormatInt for headers.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
