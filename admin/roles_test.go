package admin_test

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

// rank orders the access rules' role names.
var roleRanks = map[string]int{"any": 0, "viewer": 1, "admin": 2, "owner": 3}

// TestEveryRouteHasAnAccessRule walks the router's route list: every
// authenticated route has exactly one rule, every rule a route, and only
// the login, single sign-on and OpenAPI routes are open. A route added
// without a rule fails here.
func TestEveryRouteHasAnAccessRule(t *testing.T) {
	e := newEnv(t)
	routes := e.api.RoutePatterns()
	rules := admin.AccessRules()
	var open []string
	for p, authed := range routes {
		if !authed {
			open = append(open, p)
			continue
		}
		if _, ok := rules[p]; !ok {
			t.Errorf("route %q has no access rule", p)
		}
	}
	for p, r := range rules {
		if authed, ok := routes[p]; !ok || !authed {
			t.Errorf("access rule %q (%s) names no authenticated route", p, r)
		}
		if _, ok := roleRanks[r]; !ok {
			t.Errorf("access rule %q: unknown role %q", p, r)
		}
		// Viewers read everything but configuration that holds secrets (the
		// SSO settings; webhooks, whose URLs can be tokens): every other GET
		// is open to them.
		secretBearing := p == "GET /api/v1/settings/sso" || strings.HasPrefix(p, "GET /api/v1/webhooks")
		if strings.HasPrefix(p, "GET ") && roleRanks[r] > roleRanks["viewer"] && !secretBearing {
			t.Errorf("%q needs %s; every GET but the SSO settings and webhooks is for viewers", p, r)
		}
		if secretBearing && roleRanks[r] <= roleRanks["viewer"] {
			t.Errorf("%q is open to viewers; it shows secrets", p)
		}
		// And no write is.
		if !strings.HasPrefix(p, "GET ") && r == "viewer" {
			t.Errorf("%q is a write open to viewers", p)
		}
		if strings.Contains(p, "/api/v1/admins") && !strings.HasPrefix(p, "GET ") && r != "owner" {
			t.Errorf("%q manages admins but needs only %s", p, r)
		}
	}
	sort.Strings(open)
	wantOpen := []string{"/api/", "GET /api/v1/auth/oidc/callback", "GET /api/v1/auth/oidc/login", "GET /api/v1/auth/sso",
		"GET /api/v1/openapi.json", "POST /api/v1/auth/login"}
	if !slices.Equal(open, wantOpen) && !slices.Equal(open, append([]string{"/"}, wantOpen[1:]...)) {
		t.Errorf("open routes = %q, want %q", open, wantOpen)
	}
}

// roleSession creates an admin with role (directly in the store, so team
// admins too) and logs it in.
func (e *env) roleSession(t *testing.T, name string, role store.AdminRole) string {
	t.Helper()
	var team *uuid.UUID
	if role == store.RoleTeamAdmin {
		tm, err := e.st.Teams().Create(context.Background(), store.NewTeam{Name: "team of " + name})
		if err != nil {
			t.Fatal(err)
		}
		team = &tm.ID
	}
	if _, err := e.st.Admins().CreateAdmin(context.Background(), store.NewAdmin{
		Username: name, PasswordHash: mustHash(t, e), Role: role, TeamID: team}); err != nil {
		t.Fatal(err)
	}
	return e.login(name, testPassword).Token
}

// TestRolesOnEveryRoute calls every authenticated route as every role: a
// role below the route's rule gets 403 problem JSON, a role at or above it
// gets past the check (whatever the handler then says of the empty body and
// unknown ids).
func TestRolesOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	tokens := map[store.AdminRole]string{
		store.RoleOwner:     e.token,
		store.RoleAdmin:     e.roleSession(t, "an-admin", store.RoleAdmin),
		store.RoleViewer:    e.roleSession(t, "a-viewer", store.RoleViewer),
		store.RoleTeamAdmin: e.roleSession(t, "a-team-admin", store.RoleTeamAdmin),
	}
	ranks := map[store.AdminRole]int{store.RoleOwner: 3, store.RoleAdmin: 2, store.RoleViewer: 1, store.RoleTeamAdmin: 0}
	rules := admin.AccessRules()
	teamRoutes := admin.TeamAdminRoutes()
	patterns := make([]string, 0, len(rules))
	for p := range rules {
		patterns = append(patterns, p)
	}
	sort.Strings(patterns)
	// Logging out ends the session the other calls use: last.
	patterns = slices.DeleteFunc(patterns, func(p string) bool { return p == "POST /api/v1/auth/logout" })
	patterns = append(patterns, "POST /api/v1/auth/logout")
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		path = strings.ReplaceAll(path, "{id}", randomID)
		need := roleRanks[rules[p]]
		for _, role := range []store.AdminRole{store.RoleTeamAdmin, store.RoleViewer, store.RoleAdmin, store.RoleOwner} {
			t.Run(p+" as "+string(role), func(t *testing.T) {
				var body any
				if method != http.MethodGet {
					body = map[string]any{}
				}
				resp := e.do(method, path, body, withHeader("Authorization", "Bearer "+tokens[role]))
				if byID, ok := teamRoutes[p]; ok && role == store.RoleTeamAdmin {
					// Held to its team: lists pass; an id outside it (this
					// random one) is refused, saying why.
					if !byID {
						if resp.status == http.StatusForbidden || resp.status == http.StatusUnauthorized {
							t.Errorf("%s as team admin: status %d: %s", p, resp.status, resp.body)
						}
						return
					}
					want(t, resp, http.StatusForbidden)
					if pd := resp.problem(t); pd.Detail != "your role (team_admin) reaches only your own team's developers, keys and usage" {
						t.Errorf("problem %+v", pd)
					}
					return
				}
				if ranks[role] < need {
					want(t, resp, http.StatusForbidden)
					pd := resp.problem(t)
					if pd.Title != "forbidden" || !strings.Contains(pd.Detail, string(role)) && !strings.Contains(pd.Detail, "read-only") {
						t.Errorf("problem %+v", pd)
					}
					if role == store.RoleViewer && method != http.MethodGet && pd.Detail != "viewers have read-only access" {
						t.Errorf("viewer write: detail %q", pd.Detail)
					}
					return
				}
				if resp.status == http.StatusForbidden || resp.status == http.StatusUnauthorized {
					t.Errorf("%s as %s: status %d: %s", p, role, resp.status, resp.body)
				}
			})
		}
	}
}

// TestAdminRoles covers managing roles: the bootstrap admin is an owner,
// new admins default to admin, team admins are refused until teams exist,
// the last owner stays, and audit entries name the actor's role.
func TestAdminRoles(t *testing.T) {
	e := newEnv(t)
	var me struct {
		Username string `json:"username"`
		Role     string `json:"role"`
	}
	e.do("GET", "/api/v1/auth/session", nil).decode(t, &me)
	if me.Role != "owner" {
		t.Fatalf("bootstrap admin role = %q, want owner", me.Role)
	}
	type adminDoc struct {
		ID     string  `json:"id"`
		Role   string  `json:"role"`
		TeamID *string `json:"team_id"`
		SSO    bool    `json:"sso"`
	}
	create := func(name string, body map[string]any) response {
		body["username"], body["password"] = name, testPassword
		return e.do("POST", "/api/v1/admins", body)
	}
	var plain, viewer adminDoc
	r := create("plain", map[string]any{})
	want(t, r, http.StatusCreated)
	r.decode(t, &plain)
	if plain.Role != "admin" || plain.TeamID != nil || plain.SSO {
		t.Errorf("default admin = %+v, want role admin", plain)
	}
	r = create("watcher", map[string]any{"role": "viewer"})
	want(t, r, http.StatusCreated)
	r.decode(t, &viewer)
	if viewer.Role != "viewer" {
		t.Errorf("viewer = %+v", viewer)
	}

	t.Run("team admins name an existing team", func(t *testing.T) {
		fieldErr := func(r response, field, msg string) {
			t.Helper()
			want(t, r, http.StatusUnprocessableEntity)
			if p := r.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != field || p.Errors[0].Message != msg {
				t.Errorf("problem %+v", p)
			}
		}
		fieldErr(create("team-lead", map[string]any{"role": "team_admin"}), "team_id", "a team admin names its team: the id of an existing team")
		fieldErr(create("team-lead", map[string]any{"role": "team_admin", "team_id": randomID}), "team_id", "no team has this id")
		fieldErr(e.do("PATCH", "/api/v1/admins/"+plain.ID, map[string]any{"role": "team_admin"}), "team_id",
			"a team admin names its team: the id of an existing team")
		fieldErr(create("bad-role", map[string]any{"role": "root"}), "role", "must be owner, admin, viewer or team_admin")
		fieldErr(create("team-without-role", map[string]any{"team_id": randomID}), "team_id", "only a team admin names a team")

		var team struct {
			ID string `json:"id"`
		}
		r := e.do("POST", "/api/v1/teams", map[string]any{"name": "Leads"})
		want(t, r, http.StatusCreated)
		r.decode(t, &team)
		var lead struct {
			Role   string  `json:"role"`
			TeamID *string `json:"team_id"`
		}
		r = create("team-lead", map[string]any{"role": "team_admin", "team_id": team.ID})
		want(t, r, http.StatusCreated)
		r.decode(t, &lead)
		if lead.Role != "team_admin" || lead.TeamID == nil || *lead.TeamID != team.ID {
			t.Errorf("team admin %+v", lead)
		}
		// A team with a team admin is not deleted.
		r = e.do("DELETE", "/api/v1/teams/"+team.ID, nil)
		want(t, r, http.StatusConflict)
		if p := r.problem(t); p.Detail != "the team still has 0 member(s) and 1 team admin(s); move them to another team or remove them first" {
			t.Errorf("detail %q", p.Detail)
		}
		// Moving an admin to the team admin role names the team.
		r = e.do("PATCH", "/api/v1/admins/"+plain.ID, map[string]any{"role": "team_admin", "team_id": team.ID})
		want(t, r, http.StatusOK)
		r.decode(t, &lead)
		if lead.Role != "team_admin" || lead.TeamID == nil || *lead.TeamID != team.ID {
			t.Errorf("patched %+v", lead)
		}
		r = e.do("PATCH", "/api/v1/admins/"+plain.ID, map[string]any{"role": "admin"})
		want(t, r, http.StatusOK)
		r.decode(t, &lead)
		if lead.Role != "admin" || lead.TeamID != nil {
			t.Errorf("back to admin %+v", lead)
		}
	})

	t.Run("viewer reads but cannot write", func(t *testing.T) {
		tok := e.login("watcher", testPassword).Token
		auth := withHeader("Authorization", "Bearer "+tok)
		want(t, e.do("GET", "/api/v1/users", nil, auth), http.StatusOK)
		want(t, e.do("GET", "/api/v1/admins", nil, auth), http.StatusOK)
		r := e.do("POST", "/api/v1/users", map[string]any{"name": "x", "email": "x@example.com"}, auth)
		want(t, r, http.StatusForbidden)
		if p := r.problem(t); p.Detail != "viewers have read-only access" {
			t.Errorf("detail %q", p.Detail)
		}
		// Its own password it may change.
		r = e.do("POST", "/api/v1/auth/password", map[string]any{"current_password": testPassword, "new_password": "a brand new passphrase"}, auth)
		want(t, r, http.StatusNoContent)
		e.login("watcher", "a brand new passphrase")
	})

	t.Run("admins cannot manage admins", func(t *testing.T) {
		tok := e.login("plain", testPassword).Token
		auth := withHeader("Authorization", "Bearer "+tok)
		want(t, e.do("POST", "/api/v1/users", map[string]any{"name": "y", "email": "y@example.com"}, auth), http.StatusCreated)
		r := e.do("PATCH", "/api/v1/admins/"+viewer.ID, map[string]any{"role": "owner"}, auth)
		want(t, r, http.StatusForbidden)
		if p := r.problem(t); p.Detail != "your role (admin) may not do this; it needs the owner role" {
			t.Errorf("detail %q", p.Detail)
		}
		es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{Action: "user.create", Actor: "plain"}, 10, "")
		if err != nil || len(es) != 1 || es[0].ActorRole != "admin" {
			t.Errorf("audit of the admin's write = %+v, %v; want one entry with actor_role admin", es, err)
		}
	})

	t.Run("role changes", func(t *testing.T) {
		r := e.do("PATCH", "/api/v1/admins/"+viewer.ID, map[string]any{"role": "owner"})
		want(t, r, http.StatusOK)
		var got adminDoc
		r.decode(t, &got)
		if got.Role != "owner" {
			t.Errorf("after promotion: %+v", got)
		}
		if acts := e.auditActions(viewer.ID); !slices.Contains(acts, "admin.role_change") {
			t.Errorf("audit actions %q", acts)
		}
		a, err := e.st.Admins().GetByUsername(context.Background(), testAdmin)
		if err != nil {
			t.Fatal(err)
		}
		rootID := a.ID.String()
		r = e.do("PATCH", "/api/v1/admins/"+rootID, map[string]any{"role": "viewer"})
		want(t, r, http.StatusConflict)
		if p := r.problem(t); !strings.Contains(p.Detail, "own role") {
			t.Errorf("own role change: %q", p.Detail)
		}
		want(t, e.do("PATCH", "/api/v1/admins/"+viewer.ID, map[string]any{"role": "viewer"}), http.StatusOK)
		// Another owner may demote, then disable, the bootstrap owner.
		want(t, e.do("PATCH", "/api/v1/admins/"+plain.ID, map[string]any{"role": "owner"}), http.StatusOK)
		ptok := withHeader("Authorization", "Bearer "+e.login("plain", testPassword).Token)
		want(t, e.do("PATCH", "/api/v1/admins/"+rootID, map[string]any{"role": "admin"}, ptok), http.StatusOK)
		// The demotion holds at once, on the session root already has.
		r = e.do("PATCH", "/api/v1/admins/"+plain.ID, map[string]any{"role": "viewer"})
		want(t, r, http.StatusForbidden)
		want(t, e.do("PATCH", "/api/v1/admins/"+rootID, map[string]any{"disabled": true}, ptok), http.StatusOK)
		want(t, e.do("GET", "/api/v1/users", nil), http.StatusUnauthorized)
		es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{TargetID: rootID, Action: "admin.role_change"}, 10, "")
		if err != nil || len(es) != 1 || es[0].Actor != "plain" || es[0].ActorRole != "owner" {
			t.Errorf("audit of the demotion = %+v, %v", es, err)
		}
	})
}
