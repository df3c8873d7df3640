package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// rateLimitsJSON is the API form of a subject's per-minute rate limits
// (GET and PUT …/rate-limits); null means no limit on that dimension.
type rateLimitsJSON struct {
	RequestsPerMinute     *int64 `json:"requests_per_minute"`
	InputTokensPerMinute  *int64 `json:"input_tokens_per_minute"`
	OutputTokensPerMinute *int64 `json:"output_tokens_per_minute"`
}

func toRateLimits(v store.RateLimitValues) rateLimitsJSON {
	return rateLimitsJSON{RequestsPerMinute: v.RequestsPerMinute, InputTokensPerMinute: v.InputTokensPerMinute, OutputTokensPerMinute: v.OutputTokensPerMinute}
}

func (req rateLimitsJSON) validate() []fieldError {
	var errs []fieldError
	check := func(field string, p *int64, maxV int64) {
		if p != nil && (*p < 1 || *p > maxV) {
			errs = append(errs, fieldError{Field: field, Message: "must be null (no limit) or an integer from 1 to " + strconv.FormatInt(maxV, 10)})
		}
	}
	check("requests_per_minute", req.RequestsPerMinute, store.MaxRequestsPerMinute)
	check("input_tokens_per_minute", req.InputTokensPerMinute, store.MaxTokensPerMinute)
	check("output_tokens_per_minute", req.OutputTokensPerMinute, store.MaxTokensPerMinute)
	return errs
}

// rateLimitTarget is the audit log's target type of a scope.
func rateLimitTarget(scope store.RateLimitScope) string {
	if scope == store.RateLimitKey {
		return "access_key"
	}
	return string(scope)
}

// handleGetRateLimits answers GET /api/v1/{users,keys,teams}/{id}/rate-limits:
// the subject's limits, every one null when it has none.
func (s *Server) handleGetRateLimits(scope store.RateLimitScope) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.pathID(w, r)
		if !ok {
			return
		}
		var out rateLimitsJSON
		err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
			if _, _, err := rateLimitSubject(r.Context(), q, scope, id); err != nil {
				return err
			}
			l, err := q.RateLimits().Get(r.Context(), scope, id)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			out = toRateLimits(l.RateLimitValues)
			return err
		})
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handlePutRateLimits answers PUT /api/v1/{users,keys,teams}/{id}/rate-limits:
// it replaces the subject's limits (all null removes them), audits the
// change and tells every extproc, whose key lookups carry the limits.
func (s *Server) handlePutRateLimits(scope store.RateLimitScope) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.pathID(w, r)
		if !ok {
			return
		}
		var req rateLimitsJSON
		if !s.decode(w, r, &req) {
			return
		}
		if errs := req.validate(); len(errs) > 0 {
			s.invalid(w, r, errs)
			return
		}
		v := store.RateLimitValues{RequestsPerMinute: req.RequestsPerMinute, InputTokensPerMinute: req.InputTokensPerMinute, OutputTokensPerMinute: req.OutputTokensPerMinute}
		s.changeRateLimits(w, r, scope, id, v)
	}
}

// handleDeleteRateLimits answers DELETE /api/v1/{users,keys,teams}/{id}/rate-limits:
// the subject has no limits afterwards (idempotent).
func (s *Server) handleDeleteRateLimits(scope store.RateLimitScope) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.pathID(w, r)
		if !ok {
			return
		}
		s.changeRateLimits(w, r, scope, id, store.RateLimitValues{})
	}
}

// rateLimitSubject checks that the subject of scope id exists and returns
// the keys whose lookups carry its limits: a key's own, a user's keys, or
// every member's keys for a team (userID is then uuid.Nil).
func rateLimitSubject(ctx context.Context, q *store.Queries, scope store.RateLimitScope, id uuid.UUID) (uuid.UUID, []store.AccessKey, error) {
	if scope != store.RateLimitTeam {
		return ownerOf(ctx, q, id, scope == store.RateLimitKey)
	}
	if _, err := q.Teams().Get(ctx, id); err != nil {
		return uuid.Nil, nil, err
	}
	ks, err := q.AccessKeys().ListByTeam(ctx, id)
	return uuid.Nil, ks, err
}

// changeRateLimits stores v (empty: none) as the limits of scope id.
func (s *Server) changeRateLimits(w http.ResponseWriter, r *http.Request, scope store.RateLimitScope, id uuid.UUID, v store.RateLimitValues) {
	action := "rate_limits." + string(scope) + ".put"
	if v.Empty() {
		action = "rate_limits." + string(scope) + ".delete"
	}
	var (
		userID uuid.UUID
		ks     []store.AccessKey
		out    rateLimitsJSON
	)
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		var err error
		if userID, ks, err = rateLimitSubject(r.Context(), q, scope, id); err != nil {
			return err
		}
		var before any
		prev, err := q.RateLimits().Get(r.Context(), scope, id)
		switch {
		case err == nil:
			before = toRateLimits(prev.RateLimitValues)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if v.Empty() {
			if before == nil {
				return nil // nothing to remove, nothing to audit
			}
			if err := q.RateLimits().Delete(r.Context(), scope, id); err != nil {
				return err
			}
			return s.audit(r.Context(), q, action, rateLimitTarget(scope), id.String(), before, nil)
		}
		l, err := q.RateLimits().Put(r.Context(), scope, id, v)
		if err != nil {
			return err
		}
		out = toRateLimits(l.RateLimitValues)
		return s.audit(r.Context(), q, action, rateLimitTarget(scope), id.String(), before, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if scope == store.RateLimitTeam {
		if !s.invalidateTeam(w, r, ks) {
			return
		}
	} else if !s.invalidateOrUnavailable(w, r, keysInvalidation(userID, ks)) {
		return
	}
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
