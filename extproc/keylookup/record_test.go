package keylookup

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// The Redis value keeps its JSON shape now that the budget lives in
// auth.KeyRecord: entries written before the move still decode, with the
// budget.
func TestEntryJSONCompatible(t *testing.T) {
	user := uuid.MustParse("0b7c4f3e-8f5e-4a43-9f7b-6c1d2e3f4a5b")
	old := `{"record":{"KeyID":"00000000-0000-0000-0000-000000000000","UserID":"` + user.String() + `",` +
		`"Prefix":"ak_abc","RoutingStrategy":"bedrock_only","RevokedAt":"0001-01-01T00:00:00Z",` +
		`"ExpiresAt":"0001-01-01T00:00:00Z","UserDisabled":false,"monthly_budget_usd":"12.5"},` +
		`"fetched_at":"2026-03-01T00:00:00Z","fresh_until":"2026-03-01T00:00:30Z"}`
	var e entry
	if err := json.Unmarshal([]byte(old), &e); err != nil {
		t.Fatal(err)
	}
	if e.Record.UserID != user || e.Record.MonthlyBudgetUSD == nil || !e.Record.MonthlyBudgetUSD.Equal(decimal.RequireFromString("12.5")) {
		t.Fatalf("record = %+v", e.Record)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != old {
		t.Fatalf("re-encoded =\n%s\nwant\n%s", b, old)
	}
}
