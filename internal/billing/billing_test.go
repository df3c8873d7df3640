package billing

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestMonthOf(t *testing.T) {
	tests := []struct {
		name, zone, at  string
		key, start, end string
		hours           float64
	}{
		{"utc mid month", "UTC", "2026-03-15T12:00:00Z", "2026-03", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", 31 * 24},
		{"utc last nanosecond", "UTC", "2026-01-31T23:59:59.999999999Z", "2026-01", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 31 * 24},
		{"utc first instant", "UTC", "2026-02-01T00:00:00Z", "2026-02", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", 28 * 24},
		{"utc leap february", "UTC", "2028-02-29T23:00:00Z", "2028-02", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z", 29 * 24},
		{"utc december wraps the year", "UTC", "2026-12-31T23:59:59Z", "2026-12", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", 31 * 24},
		// New York springs forward on 2026-03-08: March is an hour short.
		{"new york march (dst starts)", "America/New_York", "2026-03-20T00:00:00Z", "2026-03", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", 31*24 - 1},
		// ... and falls back on 2026-11-01 (the 1st itself): November is an hour long.
		{"new york november (dst ends on the 1st)", "America/New_York", "2026-11-01T05:30:00Z", "2026-11", "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", 30*24 + 1},
		// 03:30 UTC on April 1st is still March 31st in New York.
		{"new york: utc april is local march", "America/New_York", "2026-04-01T03:30:00Z", "2026-03", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", 31*24 - 1},
		{"new york: local april", "America/New_York", "2026-04-01T04:00:00Z", "2026-04", "2026-04-01T04:00:00Z", "2026-05-01T04:00:00Z", 30 * 24},
		// Europe: DST ends on the last Sunday of October.
		{"paris october", "Europe/Paris", "2026-10-31T22:59:59Z", "2026-10", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", 31*24 + 1},
		{"paris: utc october 31st 23:00 is november", "Europe/Paris", "2026-10-31T23:00:00Z", "2026-11", "2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z", 30 * 24},
		// Southern hemisphere: Sydney's DST starts on the first Sunday of October.
		{"sydney october", "Australia/Sydney", "2026-10-10T00:00:00Z", "2026-10", "2026-09-30T14:00:00Z", "2026-10-31T13:00:00Z", 31*24 - 1},
		// Lord Howe shifts by 30 minutes.
		{"lord howe april (dst ends)", "Australia/Lord_Howe", "2026-04-15T00:00:00Z", "2026-04", "2026-03-31T13:00:00Z", "2026-04-30T13:30:00Z", 30*24 + 0.5},
		// Half-hour offset, no DST.
		{"kolkata", "Asia/Kolkata", "2026-05-31T18:29:59Z", "2026-05", "2026-04-30T18:30:00Z", "2026-05-31T18:30:00Z", 31 * 24},
		{"kolkata next month", "Asia/Kolkata", "2026-05-31T18:30:00Z", "2026-06", "2026-05-31T18:30:00Z", "2026-06-30T18:30:00Z", 30 * 24},
		// A zone west of UTC with a +13/+14 neighbour across the date line.
		{"kiritimati (+14)", "Pacific/Kiritimati", "2026-06-30T10:00:00Z", "2026-07", "2026-06-30T10:00:00Z", "2026-07-31T10:00:00Z", 31 * 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := mustLoc(t, tt.zone)
			m := MonthOf(utc(tt.at), loc)
			if m.Key != tt.key || !m.Start.Equal(utc(tt.start)) || !m.End.Equal(utc(tt.end)) {
				t.Fatalf("MonthOf(%s, %s) = %s [%s, %s); want %s [%s, %s)", tt.at, tt.zone, m.Key,
					m.Start.UTC().Format(time.RFC3339), m.End.UTC().Format(time.RFC3339), tt.key, tt.start, tt.end)
			}
			if got := m.End.Sub(m.Start).Hours(); got != tt.hours {
				t.Errorf("month length %v h, want %v", got, tt.hours)
			}
			if got := MonthKey(utc(tt.at), loc); got != tt.key {
				t.Errorf("MonthKey = %s", got)
			}
			if got := ResetAt(utc(tt.at), loc); !got.Equal(m.End) {
				t.Errorf("ResetAt = %v, want %v", got, m.End)
			}
			p, err := ParseMonth(tt.key, loc)
			if err != nil || p.Key != m.Key || !p.Start.Equal(m.Start) || !p.End.Equal(m.End) {
				t.Errorf("ParseMonth(%s) = %+v, %v; want %+v", tt.key, p, err, m)
			}
			// The month contains its start and not its end.
			if MonthKey(m.Start, loc) != tt.key || MonthKey(m.End.Add(-time.Nanosecond), loc) != tt.key || MonthKey(m.End, loc) == tt.key {
				t.Errorf("month bounds are not [start, end)")
			}
		})
	}
}

func TestMonthOfNilLocationIsUTC(t *testing.T) {
	if got := MonthOf(utc("2026-07-01T00:00:00Z"), nil); got.Key != "2026-07" || !got.Start.Equal(utc("2026-07-01T00:00:00Z")) {
		t.Fatalf("%+v", got)
	}
}

func TestParseMonthRejects(t *testing.T) {
	for _, s := range []string{"", "2026", "2026-13", "2026-00", "2026-1", "26-01", "2026/01", "0000-01", "2026-01-01", "+026-01", "2026-+1", " 2026-1"} {
		if _, err := ParseMonth(s, time.UTC); err == nil {
			t.Errorf("ParseMonth(%q) accepted", s)
		}
	}
}

func TestLoadLocation(t *testing.T) {
	for _, ok := range []string{"", "UTC", "Europe/Paris", "America/New_York"} {
		if _, err := LoadLocation(ok); err != nil {
			t.Errorf("LoadLocation(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"Local", "Mars/Olympus", "../etc/passwd"} {
		if _, err := LoadLocation(bad); err == nil {
			t.Errorf("LoadLocation(%q) accepted", bad)
		}
	}
}

func TestSpendKeyAndFormat(t *testing.T) {
	u := uuid.MustParse("0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69")
	if got := SpendKey("ccproxy:", u, "2026-03"); got != "ccproxy:spend:0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69:2026-03" {
		t.Errorf("SpendKey = %s", got)
	}
	for in, want := range map[string]string{"0": "0.000000", "1.5": "1.500000", "0.0000015": "0.000002", "12345.123456": "12345.123456"} {
		if got := FormatSpend(decimal.RequireFromString(in)); got != want {
			t.Errorf("FormatSpend(%s) = %s, want %s", in, got, want)
		}
	}
	d, err := ParseSpend("3.250000")
	if err != nil || !d.Equal(decimal.RequireFromString("3.25")) {
		t.Errorf("ParseSpend = %v, %v", d, err)
	}
	if _, err := ParseSpend("x"); err == nil {
		t.Error("ParseSpend accepted x")
	}
}
