// Package budget checks users' monthly Bedrock budgets in extproc
// (docs/design.md, "Usage, cost and budgets") and the budgets that act
// (docs/budgets.md): CheckBudgets reads every budget of a request in one
// Redis MGET and returns the strongest action in effect.
//
// A user's spend in the current billing month (the calendar month in the
// billing time zone) lives in Redis as the counter
// <prefix>spend:<user uuid>:<YYYY-MM>, a decimal string of USD that the
// admin service keeps equal to the exact Bedrock spend in Postgres: the
// usage ingester SETs it after every commit, and the admin KeyService's
// MonthlySpend RPC recomputes and SETs it when it is missing. extproc has no
// database access, so this package only reads.
//
// # Lookup
//
// Checker.Check answers from, in order:
//
//  1. its in-process cache, while the value is younger than Config.CacheTTL
//     (default 1 s);
//  2. a Redis GET of the counter (timeout 250 ms);
//  3. when the counter is missing (a Redis flush, a new month, a user
//     without Bedrock traffic yet), or Redis is unreachable, the
//     KeyService's MonthlySpend RPC (timeout 2 s), which also repopulates
//     the counter for every instance;
//  4. when neither answers, the newest value it saw for this user and month
//     if it is younger than Config.StaleTTL (default 5 min), marked
//     Status.Stale.
//
// Concurrent checks of one user share one lookup, and Redis and the
// KeyService each sit behind a gobreaker circuit breaker, so a dead
// dependency costs one fast error, not a timeout per request.
//
// # Availability policy
//
// When no value younger than StaleTTL is available, Check returns an error
// and the caller FAILS OPEN: the request is served as if the user were
// under budget, the failure is logged and counted
// (ccproxy_extproc_budget_check_errors_total here, and the router's
// ccproxy_extproc_budget_unchecked_total). A budget is a spending control,
// not an access control; it is only skipped when Redis and the admin
// service are both unreachable and this instance saw no value for the user
// in the last StaleTTL, and refusing every Bedrock request then would turn a
// metering outage into a gateway outage. The overspend it allows is bounded
// by the outage. A recent value
// that says over budget is still honoured (Status.Stale with Status.Over).
//
// # Decision
//
// A user is over budget when Spent >= Budget, compared exactly as decimals:
// spending exactly the budget uses it up, and a budget of 0 allows no
// Bedrock spend at all. Spend is only known after a request completes, so
// the request that crosses the budget is served and the next one refused.
package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/extproc/internal/depbreaker"
	"github.com/ccproxy/ccproxy/internal/billing"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// Defaults for zero Config fields.
const (
	DefaultCacheTTL         = time.Second
	DefaultStaleTTL         = 5 * time.Minute
	DefaultRedisTimeout     = 250 * time.Millisecond
	DefaultRPCTimeout       = 2 * time.Second
	DefaultBreakerFailures  = 3
	DefaultBreakerOpenDelay = 5 * time.Second
	DefaultMaxEntries       = 100000
)

// Sources of a Status, as the checks metric labels them.
const (
	SourceCache = "cache"
	SourceRedis = "redis"
	SourceRPC   = "rpc"
	SourceStale = "stale"
)

// Config configures a Checker.
type Config struct {
	// Redis holds the spend counters. Required.
	Redis redis.UniversalClient
	// Prefix starts every Redis key (CCPROXY_REDIS_PREFIX).
	Prefix string
	// KeyService recomputes a missing counter. Required.
	KeyService keyservicev1.KeyServiceClient
	// Location is the billing time zone (CCPROXY_BILLING_TIMEZONE); nil
	// means UTC.
	Location *time.Location
	// CacheTTL is how long a value is used without asking Redis (default
	// DefaultCacheTTL).
	CacheTTL time.Duration
	// StaleTTL bounds the age of a value used while Redis and the
	// KeyService are both unreachable (default DefaultStaleTTL).
	StaleTTL time.Duration
	// RedisTimeout and RPCTimeout bound one call each.
	RedisTimeout time.Duration
	RPCTimeout   time.Duration
	// BreakerFailures consecutive failures open a breaker, which then fails
	// calls at once for BreakerOpenDelay before letting one through.
	BreakerFailures  uint32
	BreakerOpenDelay time.Duration
	// MaxEntries bounds the in-process cache (default DefaultMaxEntries).
	MaxEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives dependency failures; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Status is the outcome of a budget check.
type Status struct {
	// Spent is the user's Bedrock spend in the current billing month, USD.
	Spent decimal.Decimal
	// Budget is the budget checked against, USD.
	Budget decimal.Decimal
	// Over reports Spent >= Budget.
	Over bool
	// ResetAt is the start of the next billing month, when spend restarts
	// from zero.
	ResetAt time.Time
	// Stale reports that Redis and the KeyService were unreachable and
	// Spent is the last value seen (no older than Config.StaleTTL).
	Stale bool
}

// Checker checks monthly budgets; see the package doc. It is safe for
// concurrent use.
type Checker struct {
	cfg     Config
	redisCB *gobreaker.CircuitBreaker[string]
	rpcCB   *gobreaker.CircuitBreaker[*keyservicev1.MonthlySpendResponse]
	// The budgets' MGET and BudgetSpend RPC have breakers of their own
	// (gobreaker is typed by result).
	mgetCB      *gobreaker.CircuitBreaker[[]any]
	budgetRPCCB *gobreaker.CircuitBreaker[*keyservicev1.BudgetSpendResponse]
	group       singleflight.Group
	metrics     metrics

	mu          sync.Mutex
	cache       map[cacheKey]cached
	budgetCache map[string]cached // counter key → spend
}

type cacheKey struct {
	user  uuid.UUID
	month string
}

type cached struct {
	spent     decimal.Decimal
	fetchedAt time.Time
}

// lookup is the shared result of one Redis/KeyService lookup.
type lookup struct {
	spent  decimal.Decimal
	source string
}

type metrics struct {
	checks     *prometheus.CounterVec
	depErrors  *prometheus.CounterVec
	checkErrs  prometheus.Counter
	over       prometheus.Counter
	bySource   map[string]prometheus.Counter
	redisErrs  prometheus.Counter
	rpcErrs    prometheus.Counter
	collectors []prometheus.Collector
}

func newMetrics() metrics {
	m := metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_budget_checks_total",
			Help: "Budget checks answered, by where the spend came from (cache, redis, rpc, stale).",
		}, []string{"source"}),
		depErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_budget_dependency_errors_total",
			Help: "Failed spend lookups, by dependency (redis, rpc).",
		}, []string{"dependency"}),
		checkErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_extproc_budget_check_errors_total",
			Help: "Budget checks with no spend value to answer from (the router fails open).",
		}),
		over: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_extproc_budget_over_total",
			Help: "Budget checks that found the user at or over budget.",
		}),
		bySource: map[string]prometheus.Counter{},
	}
	for _, s := range []string{SourceCache, SourceRedis, SourceRPC, SourceStale} {
		m.bySource[s] = m.checks.WithLabelValues(s)
	}
	m.redisErrs = m.depErrors.WithLabelValues("redis")
	m.rpcErrs = m.depErrors.WithLabelValues("rpc")
	m.collectors = []prometheus.Collector{m.checks, m.depErrors, m.checkErrs, m.over}
	return m
}

// New returns a Checker, registering its metrics on cfg.Registerer.
func New(cfg Config) (*Checker, error) {
	if cfg.Redis == nil || cfg.KeyService == nil {
		return nil, errors.New("budget: Redis and KeyService are required")
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.StaleTTL <= 0 {
		cfg.StaleTTL = DefaultStaleTTL
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = DefaultRedisTimeout
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = DefaultRPCTimeout
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBreakerFailures
	}
	if cfg.BreakerOpenDelay <= 0 {
		cfg.BreakerOpenDelay = DefaultBreakerOpenDelay
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Checker{cfg: cfg, metrics: newMetrics(), cache: make(map[cacheKey]cached), budgetCache: make(map[string]cached)}
	if cfg.Registerer != nil {
		for _, col := range c.metrics.collectors {
			if err := cfg.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("budget: register metrics: %w", err)
			}
		}
	}
	c.redisCB = gobreaker.NewCircuitBreaker[string](c.breakerSettings("budget-redis", func(err error) bool {
		return err == nil || errors.Is(err, redis.Nil)
	}))
	c.rpcCB = gobreaker.NewCircuitBreaker[*keyservicev1.MonthlySpendResponse](c.breakerSettings("budget-rpc", func(err error) bool {
		return err == nil || status.Code(err) == codes.InvalidArgument
	}))
	c.mgetCB = gobreaker.NewCircuitBreaker[[]any](c.breakerSettings("budget-mget", mgetOK))
	c.budgetRPCCB = gobreaker.NewCircuitBreaker[*keyservicev1.BudgetSpendResponse](c.breakerSettings("budget-spend-rpc", func(err error) bool {
		return err == nil || status.Code(err) == codes.InvalidArgument
	}))
	return c, nil
}

func (c *Checker) breakerSettings(name string, ok func(error) bool) gobreaker.Settings {
	return depbreaker.Settings(name, c.cfg.BreakerFailures, c.cfg.BreakerOpenDelay, c.cfg.Logger, ok)
}

// BreakerStates reports the Redis and KeyService breakers' states.
func (c *Checker) BreakerStates() (redisState, rpcState gobreaker.State) {
	return c.redisCB.State(), c.rpcCB.State()
}

// Check reports userID's spend in the current billing month against budget,
// following the package doc. It returns an error only when no value younger
// than Config.StaleTTL is available; the caller then fails open.
func (c *Checker) Check(ctx context.Context, userID uuid.UUID, budget decimal.Decimal) (Status, error) {
	now := c.cfg.Now()
	m := billing.MonthOf(now, c.cfg.Location)
	month := m.Key
	key := cacheKey{userID, month}
	st := Status{Budget: budget, ResetAt: m.End}

	if e, ok := c.cached(key); ok && now.Sub(e.fetchedAt) < c.cfg.CacheTTL {
		return c.decide(st, e.spent, SourceCache), nil
	}

	ch := c.group.DoChan(userID.String()+":"+month, func() (any, error) {
		// Shared by every waiting caller: none of their cancellations may
		// fail the others, and the timeouts below bound it.
		return c.lookup(context.WithoutCancel(ctx), userID, month)
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return Status{}, fmt.Errorf("budget: %w", ctx.Err())
	}
	if r.Err == nil {
		l := r.Val.(lookup)
		return c.decide(st, l.spent, l.source), nil
	}
	if e, ok := c.cached(key); ok && c.cfg.Now().Sub(e.fetchedAt) < c.cfg.StaleTTL {
		st.Stale = true
		return c.decide(st, e.spent, SourceStale), nil
	}
	c.metrics.checkErrs.Inc()
	return Status{}, fmt.Errorf("budget: no spend for user %s in %s: %w", userID, month, r.Err)
}

func (c *Checker) decide(st Status, spent decimal.Decimal, source string) Status {
	st.Spent = spent
	st.Over = spent.GreaterThanOrEqual(st.Budget)
	c.metrics.bySource[source].Inc()
	if st.Over {
		c.metrics.over.Inc()
	}
	return st
}

// lookup asks Redis, then the KeyService, and caches what it finds.
func (c *Checker) lookup(ctx context.Context, userID uuid.UUID, month string) (lookup, error) {
	rkey := billing.SpendKey(c.cfg.Prefix, userID, month)
	v, redisErr := c.redisCB.Execute(func() (string, error) {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
		defer cancel()
		return c.cfg.Redis.Get(ctx, rkey).Result()
	})
	if redisErr == nil {
		spent, err := billing.ParseSpend(v)
		if err == nil {
			c.store(cacheKey{userID, month}, spent)
			return lookup{spent, SourceRedis}, nil
		}
		// Unreadable: the RPC recomputes and overwrites it.
		c.cfg.Logger.ErrorContext(ctx, "unreadable spend counter in redis; asking the key service", "key", rkey, "err", err)
	} else if !errors.Is(redisErr, redis.Nil) {
		c.metrics.redisErrs.Inc()
		c.cfg.Logger.WarnContext(ctx, "spend counter unavailable; asking the key service", "err", redisErr)
	}

	resp, err := c.rpcCB.Execute(func() (*keyservicev1.MonthlySpendResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
		defer cancel()
		return c.cfg.KeyService.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: userID.String(), Month: month})
	})
	if err != nil {
		c.metrics.rpcErrs.Inc()
		c.cfg.Logger.WarnContext(ctx, "monthly spend lookup failed", "user_id", userID, "month", month, "err", err)
		if redisErr == nil || errors.Is(redisErr, redis.Nil) {
			return lookup{}, fmt.Errorf("monthly spend rpc: %w", err)
		}
		return lookup{}, fmt.Errorf("redis: %w; monthly spend rpc: %w", redisErr, err)
	}
	spent, err := billing.ParseSpend(resp.GetSpendUsd())
	if err != nil {
		c.metrics.rpcErrs.Inc()
		return lookup{}, fmt.Errorf("budget: bad answer from the key service: %w", err)
	}
	c.store(cacheKey{userID, month}, spent)
	return lookup{spent, SourceRPC}, nil
}

func (c *Checker) cached(k cacheKey) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cache[k]
	return e, ok
}

func (c *Checker) store(k cacheKey, spent decimal.Decimal) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cache[k]; !ok && len(c.cache) >= c.cfg.MaxEntries {
		c.evictLocked(now)
	}
	c.cache[k] = cached{spent: spent, fetchedAt: now}
}

// evictLocked drops an expired value, else the oldest of a sample. Sampling
// (Go's map iteration order) keeps eviction O(1); values only outlive
// CacheTTL to cover outages, so exact LRU order is not worth a list.
func (c *Checker) evictLocked(now time.Time) {
	var oldest cacheKey
	var oldestAt time.Time
	n := 0
	for k, e := range c.cache {
		if now.Sub(e.fetchedAt) >= c.cfg.StaleTTL {
			delete(c.cache, k)
			return
		}
		if n == 0 || e.fetchedAt.Before(oldestAt) {
			oldest, oldestAt = k, e.fetchedAt
		}
		if n++; n >= 16 {
			break
		}
	}
	delete(c.cache, oldest)
}
