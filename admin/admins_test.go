package admin_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

const (
	opsPassword  = "ops password number one"
	opsPassword2 = "ops password number two"
	opsPassword3 = "ops password number three"
)

// TestAdminAccounts walks the account management endpoints in order on one
// server: create, change one's own password, reset another's, end every
// session, disable and re-enable, with the sessions each step must end and
// the audit entries it must leave.
func TestAdminAccounts(t *testing.T) {
	e := newEnv(t)
	bearer := func(tok string) reqOption { return withHeader("Authorization", "Bearer "+tok) }
	alive := func(t *testing.T, tok string, want bool) {
		t.Helper()
		resp := e.do("GET", "/api/v1/admins", nil, bearer(tok))
		if (resp.status == http.StatusOK) != want {
			t.Fatalf("session alive = %v (status %d), want %v", resp.status == http.StatusOK, resp.status, want)
		}
	}
	loginStatus := func(user, pass string) int {
		return e.do("POST", "/api/v1/auth/login", map[string]string{"username": user, "password": pass}, noAuth).status
	}

	var opsID string
	t.Run("create", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/admins", map[string]string{"username": "ops", "password": opsPassword})
		want(t, resp, http.StatusCreated)
		var a struct {
			ID, Username string
			Disabled     bool
			LastLoginAt  *time.Time `json:"last_login_at"`
		}
		resp.decode(t, &a)
		opsID = a.ID
		if a.Username != "ops" || a.Disabled || a.LastLoginAt != nil || resp.header.Get("Location") != "/api/v1/admins/"+a.ID {
			t.Fatalf("created %+v, Location %q", a, resp.header.Get("Location"))
		}
		for _, tc := range []struct {
			name   string
			body   any
			status int
			fields []string
		}{
			{"duplicate in another case", map[string]string{"username": "OPS", "password": opsPassword}, http.StatusConflict, nil},
			{"short password", map[string]string{"username": "short", "password": "too short"}, http.StatusUnprocessableEntity, []string{"password"}},
			{"bad username", map[string]string{"username": " padded", "password": opsPassword}, http.StatusUnprocessableEntity, []string{"username"}},
			{"case-mismatched member", rawBody(`{"username":"x","Password":"` + opsPassword + `"}`), http.StatusBadRequest, []string{"Password"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.do("POST", "/api/v1/admins", tc.body)
				want(t, resp, tc.status)
				if p := resp.problem(t); !slices.Equal(p.fields(), tc.fields) {
					t.Fatalf("fields %q, want %q", p.fields(), tc.fields)
				}
			})
		}
		resp = e.do("GET", "/api/v1/admins?limit=1", nil)
		want(t, resp, http.StatusOK)
		var pg struct {
			Items []struct{ Username string }
			Next  *string `json:"next_cursor"`
		}
		resp.decode(t, &pg)
		if len(pg.Items) != 1 || pg.Items[0].Username != "ops" || pg.Next == nil {
			t.Fatalf("first page %+v", pg)
		}
		want(t, e.do("GET", "/api/v1/admins/"+opsID, nil), http.StatusOK)
		if got := e.auditActions(opsID); !slices.Equal(got, []string{"admin.create"}) {
			t.Fatalf("audit %v", got)
		}
	})

	t.Run("change own password", func(t *testing.T) {
		this, other := e.login("ops", opsPassword).Token, e.login("ops", opsPassword).Token
		resp := e.do("POST", "/api/v1/auth/password", map[string]string{"current_password": "not the password", "new_password": opsPassword2}, bearer(this))
		want(t, resp, http.StatusUnprocessableEntity)
		if p := resp.problem(t); !slices.Equal(p.fields(), []string{"current_password"}) {
			t.Fatalf("fields %q", p.fields())
		}
		want(t, e.do("POST", "/api/v1/auth/password", map[string]string{"current_password": opsPassword, "new_password": "short"}, bearer(this)),
			http.StatusUnprocessableEntity)
		want(t, e.do("POST", "/api/v1/auth/password", map[string]string{"current_password": opsPassword, "new_password": opsPassword2}, bearer(this)),
			http.StatusNoContent)
		alive(t, this, true)
		alive(t, other, false)
		if st := loginStatus("ops", opsPassword); st != http.StatusUnauthorized {
			t.Fatalf("old password: %d", st)
		}
		e.login("ops", opsPassword2)
	})

	t.Run("reset another admin's password", func(t *testing.T) {
		s1, s2 := e.login("ops", opsPassword2).Token, e.login("ops", opsPassword2).Token
		want(t, e.do("PUT", "/api/v1/admins/"+opsID+"/password", map[string]string{"password": opsPassword3}), http.StatusNoContent)
		alive(t, s1, false)
		alive(t, s2, false)
		if st := loginStatus("ops", opsPassword2); st != http.StatusUnauthorized {
			t.Fatalf("old password: %d", st)
		}
		opsTok := e.login("ops", opsPassword3).Token
		root, _ := e.st.Admins().GetByUsername(context.Background(), testAdmin)
		for _, tc := range []struct {
			name, id string
			tok      string
			body     any
			status   int
		}{
			{"not one's own", root.ID.String(), e.token, map[string]string{"password": opsPassword}, http.StatusConflict},
			{"short password", opsID, e.token, map[string]string{"password": "short"}, http.StatusUnprocessableEntity},
			{"unknown admin", randomID, e.token, map[string]string{"password": opsPassword}, http.StatusNotFound},
			// Managing admins is for owners; ops has the admin role.
			{"only owners reset another", root.ID.String(), opsTok, map[string]string{"password": testPassword}, http.StatusForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want(t, e.do("PUT", "/api/v1/admins/"+tc.id+"/password", tc.body, bearer(tc.tok)), tc.status)
			})
		}
		// ops's attempt left root's sessions alone.
		alive(t, e.token, true)
	})

	t.Run("end every session", func(t *testing.T) {
		s1, s2 := e.login("ops", opsPassword3).Token, e.login("ops", opsPassword3).Token
		resp := e.do("DELETE", "/api/v1/admins/"+opsID+"/sessions", nil)
		want(t, resp, http.StatusOK)
		var out struct{ Revoked int }
		resp.decode(t, &out)
		if out.Revoked != 3 { // s1, s2 and the session of the step before
			t.Fatalf("revoked %d, want 3", out.Revoked)
		}
		alive(t, s1, false)
		alive(t, s2, false)
		want(t, e.do("DELETE", "/api/v1/admins/"+randomID+"/sessions", nil), http.StatusNotFound)
	})

	t.Run("disable and enable", func(t *testing.T) {
		s := e.login("ops", opsPassword3).Token
		resp := e.do("PATCH", "/api/v1/admins/"+opsID, map[string]bool{"disabled": true})
		want(t, resp, http.StatusOK)
		var a struct{ Disabled bool }
		resp.decode(t, &a)
		if !a.Disabled {
			t.Fatal("not disabled")
		}
		alive(t, s, false)
		if st := loginStatus("ops", opsPassword3); st != http.StatusUnauthorized {
			t.Fatalf("disabled admin logged in: %d", st)
		}
		root, _ := e.st.Admins().GetByUsername(context.Background(), testAdmin)
		want(t, e.do("PATCH", "/api/v1/admins/"+root.ID.String(), map[string]bool{"disabled": true}), http.StatusConflict)
		want(t, e.do("PATCH", "/api/v1/admins/"+opsID, rawBody(`{"disabled":null}`)), http.StatusUnprocessableEntity)
		want(t, e.do("PATCH", "/api/v1/admins/"+randomID, map[string]bool{"disabled": true}), http.StatusNotFound)
		want(t, e.do("PATCH", "/api/v1/admins/"+opsID, map[string]bool{"disabled": false}), http.StatusOK)
		e.login("ops", opsPassword3)
	})

	t.Run("audited", func(t *testing.T) {
		want := []string{"admin.create", "admin.password_change", "admin.password_reset", "admin.sessions_revoke", "admin.disable", "admin.enable"}
		var got []string
		for _, a := range e.auditActions(opsID) {
			if a != "admin.login" && a != "admin.login_failed" {
				got = append(got, a)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("audit %v, want %v", got, want)
		}
		es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{Action: "admin.password_change"}, 10, "")
		if err != nil || len(es) != 1 || es[0].Actor != "ops" || es[0].IP == nil {
			t.Fatalf("password change entry %+v, %v", es, err)
		}
	})
}

// TestChangePasswordThrottled checks that guessing the current password
// through a (stolen) session is throttled like logins are.
func TestChangePasswordThrottled(t *testing.T) {
	e := newEnv(t, func(o *admin.Options) {
		o.LoginThrottle = admin.LoginThrottle{Username: admin.ThrottleRule{Limit: 3, Delay: time.Minute}}
	})
	guess := map[string]string{"current_password": "a wrong guess", "new_password": opsPassword}
	for range 3 {
		want(t, e.do("POST", "/api/v1/auth/password", guess), http.StatusUnprocessableEntity)
	}
	resp := e.do("POST", "/api/v1/auth/password", map[string]string{"current_password": testPassword, "new_password": opsPassword})
	want(t, resp, http.StatusTooManyRequests)
	if resp.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}

// TestResetPassword is the operator's reset (ccproxy admin reset-password):
// it works for a disabled, throttled admin with sessions, and leaves an
// audit entry.
func TestResetPassword(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	resp := e.do("POST", "/api/v1/admins", map[string]string{"username": "Locked", "password": opsPassword})
	want(t, resp, http.StatusCreated)
	var a struct{ ID string }
	resp.decode(t, &a)
	session := e.login("locked", opsPassword).Token
	for range 5 {
		want(t, e.do("POST", "/api/v1/auth/login", map[string]string{"username": "locked", "password": "wrong password!"}, noAuth), http.StatusUnauthorized)
	}
	want(t, e.do("POST", "/api/v1/auth/login", map[string]string{"username": "locked", "password": opsPassword}, noAuth), http.StatusTooManyRequests)
	want(t, e.do("PATCH", "/api/v1/admins/"+a.ID, map[string]bool{"disabled": true}), http.StatusOK)

	tests := []struct {
		name, username, password string
		enable                   bool
		wantErr                  error
	}{
		{"unknown admin", "nobody", opsPassword2, true, store.ErrNotFound},
		{"short password", "locked", "short", true, nil},
		{"reset, still disabled", "LOCKED", opsPassword2, false, nil},
		{"reset and enable", "locked", opsPassword3, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := admin.ResetPassword(ctx, e.st, tc.username, tc.password, tc.enable)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ResetPassword = %v, want %v", err, tc.wantErr)
				}
			case len(tc.password) < 12:
				if err == nil {
					t.Fatal("a short password was accepted")
				}
			case err != nil:
				t.Fatal(err)
			case got.Username != "Locked" || got.Disabled == tc.enable:
				t.Fatalf("admin %+v", got)
			}
		})
	}
	want(t, e.do("GET", "/api/v1/admins", nil, withHeader("Authorization", "Bearer "+session)), http.StatusUnauthorized)
	e.login("locked", opsPassword3) // enabled, and the throttle forgotten
	es, _, err := e.st.Audit().List(ctx, store.AuditFilter{Action: "admin.password_reset"}, 10, "")
	if err != nil || len(es) != 2 || es[0].Actor != "operator" || es[0].AdminID != nil || es[0].TargetID != a.ID {
		t.Fatalf("audit %+v, %v", es, err)
	}
}
