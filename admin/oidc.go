package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Single sign-on. An admin may sign in through any OpenID Connect provider
// (Okta, Entra ID, Google Workspace, Keycloak, Dex, ...) with the
// authorization code flow: GET /api/v1/auth/oidc/login sends the browser to
// the provider with a fresh state, nonce and PKCE challenge (S256), and GET
// /api/v1/auth/oidc/callback finishes it. The callback accepts a code only
//
//   - with the state of a flow started in the same browser (a random token
//     in the HttpOnly, SameSite=Lax cookie ccproxy_oidc, whose hash the flow
//     row keeps), at most once (the row is deleted when read) and within ten
//     minutes;
//   - when the provider exchanges it for tokens given the flow's PKCE code
//     verifier and the client's secret;
//   - when the ID token verifies: signature against the provider's
//     published keys, issuer, audience (the client id), expiry, and the
//     flow's nonce.
//
// The role comes from the groups claim (of the ID token, else of the
// userinfo endpoint) through OIDCConfig.RoleMapping, the highest mapped
// role winning, and is set again at every sign-in, so a change of groups at
// the provider takes effect at the next sign-in; an identity none of whose
// groups is mapped is refused. The admin account is created at its first
// sign-in, linked to the issuer and subject (never to the email, which a
// provider may let users change), and has no password.

// OIDCFlowCookie carries the browser's half of a single sign-on flow.
const OIDCFlowCookie = "ccproxy_oidc"

// oidcFlowTTL is how long a sign-in at the provider may take.
const oidcFlowTTL = 10 * time.Minute

// maxPendingOIDCFlows bounds the sign-ins in progress: starting one needs
// no credentials, and each is a row until it is finished or expires. Far
// more than the admins of any company start within oidcFlowTTL.
const maxPendingOIDCFlows = 10_000

// OIDCConfig configures single sign-on.
type OIDCConfig struct {
	// IssuerURL is the provider's issuer; its discovery document is at
	// IssuerURL/.well-known/openid-configuration.
	IssuerURL string
	// ClientID and ClientSecret are the client registered at the provider.
	ClientID     string
	ClientSecret string
	// RedirectURL is this service's callback as registered at the
	// provider: https://<admin host>/api/v1/auth/oidc/callback.
	RedirectURL string
	// Scopes are requested besides "openid", which is always requested.
	Scopes []string
	// GroupsClaim names the claim holding the user's groups (a string or
	// a list of strings).
	GroupsClaim string
	// RoleMapping maps a group to the role its members get.
	RoleMapping map[string]store.AdminRole
	// AllowedEmailDomains, when not empty, admits only identities with a
	// verified email address in one of these domains.
	AllowedEmailDomains []string
	// HTTPClient talks to the provider; nil uses a client with a 10 s
	// timeout.
	HTTPClient *http.Client
}

// Validate reports the first problem of c.
func (c OIDCConfig) Validate() error {
	if err := checkHTTPURL(c.IssuerURL); err != nil {
		return fmt.Errorf("issuer URL: %w", err)
	}
	if c.ClientID == "" {
		return errors.New("a client id is required")
	}
	if c.ClientSecret == "" {
		return errors.New("a client secret is required")
	}
	if err := checkHTTPURL(c.RedirectURL); err != nil {
		return fmt.Errorf("redirect URL: %w", err)
	}
	if u, _ := url.Parse(c.RedirectURL); !strings.HasSuffix(u.Path, "/api/v1/auth/oidc/callback") {
		return errors.New("redirect URL: must end in /api/v1/auth/oidc/callback")
	}
	if c.GroupsClaim == "" {
		return errors.New("a groups claim name is required")
	}
	if len(c.RoleMapping) == 0 {
		return errors.New("a group to role mapping is required: without one nobody can sign in")
	}
	for g, r := range c.RoleMapping {
		if err := checkSSORole(r); err != nil {
			return fmt.Errorf("role mapping of group %q: %w", g, err)
		}
	}
	return nil
}

func checkSSORole(r store.AdminRole) error {
	switch r {
	case store.RoleOwner, store.RoleAdmin, store.RoleViewer:
		return nil
	case store.RoleTeamAdmin:
		return errTeamAdminUnavailable
	}
	return fmt.Errorf("unknown role %q: must be owner, admin or viewer", r)
}

// errTeamAdminUnavailable refuses team admins in a group mapping: a team
// admin names its team, which a group does not say.
var errTeamAdminUnavailable = errors.New("team_admin cannot come from a group mapping (a team admin names its team): use owner, admin or viewer, and create team admins with the admin API")

// checkHTTPURL accepts an absolute https URL, or an http one on a loopback
// host (a provider or admin service on the same machine, and tests).
func checkHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must be an absolute http(s) URL without query, fragment or user information")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return errors.New("must be https (http only on a loopback host)")
}

// ParseRoleMapping reads "group=role,group=role" (roles owner, admin,
// viewer). Group names may contain anything but "," and "=".
func ParseRoleMapping(v string) (map[string]store.AdminRole, error) {
	out := map[string]store.AdminRole{}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		g, r, ok := strings.Cut(part, "=")
		g, r = strings.TrimSpace(g), strings.TrimSpace(r)
		if !ok || g == "" || r == "" {
			return nil, fmt.Errorf("%q: each entry is group=role", part)
		}
		if _, dup := out[g]; dup {
			return nil, fmt.Errorf("group %q is mapped twice", g)
		}
		role := store.AdminRole(r)
		if err := checkSSORole(role); err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
		out[g] = role
	}
	return out, nil
}

// oidcClient is the relying party: the provider's configuration, found by
// discovery at the first sign-in (so the admin service starts while the
// provider is down) and kept once found.
type oidcClient struct {
	cfg  OIDCConfig
	log  *slog.Logger
	http *http.Client

	mu       sync.Mutex
	provider *oidc.Provider
}

func newOIDCClient(cfg OIDCConfig, log *slog.Logger) (*oidcClient, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("admin: single sign-on: %w", err)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &oidcClient{cfg: cfg, log: log, http: hc}, nil
}

// discover returns the provider, fetching its discovery document once.
func (c *oidcClient) discover(ctx context.Context) (*oidc.Provider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.provider != nil {
		return c.provider, nil
	}
	// go-oidc checks that the document's issuer is IssuerURL exactly.
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, c.http), c.cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("discover the OpenID provider %s: %w", c.cfg.IssuerURL, err)
	}
	c.provider = p
	return p, nil
}

// scopes are the scopes requested: openid first, then the configured ones.
func (c *oidcClient) scopes() []string {
	scopes := []string{oidc.ScopeOpenID}
	for _, s := range c.cfg.Scopes {
		if s != oidc.ScopeOpenID && !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return scopes
}

func (c *oidcClient) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, RedirectURL: c.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: c.scopes()}
}

// verify checks a raw ID token's signature, issuer, audience and expiry,
// then its nonce, and returns it.
func (c *oidcClient) verify(ctx context.Context, p *oidc.Provider, rawIDToken, nonce string) (*oidc.IDToken, error) {
	idt, err := p.VerifierContext(oidc.ClientContext(ctx, c.http), &oidc.Config{ClientID: c.cfg.ClientID}).Verify(ctx, rawIDToken)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, errors.New("the ID token's nonce is not this sign-in's")
	}
	return idt, nil
}

// ssoIdentity is what a verified sign-in says about the person.
type ssoIdentity struct {
	Issuer, Subject string
	Email           string
	EmailVerified   bool
	Username        string
	Groups          []string
}

// identityClaims are the standard claims ccproxy reads.
type identityClaims struct {
	Email             string `json:"email"`
	EmailVerified     any    `json:"email_verified"`
	PreferredUsername string `json:"preferred_username"`
}

// groupsFrom reads a groups claim: a list of strings or one string.
func groupsFrom(claims map[string]any, name string) ([]string, bool) {
	v, ok := claims[name]
	if !ok {
		return nil, false
	}
	switch g := v.(type) {
	case string:
		return []string{g}, true
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out, true
	}
	return nil, true
}

// role returns the highest role the groups map to ("" for none).
func (c *oidcClient) role(groups []string) store.AdminRole {
	best := store.AdminRole("")
	for _, g := range groups {
		r, ok := c.cfg.RoleMapping[g]
		if ok && (best == "" || roleRank(r) > roleRank(best)) {
			best = r
		}
	}
	return best
}

// emailAllowed applies AllowedEmailDomains.
func (c *oidcClient) emailAllowed(id ssoIdentity) bool {
	if len(c.cfg.AllowedEmailDomains) == 0 {
		return true
	}
	_, domain, ok := strings.Cut(id.Email, "@")
	if !ok || !id.EmailVerified {
		return false
	}
	for _, d := range c.cfg.AllowedEmailDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// ssoInfo tells the login page whether to offer single sign-on.
type ssoInfo struct {
	Enabled  bool   `json:"enabled"`
	LoginURL string `json:"login_url,omitempty"`
}

func (s *Server) handleSSOInfo(w http.ResponseWriter, _ *http.Request) {
	if s.oidc == nil {
		writeJSON(w, http.StatusOK, ssoInfo{})
		return
	}
	writeJSON(w, http.StatusOK, ssoInfo{Enabled: true, LoginURL: "/api/v1/auth/oidc/login"})
}

// ssoSettings is the single sign-on configuration as owners may read it:
// never the client secret.
type ssoSettings struct {
	Enabled             bool              `json:"enabled"`
	IssuerURL           string            `json:"issuer_url,omitempty"`
	ClientID            string            `json:"client_id,omitempty"`
	RedirectURL         string            `json:"redirect_url,omitempty"`
	Scopes              []string          `json:"scopes,omitempty"`
	GroupsClaim         string            `json:"groups_claim,omitempty"`
	RoleMapping         map[string]string `json:"role_mapping,omitempty"`
	AllowedEmailDomains []string          `json:"allowed_email_domains,omitempty"`
}

func (s *Server) handleSSOSettings(w http.ResponseWriter, _ *http.Request) {
	if s.oidc == nil {
		writeJSON(w, http.StatusOK, ssoSettings{})
		return
	}
	c := s.oidc.cfg
	m := map[string]string{}
	for g, r := range c.RoleMapping {
		m[g] = string(r)
	}
	writeJSON(w, http.StatusOK, ssoSettings{Enabled: true, IssuerURL: c.IssuerURL, ClientID: c.ClientID,
		RedirectURL: c.RedirectURL, Scopes: s.oidc.scopes(), GroupsClaim: c.GroupsClaim,
		RoleMapping: m, AllowedEmailDomains: c.AllowedEmailDomains})
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashString(v string) []byte {
	sum := sha256.Sum256([]byte(v))
	return sum[:]
}

func (s *Server) ssoNotConfigured(w http.ResponseWriter, r *http.Request) {
	s.problem(w, r, http.StatusNotFound, "single sign-on is not configured",
		"this admin service has no OpenID Connect provider (CCPROXY_OIDC_ISSUER_URL); log in with a password")
}

// handleOIDCLogin starts a sign-in: it records the flow and sends the
// browser to the provider.
func (s *Server) handleOIDCLogin(w http.ResponseWriter, r *http.Request) {
	if s.oidc == nil {
		s.ssoNotConfigured(w, r)
		return
	}
	p, err := s.oidc.discover(r.Context())
	if err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: single sign-on provider unavailable", slog.String("error", err.Error()))
		s.problem(w, r, http.StatusBadGateway, "identity provider unavailable", "the OpenID provider's discovery document could not be read; try again later")
		return
	}
	state, err1 := randomToken()
	nonce, err2 := randomToken()
	browser, err3 := randomToken()
	if err := errors.Join(err1, err2, err3); err != nil {
		s.storeError(w, r, err)
		return
	}
	verifier := oauth2.GenerateVerifier()
	now := s.now()
	err = s.st.OIDCFlows().Create(r.Context(), store.OIDCFlow{StateHash: hashString(state), BrowserHash: hashString(browser),
		Nonce: nonce, CodeVerifier: verifier, ExpiresAt: now.Add(oidcFlowTTL)}, now, maxPendingOIDCFlows)
	if errors.Is(err, store.ErrTooManyFlows) {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: too many single sign-ons in progress")
		w.Header().Set("Retry-After", "60")
		s.problem(w, r, http.StatusServiceUnavailable, "too many sign-ins in progress", "try again in a minute")
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	// Lax, not Strict: the callback is a top-level navigation from the
	// provider's site, on which Strict cookies are not sent.
	http.SetCookie(w, &http.Cookie{Name: OIDCFlowCookie, Value: browser, Path: "/api/v1/auth/oidc/",
		MaxAge: int(oidcFlowTTL / time.Second), HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	target := s.oidc.oauth(p).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// ssoRefusal is a refused sign-in: its status, and a detail for the person
// (never a token).
type ssoRefusal struct {
	status int
	title  string
	detail string
}

func (e *ssoRefusal) Error() string { return e.title + ": " + e.detail }

func refuse(status int, title, detail string) *ssoRefusal {
	return &ssoRefusal{status: status, title: title, detail: detail}
}

// handleOIDCCallback finishes a sign-in: it checks the flow, exchanges the
// code, verifies the ID token, maps the groups to a role, creates or
// updates the admin, starts a session and sends the browser to the
// dashboard.
func (s *Server) handleOIDCCallback(w http.ResponseWriter, r *http.Request) {
	if s.oidc == nil {
		s.ssoNotConfigured(w, r)
		return
	}
	// The flow cookie has done its work whatever happens next.
	http.SetCookie(w, &http.Cookie{Name: OIDCFlowCookie, Value: "", Path: "/api/v1/auth/oidc/", MaxAge: -1,
		HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode})
	id, err := s.finishOIDC(r)
	var a store.Admin
	if err == nil {
		a, err = s.ssoAdmin(r, id)
	}
	var ref *ssoRefusal
	if errors.As(err, &ref) {
		s.ssoRefused(w, r, ref)
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	after := map[string]any{"method": "oidc", "issuer": id.Issuer, "role": a.Role}
	if _, ok := s.startSession(w, r, a, s.now(), "admin.login", after); !ok {
		return
	}
	s.logins.WithLabelValues("ok").Inc()
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// ssoRefused answers a refused sign-in: problem JSON, or, beside the
// dashboard, a redirect to its login page with a code naming the reason
// (never free text: the login page shows its own message for each code, so
// a crafted link cannot put words on it).
func (s *Server) ssoRefused(w http.ResponseWriter, r *http.Request, ref *ssoRefusal) {
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: single sign-on refused", slog.String("reason", ref.detail))
	if s.ui == nil {
		s.problem(w, r, ref.status, ref.title, ref.detail)
		return
	}
	code := "refused"
	switch {
	case ref.status == http.StatusBadRequest:
		code = "restart"
	case ref.status == http.StatusBadGateway:
		code = "unavailable"
	case ref.status == http.StatusConflict:
		code = "username_taken"
	case ref.title == "no ccproxy role":
		code = "no_role"
	case ref.title == "account disabled":
		code = "disabled"
	case ref.status == http.StatusForbidden:
		code = "email"
	}
	http.Redirect(w, r, "/login?sso_error="+code, http.StatusSeeOther)
}

// finishOIDC checks the callback's flow and tokens and returns the verified
// identity, or an *ssoRefusal.
func (s *Server) finishOIDC(r *http.Request) (ssoIdentity, error) {
	ctx := r.Context()
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return ssoIdentity{}, refuse(http.StatusUnauthorized, "sign-in refused by the identity provider",
			boundedField(e+": "+q.Get("error_description")))
	}
	state, code := q.Get("state"), q.Get("code")
	if state == "" || code == "" {
		return ssoIdentity{}, refuse(http.StatusBadRequest, "invalid sign-in callback", "the callback needs state and code parameters")
	}
	c, cerr := r.Cookie(OIDCFlowCookie)
	flow, err := s.st.OIDCFlows().Take(ctx, hashString(state), s.now())
	if errors.Is(err, store.ErrNotFound) {
		return ssoIdentity{}, refuse(http.StatusBadRequest, "unknown sign-in",
			"this sign-in is unknown, expired or already used; start again from the login page")
	}
	if err != nil {
		return ssoIdentity{}, err
	}
	if cerr != nil || subtle.ConstantTimeCompare(hashString(c.Value), flow.BrowserHash) != 1 {
		return ssoIdentity{}, refuse(http.StatusBadRequest, "unknown sign-in",
			"this sign-in was started in another browser; start again from the login page")
	}
	p, err := s.oidc.discover(ctx)
	if err != nil {
		return ssoIdentity{}, refuse(http.StatusBadGateway, "identity provider unavailable", "the OpenID provider could not be reached")
	}
	tok, err := s.oidc.oauth(p).Exchange(oidc.ClientContext(ctx, s.oidc.http), code, oauth2.VerifierOption(flow.CodeVerifier))
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "admin: code exchange failed", slog.String("error", err.Error()))
		return ssoIdentity{}, refuse(http.StatusUnauthorized, "sign-in refused", "the identity provider did not accept the authorization code")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return ssoIdentity{}, refuse(http.StatusBadGateway, "sign-in refused", "the identity provider returned no ID token")
	}
	idt, err := s.oidc.verify(ctx, p, raw, flow.Nonce)
	if err != nil {
		return ssoIdentity{}, refuse(http.StatusUnauthorized, "sign-in refused", "the ID token was refused: "+boundedField(err.Error()))
	}
	id := ssoIdentity{Issuer: idt.Issuer, Subject: idt.Subject}
	var std identityClaims
	all := map[string]any{}
	if err := errors.Join(idt.Claims(&std), idt.Claims(&all)); err != nil {
		return ssoIdentity{}, refuse(http.StatusBadGateway, "sign-in refused", "the ID token's claims could not be read")
	}
	groups, found := groupsFrom(all, s.oidc.cfg.GroupsClaim)
	if (!found || std.Email == "") && p.UserInfoEndpoint() != "" {
		// Many providers keep groups, or the email and profile claims (as
		// the standard says when an access token is issued), out of the
		// ID token: the userinfo endpoint has them.
		ui, err := p.UserInfo(oidc.ClientContext(ctx, s.oidc.http), oauth2.StaticTokenSource(tok))
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "admin: userinfo request failed", slog.String("error", err.Error()))
		}
		if err == nil && ui.Subject == idt.Subject {
			uiAll := map[string]any{}
			if !found && ui.Claims(&uiAll) == nil {
				groups, _ = groupsFrom(uiAll, s.oidc.cfg.GroupsClaim)
			}
			if std.Email == "" {
				_ = ui.Claims(&std)
			}
		}
	}
	id.Groups = groups
	id.Email = std.Email
	id.EmailVerified = std.EmailVerified == true || std.EmailVerified == "true"
	id.Username = std.Email
	if id.Username == "" {
		id.Username = std.PreferredUsername
	}
	if id.Username == "" {
		id.Username = "sso:" + id.Subject
	}
	id.Username = boundedUsername(id.Username)
	return id, nil
}

// boundedUsername makes a claim a valid username: no control characters,
// no surrounding spaces, at most 100 bytes.
func boundedUsername(v string) string {
	v = strings.TrimSpace(strings.Map(func(r rune) rune {
		if isControl(r) {
			return -1
		}
		return r
	}, v))
	if len(v) > 100 {
		v = strings.TrimSpace(strings.ToValidUTF8(v[:100], ""))
	}
	return v
}

// ssoAdmin finds or creates the admin of a verified identity and gives it
// the role its groups map to. Two first sign-ins of one person at once (two
// tabs) race to create the account: the loser finds it on its second try.
func (s *Server) ssoAdmin(r *http.Request, id ssoIdentity) (store.Admin, error) {
	a, err := s.ssoAdminOnce(r, id)
	var ref *ssoRefusal
	if errors.As(err, &ref) && ref.status == http.StatusConflict {
		if _, gerr := s.st.Admins().GetByOIDC(r.Context(), id.Issuer, id.Subject); gerr == nil {
			return s.ssoAdminOnce(r, id)
		}
	}
	return a, err
}

func (s *Server) ssoAdminOnce(r *http.Request, id ssoIdentity) (store.Admin, error) {
	ctx := r.Context()
	if !s.oidc.emailAllowed(id) {
		return store.Admin{}, refuse(http.StatusForbidden, "sign-in refused",
			"your email address is not verified or not in a domain allowed to administer ccproxy")
	}
	role := s.oidc.role(id.Groups)
	if role == "" {
		groups := append([]string(nil), id.Groups...)
		sort.Strings(groups)
		return store.Admin{}, refuse(http.StatusForbidden, "no ccproxy role",
			boundedField(fmt.Sprintf("none of your groups (%s) is mapped to a ccproxy role", strings.Join(groups, ", "))))
	}
	ip := s.clientAddr(r)
	var out store.Admin
	err := s.st.WithTx(ctx, func(q *store.Queries) error {
		a, err := q.Admins().GetByOIDC(ctx, id.Issuer, id.Subject)
		if errors.Is(err, store.ErrNotFound) {
			a, err = q.Admins().CreateAdmin(ctx, store.NewAdmin{Username: id.Username, Role: role,
				OIDCIssuer: id.Issuer, OIDCSubject: id.Subject})
			if errors.Is(err, store.ErrConflict) {
				return refuse(http.StatusConflict, "username taken",
					"an admin named "+id.Username+" exists and is not linked to this identity; an owner must rename or remove it first")
			}
			if err != nil {
				return err
			}
			out = a
			return auditSSO(ctx, q, a, "admin.create", nil, toAdmin(a), ip)
		}
		if err != nil {
			return err
		}
		if a.Disabled {
			return refuse(http.StatusForbidden, "account disabled", "your ccproxy admin account is disabled")
		}
		out = a
		if a.Role == role {
			return nil
		}
		before := toAdmin(a)
		if err := q.Admins().SetRole(ctx, a.ID, role, nil); err != nil {
			return err
		}
		out.Role, out.TeamID = role, nil
		return auditSSO(ctx, q, out, "admin.role_change", before, toAdmin(out), ip)
	})
	return out, err
}

// auditSSO records a change the provider's groups made: the actor is the
// single sign-on itself.
func auditSSO(ctx context.Context, q *store.Queries, a store.Admin, action string, before, after any, ip *netip.Addr) error {
	e := store.AuditEntry{Actor: "sso", Action: action, TargetType: "admin", TargetID: a.ID.String(), IP: ip}
	var err error
	if before != nil {
		if e.Before, err = json.Marshal(before); err != nil {
			return err
		}
	}
	if e.After, err = json.Marshal(after); err != nil {
		return err
	}
	_, err = q.Audit().Append(ctx, e)
	return err
}
