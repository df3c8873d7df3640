package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// audit appends an entry for the request's admin in q's transaction.
// before and after are API representations, which never hold secrets.
func (s *Server) audit(ctx context.Context, q *store.Queries, action, targetType, targetID string, before, after any) error {
	a := actorFrom(ctx)
	e := store.AuditEntry{AdminID: &a.adminID, Actor: a.username, ActorRole: string(a.role), Action: action,
		TargetType: targetType, TargetID: targetID, IP: a.ip}
	var err error
	if before != nil {
		if e.Before, err = json.Marshal(before); err != nil {
			return err
		}
	}
	if after != nil {
		if e.After, err = json.Marshal(after); err != nil {
			return err
		}
	}
	_, err = q.Audit().Append(ctx, e)
	return err
}

// auditJSON is the API form of an audit log entry.
type auditJSON struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	AdminID    *uuid.UUID      `json:"admin_id"`
	Actor      string          `json:"actor"`
	ActorRole  string          `json:"actor_role"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type"`
	TargetID   string          `json:"target_id"`
	Before     json.RawMessage `json:"before"`
	After      json.RawMessage `json:"after"`
	IP         *string         `json:"ip"`
}

func toAudit(e store.AuditEntry) auditJSON {
	out := auditJSON{ID: e.ID, At: e.At, AdminID: e.AdminID, Actor: e.Actor, ActorRole: e.ActorRole, Action: e.Action,
		TargetType: e.TargetType, TargetID: e.TargetID, Before: e.Before, After: e.After}
	if out.Before == nil {
		out.Before = json.RawMessage("null")
	}
	if out.After == nil {
		out.After = json.RawMessage("null")
	}
	if e.IP != nil {
		ip := e.IP.String()
		out.IP = &ip
	}
	return out
}

func (s *Server) handleListAudit(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.auditFilter, s.st.Audit().List, toAudit)
}

// auditFilter reads the filters of GET /audit. It shares usageFilters' time
// range, which also checks user_id and key_id when given, though the audit
// log is not filtered by them.
func (s *Server) auditFilter(r *http.Request, errs *[]fieldError) store.AuditFilter {
	q := r.URL.Query()
	f := store.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), TargetType: q.Get("target_type"), TargetID: q.Get("target_id")}
	_, _, f.From, f.To = s.usageFilters(r, errs, false)
	return f
}
