package keyservice

import (
	"context"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/store"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// budgets returns every budget that applies to the key's requests (the
// key's, its user's and its team's, the team's monthly_budget_usd and
// plan_budget_usd among them: all rows of the budgets table), each with
// its current window and counter key. extproc recomputes the window itself
// from the definition when the answer outlives it (a cached lookup across
// midnight), so the window here is informational.
func (s *Server) budgets(ctx context.Context, l store.KeyLookup) ([]*keyservicev1.Budget, error) {
	rows, err := s.store.Budgets().ForRequest(ctx, l.Key.ID, l.User.ID)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	now := s.opts.Now()
	out := make([]*keyservicev1.Budget, 0, len(rows))
	for _, b := range rows {
		w, err := billing.WindowOf(b.Window, now, s.opts.Location)
		if err != nil {
			return nil, err
		}
		out = append(out, &keyservicev1.Budget{
			Id:          b.ID.String(),
			Scope:       b.Scope,
			SubjectId:   b.SubjectID.String(),
			Window:      b.Window,
			Metric:      b.Metric,
			AmountUsd:   b.AmountUSD.StringFixed(2),
			Action:      b.Action,
			Downgrade:   b.Downgrade,
			WindowStart: timestamppb.New(w.Start),
			WindowEnd:   timestamppb.New(w.End),
			CounterKey:  billing.BudgetKey(s.opts.RedisPrefix, b.Scope, b.SubjectID.String(), b.Metric, w),
		})
	}
	return out, nil
}

// BudgetSpend implements keyservicev1.KeyServiceServer: the exact spend a
// budget of the subject counts on the metric in the window, as a decimal
// string with 6 decimals, also SET as the window's Redis budget counter.
// Like MonthlySpend, concurrent calls for one counter share one
// computation and an answer is reused for Options.SpendReuse. Failing to
// store the counter is logged, not returned.
func (s *Server) BudgetSpend(ctx context.Context, req *keyservicev1.BudgetSpendRequest) (*keyservicev1.BudgetSpendResponse, error) {
	subject, err := uuid.Parse(req.GetSubjectId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "subject_id must be a UUID")
	}
	switch req.GetScope() {
	case store.BudgetScopeKey, store.BudgetScopeUser, store.BudgetScopeTeam:
	default:
		return nil, status.Error(codes.InvalidArgument, "scope must be key, user or team")
	}
	switch req.GetMetric() {
	case store.BudgetMetricBedrock, store.BudgetMetricPlanList, store.BudgetMetricAll:
	default:
		return nil, status.Error(codes.InvalidArgument, "metric must be bedrock, plan_list or all")
	}
	w, err := billing.ParseWindow(req.GetWindow(), req.GetWindowStart(), s.opts.Location)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "window must be daily, weekly or monthly and window_start the YYYY-MM-DD it starts on")
	}
	value, err := s.budgetSpend(ctx, req.GetScope(), subject, req.GetMetric(), w, true)
	if err != nil {
		return nil, err
	}
	return &keyservicev1.BudgetSpendResponse{SpendUsd: value}, nil
}

// budgetSpend is the exact spend a budget of scope and subject counts on
// metric in window w, formatted by billing.FormatSpend. BudgetSpend and
// DeveloperStatus share it, so both answer the same number. With
// setCounter it is also SET as the window's Redis budget counter
// (BudgetSpend, asked when the counter is missing). DeveloperStatus reads
// only: the counter is the ingester's, which SETs it after each commit,
// and /me is asked on every update of a status line, so a SET of a value
// computed just before a commit would keep rolling the counter back. The
// two kinds share neither computations nor reused answers (a read-only
// answer reused by BudgetSpend would skip its SET). Its errors are gRPC
// status errors.
func (s *Server) budgetSpend(ctx context.Context, scope string, subject uuid.UUID, metric string, w billing.Window, setCounter bool) (string, error) {
	counter := billing.BudgetKey(s.opts.RedisPrefix, scope, subject.String(), metric, w)
	key := counter
	if !setCounter {
		key += " (read)"
	}
	if v, ok := s.reused(key); ok {
		return v, nil
	}
	v, err, _ := s.flight.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		spend, err := s.store.Budgets().Spend(ctx, scope, subject, metric, w.Start, w.End)
		if err != nil {
			s.opts.Logger.ErrorContext(ctx, "budget spend query failed", "key", counter, "err", err)
			return "", status.Error(codes.Unavailable, "budget spend query failed")
		}
		value := billing.FormatSpend(spend)
		if setCounter && s.opts.Redis != nil {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := s.opts.Redis.Set(sctx, counter, value, billing.BudgetTTL).Err(); err != nil {
				s.opts.Logger.WarnContext(ctx, "storing the budget counter failed", "key", counter, "err", err)
			}
		}
		return value, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return "", status.FromContextError(ctx.Err()).Err()
		}
		return "", err
	}
	value := v.(string)
	s.reuse(key, value)
	return value, nil
}
