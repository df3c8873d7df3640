package admin

import (
	"net/http"

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
// but their own session and password. A team admin is meant to manage one
// team; until ccproxy has teams it can do no more than a viewer's
// self-service (log out, change its password, see its session), and the API
// refuses to create one.

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
