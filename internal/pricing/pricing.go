// Package pricing owns the rules by which a request's tokens are priced: the
// cost of a row's tokens at a rate card's rates, the lookup of a model's rates
// (its own price, its family's, the provider's default, then Fallback), and a
// model's family as its name says it.
//
// The ingester prices every usage row with these rules from Postgres
// (admin/ingest); extproc, which holds no database credentials, prices each
// request for its trace span from the Card the control plane serves. The two
// agree because they share Cost, FamilyOf and Fallback, and because the
// Card's lookup is tested against the ingester's on the same rate card.
package pricing

import (
	"strings"

	"github.com/shopspring/decimal"
)

// Rates are USD per million tokens.
type Rates struct {
	Input        decimal.Decimal
	Output       decimal.Decimal
	CacheRead    decimal.Decimal
	CacheWrite5m decimal.Decimal
	CacheWrite1h decimal.Decimal
}

// Tokens are the token counts of one request.
type Tokens struct {
	Input        int64
	Output       int64
	CacheRead    int64
	CacheWrite5m int64
	CacheWrite1h int64
}

// Flag says which kind of price row a lookup matched.
type Flag string

// Flags, with the values of a usage row's price_flag.
const (
	// Exact: a price row for the model itself.
	Exact Flag = "exact"
	// Family: the model's family price; the model has no row.
	Family Flag = "family"
	// Default: the provider default (or Fallback); neither model nor
	// family priced.
	Default Flag = "default"
)

// Cost is the exact cost of t at r, rounded to 6 decimal places.
func Cost(r Rates, t Tokens) decimal.Decimal {
	million := decimal.NewFromInt(1_000_000)
	sum := r.Input.Mul(decimal.NewFromInt(t.Input)).
		Add(r.Output.Mul(decimal.NewFromInt(t.Output))).
		Add(r.CacheRead.Mul(decimal.NewFromInt(t.CacheRead))).
		Add(r.CacheWrite5m.Mul(decimal.NewFromInt(t.CacheWrite5m))).
		Add(r.CacheWrite1h.Mul(decimal.NewFromInt(t.CacheWrite1h)))
	return sum.Div(million).Round(6)
}

// Fallback prices a request when the rate card has no row at all for its
// provider (not even the default an admin may have deleted): the seeded
// provider default, so that usage is never free.
func Fallback() Rates {
	return Rates{
		Input:        decimal.NewFromInt(5),
		Output:       decimal.NewFromInt(25),
		CacheRead:    decimal.RequireFromString("0.5"),
		CacheWrite5m: decimal.RequireFromString("6.25"),
		CacheWrite1h: decimal.NewFromInt(10),
	}
}

// FamilyOf guesses a model's family from its name: the first word after
// "claude" that is all letters ("claude-opus-4-9" → "opus",
// "claude-3-5-haiku-20241022" → "haiku",
// "us.anthropic.claude-sonnet-4-5-v1:0" → "sonnet"); "" when there is none.
func FamilyOf(model string) string {
	words := strings.FieldsFunc(strings.ToLower(model), func(r rune) bool {
		return r == '-' || r == '.' || r == ':' || r == '_' || r == '/' || r == '[' || r == ']' || r == '@'
	})
	for i, w := range words {
		if w != "claude" {
			continue
		}
		for _, f := range words[i+1:] {
			if isLetters(f) {
				return f
			}
		}
		return ""
	}
	return ""
}

func isLetters(s string) bool {
	for _, c := range s {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}
