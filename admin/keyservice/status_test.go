package keyservice

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

func TestDeveloperStatus(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	budget := decimal.RequireFromString("40")
	u, err := st.Users().Create(ctx, store.NewUser{Name: "dev", MonthlyBudgetUSD: &budget})
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.Users().Create(ctx, store.NewUser{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	ev := func(id string, user uuid.UUID, p store.Provider, at time.Time, cost string, in, read, w5 int64) store.UsageEvent {
		e := spendEvent(id, user, p, at, cost)
		e.InputTokens, e.CacheReadTokens, e.CacheWrite5mTokens = in, read, w5
		return e
	}
	if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{
		ev("s1", u.ID, store.ProviderAnthropic, now.Add(-2*time.Hour), "1.25", 100, 800, 100), // today
		ev("s2", u.ID, store.ProviderBedrock, now.Add(-26*time.Hour), "2.5", 1000, 0, 0),      // this month, not today
		ev("s3", u.ID, store.ProviderBedrock, now.AddDate(0, -1, 0), "9", 10, 0, 0),           // last month
		ev("s4", other.ID, store.ProviderAnthropic, now.Add(-time.Hour), "7", 10, 0, 0),       // someone else
	}); err != nil {
		t.Fatal(err)
	}
	reset := now.Add(3 * time.Hour)
	f := func(v float64) *float64 { return &v }
	if err := st.Headroom().Record(ctx, []store.HeadroomSample{
		{UserID: u.ID, AccessKeyID: uuid.New(), SampledAt: now.Add(-30 * time.Minute), Status: "allowed", Utilization5h: f(0.5), Reset5h: &reset},
		{UserID: u.ID, AccessKeyID: uuid.New(), SampledAt: now.Add(-6 * time.Minute), Status: "allowed_warning", Claim: "five_hour",
			Utilization5h: f(0.9), Reset5h: &reset},
	}); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(st, Options{Now: func() time.Time { return now }})
	resp, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: u.ID.String()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMonth() != "2026-03" || resp.GetPlanUsd() != "1.250000" || resp.GetBedrockUsd() != "2.500000" ||
		resp.GetMonthlyBudgetUsd() != "40.00" || resp.GetRequestsToday() != 1 || !resp.GetMonthResetsAt().AsTime().Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("status %v", resp)
	}
	// 800 ÷ (800 + 100 + 100).
	if resp.CacheHitRateToday == nil || resp.GetCacheHitRateToday() != 0.8 {
		t.Fatalf("cache hit rate %v", resp.CacheHitRateToday)
	}
	h := resp.GetHeadroom()
	// 0.5 → 0.9 in 24 minutes: 1.0 an hour; 0.1 left: 6 minutes after the
	// newest reading, before the reset.
	if h == nil || h.GetUtilization_5H() != 0.9 || h.GetStatus() != "allowed_warning" || h.GetClaim() != "five_hour" ||
		h.Utilization_7D != nil || h.GetLimitAt_5H() == nil || h.GetLimitAt_5H().AsTime().Sub(now).Abs() > time.Second {
		t.Fatalf("headroom %v", h)
	}
	// Nothing recorded: no headroom, no cache rate; unknown and malformed
	// users are refused.
	resp, err = srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: other.ID.String()})
	if err != nil || resp.GetHeadroom() != nil || resp.GetMonthlyBudgetUsd() != "" || resp.GetPlanUsd() != "7.000000" {
		t.Fatalf("other: %v, %v", resp, err)
	}
	if _, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: uuid.NewString()}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := srv.DeveloperStatus(ctx, &keyservicev1.DeveloperStatusRequest{UserId: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed user: %v", err)
	}
}
