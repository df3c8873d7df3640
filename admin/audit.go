package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// auditJSON is the API form of an audit log entry.
type auditJSON struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	AdminID    *uuid.UUID      `json:"admin_id"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type"`
	TargetID   string          `json:"target_id"`
	Before     json.RawMessage `json:"before"`
	After      json.RawMessage `json:"after"`
	IP         *string         `json:"ip"`
}

func (s *Server) handleListAudit(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	q := r.URL.Query()
	f := store.AuditFilter{Action: q.Get("action"), TargetType: q.Get("target_type"), TargetID: q.Get("target_id")}
	_, _, f.From, f.To = s.usageFilters(r, &errs, false)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	es, next, err := s.st.Audit().List(r.Context(), f, limit, cursor)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	items := make([]auditJSON, len(es))
	for i, e := range es {
		items[i] = auditJSON{ID: e.ID, At: e.At, AdminID: e.AdminID, Actor: e.Actor, Action: e.Action,
			TargetType: e.TargetType, TargetID: e.TargetID, Before: e.Before, After: e.After}
		if items[i].Before == nil {
			items[i].Before = json.RawMessage("null")
		}
		if items[i].After == nil {
			items[i].After = json.RawMessage("null")
		}
		if e.IP != nil {
			ip := e.IP.String()
			items[i].IP = &ip
		}
	}
	writeJSON(w, http.StatusOK, newPage(items, next))
}
