package billing

import (
	"fmt"
	"time"
)

// Budget windows: the calendar day, the ISO week (Monday first) and the
// calendar month, all in the billing time zone.
const (
	WindowDaily   = "daily"
	WindowWeekly  = "weekly"
	WindowMonthly = "monthly"
)

// BudgetTTL is the lifetime of a budget counter in Redis: longer than the
// longest window (a month) with margin.
const BudgetTTL = SpendTTL

// Window is one budget window in a location.
type Window struct {
	// Kind is WindowDaily, WindowWeekly or WindowMonthly.
	Kind string
	// Key is the local date of Start, "YYYY-MM-DD": it names the window in
	// counter keys and in budget_alerts.window_start.
	Key string
	// Start is the first instant of the window; End the first instant of
	// the next one (exclusive), when the budget resets.
	Start, End time.Time
}

// ValidWindow reports whether kind is a known window.
func ValidWindow(kind string) bool {
	return kind == WindowDaily || kind == WindowWeekly || kind == WindowMonthly
}

// WindowOf returns the window of kind that contains t in loc (nil means
// UTC). Like months, windows are computed with time.Date in the location,
// so a day with a daylight-saving change is 23 or 25 hours long.
func WindowOf(kind string, t time.Time, loc *time.Location) (Window, error) {
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	var start, end time.Time
	switch kind {
	case WindowDaily:
		start = time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc)
		end = time.Date(lt.Year(), lt.Month(), lt.Day()+1, 0, 0, 0, 0, loc)
	case WindowWeekly:
		// Go's Weekday has Sunday = 0; ISO weeks start on Monday.
		back := (int(lt.Weekday()) + 6) % 7
		start = time.Date(lt.Year(), lt.Month(), lt.Day()-back, 0, 0, 0, 0, loc)
		end = time.Date(lt.Year(), lt.Month(), lt.Day()-back+7, 0, 0, 0, 0, loc)
	case WindowMonthly:
		m := monthAt(lt.Year(), lt.Month(), loc)
		start, end = m.Start, m.End
	default:
		return Window{}, fmt.Errorf("billing: budget window %q: want daily, weekly or monthly", kind)
	}
	return Window{Kind: kind, Key: start.Format("2006-01-02"), Start: start, End: end}, nil
}

// ParseWindow returns the window of kind that starts on the local date
// key ("YYYY-MM-DD") in loc; the date must be a window start.
func ParseWindow(kind, key string, loc *time.Location) (Window, error) {
	if loc == nil {
		loc = time.UTC
	}
	d, err := time.ParseInLocation("2006-01-02", key, loc)
	if err != nil {
		return Window{}, fmt.Errorf("billing: window start %q: want YYYY-MM-DD", key)
	}
	w, err := WindowOf(kind, d, loc)
	if err != nil {
		return Window{}, err
	}
	if w.Key != key {
		return Window{}, fmt.Errorf("billing: %s is not the start of a %s window", key, kind)
	}
	return w, nil
}

// BudgetKey is the Redis key of a budget counter: the spend of a subject
// (scope key, user or team, and its UUID) on a metric (bedrock, plan_list
// or all) in one window:
// <prefix>budget:<scope>:<subject>:<metric>:<window kind>:<YYYY-MM-DD>.
// The key names what is counted, not the budget row, so the counter is the
// same for every budget counting it.
func BudgetKey(prefix, scope, subject, metric string, w Window) string {
	return prefix + "budget:" + scope + ":" + subject + ":" + metric + ":" + w.Kind + ":" + w.Key
}
