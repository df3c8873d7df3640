package admin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/oidctest"
	"github.com/ccproxy/ccproxy/internal/store"
)

// The single sign-on tests run a real OpenID provider (internal/oidctest:
// zitadel's certified OP library with its example storage and login page).

var people = []oidctest.Person{
	{ID: "u-vera", Username: "vera", Password: "vera's long password", Email: "vera@example.com", Groups: []string{"everyone", "ccproxy-viewers"}},
	{ID: "u-olga", Username: "olga", Password: "olga's long password", Email: "olga@example.com", Groups: []string{"ccproxy-owners", "ccproxy-viewers"}},
	{ID: "u-nick", Username: "nick", Password: "nick's long password", Email: "nick@example.com", Groups: []string{"everyone"}},
	{ID: "u-eve", Username: "eve", Password: "eve's long password", Email: "eve@elsewhere.test", Groups: []string{"ccproxy-viewers"}},
}

// browser is an HTTP client with a cookie jar that follows redirects until
// stop says otherwise.
func browser(t *testing.T, stop func(*url.URL) bool) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if stop(req.URL) {
			return http.ErrUseLastResponse
		}
		if len(via) > 10 {
			return errors.New("too many redirects")
		}
		return nil
	}}
}

// signIn starts at startURL, signs in at the provider's login page as
// user, and returns where the provider then redirects the browser (the
// client's redirect URL with code and state).
func signIn(t *testing.T, hc *http.Client, issuer, startURL, user, password string) *url.URL {
	t.Helper()
	resp, err := hc.Get(startURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || id == "" || !strings.HasPrefix(resp.Request.URL.String(), issuer+"/login/") {
		t.Fatalf("expected the provider's login page, got %d at %s", resp.StatusCode, resp.Request.URL)
	}
	resp, err = hc.PostForm(issuer+oidctest.LoginPath, url.Values{"id": {id}, "username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode/100 != 3 {
		t.Fatalf("after the provider's login: %d, location %v (%v)", resp.StatusCode, loc, err)
	}
	return loc
}

// ssoEnv is an admin server with single sign-on at a running provider.
type ssoEnv struct {
	*env
	op       *oidctest.Provider
	callback string
}

const ssoClientID, ssoClientSecret = "ccproxy-admin", "a client secret of some length"

func newSSOEnv(t *testing.T, tweak func(*admin.Options), extraClients ...*oidctest.Client) *ssoEnv {
	t.Helper()
	issuer, start := oidctest.New(t, people)
	var callback string
	e := newEnvAt(t, func(base string) []func(*admin.Options) {
		callback = base + "/api/v1/auth/oidc/callback"
		return []func(*admin.Options){func(o *admin.Options) {
			roles, err := admin.ParseRoleMapping("ccproxy-viewers=viewer, ccproxy-owners=owner")
			if err != nil {
				t.Fatal(err)
			}
			cfg := &admin.OIDCConfig{IssuerURL: issuer, ClientID: ssoClientID, ClientSecret: ssoClientSecret,
				RedirectURL: callback, Scopes: []string{"email", "profile", "groups"}, GroupsClaim: "groups", RoleMapping: roles}
			o.OIDC = cfg
			if tweak != nil {
				tweak(o)
			}
		}}
	})
	p := start(append([]*oidctest.Client{oidctest.WebClient(ssoClientID, ssoClientSecret, callback)}, extraClients...)...)
	return &ssoEnv{env: e, op: p, callback: callback}
}

// signInThroughCcproxy runs the whole flow in a fresh browser up to the
// provider's redirect to the callback, and returns the browser and that
// callback URL.
func (s *ssoEnv) signInThroughCcproxy(t *testing.T, user, password string) (*http.Client, *url.URL) {
	t.Helper()
	hc := browser(t, func(u *url.URL) bool { return u.Path == "/api/v1/auth/oidc/callback" })
	cb := signIn(t, hc, s.op.Issuer, s.srv.URL+"/api/v1/auth/oidc/login", user, password)
	if !strings.HasPrefix(cb.String(), s.callback+"?") || cb.Query().Get("code") == "" || cb.Query().Get("state") == "" {
		t.Fatalf("the provider redirected to %s, want the callback with code and state", cb)
	}
	return hc, cb
}

// finish calls the callback in the browser; it does not follow the final
// redirect.
func (s *ssoEnv) finish(t *testing.T, hc *http.Client, cb *url.URL) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, cb.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.send(t, hc, req)
}

// send sends req with hc (its cookies), validating the response against the
// OpenAPI document.
func (s *ssoEnv) send(t *testing.T, hc *http.Client, req *http.Request) response {
	t.Helper()
	noFollow := *hc
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, body: []byte(b.String())}
	s.validateIn(t, req, out)
	return out
}

func mustRequest(t *testing.T, u *url.URL) *http.Request {
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		t.Error(err)
	}
	return req
}

// cookieValue returns the browser's cookie name for the admin service.
func (s *ssoEnv) cookieValue(t *testing.T, hc *http.Client, name string) string {
	t.Helper()
	u, _ := url.Parse(s.srv.URL + "/api/v1/")
	for _, c := range hc.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// TestSSOLogin signs in through the provider: a member of the viewers group
// becomes a viewer admin, reads, and is refused writes with 403.
func TestSSOLogin(t *testing.T) {
	s := newSSOEnv(t, nil)
	info := s.do("GET", "/api/v1/auth/sso", nil, noAuth)
	want(t, info, http.StatusOK)
	if strings.TrimSpace(string(info.body)) != `{"enabled":true,"login_url":"/api/v1/auth/oidc/login"}` {
		t.Errorf("sso info %s", info.body)
	}

	hc, cb := s.signInThroughCcproxy(t, "vera", "vera's long password")
	resp := s.finish(t, hc, cb)
	want(t, resp, http.StatusSeeOther)
	if loc := resp.header.Get("Location"); loc != "/" {
		t.Errorf("after sign-in: Location %q, want /", loc)
	}
	session, csrf := s.cookieValue(t, hc, admin.SessionCookie), s.cookieValue(t, hc, admin.CSRFCookie)
	if session == "" || csrf == "" {
		t.Fatalf("no session cookies after sign-in")
	}
	cookies := func(r *http.Request) {
		r.Header.Del("Authorization")
		r.AddCookie(&http.Cookie{Name: admin.SessionCookie, Value: session})
		r.AddCookie(&http.Cookie{Name: admin.CSRFCookie, Value: csrf})
		r.Header.Set(admin.CSRFHeader, csrf)
	}
	var me struct {
		Username string `json:"username"`
		Role     string `json:"role"`
	}
	r := s.do("GET", "/api/v1/auth/session", nil, cookies)
	want(t, r, http.StatusOK)
	r.decode(t, &me)
	if me.Username != "vera@example.com" || me.Role != "viewer" {
		t.Errorf("signed in as %+v, want vera@example.com, viewer", me)
	}
	want(t, s.do("GET", "/api/v1/users", nil, cookies), http.StatusOK)
	// The SSO session is an ordinary session: a cookie-authenticated write
	// without the CSRF token is refused before any role check.
	noCSRF := func(r *http.Request) { cookies(r); r.Header.Del(admin.CSRFHeader) }
	r = s.do("POST", "/api/v1/auth/logout", nil, noCSRF)
	want(t, r, http.StatusForbidden)
	if p := r.problem(t); p.Title != "CSRF token missing or wrong" {
		t.Errorf("write without CSRF token: %+v", p)
	}
	r = s.do("POST", "/api/v1/users", map[string]any{"name": "Mallory", "email": "m@example.com"}, cookies)
	want(t, r, http.StatusForbidden)
	if p := r.problem(t); p.Detail != "viewers have read-only access" {
		t.Errorf("viewer write: %+v", p)
	}
	// The account: linked, no password, so a password login cannot reach it.
	a, err := s.st.Admins().GetByUsername(context.Background(), "vera@example.com")
	if err != nil || a.Role != store.RoleViewer || a.PasswordHash != "" || a.OIDCIssuer != s.op.Issuer || a.OIDCSubject != "u-vera" {
		t.Errorf("stored admin %+v, %v", a, err)
	}
	want(t, s.do("POST", "/api/v1/auth/login", map[string]string{"username": "vera@example.com", "password": "vera's long password"}, noAuth),
		http.StatusUnauthorized)
	r = s.do("POST", "/api/v1/auth/password", map[string]string{"current_password": "vera's long password", "new_password": "whatever it may be"}, cookies)
	want(t, r, http.StatusConflict)
	if acts := s.auditActions(a.ID.String()); !slices.Equal(acts, []string{"admin.create", "admin.login", "admin.login_failed"}) {
		t.Errorf("audit %q", acts)
	}

	t.Run("the code is single use", func(t *testing.T) {
		// The same callback again: its flow is gone.
		r := s.finish(t, hc, cb)
		want(t, r, http.StatusBadRequest)
		if p := r.problem(t); !strings.Contains(p.Detail, "already used") {
			t.Errorf("replayed callback: %q", p.Detail)
		}
		// The old code under a fresh flow's state: the provider refuses it.
		hc2, cb2 := s.signInThroughCcproxy(t, "vera", "vera's long password")
		q := cb2.Query()
		q.Set("code", cb.Query().Get("code"))
		cb2.RawQuery = q.Encode()
		r = s.finish(t, hc2, cb2)
		want(t, r, http.StatusUnauthorized)
		if p := r.problem(t); !strings.Contains(p.Detail, "did not accept the authorization code") {
			t.Errorf("replayed code: %q", p.Detail)
		}
	})

	t.Run("two first sign-ins at once", func(t *testing.T) {
		// eve has never signed in; two tabs finish at the same moment.
		hc1, cb1 := s.signInThroughCcproxy(t, "eve", "eve's long password")
		hc2, cb2 := s.signInThroughCcproxy(t, "eve", "eve's long password")
		codes := make(chan int, 2)
		for _, b := range []struct {
			hc *http.Client
			cb *url.URL
		}{{hc1, cb1}, {hc2, cb2}} {
			noFollow := *b.hc
			noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			go func() {
				resp, err := noFollow.Do(mustRequest(t, b.cb))
				if err != nil {
					codes <- 0
					return
				}
				resp.Body.Close()
				codes <- resp.StatusCode
			}()
		}
		for range 2 {
			if c := <-codes; c != http.StatusSeeOther {
				t.Errorf("a tab's callback: %d, want 303", c)
			}
		}
		as, err := s.st.Admins().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range as {
			if a.OIDCSubject == "u-eve" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d admins for eve, want 1", n)
		}
	})

	t.Run("wrong state", func(t *testing.T) {
		hc, cb := s.signInThroughCcproxy(t, "vera", "vera's long password")
		q := cb.Query()
		q.Set("state", "not-the-state")
		cb.RawQuery = q.Encode()
		r := s.finish(t, hc, cb)
		want(t, r, http.StatusBadRequest)
		if p := r.problem(t); p.Title != "unknown sign-in" {
			t.Errorf("wrong state: %+v", p)
		}
	})

	t.Run("another browser", func(t *testing.T) {
		// The right state and code, but not from the browser that started
		// the flow (a login CSRF): refused, and the flow is spent.
		_, cb := s.signInThroughCcproxy(t, "vera", "vera's long password")
		r := s.finish(t, browser(t, func(*url.URL) bool { return true }), cb)
		want(t, r, http.StatusBadRequest)
		if p := r.problem(t); !strings.Contains(p.Detail, "another browser") {
			t.Errorf("foreign browser: %+v", p)
		}
	})

	t.Run("wrong nonce", func(t *testing.T) {
		hc, cb := s.signInThroughCcproxy(t, "vera", "vera's long password")
		// The flow expects another nonce than the one the provider put in
		// the ID token.
		if _, err := s.st.Pool().Exec(context.Background(), `UPDATE admin_oidc_flows SET nonce = 'some other nonce'`); err != nil {
			t.Fatal(err)
		}
		r := s.finish(t, hc, cb)
		want(t, r, http.StatusUnauthorized)
		if p := r.problem(t); !strings.Contains(p.Detail, "nonce") {
			t.Errorf("wrong nonce: %+v", p)
		}
	})

	t.Run("no mapped group", func(t *testing.T) {
		hc, cb := s.signInThroughCcproxy(t, "nick", "nick's long password")
		r := s.finish(t, hc, cb)
		want(t, r, http.StatusForbidden)
		if p := r.problem(t); p.Detail != "none of your groups (everyone) is mapped to a ccproxy role" {
			t.Errorf("unmapped: %+v", p)
		}
		if _, err := s.st.Admins().GetByUsername(context.Background(), "nick@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an admin was created for nick: %v", err)
		}
	})

	t.Run("highest mapped role wins and follows the groups", func(t *testing.T) {
		hc, cb := s.signInThroughCcproxy(t, "olga", "olga's long password")
		want(t, s.finish(t, hc, cb), http.StatusSeeOther)
		a, err := s.st.Admins().GetByUsername(context.Background(), "olga@example.com")
		if err != nil || a.Role != store.RoleOwner {
			t.Fatalf("olga = %+v, %v; want an owner", a, err)
		}
		// An owner demotes olga; her groups make her an owner again at her
		// next sign-in.
		want(t, s.do("PATCH", "/api/v1/admins/"+a.ID.String(), map[string]string{"role": "viewer"}), http.StatusOK)
		hc, cb = s.signInThroughCcproxy(t, "olga", "olga's long password")
		want(t, s.finish(t, hc, cb), http.StatusSeeOther)
		a, _ = s.st.Admins().GetByUsername(context.Background(), "olga@example.com")
		if a.Role != store.RoleOwner {
			t.Errorf("after sign-in: role %q", a.Role)
		}
	})

	t.Run("settings for owners", func(t *testing.T) {
		r := s.do("GET", "/api/v1/settings/sso", nil)
		want(t, r, http.StatusOK)
		if strings.Contains(string(r.body), ssoClientSecret) || !strings.Contains(string(r.body), `"groups_claim":"groups"`) {
			t.Errorf("settings %s", r.body)
		}
		want(t, s.do("GET", "/api/v1/settings/sso", nil, cookies), http.StatusForbidden)
	})
	t.Run("disabled account", func(t *testing.T) {
		want(t, s.do("PATCH", "/api/v1/admins/"+a.ID.String(), map[string]bool{"disabled": true}), http.StatusOK)
		hc, cb := s.signInThroughCcproxy(t, "vera", "vera's long password")
		r := s.finish(t, hc, cb)
		want(t, r, http.StatusForbidden)
		want(t, s.do("PATCH", "/api/v1/admins/"+a.ID.String(), map[string]bool{"disabled": false}), http.StatusOK)
	})

}

// TestSSOEmailDomains admits only verified addresses in the allowed
// domains.
func TestSSOEmailDomains(t *testing.T) {
	s := newSSOEnv(t, func(o *admin.Options) { o.OIDC.AllowedEmailDomains = []string{"EXAMPLE.com"} })
	hc, cb := s.signInThroughCcproxy(t, "eve", "eve's long password")
	r := s.finish(t, hc, cb)
	want(t, r, http.StatusForbidden)
	if p := r.problem(t); !strings.Contains(p.Detail, "not in a domain allowed") {
		t.Errorf("eve: %+v", p)
	}
	hc, cb = s.signInThroughCcproxy(t, "vera", "vera's long password")
	want(t, s.finish(t, hc, cb), http.StatusSeeOther)
}

// TestSSORefusalWithDashboard: beside the dashboard, a refused sign-in goes
// back to the login page with a code (never free text) the page explains.
func TestSSORefusalWithDashboard(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ui")) })
	s := newSSOEnv(t, func(o *admin.Options) { o.UI = ui })
	hc, cb := s.signInThroughCcproxy(t, "nick", "nick's long password")
	r := s.finish(t, hc, cb)
	want(t, r, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/login?sso_error=no_role" {
		t.Errorf("Location %q", loc)
	}
	r = s.finish(t, hc, cb) // the same again: the flow is spent
	if loc := r.header.Get("Location"); loc != "/login?sso_error=restart" {
		t.Errorf("Location %q", loc)
	}
}

// idToken gets an ID token for client id from the provider at issuer by the
// code flow, with nonce.
func idToken(t *testing.T, issuer, id, secret, redirect, nonce string) string {
	t.Helper()
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: redirect, Endpoint: p.Endpoint(), Scopes: []string{"openid"}}
	hc := browser(t, func(u *url.URL) bool { return strings.HasPrefix(u.String(), redirect) })
	cb := signIn(t, hc, issuer, cfg.AuthCodeURL("some-state", oidc.Nonce(nonce)), "vera", "vera's long password")
	tok, err := cfg.Exchange(ctx, cb.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("no id_token")
	}
	return raw
}

// TestSSOIDTokenChecks feeds the callback's ID token check tokens that are
// genuine but not meant for it: another client's (audience), another
// provider's (issuer, keys), another sign-in's (nonce).
func TestSSOIDTokenChecks(t *testing.T) {
	const otherRedirect = "http://127.0.0.1:1/other/callback"
	s := newSSOEnv(t, nil, oidctest.WebClient("other-client", "the other client's secret", otherRedirect))
	otherIssuer, startOther := oidctest.New(t, people)
	startOther(oidctest.WebClient(ssoClientID, ssoClientSecret, otherRedirect))
	ctx := context.Background()

	good := idToken(t, s.op.Issuer, ssoClientID, ssoClientSecret, s.callback, "nonce-1")
	if err := s.api.VerifyIDToken(ctx, good, "nonce-1"); err != nil {
		t.Fatalf("a genuine token for ccproxy: %v", err)
	}
	for _, tc := range []struct {
		name, raw, nonce, want string
	}{
		{"wrong nonce", good, "nonce-2", "nonce"},
		{"wrong audience", idToken(t, s.op.Issuer, "other-client", "the other client's secret", otherRedirect, "nonce-1"), "nonce-1", "audience"},
		// Another provider's token fails on its keys: go-oidc checks the
		// signature against the configured issuer's keys before any claim.
		// The issuer itself is checked at discovery (TestSSOIssuerMismatch).
		{"another provider's token", idToken(t, otherIssuer, ssoClientID, ssoClientSecret, otherRedirect, "nonce-1"), "nonce-1", "signature"},
		{"tampered", good[:len(good)-4] + "AAAA", "nonce-1", "signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.api.VerifyIDToken(ctx, tc.raw, tc.nonce)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("VerifyIDToken = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// TestSSOIssuerMismatch configures the provider under another name than
// the issuer it states (localhost for 127.0.0.1): discovery refuses it, and
// so does every sign-in.
func TestSSOIssuerMismatch(t *testing.T) {
	s := newSSOEnv(t, func(o *admin.Options) {
		o.OIDC.IssuerURL = strings.Replace(o.OIDC.IssuerURL, "127.0.0.1", "localhost", 1)
	})
	hc := browser(t, func(*url.URL) bool { return true })
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+"/api/v1/auth/oidc/login", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := s.send(t, hc, req)
	want(t, r, http.StatusBadGateway)
	if !strings.Contains(s.logs.String(), "did not match the issuer") {
		t.Errorf("logs do not say why: %s", s.logs.String())
	}
}

// TestSSOConfig checks the settings' validation.
func TestSSOConfig(t *testing.T) {
	good := admin.OIDCConfig{IssuerURL: "https://idp.example.com", ClientID: "c", ClientSecret: "s",
		RedirectURL: "https://admin.example.com/api/v1/auth/oidc/callback", GroupsClaim: "groups",
		RoleMapping: map[string]store.AdminRole{"g": store.RoleViewer}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*admin.OIDCConfig)
		want string
	}{
		{"plain http issuer", func(c *admin.OIDCConfig) { c.IssuerURL = "http://idp.example.com" }, "issuer URL: must be https"},
		{"loopback http issuer", func(c *admin.OIDCConfig) { c.IssuerURL = "http://127.0.0.1:5556" }, ""},
		{"no client id", func(c *admin.OIDCConfig) { c.ClientID = "" }, "client id"},
		{"no secret", func(c *admin.OIDCConfig) { c.ClientSecret = "" }, "client secret"},
		{"redirect elsewhere", func(c *admin.OIDCConfig) { c.RedirectURL = "https://admin.example.com/cb" }, "must end in /api/v1/auth/oidc/callback"},
		{"no mapping", func(c *admin.OIDCConfig) { c.RoleMapping = nil }, "mapping is required"},
		{"team admin", func(c *admin.OIDCConfig) { c.RoleMapping = map[string]store.AdminRole{"g": store.RoleTeamAdmin} }, "cannot come from a group mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ in, want string }{
		{"a=owner, b = viewer,", "map[a:owner b:viewer]"},
		{"a=owner,a=viewer", "mapped twice"},
		{"a", "group=role"},
		{"a=root", "unknown role"},
	} {
		m, err := admin.ParseRoleMapping(tc.in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = fmtMap(m)
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("ParseRoleMapping(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func fmtMap(m map[string]store.AdminRole) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ":" + string(m[k])
	}
	return "map[" + strings.Join(parts, " ") + "]"
}
