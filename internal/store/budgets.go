package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
)

// Budget scopes, windows, metrics and actions, as the budgets table checks
// them (docs/budgets.md).
const (
	BudgetScopeKey  = "key"
	BudgetScopeUser = "user"
	BudgetScopeTeam = "team"

	BudgetDaily   = "daily"
	BudgetWeekly  = "weekly"
	BudgetMonthly = "monthly"

	// BudgetMetricBedrock counts Bedrock spend, BudgetMetricPlanList Plan
	// traffic at Anthropic's list prices (cost_usd of provider anthropic
	// rows), BudgetMetricAll both.
	BudgetMetricBedrock  = "bedrock"
	BudgetMetricPlanList = "plan_list"
	BudgetMetricAll      = "all"

	BudgetBlock     = "block"
	BudgetDowngrade = "downgrade"
	BudgetPlanOnly  = "plan_only"
	BudgetNotify    = "notify"
)

// Budget is one stored budget. A team's monthly_budget_usd and
// plan_budget_usd (Teams) are budgets too: (team, monthly, bedrock) and
// (team, monthly, plan_list).
type Budget struct {
	ID        uuid.UUID
	Scope     string
	SubjectID uuid.UUID
	Window    string
	Metric    string
	AmountUSD decimal.Decimal
	// Thresholds are percentages (1..100) that notify once per window.
	Thresholds []int
	Action     string
	// Downgrade maps a requested model (id or family alias) to the model
	// served, for action downgrade.
	Downgrade map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Validate checks what the table would reject, with messages for the API.
func (b Budget) Validate() error {
	switch b.Scope {
	case BudgetScopeKey, BudgetScopeUser, BudgetScopeTeam:
	default:
		return invalidf("budget scope %q: want key, user or team", b.Scope)
	}
	switch b.Window {
	case BudgetDaily, BudgetWeekly, BudgetMonthly:
	default:
		return invalidf("budget window %q: want daily, weekly or monthly", b.Window)
	}
	switch b.Metric {
	case BudgetMetricBedrock, BudgetMetricPlanList, BudgetMetricAll:
	default:
		return invalidf("budget metric %q: want bedrock, plan_list or all", b.Metric)
	}
	switch b.Action {
	case BudgetBlock, BudgetDowngrade, BudgetPlanOnly, BudgetNotify:
	default:
		return invalidf("budget action %q: want block, downgrade, plan_only or notify", b.Action)
	}
	if b.SubjectID == uuid.Nil {
		return invalidf("budget subject_id is required")
	}
	if b.AmountUSD.IsNegative() || b.AmountUSD.GreaterThanOrEqual(decimal.New(1, 12)) || !b.AmountUSD.Equal(b.AmountUSD.Round(2)) {
		return invalidf("budget amount_usd %s: want 0 to 999999999999.99 with at most 2 decimals", b.AmountUSD)
	}
	for _, t := range b.Thresholds {
		if t < 1 || t > 100 {
			return invalidf("budget threshold %d: want 1 to 100", t)
		}
	}
	if b.Action == BudgetDowngrade && len(b.Downgrade) == 0 {
		return invalidf("budget action downgrade needs a downgrade map")
	}
	for from, to := range b.Downgrade {
		if from == "" || to == "" {
			return invalidf("budget downgrade map: empty model name")
		}
	}
	return nil
}

// Budgets is the budget repository.
type Budgets struct{ q *Queries }

// Budgets returns the budget repository.
func (q *Queries) Budgets() Budgets { return Budgets{q} }

const budgetColumns = `id, scope, subject_id, budget_window, metric, amount_usd, thresholds, action, downgrade_map, created_at, updated_at`

func scanBudget(row pgx.Row) (Budget, error) {
	var b Budget
	var th []int16
	var dm []byte
	err := row.Scan(&b.ID, &b.Scope, &b.SubjectID, &b.Window, &b.Metric, &b.AmountUSD, &th, &b.Action, &dm, &b.CreatedAt, &b.UpdatedAt)
	if err != nil {
		return b, err
	}
	b.Thresholds = make([]int, len(th))
	for i, t := range th {
		b.Thresholds[i] = int(t)
	}
	if err := json.Unmarshal(dm, &b.Downgrade); err != nil {
		return b, err
	}
	if b.Downgrade == nil {
		b.Downgrade = map[string]string{}
	}
	return b, nil
}

func budgetArgs(b Budget) ([]int16, []byte, error) {
	th := make([]int16, len(b.Thresholds))
	for i, t := range b.Thresholds {
		th[i] = int16(t)
	}
	dm := b.Downgrade
	if dm == nil {
		dm = map[string]string{}
	}
	js, err := json.Marshal(dm)
	return th, js, err
}

// Create stores a new budget. A second budget for the same subject, window
// and metric is ErrConflict. The caller checks that the subject exists.
func (r Budgets) Create(ctx context.Context, b Budget) (Budget, error) {
	if err := b.Validate(); err != nil {
		return Budget{}, err
	}
	th, dm, err := budgetArgs(b)
	if err != nil {
		return Budget{}, err
	}
	out, err := scanBudget(r.q.db.QueryRow(ctx, `
		INSERT INTO budgets (scope, subject_id, budget_window, metric, amount_usd, thresholds, action, downgrade_map)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		RETURNING `+budgetColumns, b.Scope, b.SubjectID, b.Window, b.Metric, b.AmountUSD, th, b.Action, dm))
	return out, mapErr("store: create budget", err)
}

// Update replaces a budget's window, metric, amount, thresholds, action and
// downgrade map (scope and subject do not change).
func (r Budgets) Update(ctx context.Context, b Budget) (Budget, error) {
	if err := b.Validate(); err != nil {
		return Budget{}, err
	}
	th, dm, err := budgetArgs(b)
	if err != nil {
		return Budget{}, err
	}
	out, err := scanBudget(r.q.db.QueryRow(ctx, `
		UPDATE budgets SET budget_window = $2, metric = $3, amount_usd = $4, thresholds = $5, action = $6, downgrade_map = $7
		WHERE id = $1
		RETURNING `+budgetColumns, b.ID, b.Window, b.Metric, b.AmountUSD, th, b.Action, dm))
	return out, mapErr("store: update budget", err)
}

// Get returns a budget (ErrNotFound if none).
func (r Budgets) Get(ctx context.Context, id uuid.UUID) (Budget, error) {
	b, err := scanBudget(r.q.db.QueryRow(ctx, `SELECT `+budgetColumns+` FROM budgets WHERE id = $1`, id))
	return b, mapErr("store: get budget", err)
}

// Delete removes a budget and its alerts (ErrNotFound if none).
func (r Budgets) Delete(ctx context.Context, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM budgets WHERE id = $1`, id)
	if err != nil {
		return mapErr("store: delete budget", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// List returns the budgets, optionally of one scope ("" for every scope)
// and subject (uuid.Nil for every subject), oldest first.
func (r Budgets) List(ctx context.Context, scope string, subject uuid.UUID) ([]Budget, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+budgetColumns+` FROM budgets
		WHERE ($1 = '' OR scope = $1) AND ($2::uuid IS NULL OR subject_id = $2)
		ORDER BY created_at, id`, scope, nullUUID(subject))
	if err != nil {
		return nil, mapErr("store: list budgets", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Budget, error) { return scanBudget(row) })
	return out, mapErr("store: list budgets", err)
}

func nullUUID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// ForRequest returns every budget that applies to a request of keyID by
// userID: the key's, the user's and the user's team's (the team the user
// is in now, its monthly_budget_usd and plan_budget_usd included: they are
// budget rows). One query.
func (r Budgets) ForRequest(ctx context.Context, keyID, userID uuid.UUID) ([]Budget, error) {
	return r.forSubjects(ctx, []uuid.UUID{keyID}, []uuid.UUID{userID})
}

// ForDeveloper returns the budgets a developer sees about themselves: the
// user's, the user's team's and, when keyID is not uuid.Nil, that key's if
// it is one of the user's (a key of someone else adds nothing). Ordered
// like ForRequest. One query.
func (r Budgets) ForDeveloper(ctx context.Context, userID, keyID uuid.UUID) ([]Budget, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+budgetColumns+` FROM budgets
		WHERE scope = 'key' AND subject_id = $2 AND subject_id IN (SELECT id FROM access_keys WHERE user_id = $1)
		   OR scope = 'user' AND subject_id = $1
		   OR scope = 'team' AND subject_id IN (SELECT team_id FROM users WHERE id = $1 AND team_id IS NOT NULL)
		ORDER BY scope, subject_id, budget_window, metric`, userID, keyID)
	if err != nil {
		return nil, mapErr("store: budgets of a developer", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Budget, error) { return scanBudget(row) })
	return out, mapErr("store: budgets of a developer", err)
}

// ForUsage returns every budget that counts usage of any of keys or users
// (their keys', users' and the users' teams'), for the ingester.
func (r Budgets) ForUsage(ctx context.Context, keys, users []uuid.UUID) ([]Budget, error) {
	return r.forSubjects(ctx, keys, users)
}

func (r Budgets) forSubjects(ctx context.Context, keys, users []uuid.UUID) ([]Budget, error) {
	rows, err := r.q.db.Query(ctx, `SELECT `+budgetColumns+` FROM budgets
		WHERE scope = 'key' AND subject_id = ANY($1)
		   OR scope = 'user' AND subject_id = ANY($2)
		   OR scope = 'team' AND subject_id IN (SELECT team_id FROM users WHERE id = ANY($2) AND team_id IS NOT NULL)
		ORDER BY scope, subject_id, budget_window, metric`, keys, users)
	if err != nil {
		return nil, mapErr("store: budgets of a request", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Budget, error) { return scanBudget(row) })
	return out, mapErr("store: budgets of a request", err)
}

// Spend returns the exact cost over [from, to) of what a budget of scope
// and subject counts on metric: whole hours from the hourly rollups, the
// partial hours at either end (time zones with half-hour offsets) from the
// raw events. A team counts the usage of its current members.
func (r Budgets) Spend(ctx context.Context, scope string, subject uuid.UUID, metric string, from, to time.Time) (decimal.Decimal, error) {
	var providers []string
	switch metric {
	case BudgetMetricBedrock:
		providers = []string{string(ProviderBedrock)}
	case BudgetMetricPlanList:
		providers = []string{string(ProviderAnthropic)}
	case BudgetMetricAll:
		providers = []string{string(ProviderBedrock), string(ProviderAnthropic)}
	default:
		return decimal.Zero, invalidf("budget metric %q", metric)
	}
	var who string
	switch scope {
	case BudgetScopeKey:
		who = `access_key_id = $1`
	case BudgetScopeUser:
		who = `user_id = $1`
	case BudgetScopeTeam:
		who = `user_id IN (SELECT id FROM users WHERE team_id = $1)`
	default:
		return decimal.Zero, invalidf("budget scope %q", scope)
	}
	hourStart := from.Truncate(time.Hour)
	if hourStart.Before(from) {
		hourStart = hourStart.Add(time.Hour)
	}
	hourEnd := to.Truncate(time.Hour)
	if !hourStart.Before(hourEnd) {
		hourStart, hourEnd = to, to // shorter than an hour: all from the raw events
	}
	var spend decimal.Decimal
	err := r.q.db.QueryRow(ctx, `
		SELECT coalesce((SELECT sum(cost_usd) FROM usage_hourly
		                 WHERE `+who+` AND provider = ANY($2) AND bucket >= $3 AND bucket < $4), 0)
		     + coalesce((SELECT sum(cost_usd) FROM usage_events
		                 WHERE `+who+` AND provider = ANY($2)
		                   AND (event_time >= $5 AND event_time < $3 OR event_time >= $4 AND event_time < $6)), 0)`,
		subject, providers, hourStart, hourEnd, from, to).Scan(&spend)
	if err != nil {
		return decimal.Zero, mapErr("store: budget spend", err)
	}
	return spend, nil
}

// RecordAlert records that a budget's threshold notified in the window
// starting on the local date windowStart ("YYYY-MM-DD"). It reports false
// when that was already recorded: with the notification enqueued in the
// same transaction, each threshold notifies once per window whatever the
// number of ingesters.
func (r Budgets) RecordAlert(ctx context.Context, budgetID uuid.UUID, windowStart string, threshold int) (bool, error) {
	var one int
	err := r.q.db.QueryRow(ctx, `
		INSERT INTO budget_alerts (budget_id, window_start, threshold) VALUES ($1, $2::date, $3)
		ON CONFLICT DO NOTHING RETURNING 1`, budgetID, windowStart, threshold).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr("store: record budget alert", err)
	}
	return true, nil
}

// SubjectUsers returns the users whose key lookups a budget of scope and
// subject reaches: a key's user, the user, or a team's current members.
// A subject that does not exist (a deleted team, an unknown key or user)
// is ErrNotFound.
func (r Budgets) SubjectUsers(ctx context.Context, scope string, subject uuid.UUID) ([]uuid.UUID, error) {
	var q string
	switch scope {
	case BudgetScopeKey:
		q = `SELECT user_id FROM access_keys WHERE id = $1`
	case BudgetScopeUser:
		q = `SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL`
	case BudgetScopeTeam:
		var ok bool
		if err := r.q.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1 AND deleted_at IS NULL)`, subject).Scan(&ok); err != nil {
			return nil, mapErr("store: budget subject", err)
		}
		if !ok {
			return nil, ErrNotFound
		}
		q = `SELECT id FROM users WHERE team_id = $1 AND deleted_at IS NULL`
	default:
		return nil, invalidf("budget scope %q", scope)
	}
	rows, err := r.q.db.Query(ctx, q, subject)
	if err != nil {
		return nil, mapErr("store: budget subject", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, mapErr("store: budget subject", err)
	}
	if len(ids) == 0 && scope != BudgetScopeTeam {
		return nil, ErrNotFound
	}
	return ids, nil
}
