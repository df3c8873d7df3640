package admin

import (
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Roles. Every authenticated route has exactly one rule in accessRules: the
// least powerful role that may call it. wrap looks the rule up by the
// route's pattern after authentication and answers 403 below it, so the
// check lives in one place and a handler never decides on its own. A route
// registered without a rule is refused to everyone (and fails a test that
// walks the route list), so a new route cannot be forgotten open.
//
// The roles form a ladder: owner > admin > viewer. Owners alone manage
// admin accounts and see the single sign-on settings; admins change
// everything else; viewers read everything (every GET) and change nothing
// but their own session and password. A team admin stands beside the ladder:
// it manages one team (admins.team_id). Besides its own session and
// password it may call the routes of teamAdminRules only, each checked
// against its team (authorizeTeam): it reads its team, and reads and manages
// the team's developers, their keys and the team's usage. Lists it calls
// show its team only (actor.teamScope); a developer it creates or moves is
// in its team.

// minRole is the least role a route needs.
type minRole int

// The rungs, from the least to the most powerful. roleRank maps a role onto
// them.
const (
	// anyAdmin: every signed-in admin, for their own session and password.
	anyAdmin minRole = iota
	// viewerRole: reading the fleet's state.
	viewerRole
	// adminRole: changing users, keys, credentials, models and prices.
	adminRole
	// ownerRole: managing admins and reading the single sign-on settings.
	ownerRole
)

func (m minRole) String() string {
	switch m {
	case viewerRole:
		return string(store.RoleViewer)
	case adminRole:
		return string(store.RoleAdmin)
	case ownerRole:
		return string(store.RoleOwner)
	}
	return "any"
}

// roleRank is the highest rung role reaches. A team admin (and an unknown
// role, which the database's check makes impossible) reaches only anyAdmin.
func roleRank(role store.AdminRole) minRole {
	switch role {
	case store.RoleOwner:
		return ownerRole
	case store.RoleAdmin:
		return adminRole
	case store.RoleViewer:
		return viewerRole
	}
	return anyAdmin
}

// accessRules is the table of authenticated routes and the least role each
// needs, keyed by the route's ServeMux pattern.
func accessRules() map[string]minRole {
	return map[string]minRole{
		"POST /api/v1/auth/logout":   anyAdmin,
		"POST /api/v1/auth/password": anyAdmin,
		"GET /api/v1/auth/session":   anyAdmin,

		"GET /api/v1/admins":                  viewerRole,
		"GET /api/v1/admins/{id}":             viewerRole,
		"POST /api/v1/admins":                 ownerRole,
		"PATCH /api/v1/admins/{id}":           ownerRole,
		"PUT /api/v1/admins/{id}/password":    ownerRole,
		"DELETE /api/v1/admins/{id}/sessions": ownerRole,
		"GET /api/v1/settings/sso":            ownerRole,

		"GET /api/v1/users":             viewerRole,
		"GET /api/v1/users/{id}":        viewerRole,
		"POST /api/v1/users":            adminRole,
		"PATCH /api/v1/users/{id}":      adminRole,
		"DELETE /api/v1/users/{id}":     adminRole,
		"GET /api/v1/users/{id}/keys":   viewerRole,
		"POST /api/v1/users/{id}/keys":  adminRole,
		"POST /api/v1/keys/{id}/rotate": adminRole,
		"DELETE /api/v1/keys/{id}":      adminRole,

		"GET /api/v1/users/{id}/bedrock":    viewerRole,
		"PUT /api/v1/users/{id}/bedrock":    adminRole,
		"DELETE /api/v1/users/{id}/bedrock": adminRole,
		"GET /api/v1/keys/{id}/bedrock":     viewerRole,
		"PUT /api/v1/keys/{id}/bedrock":     adminRole,
		"DELETE /api/v1/keys/{id}/bedrock":  adminRole,

		"GET /api/v1/users/{id}/rate-limits":    viewerRole,
		"PUT /api/v1/users/{id}/rate-limits":    adminRole,
		"DELETE /api/v1/users/{id}/rate-limits": adminRole,
		"GET /api/v1/budgets":                   viewerRole,
		"POST /api/v1/budgets":                  adminRole,
		"GET /api/v1/budgets/{id}":              viewerRole,
		"PATCH /api/v1/budgets/{id}":            adminRole,
		"DELETE /api/v1/budgets/{id}":           adminRole,
		"GET /api/v1/keys/{id}/rate-limits":     viewerRole,
		"PUT /api/v1/keys/{id}/rate-limits":     adminRole,
		"DELETE /api/v1/keys/{id}/rate-limits":  adminRole,

		"GET /api/v1/teams":                     viewerRole,
		"GET /api/v1/teams/{id}":                viewerRole,
		"POST /api/v1/teams":                    adminRole,
		"PATCH /api/v1/teams/{id}":              adminRole,
		"DELETE /api/v1/teams/{id}":             adminRole,
		"GET /api/v1/teams/{id}/rate-limits":    viewerRole,
		"PUT /api/v1/teams/{id}/rate-limits":    adminRole,
		"DELETE /api/v1/teams/{id}/rate-limits": adminRole,

		"GET /api/v1/models":         viewerRole,
		"GET /api/v1/models/{id}":    viewerRole,
		"POST /api/v1/models":        adminRole,
		"PATCH /api/v1/models/{id}":  adminRole,
		"DELETE /api/v1/models/{id}": adminRole,

		"GET /api/v1/prices":         viewerRole,
		"GET /api/v1/prices/{id}":    viewerRole,
		"POST /api/v1/prices":        adminRole,
		"PATCH /api/v1/prices/{id}":  adminRole,
		"DELETE /api/v1/prices/{id}": adminRole,

		"GET /api/v1/usage":                            viewerRole,
		"GET /api/v1/usage/requests":                   viewerRole,
		"GET /api/v1/usage/top-users":                  viewerRole,
		"GET /api/v1/usage/cost-split":                 viewerRole,
		"GET /api/v1/developers":                       viewerRole,
		"GET /api/v1/users/{id}/budget":                viewerRole,
		"GET /api/v1/users/{id}/sessions":              viewerRole,
		"GET /api/v1/users/{id}/sessions/{session_id}": viewerRole,
		"GET /api/v1/cache/economics":                  viewerRole,
		"GET /api/v1/cache/breaks":                     viewerRole,
		"GET /api/v1/users/{id}/headroom":              viewerRole,
		"GET /api/v1/headroom":                         viewerRole,
		"GET /api/v1/seats":                            viewerRole,

		// Exports are usage reads.
		"GET /api/v1/usage/export/requests": viewerRole,
		"GET /api/v1/usage/export/daily":    viewerRole,
		// Webhooks, even to read: a target URL can carry a token (Slack's
		// incoming webhooks are secret URLs), and a delivery log shows what
		// was sent where.
		"GET /api/v1/webhooks":                               adminRole,
		"POST /api/v1/webhooks":                              adminRole,
		"GET /api/v1/webhooks/{id}":                          adminRole,
		"PATCH /api/v1/webhooks/{id}":                        adminRole,
		"DELETE /api/v1/webhooks/{id}":                       adminRole,
		"POST /api/v1/webhooks/{id}/test":                    adminRole,
		"GET /api/v1/webhooks/{id}/deliveries":               adminRole,
		"GET /api/v1/webhooks/{id}/deliveries/{delivery_id}": adminRole,
		"GET /api/v1/audit":                                  viewerRole,
	}
}

// teamScope says what of a team admin's request authorizeTeam checks.
type teamScope int

const (
	// teamList: a list or summary the handler restricts to the team
	// (actor.teamScope), or a developer the handler creates in it.
	teamList teamScope = iota + 1
	// teamSelf: {id} is the admin's own team.
	teamSelf
	// teamUser: {id} is a developer of the team.
	teamUser
	// teamKey: {id} is an access key of a developer of the team.
	teamKey
)

// teamAdminRules are the routes a team admin may call beyond anyAdmin's,
// and how each is held to its team.
func teamAdminRules() map[string]teamScope {
	return map[string]teamScope{
		"GET /api/v1/teams":                  teamList,
		"GET /api/v1/teams/{id}":             teamSelf,
		"GET /api/v1/teams/{id}/rate-limits": teamSelf,
		"GET /api/v1/users":                  teamList,
		"GET /api/v1/developers":             teamList,
		"POST /api/v1/users":                 teamList,
		"GET /api/v1/users/{id}":             teamUser,
		"PATCH /api/v1/users/{id}":           teamUser,
		"DELETE /api/v1/users/{id}":          teamUser,
		"GET /api/v1/users/{id}/keys":        teamUser,
		// What the dashboard's developer page shows of one developer.
		"GET /api/v1/users/{id}/budget":                teamUser,
		"GET /api/v1/users/{id}/rate-limits":           teamUser,
		"GET /api/v1/users/{id}/headroom":              teamUser,
		"GET /api/v1/users/{id}/sessions":              teamUser,
		"GET /api/v1/users/{id}/sessions/{session_id}": teamUser,
		"POST /api/v1/users/{id}/keys":                 teamUser,
		"POST /api/v1/keys/{id}/rotate":                teamKey,
		"DELETE /api/v1/keys/{id}":                     teamKey,
		"GET /api/v1/usage":                            teamList,
		"GET /api/v1/usage/requests":                   teamList,
	}
}

// teamScope is the team a team admin is held to; nil for every other role
// (and for a team admin without a team, which the database's check rules
// out and which then reaches nothing beyond anyAdmin).
func (a actor) teamScope() *uuid.UUID {
	if a.role != store.RoleTeamAdmin {
		return nil
	}
	return a.teamID
}

// authorizeTeam checks a team admin's request on a route of
// teamAdminRules: the team, developer or key it names must be its team's.
// Anything else, an unknown id included, is 403: a team admin learns
// nothing of the rest of the fleet.
func (s *Server) authorizeTeam(w http.ResponseWriter, r *http.Request, team uuid.UUID, scope teamScope) bool {
	inTeam := func() (bool, error) {
		if scope == teamList {
			return true, nil
		}
		id, err := uuid.Parse(r.PathValue("id"))
		if err != nil {
			return false, nil
		}
		if scope == teamSelf {
			return id == team, nil
		}
		if scope == teamKey {
			k, err := s.st.AccessKeys().Get(r.Context(), id)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			} else if err != nil {
				return false, err
			}
			id = k.UserID
		}
		u, err := s.st.Users().Get(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		return u.TeamID != nil && *u.TeamID == team, nil
	}
	ok, err := inTeam()
	if err != nil {
		s.storeError(w, r, err)
		return false
	}
	if !ok {
		s.problem(w, r, http.StatusForbidden, "forbidden", "your role (team_admin) reaches only your own team's developers, keys and usage")
	}
	return ok
}

// authorize answers 403 (problem JSON) and returns false when the request's
// admin may not call its route.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, a actor) bool {
	need, ok := s.rules[r.Pattern]
	if !ok {
		// A route without a rule is a programming error; refuse it to
		// everyone rather than guess.
		s.problem(w, r, http.StatusForbidden, "forbidden", "this endpoint has no access rule")
		return false
	}
	if team := a.teamScope(); team != nil && need > anyAdmin {
		if scope, ok := teamAdminRules()[r.Pattern]; ok {
			return s.authorizeTeam(w, r, *team, scope)
		}
	}
	if roleRank(a.role) < need {
		detail := "your role (" + string(a.role) + ") may not do this; it needs the " + need.String() + " role"
		if need == viewerRole || (need == adminRole && a.role == store.RoleTeamAdmin) {
			detail = "your role (" + string(a.role) + ") may not do this"
		}
		if a.role == store.RoleViewer && !safeMethod(r.Method) {
			detail = "viewers have read-only access"
		}
		s.problem(w, r, http.StatusForbidden, "forbidden", detail)
		return false
	}
	return true
}
