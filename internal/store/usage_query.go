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

// UsageGroupBy is the dimension of a usage summary.
type UsageGroupBy string

// Usage summary dimensions.
const (
	GroupByHour     UsageGroupBy = "hour"
	GroupByDay      UsageGroupBy = "day"
	GroupByModel    UsageGroupBy = "model"
	GroupByProvider UsageGroupBy = "provider"
	GroupBySession  UsageGroupBy = "session"
	// GroupByUser keys groups by user id.
	GroupByUser UsageGroupBy = "user"
	// GroupByKey keys groups by access key id.
	GroupByKey UsageGroupBy = "key"
	// GroupByFallbackReason groups the fallback requests by their reason.
	GroupByFallbackReason UsageGroupBy = "fallback_reason"
	// GroupByTeam keys groups by the team the user was in when the request
	// was served ("" for requests of users in no team).
	GroupByTeam UsageGroupBy = "team"
)

// Valid reports whether g is a known dimension.
func (g UsageGroupBy) Valid() bool {
	switch g {
	case GroupByHour, GroupByDay, GroupByModel, GroupByProvider, GroupBySession,
		GroupByUser, GroupByKey, GroupByFallbackReason, GroupByTeam:
		return true
	}
	return false
}

// UsageSummaryQuery selects what UsageSummary aggregates.
type UsageSummaryQuery struct {
	// UserID and AccessKeyID restrict to one user or key when set.
	UserID      *uuid.UUID
	AccessKeyID *uuid.UUID
	// TeamID restricts to the requests served while their user was in the
	// team. The rollups do not know teams: with it, and when grouping by
	// team, the raw events in [From, To) are summed.
	TeamID *uuid.UUID
	// From and To bound the time range [From, To).
	From, To time.Time
	GroupBy  UsageGroupBy
	// Location, when set to a zone other than UTC, makes day groups the
	// calendar days of that zone (the billing time zone): they are summed
	// from the hourly rollups, the hours starting in [From, To).
	Location *time.Location
}

// UsageTotals are the sums of a group of usage events. Plan cost (list-price
// equivalent) and Bedrock cost (spend) are kept apart.
type UsageTotals struct {
	Requests           int64
	BedrockRequests    int64
	InputTokens        int64
	OutputTokens       int64
	CacheReadTokens    int64
	CacheWrite5mTokens int64
	CacheWrite1hTokens int64
	PlanCostUSD        decimal.Decimal
	BedrockCostUSD     decimal.Decimal
	Fallbacks          int64
	// Errors counts requests answered with status 0 or >= 400.
	Errors  int64
	Aborted int64
}

// UsageGroup is one row of a usage summary.
type UsageGroup struct {
	// Key is the model, provider or session id; for hour and day it is the
	// bucket in RFC 3339.
	Key string
	// Bucket is the start of the UTC hour or day (hour and day only).
	Bucket time.Time
	// FirstAt and LastAt bound a session's events (session only).
	FirstAt, LastAt time.Time
	UsageTotals
}

const totalsSelect = `sum(requests)::bigint, coalesce(sum(requests) FILTER (WHERE provider = 'bedrock'), 0)::bigint,
	sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint,
	sum(cache_write_5m_tokens)::bigint, sum(cache_write_1h_tokens)::bigint,
	sum(cost_usd) FILTER (WHERE provider = 'anthropic'), sum(cost_usd) FILTER (WHERE provider = 'bedrock'),
	sum(fallbacks)::bigint, sum(errors)::bigint, sum(aborted)::bigint`

// userRowsSQL's rows have the costs of both providers in columns of their
// own.
const userTotalsSelect = `sum(requests)::bigint, sum(bedrock_requests)::bigint,
	sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint,
	sum(cache_write_5m_tokens)::bigint, sum(cache_write_1h_tokens)::bigint,
	sum(plan_cost_usd), sum(bedrock_cost_usd),
	sum(fallbacks)::bigint, sum(errors)::bigint, sum(aborted)::bigint`

// The raw events have flags where the rollups have counters.
const eventTotalsSelect = `count(*), count(*) FILTER (WHERE provider = 'bedrock'),
	sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint,
	sum(cache_write_5m_tokens)::bigint, sum(cache_write_1h_tokens)::bigint,
	sum(cost_usd) FILTER (WHERE provider = 'anthropic'), sum(cost_usd) FILTER (WHERE provider = 'bedrock'),
	count(*) FILTER (WHERE fallback), count(*) FILTER (WHERE status = 0 OR status >= 400),
	count(*) FILTER (WHERE aborted)`

func totalsDest(t *UsageTotals, plan, bedrock **decimal.Decimal) []any {
	return []any{&t.Requests, &t.BedrockRequests, &t.InputTokens, &t.OutputTokens, &t.CacheReadTokens,
		&t.CacheWrite5mTokens, &t.CacheWrite1hTokens, plan, bedrock, &t.Fallbacks, &t.Errors, &t.Aborted}
}

func setCosts(t *UsageTotals, plan, bedrock *decimal.Decimal) {
	t.PlanCostUSD, t.BedrockCostUSD = decimal.Zero, decimal.Zero
	if plan != nil {
		t.PlanCostUSD = *plan
	}
	if bedrock != nil {
		t.BedrockCostUSD = *bedrock
	}
}

// Summary aggregates usage over [From, To) by one dimension. Hour, model and
// provider read the hourly rollups (buckets starting in the range), or the
// daily ones when both bounds fall on UTC midnight; day reads the daily
// rollups (days starting in the range); without a user or key filter all
// four read the all-users hourly rollup instead, with the same result;
// session groups the raw events (key "" gathers events without a
// session). User groups read the per-user rollup for whole UTC days
// (userRowsSQL) and the hourly one for the rest (buckets starting in the
// range), leaving out users whose counters sum to zero; key
// groups read the per-user rollups like model groups (fast with a user
// filter: the dashboard's per-developer key split); fallback reason groups
// read the fallback rollup, or with a filter the raw events (hour buckets
// starting in the range either way). Time
// groups are in time order, sessions by first event, the others by key.
func (u Usage) Summary(ctx context.Context, q UsageSummaryQuery) ([]UsageGroup, error) {
	if !q.GroupBy.Valid() {
		return nil, invalidf("group by %q", q.GroupBy)
	}
	if !q.From.Before(q.To) {
		return nil, invalidf("empty time range [%s, %s)", q.From, q.To)
	}
	args := []any{q.From, q.To}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var filter strings.Builder
	if q.UserID != nil {
		filter.WriteString(" AND user_id = " + arg(*q.UserID))
	}
	if q.AccessKeyID != nil {
		filter.WriteString(" AND access_key_id = " + arg(*q.AccessKeyID))
	}

	var sql string
	if q.TeamID != nil || q.GroupBy == GroupByTeam {
		sql = teamSummarySQL(q, arg, filter.String())
	} else if q.GroupBy == GroupByDay && q.Location != nil && q.Location.String() != "UTC" {
		// Days of another zone are whole hours of UTC for every zone
		// with a whole-hour offset; the hourly rollups hold them.
		table := "usage_hourly_all"
		if filter.Len() > 0 {
			table = "usage_hourly"
		}
		sql = `SELECT date_trunc('day', bucket, ` + arg(q.Location.String()) + `), ` + totalsSelect + ` FROM ` + table + `
			WHERE bucket >= $1 AND bucket < $2` + filter.String() + `
			GROUP BY 1 ORDER BY 1`
	} else if q.GroupBy == GroupByFallbackReason && filter.Len() == 0 {
		// All users: the fallback rollup (migration 00009).
		sql = `SELECT fallback_reason, ` + totalsSelect + ` FROM usage_fallback_hourly
			WHERE bucket >= $1 AND bucket < $2
			GROUP BY 1 ORDER BY 1`
	} else if q.GroupBy == GroupByFallbackReason {
		// One user or key: its raw events, hour buckets starting in the
		// range like the rollup.
		args[0], args[1] = ceilHour(q.From), ceilHour(q.To)
		sql = `SELECT fallback_reason, ` + eventTotalsSelect + `
			FROM usage_events WHERE fallback AND event_time >= $1 AND event_time < $2` + filter.String() + `
			GROUP BY 1 ORDER BY 1`
	} else if q.GroupBy == GroupByUser {
		// Grouped by the uuid, not its text (the order is the same).
		sql = `SELECT user_id::text, ` + userTotalsSelect + ` FROM (` + userRowsSQL(q.From, q.To, &args, filter.String()) + `) p
			GROUP BY user_id HAVING sum(requests) <> 0 ORDER BY user_id`
	} else if q.GroupBy == GroupByKey {
		table := "usage_hourly"
		if isUTCMidnight(q.From) && isUTCMidnight(q.To) {
			table = "usage_daily"
		}
		sql = `SELECT access_key_id::text, ` + totalsSelect + ` FROM ` + table + `
			WHERE bucket >= $1 AND bucket < $2` + filter.String() + `
			GROUP BY 1 ORDER BY 1`
	} else if q.GroupBy == GroupBySession {
		sql = `SELECT session_id, min(event_time), max(event_time), ` + eventTotalsSelect + `
			FROM usage_events WHERE event_time >= $1 AND event_time < $2` + filter.String() + `
			GROUP BY session_id ORDER BY min(event_time), session_id`
	} else if q.UserID == nil && q.AccessKeyID == nil {
		// All users: the all-users hourly rollup (migration 00007) has a
		// few thousand rows a month where the per-user ones have millions.
		// Day groups cover the same buckets the daily rollup would: the
		// days starting in [From, To), i.e. the hours of
		// [ceilDay(From), ceilDay(To)).
		key := map[UsageGroupBy]string{GroupByHour: "bucket", GroupByModel: "model", GroupByProvider: "provider",
			GroupByDay: `date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`}[q.GroupBy]
		if q.GroupBy == GroupByDay {
			args[0], args[1] = ceilUTCDay(q.From), ceilUTCDay(q.To)
		}
		sql = `SELECT ` + key + `, ` + totalsSelect + ` FROM usage_hourly_all
			WHERE bucket >= $1 AND bucket < $2
			GROUP BY 1 ORDER BY 1`
	} else {
		table := "usage_hourly"
		if q.GroupBy == GroupByDay || q.GroupBy != GroupByHour && isUTCMidnight(q.From) && isUTCMidnight(q.To) {
			table = "usage_daily"
		}
		key := map[UsageGroupBy]string{GroupByHour: "bucket", GroupByDay: "bucket", GroupByModel: "model", GroupByProvider: "provider"}[q.GroupBy]
		sql = `SELECT ` + key + `, ` + totalsSelect + ` FROM ` + table + `
			WHERE bucket >= $1 AND bucket < $2` + filter.String() + `
			GROUP BY 1 ORDER BY 1`
	}
	rows, err := u.q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr("store: usage summary", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (UsageGroup, error) {
		var (
			g             UsageGroup
			plan, bedrock *decimal.Decimal
			dest          []any
		)
		switch q.GroupBy {
		case GroupByHour, GroupByDay:
			dest = append(dest, &g.Bucket)
		case GroupBySession:
			dest = append(dest, &g.Key, &g.FirstAt, &g.LastAt)
		case GroupByFallbackReason, GroupByUser, GroupByKey, GroupByTeam:
			dest = append(dest, &g.Key)
		default:
			dest = append(dest, &g.Key)
		}
		if err := row.Scan(append(dest, totalsDest(&g.UsageTotals, &plan, &bedrock)...)...); err != nil {
			return g, err
		}
		setCosts(&g.UsageTotals, plan, bedrock)
		if q.GroupBy == GroupByHour || q.GroupBy == GroupByDay {
			g.Bucket = g.Bucket.UTC()
			g.Key = g.Bucket.Format(time.RFC3339)
		}
		return g, nil
	})
	return out, mapErr("store: usage summary", err)
}

// teamSummarySQL sums the raw events of [From, To) ($1, $2) by q.GroupBy,
// for a team filter or team groups: usage_events alone records the team a
// request was served for (usage_events_team_idx finds one team's events).
func teamSummarySQL(q UsageSummaryQuery, arg func(any) string, filter string) string {
	if q.TeamID != nil {
		filter += " AND team_id = " + arg(*q.TeamID)
	}
	where := ` FROM usage_events WHERE event_time >= $1 AND event_time < $2` + filter
	switch q.GroupBy {
	case GroupBySession:
		return `SELECT session_id, min(event_time), max(event_time), ` + eventTotalsSelect + where + `
			GROUP BY session_id ORDER BY min(event_time), session_id`
	case GroupByFallbackReason:
		where += " AND fallback"
	}
	key := map[UsageGroupBy]string{
		GroupByHour:           `date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`,
		GroupByDay:            `date_trunc('day', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`,
		GroupByModel:          "requested_model",
		GroupByProvider:       "provider",
		GroupByUser:           "user_id::text",
		GroupByKey:            "access_key_id::text",
		GroupByFallbackReason: "fallback_reason",
		GroupByTeam:           "coalesce(team_id::text, '')",
	}[q.GroupBy]
	if q.GroupBy == GroupByDay && q.Location != nil && q.Location.String() != "UTC" {
		key = `date_trunc('day', event_time, ` + arg(q.Location.String()) + `)`
	}
	return `SELECT ` + key + `, ` + eventTotalsSelect + where + ` GROUP BY 1 ORDER BY 1`
}

// userRowsSQL selects per-user rollup rows for the hour buckets starting
// in [from, to), in the columns of usage_user_rollup (user_id, requests,
// bedrock_requests, the token sums, plan_cost_usd, bedrock_cost_usd,
// fallbacks, errors, aborted), for the caller to sum by user_id. $1 and $2
// must be from and to; further bounds are appended to args.
//
// With a filter (" AND …" on user_id or access_key_id) the whole UTC days
// come from usage_daily and the hours before and after them from
// usage_hourly, both found by their primary keys. Without one, every
// user's rows are read: the whole UTC days come from usage_user_rollup
// (migration 00011), cut into whole months, whole ISO weeks and single
// days (userSpans), and a part of a UTC day (the ends of a range in another
// time zone, or of the API's default range) from usage_hourly — or, when
// that part is more than half the day, as the day's row minus the hours
// outside it, which reads at most 12 hours of usage_hourly per end. Sums
// are exact, so subtracting gives the same result as adding.
func userRowsSQL(from, to time.Time, args *[]any, filter string) string {
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	// usage_hourly and usage_daily have a row per provider.
	hourly := func(table, sign, lo, hi string) string {
		return `SELECT user_id, ` + sign + `requests, ` + sign + `(CASE WHEN provider = 'bedrock' THEN requests ELSE 0 END),
			` + sign + `input_tokens, ` + sign + `output_tokens, ` + sign + `cache_read_tokens, ` + sign + `cache_write_5m_tokens,
			` + sign + `cache_write_1h_tokens, ` + sign + `(CASE WHEN provider = 'anthropic' THEN cost_usd ELSE 0 END),
			` + sign + `(CASE WHEN provider = 'bedrock' THEN cost_usd ELSE 0 END), ` + sign + `fallbacks, ` + sign + `errors,
			` + sign + `aborted
			FROM ` + table + ` WHERE bucket >= ` + lo + ` AND bucket < ` + hi + filter
	}
	const rollupCols = `user_id, requests, bedrock_requests, input_tokens, output_tokens, cache_read_tokens,
		cache_write_5m_tokens, cache_write_1h_tokens, plan_cost_usd, bedrock_cost_usd, fallbacks, errors, aborted`
	rollup := func(span string, lo, hi time.Time) string {
		return `SELECT ` + rollupCols + ` FROM usage_user_rollup WHERE span = '` + span + `' AND bucket >= ` + arg(lo) + ` AND bucket < ` + arg(hi)
	}
	// One branch per piece, each a plain range on its table's index (an
	// OR of ranges makes Postgres scan the table).
	var parts []string
	// partOfDay adds the hour buckets starting in [lo, hi), which lie in
	// the UTC day starting at day.
	partOfDay := func(day, lo, hi time.Time) {
		if filter != "" || ceilHour(hi).Sub(ceilHour(lo)) <= 12*time.Hour {
			parts = append(parts, hourly("usage_hourly", "", arg(lo), arg(hi)))
			return
		}
		parts = append(parts, rollup("day", day, day.Add(24*time.Hour)))
		if day.Before(lo) {
			parts = append(parts, hourly("usage_hourly", "-", arg(day), arg(lo)))
		}
		if end := day.Add(24 * time.Hour); hi.Before(end) {
			parts = append(parts, hourly("usage_hourly", "-", arg(hi), arg(end)))
		}
	}
	from, to = from.UTC(), to.UTC()
	dayFrom, dayTo := ceilUTCDay(from), to.Truncate(24*time.Hour)
	if dayFrom.After(dayTo) {
		// Within one UTC day.
		partOfDay(dayTo, from, to)
	} else {
		if from.Before(dayFrom) {
			partOfDay(dayFrom.Add(-24*time.Hour), from, dayFrom)
		}
		if dayFrom.Before(dayTo) {
			if filter != "" {
				parts = append(parts, hourly("usage_daily", "", arg(dayFrom), arg(dayTo)))
			} else {
				for _, s := range userSpans(dayFrom, dayTo) {
					parts = append(parts, rollup(s.span, s.from, s.to))
				}
			}
		}
		if dayTo.Before(to) {
			partOfDay(dayTo, dayTo, to)
		}
	}
	// The outer filter is always true; it names $1 and $2 so that
	// Postgres knows their types.
	return `SELECT * FROM (` + strings.Join(parts, "\n\t\tUNION ALL\n\t\t") + `) ud(` + rollupCols + `) WHERE $1::timestamptz < $2::timestamptz`
}

// userSpan is a run of buckets of one span of usage_user_rollup: those
// starting in [from, to).
type userSpan struct {
	span     string
	from, to time.Time
}

// userSpans cuts the whole UTC days [from, to) into the fewest buckets of
// usage_user_rollup: whole UTC months, then whole ISO weeks (Monday to
// Sunday, UTC) of what is left at either end, then single days. A month
// is one bucket and 30 days are at most 4 weeks and 12 days, so a query
// reads a few rows per user where the daily rollup has one per day.
func userSpans(from, to time.Time) []userSpan {
	from, to = from.UTC(), to.UTC()
	var out []userSpan
	weeksAndDays := func(from, to time.Time) {
		if !from.Before(to) {
			return
		}
		// Days since Monday: Go's Sunday is 0.
		w0 := from.AddDate(0, 0, (7-(int(from.Weekday())+6)%7)%7)
		w1 := to.AddDate(0, 0, -((int(to.Weekday()) + 6) % 7))
		if !w0.Before(w1) {
			out = append(out, userSpan{"day", from, to})
			return
		}
		if from.Before(w0) {
			out = append(out, userSpan{"day", from, w0})
		}
		out = append(out, userSpan{"week", w0, w1})
		if w1.Before(to) {
			out = append(out, userSpan{"day", w1, to})
		}
	}
	m0 := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC)
	if m0.Before(from) {
		m0 = m0.AddDate(0, 1, 0)
	}
	m1 := time.Date(to.Year(), to.Month(), 1, 0, 0, 0, 0, time.UTC)
	if !m0.Before(m1) {
		weeksAndDays(from, to)
		return out
	}
	weeksAndDays(from, m0)
	out = append(out, userSpan{"month", m0, m1})
	weeksAndDays(m1, to)
	return out
}

// ceilHour is the first whole hour at or after t.
func ceilHour(t time.Time) time.Time {
	h := t.UTC().Truncate(time.Hour)
	if h.Before(t) {
		h = h.Add(time.Hour)
	}
	return h
}

// ceilUTCDay is the first UTC midnight at or after t.
func ceilUTCDay(t time.Time) time.Time {
	d := t.UTC().Truncate(24 * time.Hour)
	if d.Before(t) {
		d = d.Add(24 * time.Hour)
	}
	return d
}

func isUTCMidnight(t time.Time) bool {
	t = t.UTC()
	return t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0
}

// MonthlySpend returns a user's cost for one provider over [from, to) — for
// budgets, Bedrock over the billing month in the billing time zone. Whole
// hours come from the hourly rollups and the partial hours at either end
// (time zones with half-hour offsets) from the raw events, so the result is
// exact for any bounds.
func (u Usage) MonthlySpend(ctx context.Context, userID uuid.UUID, provider Provider, from, to time.Time) (decimal.Decimal, error) {
	if !provider.Valid() {
		return decimal.Zero, invalidf("provider %q", provider)
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
	err := u.q.db.QueryRow(ctx, `
		SELECT coalesce((SELECT sum(cost_usd) FROM usage_hourly
		                 WHERE user_id = $1 AND provider = $2 AND bucket >= $3 AND bucket < $4), 0)
		     + coalesce((SELECT sum(cost_usd) FROM usage_events
		                 WHERE user_id = $1 AND provider = $2
		                   AND (event_time >= $5 AND event_time < $3 OR event_time >= $4 AND event_time < $6)), 0)`,
		userID, provider, hourStart, hourEnd, from, to).Scan(&spend)
	if err != nil {
		return decimal.Zero, mapErr("store: monthly spend", err)
	}
	return spend, nil
}

// MonthlySpends is MonthlySpend for several users in one query: the
// ingester refreshes the spend of every Bedrock user of a batch at once.
// Users without rows in the window are absent from the map (spend zero).
func (u Usage) MonthlySpends(ctx context.Context, users []uuid.UUID, provider Provider, from, to time.Time) (map[uuid.UUID]decimal.Decimal, error) {
	if !provider.Valid() {
		return nil, invalidf("provider %q", provider)
	}
	out := make(map[uuid.UUID]decimal.Decimal, len(users))
	if len(users) == 0 {
		return out, nil
	}
	hourStart := from.Truncate(time.Hour)
	if hourStart.Before(from) {
		hourStart = hourStart.Add(time.Hour)
	}
	hourEnd := to.Truncate(time.Hour)
	if !hourStart.Before(hourEnd) {
		hourStart, hourEnd = to, to
	}
	rows, err := u.q.db.Query(ctx, `
		SELECT user_id, sum(cost) FROM (
			SELECT user_id, cost_usd AS cost FROM usage_hourly
			WHERE user_id = ANY($1) AND provider = $2 AND bucket >= $3 AND bucket < $4
			UNION ALL
			SELECT user_id, cost_usd FROM usage_events
			WHERE user_id = ANY($1) AND provider = $2
			  AND (event_time >= $5 AND event_time < $3 OR event_time >= $4 AND event_time < $6)
		) s GROUP BY user_id`,
		users, provider, hourStart, hourEnd, from, to)
	if err != nil {
		return nil, mapErr("store: monthly spends", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var spend decimal.Decimal
		if err := rows.Scan(&id, &spend); err != nil {
			return nil, mapErr("store: monthly spends", err)
		}
		out[id] = spend
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("store: monthly spends", err)
	}
	return out, nil
}

// UsageFilter selects usage events to list; zero fields do not filter.
type UsageFilter struct {
	UserID      *uuid.UUID
	AccessKeyID *uuid.UUID
	SessionID   string
	Provider    Provider
	// TeamID keeps the events served while their user was in the team.
	TeamID *uuid.UUID
	// From and To bound event_time to [From, To) when non-zero.
	From, To time.Time
}

const eventColumnList = `request_id, event_time, user_id, access_key_id, session_id, agent_id, client_version,
	kind, requested_model, bedrock_model_id, provider, region, fallback, fallback_reason, stream, status,
	input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd,
	price_flag, ttft_ms, latency_ms, aborted, parent_agent_id, agent_spawns, team_id`

func scanEvent(row pgx.Row) (UsageEvent, error) {
	var (
		e       UsageEvent
		status  int32
		latency int32
		ttft    *int32
		spawns  int16
	)
	err := row.Scan(&e.RequestID, &e.EventTime, &e.UserID, &e.AccessKeyID, &e.SessionID, &e.AgentID,
		&e.ClientVersion, &e.Kind, &e.RequestedModel, &e.BedrockModelID, &e.Provider, &e.Region, &e.Fallback,
		&e.FallbackReason, &e.Stream, &status, &e.InputTokens, &e.OutputTokens, &e.CacheReadTokens,
		&e.CacheWrite5mTokens, &e.CacheWrite1hTokens, &e.CostUSD, &e.PriceFlag, &ttft, &latency, &e.Aborted,
		&e.ParentAgentID, &spawns, &e.TeamID)
	e.Status, e.LatencyMs, e.AgentSpawns = int(status), int(latency), int(spawns)
	if ttft != nil {
		v := int(*ttft)
		e.TTFTMs = &v
	}
	return e, err
}

// ListRequests returns a page of events matching f, newest first, and the
// cursor of the next page ("" after the last).
func (u Usage) ListRequests(ctx context.Context, f UsageFilter, limit int, cursor string) ([]UsageEvent, string, error) {
	limit = pageSize(limit)
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.UserID != nil {
		where = append(where, "user_id = "+arg(*f.UserID))
	}
	if f.AccessKeyID != nil {
		where = append(where, "access_key_id = "+arg(*f.AccessKeyID))
	}
	if f.SessionID != "" {
		where = append(where, "session_id = "+arg(f.SessionID))
	}
	if f.TeamID != nil {
		where = append(where, "team_id = "+arg(*f.TeamID))
	}
	if f.Provider != "" {
		if !f.Provider.Valid() {
			return nil, "", invalidf("provider %q", f.Provider)
		}
		where = append(where, "provider = "+arg(f.Provider))
	}
	if !f.From.IsZero() {
		where = append(where, "event_time >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "event_time < "+arg(f.To))
	}
	if cursor != "" {
		t, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(event_time, request_id) < ("+arg(t)+", "+arg(id)+")")
	}
	rows, err := u.q.db.Query(ctx, `SELECT `+eventColumnList+` FROM usage_events WHERE `+strings.Join(where, " AND ")+
		` ORDER BY event_time DESC, request_id DESC LIMIT `+arg(limit+1), args...)
	if err != nil {
		return nil, "", mapErr("store: list usage requests", err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (UsageEvent, error) { return scanEvent(row) })
	if err != nil {
		return nil, "", mapErr("store: list usage requests", err)
	}
	next := ""
	if len(evs) > limit {
		evs = evs[:limit]
		last := evs[limit-1]
		next = encodeCursor(last.EventTime, last.RequestID)
	}
	return evs, next, nil
}

// GetRequest returns the stored event of a request id.
func (u Usage) GetRequest(ctx context.Context, requestID string) (UsageEvent, error) {
	e, err := scanEvent(u.q.db.QueryRow(ctx, `
		SELECT `+eventColumnList+` FROM usage_events
		WHERE request_id = $1 AND event_time = (SELECT event_time FROM usage_dedupe WHERE request_id = $1)`,
		requestID))
	return e, mapErr("store: get usage request", err)
}
