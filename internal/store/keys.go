package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// KeyHashLen is the length of an access key hash (HMAC-SHA256).
const KeyHashLen = 32

// AccessKey is an access key's stored form; the key itself is never stored.
type AccessKey struct {
	ID     uuid.UUID
	UserID uuid.UUID
	Name   string
	// Hash is HMAC-SHA256(server secret, key).
	Hash   []byte
	Prefix string
	Status KeyStatus
	// RoutingStrategy overrides the user's when not nil.
	RoutingStrategy *RoutingStrategy
	// GraceUntil is when a rotating key stops working.
	GraceUntil *time.Time
	// RotatedTo is the key that replaced this one.
	RotatedTo  *uuid.UUID
	LastUsedAt *time.Time
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// NewAccessKey holds the fields of a key to create.
type NewAccessKey struct {
	UserID          uuid.UUID
	Name            string
	Hash            []byte
	Prefix          string
	RoutingStrategy *RoutingStrategy
}

// AccessKeyPatch is a partial update of a key.
type AccessKeyPatch struct {
	Name            Optional[string]
	RoutingStrategy Optional[*RoutingStrategy]
}

// KeyLookup is everything the auth path needs about a key, read in one
// query: the key, its user, and the Bedrock credential in effect for it (the
// key's override, else the user's default, else nil).
type KeyLookup struct {
	Key        AccessKey
	User       User
	Credential *BedrockCredential
	// Team is the user's team, without its member count or budgets (the
	// budgets reach the key lookup through Budgets.ForRequest); nil when
	// the user is in none.
	Team *Team
}

// Usable reports whether the key authenticates at now: it is active, or
// rotating within its grace period, and its user is active and not deleted.
func (l KeyLookup) Usable(now time.Time) bool {
	if l.User.DeletedAt != nil || l.User.Status != UserActive {
		return false
	}
	switch l.Key.Status {
	case KeyActive:
		return true
	case KeyRotating:
		return l.Key.GraceUntil != nil && now.Before(*l.Key.GraceUntil)
	}
	return false
}

// RoutingStrategy is the strategy in effect: the key's override, else the
// user's.
func (l KeyLookup) RoutingStrategy() RoutingStrategy {
	if l.Key.RoutingStrategy != nil {
		return *l.Key.RoutingStrategy
	}
	return l.User.RoutingStrategy
}

// AccessKeys is the access key repository.
type AccessKeys struct{ q *Queries }

// AccessKeys returns the access key repository.
func (q *Queries) AccessKeys() AccessKeys { return AccessKeys{q} }

const keyColumns = `id, user_id, name, key_hash, prefix, status, routing_strategy, grace_until, rotated_to, last_used_at, created_at, revoked_at`

func keyCols(alias string) string {
	return alias + "." + strings.ReplaceAll(keyColumns, ", ", ", "+alias+".")
}

func keyDest(k *AccessKey) []any {
	return []any{&k.ID, &k.UserID, &k.Name, &k.Hash, &k.Prefix, &k.Status, &k.RoutingStrategy,
		&k.GraceUntil, &k.RotatedTo, &k.LastUsedAt, &k.CreatedAt, &k.RevokedAt}
}

func scanKey(row pgx.Row) (AccessKey, error) {
	var k AccessKey
	err := row.Scan(keyDest(&k)...)
	return k, err
}

func validateNewKey(nk NewAccessKey) error {
	if len(nk.Hash) != KeyHashLen {
		return invalidf("key hash must be %d bytes, got %d", KeyHashLen, len(nk.Hash))
	}
	if nk.Prefix == "" {
		return invalidf("empty key prefix")
	}
	if nk.RoutingStrategy != nil && !nk.RoutingStrategy.Valid() {
		return invalidf("routing strategy %q", *nk.RoutingStrategy)
	}
	return nil
}

// Create inserts an active key for a user that exists and is not deleted
// (else ErrNotFound). A hash already stored is ErrConflict.
func (r AccessKeys) Create(ctx context.Context, nk NewAccessKey) (AccessKey, error) {
	if err := validateNewKey(nk); err != nil {
		return AccessKey{}, err
	}
	k, err := scanKey(r.q.db.QueryRow(ctx, `
		INSERT INTO access_keys (user_id, name, key_hash, prefix, routing_strategy)
		SELECT id, $2, $3, $4, $5 FROM users WHERE id = $1 AND deleted_at IS NULL
		RETURNING `+keyColumns,
		nk.UserID, nk.Name, nk.Hash, nk.Prefix, nk.RoutingStrategy))
	return k, mapErr("store: create access key", err)
}

// Get returns a key by id, whatever its status.
func (r AccessKeys) Get(ctx context.Context, id uuid.UUID) (AccessKey, error) {
	k, err := scanKey(r.q.db.QueryRow(ctx, `SELECT `+keyColumns+` FROM access_keys WHERE id = $1`, id))
	return k, mapErr("store: get access key", err)
}

// ListByUser returns all of a user's keys, newest first, whatever their
// status.
func (r AccessKeys) ListByUser(ctx context.Context, userID uuid.UUID) ([]AccessKey, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+keyColumns+` FROM access_keys WHERE user_id = $1
		ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, mapErr("store: list access keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccessKey, error) { return scanKey(row) })
	return keys, mapErr("store: list access keys", err)
}

// ListByTeam returns the keys of the team's users that are not deleted,
// grouped by user: what a change to the team invalidates.
func (r AccessKeys) ListByTeam(ctx context.Context, teamID uuid.UUID) ([]AccessKey, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+keyColumns+` FROM access_keys
		WHERE user_id IN (SELECT id FROM users WHERE team_id = $1 AND deleted_at IS NULL)
		ORDER BY user_id, created_at DESC, id DESC`, teamID)
	if err != nil {
		return nil, mapErr("store: list team access keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccessKey, error) { return scanKey(row) })
	return keys, mapErr("store: list team access keys", err)
}

// LookupByHash returns the key with this hash joined with its user and its
// effective Bedrock credential, whatever the key's status (see
// KeyLookup.Usable). An unknown hash is ErrNotFound.
func (r AccessKeys) LookupByHash(ctx context.Context, hash []byte) (KeyLookup, error) {
	var (
		l    KeyLookup
		c    BedrockCredential
		cID  *uuid.UUID
		cUID *uuid.UUID
		kind *CredentialKind
		reg  *string
		cAt  *time.Time
		uAt  *time.Time
		t    Team
		tID  *uuid.UUID
		tNm  *string
		tCAt *time.Time
		tUAt *time.Time
	)
	dest := keyDest(&l.Key)
	dest = append(dest, &l.User.ID, &l.User.Name, &l.User.Email, &l.User.RoutingStrategy,
		&l.User.MonthlyBudgetUSD, &l.User.PreemptThreshold, &l.User.SeatType, &l.User.TeamID, &l.User.Status, &l.User.CreatedAt, &l.User.UpdatedAt, &l.User.DeletedAt,
		&cID, &cUID, &c.AccessKeyID, &kind, &reg, &c.SecretCiphertext, &cAt, &uAt,
		&tID, &tNm, &t.RoutingStrategy, &t.AllowedModels, &t.PreemptThreshold, &tCAt, &tUAt)
	// The lateral subquery prefers the key's override over the user's
	// default. Each branch is a lookup in one of the partial unique indexes,
	// so the hot path never scans bedrock_credentials.
	err := r.q.db.QueryRow(ctx, `
		SELECT `+keyCols("k")+`,
		       u.id, u.name, u.email, u.routing_strategy, u.monthly_budget_usd, u.preempt_threshold, u.seat_type, u.team_id, u.status,
		       u.created_at, u.updated_at, u.deleted_at,
		       c.id, c.user_id, c.access_key_id, c.kind, c.region, c.secret_ciphertext, c.created_at, c.updated_at,
		       t.id, t.name, t.routing_strategy,
		       t.allowed_models, t.preempt_threshold, t.created_at, t.updated_at
		FROM access_keys k
		JOIN users u ON u.id = k.user_id
		LEFT JOIN teams t ON t.id = u.team_id AND t.deleted_at IS NULL
		LEFT JOIN LATERAL (
			SELECT * FROM (
				SELECT bc.*, 0 AS pref FROM bedrock_credentials bc WHERE bc.access_key_id = k.id
				UNION ALL
				SELECT bc.*, 1 AS pref FROM bedrock_credentials bc WHERE bc.user_id = k.user_id AND bc.access_key_id IS NULL
			) both_kinds
			ORDER BY pref
			LIMIT 1
		) c ON true
		WHERE k.key_hash = $1`, hash).Scan(dest...)
	if err != nil {
		return KeyLookup{}, mapErr("store: look up access key", err)
	}
	if cID != nil {
		c.ID, c.UserID, c.Kind, c.Region, c.CreatedAt, c.UpdatedAt = *cID, *cUID, *kind, *reg, *cAt, *uAt
		l.Credential = &c
	}
	if tID != nil {
		t.ID, t.Name, t.CreatedAt, t.UpdatedAt = *tID, *tNm, *tCAt, *tUAt
		l.Team = &t
	}
	return l, nil
}

// Update changes the fields set in p and returns the updated key.
func (r AccessKeys) Update(ctx context.Context, id uuid.UUID, p AccessKeyPatch) (AccessKey, error) {
	var s setList
	if p.Name.Set {
		s.add("name", p.Name.Value)
	}
	if p.RoutingStrategy.Set {
		if v := p.RoutingStrategy.Value; v != nil && !v.Valid() {
			return AccessKey{}, invalidf("routing strategy %q", *v)
		}
		s.add("routing_strategy", p.RoutingStrategy.Value)
	}
	if len(s.sets) == 0 {
		return r.Get(ctx, id)
	}
	s.args = append(s.args, id)
	k, err := scanKey(r.q.db.QueryRow(ctx, `UPDATE access_keys SET `+strings.Join(s.sets, ", ")+
		` WHERE id = $`+strconv.Itoa(len(s.args))+` RETURNING `+keyColumns, s.args...))
	return k, mapErr("store: update access key", err)
}

// Rotate replaces an active key, in one transaction: a new active key with
// the given hash and prefix (same user, name and routing override) is
// created, and the old key becomes rotating until now+grace, pointing at the
// new one. The old key's Bedrock credential override is copied to the new key,
// so both use it during the grace period. With grace <= 0 the old key is
// revoked at once and its override moved. Rotating a key that is not active
// is ErrConflict.
func (r AccessKeys) Rotate(ctx context.Context, oldID uuid.UUID, newHash []byte, newPrefix string, grace time.Duration) (oldKey, newKey AccessKey, err error) {
	err = r.q.tx(ctx, func(q *Queries) error {
		old, err := scanKey(q.db.QueryRow(ctx, `SELECT `+keyColumns+` FROM access_keys WHERE id = $1 FOR UPDATE`, oldID))
		if err != nil {
			return err
		}
		if old.Status != KeyActive {
			return fmt.Errorf("%w: access key %s is %s, only an active key can be rotated", ErrConflict, oldID, old.Status)
		}
		nk := NewAccessKey{UserID: old.UserID, Name: old.Name, Hash: newHash, Prefix: newPrefix, RoutingStrategy: old.RoutingStrategy}
		if newKey, err = q.AccessKeys().Create(ctx, nk); err != nil {
			return err
		}
		if grace > 0 {
			oldKey, err = scanKey(q.db.QueryRow(ctx, `
				UPDATE access_keys SET status = 'rotating', grace_until = now() + $2::interval, rotated_to = $3
				WHERE id = $1 RETURNING `+keyColumns, oldID, grace, newKey.ID))
			if err != nil {
				return err
			}
			_, err = q.db.Exec(ctx, `
				INSERT INTO bedrock_credentials (user_id, access_key_id, kind, region, secret_ciphertext)
				SELECT user_id, $2, kind, region, secret_ciphertext FROM bedrock_credentials WHERE access_key_id = $1`,
				oldID, newKey.ID)
			return err
		}
		oldKey, err = scanKey(q.db.QueryRow(ctx, `
			UPDATE access_keys SET status = 'revoked', revoked_at = now(), rotated_to = $2
			WHERE id = $1 RETURNING `+keyColumns, oldID, newKey.ID))
		if err != nil {
			return err
		}
		_, err = q.db.Exec(ctx, `UPDATE bedrock_credentials SET access_key_id = $2 WHERE access_key_id = $1`, oldID, newKey.ID)
		return err
	})
	if err != nil {
		return AccessKey{}, AccessKey{}, mapErr("store: rotate access key", err)
	}
	return oldKey, newKey, nil
}

// Revoke revokes a key and returns it. Revoking a revoked key is not an
// error; it returns the key unchanged.
func (r AccessKeys) Revoke(ctx context.Context, id uuid.UUID) (AccessKey, error) {
	k, err := scanKey(r.q.db.QueryRow(ctx, `
		UPDATE access_keys SET status = 'revoked', revoked_at = now()
		WHERE id = $1 AND status <> 'revoked' RETURNING `+keyColumns, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r.Get(ctx, id)
	}
	return k, mapErr("store: revoke access key", err)
}

// RevokeExpiredRotations revokes rotating keys whose grace period has ended
// (revoked_at = grace_until) and returns them.
func (r AccessKeys) RevokeExpiredRotations(ctx context.Context) ([]AccessKey, error) {
	rows, err := r.q.db.Query(ctx, `
		UPDATE access_keys SET status = 'revoked', revoked_at = grace_until
		WHERE status = 'rotating' AND grace_until <= now()
		RETURNING `+keyColumns)
	if err != nil {
		return nil, mapErr("store: revoke expired rotations", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccessKey, error) { return scanKey(row) })
	return keys, mapErr("store: revoke expired rotations", err)
}

// KeyUse is one observed use of a key, for TouchLastUsed.
type KeyUse struct {
	ID uuid.UUID
	At time.Time
}

// TouchLastUsed records many key uses in one statement; last_used_at only
// moves forward. Callers batch uses (e.g. every few seconds) rather than
// writing on every request.
func (r AccessKeys) TouchLastUsed(ctx context.Context, uses []KeyUse) error {
	if len(uses) == 0 {
		return nil
	}
	// Keep the latest use per key, sorted by id so that concurrent batches
	// lock rows in the same order and cannot deadlock.
	latest := make(map[uuid.UUID]time.Time, len(uses))
	for _, u := range uses {
		if t, ok := latest[u.ID]; !ok || u.At.After(t) {
			latest[u.ID] = u.At
		}
	}
	ids := make([]uuid.UUID, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ats := make([]time.Time, len(ids))
	for i, id := range ids {
		ats[i] = latest[id]
	}
	_, err := r.q.db.Exec(ctx, `
		WITH v AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at)),
		locked AS (
			SELECT k.id FROM access_keys k JOIN v USING (id)
			WHERE k.last_used_at IS NULL OR k.last_used_at < v.at
			ORDER BY k.id FOR UPDATE OF k
		)
		UPDATE access_keys k SET last_used_at = v.at
		FROM v JOIN locked USING (id)
		WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)`, ids, ats)
	return mapErr("store: touch access keys", err)
}
