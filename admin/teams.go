package admin

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Teams. A developer belongs to at most one team (users.team_id). The team
// carries two monthly budgets (rows of the budgets table, written with the
// team by store.Teams, enforced and notified by the budget machinery), a
// default routing strategy that a user takes on joining without naming one
// (store.Users), a model allow-list that extproc enforces and a
// pre-emptive failover threshold for members without their own. Every
// change that reaches the key lookup (allow-list, threshold, deletion)
// invalidates the members' cached lookups.

// teamJSON is the API form of a team.
type teamJSON struct {
	ID                 uuid.UUID `json:"id"`
	Name               string    `json:"name"`
	MonthlyBudgetUSD   *string   `json:"monthly_budget_usd"`
	PlanBudgetUSD      *string   `json:"plan_budget_usd"`
	PlanBudgetEnforced bool      `json:"plan_budget_enforced"`
	// RoutingStrategy is what a user joining the team takes; null: members
	// keep their own.
	RoutingStrategy *string `json:"routing_strategy"`
	// AllowedModels: null allows every model.
	AllowedModels    []string   `json:"allowed_models"`
	PreemptThreshold *float64   `json:"preempt_threshold"`
	Members          int        `json:"members"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
	DeletedAt        *time.Time `json:"deleted_at,omitempty"`
}

func toTeam(t store.Team) teamJSON {
	out := teamJSON{ID: t.ID, Name: t.Name, PlanBudgetEnforced: t.PlanBudgetEnforced, AllowedModels: t.AllowedModels,
		PreemptThreshold: t.PreemptThreshold, Members: t.Members, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, DeletedAt: t.DeletedAt}
	money := func(d *decimal.Decimal) *string {
		if d == nil {
			return nil
		}
		v := d.StringFixed(2)
		return &v
	}
	out.MonthlyBudgetUSD, out.PlanBudgetUSD = money(t.MonthlyBudgetUSD), money(t.PlanBudgetUSD)
	if t.RoutingStrategy != nil {
		rs := string(*t.RoutingStrategy)
		out.RoutingStrategy = &rs
	}
	return out
}

// parseMoney is parseBudget for a field of another name.
func parseMoney(field, v string, errs *[]fieldError) *decimal.Decimal {
	var own []fieldError
	d := parseBudget(v, &own)
	for _, e := range own {
		*errs = append(*errs, fieldError{Field: field, Message: e.Message})
	}
	return d
}

// maxAllowedModels bounds an allow-list.
const maxAllowedModels = 100

// checkAllowedModels validates an allow-list against the model catalog: each
// entry is a mapping's Anthropic model id or one of its aliases (such as
// the family alias claude-sonnet-4-5), as extproc resolves request models.
func (s *Server) checkAllowedModels(ctx context.Context, models []string, errs *[]fieldError) error {
	if len(models) == 0 {
		*errs = append(*errs, fieldError{Field: "allowed_models", Message: "must name at least one model; null allows every model"})
		return nil
	}
	if len(models) > maxAllowedModels {
		*errs = append(*errs, fieldError{Field: "allowed_models", Message: "at most 100 models"})
		return nil
	}
	catalog, err := s.st.Models().List(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, m := range catalog {
		known[m.AnthropicModelID] = true
		for _, a := range m.Aliases {
			known[a] = true
		}
	}
	seen := map[string]bool{}
	for _, m := range models {
		switch {
		case seen[m]:
			*errs = append(*errs, fieldError{Field: "allowed_models", Message: "lists " + quote(m) + " twice"})
		case !known[m]:
			*errs = append(*errs, fieldError{Field: "allowed_models",
				Message: quote(m) + " is not a model id or alias of the model catalog (GET /api/v1/models)"})
		}
		seen[m] = true
	}
	return nil
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return `"` + strings.ToValidUTF8(s, "�") + `"`
}

type createTeamRequest struct {
	Name               string   `json:"name"`
	MonthlyBudgetUSD   *string  `json:"monthly_budget_usd"`
	PlanBudgetUSD      *string  `json:"plan_budget_usd"`
	PlanBudgetEnforced *bool    `json:"plan_budget_enforced"`
	RoutingStrategy    *string  `json:"routing_strategy"`
	AllowedModels      []string `json:"allowed_models"`
	PreemptThreshold   *float64 `json:"preempt_threshold"`
}

func (s *Server) handleCreateTeam(w http.ResponseWriter, r *http.Request) {
	var req createTeamRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	nt := store.NewTeam{Name: req.Name}
	checkName("name", req.Name, 200, &errs)
	if req.MonthlyBudgetUSD != nil {
		nt.MonthlyBudgetUSD = parseMoney("monthly_budget_usd", *req.MonthlyBudgetUSD, &errs)
	}
	if req.PlanBudgetUSD != nil {
		nt.PlanBudgetUSD = parseMoney("plan_budget_usd", *req.PlanBudgetUSD, &errs)
	}
	if req.PlanBudgetEnforced != nil {
		nt.PlanBudgetEnforced = *req.PlanBudgetEnforced
	}
	if req.RoutingStrategy != nil {
		rs := checkStrategy("routing_strategy", *req.RoutingStrategy, &errs)
		nt.RoutingStrategy = &rs
	}
	if req.AllowedModels != nil {
		if err := s.checkAllowedModels(r.Context(), req.AllowedModels, &errs); err != nil {
			s.storeError(w, r, err)
			return
		}
		nt.AllowedModels = req.AllowedModels
	}
	if req.PreemptThreshold != nil {
		nt.PreemptThreshold = checkPreempt(*req.PreemptThreshold, &errs)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var out teamJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		t, err := q.Teams().Create(r.Context(), nt)
		if err != nil {
			return err
		}
		out = toTeam(t)
		return s.audit(r.Context(), q, "team.create", "team", t.ID.String(), nil, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/teams/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListTeams(w http.ResponseWriter, r *http.Request) {
	// A team admin lists its own team only.
	own := actorFrom(r.Context()).teamScope()
	serveList(s, w, r, noFilter,
		func(ctx context.Context, _ struct{}, limit int, cursor string) ([]store.Team, string, error) {
			return s.st.Teams().List(ctx, store.TeamListOptions{Limit: limit, Cursor: cursor, ID: own})
		}, toTeam)
}

func (s *Server) handleGetTeam(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	t, err := s.st.Teams().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTeam(t))
}

type patchTeamRequest struct {
	Name               optional[string]   `json:"name"`
	MonthlyBudgetUSD   optional[string]   `json:"monthly_budget_usd"`
	PlanBudgetUSD      optional[string]   `json:"plan_budget_usd"`
	PlanBudgetEnforced optional[bool]     `json:"plan_budget_enforced"`
	RoutingStrategy    optional[string]   `json:"routing_strategy"`
	AllowedModels      optional[[]string] `json:"allowed_models"`
	PreemptThreshold   optional[float64]  `json:"preempt_threshold"`
}

func (s *Server) handlePatchTeam(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchTeamRequest
	if !s.decode(w, r, &req) {
		return
	}
	var (
		errs []fieldError
		p    store.TeamPatch
	)
	if req.Name.Set {
		if req.Name.Null {
			errs = append(errs, fieldError{Field: "name", Message: "cannot be null"})
		} else {
			checkName("name", req.Name.Value, 200, &errs)
			p.Name = store.Some(req.Name.Value)
		}
	}
	if req.MonthlyBudgetUSD.Set {
		var d *decimal.Decimal
		if !req.MonthlyBudgetUSD.Null {
			d = parseMoney("monthly_budget_usd", req.MonthlyBudgetUSD.Value, &errs)
		}
		p.MonthlyBudgetUSD = store.Some(d)
	}
	if req.PlanBudgetUSD.Set {
		var d *decimal.Decimal
		if !req.PlanBudgetUSD.Null {
			d = parseMoney("plan_budget_usd", req.PlanBudgetUSD.Value, &errs)
		}
		p.PlanBudgetUSD = store.Some(d)
	}
	if req.PlanBudgetEnforced.Set {
		if req.PlanBudgetEnforced.Null {
			errs = append(errs, fieldError{Field: "plan_budget_enforced", Message: "cannot be null"})
		}
		p.PlanBudgetEnforced = store.Some(req.PlanBudgetEnforced.Value)
	}
	if req.RoutingStrategy.Set {
		var rs *store.RoutingStrategy
		if !req.RoutingStrategy.Null {
			v := checkStrategy("routing_strategy", req.RoutingStrategy.Value, &errs)
			rs = &v
		}
		p.RoutingStrategy = store.Some(rs)
	}
	if req.AllowedModels.Set {
		var models []string
		if !req.AllowedModels.Null {
			if err := s.checkAllowedModels(r.Context(), req.AllowedModels.Value, &errs); err != nil {
				s.storeError(w, r, err)
				return
			}
			models = req.AllowedModels.Value
		}
		p.AllowedModels = store.Some(models)
	}
	if req.PreemptThreshold.Set {
		var th *float64
		if !req.PreemptThreshold.Null {
			th = checkPreempt(req.PreemptThreshold.Value, &errs)
		}
		p.PreemptThreshold = store.Some(th)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var (
		out  teamJSON
		keys []store.AccessKey
	)
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Teams().Get(r.Context(), id)
		if err != nil {
			return err
		}
		t, err := q.Teams().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toTeam(t)
		if keys, err = q.AccessKeys().ListByTeam(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "team.update", "team", id.String(), toTeam(before), out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateTeam(w, r, keys) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDeleteTeam soft-deletes a team without members or team admins
// (store.Teams.SoftDelete answers 409 otherwise, saying how many remain).
func (s *Server) handleDeleteTeam(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Teams().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if err := q.Teams().SoftDelete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "team.delete", "team", id.String(), toTeam(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// invalidateTeam tells the gateways about every member's keys (ks, grouped
// by user as AccessKeys.ListByTeam returns them).
func (s *Server) invalidateTeam(w http.ResponseWriter, r *http.Request, ks []store.AccessKey) bool {
	for start := 0; start < len(ks); {
		end := start
		for end < len(ks) && ks[end].UserID == ks[start].UserID {
			end++
		}
		if !s.invalidateOrUnavailable(w, r, keysInvalidation(ks[start].UserID, ks[start:end])) {
			return false
		}
		start = end
	}
	return true
}
