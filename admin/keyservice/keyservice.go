// Package keyservice owns the admin service's internal gRPC KeyService
// (proto/ccproxy/keyservice/v1): extproc's only way to look access keys up,
// so the data path holds no database credentials. It answers by key hash
// from internal/store and returns the Bedrock credential still encrypted.
//
// A LookupKey answer also carries the per-minute rate limits of every scope
// that applies to the key (its own, its user's), read in one query
// (store.RateLimits.ForSubjects), for extproc/ratelimit to enforce, and
// the user's team: its id and name (usage records the id) and its model
// allow-list, which extproc/router enforces. A team's pre-emptive failover
// threshold applies to members without one of their own.
//
// MonthlySpend serves extproc's budget checks (extproc/budget): it
// recomputes a user's Bedrock spend in a billing month from Postgres and
// stores it as the shared Redis counter <prefix>spend:<user>:<YYYY-MM>
// (billing.SpendTTL), the same counter the usage ingester SETs after each commit.
// A recompute scans the user's usage rows of the month, so it is bounded: only
// users that exist are recomputed, concurrent calls for one user and month
// share one computation, and its answer is reused for Options.SpendReuse (1 s).
//
// Invalidation is the other half of the contract: after changing a key, its
// user or a credential, the admin service calls the Publisher of
// extproc/keylookup, which deletes the shared Redis entries and tells every
// extproc instance over Redis pub/sub.
package keyservice

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// DefaultCacheTTL is the cache_ttl the server hands out when Options leaves
// it zero. Invalidation is pushed, so it only bounds how long a lost
// invalidation message can go unnoticed.
const DefaultCacheTTL = 30 * time.Second

// Options configures a Server.
type Options struct {
	// CacheTTL is returned as every answer's cache_ttl (default
	// DefaultCacheTTL).
	CacheTTL time.Duration
	// Logger receives lookup failures; nil discards them.
	Logger *slog.Logger
	// Redis receives the spend counters MonthlySpend computes; nil means
	// MonthlySpend only answers (tests, tools).
	Redis redis.UniversalClient
	// RedisPrefix starts every Redis key (CCPROXY_REDIS_PREFIX).
	RedisPrefix string
	// Location is the billing time zone (CCPROXY_BILLING_TIMEZONE); nil
	// means UTC.
	Location *time.Location
	// SpendReuse is how long a computed monthly spend is answered again
	// without a new recompute (default DefaultSpendReuse). A caller asks only
	// when the Redis counter is missing; this bounds the Postgres work a
	// client asking in a loop can cause.
	SpendReuse time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultSpendReuse is Options.SpendReuse when left zero: extproc's own
// in-process budget cache lasts as long, so reusing an answer for it adds no
// more staleness than a budget check already has, while a user's spend is
// recomputed at most once a second however often it is asked for.
const DefaultSpendReuse = time.Second

// maxSpendEntries bounds the reused answers kept; past it expired ones are
// dropped, and when none has expired the map is cleared.
const maxSpendEntries = 10_000

// Server implements keyservicev1.KeyServiceServer over a store.
type Server struct {
	keyservicev1.UnimplementedKeyServiceServer
	store *store.Store
	opts  Options

	flight singleflight.Group
	mu     sync.Mutex
	spends map[string]spendEntry // user + month → last computed answer
}

type spendEntry struct {
	value string
	until time.Time
}

// NewServer returns a KeyService answering from st.
func NewServer(st *store.Store, opts Options) *Server {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.SpendReuse <= 0 {
		opts.SpendReuse = DefaultSpendReuse
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{store: st, opts: opts, spends: make(map[string]spendEntry)}
}

// Register registers s on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	keyservicev1.RegisterKeyServiceServer(g, s)
}

// LookupKey implements keyservicev1.KeyServiceServer. An unknown hash is
// NOT_FOUND; a hash of the wrong length is INVALID_ARGUMENT; revoked and
// rotating keys and disabled users are answered, with their status, so the
// caller can cache the refusal.
func (s *Server) LookupKey(ctx context.Context, req *keyservicev1.LookupKeyRequest) (*keyservicev1.LookupKeyResponse, error) {
	if len(req.GetKeyHash()) != keys.HashLen {
		return nil, status.Errorf(codes.InvalidArgument, "key_hash must be %d bytes", keys.HashLen)
	}
	l, err := s.store.AccessKeys().LookupByHash(ctx, req.GetKeyHash())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "unknown access key")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.opts.Logger.ErrorContext(ctx, "key lookup failed", "err", err)
		return nil, status.Error(codes.Unavailable, "key lookup failed")
	}
	resp := s.response(l)
	if resp.Status != keyservicev1.KeyStatus_KEY_STATUS_REVOKED && !resp.UserDisabled {
		if resp.RateLimits, err = s.rateLimits(ctx, l); err != nil {
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			s.opts.Logger.ErrorContext(ctx, "rate limit lookup failed", "err", err)
			return nil, status.Error(codes.Unavailable, "key lookup failed")
		}
		if resp.Budgets, err = s.budgets(ctx, l); err != nil {
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			s.opts.Logger.ErrorContext(ctx, "budget lookup failed", "err", err)
			return nil, status.Error(codes.Unavailable, "key lookup failed")
		}
	}
	return resp, nil
}

// rateLimits returns the per-minute limits of every scope that applies to
// the key's requests: the key's own, its user's and its team's. A refused
// key needs none (extproc refuses it before any limit).
func (s *Server) rateLimits(ctx context.Context, l store.KeyLookup) ([]*keyservicev1.RateLimit, error) {
	subjects := []store.RateLimitSubject{{Scope: store.RateLimitKey, ID: l.Key.ID}, {Scope: store.RateLimitUser, ID: l.User.ID}}
	if l.Team != nil {
		subjects = append(subjects, store.RateLimitSubject{Scope: store.RateLimitTeam, ID: l.Team.ID})
	}
	rows, err := s.store.RateLimits().ForSubjects(ctx, subjects...)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	out := make([]*keyservicev1.RateLimit, len(rows))
	val := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	for i, r := range rows {
		out[i] = &keyservicev1.RateLimit{
			Scope:                 string(r.Scope),
			Id:                    r.SubjectID.String(),
			RequestsPerMinute:     val(r.RequestsPerMinute),
			InputTokensPerMinute:  val(r.InputTokensPerMinute),
			OutputTokensPerMinute: val(r.OutputTokensPerMinute),
		}
	}
	return out, nil
}

// MonthlySpend implements keyservicev1.KeyServiceServer: the user's exact
// Bedrock spend over the billing month (the calendar month "YYYY-MM" in
// Options.Location), as a decimal string with 6 decimals, also SET as the
// user's Redis spend counter for that month. A malformed user_id or month is
// INVALID_ARGUMENT; a user that does not exist (or was deleted) has no spend,
// answered without a recompute and without a counter. Failing to store the
// counter is logged, not returned: the answer is still right.
func (s *Server) MonthlySpend(ctx context.Context, req *keyservicev1.MonthlySpendRequest) (*keyservicev1.MonthlySpendResponse, error) {
	userID, err := uuid.Parse(req.GetUserId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "user_id must be a UUID")
	}
	month, err := billing.ParseMonth(req.GetMonth(), s.opts.Location)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "month must be YYYY-MM")
	}
	flightKey := userID.String() + "/" + month.Key
	if v, ok := s.reused(flightKey); ok {
		return &keyservicev1.MonthlySpendResponse{SpendUsd: v}, nil
	}
	// Not bound to one caller: the computation is shared by everyone asking
	// for the same user and month meanwhile.
	v, err, _ := s.flight.Do(flightKey, func() (any, error) {
		return s.computeSpend(context.WithoutCancel(ctx), userID, month, req.GetMonth())
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, err
	}
	value := v.(string)
	s.reuse(flightKey, value)
	return &keyservicev1.MonthlySpendResponse{SpendUsd: value}, nil
}

// computeSpend recomputes a user's spend in month and stores the counter.
func (s *Server) computeSpend(ctx context.Context, userID uuid.UUID, month billing.Month, monthKey string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.store.Users().Get(ctx, userID); errors.Is(err, store.ErrNotFound) {
		return billing.FormatSpend(decimal.Zero), nil
	} else if err != nil {
		s.opts.Logger.ErrorContext(ctx, "monthly spend: user lookup failed", "user_id", userID, "err", err)
		return "", status.Error(codes.Unavailable, "monthly spend query failed")
	}
	spend, err := s.store.Usage().MonthlySpend(ctx, userID, store.ProviderBedrock, month.Start, month.End)
	if err != nil {
		s.opts.Logger.ErrorContext(ctx, "monthly spend query failed", "user_id", userID, "month", monthKey, "err", err)
		return "", status.Error(codes.Unavailable, "monthly spend query failed")
	}
	value := billing.FormatSpend(spend)
	if s.opts.Redis != nil {
		key := billing.SpendKey(s.opts.RedisPrefix, userID, month.Key)
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := s.opts.Redis.Set(sctx, key, value, billing.SpendTTL).Err(); err != nil {
			s.opts.Logger.WarnContext(ctx, "storing the spend counter failed", "key", key, "err", err)
		}
	}
	return value, nil
}

// reused returns a spend computed less than SpendReuse ago.
func (s *Server) reused(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.spends[key]
	if !ok || !s.opts.Now().Before(e.until) {
		return "", false
	}
	return e.value, true
}

// reuse keeps a computed spend for SpendReuse.
func (s *Server) reuse(key, value string) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spends) >= maxSpendEntries {
		for k, e := range s.spends {
			if !now.Before(e.until) {
				delete(s.spends, k)
			}
		}
		if len(s.spends) >= maxSpendEntries {
			clear(s.spends)
		}
	}
	s.spends[key] = spendEntry{value: value, until: now.Add(s.opts.SpendReuse)}
}

func (s *Server) response(l store.KeyLookup) *keyservicev1.LookupKeyResponse {
	resp := &keyservicev1.LookupKeyResponse{
		KeyId:           l.Key.ID.String(),
		UserId:          l.User.ID.String(),
		KeyPrefix:       l.Key.Prefix,
		RoutingStrategy: string(l.RoutingStrategy()),
		UserDisabled:    l.User.DeletedAt != nil || l.User.Status != store.UserActive,
		CacheTtl:        durationpb.New(s.opts.CacheTTL),
	}
	switch l.Key.Status {
	case store.KeyActive:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_ACTIVE
	case store.KeyRotating:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_ROTATING
		if l.Key.GraceUntil != nil {
			resp.ExpiresAt = timestamppb.New(*l.Key.GraceUntil)
		}
	case store.KeyRevoked:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_REVOKED
		if l.Key.RevokedAt != nil {
			resp.RevokedAt = timestamppb.New(*l.Key.RevokedAt)
		}
	}
	if l.User.MonthlyBudgetUSD != nil {
		resp.MonthlyBudgetUsd = l.User.MonthlyBudgetUSD.String()
	}
	// The user's own threshold, else the team's; extproc applies the
	// gateway default to an unset field.
	resp.PreemptThreshold = l.User.PreemptThreshold
	if t := l.Team; t != nil {
		resp.TeamId, resp.TeamName, resp.AllowedModels = t.ID.String(), t.Name, t.AllowedModels
		if resp.PreemptThreshold == nil {
			resp.PreemptThreshold = t.PreemptThreshold
		}
	}
	if c := l.Credential; c != nil {
		resp.BedrockCredential = &keyservicev1.BedrockCredential{
			CredentialId:     c.ID.String(),
			Kind:             string(c.Kind),
			Region:           c.Region,
			SecretCiphertext: c.SecretCiphertext,
		}
	}
	return resp
}
