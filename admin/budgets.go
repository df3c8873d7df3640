package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/store"
)

// budgetDefJSON is the API form of a budget (docs/budgets.md), with its
// current window in the billing time zone and the window's spend.
type budgetDefJSON struct {
	ID         uuid.UUID         `json:"id"`
	Scope      string            `json:"scope"`
	SubjectID  uuid.UUID         `json:"subject_id"`
	Window     string            `json:"window"`
	Metric     string            `json:"metric"`
	AmountUSD  string            `json:"amount_usd"`
	Thresholds []int             `json:"thresholds"`
	Action     string            `json:"action"`
	Downgrade  map[string]string `json:"downgrade_map"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	Current    *budgetWindowJSON `json:"current,omitempty"`
}

// budgetWindowJSON is a budget's current window and spend.
type budgetWindowJSON struct {
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	SpendUSD    string    `json:"spend_usd"`
	// Percent is spend ÷ amount × 100, rounded to 2 decimals; null for a
	// budget of 0.
	Percent *float64 `json:"percent"`
}

func toBudgetDefJSON(b store.Budget) budgetDefJSON {
	th := b.Thresholds
	if th == nil {
		th = []int{}
	}
	dm := b.Downgrade
	if dm == nil {
		dm = map[string]string{}
	}
	return budgetDefJSON{ID: b.ID, Scope: b.Scope, SubjectID: b.SubjectID, Window: b.Window, Metric: b.Metric,
		AmountUSD: b.AmountUSD.StringFixed(2), Thresholds: th, Action: b.Action, Downgrade: dm,
		CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}
}

// budgetRequest is the body of POST /budgets and PATCH /budgets/{id}
// (absent fields keep their value on PATCH; scope and subject are only
// set on POST).
type budgetRequest struct {
	Scope      *string            `json:"scope"`
	SubjectID  *uuid.UUID         `json:"subject_id"`
	Window     *string            `json:"window"`
	Metric     *string            `json:"metric"`
	AmountUSD  *string            `json:"amount_usd"`
	Thresholds *[]int             `json:"thresholds"`
	Action     *string            `json:"action"`
	Downgrade  *map[string]string `json:"downgrade_map"`
}

// apply sets b's fields from req and validates the result.
func (req budgetRequest) apply(ctx context.Context, q *store.Queries, b *store.Budget) []fieldError {
	var errs []fieldError
	if req.Window != nil {
		b.Window = *req.Window
	}
	if req.Metric != nil {
		b.Metric = *req.Metric
	}
	if req.Thresholds != nil {
		b.Thresholds = *req.Thresholds
	}
	if req.Action != nil {
		b.Action = *req.Action
	}
	if req.Downgrade != nil {
		b.Downgrade = *req.Downgrade
	}
	if req.AmountUSD != nil {
		if !budgetRE.MatchString(*req.AmountUSD) {
			errs = append(errs, fieldError{Field: "amount_usd", Message: `must be a non-negative decimal string with at most 2 decimals, like "12.50"`})
		} else {
			b.AmountUSD = decimal.RequireFromString(*req.AmountUSD)
		}
	} else if b.ID == uuid.Nil {
		errs = append(errs, fieldError{Field: "amount_usd", Message: "is required"})
	}
	switch b.Scope {
	case store.BudgetScopeKey, store.BudgetScopeUser, store.BudgetScopeTeam:
	default:
		errs = append(errs, fieldError{Field: "scope", Message: "must be key, user or team"})
	}
	if b.SubjectID == uuid.Nil {
		errs = append(errs, fieldError{Field: "subject_id", Message: "is required"})
	}
	if !billing.ValidWindow(b.Window) {
		errs = append(errs, fieldError{Field: "window", Message: "must be daily, weekly or monthly"})
	}
	switch b.Metric {
	case store.BudgetMetricBedrock, store.BudgetMetricPlanList, store.BudgetMetricAll:
	default:
		errs = append(errs, fieldError{Field: "metric", Message: "must be bedrock, plan_list or all"})
	}
	switch b.Action {
	case store.BudgetBlock, store.BudgetDowngrade, store.BudgetPlanOnly, store.BudgetNotify:
	default:
		errs = append(errs, fieldError{Field: "action", Message: "must be block, downgrade, plan_only or notify"})
	}
	for _, t := range b.Thresholds {
		if t < 1 || t > 100 {
			errs = append(errs, fieldError{Field: "thresholds", Message: "must be percentages from 1 to 100"})
			break
		}
	}
	if b.Action == store.BudgetDowngrade && len(b.Downgrade) == 0 {
		errs = append(errs, fieldError{Field: "downgrade_map", Message: "is required for action downgrade: requested model (id, alias or family such as opus) → model served"})
	}
	for from, to := range b.Downgrade {
		if from == "" || len(from) > 200 {
			errs = append(errs, fieldError{Field: "downgrade_map", Message: "keys must be model names of 1 to 200 characters"})
			break
		}
		if _, err := q.Models().Resolve(ctx, to); err != nil {
			errs = append(errs, fieldError{Field: "downgrade_map", Message: "target " + to + " is not a model of the catalog (an id or alias of GET /api/v1/models)"})
			break
		}
	}
	return errs
}

// withCurrent adds the budget's current window and its exact spend.
func (s *Server) withCurrent(ctx context.Context, q *store.Queries, b store.Budget) (budgetDefJSON, error) {
	out := toBudgetDefJSON(b)
	now := time.Now()
	if s.now != nil {
		now = s.now()
	}
	w, err := billing.WindowOf(b.Window, now, s.loc)
	if err != nil {
		return out, err
	}
	spend, err := q.Budgets().Spend(ctx, b.Scope, b.SubjectID, b.Metric, w.Start, w.End)
	if err != nil {
		return out, err
	}
	cur := &budgetWindowJSON{WindowStart: w.Start.UTC(), WindowEnd: w.End.UTC(), SpendUSD: billing.FormatSpend(spend)}
	if b.AmountUSD.IsPositive() {
		p, _ := spend.Mul(decimal.NewFromInt(100)).Div(b.AmountUSD).Round(2).Float64()
		cur.Percent = &p
	}
	out.Current = cur
	return out, nil
}

// handleListBudgets answers GET /api/v1/budgets[?scope=&subject_id=].
func (s *Server) handleListBudgets(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	scope := r.URL.Query().Get("scope")
	switch scope {
	case "", store.BudgetScopeKey, store.BudgetScopeUser, store.BudgetScopeTeam:
	default:
		errs = append(errs, fieldError{Field: "scope", Message: "must be key, user or team"})
	}
	var subject uuid.UUID
	if v := r.URL.Query().Get("subject_id"); v != "" {
		var err error
		if subject, err = uuid.Parse(v); err != nil {
			errs = append(errs, fieldError{Field: "subject_id", Message: "must be a UUID"})
		}
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	out := []budgetDefJSON{}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		bs, err := q.Budgets().List(r.Context(), scope, subject)
		if err != nil {
			return err
		}
		for _, b := range bs {
			j, err := s.withCurrent(r.Context(), q, b)
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"budgets": out})
}

// handleGetBudget answers GET /api/v1/budgets/{id}.
func (s *Server) handleGetBudget(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var out budgetDefJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		b, err := q.Budgets().Get(r.Context(), id)
		if err != nil {
			return err
		}
		out, err = s.withCurrent(r.Context(), q, b)
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleCreateBudget answers POST /api/v1/budgets.
func (s *Server) handleCreateBudget(w http.ResponseWriter, r *http.Request) {
	var req budgetRequest
	if !s.decode(w, r, &req) {
		return
	}
	b := store.Budget{Window: store.BudgetMonthly, Metric: store.BudgetMetricBedrock, Action: store.BudgetBlock, Thresholds: []int{50, 80, 100}}
	if req.Scope != nil {
		b.Scope = *req.Scope
	}
	if req.SubjectID != nil {
		b.SubjectID = *req.SubjectID
	}
	s.saveBudget(w, r, req, b, http.StatusCreated)
}

// handleUpdateBudget answers PATCH /api/v1/budgets/{id}.
func (s *Server) handleUpdateBudget(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req budgetRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Scope != nil || req.SubjectID != nil {
		s.invalid(w, r, []fieldError{{Field: "scope", Message: "scope and subject_id cannot change; delete the budget and create another"}})
		return
	}
	s.saveBudget(w, r, req, store.Budget{ID: id}, http.StatusOK)
}

// saveBudget creates (b.ID nil) or updates a budget, audits it and tells
// the gateways, whose key lookups carry the budgets.
func (s *Server) saveBudget(w http.ResponseWriter, r *http.Request, req budgetRequest, b store.Budget, status int) {
	ctx := r.Context()
	var (
		out   budgetDefJSON
		users []uuid.UUID
		errs  []fieldError
	)
	err := s.st.WithTx(ctx, func(q *store.Queries) error {
		var before any
		if b.ID != uuid.Nil {
			prev, err := q.Budgets().Get(ctx, b.ID)
			if err != nil {
				return err
			}
			before, b = toBudgetDefJSON(prev), prev
		}
		if errs = req.apply(ctx, q, &b); len(errs) > 0 {
			return nil
		}
		var err error
		if users, err = q.Budgets().SubjectUsers(ctx, b.Scope, b.SubjectID); errors.Is(err, store.ErrNotFound) {
			errs = []fieldError{{Field: "subject_id", Message: "no such " + b.Scope}}
			return nil
		} else if err != nil {
			return err
		}
		action := "budget.update"
		if b.ID == uuid.Nil {
			action = "budget.create"
			b, err = q.Budgets().Create(ctx, b)
		} else {
			b, err = q.Budgets().Update(ctx, b)
		}
		if err != nil {
			return err
		}
		if out, err = s.withCurrent(ctx, q, b); err != nil {
			return err
		}
		return s.audit(ctx, q, action, "budget", b.ID.String(), before, toBudgetDefJSON(b))
	})
	if err == nil && len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateBudgetUsers(w, r, b, users) {
		return
	}
	if status == http.StatusCreated {
		w.Header().Set("Location", "/api/v1/budgets/"+b.ID.String())
	}
	writeJSON(w, status, out)
}

// handleDeleteBudget answers DELETE /api/v1/budgets/{id}.
func (s *Server) handleDeleteBudget(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var (
		b     store.Budget
		users []uuid.UUID
	)
	err := s.st.WithTx(ctx, func(q *store.Queries) error {
		var err error
		if b, err = q.Budgets().Get(ctx, id); err != nil {
			return err
		}
		if users, err = q.Budgets().SubjectUsers(ctx, b.Scope, b.SubjectID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := q.Budgets().Delete(ctx, id); err != nil {
			return err
		}
		return s.audit(ctx, q, "budget.delete", "budget", id.String(), toBudgetDefJSON(b), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateBudgetUsers(w, r, b, users) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// invalidateBudgetUsers tells the gateways about the keys whose lookups
// carry b: the key itself, or every key of the affected users.
func (s *Server) invalidateBudgetUsers(w http.ResponseWriter, r *http.Request, b store.Budget, users []uuid.UUID) bool {
	for _, u := range users {
		var inv Invalidation
		err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
			forKey := b.Scope == store.BudgetScopeKey
			id := u
			if forKey {
				id = b.SubjectID
			}
			userID, ks, err := ownerOf(r.Context(), q, id, forKey)
			inv = keysInvalidation(userID, ks)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.storeError(w, r, err)
			return false
		}
		if err == nil && !s.invalidateOrUnavailable(w, r, inv) {
			return false
		}
	}
	return true
}
