// Package store owns ccproxy's Postgres schema and all access to it: the
// embedded goose migrations (users, access keys, Bedrock credentials, model
// mappings, prices, usage events and rollups, admins, admin sessions, login
// throttling, audit log) and typed repositories over pgx v5.
//
// A Store wraps a pgxpool. Its repositories (Users, AccessKeys, Credentials,
// Models, Prices, Usage, Admins, Sessions, LoginThrottles, Audit) are reached
// through Queries, which either runs each call on the pool or, inside WithTx,
// on one transaction, so a change and its audit entry commit together:
//
//	err := st.WithTx(ctx, func(tx *store.Queries) error {
//		u, err := tx.Users().Update(ctx, id, patch)
//		if err != nil {
//			return err
//		}
//		return tx.Audit().Append(ctx, entry)
//	})
//
// Errors wrap ErrNotFound, ErrConflict or ErrInvalid where the caller can act
// on them; money is decimal.Decimal, ids uuid.UUID, nullable columns *T.
package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	pgxdecimal "github.com/jackc/pgx-shopspring-decimal"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrNotFound means the row does not exist (or is soft-deleted, or, for
	// sessions, no longer valid).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means the change would violate a uniqueness rule (a
	// duplicate email, key hash, model name, overlapping price) or the row is
	// in a state that forbids it (rotating a revoked key).
	ErrConflict = errors.New("store: conflict")
	// ErrInvalid means an argument is malformed or out of range (an unknown
	// enum value, a negative budget, a bad cursor).
	ErrInvalid = errors.New("store: invalid argument")
)

// ConfigChannel is the LISTEN/NOTIFY channel on which the database
// announces changes to what the control plane serves (model mappings, their
// aliases and regions, Bedrock credentials); the payload is the table name.
const ConfigChannel = "ccproxy_config"

// dbtx is what repositories run statements on: the pool or a transaction.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store is a connection pool to the ccproxy database with its repositories.
// It is safe for concurrent use.
type Store struct {
	Queries
	pool *pgxpool.Pool
}

// Queries gives access to the repositories, bound either to the pool (a
// Store) or to one transaction (inside WithTx).
type Queries struct {
	db dbtx
	// pool runs statements that must not join the caller's transaction
	// (partition DDL); it is set inside WithTx too.
	pool *pgxpool.Pool
	// inTx is set when db is a transaction the caller owns.
	inTx  bool
	state *sharedState
}

// sharedState is per-Store memory shared by its transactions.
type sharedState struct {
	mu sync.Mutex
	// partitions holds the UTC month starts (Unix seconds) whose usage
	// partition is known to exist.
	partitions map[int64]bool
}

// Open connects to the database at dsn (a postgres:// URL or key=value DSN)
// and checks the connection. Every connection registers the numeric ↔
// decimal.Decimal codec and uses the UTC time zone.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: parse database url: %w", err)
	}
	ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: ping %s: %w", cfg.ConnConfig.Host, err)
	}
	return New(pool), nil
}

// ConfigurePool prepares cfg the way the store's queries need: decimals for
// numeric columns and the UTC session time zone. Open calls it; callers
// building their own pool for New must too.
func ConfigurePool(cfg *pgxpool.Config) {
	prev := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		pgxdecimal.Register(conn.TypeMap())
		if prev != nil {
			return prev(ctx, conn)
		}
		return nil
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "ccproxy"
	}
}

// New wraps an existing pool, which must have been configured with
// ConfigurePool. The Store takes ownership: Close closes the pool.
func New(pool *pgxpool.Pool) *Store {
	st := &sharedState{partitions: map[int64]bool{}}
	return &Store{Queries: Queries{db: pool, pool: pool, state: st}, pool: pool}
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool returns the underlying pool, for callers with needs the repositories
// do not cover (LISTEN, health checks).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// WithTx runs fn in one transaction, committed if fn returns nil and rolled
// back otherwise. Repository methods that need several statements run them in
// a savepoint of this transaction.
func (s *Store) WithTx(ctx context.Context, fn func(tx *Queries) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(&Queries{db: tx, pool: s.pool, inTx: true, state: s.state})
	})
}

// tx runs fn in a transaction of its own, or in a savepoint when q is
// already a transaction.
func (q *Queries) tx(ctx context.Context, fn func(q *Queries) error) error {
	return pgx.BeginFunc(ctx, q.db, func(tx pgx.Tx) error {
		return fn(&Queries{db: tx, pool: q.pool, inTx: true, state: q.state})
	})
}

// Optional is a field of a partial update: when Set is false the column is
// left as it is. For nullable columns T is a pointer, and Some[*T](nil)
// clears the column.
type Optional[T any] struct {
	Value T
	Set   bool
}

// Some returns an Optional that sets the column to v.
func Some[T any](v T) Optional[T] { return Optional[T]{Value: v, Set: true} }

// setList accumulates "column = $n" assignments of an UPDATE.
type setList struct {
	sets []string
	args []any
}

func (s *setList) add(column string, v any) {
	s.args = append(s.args, v)
	s.sets = append(s.sets, column+" = $"+strconv.Itoa(len(s.args)))
}

// mapErr translates Postgres errors into the package's sentinel errors.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505", "23P01": // unique_violation, exclusion_violation
			return fmt.Errorf("%s: %w: %s", op, ErrConflict, pgErr.Message)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%s: %w: %s", op, ErrNotFound, pgErr.Detail)
		case "23514", "23502", "22P02", "22003", "22001", "22007", "22008": // check, not null, bad input, out of range, too long, datetime
			return fmt.Errorf("%s: %w: %s", op, ErrInvalid, pgErr.Message)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isRetryable reports whether err is a deadlock or serialization failure,
// after which the whole transaction may simply be run again.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// Cursors are opaque to callers: base64url of "<unix nanos>|<id>".

func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixNano(), 10) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	return time.Unix(0, n).UTC(), id, nil
}

func decodeUUIDCursor(c string) (time.Time, uuid.UUID, error) {
	t, s, err := decodeCursor(c)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return time.Time{}, uuid.Nil, fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	return t, id, nil
}

// Page limits.
const (
	// DefaultPageSize is used when a list call passes limit <= 0.
	DefaultPageSize = 50
	// MaxPageSize caps the limit of list calls.
	MaxPageSize = 1000
)

func pageSize(limit int) int {
	switch {
	case limit <= 0:
		return DefaultPageSize
	case limit > MaxPageSize:
		return MaxPageSize
	}
	return limit
}
