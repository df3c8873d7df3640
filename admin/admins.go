package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Admin account management: list and create admins, disable or re-enable
// one, reset another admin's password, end all of an admin's sessions, and
// change one's own password. Every change is audited; disabling an admin,
// resetting its password or revoking its sessions ends its sessions at
// once (Sessions.Get refuses sessions of disabled admins too).

// adminJSON is the API form of an admin account: never its hash.
type adminJSON struct {
	ID          uuid.UUID  `json:"id"`
	Username    string     `json:"username"`
	Disabled    bool       `json:"disabled"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
	// Role is owner, admin, viewer or team_admin.
	Role string `json:"role"`
	// TeamID is the team of a team admin, else null.
	TeamID *uuid.UUID `json:"team_id"`
	// SSO is set for an admin who signs in through single sign-on (and
	// has no password).
	SSO bool `json:"sso"`
}

func toAdmin(a store.Admin) adminJSON {
	return adminJSON{ID: a.ID, Username: a.Username, Disabled: a.Disabled, CreatedAt: a.CreatedAt, LastLoginAt: a.LastLoginAt,
		Role: string(a.Role), TeamID: a.TeamID, SSO: a.OIDCSubject != ""}
}

// checkRole validates a role given to the API: a team admin, and only a
// team admin, names its team (whose existence the handler checks).
func checkRole(field string, role store.AdminRole, teamID *uuid.UUID) []fieldError {
	switch {
	case role == store.RoleTeamAdmin && teamID == nil:
		return []fieldError{{Field: "team_id", Message: "a team admin names its team: the id of an existing team"}}
	case role == store.RoleTeamAdmin:
		return nil
	case !role.Valid():
		return []fieldError{{Field: field, Message: "must be owner, admin, viewer or team_admin"}}
	case teamID != nil:
		return []fieldError{{Field: "team_id", Message: "only a team admin names a team"}}
	}
	return nil
}

// checkTeamExists answers a field error (through invalidError) when a team
// admin's team does not exist or was deleted.
func checkTeamExists(ctx context.Context, q *store.Queries, team *uuid.UUID) error {
	if team == nil {
		return nil
	}
	if _, err := q.Teams().Get(ctx, *team); errors.Is(err, store.ErrNotFound) {
		return &invalidError{errs: []fieldError{{Field: "team_id", Message: "no team has this id"}}}
	} else if err != nil {
		return err
	}
	return nil
}

func sameTeam(a, b *uuid.UUID) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func (s *Server) handleListAdmins(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, noFilter, wholeList(func(ctx context.Context, _ struct{}) ([]store.Admin, error) {
		return s.st.Admins().List(ctx)
	}), toAdmin)
}

func (s *Server) handleGetAdmin(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	a, err := s.st.Admins().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAdmin(a))
}

type createAdminRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// Role defaults to admin.
	Role   store.AdminRole `json:"role"`
	TeamID *uuid.UUID      `json:"team_id"`
}

func (s *Server) handleCreateAdmin(w http.ResponseWriter, r *http.Request) {
	var req createAdminRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Role == "" {
		req.Role = store.RoleAdmin
	}
	errs := validateCredentials(req.Username, req.Password)
	errs = append(errs, checkRole("role", req.Role, req.TeamID)...)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	hash, err := s.hashPassword(req.Password)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var out adminJSON
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if err := checkTeamExists(r.Context(), q, req.TeamID); err != nil {
			return err
		}
		a, err := q.Admins().CreateAdmin(r.Context(), store.NewAdmin{Username: req.Username, PasswordHash: hash, Role: req.Role, TeamID: req.TeamID})
		if err != nil {
			return err
		}
		out = toAdmin(a)
		return s.audit(r.Context(), q, "admin.create", "admin", a.ID.String(), nil, out)
	})
	if errors.Is(err, store.ErrConflict) {
		s.problem(w, r, http.StatusConflict, "conflict", "an admin with this username exists")
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/admins/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
}

type patchAdminRequest struct {
	Disabled optional[bool]            `json:"disabled"`
	Role     optional[store.AdminRole] `json:"role"`
	TeamID   optional[uuid.UUID]       `json:"team_id"`
}

func (s *Server) handlePatchAdmin(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchAdminRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	if req.Disabled.Null {
		errs = append(errs, fieldError{Field: "disabled", Message: "cannot be null"})
	}
	if req.Role.Null {
		errs = append(errs, fieldError{Field: "role", Message: "cannot be null"})
	}
	var team *uuid.UUID
	if req.TeamID.Set && !req.TeamID.Null {
		team = &req.TeamID.Value
	}
	if req.Role.Set && !req.Role.Null {
		errs = append(errs, checkRole("role", req.Role.Value, team)...)
	} else if team != nil {
		errs = append(errs, fieldError{Field: "team_id", Message: "only a team admin names a team"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	self := id == actorFrom(r.Context()).adminID
	if req.Disabled.Set && req.Disabled.Value && self {
		// An admin cannot lock itself out; so at least one admin stays
		// enabled, the one who disabled the others.
		s.problem(w, r, http.StatusConflict, "conflict", "you cannot disable your own account")
		return
	}
	if req.Role.Set && self && req.Role.Value != actorFrom(r.Context()).role {
		s.problem(w, r, http.StatusConflict, "conflict", "you cannot change your own role; another owner can")
		return
	}
	var out adminJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Admins().Get(r.Context(), id)
		if err != nil {
			return err
		}
		out = toAdmin(before)
		disable := req.Disabled.Set && req.Disabled.Value != before.Disabled
		changeRole := req.Role.Set && (req.Role.Value != before.Role || !sameTeam(team, before.TeamID))
		if !disable && !changeRole {
			return nil
		}
		if before.Role == store.RoleOwner && !before.Disabled && ((disable && req.Disabled.Value) || changeRole) {
			n, err := q.Admins().CountEnabledOwners(r.Context())
			if err != nil {
				return err
			}
			if n <= 1 {
				return errLastOwner
			}
		}
		if changeRole {
			if err := checkTeamExists(r.Context(), q, team); err != nil {
				return err
			}
			if err := q.Admins().SetRole(r.Context(), id, req.Role.Value, team); err != nil {
				return err
			}
			out.Role, out.TeamID = string(req.Role.Value), team
			if err := s.audit(r.Context(), q, "admin.role_change", "admin", id.String(), toAdmin(before), out); err != nil {
				return err
			}
			if !disable {
				return nil
			}
		}
		// Disabling also revokes the admin's sessions, in this transaction.
		if err := q.Admins().SetDisabled(r.Context(), id, req.Disabled.Value); err != nil {
			return err
		}
		prev := out
		out.Disabled = req.Disabled.Value
		action := "admin.enable"
		if out.Disabled {
			action = "admin.disable"
		}
		return s.audit(r.Context(), q, action, "admin", id.String(), prev, out)
	})
	if errors.Is(err, errLastOwner) {
		s.problem(w, r, http.StatusConflict, "conflict", "this is the last enabled owner: make another admin an owner first")
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// errLastOwner refuses to leave ccproxy without an enabled owner.
var errLastOwner = errors.New("admin: the last enabled owner")

type setPasswordRequest struct {
	Password string `json:"password"`
}

// handleResetAdminPassword sets another admin's password (one who forgot
// it): the admin's sessions end and its login throttling is forgotten.
func (s *Server) handleResetAdminPassword(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req setPasswordRequest
	if !s.decode(w, r, &req) {
		return
	}
	if id == actorFrom(r.Context()).adminID {
		// A stolen session must not be enough to take the account over.
		s.problem(w, r, http.StatusConflict, "conflict", "change your own password with POST /api/v1/auth/password, which asks for the current one")
		return
	}
	if errs := passwordErrors("password", req.Password); len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	hash, err := s.hashPassword(req.Password)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		a, err := setPassword(r.Context(), q, id, hash, true)
		if err != nil {
			return err
		}
		return s.audit(r.Context(), q, "admin.password_reset", "admin", id.String(), nil, toAdmin(a))
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setPassword stores hash as admin id's password in q's transaction,
// revokes its sessions (all of them when allSessions, else all but the
// caller's, which the caller revokes itself) and forgets its username's
// login throttling.
func setPassword(ctx context.Context, q *store.Queries, id uuid.UUID, hash string, allSessions bool) (store.Admin, error) {
	a, err := q.Admins().Get(ctx, id)
	if err != nil {
		return store.Admin{}, err
	}
	if err := q.Admins().SetPassword(ctx, id, hash); err != nil {
		return store.Admin{}, err
	}
	if allSessions {
		if _, err := q.Sessions().RevokeAllForAdmin(ctx, id); err != nil {
			return store.Admin{}, err
		}
	}
	keys := throttleKeys(a.Username, nil)
	return a, q.LoginThrottles().Delete(ctx, keys[0])
}

type revokeSessionsResponse struct {
	Revoked int `json:"revoked"`
}

// handleRevokeAdminSessions ends every session of an admin (a lost laptop,
// a departure); the caller's own too when it names itself.
func (s *Server) handleRevokeAdminSessions(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var n int
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if _, err := q.Admins().Get(r.Context(), id); err != nil {
			return err
		}
		var err error
		if n, err = q.Sessions().RevokeAllForAdmin(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "admin.sessions_revoke", "admin", id.String(), nil, revokeSessionsResponse{Revoked: n})
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, revokeSessionsResponse{Revoked: n})
}

type changePasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// handleChangePassword changes the caller's own password. The current
// password is required, checked under the login throttle (a stolen session
// must not become a way to guess it), and every other session of the admin
// ends.
func (s *Server) handleChangePassword(w http.ResponseWriter, r *http.Request) {
	var req changePasswordRequest
	if !s.decode(w, r, &req) {
		return
	}
	errs := passwordErrors("new_password", req.NewPassword)
	if req.CurrentPassword == "" || len(req.CurrentPassword) > maxPasswordLen {
		errs = append(errs, fieldError{Field: "current_password", Message: fmt.Sprintf("must be 1 to %d bytes", maxPasswordLen)})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	act := actorFrom(r.Context())
	a, err := s.st.Admins().Get(r.Context(), act.adminID)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if a.PasswordHash == "" {
		s.problem(w, r, http.StatusConflict, "conflict", "you sign in through single sign-on and have no password here; change it at your identity provider")
		return
	}
	keys := throttleKeys(a.Username, act.ip)
	wait, err := s.countAttempt(r.Context(), keys, s.now())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if wait > 0 {
		retryAfter(w, wait)
		s.problem(w, r, http.StatusTooManyRequests, "too many failed attempts", "try again in "+w.Header().Get("Retry-After")+" seconds")
		return
	}
	ok, err := s.verifyPassword(a.PasswordHash, req.CurrentPassword)
	if errors.Is(err, errHashBusy) {
		s.storeError(w, r, err)
		return
	}
	if err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: stored password hash unreadable", slog.String("admin_id", a.ID.String()))
	}
	if !ok {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: wrong current password in a password change", slog.String("admin_id", a.ID.String()))
		s.invalid(w, r, []fieldError{{Field: "current_password", Message: "is not the current password"}})
		return
	}
	hash, err := s.hashPassword(req.NewPassword)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if _, err := setPassword(r.Context(), q, a.ID, hash, false); err != nil {
			return err
		}
		if _, err := q.Sessions().RevokeOthers(r.Context(), a.ID, act.sessionID); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "admin.password_change", "admin", a.ID.String(), nil, nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if err := s.loginSucceeded(r.Context(), keys, s.now()); err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: could not reset the login throttle", slog.String("error", err.Error()))
	}
	w.WriteHeader(http.StatusNoContent)
}

// passwordErrors checks a new password's length.
func passwordErrors(field, password string) []fieldError {
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		return []fieldError{{Field: field, Message: fmt.Sprintf("must be %d to %d bytes", minPasswordLen, maxPasswordLen)}}
	}
	return nil
}

// ResetPassword sets the password of the admin username, for the operator
// (`ccproxy admin reset-password`), who may have no working admin login:
// it talks to the database directly. It ends the admin's sessions, forgets
// its login throttling, re-enables it when enable is set, and audits the
// reset as the operator's.
func ResetPassword(ctx context.Context, st *store.Store, username, password string, enable bool) (store.Admin, error) {
	if errs := passwordErrors("password", password); len(errs) > 0 {
		return store.Admin{}, fmt.Errorf("admin: password %s", errs[0].Message)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return store.Admin{}, err
	}
	var out store.Admin
	err = st.WithTx(ctx, func(q *store.Queries) error {
		a, err := q.Admins().GetByUsername(ctx, username)
		if err != nil {
			return err
		}
		if _, err := setPassword(ctx, q, a.ID, hash, true); err != nil {
			return err
		}
		before := toAdmin(a)
		if enable && a.Disabled {
			if err := q.Admins().SetDisabled(ctx, a.ID, false); err != nil {
				return err
			}
			a.Disabled = false
		}
		out = a
		after, err := json.Marshal(toAdmin(a))
		if err != nil {
			return err
		}
		b, err := json.Marshal(before)
		if err != nil {
			return err
		}
		_, err = q.Audit().Append(ctx, store.AuditEntry{
			Actor: "operator", Action: "admin.password_reset", TargetType: "admin", TargetID: a.ID.String(), Before: b, After: after,
		})
		return err
	})
	if err != nil {
		return store.Admin{}, fmt.Errorf("admin: reset the password of %q: %w", username, err)
	}
	return out, nil
}
