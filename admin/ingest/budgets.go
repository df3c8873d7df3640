package ingest

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/store"
)

// refreshBudgets recomputes from Postgres, and SETs in Redis, the spend of
// every budget counter the batch touches (the budgets of its keys, users
// and the users' teams, store.Budgets().ForUsage), for the current window
// and each window the rows fall in, then records and notifies the
// thresholds those spends crossed. Like refreshSpend it runs for
// duplicates too, so a retried batch repairs a stale counter and still
// notifies a crossing whose enqueue failed.
//
// Exactly once per budget, window and threshold: the budget_alerts row and
// the outbox event are written in one transaction, and the insert of the
// row is ON CONFLICT DO NOTHING, so of several ingesters (or a retried
// batch) only the first to commit notifies.
func (in *Ingester) refreshBudgets(ctx context.Context, rows []store.UsageEvent) error {
	if len(rows) == 0 {
		return nil
	}
	keySet, userSet := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
	var keys, users []uuid.UUID
	for i := range rows {
		if k := rows[i].AccessKeyID; !keySet[k] {
			keySet[k] = true
			keys = append(keys, k)
		}
		if u := rows[i].UserID; !userSet[u] {
			userSet[u] = true
			users = append(users, u)
		}
	}
	budgets, err := in.st.Budgets().ForUsage(ctx, keys, users)
	if err != nil {
		return fmt.Errorf("ingest: budgets: %w", err)
	}
	if len(budgets) == 0 {
		return nil
	}
	times := append([]time.Time{in.opt.Now()}, eventTimes(rows)...)
	spends := map[string]decimal.Decimal{} // counter key → spend
	pipe := in.rdb.Pipeline()
	type crossing struct {
		b     store.Budget
		w     billing.Window
		spent decimal.Decimal
	}
	var crossings []crossing
	for _, b := range budgets {
		windows := map[string]billing.Window{}
		for _, t := range times {
			w, err := billing.WindowOf(b.Window, t, in.opt.Location)
			if err != nil {
				return fmt.Errorf("ingest: budget %s: %w", b.ID, err)
			}
			windows[w.Key] = w
		}
		for _, w := range windows {
			key := billing.BudgetKey(in.opt.Prefix, b.Scope, b.SubjectID.String(), b.Metric, w)
			spent, ok := spends[key]
			if !ok {
				if spent, err = in.st.Budgets().Spend(ctx, b.Scope, b.SubjectID, b.Metric, w.Start, w.End); err != nil {
					return fmt.Errorf("ingest: budget spend: %w", err)
				}
				spends[key] = spent
				pipe.Set(ctx, key, billing.FormatSpend(spent), billing.BudgetTTL)
			}
			if len(b.Thresholds) > 0 && spent.IsPositive() {
				crossings = append(crossings, crossing{b, w, spent})
			}
		}
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		for _, c := range cmds {
			if err = c.Err(); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("ingest: set budget counters: %w", err)
	}
	queuedAny := false
	for _, c := range crossings {
		for _, th := range c.b.Thresholds {
			// spent ≥ amount × threshold / 100, exactly.
			if c.spent.Mul(decimal.NewFromInt(100)).LessThan(c.b.AmountUSD.Mul(decimal.NewFromInt(int64(th)))) {
				continue
			}
			queued, err := in.notifyThreshold(ctx, c.b, c.w, th, c.spent)
			if err != nil {
				return err
			}
			queuedAny = queuedAny || queued
		}
	}
	if queuedAny && in.opt.OnNotify != nil {
		in.opt.OnNotify()
	}
	return nil
}

// notifyThreshold records a crossing of threshold th in window w and, when
// it is the first, queues a budget.threshold notification in the same
// transaction.
func (in *Ingester) notifyThreshold(ctx context.Context, b store.Budget, w billing.Window, th int, spent decimal.Decimal) (bool, error) {
	who := b.Scope + " " + b.SubjectID.String()
	if b.Scope == store.BudgetScopeUser {
		if u, err := in.st.Users().Get(ctx, b.SubjectID); err == nil {
			who = "user " + strconv.Quote(u.Name)
		}
	}
	queued := false
	err := in.st.WithTx(ctx, func(tx *store.Queries) error {
		first, err := tx.Budgets().RecordAlert(ctx, b.ID, w.Key, th)
		if err != nil || !first {
			return err
		}
		_, queued, err = notifications.Enqueue(ctx, tx, notifications.Event{
			Type: notifications.TypeBudgetThreshold,
			Summary: fmt.Sprintf("%s reached %d %% of a %s %s budget ($%s of $%s; action at 100 %%: %s)",
				who, th, b.Window, b.Metric, spent.StringFixed(2), b.AmountUSD.StringFixed(2), b.Action),
			Data: map[string]any{
				"budget_id": b.ID.String(), "scope": b.Scope, "scope_id": b.SubjectID.String(),
				"window": b.Window, "window_start": w.Start.UTC(), "window_end": w.End.UTC(),
				"metric": b.Metric, "threshold_percent": th, "amount_usd": b.AmountUSD.StringFixed(2),
				"spent_usd": billing.FormatSpend(spent), "action": b.Action,
			},
			DedupeKey: notifications.TypeBudgetThreshold + ":" + b.ID.String() + ":" + w.Key + ":" + strconv.Itoa(th),
		})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ingest: budget threshold: %w", err)
	}
	return queued, nil
}

// eventTimes returns the distinct event times of rows.
func eventTimes(rows []store.UsageEvent) []time.Time {
	seen := map[int64]bool{}
	var out []time.Time
	for i := range rows {
		t := rows[i].EventTime
		if !seen[t.UnixNano()] {
			seen[t.UnixNano()] = true
			out = append(out, t)
		}
	}
	return out
}
