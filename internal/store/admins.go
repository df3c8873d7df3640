package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Admin is an administrator account.
type Admin struct {
	ID       uuid.UUID
	Username string
	// PasswordHash is an argon2id hash in PHC string format.
	// PasswordHash is "" for an admin who signs in only through single
	// sign-on; a password login never succeeds for it.
	PasswordHash string
	Disabled     bool
	CreatedAt    time.Time
	LastLoginAt  *time.Time
	// Role decides what the admin may do.
	Role AdminRole
	// TeamID is the team a team admin is scoped to; nil for other roles.
	TeamID *uuid.UUID
	// OIDCIssuer and OIDCSubject link an admin to its single sign-on
	// identity; both empty for password-only admins.
	OIDCIssuer  string
	OIDCSubject string
}

// AdminRole is what an admin may do.
type AdminRole string

// Admin roles, from the most to the least powerful.
const (
	// RoleOwner may do everything, including managing admins.
	RoleOwner AdminRole = "owner"
	// RoleAdmin may do everything but manage admins.
	RoleAdmin AdminRole = "admin"
	// RoleViewer may read everything and change nothing.
	RoleViewer AdminRole = "viewer"
	// RoleTeamAdmin manages one team's users, keys and usage.
	RoleTeamAdmin AdminRole = "team_admin"
)

// Valid reports whether r is a known role.
func (r AdminRole) Valid() bool {
	return r == RoleOwner || r == RoleAdmin || r == RoleViewer || r == RoleTeamAdmin
}

// NewAdmin holds the fields of an admin to create.
type NewAdmin struct {
	Username string
	// PasswordHash may be empty only for a single sign-on admin.
	PasswordHash string
	// Role defaults to RoleAdmin.
	Role   AdminRole
	TeamID *uuid.UUID
	// OIDCIssuer and OIDCSubject link a single sign-on admin.
	OIDCIssuer, OIDCSubject string
}

// Admins is the admin account repository.
type Admins struct{ q *Queries }

// Admins returns the admin account repository.
func (q *Queries) Admins() Admins { return Admins{q} }

const adminColumns = `id, username, coalesce(password_hash, ''), disabled, created_at, last_login_at, role, team_id, ` +
	`coalesce(oidc_issuer, ''), coalesce(oidc_subject, '')`

func scanAdmin(row pgx.Row) (Admin, error) {
	var a Admin
	err := row.Scan(adminDest(&a)...)
	return a, err
}

func adminDest(a *Admin) []any {
	return []any{&a.ID, &a.Username, &a.PasswordHash, &a.Disabled, &a.CreatedAt, &a.LastLoginAt, &a.Role, &a.TeamID,
		&a.OIDCIssuer, &a.OIDCSubject}
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Create inserts a password admin with the admin role. A username taken
// (case-insensitive) is ErrConflict.
func (r Admins) Create(ctx context.Context, username, passwordHash string) (Admin, error) {
	if passwordHash == "" {
		return Admin{}, invalidf("empty password hash")
	}
	return r.CreateAdmin(ctx, NewAdmin{Username: username, PasswordHash: passwordHash, Role: RoleAdmin})
}

// CreateAdmin inserts n. A username taken (case-insensitive), or a single
// sign-on identity already linked, is ErrConflict.
func (r Admins) CreateAdmin(ctx context.Context, n NewAdmin) (Admin, error) {
	if n.Role == "" {
		n.Role = RoleAdmin
	}
	if !n.Role.Valid() {
		return Admin{}, invalidf("unknown admin role %q", n.Role)
	}
	if n.PasswordHash == "" && n.OIDCSubject == "" {
		return Admin{}, invalidf("an admin needs a password hash or a single sign-on identity")
	}
	if (n.Role == RoleTeamAdmin) != (n.TeamID != nil) {
		return Admin{}, invalidf("a team admin, and only a team admin, names a team")
	}
	a, err := scanAdmin(r.q.db.QueryRow(ctx, `
		INSERT INTO admins (username, password_hash, role, team_id, oidc_issuer, oidc_subject)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+adminColumns,
		n.Username, nullIfEmpty(n.PasswordHash), n.Role, n.TeamID, nullIfEmpty(n.OIDCIssuer), nullIfEmpty(n.OIDCSubject)))
	return a, mapErr("store: create admin", err)
}

// GetByOIDC returns the admin linked to a single sign-on identity.
func (r Admins) GetByOIDC(ctx context.Context, issuer, subject string) (Admin, error) {
	a, err := scanAdmin(r.q.db.QueryRow(ctx, `SELECT `+adminColumns+` FROM admins WHERE oidc_issuer = $1 AND oidc_subject = $2`,
		issuer, subject))
	return a, mapErr("store: get admin", err)
}

// SetRole changes an admin's role (and team, for a team admin).
func (r Admins) SetRole(ctx context.Context, id uuid.UUID, role AdminRole, teamID *uuid.UUID) error {
	if !role.Valid() {
		return invalidf("unknown admin role %q", role)
	}
	if (role == RoleTeamAdmin) != (teamID != nil) {
		return invalidf("a team admin, and only a team admin, names a team")
	}
	return r.exec(ctx, "store: set admin role", `UPDATE admins SET role = $2, team_id = $3 WHERE id = $1`, id, role, teamID)
}

// CountEnabledOwners returns how many owners are not disabled, locking
// their rows so that two transactions cannot each remove a different one of
// the last two.
func (r Admins) CountEnabledOwners(ctx context.Context) (int, error) {
	rows, err := r.q.db.Query(ctx, `SELECT id FROM admins WHERE role = 'owner' AND NOT disabled FOR UPDATE`)
	if err != nil {
		return 0, mapErr("store: count owners", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	return len(ids), mapErr("store: count owners", err)
}

// Get returns an admin by id.
func (r Admins) Get(ctx context.Context, id uuid.UUID) (Admin, error) {
	a, err := scanAdmin(r.q.db.QueryRow(ctx, `SELECT `+adminColumns+` FROM admins WHERE id = $1`, id))
	return a, mapErr("store: get admin", err)
}

// GetByUsername returns an admin by username, case-insensitively, disabled
// or not (the login handler decides).
func (r Admins) GetByUsername(ctx context.Context, username string) (Admin, error) {
	a, err := scanAdmin(r.q.db.QueryRow(ctx, `SELECT `+adminColumns+` FROM admins WHERE lower(username) = lower($1)`, username))
	return a, mapErr("store: get admin", err)
}

// List returns all admins by username.
func (r Admins) List(ctx context.Context) ([]Admin, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+adminColumns+` FROM admins ORDER BY lower(username)`)
	if err != nil {
		return nil, mapErr("store: list admins", err)
	}
	as, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Admin, error) { return scanAdmin(row) })
	return as, mapErr("store: list admins", err)
}

// Count returns the number of admins (the first admin is created from the
// environment when there is none).
func (r Admins) Count(ctx context.Context) (int, error) {
	var n int
	err := r.q.db.QueryRow(ctx, `SELECT count(*) FROM admins`).Scan(&n)
	return n, mapErr("store: count admins", err)
}

// TouchLogin records a successful login.
func (r Admins) TouchLogin(ctx context.Context, id uuid.UUID) error {
	return r.exec(ctx, "store: touch admin login", `UPDATE admins SET last_login_at = now() WHERE id = $1`, id)
}

// SetPassword replaces an admin's password hash.
func (r Admins) SetPassword(ctx context.Context, id uuid.UUID, passwordHash string) error {
	if passwordHash == "" {
		return invalidf("empty password hash")
	}
	return r.exec(ctx, "store: set admin password", `UPDATE admins SET password_hash = $2 WHERE id = $1`, id, passwordHash)
}

// SetDisabled disables or re-enables an admin. Disabling also revokes the
// admin's sessions, in the same transaction.
func (r Admins) SetDisabled(ctx context.Context, id uuid.UUID, disabled bool) error {
	return mapErr("store: set admin disabled", r.q.tx(ctx, func(q *Queries) error {
		if err := q.Admins().exec(ctx, "", `UPDATE admins SET disabled = $2 WHERE id = $1`, id, disabled); err != nil {
			return err
		}
		if !disabled {
			return nil
		}
		_, err := q.Sessions().RevokeAllForAdmin(ctx, id)
		return err
	}))
}

func (r Admins) exec(ctx context.Context, op, sql string, args ...any) error {
	tag, err := r.q.db.Exec(ctx, sql, args...)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	if op == "" {
		return err
	}
	return mapErr(op, err)
}

// SessionIDLen is the length of a session id: SHA-256 of the session token.
const SessionIDLen = 32

// AdminSession is a server-side admin login session.
type AdminSession struct {
	// ID is SHA-256 of the token; the token itself is never stored.
	ID         []byte
	AdminID    uuid.UUID
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastSeenAt time.Time
	RevokedAt  *time.Time
	UserAgent  string
	IP         *netip.Addr
}

// NewAdminSession holds the fields of a session to create.
type NewAdminSession struct {
	ID        []byte
	AdminID   uuid.UUID
	ExpiresAt time.Time
	// LastSeenAt starts the idle timeout; zero means the database's now.
	LastSeenAt time.Time
	UserAgent  string
	IP         *netip.Addr
}

// Sessions is the admin session repository.
type Sessions struct{ q *Queries }

// Sessions returns the admin session repository.
func (q *Queries) Sessions() Sessions { return Sessions{q} }

const sessionColumns = `id, admin_id, created_at, expires_at, last_seen_at, revoked_at, user_agent, ip`

func scanSession(row pgx.Row) (AdminSession, error) {
	var s AdminSession
	err := row.Scan(&s.ID, &s.AdminID, &s.CreatedAt, &s.ExpiresAt, &s.LastSeenAt, &s.RevokedAt, &s.UserAgent, &s.IP)
	return s, err
}

// Create stores a session for an admin that exists and is not disabled
// (else ErrNotFound).
func (r Sessions) Create(ctx context.Context, n NewAdminSession) (AdminSession, error) {
	if len(n.ID) != SessionIDLen {
		return AdminSession{}, invalidf("session id must be %d bytes, got %d", SessionIDLen, len(n.ID))
	}
	var seen *time.Time
	if !n.LastSeenAt.IsZero() {
		seen = &n.LastSeenAt
	}
	s, err := scanSession(r.q.db.QueryRow(ctx, `
		INSERT INTO admin_sessions (id, admin_id, expires_at, user_agent, ip, last_seen_at)
		SELECT $1, id, $3, $4, $5, coalesce($6, now()) FROM admins WHERE id = $2 AND NOT disabled
		RETURNING `+sessionColumns, n.ID, n.AdminID, n.ExpiresAt, n.UserAgent, n.IP, seen))
	return s, mapErr("store: create admin session", err)
}

// Get returns a valid session with its admin: not revoked, not expired, and
// its admin not disabled. Anything else is ErrNotFound.
func (r Sessions) Get(ctx context.Context, id []byte) (AdminSession, Admin, error) {
	var (
		s AdminSession
		a Admin
	)
	err := r.q.db.QueryRow(ctx, `
		SELECT s.id, s.admin_id, s.created_at, s.expires_at, s.last_seen_at, s.revoked_at, s.user_agent, s.ip,
		       a.id, a.username, coalesce(a.password_hash, ''), a.disabled, a.created_at, a.last_login_at, a.role, a.team_id,
		       coalesce(a.oidc_issuer, ''), coalesce(a.oidc_subject, '')
		FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
		WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT a.disabled`, id).Scan(
		append([]any{&s.ID, &s.AdminID, &s.CreatedAt, &s.ExpiresAt, &s.LastSeenAt, &s.RevokedAt, &s.UserAgent, &s.IP},
			adminDest(&a)...)...)
	if err != nil {
		return AdminSession{}, Admin{}, mapErr("store: get admin session", err)
	}
	return s, a, nil
}

// Touch records activity on a session.
func (r Sessions) Touch(ctx context.Context, id []byte) error {
	tag, err := r.q.db.Exec(ctx, `UPDATE admin_sessions SET last_seen_at = now() WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr("store: touch admin session", err)
}

// TouchAt records activity on a session at at; last_seen_at never moves
// back. An unknown session is ErrNotFound.
func (r Sessions) TouchAt(ctx context.Context, id []byte, at time.Time) error {
	tag, err := r.q.db.Exec(ctx, `UPDATE admin_sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1`, id, at)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr("store: touch admin session", err)
}

// Revoke ends a session (logout). Revoking an unknown or already revoked
// session is ErrNotFound.
func (r Sessions) Revoke(ctx context.Context, id []byte) error {
	tag, err := r.q.db.Exec(ctx, `UPDATE admin_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr("store: revoke admin session", err)
}

// RevokeAllForAdmin ends every open session of an admin and returns how many
// it ended.
func (r Sessions) RevokeAllForAdmin(ctx context.Context, adminID uuid.UUID) (int, error) {
	tag, err := r.q.db.Exec(ctx, `UPDATE admin_sessions SET revoked_at = now()
		WHERE admin_id = $1 AND revoked_at IS NULL AND expires_at > now()`, adminID)
	if err != nil {
		return 0, mapErr("store: revoke admin sessions", err)
	}
	return int(tag.RowsAffected()), nil
}

// RevokeOthers ends every open session of an admin but keep (the session
// that changed the admin's password) and returns how many it ended.
func (r Sessions) RevokeOthers(ctx context.Context, adminID uuid.UUID, keep []byte) (int, error) {
	tag, err := r.q.db.Exec(ctx, `UPDATE admin_sessions SET revoked_at = now()
		WHERE admin_id = $1 AND id <> $2 AND revoked_at IS NULL AND expires_at > now()`, adminID, keep)
	if err != nil {
		return 0, mapErr("store: revoke admin sessions", err)
	}
	return int(tag.RowsAffected()), nil
}

// DeleteExpired removes sessions that expired, or were revoked, before
// cutoff, and returns how many.
func (r Sessions) DeleteExpired(ctx context.Context, cutoff time.Time) (int, error) {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM admin_sessions WHERE expires_at < $1 OR revoked_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr("store: delete expired admin sessions", err)
	}
	return int(tag.RowsAffected()), nil
}
