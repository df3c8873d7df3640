package keyservice

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/headroom"
	"github.com/ccproxy/ccproxy/internal/store"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// statusTimeout bounds the queries of one DeveloperStatus answer.
const statusTimeout = 5 * time.Second

// DeveloperStatus implements keyservicev1.KeyServiceServer: the developer's
// own month, budget, Plan headroom and today's cache hit rate, from the
// rollups (two summary reads) and plan_headroom (one read of the last
// hour), and the budgets that act on their requests with each one's exact
// spend in its current window (one budgets read, then budgetSpend per
// budget, as BudgetSpend computes it, without setting the counters).
//
// Budgets of the user and of their team are always included; key budgets
// only for the request's key_id, the key the developer is asking with
// (extproc passes it for /ak/<key>/me): a budget on another of their keys
// never acts on this key's requests, so showing it would mislead the
// status line. A key_id that is not the user's adds nothing.
func (s *Server) DeveloperStatus(ctx context.Context, req *keyservicev1.DeveloperStatusRequest) (*keyservicev1.DeveloperStatusResponse, error) {
	userID, err := uuid.Parse(req.GetUserId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "user_id must be a UUID")
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		s.opts.Logger.ErrorContext(ctx, "developer status: "+what+" failed", "user_id", userID, "err", err)
		return status.Error(codes.Unavailable, "developer status query failed")
	}
	var keyID uuid.UUID
	if k := req.GetKeyId(); k != "" {
		if keyID, err = uuid.Parse(k); err != nil {
			return nil, status.Error(codes.InvalidArgument, "key_id must be a UUID")
		}
	}
	u, err := s.store.Users().Get(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "no such user")
	} else if err != nil {
		return nil, fail("user lookup", err)
	}
	loc := s.opts.Location
	if loc == nil {
		loc = time.UTC
	}
	now := s.opts.Now()
	m := billing.MonthOf(now, loc)
	month, err := s.totals(ctx, userID, m.Start, m.End)
	if err != nil {
		return nil, fail("month summary", err)
	}
	y, mo, d := now.In(loc).Date()
	dayStart := time.Date(y, mo, d, 0, 0, 0, 0, loc)
	today, err := s.totals(ctx, userID, dayStart, dayStart.AddDate(0, 0, 1))
	if err != nil {
		return nil, fail("day summary", err)
	}
	out := &keyservicev1.DeveloperStatusResponse{
		Month: m.Key, MonthResetsAt: timestamppb.New(m.End),
		PlanUsd: month.PlanCostUSD.StringFixed(6), BedrockUsd: month.BedrockCostUSD.StringFixed(6),
		RequestsToday: today.Requests,
	}
	if u.MonthlyBudgetUSD != nil {
		out.MonthlyBudgetUsd = u.MonthlyBudgetUSD.StringFixed(2)
	}
	if r, ok := CacheHitRate(today); ok {
		out.CacheHitRateToday = &r
	}
	samples, err := s.store.Headroom().History(ctx, userID, now.Add(-headroom.Lookback-store.HeadroomBucket), now.Add(time.Minute))
	if err != nil {
		return nil, fail("headroom", err)
	}
	if len(samples) > 0 {
		out.Headroom = headroomProto(samples)
	}
	if out.Budgets, err = s.developerBudgets(ctx, userID, keyID, now, loc); err != nil {
		return nil, fail("budgets", err)
	}
	return out, nil
}

// developerBudgets returns the budgets of a developer (store ForDeveloper)
// with their spend in the window that contains now.
func (s *Server) developerBudgets(ctx context.Context, userID, keyID uuid.UUID, now time.Time, loc *time.Location) ([]*keyservicev1.DeveloperBudget, error) {
	rows, err := s.store.Budgets().ForDeveloper(ctx, userID, keyID)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	out := make([]*keyservicev1.DeveloperBudget, 0, len(rows))
	for _, b := range rows {
		w, err := billing.WindowOf(b.Window, now, loc)
		if err != nil {
			return nil, fmt.Errorf("budget %s: %w", b.ID, err)
		}
		spent, err := s.budgetSpend(ctx, b.Scope, b.SubjectID, b.Metric, w, false)
		if err != nil {
			return nil, fmt.Errorf("budget %s spend: %w", b.ID, err)
		}
		db := &keyservicev1.DeveloperBudget{
			Id: b.ID.String(), Scope: b.Scope, Window: b.Window, Metric: b.Metric,
			LimitUsd: b.AmountUSD.StringFixed(6), SpentUsd: spent, Action: b.Action,
			WindowStart: w.Key, ResetsAt: timestamppb.New(w.End),
		}
		if b.Action == store.BudgetDowngrade {
			db.Downgrade = b.Downgrade
		}
		out = append(out, db)
	}
	return out, nil
}

func (s *Server) totals(ctx context.Context, userID uuid.UUID, from, to time.Time) (store.UsageTotals, error) {
	groups, err := s.store.Usage().Summary(ctx, store.UsageSummaryQuery{UserID: &userID, From: from, To: to, GroupBy: store.GroupByUser})
	if err != nil || len(groups) == 0 {
		return store.UsageTotals{PlanCostUSD: decimal.Zero, BedrockCostUSD: decimal.Zero}, err
	}
	return groups[0].UsageTotals, nil
}

// CacheHitRate is cache reads ÷ (cache reads + uncached input + cache
// writes) of t; ok is false when that denominator is 0.
func CacheHitRate(t store.UsageTotals) (float64, bool) {
	den := t.CacheReadTokens + t.InputTokens + t.CacheWrite5mTokens + t.CacheWrite1hTokens
	if den <= 0 {
		return 0, false
	}
	return float64(t.CacheReadTokens) / float64(den), true
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func headroomProto(samples []store.HeadroomSample) *keyservicev1.PlanHeadroom {
	latest := samples[len(samples)-1] // History is oldest first
	h := &keyservicev1.PlanHeadroom{
		SampledAt: timestamppb.New(latest.SampledAt), Status: latest.Status, Claim: latest.Claim,
		Utilization_5H: latest.Utilization5h, Reset_5H: ts(latest.Reset5h),
		Utilization_7D: latest.Utilization7d, Reset_7D: ts(latest.Reset7d),
	}
	if f, ok := headroom.ForWindow(samples, headroom.Window5h); ok && f.BeforeReset {
		h.LimitAt_5H = ts(f.LimitAt)
	}
	return h
}
