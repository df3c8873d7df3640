package budget

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/singleflight"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/billing"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// Budget actions, the strongest first (docs/budgets.md, "Which action
// wins"). When several budgets of a request are used up, the strongest
// action applies:
//
//   - block refuses the request: nothing is served, so nothing weaker can
//     matter;
//   - plan_only withholds Bedrock: no spend at all on the gateway's
//     account, which a downgrade (still Bedrock spend, only less) cannot
//     promise;
//   - downgrade serves a cheaper model: it changes the request but serves
//     it;
//   - notify only notifies (the ingester does that), so it changes nothing
//     here.
const (
	ActionBlock     = "block"
	ActionPlanOnly  = "plan_only"
	ActionDowngrade = "downgrade"
	ActionNotify    = "notify"
)

// rank orders the actions: higher is stronger.
func rank(action string) int {
	switch action {
	case ActionBlock:
		return 4
	case ActionPlanOnly:
		return 3
	case ActionDowngrade:
		return 2
	case ActionNotify:
		return 1
	}
	return 0
}

// Verdict is the outcome of checking a request's budgets.
type Verdict struct {
	// Action is the strongest action of the used-up budgets (Spent >=
	// Amount); "" when none is used up.
	Action string
	// Budget is the used-up budget whose action that is (the first of the
	// lookup's order among equals), with its spend and window end.
	Budget  accesskey.Budget
	Spent   decimal.Decimal
	ResetAt time.Time
	// Stale reports that Budget's spend is the last value seen while Redis
	// and the KeyService were unreachable.
	Stale bool
	// Unchecked counts budgets whose spend could not be learned at all:
	// they were skipped (fail open, as for the monthly budget).
	Unchecked int
}

// budgetLookup is one budget's counter for the current window.
type budgetLookup struct {
	b   accesskey.Budget
	w   billing.Window
	key string
}

// CheckBudgets checks every budget of a request against its current
// window's counter: what the in-process cache does not hold is read with
// one Redis MGET; a missing counter is recomputed by the KeyService's
// BudgetSpend RPC (which also SETs it for every instance). The caching,
// staleness and fail-open policy are the package doc's: a budget whose
// spend cannot be learned is skipped and counted in Verdict.Unchecked.
func (c *Checker) CheckBudgets(ctx context.Context, budgets []accesskey.Budget) Verdict {
	if len(budgets) == 0 {
		return Verdict{}
	}
	now := c.cfg.Now()
	ls := make([]budgetLookup, 0, len(budgets))
	for _, b := range budgets {
		w, err := billing.WindowOf(b.Window, now, c.cfg.Location)
		if err != nil {
			c.cfg.Logger.ErrorContext(ctx, "budget with an unknown window skipped", "budget_id", b.ID, "err", err)
			continue
		}
		ls = append(ls, budgetLookup{b: b, w: w, key: billing.BudgetKey(c.cfg.Prefix, b.Scope, b.SubjectID.String(), b.Metric, w)})
	}
	spent := make(map[string]decimal.Decimal, len(ls))
	var missing []string
	for _, l := range ls {
		if e, ok := c.cachedBudget(l.key); ok && now.Sub(e.fetchedAt) < c.cfg.CacheTTL {
			spent[l.key] = e.spent
			c.metrics.bySource[SourceCache].Inc()
		} else if _, dup := spent[l.key]; !dup && !contains(missing, l.key) {
			missing = append(missing, l.key)
		}
	}
	var v Verdict
	stale := map[string]bool{}
	if len(missing) > 0 {
		found, err := c.fetchBudgets(ctx, ls, missing)
		for _, k := range missing {
			if s, ok := found[k]; ok {
				spent[k] = s
				continue
			}
			if e, ok := c.cachedBudget(k); ok && c.cfg.Now().Sub(e.fetchedAt) < c.cfg.StaleTTL {
				spent[k], stale[k] = e.spent, true
				c.metrics.bySource[SourceStale].Inc()
				continue
			}
			c.metrics.checkErrs.Inc()
			c.cfg.Logger.WarnContext(ctx, "budget spend unknown: budget skipped (fail open)", "counter", k, "err", err)
		}
	}
	for _, l := range ls {
		s, ok := spent[l.key]
		if !ok {
			v.Unchecked++
			continue
		}
		if s.LessThan(l.b.AmountUSD) {
			continue
		}
		c.metrics.over.Inc()
		if rank(l.b.Action) > rank(v.Action) {
			v.Action, v.Budget, v.Spent, v.ResetAt, v.Stale = l.b.Action, l.b, s, l.w.End, stale[l.key]
		}
	}
	return v
}

// fetchBudgets reads the missing counters with one MGET, then asks the
// KeyService for those Redis lacks. Concurrent checks for the same
// counters share one fetch. It returns what it learned; err says why the
// rest is missing.
func (c *Checker) fetchBudgets(ctx context.Context, ls []budgetLookup, missing []string) (map[string]decimal.Decimal, error) {
	ch := c.group.DoChan("budgets:"+strings.Join(missing, ","), func() (any, error) {
		return c.fetchBudgetsOnce(context.WithoutCancel(ctx), ls, missing)
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	found, _ := r.Val.(map[string]decimal.Decimal)
	return found, r.Err
}

func (c *Checker) fetchBudgetsOnce(ctx context.Context, ls []budgetLookup, missing []string) (map[string]decimal.Decimal, error) {
	found := make(map[string]decimal.Decimal, len(missing))
	vals, redisErr := c.mgetCB.Execute(func() ([]any, error) {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
		defer cancel()
		return c.cfg.Redis.MGet(ctx, missing...).Result()
	})
	if redisErr != nil {
		c.metrics.redisErrs.Inc()
		c.cfg.Logger.WarnContext(ctx, "budget counters unavailable; asking the key service", "err", redisErr)
	}
	var errs []error
	if redisErr != nil {
		errs = append(errs, fmt.Errorf("redis: %w", redisErr))
	}
	for i, k := range missing {
		if redisErr == nil && i < len(vals) {
			if s, ok := vals[i].(string); ok {
				if d, err := billing.ParseSpend(s); err == nil {
					found[k] = d
					c.storeBudget(k, d)
					c.metrics.bySource[SourceRedis].Inc()
					continue
				}
				c.cfg.Logger.ErrorContext(ctx, "unreadable budget counter in redis; asking the key service", "key", k)
			}
		}
		l := lookupOf(ls, k)
		resp, err := c.budgetRPCCB.Execute(func() (*keyservicev1.BudgetSpendResponse, error) {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
			defer cancel()
			return c.cfg.KeyService.BudgetSpend(ctx, &keyservicev1.BudgetSpendRequest{
				Scope: l.b.Scope, SubjectId: l.b.SubjectID.String(), Metric: l.b.Metric, Window: l.w.Kind, WindowStart: l.w.Key})
		})
		if err == nil {
			var d decimal.Decimal
			if d, err = billing.ParseSpend(resp.GetSpendUsd()); err == nil {
				found[k] = d
				c.storeBudget(k, d)
				c.metrics.bySource[SourceRPC].Inc()
				continue
			}
		}
		c.metrics.rpcErrs.Inc()
		errs = append(errs, fmt.Errorf("budget spend rpc for %s: %w", k, err))
	}
	return found, errors.Join(errs...)
}

func lookupOf(ls []budgetLookup, key string) budgetLookup {
	for _, l := range ls {
		if l.key == key {
			return l
		}
	}
	return budgetLookup{}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (c *Checker) cachedBudget(key string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.budgetCache[key]
	return e, ok
}

// storeBudget caches a counter's value; past MaxEntries it drops what is
// too old to serve even as stale, else everything (a rare reset costs one
// MGET per request for a second).
func (c *Checker) storeBudget(key string, spent decimal.Decimal) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.budgetCache[key]; !ok && len(c.budgetCache) >= c.cfg.MaxEntries {
		for k, e := range c.budgetCache {
			if now.Sub(e.fetchedAt) >= c.cfg.StaleTTL {
				delete(c.budgetCache, k)
			}
		}
		if len(c.budgetCache) >= c.cfg.MaxEntries {
			clear(c.budgetCache)
		}
	}
	c.budgetCache[key] = cached{spent: spent, fetchedAt: now}
}

// mgetOK keeps redis.Nil from opening the MGET breaker (MGET never returns
// it, but a proxy might).
func mgetOK(err error) bool { return err == nil || errors.Is(err, redis.Nil) }
