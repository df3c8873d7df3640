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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Cookie and header names.
const (
	// SessionCookie carries the session token.
	SessionCookie = "ccproxy_session"
	// CSRFCookie carries the double-submit CSRF token.
	CSRFCookie = "ccproxy_csrf"
	// CSRFHeader must echo CSRFCookie on cookie-authenticated writes.
	CSRFHeader = "X-CSRF-Token"
)

// argon2id parameters: the OWASP password storage recommendation (19 MiB,
// two passes, one lane), https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html
const (
	argonMemory  = 19 * 1024
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
	// maxPasswordLen bounds the work an unauthenticated login can cause.
	maxPasswordLen = 1024
	minPasswordLen = 12
)

// hashPassword returns the PHC string of an argon2id hash of password.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("admin: read salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verifyPassword reports whether password matches the PHC-encoded argon2id
// hash, comparing in constant time. Hashes with other parameters verify
// with their own parameters, so they can be raised later.
func verifyPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return false, errors.New("admin: unsupported password hash format")
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<21 || t > 64 {
		return false, errors.New("admin: malformed argon2id parameters")
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, errors.New("admin: malformed argon2id salt")
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return false, errors.New("admin: malformed argon2id hash")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// EnsureFirstAdmin creates the admin username with password when the
// database has no admin yet (the CCPROXY_ADMIN_USERNAME /
// CCPROXY_ADMIN_PASSWORD bootstrap). It reports whether it created one; an
// existing admin, of any name, leaves everything unchanged. Replicas starting
// at once with the same configured username race harmlessly: the loser sees
// a conflict and reports false.
func EnsureFirstAdmin(ctx context.Context, st *store.Store, username, password string) (created bool, err error) {
	if errs := validateCredentials(username, password); len(errs) > 0 {
		return false, fmt.Errorf("admin: first admin: %s %s", errs[0].Field, errs[0].Message)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return false, err
	}
	err = st.WithTx(ctx, func(q *store.Queries) error {
		n, err := q.Admins().Count(ctx)
		if err != nil || n > 0 {
			return err
		}
		a, err := q.Admins().Create(ctx, username, hash)
		if err != nil {
			return err
		}
		after, _ := json.Marshal(map[string]string{"id": a.ID.String(), "username": a.Username})
		_, err = q.Audit().Append(ctx, store.AuditEntry{
			Actor: "system", Action: "admin.create", TargetType: "admin", TargetID: a.ID.String(), After: after,
		})
		created = err == nil
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		// Another replica won the race.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("admin: first admin: %w", err)
	}
	return created, nil
}

func validateCredentials(username, password string) []fieldError {
	var errs []fieldError
	if username == "" || len(username) > 100 || strings.ContainsFunc(username, isControl) || strings.TrimSpace(username) != username {
		errs = append(errs, fieldError{Field: "username", Message: "must be 1 to 100 characters without control characters or surrounding spaces"})
	}
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		errs = append(errs, fieldError{Field: "password", Message: "must be " + strconv.Itoa(minPasswordLen) + " to " + strconv.Itoa(maxPasswordLen) + " bytes"})
	}
	return errs
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// actor is the authenticated admin of a request.
type actor struct {
	adminID   uuid.UUID
	username  string
	sessionID []byte
	ip        *netip.Addr
}

type actorKey struct{}

func actorFrom(ctx context.Context) actor {
	a, _ := ctx.Value(actorKey{}).(actor)
	return a
}

func clientIP(r *http.Request) *netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	ip = ip.Unmap()
	return &ip
}

// authenticate finds the session of r, answering 401/403 itself on
// failure.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (actor, bool) {
	var token string
	fromCookie := false
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			s.unauthorized(w, r, "use Authorization: Bearer <token>")
			return actor{}, false
		}
		token = strings.TrimSpace(rest)
	} else if c, err := r.Cookie(SessionCookie); err == nil {
		token, fromCookie = c.Value, true
	}
	if token == "" {
		s.unauthorized(w, r, "log in first")
		return actor{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != store.SessionIDLen {
		s.unauthorized(w, r, "invalid or expired session")
		return actor{}, false
	}
	id := sessionID(raw)
	_, a, err := s.st.Sessions().Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.unauthorized(w, r, "invalid or expired session")
		return actor{}, false
	}
	if err != nil {
		s.storeError(w, r, err)
		return actor{}, false
	}
	if fromCookie && !safeMethod(r.Method) {
		c, err := r.Cookie(CSRFCookie)
		h := r.Header.Get(CSRFHeader)
		if err != nil || h == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(h)) != 1 {
			s.problem(w, r, http.StatusForbidden, "CSRF token missing or wrong",
				"cookie-authenticated writes must send the "+CSRFCookie+" cookie's value in "+CSRFHeader)
			return actor{}, false
		}
	}
	return actor{adminID: a.ID, username: a.Username, sessionID: id, ip: clientIP(r)}, true
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="ccproxy-admin"`)
	s.problem(w, r, http.StatusUnauthorized, "unauthorized", detail)
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	CSRFToken string    `json:"csrf_token"`
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	if req.Username == "" || len(req.Username) > 100 {
		errs = append(errs, fieldError{Field: "username", Message: "must be 1 to 100 characters"})
	}
	if req.Password == "" || len(req.Password) > maxPasswordLen {
		errs = append(errs, fieldError{Field: "password", Message: "must be 1 to " + strconv.Itoa(maxPasswordLen) + " bytes"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	ip := clientIP(r)
	tkey := strings.ToLower(req.Username) + "\x00"
	if ip != nil {
		tkey += ip.String()
	}
	now := s.now()
	if wait := s.throttle.blocked(tkey, now); wait > 0 {
		s.logins.WithLabelValues("throttled").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
		s.problem(w, r, http.StatusTooManyRequests, "too many failed logins", "try again later")
		return
	}
	a, err := s.st.Admins().GetByUsername(r.Context(), req.Username)
	hash := a.PasswordHash
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.storeError(w, r, err)
			return
		}
		hash = s.dummyHash
	}
	ok, verr := verifyPassword(hash, req.Password)
	if verr != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: stored password hash unreadable", slog.String("admin_id", a.ID.String()))
	}
	if err != nil || !ok || a.Disabled {
		s.throttle.fail(tkey, now)
		s.logins.WithLabelValues("bad_credentials").Inc()
		// The username is not logged: people type passwords into it.
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: failed login")
		s.unauthorized(w, r, "wrong username or password")
		return
	}
	s.throttle.reset(tkey)

	token := make([]byte, store.SessionIDLen)
	csrf := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		s.storeError(w, r, err)
		return
	}
	if _, err := rand.Read(csrf); err != nil {
		s.storeError(w, r, err)
		return
	}
	expires := now.Add(s.ttl).UTC().Truncate(time.Microsecond)
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if _, err := q.Sessions().Create(r.Context(), store.NewAdminSession{
			ID: sessionID(token), AdminID: a.ID, ExpiresAt: expires, UserAgent: ua, IP: ip,
		}); err != nil {
			return err
		}
		if err := q.Admins().TouchLogin(r.Context(), a.ID); err != nil {
			return err
		}
		_, err := q.Audit().Append(r.Context(), store.AuditEntry{
			AdminID: &a.ID, Actor: a.Username, Action: "admin.login", TargetType: "admin", TargetID: a.ID.String(), IP: ip,
		})
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.logins.WithLabelValues("ok").Inc()
	tok := base64.RawURLEncoding.EncodeToString(token)
	csrfTok := base64.RawURLEncoding.EncodeToString(csrf)
	secure := r.TLS != nil
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", Expires: expires,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: csrfTok, Path: "/", Expires: expires,
		Secure: secure, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, loginResponse{Token: tok, ExpiresAt: expires, CSRFToken: csrfTok})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	a := actorFrom(r.Context())
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if err := q.Sessions().Revoke(r.Context(), a.sessionID); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "admin.logout", "admin", a.adminID.String(), nil, nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	secure := r.TLS != nil
	for _, name := range []string{SessionCookie, CSRFCookie} {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: name == SessionCookie, Secure: secure, SameSite: http.SameSiteStrictMode})
	}
	w.WriteHeader(http.StatusNoContent)
}

// sessionID is the stored form of a session token.
func sessionID(token []byte) []byte {
	sum := sha256.Sum256(token)
	return sum[:]
}

// Login throttling.
const (
	maxLoginFailures   = 5
	loginWindow        = 15 * time.Minute
	maxThrottleEntries = 10000
)

// throttle counts failed logins per key in fixed windows. It holds at most
// max entries: when full it drops expired entries and, if still full, the
// entry closest to expiry, so memory stays bounded under a flood of
// distinct usernames at the cost of forgetting the stalest counter.
type throttle struct {
	mu      sync.Mutex
	max     int
	entries map[string]*throttleEntry
}

type throttleEntry struct {
	failures int
	until    time.Time
}

func newThrottle(max int) *throttle {
	return &throttle{max: max, entries: map[string]*throttleEntry{}}
}

// blocked returns how long key must still wait, or 0.
func (t *throttle) blocked(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !now.Before(e.until) {
		return 0
	}
	if e.failures < maxLoginFailures {
		return 0
	}
	return e.until.Sub(now)
}

func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if ok && !now.Before(e.until) {
		ok = false
	}
	if !ok {
		if len(t.entries) >= t.max {
			t.evict(now)
		}
		e = &throttleEntry{until: now.Add(loginWindow)}
		t.entries[key] = e
	}
	e.failures++
}

func (t *throttle) reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, key)
}

func (t *throttle) evict(now time.Time) {
	var oldest string
	var oldestUntil time.Time
	for k, e := range t.entries {
		if !now.Before(e.until) {
			delete(t.entries, k)
			continue
		}
		if oldest == "" || e.until.Before(oldestUntil) {
			oldest, oldestUntil = k, e.until
		}
	}
	if len(t.entries) >= t.max && oldest != "" {
		delete(t.entries, oldest)
	}
}
