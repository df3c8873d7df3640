package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
)

// Team groups developers: a user belongs to at most one. Its two monthly
// budgets are rows of the budgets table (scope team, window monthly): the
// team repository writes them with the team and reads them back, and the
// budget machinery (extproc/budget, admin/ingest) enforces them and
// notifies at their thresholds like any other budget.
type Team struct {
	ID   uuid.UUID
	Name string
	// MonthlyBudgetUSD caps the members' Bedrock spend per billing month:
	// the amount of the team's (monthly, bedrock) budget; nil means none.
	MonthlyBudgetUSD *decimal.Decimal
	// PlanBudgetUSD is a monthly budget on the members' Plan traffic at
	// Anthropic's list prices: the amount of the team's (monthly,
	// plan_list) budget; nil means none. PlanBudgetEnforced says whether
	// reaching it acts: true when that budget's action is anything but
	// notify (block, or downgrade or plan_only set through the budgets
	// API), false when it only notifies or there is no Plan budget.
	PlanBudgetUSD      *decimal.Decimal
	PlanBudgetEnforced bool
	// RoutingStrategy is the strategy a user takes on joining the team
	// without naming one; nil means members keep their own.
	RoutingStrategy *RoutingStrategy
	// AllowedModels are the model ids or family aliases members may use;
	// nil means every model.
	AllowedModels []string
	// PreemptThreshold is the members' pre-emptive failover threshold when
	// they have none of their own; nil means the gateway's default.
	PreemptThreshold *float64
	// Members counts the team's users that are not deleted (filled by Get
	// and List).
	Members   int
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt *time.Time
}

// NewTeam holds the fields of a team to create. Each budget given becomes
// a budget row with the table's default thresholds: the Bedrock one with
// action block, the Plan one with block when PlanBudgetEnforced, else
// notify (PlanBudgetEnforced without PlanBudgetUSD is ignored).
type NewTeam struct {
	Name               string
	MonthlyBudgetUSD   *decimal.Decimal
	PlanBudgetUSD      *decimal.Decimal
	PlanBudgetEnforced bool
	RoutingStrategy    *RoutingStrategy
	AllowedModels      []string
	PreemptThreshold   *float64
}

// TeamPatch is a partial update of a team. A budget set to nil deletes its
// row (and its alerts); set to an amount, it updates the row's amount,
// keeping its thresholds and action, or creates the row as NewTeam does.
// PlanBudgetEnforced false makes the Plan budget's action notify; true
// makes a notify action block and keeps any other; without a Plan budget
// it is ignored.
type TeamPatch struct {
	Name               Optional[string]
	MonthlyBudgetUSD   Optional[*decimal.Decimal]
	PlanBudgetUSD      Optional[*decimal.Decimal]
	PlanBudgetEnforced Optional[bool]
	RoutingStrategy    Optional[*RoutingStrategy]
	AllowedModels      Optional[[]string]
	PreemptThreshold   Optional[*float64]
}

// TeamListOptions selects a page of teams, oldest first.
type TeamListOptions struct {
	// Limit is the page size (DefaultPageSize when <= 0, at most MaxPageSize).
	Limit int
	// Cursor continues after the previous page's NextCursor.
	Cursor string
	// IncludeDeleted lists soft-deleted teams too.
	IncludeDeleted bool
	// ID, when set, keeps only that team (a team admin's view of the list).
	ID *uuid.UUID
}

// Teams is the team repository.
type Teams struct{ q *Queries }

// Teams returns the team repository.
func (q *Queries) Teams() Teams { return Teams{q} }

// teamColumns reads a team with its budgets and member count; teamFrom
// joins the budgets (at most one row each: budgets is unique on scope,
// subject, window and metric), so that a list stays one query.
const (
	teamColumns = `t.id, t.name, mb.amount_usd, pb.amount_usd, coalesce(pb.action <> 'notify', false), t.routing_strategy,
	t.allowed_models, t.preempt_threshold,
	(SELECT count(*) FROM users u WHERE u.team_id = t.id AND u.deleted_at IS NULL),
	t.created_at, t.updated_at, t.deleted_at`
	teamFrom = `teams t
	LEFT JOIN budgets mb ON mb.scope = 'team' AND mb.subject_id = t.id AND mb.budget_window = 'monthly' AND mb.metric = 'bedrock'
	LEFT JOIN budgets pb ON pb.scope = 'team' AND pb.subject_id = t.id AND pb.budget_window = 'monthly' AND pb.metric = 'plan_list'`
)

func scanTeam(row pgx.Row) (Team, error) {
	var t Team
	err := row.Scan(&t.ID, &t.Name, &t.MonthlyBudgetUSD, &t.PlanBudgetUSD, &t.PlanBudgetEnforced, &t.RoutingStrategy,
		&t.AllowedModels, &t.PreemptThreshold, &t.Members, &t.CreatedAt, &t.UpdatedAt, &t.DeletedAt)
	return t, err
}

func validateTeamStrategy(rs *RoutingStrategy) error {
	if rs != nil && !rs.Valid() {
		return invalidf("routing strategy %q", *rs)
	}
	return nil
}

// validateAllowedModels checks the list's shape; whether the names are
// models the catalog knows is the caller's (the admin API's) business.
func validateAllowedModels(models []string) error {
	if models == nil {
		return nil
	}
	if len(models) == 0 {
		return invalidf("an allow-list names at least one model (none means every model)")
	}
	seen := make(map[string]bool, len(models))
	for _, m := range models {
		if m == "" || len(m) > 200 {
			return invalidf("allowed model %q", m)
		}
		if seen[m] {
			return invalidf("allowed model %q listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// Create inserts a team. A duplicate name (case-insensitive, among teams not
// deleted) is ErrConflict.
func (r Teams) Create(ctx context.Context, nt NewTeam) (Team, error) {
	for _, err := range []error{validateBudget(nt.MonthlyBudgetUSD), validateBudget(nt.PlanBudgetUSD),
		validateTeamStrategy(nt.RoutingStrategy), validateAllowedModels(nt.AllowedModels), validatePreempt(nt.PreemptThreshold)} {
		if err != nil {
			return Team{}, err
		}
	}
	var t Team
	err := r.q.tx(ctx, func(q *Queries) error {
		var id uuid.UUID
		if err := q.db.QueryRow(ctx, `
			INSERT INTO teams (name, routing_strategy, allowed_models, preempt_threshold)
			VALUES ($1, $2, $3, $4) RETURNING id`,
			nt.Name, nt.RoutingStrategy, nt.AllowedModels, nt.PreemptThreshold).Scan(&id); err != nil {
			return err
		}
		if nt.MonthlyBudgetUSD != nil {
			if err := q.putTeamBudget(ctx, id, BudgetMetricBedrock, nt.MonthlyBudgetUSD, nil); err != nil {
				return err
			}
		}
		if nt.PlanBudgetUSD != nil {
			if err := q.putTeamBudget(ctx, id, BudgetMetricPlanList, nt.PlanBudgetUSD, &nt.PlanBudgetEnforced); err != nil {
				return err
			}
		}
		var err error
		t, err = scanTeam(q.db.QueryRow(ctx, `SELECT `+teamColumns+` FROM `+teamFrom+` WHERE t.id = $1`, id))
		return err
	})
	return t, mapErr("store: create team", err)
}

// putTeamBudget writes the team's monthly budget on metric: amount nil
// deletes it (its alerts go with it); otherwise the row is created with
// the table's default thresholds, or its amount is updated, its
// thresholds kept. enforced (Plan budget only; nil: not given) sets the
// action as TeamPatch describes; a new Bedrock budget blocks.
func (q *Queries) putTeamBudget(ctx context.Context, team uuid.UUID, metric string, amount *decimal.Decimal, enforced *bool) error {
	if amount == nil {
		_, err := q.db.Exec(ctx, `DELETE FROM budgets WHERE scope = 'team' AND subject_id = $1 AND budget_window = 'monthly' AND metric = $2`,
			team, metric)
		return err
	}
	_, err := q.db.Exec(ctx, `
		INSERT INTO budgets (scope, subject_id, budget_window, metric, amount_usd, action)
		VALUES ('team', $1, 'monthly', $2, $3, CASE WHEN $2 = 'bedrock' OR $4::boolean THEN 'block' ELSE 'notify' END)
		ON CONFLICT (scope, subject_id, budget_window, metric) DO UPDATE SET
			amount_usd = excluded.amount_usd, action = `+enforcedAction("$4"),
		team, metric, amount, enforced)
	return err
}

// enforcedAction is the Plan budget's action after plan_budget_enforced,
// the boolean parameter param (NULL: not given): false notifies; true
// blocks a budget that only notified and keeps any other action (block,
// downgrade, plan_only), which the budgets API may have set.
func enforcedAction(param string) string {
	return `CASE WHEN ` + param + `::boolean IS NULL THEN budgets.action WHEN NOT ` + param + `::boolean THEN 'notify'
		WHEN budgets.action = 'notify' THEN 'block' ELSE budgets.action END`
}

// Get returns a team that is not deleted.
func (r Teams) Get(ctx context.Context, id uuid.UUID) (Team, error) {
	t, err := scanTeam(r.q.db.QueryRow(ctx,
		`SELECT `+teamColumns+` FROM `+teamFrom+` WHERE t.id = $1 AND t.deleted_at IS NULL`, id))
	return t, mapErr("store: get team", err)
}

// Names returns the names of the teams among ids, deleted ones included
// (their usage stays): one query for a report's rows.
func (r Teams) Names(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]string, error) {
	rows, err := r.q.db.Query(ctx, `SELECT id, name FROM teams WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, mapErr("store: team names", err)
	}
	defer rows.Close()
	out := make(map[uuid.UUID]string, len(ids))
	for rows.Next() {
		var (
			id   uuid.UUID
			name string
		)
		if err := rows.Scan(&id, &name); err != nil {
			return nil, mapErr("store: team names", err)
		}
		out[id] = name
	}
	return out, mapErr("store: team names", rows.Err())
}

// List returns a page of teams ordered by creation time, and the cursor of
// the next page ("" after the last page).
func (r Teams) List(ctx context.Context, opt TeamListOptions) ([]Team, string, error) {
	limit := pageSize(opt.Limit)
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !opt.IncludeDeleted {
		where = append(where, "t.deleted_at IS NULL")
	}
	if opt.ID != nil {
		where = append(where, "t.id = "+arg(*opt.ID))
	}
	if opt.Cursor != "" {
		ts, id, err := decodeUUIDCursor(opt.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(t.created_at, t.id) > ("+arg(ts)+", "+arg(id)+")")
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+teamColumns+` FROM `+teamFrom+` WHERE `+strings.Join(where, " AND ")+
		` ORDER BY t.created_at, t.id LIMIT `+arg(limit+1), args...)
	if err != nil {
		return nil, "", mapErr("store: list teams", err)
	}
	teams, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Team, error) { return scanTeam(row) })
	if err != nil {
		return nil, "", mapErr("store: list teams", err)
	}
	next := ""
	if len(teams) > limit {
		teams = teams[:limit]
		last := teams[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID.String())
	}
	return teams, next, nil
}

// Update changes the fields set in p and returns the updated team. A deleted
// team is ErrNotFound. Changing the routing strategy does not change the
// members' own: it is the default of users who join later.
func (r Teams) Update(ctx context.Context, id uuid.UUID, p TeamPatch) (Team, error) {
	var s setList
	if p.Name.Set {
		s.add("name", p.Name.Value)
	}
	if p.MonthlyBudgetUSD.Set {
		if err := validateBudget(p.MonthlyBudgetUSD.Value); err != nil {
			return Team{}, err
		}
	}
	if p.PlanBudgetUSD.Set {
		if err := validateBudget(p.PlanBudgetUSD.Value); err != nil {
			return Team{}, err
		}
	}
	budgets := p.MonthlyBudgetUSD.Set || p.PlanBudgetUSD.Set || p.PlanBudgetEnforced.Set
	if p.RoutingStrategy.Set {
		if err := validateTeamStrategy(p.RoutingStrategy.Value); err != nil {
			return Team{}, err
		}
		s.add("routing_strategy", p.RoutingStrategy.Value)
	}
	if p.AllowedModels.Set {
		if err := validateAllowedModels(p.AllowedModels.Value); err != nil {
			return Team{}, err
		}
		s.add("allowed_models", p.AllowedModels.Value)
	}
	if p.PreemptThreshold.Set {
		if err := validatePreempt(p.PreemptThreshold.Value); err != nil {
			return Team{}, err
		}
		s.add("preempt_threshold", p.PreemptThreshold.Value)
	}
	if len(s.sets) == 0 && !budgets {
		return r.Get(ctx, id)
	}
	if len(s.sets) == 0 {
		// Only budgets change: the team's updated_at still says so, and
		// the UPDATE checks that the team exists and is not deleted.
		s.sets = append(s.sets, "updated_at = now()")
	}
	s.args = append(s.args, id)
	var t Team
	err := r.q.tx(ctx, func(q *Queries) error {
		if err := q.db.QueryRow(ctx, `UPDATE teams SET `+strings.Join(s.sets, ", ")+`
			WHERE id = $`+strconv.Itoa(len(s.args))+` AND deleted_at IS NULL RETURNING id`, s.args...).Scan(&id); err != nil {
			return err
		}
		if p.MonthlyBudgetUSD.Set {
			if err := q.putTeamBudget(ctx, id, BudgetMetricBedrock, p.MonthlyBudgetUSD.Value, nil); err != nil {
				return err
			}
		}
		var enforced *bool
		if p.PlanBudgetEnforced.Set {
			enforced = &p.PlanBudgetEnforced.Value
		}
		switch {
		case p.PlanBudgetUSD.Set:
			if err := q.putTeamBudget(ctx, id, BudgetMetricPlanList, p.PlanBudgetUSD.Value, enforced); err != nil {
				return err
			}
		case enforced != nil:
			// The amount stays; only the action may change, and only if
			// the team has a Plan budget.
			if _, err := q.db.Exec(ctx, `UPDATE budgets SET action = `+enforcedAction("$2")+`
				WHERE scope = 'team' AND subject_id = $1 AND budget_window = 'monthly' AND metric = 'plan_list'
				  AND action <> `+enforcedAction("$2"), id, *enforced); err != nil {
				return err
			}
		}
		var err error
		t, err = scanTeam(q.db.QueryRow(ctx, `SELECT `+teamColumns+` FROM `+teamFrom+` WHERE t.id = $1`, id))
		return err
	})
	return t, mapErr("store: update team", err)
}

// SoftDelete marks a team deleted; usage rows keep its id and name. A team
// that still has members (users not deleted) or team admins is not deleted:
// ErrConflict says how many, so that nobody silently loses the team's
// allow-list or budget. Move or remove them first.
func (r Teams) SoftDelete(ctx context.Context, id uuid.UUID) error {
	err := r.q.tx(ctx, func(q *Queries) error {
		// The row lock orders this against a user joining the team
		// (lockTeam), so no member arrives between the count and the delete.
		var members, admins int
		if err := q.db.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM users WHERE team_id = t.id AND deleted_at IS NULL),
			       (SELECT count(*) FROM admins WHERE team_id = t.id)
			FROM teams t WHERE t.id = $1 AND t.deleted_at IS NULL FOR UPDATE`, id).Scan(&members, &admins); err != nil {
			return err
		}
		if members > 0 || admins > 0 {
			return fmt.Errorf("%w: the team still has %d member(s) and %d team admin(s); move them to another team or remove them first",
				ErrConflict, members, admins)
		}
		_, err := q.db.Exec(ctx, `UPDATE teams SET deleted_at = now() WHERE id = $1`, id)
		return err
	})
	return mapErr("store: delete team", err)
}

// lockTeam returns the routing strategy of a team that exists and is not
// deleted, holding a share lock on its row for the rest of the transaction
// (SoftDelete waits for it). An unknown or deleted team is ErrInvalid: the
// caller names it in a user's team_id.
func (q *Queries) lockTeam(ctx context.Context, id uuid.UUID) (*RoutingStrategy, error) {
	var rs *RoutingStrategy
	err := q.db.QueryRow(ctx, `SELECT routing_strategy FROM teams WHERE id = $1 AND deleted_at IS NULL FOR SHARE`, id).Scan(&rs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, invalidf("team %s does not exist", id)
	}
	return rs, mapErr("store: look up team", err)
}
