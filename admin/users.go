package admin

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// userJSON is the API form of a user.
type userJSON struct {
	ID               uuid.UUID `json:"id"`
	Name             string    `json:"name"`
	Email            *string   `json:"email"`
	RoutingStrategy  string    `json:"routing_strategy"`
	MonthlyBudgetUSD *string   `json:"monthly_budget_usd"`
	// PreemptThreshold is the user's pre-emptive failover threshold (a
	// Plan utilization fraction; 0 = off); null means the gateway default.
	PreemptThreshold *float64 `json:"preempt_threshold"`
	// SeatType is pro, max_5x, max_20x or api; null when not recorded.
	SeatType *string `json:"seat_type"`
	// TeamID is the developer's team; null when in none.
	TeamID    *uuid.UUID `json:"team_id"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

func toUser(u store.User) userJSON {
	out := userJSON{ID: u.ID, Name: u.Name, Email: u.Email, RoutingStrategy: string(u.RoutingStrategy),
		Status: string(u.Status), CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, DeletedAt: u.DeletedAt,
		PreemptThreshold: u.PreemptThreshold, TeamID: u.TeamID}
	if u.SeatType != nil {
		st := string(*u.SeatType)
		out.SeatType = &st
	}
	if u.MonthlyBudgetUSD != nil {
		b := u.MonthlyBudgetUSD.StringFixed(2)
		out.MonthlyBudgetUSD = &b
	}
	return out
}

var (
	budgetRE = regexp.MustCompile(`^[0-9]{1,10}(\.[0-9]{1,2})?$`)
	emailRE  = regexp.MustCompile(`^[^\s@]+@[^\s@]+$`)
)

func checkName(field, v string, max int, errs *[]fieldError) {
	if strings.TrimSpace(v) == "" || utf8.RuneCountInString(v) > max || !utf8.ValidString(v) || strings.ContainsFunc(v, isControl) {
		*errs = append(*errs, fieldError{Field: field, Message: "must be 1 to " + strconv.Itoa(max) + " characters without control characters"})
	}
}

func checkEmail(v string, errs *[]fieldError) {
	if len(v) > 254 || !emailRE.MatchString(v) {
		*errs = append(*errs, fieldError{Field: "email", Message: "must be an email address"})
	}
}

func checkStrategy(field, v string, errs *[]fieldError) store.RoutingStrategy {
	rs := store.RoutingStrategy(v)
	if !rs.Valid() {
		*errs = append(*errs, fieldError{Field: field, Message: "must be plan_first, bedrock_only or plan_only"})
	}
	return rs
}

func parseBudget(v string, errs *[]fieldError) *decimal.Decimal {
	if !budgetRE.MatchString(v) {
		*errs = append(*errs, fieldError{Field: "monthly_budget_usd", Message: `must be a non-negative decimal string with at most 2 decimals, like "12.50"`})
		return nil
	}
	d, err := decimal.NewFromString(v)
	if err != nil {
		*errs = append(*errs, fieldError{Field: "monthly_budget_usd", Message: "must be a decimal string"})
		return nil
	}
	return &d
}

func checkPreempt(v float64, errs *[]fieldError) *float64 {
	if !(v >= 0 && v <= 1) {
		*errs = append(*errs, fieldError{Field: "preempt_threshold", Message: "must be a fraction from 0 (off) to 1, such as 0.95"})
	}
	return &v
}

func checkSeat(v string, errs *[]fieldError) *store.SeatType {
	st := store.SeatType(v)
	if !st.Valid() {
		*errs = append(*errs, fieldError{Field: "seat_type", Message: "must be pro, max_5x, max_20x or api"})
	}
	return &st
}

type createUserRequest struct {
	Name             string   `json:"name"`
	Email            *string  `json:"email"`
	RoutingStrategy  *string  `json:"routing_strategy"`
	MonthlyBudgetUSD *string  `json:"monthly_budget_usd"`
	PreemptThreshold *float64 `json:"preempt_threshold"`
	SeatType         *string  `json:"seat_type"`
	// TeamID puts the developer in a team; without routing_strategy they
	// take the team's, when it has one.
	TeamID *uuid.UUID `json:"team_id"`
}

func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	var req createUserRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	nu := store.NewUser{Name: req.Name, Email: req.Email}
	checkName("name", req.Name, 200, &errs)
	if req.Email != nil {
		checkEmail(*req.Email, &errs)
	}
	if req.RoutingStrategy != nil {
		nu.RoutingStrategy = checkStrategy("routing_strategy", *req.RoutingStrategy, &errs)
	}
	if req.MonthlyBudgetUSD != nil {
		nu.MonthlyBudgetUSD = parseBudget(*req.MonthlyBudgetUSD, &errs)
	}
	if req.PreemptThreshold != nil {
		nu.PreemptThreshold = checkPreempt(*req.PreemptThreshold, &errs)
	}
	if req.SeatType != nil {
		nu.SeatType = checkSeat(*req.SeatType, &errs)
	}
	nu.TeamID = req.TeamID
	if own := actorFrom(r.Context()).teamScope(); own != nil {
		// A team admin creates developers in its own team.
		if nu.TeamID != nil && *nu.TeamID != *own {
			errs = append(errs, fieldError{Field: "team_id", Message: "a team admin creates developers only in its own team"})
		}
		nu.TeamID = own
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var out userJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		u, err := q.Users().Create(r.Context(), nu)
		if err != nil {
			return err
		}
		out = toUser(u)
		return s.audit(r.Context(), q, "user.create", "user", u.ID.String(), nil, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/users/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, userListFilter,
		func(ctx context.Context, opt store.UserListOptions, limit int, cursor string) ([]store.User, string, error) {
			opt.Limit, opt.Cursor = limit, cursor
			return s.st.Users().List(ctx, opt)
		}, toUser)
}

// userListFilter reads the status and team_id filters of GET /users; a
// team admin sees its own team's developers whatever it asks.
func userListFilter(r *http.Request, errs *[]fieldError) store.UserListOptions {
	var opt store.UserListOptions
	opt.Status = store.UserStatus(r.URL.Query().Get("status"))
	if opt.Status != "" && !opt.Status.Valid() {
		*errs = append(*errs, fieldError{Field: "status", Message: "must be active or disabled"})
	}
	opt.TeamID = uuidParam(r, "team_id", errs)
	if own := actorFrom(r.Context()).teamScope(); own != nil {
		opt.TeamID = own
	}
	return opt
}

// uuidParam reads an optional UUID query parameter.
func uuidParam(r *http.Request, name string, errs *[]fieldError) *uuid.UUID {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil
	}
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		*errs = append(*errs, fieldError{Field: name, Message: "must be a UUID"})
		return nil
	}
	return &id
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	u, err := s.st.Users().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toUser(u))
}

type patchUserRequest struct {
	Name             optional[string]  `json:"name"`
	Email            optional[string]  `json:"email"`
	RoutingStrategy  optional[string]  `json:"routing_strategy"`
	MonthlyBudgetUSD optional[string]  `json:"monthly_budget_usd"`
	PreemptThreshold optional[float64] `json:"preempt_threshold"`
	SeatType         optional[string]  `json:"seat_type"`
	// TeamID moves the developer to a team (null: out of any).
	TeamID optional[uuid.UUID] `json:"team_id"`
	Status optional[string]    `json:"status"`
}

func (s *Server) handlePatchUser(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchUserRequest
	if !s.decode(w, r, &req) {
		return
	}
	var (
		errs []fieldError
		p    store.UserPatch
	)
	if req.Name.Set {
		if req.Name.Null {
			errs = append(errs, fieldError{Field: "name", Message: "cannot be null"})
		} else {
			checkName("name", req.Name.Value, 200, &errs)
			p.Name = store.Some(req.Name.Value)
		}
	}
	if req.Email.Set {
		if req.Email.Null {
			p.Email = store.Some[*string](nil)
		} else {
			checkEmail(req.Email.Value, &errs)
			p.Email = store.Some(&req.Email.Value)
		}
	}
	if req.RoutingStrategy.Set {
		p.RoutingStrategy = store.Some(checkStrategy("routing_strategy", req.RoutingStrategy.Value, &errs))
	}
	if req.MonthlyBudgetUSD.Set {
		if req.MonthlyBudgetUSD.Null {
			p.MonthlyBudgetUSD = store.Some[*decimal.Decimal](nil)
		} else {
			p.MonthlyBudgetUSD = store.Some(parseBudget(req.MonthlyBudgetUSD.Value, &errs))
		}
	}
	if req.PreemptThreshold.Set {
		if req.PreemptThreshold.Null {
			p.PreemptThreshold = store.Some[*float64](nil)
		} else {
			p.PreemptThreshold = store.Some(checkPreempt(req.PreemptThreshold.Value, &errs))
		}
	}
	if req.SeatType.Set {
		if req.SeatType.Null {
			p.SeatType = store.Some[*store.SeatType](nil)
		} else {
			p.SeatType = store.Some(checkSeat(req.SeatType.Value, &errs))
		}
	}
	if req.TeamID.Set {
		var team *uuid.UUID
		if !req.TeamID.Null {
			team = &req.TeamID.Value
		}
		if own := actorFrom(r.Context()).teamScope(); own != nil && (team == nil || *team != *own) {
			errs = append(errs, fieldError{Field: "team_id", Message: "a team admin cannot move developers out of its team"})
		}
		p.TeamID = store.Some(team)
	}
	if req.Status.Set {
		st := store.UserStatus(req.Status.Value)
		if !st.Valid() {
			errs = append(errs, fieldError{Field: "status", Message: "must be active or disabled"})
		}
		p.Status = store.Some(st)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var (
		out  userJSON
		keys []store.AccessKey
	)
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Users().Get(r.Context(), id)
		if err != nil {
			return err
		}
		u, err := q.Users().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toUser(u)
		if keys, err = q.AccessKeys().ListByUser(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "user.update", "user", id.String(), toUser(before), out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateOrUnavailable(w, r, keysInvalidation(id, keys)) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var keys []store.AccessKey
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Users().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if keys, err = q.AccessKeys().ListByUser(r.Context(), id); err != nil {
			return err
		}
		if _, err := q.Users().SoftDelete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "user.delete", "user", id.String(), toUser(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateOrUnavailable(w, r, keysInvalidation(id, keys)) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
