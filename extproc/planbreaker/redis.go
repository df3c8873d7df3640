package planbreaker

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/breakerkeys"
)

// Every script takes KEYS = {open, fail, probe} of one access key and, as
// ARGV[1], the caller's clock in unix ms. prevState (shared by all scripts)
// reads the open hash and classifies the breaker; a half-open breaker past
// its "exp" is forgotten (deleted) and reported closed, with a 1 in the
// third return value so the caller counts the transition. The hash's "why"
// says what opened the breaker: "p" pre-emptive failover (Preempt), "r" a
// rate limit, "f" failures.
const prevState = `
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'until', 'exp', 'why')
local u, e, w = tonumber(h[1]), tonumber(h[2]), h[3]
local prev, forgot = 'closed', 0
if u then
  if e and now >= e then
    redis.call('DEL', KEYS[1], KEYS[3])
    u, forgot = nil, 1
  elseif now < u then
    prev = 'open'
  else
    prev = 'half'
  end
end
local function open_until(nu, idle, why)
  redis.call('HSET', KEYS[1], 'until', nu, 'exp', nu + idle, 'why', why)
  redis.call('PEXPIRE', KEYS[1], math.max(1, nu + idle - now))
  redis.call('DEL', KEYS[2], KEYS[3])
end
`

// stateScript: ARGV = now, lease, idle. Returns {route, until, forgot,
// preemptive} with route 0 closed, 1 open, 2 probe, and preemptive 1 when
// pre-emptive failover opened the breaker. The "why" comes with the read
// the routing decision makes anyway: no extra round trip. Half-open: the first caller whose
// lease check finds no live lease takes it ("SET NX" with an explicit
// expiry, so a lease past its time is free even before its TTL fires) and
// keeps the open hash for idle after the lease.
var stateScript = redis.NewScript(prevState + `
local pre = 0
if w == 'p' then pre = 1 end
if prev == 'closed' then return {0, 0, forgot, 0} end
if prev == 'open' then return {1, u, 0, pre} end
local lease, idle = tonumber(ARGV[2]), tonumber(ARGV[3])
local l = tonumber(redis.call('GET', KEYS[3]))
if l and now < l then return {1, u, 0, pre} end
redis.call('SET', KEYS[3], now + lease, 'PX', lease)
local ne = now + lease + idle
if not e or ne > e then
  redis.call('HSET', KEYS[1], 'exp', ne)
  redis.call('PEXPIRE', KEYS[1], ne - now)
end
return {2, u, 0, pre}
`)

// openScript: ARGV = now, until, idle, why. Opens until ARGV[2] for why
// ("r" or "p"), or keeps a later open-until with its own why; clears the
// failure window and the probe lease. Returns {transitioned, forgot}.
var openScript = redis.NewScript(prevState + `
local nu, why = tonumber(ARGV[2]), ARGV[4]
if prev == 'open' and u > nu then nu, why = u, (w or 'r') end
open_until(nu, tonumber(ARGV[3]), why)
if prev == 'open' then return {0, forgot} end
return {1, forgot}
`)

// failureScript: ARGV = now, window, threshold, open-until, idle, member.
// Open: nothing. Half-open (a failed probe): reopen until ARGV[4]. Closed:
// add the failure to the window (scores in (now-window, now] count), and
// open until ARGV[4] at the threshold. Returns {transitioned, forgot}.
var failureScript = redis.NewScript(prevState + `
if prev == 'open' then return {0, 0} end
local nu, idle = tonumber(ARGV[4]), tonumber(ARGV[5])
if prev == 'half' then
  open_until(nu, idle, 'f')
  return {1, 0}
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[2], window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  open_until(nu, idle, 'f')
  return {1, forgot}
end
return {0, forgot}
`)

// successScript: ARGV = now. Half-open: close (delete all three keys).
// Returns {transitioned, forgot}.
var successScript = redis.NewScript(prevState + `
if prev == 'half' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return {1, 0}
end
return {0, forgot}
`)

// redisBackend is the shared state (see the package doc's key layout).
type redisBackend struct {
	client    redis.UniversalClient
	prefix    string
	idle      int64 // ms
	lease     int64 // ms
	window    int64 // ms
	threshold int
	instance  string
	seq       atomic.Uint64
}

func newRedisBackend(cfg Config, instance string) *redisBackend {
	return &redisBackend{
		client:    cfg.Redis,
		prefix:    cfg.Prefix,
		idle:      cfg.DefaultOpen.Milliseconds(),
		lease:     cfg.ProbeLease.Milliseconds(),
		window:    cfg.FailureWindow.Milliseconds(),
		threshold: cfg.FailureThreshold,
		instance:  instance,
	}
}

// keys returns the open, fail and probe keys of id.
func (r *redisBackend) keys(id uuid.UUID) []string {
	base := breakerkeys.Base(r.prefix, id)
	return []string{base + "open", base + "fail", base + "probe"}
}

func (r *redisBackend) state(ctx context.Context, id uuid.UUID, now time.Time) (Decision, string, error) {
	v, err := r.run(ctx, stateScript, id, 4, now.UnixMilli(), r.lease, r.idle)
	if err != nil {
		return Decision{}, toNone, err
	}
	var d Decision
	switch v[0] {
	case 0:
		d.Route = RouteClosed
	case 1:
		d.Route = RouteOpen
	case 2:
		d.Route = RouteProbe
	default:
		return Decision{}, toNone, fmt.Errorf("planbreaker: state script returned route %d", v[0])
	}
	if d.Route != RouteClosed {
		d.OpenUntil = time.UnixMilli(v[1]).UTC()
		d.Preemptive = v[3] == 1
	}
	switch {
	case d.Route == RouteProbe:
		return d, toHalfOpen, nil
	case v[2] == 1:
		return d, toClosed, nil
	}
	return d, toNone, nil
}

func (r *redisBackend) open(ctx context.Context, id uuid.UUID, now, until time.Time, preemptive bool) (string, error) {
	why := "r"
	if preemptive {
		why = "p"
	}
	v, err := r.run(ctx, openScript, id, 2, now.UnixMilli(), until.UnixMilli(), r.idle, why)
	return transition(v, toOpen), err
}

func (r *redisBackend) failure(ctx context.Context, id uuid.UUID, now time.Time) (string, error) {
	member := r.instance + ":" + strconv.FormatUint(r.seq.Add(1), 36)
	openUntil := now.UnixMilli() + r.idle // DefaultOpen
	v, err := r.run(ctx, failureScript, id, 2, now.UnixMilli(), r.window, r.threshold, openUntil, r.idle, member)
	return transition(v, toOpen), err
}

func (r *redisBackend) success(ctx context.Context, id uuid.UUID, now time.Time) (string, error) {
	v, err := r.run(ctx, successScript, id, 2, now.UnixMilli())
	return transition(v, toClosed), err
}

// transition reads {transitioned, forgot}: the operation's own transition
// wins; a forgotten half-open breaker is a transition to closed.
func transition(v []int64, to string) string {
	switch {
	case len(v) < 2:
		return toNone
	case v[0] == 1:
		return to
	case v[1] == 1:
		return toClosed
	}
	return toNone
}

// run runs s (EVALSHA, EVAL when the script is not cached) and reads an
// array of n integers.
func (r *redisBackend) run(ctx context.Context, s *redis.Script, id uuid.UUID, n int, args ...any) ([]int64, error) {
	res, err := s.Run(ctx, r.client, r.keys(id), args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("planbreaker: redis: %w", err)
	}
	if len(res) != n {
		return nil, fmt.Errorf("planbreaker: script returned %d values, want %d", len(res), n)
	}
	return res, nil
}
