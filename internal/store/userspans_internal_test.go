package store

import (
	"fmt"
	"testing"
	"time"
)

// TestUserSpans: whole days are cut into whole UTC months, then whole ISO
// weeks, then days, and the pieces tile the range exactly.
func TestUserSpans(t *testing.T) {
	d := func(s string) time.Time {
		v, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		from, to string
		want     string
	}{
		// One day; a few days inside a week.
		{"2026-10-14", "2026-10-15", "day 2026-10-14..2026-10-15"},
		{"2026-10-13", "2026-10-17", "day 2026-10-13..2026-10-17"},
		// Monday to Monday is one week bucket.
		{"2026-10-12", "2026-10-19", "week 2026-10-12..2026-10-19"},
		// The dashboard's "30 days" (2026-10-02 is a Friday).
		{"2026-10-02", "2026-11-01", "day 2026-10-02..2026-10-05 week 2026-10-05..2026-10-26 day 2026-10-26..2026-11-01"},
		// A whole month; "this month" up to the 8th.
		{"2026-10-01", "2026-11-01", "month 2026-10-01..2026-11-01"},
		{"2026-12-01", "2026-12-08", "day 2026-12-01..2026-12-08"},
		// 30 days across a month boundary: weeks may cross it.
		{"2026-11-08", "2026-12-08", "day 2026-11-08..2026-11-09 week 2026-11-09..2026-12-07 day 2026-12-07..2026-12-08"},
		// Months in the middle, weeks and days at both ends.
		{"2026-07-20", "2026-11-11", "week 2026-07-20..2026-07-27 day 2026-07-27..2026-08-01 month 2026-08-01..2026-11-01 day 2026-11-01..2026-11-02 week 2026-11-02..2026-11-09 day 2026-11-09..2026-11-11"},
		// A year.
		{"2026-01-01", "2027-01-01", "month 2026-01-01..2027-01-01"},
	} {
		t.Run(tc.from+"/"+tc.to, func(t *testing.T) {
			var got string
			next := d(tc.from)
			for i, s := range userSpans(d(tc.from), d(tc.to)) {
				if i > 0 {
					got += " "
				}
				got += fmt.Sprintf("%s %s..%s", s.span, s.from.Format(time.DateOnly), s.to.Format(time.DateOnly))
				if !s.from.Equal(next) || !s.from.Before(s.to) {
					t.Errorf("piece %d starts at %s, want %s (and not empty)", i, s.from, next)
				}
				next = s.to
				// Every bucket of the piece starts and ends on its span's boundaries.
				switch s.span {
				case "week":
					if s.from.Weekday() != time.Monday || s.to.Weekday() != time.Monday {
						t.Errorf("week piece %s..%s not Monday to Monday", s.from, s.to)
					}
				case "month":
					if s.from.Day() != 1 || s.to.Day() != 1 {
						t.Errorf("month piece %s..%s not month to month", s.from, s.to)
					}
				}
			}
			if !next.Equal(d(tc.to)) {
				t.Errorf("pieces end at %s, want %s", next, tc.to)
			}
			if got != tc.want {
				t.Errorf("userSpans = %s\nwant        %s", got, tc.want)
			}
		})
	}
}
