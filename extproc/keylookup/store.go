// Package keylookup owns extproc's production access-key lookup: the chain
// in-process cache → Redis → the admin service's KeyService (gRPC), and its
// invalidation over Redis pub/sub. extproc holds no database credentials;
// the Bedrock credential arrives still encrypted.
//
// # Lookup
//
// NewResolver puts an accesskey.Cache (in-process, TTL about 30 s) in front of a
// Store. A Store looks a key hash up in Redis, where answers are shared by
// every extproc instance, and asks the KeyService on a miss or when the
// Redis answer is older than its fresh TTL (the server's cache_ttl, bounded
// by Config.FreshTTL). Every Redis and KeyService call goes through its own
// gobreaker circuit breaker, so a dead dependency costs one fast error, not
// a timeout per request.
//
// # Availability policy
//
// When the KeyService is unreachable (or its breaker is open), a Store
// answers from the newest copy it can find: the Redis entry even though it is
// no longer fresh, else the Store's own in-process copy. Neither is used once
// it is older than Config.StaleTTL (default 5 min), so a key is served at
// most StaleTTL plus the accesskey.Cache TTL after it was last confirmed. When
// Redis is unreachable the Store skips it and asks the KeyService directly.
// Unknown keys are never served from stale copies. While the admin service is
// down no key can be revoked, so serving stale answers then does not delay a
// revocation; a revocation is pushed to every instance at once (below).
//
// # Invalidation
//
// After an admin change the admin service calls Publisher.PublishKeyChange
// (or PublishPurge), which deletes the shared Redis entries and publishes the
// hashes on a channel. Every extproc instance runs a Subscriber that forgets
// those keys in its accesskey.Cache and Store. Messages sent while a Subscriber is
// disconnected are lost, so it purges everything it feeds whenever it
// (re)subscribes, and, given a Feed, marks it down from the moment its
// connection fails until then: meanwhile the accesskey.Cache
// (CacheConfig.Trusted) and the Store (Config.Feed) trust no cached answer
// for a valid key — every lookup is confirmed by the KeyService, and none
// is served from a stale copy when the KeyService is unreachable too.
package keylookup

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/internal/depbreaker"
	"github.com/ccproxy/ccproxy/internal/keys"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// Defaults for zero Config fields.
const (
	DefaultFreshTTL         = 30 * time.Second
	DefaultStaleTTL         = 5 * time.Minute
	DefaultStaleEntries     = 10000
	DefaultRPCTimeout       = 2 * time.Second
	DefaultRedisTimeout     = 250 * time.Millisecond
	DefaultBreakerFailures  = 3
	DefaultBreakerOpenDelay = 5 * time.Second
)

// Credential is the Bedrock credential in effect for a key.
type Credential = accesskey.BedrockCredential

// Record is everything the KeyService says about a key. (The monthly budget
// travels in KeyRecord.MonthlyBudgetUSD, like the Bedrock credential, so it
// reaches accesskey.Identity; the Redis JSON shape is unchanged.)
type Record struct {
	accesskey.KeyRecord
}

// Config configures a Store.
type Config struct {
	// Client reaches the admin service's KeyService. Required.
	Client keyservicev1.KeyServiceClient
	// Redis holds answers shared between extproc instances. Required.
	Redis redis.UniversalClient
	// MACKey authenticates the answers kept in Redis (at least 32 bytes;
	// keys.Hasher.Derive(CacheMACPurpose) gives every extproc the same
	// one). Required: whoever can write to Redis must not be able to grant
	// access — bring a revoked key back, or move a key to another user.
	MACKey []byte
	// Prefix starts every Redis key and the invalidation channel name, as
	// in Publisher and Subscriber.
	Prefix string
	// FreshTTL bounds how long a Redis answer is used without asking the
	// KeyService (the server's cache_ttl may shorten it).
	FreshTTL time.Duration
	// StaleTTL bounds how old an answer served while the KeyService is
	// unreachable may be (see the package doc).
	StaleTTL time.Duration
	// StaleEntries bounds the in-process copies kept for outages.
	StaleEntries int
	// RPCTimeout and RedisTimeout bound one call each.
	RPCTimeout   time.Duration
	RedisTimeout time.Duration
	// BreakerFailures consecutive failures open a breaker, which then fails
	// calls at once for BreakerOpenDelay before letting one through.
	BreakerFailures  uint32
	BreakerOpenDelay time.Duration
	// Feed, if set, is the invalidation subscription's state: while it is
	// down the Store asks the KeyService for every lookup (no Redis answer
	// counts as fresh) and serves no stale copy when the KeyService is
	// unreachable — a revocation acknowledged meanwhile would go unnoticed.
	Feed *Feed
	// Logger receives dependency failures; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is an accesskey.KeyStore over Redis and the KeyService. It is safe for
// concurrent use.
type Store struct {
	cfg      Config
	redisCB  *gobreaker.CircuitBreaker[[]byte]
	rpcCB    *gobreaker.CircuitBreaker[*keyservicev1.LookupKeyResponse]
	gen      atomic.Uint64 // bumped by invalidations; older lookups are not stored
	mu       sync.Mutex
	stale    map[[keys.HashLen]byte]entry
	keyspace string
}

// entry is a Record with the time it was confirmed by the KeyService; it is
// also the Redis value (JSON).
type entry struct {
	Record     Record    `json:"record"`
	FetchedAt  time.Time `json:"fetched_at"`
	FreshUntil time.Time `json:"fresh_until"`
}

// CacheMACPurpose is the keys.Hasher.Derive purpose of Config.MACKey.
const CacheMACPurpose = "keylookup/redis-entry-mac/v1"

// minMACKeyLen is the shortest MACKey New accepts.
const minMACKeyLen = 32

// New returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil || cfg.Redis == nil {
		return nil, errors.New("keylookup: Config.Client and Config.Redis are required")
	}
	if len(cfg.MACKey) < minMACKeyLen {
		return nil, fmt.Errorf("keylookup: Config.MACKey is %d bytes, want at least %d", len(cfg.MACKey), minMACKeyLen)
	}
	if cfg.FreshTTL <= 0 {
		cfg.FreshTTL = DefaultFreshTTL
	}
	if cfg.StaleTTL <= 0 {
		cfg.StaleTTL = DefaultStaleTTL
	}
	if cfg.StaleEntries <= 0 {
		cfg.StaleEntries = DefaultStaleEntries
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = DefaultRPCTimeout
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{
		cfg:      cfg,
		stale:    make(map[[keys.HashLen]byte]entry),
		keyspace: keyspace(cfg.Prefix),
	}
	s.redisCB = gobreaker.NewCircuitBreaker[[]byte](s.breakerSettings("keyservice-redis", func(err error) bool {
		return err == nil || errors.Is(err, redis.Nil)
	}))
	s.rpcCB = gobreaker.NewCircuitBreaker[*keyservicev1.LookupKeyResponse](s.breakerSettings("keyservice-rpc", func(err error) bool {
		return err == nil || status.Code(err) == codes.NotFound || status.Code(err) == codes.InvalidArgument
	}))
	return s, nil
}

func (s *Store) breakerSettings(name string, ok func(error) bool) gobreaker.Settings {
	return depbreaker.Settings(name, s.cfg.BreakerFailures, s.cfg.BreakerOpenDelay, s.cfg.Logger, ok)
}

// BreakerStates reports the Redis and KeyService breakers' states.
func (s *Store) BreakerStates() (redisState, rpcState gobreaker.State) {
	return s.redisCB.State(), s.rpcCB.State()
}

// LookupKeyByHash implements accesskey.KeyStore.
func (s *Store) LookupKeyByHash(ctx context.Context, hash []byte) (accesskey.KeyRecord, error) {
	rec, err := s.Lookup(ctx, hash)
	return rec.KeyRecord, err
}

// Lookup returns the Record for a key hash, following the package doc's
// policy. An unknown key is an error wrapping accesskey.ErrUnknownKey.
func (s *Store) Lookup(ctx context.Context, hash []byte) (Record, error) {
	if len(hash) != keys.HashLen {
		return Record{}, fmt.Errorf("keylookup: %w", accesskey.ErrUnknownKey)
	}
	h := [keys.HashLen]byte(hash)
	gen := s.gen.Load()
	now := s.cfg.Now()
	trusted := s.cfg.Feed.Live()

	cached, redisErr := s.redisGet(ctx, h)
	if redisErr == nil && trusted && now.Before(cached.FreshUntil) {
		s.remember(h, cached, gen)
		return cached.Record, nil
	}
	if redisErr != nil && !errors.Is(redisErr, redis.Nil) {
		s.cfg.Logger.WarnContext(ctx, "key cache unavailable; asking the key service", "err", redisErr)
	}

	resp, rpcErr := s.rpc(ctx, hash)
	if rpcErr == nil {
		rec, err := recordOf(resp)
		if err != nil {
			return Record{}, err
		}
		fresh := s.cfg.FreshTTL
		if d := resp.GetCacheTtl(); d != nil && d.AsDuration() > 0 {
			fresh = min(fresh, d.AsDuration())
		}
		e := entry{Record: rec, FetchedAt: now, FreshUntil: now.Add(fresh)}
		if redisErr == nil || errors.Is(redisErr, redis.Nil) {
			s.redisSet(ctx, h, e, gen)
		}
		s.remember(h, e, gen)
		return rec, nil
	}
	if status.Code(rpcErr) == codes.NotFound {
		s.forget(h)
		return Record{}, fmt.Errorf("keylookup: %w", accesskey.ErrUnknownKey)
	}
	if ctx.Err() != nil {
		return Record{}, fmt.Errorf("keylookup: look up key: %w", rpcErr)
	}

	if !trusted {
		// Without the invalidation feed a copy may predate an acknowledged
		// revocation: refuse rather than serve it.
		return Record{}, fmt.Errorf("keylookup: look up key (invalidation feed down, no cached answer trusted): %w", rpcErr)
	}
	// The key service is unreachable: serve the newest copy within StaleTTL.
	best, ok := s.local(h)
	if redisErr == nil && (!ok || cached.FetchedAt.After(best.FetchedAt)) {
		best, ok = cached, true
	}
	if ok && now.Sub(best.FetchedAt) < s.cfg.StaleTTL {
		s.cfg.Logger.WarnContext(ctx, "key service unavailable; serving a cached key", "key_prefix", best.Record.Prefix, "age", now.Sub(best.FetchedAt).String(), "err", rpcErr)
		return best.Record, nil
	}
	return Record{}, fmt.Errorf("keylookup: look up key: %w", rpcErr)
}

func (s *Store) rpc(ctx context.Context, hash []byte) (*keyservicev1.LookupKeyResponse, error) {
	return s.rpcCB.Execute(func() (*keyservicev1.LookupKeyResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RPCTimeout)
		defer cancel()
		return s.cfg.Client.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: hash})
	})
}

func (s *Store) redisGet(ctx context.Context, h [keys.HashLen]byte) (entry, error) {
	b, err := s.redisCB.Execute(func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		defer cancel()
		return s.cfg.Redis.Get(ctx, s.redisKey(h)).Bytes()
	})
	if err != nil {
		return entry{}, err
	}
	b, ok := s.open(h, b)
	if !ok {
		// Not written by an extproc holding the server secret: someone with
		// Redis access wrote it, or it predates the MAC. A miss, logged; the
		// KeyService's answer overwrites it.
		s.cfg.Logger.WarnContext(ctx, "cached key entry ignored: its MAC does not verify")
		return entry{}, fmt.Errorf("keylookup: cached key entry not authentic: %w", redis.Nil)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		// An entry we cannot read is a miss; the next answer overwrites it.
		return entry{}, fmt.Errorf("keylookup: decode cached key: %w", errors.Join(err, redis.Nil))
	}
	return e, nil
}

func (s *Store) redisSet(ctx context.Context, h [keys.HashLen]byte, e entry, gen uint64) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = s.seal(h, b)
	if s.gen.Load() != gen {
		return // invalidated while we asked; the answer may predate the change
	}
	_, err = s.redisCB.Execute(func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RedisTimeout)
		defer cancel()
		return nil, s.cfg.Redis.Set(ctx, s.redisKey(h), b, s.cfg.StaleTTL).Err()
	})
	if err != nil {
		s.cfg.Logger.WarnContext(ctx, "storing key in cache failed", "err", err)
	}
}

// seal prefixes value with its MAC: HMAC-SHA256 under MACKey over the
// entry's Redis key and value, so that an entry cannot be moved to another
// key's name either.
func (s *Store) seal(h [keys.HashLen]byte, value []byte) []byte {
	return append(s.mac(h, value), value...)
}

// open returns the value of a sealed entry whose MAC verifies.
func (s *Store) open(h [keys.HashLen]byte, sealed []byte) ([]byte, bool) {
	if len(sealed) < sha256.Size {
		return nil, false
	}
	sum, value := sealed[:sha256.Size], sealed[sha256.Size:]
	return value, hmac.Equal(sum, s.mac(h, value))
}

func (s *Store) mac(h [keys.HashLen]byte, value []byte) []byte {
	m := hmac.New(sha256.New, s.cfg.MACKey)
	m.Write([]byte(s.redisKey(h)))
	m.Write([]byte{0})
	m.Write(value)
	return m.Sum(make([]byte, 0, sha256.Size+len(value)))
}

func (s *Store) redisKey(h [keys.HashLen]byte) string {
	return s.keyspace + hex.EncodeToString(h[:])
}

func (s *Store) remember(h [keys.HashLen]byte, e entry, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen {
		return
	}
	if _, ok := s.stale[h]; !ok && len(s.stale) >= s.cfg.StaleEntries {
		s.evictLocked()
	}
	s.stale[h] = e
}

// evictLocked drops expired copies, else the oldest sampled one. Sampling
// (Go's map iteration order) keeps eviction O(1) amortised; the copies only
// matter during outages, so exact LRU order is not worth a list.
func (s *Store) evictLocked() {
	now := s.cfg.Now()
	var oldest [keys.HashLen]byte
	var oldestAt time.Time
	n := 0
	for h, e := range s.stale {
		if now.Sub(e.FetchedAt) >= s.cfg.StaleTTL {
			delete(s.stale, h)
			return
		}
		if n == 0 || e.FetchedAt.Before(oldestAt) {
			oldest, oldestAt = h, e.FetchedAt
		}
		if n++; n >= 16 {
			break
		}
	}
	delete(s.stale, oldest)
}

func (s *Store) local(h [keys.HashLen]byte) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.stale[h]
	return e, ok
}

func (s *Store) forget(h [keys.HashLen]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.stale, h)
}

// Invalidate forgets the in-process copy of the key with the given hash;
// lookups in flight do not store their answers. (The Subscriber deletes the
// Redis entry.)
func (s *Store) Invalidate(hash []byte) {
	s.gen.Add(1)
	if len(hash) == keys.HashLen {
		s.forget([keys.HashLen]byte(hash))
	}
}

// Purge forgets every in-process copy.
func (s *Store) Purge() {
	s.gen.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.stale)
}

// recordOf converts a KeyService answer, with the same meaning of revoked
// and rotating keys as internal/storebridge: a revoked or rotating key
// without a time is unusable from the epoch on.
func recordOf(r *keyservicev1.LookupKeyResponse) (Record, error) {
	keyID, err := uuid.Parse(r.GetKeyId())
	if err != nil {
		return Record{}, fmt.Errorf("keylookup: bad key_id in answer: %w", err)
	}
	userID, err := uuid.Parse(r.GetUserId())
	if err != nil {
		return Record{}, fmt.Errorf("keylookup: bad user_id in answer: %w", err)
	}
	rec := Record{KeyRecord: accesskey.KeyRecord{
		KeyID:           keyID,
		UserID:          userID,
		Prefix:          r.GetKeyPrefix(),
		RoutingStrategy: r.GetRoutingStrategy(),
		UserDisabled:    r.GetUserDisabled(),
	}}
	epoch := time.Unix(0, 0).UTC()
	switch r.GetStatus() {
	case keyservicev1.KeyStatus_KEY_STATUS_ACTIVE:
	case keyservicev1.KeyStatus_KEY_STATUS_ROTATING:
		rec.ExpiresAt = epoch
		if r.GetExpiresAt() != nil {
			rec.ExpiresAt = r.GetExpiresAt().AsTime()
		}
	case keyservicev1.KeyStatus_KEY_STATUS_REVOKED:
		rec.RevokedAt = epoch
		if r.GetRevokedAt() != nil {
			rec.RevokedAt = r.GetRevokedAt().AsTime()
		}
	default:
		return Record{}, fmt.Errorf("keylookup: unknown key status %v in answer", r.GetStatus())
	}
	if b := r.GetMonthlyBudgetUsd(); b != "" {
		d, err := decimal.NewFromString(b)
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad monthly_budget_usd in answer: %w", err)
		}
		rec.MonthlyBudgetUSD = &d
	}
	if r.PreemptThreshold != nil {
		t := r.GetPreemptThreshold()
		if !(t >= 0 && t <= 1) {
			return Record{}, fmt.Errorf("keylookup: preempt_threshold %v in answer is not in [0, 1]", t)
		}
		rec.PreemptThreshold = &t
	}
	if t := r.GetTeamId(); t != "" {
		id, err := uuid.Parse(t)
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad team_id in answer: %w", err)
		}
		rec.TeamID, rec.TeamName = &id, r.GetTeamName()
	}
	if m := r.GetAllowedModels(); len(m) > 0 {
		rec.AllowedModels = slices.Clone(m)
	}
	if c := r.GetBedrockCredential(); c != nil {
		id, err := uuid.Parse(c.GetCredentialId())
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad credential_id in answer: %w", err)
		}
		rec.Credential = &Credential{ID: id, Kind: c.GetKind(), Region: c.GetRegion(), SecretCiphertext: c.GetSecretCiphertext()}
	}
	for _, l := range r.GetRateLimits() {
		id, err := uuid.Parse(l.GetId())
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad rate limit id in answer: %w", err)
		}
		switch l.GetScope() {
		case accesskey.ScopeKey, accesskey.ScopeUser, accesskey.ScopeTeam:
		default:
			return Record{}, fmt.Errorf("keylookup: unknown rate limit scope %q in answer", l.GetScope())
		}
		rl := accesskey.RateLimit{Scope: l.GetScope(), ID: id,
			RequestsPerMinute: l.GetRequestsPerMinute(), InputTokensPerMinute: l.GetInputTokensPerMinute(),
			OutputTokensPerMinute: l.GetOutputTokensPerMinute()}
		if rl.RequestsPerMinute < 0 || rl.InputTokensPerMinute < 0 || rl.OutputTokensPerMinute < 0 {
			return Record{}, fmt.Errorf("keylookup: negative rate limit in answer")
		}
		if rl.RequestsPerMinute > 0 || rl.InputTokensPerMinute > 0 || rl.OutputTokensPerMinute > 0 {
			rec.RateLimits = append(rec.RateLimits, rl)
		}
	}
	for _, b := range r.GetBudgets() {
		id, err := uuid.Parse(b.GetSubjectId())
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad budget subject_id in answer: %w", err)
		}
		amount, err := decimal.NewFromString(b.GetAmountUsd())
		if err != nil {
			return Record{}, fmt.Errorf("keylookup: bad budget amount_usd in answer: %w", err)
		}
		rec.Budgets = append(rec.Budgets, accesskey.Budget{ID: b.GetId(), Scope: b.GetScope(), SubjectID: id,
			Window: b.GetWindow(), Metric: b.GetMetric(), AmountUSD: amount, Action: b.GetAction(), Downgrade: b.GetDowngrade()})
	}
	return rec, nil
}

// NewResolver returns the production resolver: an accesskey.Cache configured by
// cfg in front of store. Feed the returned cache and store to a Subscriber.
func NewResolver(store *Store, hasher *keys.Hasher, cfg accesskey.CacheConfig) *accesskey.Cache {
	return accesskey.NewCache(accesskey.NewStoreResolver(store, hasher, cfg.Now), hasher, cfg)
}
