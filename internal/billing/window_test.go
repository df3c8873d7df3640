package billing_test

import (
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/billing"
)

func TestWindowOf(t *testing.T) {
	paris, err := billing.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind       string
		at         time.Time
		loc        *time.Location
		key        string
		start, end string
	}{
		{"daily", time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC), nil, "2026-12-07", "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"},
		// 23:30 UTC is already the 8th in Paris.
		{"daily", time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC), paris, "2026-12-08", "2026-12-07T23:00:00Z", "2026-12-08T23:00:00Z"},
		// The spring-forward day is 23 hours long.
		{"daily", time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC), paris, "2026-03-29", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"},
		// Monday 2026-12-07 to Monday 2026-12-14; a Sunday belongs to the week before.
		{"weekly", time.Date(2026, 12, 13, 10, 0, 0, 0, time.UTC), nil, "2026-12-07", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"weekly", time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), nil, "2026-12-07", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		// A week across a year boundary.
		{"weekly", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), nil, "2026-12-28", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"},
		{"monthly", time.Date(2026, 12, 31, 23, 30, 0, 0, time.UTC), paris, "2027-01-01", "2026-12-31T23:00:00Z", "2027-01-31T23:00:00Z"},
	} {
		w, err := billing.WindowOf(tc.kind, tc.at, tc.loc)
		if err != nil {
			t.Fatal(err)
		}
		got := [3]string{w.Key, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339)}
		if want := [3]string{tc.key, tc.start, tc.end}; got != want {
			t.Errorf("WindowOf(%s, %s, %v) = %v; want %v", tc.kind, tc.at, tc.loc, got, want)
		}
		back, err := billing.ParseWindow(tc.kind, w.Key, tc.loc)
		if err != nil || !back.Start.Equal(w.Start) || !back.End.Equal(w.End) {
			t.Errorf("ParseWindow(%s, %s) = %+v, %v; want %+v", tc.kind, w.Key, back, err, w)
		}
	}
	if _, err := billing.WindowOf("hourly", time.Now(), nil); err == nil {
		t.Error("WindowOf(hourly) succeeded")
	}
	if _, err := billing.ParseWindow("weekly", "2026-12-08", nil); err == nil {
		t.Error("ParseWindow(weekly, a Tuesday) succeeded")
	}
	w, _ := billing.WindowOf("daily", time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC), nil)
	if got, want := billing.BudgetKey("p:", "user", "u1", "all", w), "p:budget:user:u1:all:daily:2026-12-07"; got != want {
		t.Errorf("BudgetKey = %q; want %q", got, want)
	}
}
