// Package admin owns the admin service's REST API (/api/v1) and the
// authentication of administrators: argon2id password hashes, server-side
// sessions, CSRF protection for cookie-authenticated writes, login
// throttling, and an audit entry for every change, written in the same
// transaction as the change itself. The OpenAPI 3 document of the API is
// embedded and served at /api/v1/openapi.json.
//
// Authentication. POST /api/v1/auth/login returns a session token (32 random
// bytes, base64url) and sets it as the HttpOnly, SameSite=Strict cookie
// ccproxy_session (Secure as Options.CookieSecure decides: by default when
// the request came over TLS or from a trusted proxy with X-Forwarded-Proto
// https). Only the SHA-256 of the token is stored, so a database dump yields
// no usable session. Every other endpoint takes the token as
// "Authorization: Bearer <token>" or the cookie. A session ends at its
// absolute lifetime, after Options.SessionIdleTimeout without use, at
// logout, or when its admin is disabled, changes password or has every
// session revoked.
//
// CSRF. Login also sets the readable cookie ccproxy_csrf, whose value is
// derived from the session token (a labelled hash of it), and a
// cookie-authenticated request with an unsafe method must echo it in the
// X-CSRF-Token header. A cross-site page can neither read that cookie nor
// set the header, and SameSite=Strict already keeps browsers from sending
// the session cookie cross-site; the token covers older browsers and
// same-site subdomains, which can plant cookies but cannot derive another
// session's token. Bearer-authenticated requests need no token: browsers
// never attach an Authorization header on their own.
//
// Throttling. Every login attempt is counted in Postgres before its password
// is verified, per lower-cased username and per client address (an IPv6
// client's /64), atomically across replicas; past a limit each attempt
// starts a wait that doubles up to a cap (429 with Retry-After), and the
// count is forgotten an hour after the last attempt. The client address is
// the TCP peer, or, when the peer is in Options.TrustedProxies, the
// right-most X-Forwarded-For hop that is not a trusted proxy. At most
// Options.MaxConcurrentHashes argon2id hashes run at once; a login beyond
// that gets 429 at once. Failed logins are audited with the username as
// typed and the client address.
//
// Roles. Every admin has a role (owner, admin, viewer; team_admin is
// reserved until ccproxy has teams) and every authenticated route the least
// role it needs, in one table (roles.go) that wrap consults after
// authentication; audit entries record the actor's role.
//
// Single sign-on. With Options.OIDC, admins may also sign in through an
// OpenID Connect provider: authorization code flow with PKCE, state bound
// to the browser and used once, nonce, ID token verification by go-oidc,
// groups mapped to a role at every sign-in (oidc.go).
package admin

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
)

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3 document of the API (a copy).
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }

// DefaultSessionTTL is how long an admin session lasts when
// Options.SessionTTL is zero.
const DefaultSessionTTL = 12 * time.Hour

// DefaultRotationGrace is how long a rotated key keeps working when the
// rotate request names no grace period.
const DefaultRotationGrace = 24 * time.Hour

// maxBodyBytes caps every request body; no valid request comes close.
const maxBodyBytes = 64 << 10

// Invalidation names what a change made stale in the data path's key
// caches.
type Invalidation struct {
	// UserID is the user whose keys (or whose own settings) changed.
	UserID uuid.UUID
	// KeyIDs and KeyHashes are the affected access keys (the same keys, in
	// the same order).
	KeyIDs    []uuid.UUID
	KeyHashes [][]byte
}

// Invalidator is told, after the change has committed, about every change
// that affects key lookups: a key issued, rotated or revoked, a user changed
// or deleted, a Bedrock credential put or removed. A Redis pub/sub publisher
// plugs in here. The change is already committed when it is called; an
// error makes a change that narrows access answer 503 (repeat it), and is
// only logged for one that widens access (a key issued or rotated).
type Invalidator interface {
	Invalidate(ctx context.Context, inv Invalidation) error
}

// Options configures a Server.
type Options struct {
	// Store is the database; required.
	Store *store.Store
	// Sealer encrypts Bedrock API keys; required.
	Sealer secrets.Sealer
	// Hasher computes access key hashes; required.
	Hasher *keys.Hasher
	// Logger receives request logs and errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the API's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// SessionTTL is the lifetime of admin sessions (default
	// DefaultSessionTTL).
	SessionTTL time.Duration
	// Invalidator, when set, is told about changes to keys and users.
	Invalidator Invalidator
	// Location is the billing time zone (default UTC): budgets reset at
	// the start of its calendar months, and the dashboard reports in it.
	Location *time.Location
	// GatewayURL is the gateway's address as developers reach it, for the
	// ANTHROPIC_BASE_URL line the dashboard shows with a new key; empty
	// when unknown.
	GatewayURL string
	// SeatPrices are the monthly prices of the seat types for seat
	// economics (CCPROXY_SEAT_PRICES); missing types take
	// DefaultSeatPrices.
	SeatPrices map[store.SeatType]decimal.Decimal
	// UI, when set, serves every path outside /api/ (the dashboard).
	UI http.Handler
	// SessionIdleTimeout ends a session not used for this long, within its
	// lifetime (default DefaultSessionIdleTimeout).
	SessionIdleTimeout time.Duration
	// TrustedProxies are the networks of the proxies in front of the
	// service (load balancers, ingress) whose X-Forwarded-For and
	// X-Forwarded-Proto are believed; empty believes no one.
	TrustedProxies []netip.Prefix
	// CookieSecure decides the cookies' Secure attribute (default
	// CookieSecureAuto).
	CookieSecure CookieSecure
	// MaxConcurrentHashes caps the argon2id password hashes computed at
	// once (logins, password changes); more get 429. Default 2×GOMAXPROCS.
	MaxConcurrentHashes int
	// LoginThrottle tunes login throttling; zero fields take the defaults:
	// per username 5 attempts, per address 20, then waits of 1 minute
	// doubling to 15, forgotten an hour after the last attempt.
	LoginThrottle LoginThrottle
	// OIDC, when set, enables single sign-on through an OpenID Connect
	// provider beside password logins.
	OIDC *OIDCConfig
	// AllowPrivateWebhooks accepts webhook URLs whose host is a loopback,
	// private or link-local address (the dispatcher must allow them too).
	AllowPrivateWebhooks bool
	// OnNotify, when set, is called after a change queued a notification
	// event (it wakes the local webhook dispatcher).
	OnNotify func()

	// hashHook runs inside every password hash with its slot held (tests).
	hashHook func()
}

// DefaultSessionIdleTimeout is how long an unused admin session lasts when
// Options.SessionIdleTimeout is zero.
const DefaultSessionIdleTimeout = 30 * time.Minute

// Server serves the admin REST API. It is safe for concurrent use.
type Server struct {
	st      *store.Store
	sealer  secrets.Sealer
	hasher  *keys.Hasher
	log     *slog.Logger
	now     func() time.Time
	ttl     time.Duration
	inv     Invalidator
	loc     *time.Location
	gateway string
	// seatPrices are Options.SeatPrices over DefaultSeatPrices.
	seatPrices map[store.SeatType]decimal.Decimal
	ui         http.Handler
	throttle   LoginThrottle
	hashes     *hashLimiter
	// idleTimeout ends unused sessions.
	idleTimeout    time.Duration
	trustedProxies []netip.Prefix
	cookieSecure   CookieSecure
	// dummyHash is verified against when a login names an unknown admin, so
	// the response time does not reveal which usernames exist.
	dummyHash string
	// allowPrivateWebhooks and onNotify: Options.AllowPrivateWebhooks and
	// Options.OnNotify.
	allowPrivateWebhooks bool
	onNotify             func()
	requests             *prometheus.CounterVec
	logins               *prometheus.CounterVec
	mux                  *http.ServeMux
	// rules is the least role of every authenticated route (accessRules).
	rules map[string]minRole
	// patterns lists every registered route pattern, for tests that check
	// each has its rule.
	patterns []routePattern
	// oidc is single sign-on; nil when not configured.
	oidc *oidcClient
}

// routePattern is a registered route and whether it needs a session.
type routePattern struct {
	pattern string
	authed  bool
}

// New returns a Server for opts.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Sealer == nil || opts.Hasher == nil {
		return nil, errors.New("admin: Store, Sealer and Hasher are required")
	}
	s := &Server{
		st:         opts.Store,
		sealer:     opts.Sealer,
		hasher:     opts.Hasher,
		log:        opts.Logger,
		now:        opts.Now,
		ttl:        opts.SessionTTL,
		inv:        opts.Invalidator,
		loc:        opts.Location,
		gateway:    opts.GatewayURL,
		seatPrices: seatPrices(opts.SeatPrices),
		ui:         opts.UI,

		allowPrivateWebhooks: opts.AllowPrivateWebhooks,
		onNotify:             opts.OnNotify,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_admin_http_requests_total",
			Help: "Admin API requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_admin_logins_total",
			Help: "Admin login attempts by result (ok, bad_credentials, throttled, busy).",
		}, []string{"result"}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	if s.loc == nil {
		s.loc = time.UTC
	}
	s.idleTimeout = opts.SessionIdleTimeout
	if s.idleTimeout <= 0 {
		s.idleTimeout = DefaultSessionIdleTimeout
	}
	s.trustedProxies = opts.TrustedProxies
	s.cookieSecure = opts.CookieSecure
	if s.cookieSecure == "" {
		s.cookieSecure = CookieSecureAuto
	}
	if _, err := ParseCookieSecure(string(s.cookieSecure)); err != nil {
		return nil, err
	}
	def := defaultLoginThrottle()
	s.throttle = LoginThrottle{
		Username: opts.LoginThrottle.Username.withDefaults(def.Username),
		Address:  opts.LoginThrottle.Address.withDefaults(def.Address),
	}
	s.hashes = newHashLimiter(opts.MaxConcurrentHashes, opts.hashHook)
	h, err := hashPassword(uuid.NewString())
	if err != nil {
		return nil, err
	}
	s.dummyHash = h
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.requests, s.logins} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("admin: register metrics: %w", err)
			}
		}
	}
	if opts.OIDC != nil {
		if s.oidc, err = newOIDCClient(*opts.OIDC, s.log); err != nil {
			return nil, err
		}
	}
	s.rules = accessRules()
	s.routes()
	return s, nil
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.mux }

// routes builds the API's route table. Every route but the OpenAPI document,
// login and the single sign-on flow needs an authenticated admin whose role
// reaches the route's rule in accessRules. The blocks follow the resources,
// and each resource's handlers live in the file of its name (users.go, teams.go,
// keys.go, bedrock.go, ratelimits.go, models.go, prices.go, usage.go, export.go,
// audit.go, webhooks.go, sessions.go for sessions and prompt-cache economics;
// login and logout in auth.go).
func (s *Server) routes() {
	m := http.NewServeMux()
	s.mux = m
	open := func(pattern string, h http.HandlerFunc) {
		s.patterns = append(s.patterns, routePattern{pattern, false})
		m.Handle(pattern, s.wrap(h, false))
	}
	authed := func(pattern string, h http.HandlerFunc) {
		s.patterns = append(s.patterns, routePattern{pattern, true})
		m.Handle(pattern, s.wrap(h, true))
	}

	open("GET /api/v1/openapi.json", s.handleOpenAPI)

	open("POST /api/v1/auth/login", s.handleLogin)
	authed("POST /api/v1/auth/logout", s.handleLogout)
	authed("POST /api/v1/auth/password", s.handleChangePassword)
	open("GET /api/v1/auth/sso", s.handleSSOInfo)
	open("GET /api/v1/auth/oidc/login", s.handleOIDCLogin)
	open("GET /api/v1/auth/oidc/callback", s.handleOIDCCallback)
	authed("GET /api/v1/settings/sso", s.handleSSOSettings)

	authed("GET /api/v1/admins", s.handleListAdmins)
	authed("POST /api/v1/admins", s.handleCreateAdmin)
	authed("GET /api/v1/admins/{id}", s.handleGetAdmin)
	authed("PATCH /api/v1/admins/{id}", s.handlePatchAdmin)
	authed("PUT /api/v1/admins/{id}/password", s.handleResetAdminPassword)
	authed("DELETE /api/v1/admins/{id}/sessions", s.handleRevokeAdminSessions)

	authed("POST /api/v1/users", s.handleCreateUser)
	authed("GET /api/v1/users", s.handleListUsers)
	authed("GET /api/v1/users/{id}", s.handleGetUser)
	authed("PATCH /api/v1/users/{id}", s.handlePatchUser)
	authed("DELETE /api/v1/users/{id}", s.handleDeleteUser)

	authed("POST /api/v1/teams", s.handleCreateTeam)
	authed("GET /api/v1/teams", s.handleListTeams)
	authed("GET /api/v1/teams/{id}", s.handleGetTeam)
	authed("PATCH /api/v1/teams/{id}", s.handlePatchTeam)
	authed("DELETE /api/v1/teams/{id}", s.handleDeleteTeam)

	authed("POST /api/v1/users/{id}/keys", s.handleIssueKey)
	authed("GET /api/v1/users/{id}/keys", s.handleListKeys)
	authed("POST /api/v1/keys/{id}/rotate", s.handleRotateKey)
	authed("DELETE /api/v1/keys/{id}", s.handleRevokeKey)

	authed("PUT /api/v1/users/{id}/bedrock", s.handlePutUserBedrock)
	authed("DELETE /api/v1/users/{id}/bedrock", s.handleDeleteUserBedrock)
	authed("PUT /api/v1/keys/{id}/bedrock", s.handlePutKeyBedrock)
	authed("DELETE /api/v1/keys/{id}/bedrock", s.handleDeleteKeyBedrock)

	authed("GET /api/v1/users/{id}/rate-limits", s.handleGetRateLimits(store.RateLimitUser))
	authed("PUT /api/v1/users/{id}/rate-limits", s.handlePutRateLimits(store.RateLimitUser))
	authed("DELETE /api/v1/users/{id}/rate-limits", s.handleDeleteRateLimits(store.RateLimitUser))
	authed("GET /api/v1/budgets", s.handleListBudgets)
	authed("POST /api/v1/budgets", s.handleCreateBudget)
	authed("GET /api/v1/budgets/{id}", s.handleGetBudget)
	authed("PATCH /api/v1/budgets/{id}", s.handleUpdateBudget)
	authed("DELETE /api/v1/budgets/{id}", s.handleDeleteBudget)
	authed("GET /api/v1/keys/{id}/rate-limits", s.handleGetRateLimits(store.RateLimitKey))
	authed("PUT /api/v1/keys/{id}/rate-limits", s.handlePutRateLimits(store.RateLimitKey))
	authed("DELETE /api/v1/keys/{id}/rate-limits", s.handleDeleteRateLimits(store.RateLimitKey))
	authed("GET /api/v1/teams/{id}/rate-limits", s.handleGetRateLimits(store.RateLimitTeam))
	authed("PUT /api/v1/teams/{id}/rate-limits", s.handlePutRateLimits(store.RateLimitTeam))
	authed("DELETE /api/v1/teams/{id}/rate-limits", s.handleDeleteRateLimits(store.RateLimitTeam))

	authed("POST /api/v1/models", s.handleCreateModel)
	authed("GET /api/v1/models", s.handleListModels)
	authed("GET /api/v1/models/{id}", s.handleGetModel)
	authed("PATCH /api/v1/models/{id}", s.handlePatchModel)
	authed("DELETE /api/v1/models/{id}", s.handleDeleteModel)

	authed("POST /api/v1/prices", s.handleCreatePrice)
	authed("GET /api/v1/prices", s.handleListPrices)
	authed("GET /api/v1/prices/{id}", s.handleGetPrice)
	authed("PATCH /api/v1/prices/{id}", s.handlePatchPrice)
	authed("DELETE /api/v1/prices/{id}", s.handleDeletePrice)

	authed("GET /api/v1/usage", s.handleUsage)
	authed("GET /api/v1/usage/requests", s.handleUsageRequests)

	authed("GET /api/v1/users/{id}/sessions/{session_id}", s.handleGetSession)
	authed("GET /api/v1/cache/economics", s.handleCacheEconomics)
	authed("GET /api/v1/cache/breaks", s.handleCacheBreaks)
	authed("GET /api/v1/usage/export/requests", s.handleExportRequests)
	authed("GET /api/v1/usage/export/daily", s.handleExportDaily)

	authed("GET /api/v1/audit", s.handleListAudit)

	authed("POST /api/v1/webhooks", s.handleCreateWebhook)
	authed("GET /api/v1/webhooks", s.handleListWebhooks)
	authed("GET /api/v1/webhooks/{id}", s.handleGetWebhook)
	authed("PATCH /api/v1/webhooks/{id}", s.handlePatchWebhook)
	authed("DELETE /api/v1/webhooks/{id}", s.handleDeleteWebhook)
	authed("POST /api/v1/webhooks/{id}/test", s.handleTestWebhook)
	authed("GET /api/v1/webhooks/{id}/deliveries", s.handleListDeliveries)
	authed("GET /api/v1/webhooks/{id}/deliveries/{delivery_id}", s.handleGetDelivery)

	s.dashboardRoutes(authed)
	s.headroomRoutes(authed)

	// Every other path or method under /api/ gets a problem+json 404, not
	// ServeMux's plain-text 404 or 405; without a UI, every other path.
	notFound := func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, http.StatusNotFound, "no such endpoint", "")
	}
	if s.ui == nil {
		open("/", notFound)
		return
	}
	open("/api/", notFound)
	m.Handle("/", s.ui)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openAPIDocument)
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// write deadlines of streamed exports).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// wrap adds the body limit, logging, metrics, the check of query and path
// parameters and, when auth is set, authentication, CSRF checks and the
// route's role check (accessRules) around h.
func (s *Server) wrap(h http.HandlerFunc, auth bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		defer func() {
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			method := knownMethod(r.Method)
			s.requests.WithLabelValues(method, route, fmt.Sprint(sw.code)).Inc()
			// The path holds only ids; never log headers or bodies. Both the
			// method and the path are the client's: bounded before they
			// become a label or a log field.
			s.log.LogAttrs(r.Context(), slog.LevelInfo, "admin request",
				slog.String("method", method), slog.String("route", route),
				slog.String("path", boundedField(r.URL.Path)), slog.Int("status", sw.code),
				slog.Duration("duration", time.Since(start)))
		}()
		if auth {
			a, ok := s.authenticate(w, r)
			if !ok || !s.authorize(w, r, a) {
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), actorKey{}, a))
		}
		// The catch-all 404s ("/", or "/api/" beside the dashboard) read no
		// parameters.
		if r.Pattern != "/" && r.Pattern != "/api/" {
			if errs := paramErrors(r); len(errs) > 0 {
				s.problem(w, r, http.StatusBadRequest, "invalid parameter",
					"query and path parameters must be well-formed URL encoding of valid UTF-8 without NUL characters", errs...)
				return
			}
		}
		h(w, r)
	})
}

// invalidate tells the Invalidator about inv, after commit, and logs a
// failure. It is for changes that only widen access (a key issued, a
// rotation whose new secret must reach the caller once): a missed
// invalidation there costs at most a negative cache entry's lifetime.
func (s *Server) invalidate(ctx context.Context, inv Invalidation) {
	_ = s.tryInvalidate(ctx, inv)
}

// invalidateOrUnavailable tells the Invalidator about inv, after commit, for
// a change that narrows access (revocation, user disabled or deleted,
// credential changed). When the gateways could not be told, it answers 503
// and returns false: the change is committed, but acknowledging it would
// promise that no gateway serves the old state any more, which a gateway
// still holding a cached copy may do until its cache TTL. The caller
// repeats the (idempotent) request until it succeeds.
func (s *Server) invalidateOrUnavailable(w http.ResponseWriter, r *http.Request, inv Invalidation) bool {
	if err := s.tryInvalidate(r.Context(), inv); err != nil {
		w.Header().Set("Retry-After", "1")
		s.problem(w, r, http.StatusServiceUnavailable, "change not yet in effect",
			"the change is committed, but the gateways' key caches could not be told (Redis unreachable): "+
				"it may not be in effect yet; repeat the request until it succeeds")
		return false
	}
	return true
}

func (s *Server) tryInvalidate(ctx context.Context, inv Invalidation) error {
	if s.inv == nil {
		return nil
	}
	err := s.inv.Invalidate(context.WithoutCancel(ctx), inv)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "admin: cache invalidation failed",
			slog.String("user_id", inv.UserID.String()), slog.Int("keys", len(inv.KeyIDs)),
			slog.String("error", err.Error()))
	}
	return err
}

func keysInvalidation(userID uuid.UUID, ks []store.AccessKey) Invalidation {
	inv := Invalidation{UserID: userID}
	for _, k := range ks {
		inv.KeyIDs = append(inv.KeyIDs, k.ID)
		inv.KeyHashes = append(inv.KeyHashes, k.Hash)
	}
	return inv
}

// knownMethod is the request method as a metric label: one of the methods
// HTTP defines, or "other", so that a client cannot create series.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// maxLogField bounds a client-chosen string written to the log.
const maxLogField = 256

// boundedField cuts a client-chosen string for the log, keeping valid UTF-8.
func boundedField(v string) string {
	if len(v) <= maxLogField {
		return v
	}
	return strings.ToValidUTF8(v[:maxLogField], "") + "…"
}
