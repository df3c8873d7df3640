package admin_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

// fakeClock is a settable Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestAuth(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(o *admin.Options) { o.Now = clock.now; o.SessionTTL = time.Hour; o.Registerer = reg })

	t.Run("first admin only once", func(t *testing.T) {
		created, err := admin.EnsureFirstAdmin(context.Background(), e.st, "other", "another long password")
		if err != nil || created {
			t.Errorf("EnsureFirstAdmin = %v, %v; want false, nil", created, err)
		}
		if _, err := admin.EnsureFirstAdmin(context.Background(), e.st, "x", "short"); err == nil {
			t.Error("a short password was accepted")
		}
		a, err := e.st.Admins().GetByUsername(context.Background(), testAdmin)
		if err != nil || !strings.HasPrefix(a.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
			t.Errorf("stored hash %q, %v", a.PasswordHash, err)
		}
	})

	t.Run("login sets cookies", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/auth/login", map[string]string{"username": "ROOT", "password": testPassword}, noAuth)
		want(t, resp, http.StatusOK)
		var lr loginResult
		resp.decode(t, &lr)
		if len(lr.Token) != 43 || !lr.ExpiresAt.Equal(clock.now().Add(time.Hour).UTC().Truncate(time.Microsecond)) {
			t.Errorf("login result %+v", lr)
		}
		cookies := (&http.Response{Header: resp.header}).Cookies()
		var sess, csrf *http.Cookie
		for _, c := range cookies {
			switch c.Name {
			case admin.SessionCookie:
				sess = c
			case admin.CSRFCookie:
				csrf = c
			}
		}
		if sess == nil || sess.Value != lr.Token || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Secure {
			t.Errorf("session cookie %+v", sess)
		}
		if csrf == nil || csrf.Value != lr.CSRFToken || csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode {
			t.Errorf("csrf cookie %+v", csrf)
		}

		t.Run("cookie auth reads without CSRF token", func(t *testing.T) {
			want(t, e.do("GET", "/api/v1/users", nil, noAuth, withCookie(sess)), http.StatusOK)
		})
		t.Run("cookie auth write without CSRF token", func(t *testing.T) {
			for _, opts := range [][]reqOption{
				{noAuth, withCookie(sess)},
				{noAuth, withCookie(sess), withCookie(csrf)},
				{noAuth, withCookie(sess), withHeader(admin.CSRFHeader, csrf.Value)},
				{noAuth, withCookie(sess), withCookie(csrf), withHeader(admin.CSRFHeader, csrf.Value+"x")},
			} {
				resp := e.do("POST", "/api/v1/users", map[string]any{"name": "csrf"}, opts...)
				want(t, resp, http.StatusForbidden)
				resp.problem(t)
			}
		})
		t.Run("cookie auth write with CSRF token", func(t *testing.T) {
			resp := e.do("POST", "/api/v1/users", map[string]any{"name": "csrf"}, noAuth, withCookie(sess), withCookie(csrf),
				withHeader(admin.CSRFHeader, csrf.Value))
			want(t, resp, http.StatusCreated)
		})
		t.Run("logout revokes the session", func(t *testing.T) {
			resp := e.do("POST", "/api/v1/auth/logout", nil, withHeader("Authorization", "Bearer "+lr.Token))
			want(t, resp, http.StatusNoContent)
			want(t, e.do("GET", "/api/v1/users", nil, withHeader("Authorization", "Bearer "+lr.Token)), http.StatusUnauthorized)
			want(t, e.do("GET", "/api/v1/users", nil, noAuth, withCookie(sess)), http.StatusUnauthorized)
			want(t, e.do("GET", "/api/v1/users", nil), http.StatusOK) // other sessions live on
		})
	})

	t.Run("session expiry", func(t *testing.T) {
		clock.advance(-2 * time.Hour) // a session that expired an hour ago
		lr := e.login(testAdmin, testPassword)
		clock.advance(2 * time.Hour)
		want(t, e.do("GET", "/api/v1/users", nil, withHeader("Authorization", "Bearer "+lr.Token)), http.StatusUnauthorized)
	})

	t.Run("bad credentials", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			body   any
			status int
		}{
			{"wrong password", map[string]string{"username": testAdmin, "password": "wrong password!"}, 401},
			{"unknown admin", map[string]string{"username": "nobody", "password": testPassword}, 401},
			{"sql in username", map[string]string{"username": "' OR '1'='1", "password": "' OR '1'='1"}, 401},
			{"empty", map[string]string{"username": "", "password": ""}, 422},
			{"huge password", map[string]string{"username": testAdmin, "password": strings.Repeat("p", 2000)}, 422},
			{"unknown field", map[string]string{"username": testAdmin, "password": testPassword, "otp": "1"}, 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.do("POST", "/api/v1/auth/login", tc.body, noAuth)
				want(t, resp, tc.status)
				resp.problem(t)
			})
		}
	})

	t.Run("throttling", func(t *testing.T) {
		bad := map[string]string{"username": "throttled", "password": "wrong password!"}
		if _, err := e.st.Admins().Create(context.Background(), "throttled", mustHash(t, e)); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			want(t, e.do("POST", "/api/v1/auth/login", bad, noAuth), http.StatusUnauthorized)
		}
		good := map[string]string{"username": "throttled", "password": testPassword}
		resp := e.do("POST", "/api/v1/auth/login", good, noAuth)
		want(t, resp, http.StatusTooManyRequests)
		if ra := resp.header.Get("Retry-After"); ra == "" {
			t.Error("no Retry-After")
		}
		// Another username from the same address is not affected.
		want(t, e.do("POST", "/api/v1/auth/login", map[string]string{"username": testAdmin, "password": testPassword}, noAuth), http.StatusOK)
		clock.advance(16 * time.Minute)
		want(t, e.do("POST", "/api/v1/auth/login", good, noAuth), http.StatusOK)
	})

	t.Run("disabled admin", func(t *testing.T) {
		a, err := e.st.Admins().GetByUsername(context.Background(), "throttled")
		if err != nil {
			t.Fatal(err)
		}
		lr := e.login("throttled", testPassword)
		if err := e.st.Admins().SetDisabled(context.Background(), a.ID, true); err != nil {
			t.Fatal(err)
		}
		want(t, e.do("GET", "/api/v1/users", nil, withHeader("Authorization", "Bearer "+lr.Token)), http.StatusUnauthorized)
		want(t, e.do("POST", "/api/v1/auth/login", map[string]string{"username": "throttled", "password": testPassword}, noAuth), http.StatusUnauthorized)
	})

	t.Run("login and logout are audited", func(t *testing.T) {
		es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{Action: "admin.logout"}, 10, "")
		if err != nil || len(es) != 1 || es[0].Actor != testAdmin {
			t.Errorf("logout audit %+v, %v", es, err)
		}
		// The six successful logins: the harness's, "login sets cookies",
		// "session expiry", two in "throttling" and one in "disabled admin".
		es, _, err = e.st.Audit().List(context.Background(), store.AuditFilter{Action: "admin.login"}, 100, "")
		if err != nil || len(es) != 6 {
			t.Errorf("login audit %d entries, %v; want 6", len(es), err)
		}
	})

	// Every request of the subtests above, counted by hand: a change in
	// what is counted, or under which label, shows here.
	t.Run("metrics", func(t *testing.T) {
		const logins = `
# HELP ccproxy_admin_logins_total Admin login attempts by result (ok, bad_credentials, throttled, busy).
# TYPE ccproxy_admin_logins_total counter
ccproxy_admin_logins_total{result="bad_credentials"} 9
ccproxy_admin_logins_total{result="ok"} 6
ccproxy_admin_logins_total{result="throttled"} 1
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(logins), "ccproxy_admin_logins_total"); err != nil {
			t.Error(err)
		}
		const requests = `
# HELP ccproxy_admin_http_requests_total Admin API requests by method, route pattern and status code.
# TYPE ccproxy_admin_http_requests_total counter
ccproxy_admin_http_requests_total{code="200",method="GET",route="GET /api/v1/users"} 2
ccproxy_admin_http_requests_total{code="401",method="GET",route="GET /api/v1/users"} 4
ccproxy_admin_http_requests_total{code="200",method="POST",route="POST /api/v1/auth/login"} 6
ccproxy_admin_http_requests_total{code="400",method="POST",route="POST /api/v1/auth/login"} 1
ccproxy_admin_http_requests_total{code="401",method="POST",route="POST /api/v1/auth/login"} 9
ccproxy_admin_http_requests_total{code="422",method="POST",route="POST /api/v1/auth/login"} 2
ccproxy_admin_http_requests_total{code="429",method="POST",route="POST /api/v1/auth/login"} 1
ccproxy_admin_http_requests_total{code="204",method="POST",route="POST /api/v1/auth/logout"} 1
ccproxy_admin_http_requests_total{code="201",method="POST",route="POST /api/v1/users"} 1
ccproxy_admin_http_requests_total{code="403",method="POST",route="POST /api/v1/users"} 4
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(requests), "ccproxy_admin_http_requests_total"); err != nil {
			t.Error(err)
		}
	})

	t.Run("passwords never logged", func(t *testing.T) {
		if strings.Contains(e.logs.String(), testPassword) || strings.Contains(e.logs.String(), "wrong password!") {
			t.Error("a password appears in the logs")
		}
	})
}

// mustHash returns the stored hash of testPassword, to create more admins
// with it.
func mustHash(t *testing.T, e *env) string {
	t.Helper()
	a, err := e.st.Admins().GetByUsername(context.Background(), testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	return a.PasswordHash
}
