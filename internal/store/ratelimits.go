package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// RateLimitScope names whose requests a rate limit counts.
type RateLimitScope string

// Rate-limit scopes. Teams are a scope of their own; a request is checked
// against every scope that applies to it.
const (
	RateLimitKey  RateLimitScope = "key"
	RateLimitUser RateLimitScope = "user"
	RateLimitTeam RateLimitScope = "team"
)

// Valid reports whether s is a known scope.
func (s RateLimitScope) Valid() bool {
	return s == RateLimitKey || s == RateLimitUser || s == RateLimitTeam
}

// Bounds of a rate limit, as the table checks them.
const (
	MaxRequestsPerMinute = 1_000_000
	MaxTokensPerMinute   = 10_000_000_000
)

// RateLimitValues are a subject's per-minute limits; nil means no limit on
// that dimension.
type RateLimitValues struct {
	RequestsPerMinute     *int64
	InputTokensPerMinute  *int64
	OutputTokensPerMinute *int64
}

// Empty reports that no dimension is limited.
func (v RateLimitValues) Empty() bool {
	return v.RequestsPerMinute == nil && v.InputTokensPerMinute == nil && v.OutputTokensPerMinute == nil
}

func (v RateLimitValues) validate() error {
	check := func(name string, p *int64, maxV int64) error {
		if p != nil && (*p < 1 || *p > maxV) {
			return invalidf("%s %d: must be between 1 and %d", name, *p, maxV)
		}
		return nil
	}
	if v.Empty() {
		return invalidf("a rate limit needs at least one limit")
	}
	if err := check("requests_per_minute", v.RequestsPerMinute, MaxRequestsPerMinute); err != nil {
		return err
	}
	if err := check("input_tokens_per_minute", v.InputTokensPerMinute, MaxTokensPerMinute); err != nil {
		return err
	}
	return check("output_tokens_per_minute", v.OutputTokensPerMinute, MaxTokensPerMinute)
}

// RateLimit is one subject's stored limits.
type RateLimit struct {
	Scope     RateLimitScope
	SubjectID uuid.UUID
	RateLimitValues
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RateLimits is the rate-limit repository.
type RateLimits struct{ q *Queries }

// RateLimits returns the rate-limit repository.
func (q *Queries) RateLimits() RateLimits { return RateLimits{q} }

const rateLimitColumns = `scope, subject_id, requests_per_minute, input_tokens_per_minute, output_tokens_per_minute, created_at, updated_at`

func scanRateLimit(row pgx.Row) (RateLimit, error) {
	var l RateLimit
	err := row.Scan(&l.Scope, &l.SubjectID, &l.RequestsPerMinute, &l.InputTokensPerMinute, &l.OutputTokensPerMinute, &l.CreatedAt, &l.UpdatedAt)
	return l, err
}

// Put creates or replaces a subject's limits. The caller checks that the
// subject exists (the table has no foreign key: it serves every scope).
func (r RateLimits) Put(ctx context.Context, scope RateLimitScope, id uuid.UUID, v RateLimitValues) (RateLimit, error) {
	if !scope.Valid() {
		return RateLimit{}, invalidf("rate limit scope %q", scope)
	}
	if err := v.validate(); err != nil {
		return RateLimit{}, err
	}
	l, err := scanRateLimit(r.q.db.QueryRow(ctx, `
		INSERT INTO rate_limits (scope, subject_id, requests_per_minute, input_tokens_per_minute, output_tokens_per_minute)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (scope, subject_id) DO UPDATE SET
			requests_per_minute = EXCLUDED.requests_per_minute,
			input_tokens_per_minute = EXCLUDED.input_tokens_per_minute,
			output_tokens_per_minute = EXCLUDED.output_tokens_per_minute
		RETURNING `+rateLimitColumns, scope, id, v.RequestsPerMinute, v.InputTokensPerMinute, v.OutputTokensPerMinute))
	return l, mapErr("store: put rate limit", err)
}

// Get returns a subject's limits (ErrNotFound if it has none).
func (r RateLimits) Get(ctx context.Context, scope RateLimitScope, id uuid.UUID) (RateLimit, error) {
	l, err := scanRateLimit(r.q.db.QueryRow(ctx, `SELECT `+rateLimitColumns+
		` FROM rate_limits WHERE scope = $1 AND subject_id = $2`, scope, id))
	return l, mapErr("store: get rate limit", err)
}

// Delete removes a subject's limits (ErrNotFound if it has none).
func (r RateLimits) Delete(ctx context.Context, scope RateLimitScope, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM rate_limits WHERE scope = $1 AND subject_id = $2`, scope, id)
	if err != nil {
		return mapErr("store: delete rate limit", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// RateLimitSubject names one subject whose limits apply to a request.
type RateLimitSubject struct {
	Scope RateLimitScope
	ID    uuid.UUID
}

// ForSubjects returns the limits of those of subjects that have any, in
// the order of subjects: the limits of one request (its key, its user, its
// team), read in one query for the key lookup.
func (r RateLimits) ForSubjects(ctx context.Context, subjects ...RateLimitSubject) ([]RateLimit, error) {
	if len(subjects) == 0 {
		return nil, nil
	}
	scopes := make([]string, len(subjects))
	ids := make([]uuid.UUID, len(subjects))
	for i, s := range subjects {
		scopes[i], ids[i] = string(s.Scope), s.ID
	}
	rows, err := r.q.db.Query(ctx, `
		SELECT l.scope, l.subject_id, l.requests_per_minute, l.input_tokens_per_minute,
			l.output_tokens_per_minute, l.created_at, l.updated_at
		FROM rate_limits l JOIN unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS s(scope, id, n)
			ON l.scope = s.scope AND l.subject_id = s.id
		ORDER BY s.n`, scopes, ids)
	if err != nil {
		return nil, mapErr("store: rate limits of subjects", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RateLimit, error) { return scanRateLimit(row) })
	return out, mapErr("store: rate limits of subjects", err)
}
