// Package accesskey owns access-key resolution for extproc: turning the access
// key a client presents into the Identity the gateway acts for.
//
// A Resolver does the lookup. StoreResolver answers from a key store (the
// database or, later, the admin service's KeyService) by the key's HMAC hash;
// Cache wraps any Resolver with a bounded in-process TTL cache keyed by that
// hash, so neither the cache nor the store ever holds a plaintext key.
package accesskey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/keys"
)

// Errors a Resolver returns (possibly wrapped) for keys that must be
// refused with 401. Any other error is a failure of the lookup itself.
var (
	// ErrMalformed: the string is not an access key at all.
	ErrMalformed = errors.New("accesskey: malformed access key")
	// ErrUnknownKey: a well-formed key that was never issued.
	ErrUnknownKey = errors.New("accesskey: unknown access key")
	// ErrRevoked: a key that was revoked, expired at the end of its
	// rotation grace period, or whose user is disabled.
	ErrRevoked = errors.New("accesskey: access key revoked")
)

// Routing strategies (docs/design.md, "Routing strategies").
const (
	RoutingPlanFirst   = "plan_first"
	RoutingPlanOnly    = "plan_only"
	RoutingBedrockOnly = "bedrock_only"
)

// Identity is who a valid access key acts for.
type Identity struct {
	UserID uuid.UUID
	KeyID  uuid.UUID
	// KeyPrefix is the key's display prefix (keys.DisplayPrefix), safe to
	// log.
	KeyPrefix string
	// RoutingStrategy is the effective strategy (the key's override, else
	// the user's): one of the Routing* constants.
	RoutingStrategy string
	// ExpiresAt is when the key stops being valid (the end of a rotation
	// grace period); zero if it does not expire.
	ExpiresAt time.Time
	// Bedrock is the Bedrock credential in effect for the key (the key's
	// override, else the user's default); nil if none.
	Bedrock *BedrockCredential
	// MonthlyBudgetUSD is the user's monthly Bedrock budget (extproc/budget
	// checks it); nil means no budget.
	MonthlyBudgetUSD *decimal.Decimal
	// PreemptThreshold is the user's pre-emptive failover threshold (a Plan
	// utilization fraction; 0 is off); nil means the gateway's default.
	PreemptThreshold *float64
	// RateLimits are the per-minute limits that apply to the key's
	// requests, one entry per scope that has any (extproc/ratelimit
	// enforces them); empty means none, and costs no Redis call.
	RateLimits []RateLimit
	// Budgets are the budgets that apply to the key's requests (the key's,
	// its user's, its team's); extproc/budget checks them. Empty means
	// none, and costs no Redis call.
	Budgets []Budget
	// TeamID is the user's team (usage records it); nil when in none.
	TeamID *uuid.UUID
	// TeamName is the team's name, for refusals; "" when in none.
	TeamName string
	// AllowedModels are the model ids or family aliases the team allows
	// (the router refuses others); nil means every model.
	AllowedModels []string
}

// Budget is one budget that applies to a key's requests, as the key lookup
// returns it (docs/budgets.md). Its window is recomputed from Window at
// each check, so a cached lookup stays right across midnight.
type Budget struct {
	// ID names the budget in messages and logs.
	ID string `json:"id"`
	// Scope (ScopeKey, ScopeUser or ScopeTeam), SubjectID and Metric
	// (bedrock, plan_list or all), with the window, name the counter.
	Scope     string    `json:"scope"`
	SubjectID uuid.UUID `json:"subject_id"`
	// Window is daily, weekly or monthly (billing time zone).
	Window    string          `json:"window"`
	Metric    string          `json:"metric"`
	AmountUSD decimal.Decimal `json:"amount_usd"`
	// Action at 100 %: block, downgrade, plan_only or notify.
	Action string `json:"action"`
	// Downgrade maps a requested model (id, alias or family) to the model
	// served, for action downgrade.
	Downgrade map[string]string `json:"downgrade,omitempty"`
}

// Rate-limit scopes: whose requests and tokens a RateLimit counts.
const (
	ScopeKey  = "key"
	ScopeUser = "user"
	ScopeTeam = "team"
)

// RateLimit is one scope's per-minute limits. A request is served only if
// every scope that applies to it has room; 0 means no limit on that
// dimension.
type RateLimit struct {
	// Scope is ScopeKey, ScopeUser or ScopeTeam; with ID it names the
	// shared counters.
	Scope string    `json:"scope"`
	ID    uuid.UUID `json:"id"`
	// RequestsPerMinute bounds Messages requests.
	RequestsPerMinute int64 `json:"requests_per_minute,omitempty"`
	// InputTokensPerMinute bounds input tokens (input plus cache-creation
	// tokens of each response's usage).
	InputTokensPerMinute int64 `json:"input_tokens_per_minute,omitempty"`
	// OutputTokensPerMinute bounds output tokens.
	OutputTokensPerMinute int64 `json:"output_tokens_per_minute,omitempty"`
}

// BedrockCredential is a Bedrock credential as the key lookup returns it:
// the secret still sealed. extproc opens it itself (extproc/bedrockauth),
// so no plaintext secret is ever cached or sent between services.
type BedrockCredential struct {
	ID uuid.UUID `json:"id"`
	// Kind is api_key or aws_default_chain.
	Kind string `json:"kind"`
	// Region is the AWS region requests go to and are signed for.
	Region string `json:"region"`
	// SecretCiphertext is the envelope-encrypted Bedrock API key
	// (internal/secrets); empty for aws_default_chain. Never log it.
	SecretCiphertext []byte `json:"secret_ciphertext,omitempty"`
}

// A Resolver maps an access key to its Identity. It returns an error
// wrapping ErrMalformed, ErrUnknownKey or ErrRevoked for keys to refuse, and
// any other error when it cannot tell. Implementations must be safe for
// concurrent use.
type Resolver interface {
	Resolve(ctx context.Context, key string) (Identity, error)
}

// KeyRecord is what a KeyStore knows about a key, joined with its user.
type KeyRecord struct {
	KeyID  uuid.UUID
	UserID uuid.UUID
	// Prefix is the key's display prefix.
	Prefix string
	// RoutingStrategy is the effective strategy; empty means
	// RoutingPlanFirst.
	RoutingStrategy string
	// RevokedAt is when the key was revoked; zero if it is not.
	RevokedAt time.Time
	// ExpiresAt ends the key's validity (rotation grace period); zero if
	// none.
	ExpiresAt time.Time
	// UserDisabled reports that the key's user is disabled.
	UserDisabled bool
	// Credential is the Bedrock credential in effect for the key; nil if
	// none.
	Credential *BedrockCredential `json:"credential,omitempty"`
	// MonthlyBudgetUSD is the user's monthly Bedrock budget; nil means
	// none.
	MonthlyBudgetUSD *decimal.Decimal `json:"monthly_budget_usd,omitempty"`
	// PreemptThreshold is the user's pre-emptive failover threshold; nil
	// means the gateway's default.
	PreemptThreshold *float64 `json:"preempt_threshold,omitempty"`
	// RateLimits are the per-minute limits of the key's scopes; empty
	// means none.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`
	// Budgets are the budgets of the key's scopes; empty means none.
	Budgets []Budget `json:"budgets,omitempty"`
	// TeamID and TeamName are the user's team; nil and "" when in none.
	TeamID   *uuid.UUID `json:"team_id,omitempty"`
	TeamName string     `json:"team_name,omitempty"`
	// AllowedModels is the team's model allow-list; empty means every
	// model.
	AllowedModels []string `json:"allowed_models,omitempty"`
}

// A KeyStore looks keys up by their HMAC hash (keys.Hasher). It returns an
// error wrapping ErrUnknownKey when no key has that hash.
type KeyStore interface {
	LookupKeyByHash(ctx context.Context, hash []byte) (KeyRecord, error)
}

// StoreResolver resolves keys through a KeyStore.
type StoreResolver struct {
	store  KeyStore
	hasher *keys.Hasher
	now    func() time.Time
}

// NewStoreResolver returns a Resolver that hashes keys with hasher and looks
// the hash up in store. now is the clock for revocation and expiry times;
// nil means time.Now.
func NewStoreResolver(store KeyStore, hasher *keys.Hasher, now func() time.Time) *StoreResolver {
	if now == nil {
		now = time.Now
	}
	return &StoreResolver{store: store, hasher: hasher, now: now}
}

// Resolve implements Resolver.
func (r *StoreResolver) Resolve(ctx context.Context, key string) (Identity, error) {
	if _, err := keys.Parse(key); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	rec, err := r.store.LookupKeyByHash(ctx, r.hasher.Hash(key))
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return Identity{}, err
		}
		return Identity{}, fmt.Errorf("accesskey: look up access key: %w", err)
	}
	return identityOf(rec, r.now())
}

func identityOf(rec KeyRecord, now time.Time) (Identity, error) {
	switch {
	case !rec.RevokedAt.IsZero() && !now.Before(rec.RevokedAt):
		return Identity{}, ErrRevoked
	case !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt):
		return Identity{}, fmt.Errorf("%w: rotation grace period over", ErrRevoked)
	case rec.UserDisabled:
		return Identity{}, fmt.Errorf("%w: user disabled", ErrRevoked)
	}
	strategy := rec.RoutingStrategy
	if strategy == "" {
		strategy = RoutingPlanFirst
	}
	var allowed []string
	if len(rec.AllowedModels) > 0 {
		allowed = rec.AllowedModels
	}
	expires := rec.ExpiresAt
	if !rec.RevokedAt.IsZero() && (expires.IsZero() || rec.RevokedAt.Before(expires)) {
		expires = rec.RevokedAt // revocation scheduled in the future
	}
	return Identity{
		UserID:           rec.UserID,
		KeyID:            rec.KeyID,
		KeyPrefix:        rec.Prefix,
		RoutingStrategy:  strategy,
		ExpiresAt:        expires,
		Bedrock:          rec.Credential,
		MonthlyBudgetUSD: rec.MonthlyBudgetUSD,
		PreemptThreshold: rec.PreemptThreshold,
		RateLimits:       rec.RateLimits,
		Budgets:          rec.Budgets,
		TeamID:           rec.TeamID,
		TeamName:         rec.TeamName,
		AllowedModels:    allowed,
	}, nil
}

// MemoryStore is a KeyStore held in memory, keyed by key hash: for tests,
// benchmarks and single-process tools. It is safe for concurrent reads once
// populated; populate it before use.
type MemoryStore map[[keys.HashLen]byte]KeyRecord

// Add stores rec under the hash of key.
func (m MemoryStore) Add(hasher *keys.Hasher, key string, rec KeyRecord) {
	m[[keys.HashLen]byte(hasher.Hash(key))] = rec
}

// LookupKeyByHash implements KeyStore.
func (m MemoryStore) LookupKeyByHash(_ context.Context, hash []byte) (KeyRecord, error) {
	if len(hash) != keys.HashLen {
		return KeyRecord{}, ErrUnknownKey
	}
	rec, ok := m[[keys.HashLen]byte(hash)]
	if !ok {
		return KeyRecord{}, ErrUnknownKey
	}
	return rec, nil
}
