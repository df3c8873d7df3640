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

// ExportEvent is a usage event with its user's name, for exports.
type ExportEvent struct {
	UsageEvent
	// UserName is the user's name ("" for a user that no longer exists).
	UserName string
}

// EachRequest calls fn for every usage event matching f, oldest first
// (event_time, then request id), reading the rows as Postgres sends them:
// nothing is collected, so a range of millions of rows costs one row of
// memory. fn's error stops the iteration and is returned as is. The
// iteration holds one pool connection for as long as it runs.
func (u Usage) EachRequest(ctx context.Context, f UsageFilter, fn func(ExportEvent) error) error {
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.UserID != nil {
		where = append(where, "e.user_id = "+arg(*f.UserID))
	}
	if f.AccessKeyID != nil {
		where = append(where, "e.access_key_id = "+arg(*f.AccessKeyID))
	}
	if f.SessionID != "" {
		where = append(where, "e.session_id = "+arg(f.SessionID))
	}
	if f.Provider != "" {
		if !f.Provider.Valid() {
			return invalidf("provider %q", f.Provider)
		}
		where = append(where, "e.provider = "+arg(f.Provider))
	}
	if !f.From.IsZero() {
		where = append(where, "e.event_time >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "e.event_time < "+arg(f.To))
	}
	cols := "e." + strings.ReplaceAll(strings.Join(strings.Fields(eventColumnList), " "), ", ", ", e.")
	rows, err := u.q.db.Query(ctx, `SELECT `+cols+`, coalesce(us.name, '') FROM usage_events e
		LEFT JOIN users us ON us.id = e.user_id
		WHERE `+strings.Join(where, " AND ")+` ORDER BY e.event_time, e.request_id`, args...)
	if err != nil {
		return mapErr("store: export usage requests", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ee ExportEvent
		// scanEvent reads the event's columns (whatever eventColumnList
		// holds) and the user's name follows them.
		e, err := scanEvent(withExtra{rows, []any{&ee.UserName}})
		if err != nil {
			return mapErr("store: export usage requests", err)
		}
		ee.UsageEvent = e
		if err := fn(ee); err != nil {
			return err
		}
	}
	return mapErr("store: export usage requests", rows.Err())
}

// withExtra scans a row whose first columns are scanned by a function of
// pgx.Row and whose last ones go to extra.
type withExtra struct {
	rows  pgx.Rows
	extra []any
}

func (w withExtra) Scan(dest ...any) error { return w.rows.Scan(append(dest, w.extra...)...) }

// DailyUsage is one day × user × model × provider row of the daily export.
type DailyUsage struct {
	// Day is the start of the day in the export's time zone.
	Day                time.Time
	UserID             uuid.UUID
	UserName           string
	Model              string
	Provider           Provider
	Requests           int64
	InputTokens        int64
	OutputTokens       int64
	CacheReadTokens    int64
	CacheWrite5mTokens int64
	CacheWrite1hTokens int64
	CostUSD            decimal.Decimal
	Fallbacks          int64
	Errors             int64
}

// DailyExportQuery selects the daily export's rows.
type DailyExportQuery struct {
	UserID      *uuid.UUID
	AccessKeyID *uuid.UUID
	// From and To bound the hours [From, To); whole days of Location are
	// what a caller normally asks for.
	From, To time.Time
	// Location is the time zone of the days (nil: UTC).
	Location *time.Location
}

// EachDaily calls fn for every day × user × model × provider of the
// hourly rollups whose hour starts in [From, To), in that order, streaming
// like EachRequest. Its sums equal Summary's over the same hours.
func (u Usage) EachDaily(ctx context.Context, q DailyExportQuery, fn func(DailyUsage) error) error {
	if !q.From.Before(q.To) {
		return invalidf("empty time range [%s, %s)", q.From, q.To)
	}
	loc := "UTC"
	if q.Location != nil {
		loc = q.Location.String()
	}
	args := []any{q.From, q.To, loc}
	filter := ""
	if q.UserID != nil {
		args = append(args, *q.UserID)
		filter += " AND h.user_id = $" + strconv.Itoa(len(args))
	}
	if q.AccessKeyID != nil {
		args = append(args, *q.AccessKeyID)
		filter += " AND h.access_key_id = $" + strconv.Itoa(len(args))
	}
	rows, err := u.q.db.Query(ctx, `
		SELECT date_trunc('day', h.bucket, $3) AS day, h.user_id, coalesce(min(us.name), ''), h.model, h.provider,
			sum(h.requests)::bigint, sum(h.input_tokens)::bigint, sum(h.output_tokens)::bigint,
			sum(h.cache_read_tokens)::bigint, sum(h.cache_write_5m_tokens)::bigint, sum(h.cache_write_1h_tokens)::bigint,
			sum(h.cost_usd), sum(h.fallbacks)::bigint, sum(h.errors)::bigint
		FROM usage_hourly h LEFT JOIN users us ON us.id = h.user_id
		WHERE h.bucket >= $1 AND h.bucket < $2`+filter+`
		GROUP BY 1, h.user_id, h.model, h.provider
		ORDER BY 1, h.user_id, h.model, h.provider`, args...)
	if err != nil {
		return mapErr("store: export daily usage", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d DailyUsage
		if err := rows.Scan(&d.Day, &d.UserID, &d.UserName, &d.Model, &d.Provider, &d.Requests, &d.InputTokens,
			&d.OutputTokens, &d.CacheReadTokens, &d.CacheWrite5mTokens, &d.CacheWrite1hTokens, &d.CostUSD,
			&d.Fallbacks, &d.Errors); err != nil {
			return mapErr("store: export daily usage", err)
		}
		if q.Location != nil {
			d.Day = d.Day.In(q.Location)
		} else {
			d.Day = d.Day.UTC()
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return mapErr("store: export daily usage", rows.Err())
}
