// Package billing owns the billing-month arithmetic shared by the admin
// service (usage ingest, the KeyService) and extproc (budgets): which
// calendar month an instant belongs to in the billing time zone
// (CCPROXY_BILLING_TIMEZONE), where that month starts and ends, and when a
// monthly budget resets. It also names the Redis spend counter of a user
// and month and fixes how its value is written.
//
// A billing month is the calendar month of the billing time zone: it starts
// at local midnight of the 1st and ends (exclusive) at local midnight of the
// next month's 1st. Months are always computed with time.Date in the
// location, so months that contain a daylight-saving change are 1 hour
// shorter or longer than their day count suggests, and a zone whose
// midnight does not exist on a transition day gets Go's normalisation
// (the first instant after the gap).
package billing

import (
	"errors"
	"fmt"
	"time"

	// The billing time zone must resolve in minimal containers too.
	_ "time/tzdata"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// SpendTTL is the lifetime of a spend counter in Redis: long enough to
// outlive its month (31 days) with margin.
const SpendTTL = 40 * 24 * time.Hour

// Month is one billing month in a location.
type Month struct {
	// Key is "YYYY-MM".
	Key string
	// Start is the first instant of the month; End the first instant of the
	// next month (exclusive), which is also when a monthly budget resets.
	Start, End time.Time
}

// LoadLocation returns the location for an IANA time zone name; "" and
// "UTC" are UTC. Unlike time.LoadLocation it refuses "Local", whose meaning
// depends on the machine.
func LoadLocation(name string) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`billing: time zone "Local" depends on the machine; give an IANA name such as Europe/Paris`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("billing: time zone %q: %w", name, err)
	}
	return loc, nil
}

// MonthOf returns the billing month of t in loc (nil means UTC).
func MonthOf(t time.Time, loc *time.Location) Month {
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	return monthAt(lt.Year(), lt.Month(), loc)
}

func monthAt(year int, month time.Month, loc *time.Location) Month {
	start := time.Date(year, month, 1, 0, 0, 0, 0, loc)
	end := time.Date(year, month+1, 1, 0, 0, 0, 0, loc)
	return Month{Key: fmt.Sprintf("%04d-%02d", start.Year(), int(start.Month())), Start: start, End: end}
}

// MonthKey is the "YYYY-MM" key of t's billing month in loc.
func MonthKey(t time.Time, loc *time.Location) string { return MonthOf(t, loc).Key }

// ResetAt is when the budget of t's billing month resets: the start of the
// next billing month.
func ResetAt(t time.Time, loc *time.Location) time.Time { return MonthOf(t, loc).End }

// ParseMonth returns the billing month named by key ("YYYY-MM", years 1 to
// 9999) in loc (nil means UTC).
func ParseMonth(key string, loc *time.Location) (Month, error) {
	if loc == nil {
		loc = time.UTC
	}
	var y, m int
	if len(key) != 7 || key[4] != '-' {
		return Month{}, fmt.Errorf("billing: month %q: want YYYY-MM", key)
	}
	if _, err := fmt.Sscanf(key, "%04d-%02d", &y, &m); err != nil || y < 1 || m < 1 || m > 12 || !digits(key[:4]) || !digits(key[5:]) {
		return Month{}, fmt.Errorf("billing: month %q: want YYYY-MM", key)
	}
	return monthAt(y, time.Month(m), loc), nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// SpendKey is the Redis key of a user's Bedrock spend counter for a billing
// month: <prefix>spend:<user uuid>:<YYYY-MM>.
func SpendKey(prefix string, userID uuid.UUID, month string) string {
	return prefix + "spend:" + userID.String() + ":" + month
}

// FormatSpend is the counter's value: USD with exactly 6 decimals.
func FormatSpend(d decimal.Decimal) string { return d.StringFixed(6) }

// ParseSpend reads a counter's value.
func ParseSpend(s string) (decimal.Decimal, error) {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Zero, fmt.Errorf("billing: spend %q: %w", s, err)
	}
	return d, nil
}
