package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
)

// HeadroomBucket is the width of a plan_headroom bucket: at most one
// sample per user and bucket is kept (migration 00014).
const HeadroomBucket = 5 * time.Minute

// HeadroomRetention is how long plan_headroom samples are kept; the
// maintenance job deletes older buckets.
const HeadroomRetention = 35 * 24 * time.Hour

// HeadroomSample is one reading of a developer's Plan rate-limit state, as
// a Plan answer announced it (anthropic-ratelimit-unified-* headers).
type HeadroomSample struct {
	UserID      uuid.UUID
	AccessKeyID uuid.UUID
	// SampledAt is when the request that carried the reading started.
	SampledAt time.Time
	// Status is the unified status (allowed, allowed_warning, rejected);
	// Claim the representative claim (five_hour, seven_day, …).
	Status string
	Claim  string
	// Utilization5h and Utilization7d are fractions (1 = the limit); nil
	// when the answer did not carry them. Reset5h, Reset7d and ResetAt
	// (the representative window's reset) likewise.
	Utilization5h *float64
	Reset5h       *time.Time
	Utilization7d *float64
	Reset7d       *time.Time
	ResetAt       *time.Time
}

// Headroom is the repository of Plan headroom samples.
type Headroom struct{ q *Queries }

// Headroom returns the Plan headroom repository.
func (q *Queries) Headroom() Headroom { return Headroom{q} }

// Record upserts samples, one per user and HeadroomBucket: within a bucket
// the reading with the latest SampledAt wins, so the order of batches, and
// their redelivery, do not matter. One statement per call.
func (h Headroom) Record(ctx context.Context, samples []HeadroomSample) error {
	if len(samples) == 0 {
		return nil
	}
	// Postgres refuses to upsert the same key twice in one statement: keep
	// the newest sample of each user and bucket.
	type slot struct {
		user   uuid.UUID
		bucket int64
	}
	latest := make(map[slot]int, len(samples))
	for i, s := range samples {
		k := slot{s.UserID, s.SampledAt.Truncate(HeadroomBucket).Unix()}
		if j, ok := latest[k]; !ok || s.SampledAt.After(samples[j].SampledAt) {
			latest[k] = i
		}
	}
	n := len(latest)
	var (
		users, keys      = make([]uuid.UUID, 0, n), make([]uuid.UUID, 0, n)
		buckets, at      = make([]time.Time, 0, n), make([]time.Time, 0, n)
		status, claim    = make([]string, 0, n), make([]string, 0, n)
		u5, u7           = make([]*float64, 0, n), make([]*float64, 0, n)
		r5, r7, resetsAt = make([]*time.Time, 0, n), make([]*time.Time, 0, n), make([]*time.Time, 0, n)
	)
	for _, i := range latest {
		s := samples[i]
		users, keys = append(users, s.UserID), append(keys, s.AccessKeyID)
		buckets, at = append(buckets, s.SampledAt.Truncate(HeadroomBucket).UTC()), append(at, s.SampledAt.UTC())
		status, claim = append(status, s.Status), append(claim, s.Claim)
		u5, u7 = append(u5, s.Utilization5h), append(u7, s.Utilization7d)
		r5, r7, resetsAt = append(r5, s.Reset5h), append(r7, s.Reset7d), append(resetsAt, s.ResetAt)
	}
	// Samples of users that no longer exist (deleted between the request
	// and its ingestion) are dropped by the join rather than failing the
	// batch on the foreign key.
	_, err := h.q.db.Exec(ctx, `
		INSERT INTO plan_headroom (user_id, access_key_id, bucket, sampled_at, status, claim,
		                           utilization_5h, reset_5h, utilization_7d, reset_7d, reset_at)
		SELECT s.* FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[],
		                       $7::float8[], $8::timestamptz[], $9::float8[], $10::timestamptz[], $11::timestamptz[])
		     AS s(user_id, access_key_id, bucket, sampled_at, status, claim, u5, r5, u7, r7, r)
		JOIN users u ON u.id = s.user_id
		ON CONFLICT (user_id, bucket) DO UPDATE SET
		    sampled_at = excluded.sampled_at, access_key_id = excluded.access_key_id,
		    status = excluded.status, claim = excluded.claim,
		    utilization_5h = excluded.utilization_5h, reset_5h = excluded.reset_5h,
		    utilization_7d = excluded.utilization_7d, reset_7d = excluded.reset_7d,
		    reset_at = excluded.reset_at
		WHERE excluded.sampled_at > plan_headroom.sampled_at`,
		users, keys, buckets, at, status, claim, u5, r5, u7, r7, resetsAt)
	return mapErr("store: record plan headroom", err)
}

const headroomColumns = `user_id, access_key_id, sampled_at, status, claim, utilization_5h, reset_5h, utilization_7d, reset_7d, reset_at`

func scanHeadroom(row pgx.Row) (HeadroomSample, error) {
	var s HeadroomSample
	err := row.Scan(&s.UserID, &s.AccessKeyID, &s.SampledAt, &s.Status, &s.Claim,
		&s.Utilization5h, &s.Reset5h, &s.Utilization7d, &s.Reset7d, &s.ResetAt)
	return s, err
}

// Latest returns the user's newest sample; ErrNotFound when there is none.
func (h Headroom) Latest(ctx context.Context, userID uuid.UUID) (HeadroomSample, error) {
	s, err := scanHeadroom(h.q.db.QueryRow(ctx, `SELECT `+headroomColumns+` FROM plan_headroom
		WHERE user_id = $1 ORDER BY bucket DESC LIMIT 1`, userID))
	return s, mapErr("store: latest plan headroom", err)
}

// History returns the user's samples with SampledAt in [from, to), oldest
// first (at most one per HeadroomBucket).
func (h Headroom) History(ctx context.Context, userID uuid.UUID, from, to time.Time) ([]HeadroomSample, error) {
	if !to.After(from) {
		return nil, invalidf("empty time range")
	}
	rows, err := h.q.db.Query(ctx, `SELECT `+headroomColumns+` FROM plan_headroom
		WHERE user_id = $1 AND bucket >= $2 AND bucket < $3 AND sampled_at >= $4 AND sampled_at < $3
		ORDER BY bucket`, userID, from.Truncate(HeadroomBucket), to, from)
	if err != nil {
		return nil, mapErr("store: plan headroom history", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HeadroomSample, error) { return scanHeadroom(r) })
	return out, mapErr("store: plan headroom history", err)
}

// LatestAll returns every user's newest sample taken at or after since, by
// user.
func (h Headroom) LatestAll(ctx context.Context, since time.Time) (map[uuid.UUID]HeadroomSample, error) {
	rows, err := h.q.db.Query(ctx, `SELECT DISTINCT ON (user_id) `+headroomColumns+` FROM plan_headroom
		WHERE bucket >= $1 ORDER BY user_id, bucket DESC`, since.Truncate(HeadroomBucket))
	if err != nil {
		return nil, mapErr("store: latest plan headroom", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HeadroomSample, error) { return scanHeadroom(r) })
	if err != nil {
		return nil, mapErr("store: latest plan headroom", err)
	}
	out := make(map[uuid.UUID]HeadroomSample, len(list))
	for _, s := range list {
		out[s.UserID] = s
	}
	return out, nil
}

// DeleteBefore deletes the buckets that start before t and returns how many
// rows went.
func (h Headroom) DeleteBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := h.q.db.Exec(ctx, `DELETE FROM plan_headroom WHERE bucket < $1`, t)
	if err != nil {
		return 0, mapErr("store: delete plan headroom", err)
	}
	return tag.RowsAffected(), nil
}

// UserModelTokens is one user's usage of one model with one provider.
type UserModelTokens struct {
	UserID   uuid.UUID
	Model    string
	Provider Provider
	UsageTotals
}

// UserModelTokens sums every user's usage by model and provider over the
// hour buckets starting in [from, to), by user then model: the input of
// seat economics (re-pricing Plan tokens at Bedrock rates). One query.
func (u Usage) UserModelTokens(ctx context.Context, from, to time.Time) ([]UserModelTokens, error) {
	if !from.Before(to) {
		return nil, invalidf("empty time range [%s, %s)", from, to)
	}
	rows, err := u.q.db.Query(ctx, `SELECT user_id, model, provider, `+totalsSelect+`
		FROM usage_hourly WHERE bucket >= $1 AND bucket < $2
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, from, to)
	if err != nil {
		return nil, mapErr("store: user model tokens", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (UserModelTokens, error) {
		var (
			m             UserModelTokens
			plan, bedrock *decimal.Decimal
		)
		err := row.Scan(append([]any{&m.UserID, &m.Model, &m.Provider}, totalsDest(&m.UsageTotals, &plan, &bedrock)...)...)
		setCosts(&m.UsageTotals, plan, bedrock)
		return m, err
	})
	return out, mapErr("store: user model tokens", err)
}
