package store

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// LoginThrottleKeyLen is the length of a login throttle key: a SHA-256.
const LoginThrottleKeyLen = 32

// LoginThrottle is the login throttling state of one key (a username or a
// client address, hashed by the caller).
type LoginThrottle struct {
	Key []byte
	// Attempts counts the attempts since the state was last forgotten or
	// reset.
	Attempts int
	// NextAttemptAt is when the next attempt is allowed; zero when it is
	// allowed now.
	NextAttemptAt time.Time
	// ExpiresAt is when the state is forgotten; zero for a key without
	// state.
	ExpiresAt time.Time
}

// LoginThrottles is the repository of login throttling state.
type LoginThrottles struct{ q *Queries }

// LoginThrottles returns the login throttling repository.
func (q *Queries) LoginThrottles() LoginThrottles { return LoginThrottles{q} }

// Update runs one atomic read-modify-write of the state of keys: it locks
// their rows (creating missing ones) in key order, so concurrent updates of
// overlapping keys run one after the other and cannot deadlock, and calls fn
// with the states in the order of keys. A key without state, or whose state
// expired at now, comes with only its Key set. fn returns the states to
// write (any subset; nil writes nothing); an error from fn rolls everything
// back and is returned as is.
func (r LoginThrottles) Update(ctx context.Context, now time.Time, keys [][]byte, fn func(states []LoginThrottle) ([]LoginThrottle, error)) error {
	for _, k := range keys {
		if len(k) != LoginThrottleKeyLen {
			return invalidf("login throttle key must be %d bytes, got %d", LoginThrottleKeyLen, len(k))
		}
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, bytes.Compare)
	sorted = slices.CompactFunc(sorted, bytes.Equal)
	var fnErr error
	err := r.q.tx(ctx, func(q *Queries) error {
		// ON CONFLICT DO UPDATE locks an existing row; a row another
		// transaction is inserting makes this one wait for it. Rows created
		// here expire at once, so a transaction that writes nothing leaves
		// only rows the maintenance job deletes.
		rows, err := q.db.Query(ctx, `
			INSERT INTO admin_login_throttle (key, expires_at)
			SELECT k, $2 FROM unnest($1::bytea[]) WITH ORDINALITY AS t(k, i) ORDER BY i
			ON CONFLICT (key) DO UPDATE SET attempts = admin_login_throttle.attempts
			RETURNING key, attempts, next_attempt_at, expires_at`, sorted, now)
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (LoginThrottle, error) {
			var t LoginThrottle
			var next *time.Time
			err := row.Scan(&t.Key, &t.Attempts, &next, &t.ExpiresAt)
			if next != nil {
				t.NextAttemptAt = *next
			}
			return t, err
		})
		if err != nil {
			return err
		}
		states := make([]LoginThrottle, len(keys))
		for i, k := range keys {
			states[i] = LoginThrottle{Key: k}
			for _, g := range got {
				if bytes.Equal(g.Key, k) && g.ExpiresAt.After(now) {
					states[i] = g
				}
			}
		}
		out, err := fn(states)
		if err != nil {
			fnErr = err
			return err
		}
		for _, t := range out {
			if len(t.Key) != LoginThrottleKeyLen || t.Attempts < 0 {
				return invalidf("malformed login throttle state")
			}
			var next *time.Time
			if !t.NextAttemptAt.IsZero() {
				next = &t.NextAttemptAt
			}
			if _, err := q.db.Exec(ctx, `
				INSERT INTO admin_login_throttle (key, attempts, next_attempt_at, expires_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (key) DO UPDATE SET attempts = $2, next_attempt_at = $3, expires_at = $4`,
				t.Key, t.Attempts, next, t.ExpiresAt); err != nil {
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return mapErr("store: update login throttle", err)
}

// Delete forgets the state of keys (a successful login, a password reset).
func (r LoginThrottles) Delete(ctx context.Context, keys ...[]byte) error {
	_, err := r.q.db.Exec(ctx, `DELETE FROM admin_login_throttle WHERE key = ANY($1::bytea[])`, keys)
	return mapErr("store: delete login throttle", err)
}

// DeleteExpired removes the state that expired before cutoff and returns
// how many keys it removed.
func (r LoginThrottles) DeleteExpired(ctx context.Context, cutoff time.Time) (int, error) {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM admin_login_throttle WHERE expires_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr("store: delete expired login throttle", err)
	}
	return int(tag.RowsAffected()), nil
}
