package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SessionSort orders a developer's session list (Usage.Sessions).
type SessionSort string

// Session list orders.
const (
	// SessionsByCost puts the most expensive session first.
	SessionsByCost SessionSort = "cost"
	// SessionsByRecent puts the session that was active last first.
	SessionsByRecent SessionSort = "recent"
)

// Valid reports whether s is a known order.
func (s SessionSort) Valid() bool { return s == SessionsByCost || s == SessionsByRecent }

// EventScan selects the rows ScanEvents reads; zero fields do not filter.
type EventScan struct {
	UserID    *uuid.UUID
	SessionID string
	// From and To bound event_time to [From, To).
	From, To time.Time
	// Limit, when positive, makes ScanEvents fail with ErrTooMany once
	// more rows than that match, before calling fn for any of them.
	Limit int
}

// ErrTooMany is returned by ScanEvents when more rows match than its limit.
var ErrTooMany = invalidf("too many usage rows for one analysis: narrow the time range or pick a developer")

// ScanEvents calls fn for every Messages row matching s, oldest first (ties
// by request id). count_tokens rows are left out: they carry no usage.
func (u Usage) ScanEvents(ctx context.Context, s EventScan, fn func(UsageEvent) error) error {
	where := []string{"kind = 'messages'"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if s.UserID != nil {
		where = append(where, "user_id = "+arg(*s.UserID))
	}
	if s.SessionID != "" {
		where = append(where, "session_id = "+arg(s.SessionID))
	}
	if !s.From.IsZero() {
		where = append(where, "event_time >= "+arg(s.From))
	}
	if !s.To.IsZero() {
		where = append(where, "event_time < "+arg(s.To))
	}
	cond := strings.Join(where, " AND ")
	if s.Limit > 0 {
		var n int
		// Counting first keeps a too-wide request from reading the rows.
		err := u.q.db.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM usage_events WHERE `+cond+
			` LIMIT `+arg(s.Limit+1)+`) c`, args...).Scan(&n)
		if err != nil {
			return mapErr("store: scan usage events", err)
		}
		args = args[:len(args)-1]
		if n > s.Limit {
			return ErrTooMany
		}
	}
	rows, err := u.q.db.Query(ctx, `SELECT `+eventColumnList+` FROM usage_events WHERE `+cond+
		` ORDER BY event_time, request_id`, args...)
	if err != nil {
		return mapErr("store: scan usage events", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return mapErr("store: scan usage events", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return mapErr("store: scan usage events", rows.Err())
}
