package keylookup

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
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

// TestRecordRateLimits: the KeyService's rate limits reach the record (and
// so the Redis entry) as they are; entries without a limit are dropped, and
// a malformed entry fails the answer rather than being enforced wrongly.
func TestRecordRateLimits(t *testing.T) {
	key := uuid.MustParse("11111111-1111-4111-8111-111111111111")
	user := uuid.MustParse("22222222-2222-4222-8222-222222222222")
	answer := func(ls ...*keyservicev1.RateLimit) *keyservicev1.LookupKeyResponse {
		return &keyservicev1.LookupKeyResponse{KeyId: key.String(), UserId: user.String(),
			Status: keyservicev1.KeyStatus_KEY_STATUS_ACTIVE, RateLimits: ls}
	}
	for _, tc := range []struct {
		name    string
		in      *keyservicev1.LookupKeyResponse
		want    []accesskey.RateLimit
		wantErr bool
	}{
		{"none", answer(), nil, false},
		{"key and user", answer(
			&keyservicev1.RateLimit{Scope: "key", Id: key.String(), InputTokensPerMinute: 1000, OutputTokensPerMinute: 50},
			&keyservicev1.RateLimit{Scope: "user", Id: user.String(), RequestsPerMinute: 5},
		), []accesskey.RateLimit{
			{Scope: "key", ID: key, InputTokensPerMinute: 1000, OutputTokensPerMinute: 50},
			{Scope: "user", ID: user, RequestsPerMinute: 5},
		}, false},
		{"empty entry dropped", answer(&keyservicev1.RateLimit{Scope: "user", Id: user.String()}), nil, false},
		{"unknown scope", answer(&keyservicev1.RateLimit{Scope: "org", Id: user.String(), RequestsPerMinute: 1}), nil, true},
		{"bad id", answer(&keyservicev1.RateLimit{Scope: "user", Id: "x", RequestsPerMinute: 1}), nil, true},
		{"negative", answer(&keyservicev1.RateLimit{Scope: "user", Id: user.String(), RequestsPerMinute: -1}), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := recordOf(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v; want error %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(rec.RateLimits, tc.want) {
				t.Fatalf("rate limits = %+v; want %+v", rec.RateLimits, tc.want)
			}
			if err != nil {
				return
			}
			// The Redis entry carries them.
			b, err := json.Marshal(entry{Record: rec})
			if err != nil {
				t.Fatal(err)
			}
			var back entry
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Record.RateLimits, tc.want) {
				t.Fatalf("round trip = %+v, %v", back.Record.RateLimits, err)
			}
		})
	}
}

// TestRecordTeam: the team and its allow-list reach the record and survive
// the Redis entry; a malformed team id fails the answer.
func TestRecordTeam(t *testing.T) {
	key := uuid.MustParse("11111111-1111-4111-8111-111111111111")
	user := uuid.MustParse("22222222-2222-4222-8222-222222222222")
	team := uuid.MustParse("33333333-3333-4333-8333-333333333333")
	for _, tc := range []struct {
		name    string
		teamID  string
		allowed []string
		want    accesskey.KeyRecord
		wantErr bool
	}{
		{"no team", "", nil, accesskey.KeyRecord{KeyID: key, UserID: user}, false},
		{"team with allow-list", team.String(), []string{"claude-sonnet-4-5"},
			accesskey.KeyRecord{KeyID: key, UserID: user, TeamID: &team, TeamName: "Platform", AllowedModels: []string{"claude-sonnet-4-5"}}, false},
		{"bad team id", "x", nil, accesskey.KeyRecord{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &keyservicev1.LookupKeyResponse{KeyId: key.String(), UserId: user.String(),
				Status: keyservicev1.KeyStatus_KEY_STATUS_ACTIVE, TeamId: tc.teamID, AllowedModels: tc.allowed}
			if tc.teamID != "" {
				in.TeamName = "Platform"
			}
			rec, err := recordOf(in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v; want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			b, err := json.Marshal(entry{Record: rec})
			if err != nil {
				t.Fatal(err)
			}
			var back entry
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Record.KeyRecord, tc.want) {
				t.Fatalf("record = %+v, %v; want %+v", back.Record.KeyRecord, err, tc.want)
			}
		})
	}
}
