package store

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// AuditEntry is one change recorded in the audit log.
type AuditEntry struct {
	ID int64
	At time.Time
	// AdminID is the admin who made the change; nil for the system.
	AdminID *uuid.UUID
	// Actor names who made the change (an admin's username, "system", …).
	Actor string
	// ActorRole is the role the admin had when it acted ("" for the
	// system and the operator).
	ActorRole  string
	Action     string // e.g. user.create, key.rotate
	TargetType string // e.g. user, access_key
	TargetID   string
	// Before and After are JSON snapshots, without secrets; nil when absent.
	Before json.RawMessage
	After  json.RawMessage
	IP     *netip.Addr
}

// AuditFilter selects audit entries; zero fields do not filter.
type AuditFilter struct {
	AdminID *uuid.UUID
	// Actor matches the actor's name exactly.
	Actor      string
	Action     string
	TargetType string
	TargetID   string
	// From and To bound At to [From, To) when non-zero.
	From, To time.Time
}

// Audit is the audit log repository. Append inside the transaction of the
// change it records (Store.WithTx), so neither commits without the other.
type Audit struct{ q *Queries }

// Audit returns the audit log repository.
func (q *Queries) Audit() Audit { return Audit{q} }

const auditColumns = `id, at, admin_id, actor, actor_role, action, target_type, target_id, before, after, ip`

func scanAudit(row pgx.Row) (AuditEntry, error) {
	var e AuditEntry
	var before, after []byte
	err := row.Scan(&e.ID, &e.At, &e.AdminID, &e.Actor, &e.ActorRole, &e.Action, &e.TargetType, &e.TargetID, &before, &after, &e.IP)
	if before != nil {
		e.Before = before
	}
	if after != nil {
		e.After = after
	}
	return e, err
}

// jsonArg passes a snapshot as jsonb text, or NULL when empty.
func jsonArg(m json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	return string(m)
}

// Append records e (ID and At are assigned) and returns it as stored.
func (r Audit) Append(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	if e.Action == "" || e.Actor == "" {
		return AuditEntry{}, invalidf("audit entry needs an actor and an action")
	}
	out, err := scanAudit(r.q.db.QueryRow(ctx, `
		INSERT INTO audit_log (admin_id, actor, action, target_type, target_id, before, after, ip, actor_role)
		VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)
		RETURNING `+auditColumns,
		e.AdminID, e.Actor, e.Action, e.TargetType, e.TargetID, jsonArg(e.Before), jsonArg(e.After), e.IP, e.ActorRole))
	return out, mapErr("store: append audit entry", err)
}

// List returns a page of entries matching f, newest first, and the cursor of
// the next page ("" after the last).
func (r Audit) List(ctx context.Context, f AuditFilter, limit int, cursor string) ([]AuditEntry, string, error) {
	limit = pageSize(limit)
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.AdminID != nil {
		where = append(where, "admin_id = "+arg(*f.AdminID))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.Action != "" {
		where = append(where, "action = "+arg(f.Action))
	}
	if f.TargetType != "" {
		where = append(where, "target_type = "+arg(f.TargetType))
	}
	if f.TargetID != "" {
		where = append(where, "target_id = "+arg(f.TargetID))
	}
	if !f.From.IsZero() {
		where = append(where, "at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "at < "+arg(f.To))
	}
	if cursor != "" {
		id, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || id <= 0 {
			return nil, "", invalidf("malformed cursor")
		}
		where = append(where, "id < "+arg(id))
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE `+strings.Join(where, " AND ")+
		` ORDER BY id DESC LIMIT `+arg(limit+1), args...)
	if err != nil {
		return nil, "", mapErr("store: list audit log", err)
	}
	es, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) { return scanAudit(row) })
	if err != nil {
		return nil, "", mapErr("store: list audit log", err)
	}
	next := ""
	if len(es) > limit {
		es = es[:limit]
		next = strconv.FormatInt(es[limit-1].ID, 10)
	}
	return es, next, nil
}
