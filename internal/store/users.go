package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
)

// User is a developer (or a machine) that uses the gateway.
type User struct {
	ID              uuid.UUID
	Name            string
	Email           *string
	RoutingStrategy RoutingStrategy
	// MonthlyBudgetUSD caps Bedrock spend per month; nil means no budget.
	MonthlyBudgetUSD *decimal.Decimal
	// PreemptThreshold is the Plan utilization (a fraction in [0, 1]) at
	// which the user's plan_first requests move to Bedrock before Plan
	// refuses them (pre-emptive failover); 0 turns it off for the user, nil
	// means the gateway's default.
	PreemptThreshold *float64
	// SeatType is the developer's seat for seat economics: one of the
	// Seat* constants; nil when not recorded.
	SeatType *SeatType
	// TeamID is the developer's team; nil when in none.
	TeamID    *uuid.UUID
	Status    UserStatus
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt *time.Time
}

// NewUser holds the fields of a user to create. An empty RoutingStrategy
// means the team's routing strategy when TeamID names a team that has one,
// and PlanFirst otherwise.
type NewUser struct {
	Name             string
	Email            *string
	RoutingStrategy  RoutingStrategy
	MonthlyBudgetUSD *decimal.Decimal
	PreemptThreshold *float64
	SeatType         *SeatType
	TeamID           *uuid.UUID
}

// UserPatch is a partial update of a user.
type UserPatch struct {
	Name             Optional[string]
	Email            Optional[*string]
	RoutingStrategy  Optional[RoutingStrategy]
	MonthlyBudgetUSD Optional[*decimal.Decimal]
	PreemptThreshold Optional[*float64]
	SeatType         Optional[*SeatType]
	// TeamID moves the user to a team (nil: out of any). Joining a team
	// that has a routing strategy, without setting RoutingStrategy in the
	// same patch, takes the team's strategy.
	TeamID Optional[*uuid.UUID]
	Status Optional[UserStatus]
}

// UserListOptions selects a page of users, oldest first.
type UserListOptions struct {
	// Limit is the page size (DefaultPageSize when <= 0, at most MaxPageSize).
	Limit int
	// Cursor continues after the previous page's NextCursor.
	Cursor string
	// IncludeDeleted lists soft-deleted users too.
	IncludeDeleted bool
	// Status, when set, keeps only users in that status.
	Status UserStatus
	// TeamID, when set, keeps only the team's users.
	TeamID *uuid.UUID
}

// Users is the user repository.
type Users struct{ q *Queries }

// Users returns the user repository.
func (q *Queries) Users() Users { return Users{q} }

const userColumns = `id, name, email, routing_strategy, monthly_budget_usd, preempt_threshold, seat_type, team_id, status, created_at, updated_at, deleted_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Name, &u.Email, &u.RoutingStrategy, &u.MonthlyBudgetUSD, &u.PreemptThreshold, &u.SeatType, &u.TeamID, &u.Status,
		&u.CreatedAt, &u.UpdatedAt, &u.DeletedAt)
	return u, err
}

func validateBudget(b *decimal.Decimal) error {
	if b != nil && (b.IsNegative() || !b.Equal(b.Round(2))) {
		return invalidf("monthly budget %s must be non-negative with at most 2 decimals", b)
	}
	return nil
}

func validatePreempt(t *float64) error {
	if t != nil && !(*t >= 0 && *t <= 1) {
		return invalidf("pre-emptive failover threshold %v must be a fraction in [0, 1]", *t)
	}
	return nil
}

func validateSeat(s *SeatType) error {
	if s != nil && !s.Valid() {
		return invalidf("seat type %q", *s)
	}
	return nil
}

func normalizeEmail(e *string) *string {
	if e == nil {
		return nil
	}
	s := strings.TrimSpace(*e)
	return &s
}

// Create inserts a user. A duplicate email (case-insensitive, among users not
// deleted) is ErrConflict.
func (r Users) Create(ctx context.Context, nu NewUser) (User, error) {
	if nu.TeamID != nil {
		var u User
		err := r.q.tx(ctx, func(q *Queries) error {
			rs, err := q.lockTeam(ctx, *nu.TeamID)
			if err != nil {
				return err
			}
			if nu.RoutingStrategy == "" && rs != nil {
				nu.RoutingStrategy = *rs
			}
			u, err = q.Users().create(ctx, nu)
			return err
		})
		return u, err
	}
	return r.create(ctx, nu)
}

func (r Users) create(ctx context.Context, nu NewUser) (User, error) {
	if nu.RoutingStrategy == "" {
		nu.RoutingStrategy = PlanFirst
	}
	if !nu.RoutingStrategy.Valid() {
		return User{}, invalidf("routing strategy %q", nu.RoutingStrategy)
	}
	if err := validateBudget(nu.MonthlyBudgetUSD); err != nil {
		return User{}, err
	}
	if err := validatePreempt(nu.PreemptThreshold); err != nil {
		return User{}, err
	}
	if err := validateSeat(nu.SeatType); err != nil {
		return User{}, err
	}
	u, err := scanUser(r.q.db.QueryRow(ctx, `
		INSERT INTO users (name, email, routing_strategy, monthly_budget_usd, preempt_threshold, seat_type, team_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		RETURNING `+userColumns,
		nu.Name, normalizeEmail(nu.Email), nu.RoutingStrategy, nu.MonthlyBudgetUSD, nu.PreemptThreshold, nu.SeatType, nu.TeamID))
	return u, mapErr("store: create user", err)
}

// Get returns a user that is not deleted.
func (r Users) Get(ctx context.Context, id uuid.UUID) (User, error) {
	u, err := scanUser(r.q.db.QueryRow(ctx,
		`SELECT `+userColumns+` FROM users WHERE id = $1 AND deleted_at IS NULL`, id))
	return u, mapErr("store: get user", err)
}

// Names returns the names of the users among ids, deleted ones included
// (their usage stays): one query for a report's rows.
func (r Users) Names(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]string, error) {
	rows, err := r.q.db.Query(ctx, `SELECT id, name FROM users WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, mapErr("store: user names", err)
	}
	defer rows.Close()
	out := make(map[uuid.UUID]string, len(ids))
	for rows.Next() {
		var (
			id   uuid.UUID
			name string
		)
		if err := rows.Scan(&id, &name); err != nil {
			return nil, mapErr("store: user names", err)
		}
		out[id] = name
	}
	return out, mapErr("store: user names", rows.Err())
}

// List returns a page of users ordered by creation time, and the cursor of
// the next page ("" after the last page).
func (r Users) List(ctx context.Context, opt UserListOptions) ([]User, string, error) {
	limit := pageSize(opt.Limit)
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !opt.IncludeDeleted {
		where = append(where, "deleted_at IS NULL")
	}
	if opt.Status != "" {
		if !opt.Status.Valid() {
			return nil, "", invalidf("user status %q", opt.Status)
		}
		where = append(where, "status = "+arg(opt.Status))
	}
	if opt.TeamID != nil {
		where = append(where, "team_id = "+arg(*opt.TeamID))
	}
	if opt.Cursor != "" {
		t, id, err := decodeUUIDCursor(opt.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) > ("+arg(t)+", "+arg(id)+")")
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+userColumns+` FROM users WHERE `+strings.Join(where, " AND ")+
		` ORDER BY created_at, id LIMIT `+arg(limit+1), args...)
	if err != nil {
		return nil, "", mapErr("store: list users", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return scanUser(row) })
	if err != nil {
		return nil, "", mapErr("store: list users", err)
	}
	next := ""
	if len(users) > limit {
		users = users[:limit]
		last := users[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID.String())
	}
	return users, next, nil
}

// Update changes the fields set in p and returns the updated user. A deleted
// user is ErrNotFound; a team that does not exist is ErrInvalid.
func (r Users) Update(ctx context.Context, id uuid.UUID, p UserPatch) (User, error) {
	if p.TeamID.Set && p.TeamID.Value != nil {
		var u User
		err := r.q.tx(ctx, func(q *Queries) error {
			rs, err := q.lockTeam(ctx, *p.TeamID.Value)
			if err != nil {
				return err
			}
			if !p.RoutingStrategy.Set && rs != nil {
				// Only on joining: saving the same team again keeps a
				// strategy the user was given since.
				var cur *uuid.UUID
				if err := q.db.QueryRow(ctx, `SELECT team_id FROM users WHERE id = $1 AND deleted_at IS NULL`, id).Scan(&cur); err != nil {
					return mapErr("store: update user", err)
				}
				if cur == nil || *cur != *p.TeamID.Value {
					p.RoutingStrategy = Some(*rs)
				}
			}
			u, err = q.Users().update(ctx, id, p)
			return err
		})
		return u, err
	}
	return r.update(ctx, id, p)
}

func (r Users) update(ctx context.Context, id uuid.UUID, p UserPatch) (User, error) {
	var s setList
	if p.Name.Set {
		s.add("name", p.Name.Value)
	}
	if p.Email.Set {
		s.add("email", normalizeEmail(p.Email.Value))
	}
	if p.RoutingStrategy.Set {
		if !p.RoutingStrategy.Value.Valid() {
			return User{}, invalidf("routing strategy %q", p.RoutingStrategy.Value)
		}
		s.add("routing_strategy", p.RoutingStrategy.Value)
	}
	if p.MonthlyBudgetUSD.Set {
		if err := validateBudget(p.MonthlyBudgetUSD.Value); err != nil {
			return User{}, err
		}
		s.add("monthly_budget_usd", p.MonthlyBudgetUSD.Value)
	}
	if p.PreemptThreshold.Set {
		if err := validatePreempt(p.PreemptThreshold.Value); err != nil {
			return User{}, err
		}
		s.add("preempt_threshold", p.PreemptThreshold.Value)
	}
	if p.SeatType.Set {
		if err := validateSeat(p.SeatType.Value); err != nil {
			return User{}, err
		}
		s.add("seat_type", p.SeatType.Value)
	}
	if p.TeamID.Set {
		s.add("team_id", p.TeamID.Value)
	}
	if p.Status.Set {
		if !p.Status.Value.Valid() {
			return User{}, invalidf("user status %q", p.Status.Value)
		}
		s.add("status", p.Status.Value)
	}
	if len(s.sets) == 0 {
		return r.Get(ctx, id)
	}
	s.args = append(s.args, id)
	u, err := scanUser(r.q.db.QueryRow(ctx, `UPDATE users SET `+strings.Join(s.sets, ", ")+
		` WHERE id = $`+strconv.Itoa(len(s.args))+` AND deleted_at IS NULL RETURNING `+userColumns, s.args...))
	return u, mapErr("store: update user", err)
}

// SoftDelete marks a user deleted and disabled and revokes all its keys, in
// one transaction. It returns the keys it revoked (callers invalidate their
// caches with them). Usage rows keep the user's id.
func (r Users) SoftDelete(ctx context.Context, id uuid.UUID) ([]AccessKey, error) {
	var revoked []AccessKey
	err := r.q.tx(ctx, func(q *Queries) error {
		tag, err := q.db.Exec(ctx, `
			UPDATE users SET deleted_at = now(), status = 'disabled'
			WHERE id = $1 AND deleted_at IS NULL`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		rows, err := q.db.Query(ctx, `
			UPDATE access_keys SET status = 'revoked', revoked_at = now()
			WHERE user_id = $1 AND status <> 'revoked'
			RETURNING `+keyColumns, id)
		if err != nil {
			return err
		}
		revoked, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccessKey, error) { return scanKey(row) })
		return err
	})
	if err != nil {
		return nil, mapErr("store: delete user", err)
	}
	return revoked, nil
}
