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

// The queries behind the admin dashboard's pages that no single repository
// owns: the developer list (users with their spend, keys and last use),
// sessions with their models, and the token sums the cost split is
// computed from. Each answers from the rollups, never by scanning a month
// of raw events for every user.

// DeveloperSort orders the developer list.
type DeveloperSort string

// Developer list orders.
const (
	SortByName     DeveloperSort = "name"
	SortByCreated  DeveloperSort = "created"
	SortBySpend    DeveloperSort = "spend"
	SortByPlanCost DeveloperSort = "plan_cost"
	SortByRequests DeveloperSort = "requests"
	SortByLastUsed DeveloperSort = "last_used"
)

// Valid reports whether s is a known order.
func (s DeveloperSort) Valid() bool {
	switch s {
	case SortByName, SortByCreated, SortBySpend, SortByPlanCost, SortByRequests, SortByLastUsed:
		return true
	}
	return false
}

// DeveloperQuery selects a page of the developer list.
type DeveloperQuery struct {
	// Search matches a substring of the name or email, case-insensitively.
	Search   string
	Status   UserStatus
	Strategy RoutingStrategy
	Sort     DeveloperSort
	Desc     bool
	// TeamID, when set, keeps the team's members only.
	TeamID *uuid.UUID
	// From and To are the spend window (the billing month): hour buckets
	// starting in [From, To).
	From, To      time.Time
	Limit, Offset int
}

// Developer is a user with what the developer list shows of it.
type Developer struct {
	User
	// Keys counts all of the user's keys; ActiveKeys those not revoked.
	Keys, ActiveKeys int
	// LastUsedAt is the latest use of any of the user's keys.
	LastUsedAt     *time.Time
	Requests       int64
	PlanCostUSD    decimal.Decimal
	BedrockCostUSD decimal.Decimal
}

// Developers returns a page of users (not deleted) matching q, with their
// usage in [q.From, q.To), and the number of users matching q. One
// statement: the spend of every user comes from the per-user rollup,
// so sorting by spend needs no second pass and no request per user.
func (u Usage) Developers(ctx context.Context, q DeveloperQuery) ([]Developer, int, error) {
	if q.Sort == "" {
		q.Sort = SortByName
	}
	if !q.Sort.Valid() {
		return nil, 0, invalidf("developer sort %q", q.Sort)
	}
	if !q.From.Before(q.To) {
		return nil, 0, invalidf("empty time range [%s, %s)", q.From, q.To)
	}
	args := []any{q.From, q.To}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	parts := userRowsSQL(q.From, q.To, &args, "")
	where := []string{"u.deleted_at IS NULL"}
	if q.Search != "" {
		p := "%" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(q.Search) + "%"
		a := arg(p)
		where = append(where, "(u.name ILIKE "+a+" OR u.email ILIKE "+a+")")
	}
	if q.Status != "" {
		if !q.Status.Valid() {
			return nil, 0, invalidf("user status %q", q.Status)
		}
		where = append(where, "u.status = "+arg(q.Status))
	}
	if q.Strategy != "" {
		if !q.Strategy.Valid() {
			return nil, 0, invalidf("routing strategy %q", q.Strategy)
		}
		where = append(where, "u.routing_strategy = "+arg(q.Strategy))
	}
	if q.TeamID != nil {
		where = append(where, "u.team_id = "+arg(*q.TeamID))
	}
	dir := " ASC"
	if q.Desc {
		dir = " DESC"
	}
	order := map[DeveloperSort]string{
		SortByName: "lower(u.name)" + dir, SortByCreated: "u.created_at" + dir,
		SortBySpend: "coalesce(s.bedrock, 0)" + dir, SortByPlanCost: "coalesce(s.plan, 0)" + dir,
		SortByRequests: "coalesce(s.requests, 0)" + dir, SortByLastUsed: "k.last_used" + dir + " NULLS LAST",
	}[q.Sort]
	limit := pageSize(q.Limit)
	rows, err := u.q.db.Query(ctx, `
		WITH s AS (
			SELECT user_id, sum(requests)::bigint AS requests, sum(plan_cost_usd) AS plan,
				sum(bedrock_cost_usd) AS bedrock
			FROM (`+parts+`) p GROUP BY user_id
		), k AS (
			SELECT user_id, count(*) AS keys, count(*) FILTER (WHERE status <> 'revoked') AS active,
				max(last_used_at) AS last_used
			FROM access_keys GROUP BY user_id
		)
		SELECT u.id, u.name, u.email, u.routing_strategy, u.monthly_budget_usd, u.status, u.created_at,
			u.updated_at, u.deleted_at, u.team_id, coalesce(k.keys, 0), coalesce(k.active, 0), k.last_used,
			coalesce(s.requests, 0), coalesce(s.plan, 0), coalesce(s.bedrock, 0), count(*) OVER ()
		FROM users u LEFT JOIN s ON s.user_id = u.id LEFT JOIN k ON k.user_id = u.id
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+order+`, u.id LIMIT `+arg(limit)+` OFFSET `+arg(max(q.Offset, 0)), args...)
	if err != nil {
		return nil, 0, mapErr("store: developers", err)
	}
	total := 0
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Developer, error) {
		var d Developer
		var keys, active int64
		err := row.Scan(&d.ID, &d.Name, &d.Email, &d.RoutingStrategy, &d.MonthlyBudgetUSD, &d.Status,
			&d.CreatedAt, &d.UpdatedAt, &d.DeletedAt, &d.TeamID, &keys, &active, &d.LastUsedAt,
			&d.Requests, &d.PlanCostUSD, &d.BedrockCostUSD, &total)
		d.Keys, d.ActiveKeys = int(keys), int(active)
		return d, err
	})
	if err != nil {
		return nil, 0, mapErr("store: developers", err)
	}
	return out, total, nil
}

// UsersByID returns the users (deleted ones included) with these ids, for
// labelling usage groups.
func (r Users) UsersByID(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]User, error) {
	out := make(map[uuid.UUID]User, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+userColumns+` FROM users WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, mapErr("store: users by id", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return scanUser(row) })
	if err != nil {
		return nil, mapErr("store: users by id", err)
	}
	for _, u := range users {
		out[u.ID] = u
	}
	return out, nil
}

// Session is one Claude Code session of a user: the requests that carried
// the same x-claude-code-session-id.
type Session struct {
	ID              string
	FirstAt, LastAt time.Time
	// Models are the requested models, by name.
	Models []string
	// Agents counts the distinct agent ids, the main agent ('') included.
	Agents int64
	// CostUSD is the stored cost, Plan and Bedrock together.
	CostUSD decimal.Decimal
	UsageTotals
}

// Sessions returns a user's sessions with events in [from, to) (only
// those events are summed), the most recently active first or, with
// SessionsByCost, the most expensive first; at most MaxPageSize. Requests
// without a session id are left out. It reads the user's rows through the
// (user_id, event_time) index: a month of a busy developer is tens of
// thousands of rows.
func (u Usage) Sessions(ctx context.Context, userID uuid.UUID, from, to time.Time, limit int, sort SessionSort) ([]Session, error) {
	if !from.Before(to) {
		return nil, invalidf("empty time range [%s, %s)", from, to)
	}
	order := "max(event_time) DESC, session_id"
	switch sort {
	case SessionsByRecent, "":
	case SessionsByCost:
		order = "sum(cost_usd) DESC, max(event_time) DESC, session_id"
	default:
		return nil, invalidf("session order %q", sort)
	}
	rows, err := u.q.db.Query(ctx, `
		SELECT session_id, min(event_time), max(event_time), array_agg(DISTINCT requested_model ORDER BY requested_model),
			count(DISTINCT agent_id), sum(cost_usd),
			`+eventTotalsSelect+`
		FROM usage_events
		WHERE user_id = $1 AND event_time >= $2 AND event_time < $3 AND session_id <> ''
		GROUP BY session_id ORDER BY `+order+` LIMIT $4`,
		userID, from, to, pageSize(limit))
	if err != nil {
		return nil, mapErr("store: sessions", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Session, error) {
		var (
			s             Session
			plan, bedrock *decimal.Decimal
		)
		err := row.Scan(append([]any{&s.ID, &s.FirstAt, &s.LastAt, &s.Models, &s.Agents, &s.CostUSD},
			totalsDest(&s.UsageTotals, &plan, &bedrock)...)...)
		setCosts(&s.UsageTotals, plan, bedrock)
		s.FirstAt, s.LastAt = s.FirstAt.UTC(), s.LastAt.UTC()
		return s, err
	})
	return out, mapErr("store: sessions", err)
}

// ModelTokens are the token and cost sums of one model and provider over a
// range, with the range of hours they fall in.
type ModelTokens struct {
	Model    string
	Provider Provider
	// FirstHour and LastHour are the first and last hour buckets with
	// usage (for the rates in effect then).
	FirstHour, LastHour time.Time
	UsageTotals
	// CostUSD is the stored cost (Plan and Bedrock together).
	CostUSD decimal.Decimal
}

// TokensByModel sums the hour buckets starting in [from, to) by model and
// provider, for all users (the all-users rollup) or one user.
func (u Usage) TokensByModel(ctx context.Context, userID *uuid.UUID, from, to time.Time) ([]ModelTokens, error) {
	if !from.Before(to) {
		return nil, invalidf("empty time range [%s, %s)", from, to)
	}
	table, filter, args := "usage_hourly_all", "", []any{from, to}
	if userID != nil {
		table, filter = "usage_hourly", " AND user_id = $3"
		args = append(args, *userID)
	}
	rows, err := u.q.db.Query(ctx, `SELECT model, provider, min(bucket), max(bucket), `+totalsSelect+`, sum(cost_usd)
		FROM `+table+` WHERE bucket >= $1 AND bucket < $2`+filter+`
		GROUP BY 1, 2 ORDER BY 1, 2`, args...)
	if err != nil {
		return nil, mapErr("store: tokens by model", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ModelTokens, error) {
		var (
			m             ModelTokens
			plan, bedrock *decimal.Decimal
		)
		err := row.Scan(append(append([]any{&m.Model, &m.Provider, &m.FirstHour, &m.LastHour},
			totalsDest(&m.UsageTotals, &plan, &bedrock)...), &m.CostUSD)...)
		setCosts(&m.UsageTotals, plan, bedrock)
		m.FirstHour, m.LastHour = m.FirstHour.UTC(), m.LastHour.UTC()
		return m, err
	})
	return out, mapErr("store: tokens by model", err)
}

// TopUserScore is what TopUsers ranks by.
type TopUserScore string

// Top user scores.
const (
	// ScoreCost is the Bedrock spend plus the Plan list-price equivalent.
	ScoreCost     TopUserScore = "cost"
	ScoreBedrock  TopUserScore = "bedrock"
	ScorePlan     TopUserScore = "plan"
	ScoreRequests TopUserScore = "requests"
)

// TopUsers returns the limit users with the highest score over the hour
// buckets starting in [from, to), highest first and then by user id (as
// text), with their totals (Key is the user id), and the number of users
// with any usage in the range. The ranking happens in Postgres: only the
// top rows travel, whatever the number of users.
func (u Usage) TopUsers(ctx context.Context, from, to time.Time, by TopUserScore, limit int) ([]UsageGroup, int, error) {
	score, ok := map[TopUserScore]string{
		ScoreCost: "plan + bedrock", ScoreBedrock: "bedrock", ScorePlan: "plan", ScoreRequests: "requests",
	}[by]
	if !ok {
		return nil, 0, invalidf("top users by %q", by)
	}
	if !from.Before(to) {
		return nil, 0, invalidf("empty time range [%s, %s)", from, to)
	}
	args := []any{from, to}
	rows := userRowsSQL(from, to, &args, "")
	args = append(args, pageSize(limit))
	r, err := u.q.db.Query(ctx, `
		WITH s AS (
			SELECT user_id, sum(requests)::bigint AS requests, sum(bedrock_requests)::bigint AS bedrock_requests,
				sum(input_tokens)::bigint AS input, sum(output_tokens)::bigint AS output,
				sum(cache_read_tokens)::bigint AS cache_read, sum(cache_write_5m_tokens)::bigint AS w5m,
				sum(cache_write_1h_tokens)::bigint AS w1h, sum(plan_cost_usd) AS plan,
				sum(bedrock_cost_usd) AS bedrock, sum(fallbacks)::bigint AS fallbacks,
				sum(errors)::bigint AS errors, sum(aborted)::bigint AS aborted
			FROM (`+rows+`) p GROUP BY user_id HAVING sum(requests) <> 0
		)
		SELECT user_id::text, requests, bedrock_requests, input, output, cache_read, w5m, w1h, plan, bedrock,
			fallbacks, errors, aborted, count(*) OVER ()
		FROM s ORDER BY `+score+` DESC, user_id LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, mapErr("store: top users", err)
	}
	active := 0
	out, err := pgx.CollectRows(r, func(row pgx.CollectableRow) (UsageGroup, error) {
		var (
			g             UsageGroup
			plan, bedrock *decimal.Decimal
		)
		err := row.Scan(append(append([]any{&g.Key}, totalsDest(&g.UsageTotals, &plan, &bedrock)...), &active)...)
		setCosts(&g.UsageTotals, plan, bedrock)
		return g, err
	})
	if err != nil {
		return nil, 0, mapErr("store: top users", err)
	}
	return out, active, nil
}
