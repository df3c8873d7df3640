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
	"net/http"
	"net/netip"
	"strconv"
	"strings"
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
		// The first admin owns the installation: it alone can create the
		// other admins.
		a, err := q.Admins().CreateAdmin(ctx, store.NewAdmin{Username: username, PasswordHash: hash, Role: store.RoleOwner})
		if err != nil {
			return err
		}
		after, _ := json.Marshal(map[string]string{"id": a.ID.String(), "username": a.Username, "role": string(a.Role)})
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
	role      store.AdminRole
	teamID    *uuid.UUID
	sessionID []byte
	ip        *netip.Addr
}

type actorKey struct{}

func actorFrom(ctx context.Context) actor {
	a, _ := ctx.Value(actorKey{}).(actor)
	return a
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
	sess, a, err := s.st.Sessions().Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.unauthorized(w, r, "invalid or expired session")
		return actor{}, false
	}
	if err != nil {
		s.storeError(w, r, err)
		return actor{}, false
	}
	now := s.now()
	if idle := now.Sub(sess.LastSeenAt); idle >= s.idleTimeout {
		s.unauthorized(w, r, "the session ended after "+s.idleTimeout.String()+" without use; log in again")
		return actor{}, false
	}
	if fromCookie && !safeMethod(r.Method) {
		// The token must match the cookie (double submit) and be the one
		// derived from this session's token, so a token read from, or
		// planted for, another session is refused.
		c, err := r.Cookie(CSRFCookie)
		h := r.Header.Get(CSRFHeader)
		if err != nil || h == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(h)) != 1 ||
			subtle.ConstantTimeCompare([]byte(h), []byte(csrfToken(raw))) != 1 {
			s.problem(w, r, http.StatusForbidden, "CSRF token missing or wrong",
				"cookie-authenticated writes must send the "+CSRFCookie+" cookie's value in "+CSRFHeader)
			return actor{}, false
		}
	}
	if now.Sub(sess.LastSeenAt) >= sessionTouchInterval {
		// At most one write per session and interval; the idle timeout is
		// therefore exact to within the interval.
		if err := s.st.Sessions().TouchAt(r.Context(), id, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: could not record session activity", slog.String("error", err.Error()))
		}
	}
	return actor{adminID: a.ID, username: a.Username, role: a.Role, teamID: a.TeamID, sessionID: id, ip: s.clientAddr(r)}, true
}

// sessionTouchInterval is how stale a session's last_seen_at may get before
// a request refreshes it.
const sessionTouchInterval = time.Minute

// csrfToken is the CSRF token of the session whose token is token: a hash
// of it under its own label, so it is bound to the session, and knowing it
// (it is readable by the page's scripts) reveals nothing of the session
// token, which only the HttpOnly cookie holds.
func csrfToken(token []byte) string {
	h := sha256.New()
	h.Write([]byte("ccproxy admin csrf\x00"))
	h.Write(token)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
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
	ip := s.clientAddr(r)
	keys := throttleKeys(req.Username, ip)
	now := s.now()
	wait, err := s.countAttempt(r.Context(), keys, now)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if wait > 0 {
		s.logins.WithLabelValues("throttled").Inc()
		retryAfter(w, wait)
		s.problem(w, r, http.StatusTooManyRequests, "too many failed logins", "try again in "+w.Header().Get("Retry-After")+" seconds")
		return
	}
	a, err := s.st.Admins().GetByUsername(r.Context(), req.Username)
	hash := a.PasswordHash
	if err == nil && hash == "" {
		// A single sign-on admin has no password: verify against the dummy
		// hash (same timing) and refuse.
		hash, err = s.dummyHash, store.ErrNotFound
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.storeError(w, r, err)
			return
		}
		hash = s.dummyHash
	}
	ok, verr := s.verifyPassword(hash, req.Password)
	if errors.Is(verr, errHashBusy) {
		s.logins.WithLabelValues("busy").Inc()
		s.storeError(w, r, verr)
		return
	}
	if verr != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: stored password hash unreadable", slog.String("admin_id", a.ID.String()))
	}
	if err != nil || !ok || a.Disabled {
		s.logins.WithLabelValues("bad_credentials").Inc()
		s.loginFailed(r, req.Username, a, err == nil && ok, ip)
		s.unauthorized(w, r, "wrong username or password")
		return
	}
	if err := s.loginSucceeded(r.Context(), keys, now); err != nil {
		// The login stands; the attempt stays counted until forgotten.
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: could not reset the login throttle", slog.String("error", err.Error()))
	}

	if lr, ok := s.startSession(w, r, a, now, "admin.login", nil); ok {
		s.logins.WithLabelValues("ok").Inc()
		writeJSON(w, http.StatusOK, lr)
	}
}

// startSession creates a session for admin a, audits the login as action
// (with after as its snapshot), and sets the session and CSRF cookies. On
// failure it has answered the request and returns false; on success the
// caller writes the response.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, a store.Admin, now time.Time, action string, after any) (loginResponse, bool) {
	ip := s.clientAddr(r)
	token := make([]byte, store.SessionIDLen)
	if _, err := rand.Read(token); err != nil {
		s.storeError(w, r, err)
		return loginResponse{}, false
	}
	expires := now.Add(s.ttl).UTC().Truncate(time.Microsecond)
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	var snapshot json.RawMessage
	if after != nil {
		var err error
		if snapshot, err = json.Marshal(after); err != nil {
			s.storeError(w, r, err)
			return loginResponse{}, false
		}
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		if _, err := q.Sessions().Create(r.Context(), store.NewAdminSession{
			ID: sessionID(token), AdminID: a.ID, ExpiresAt: expires, LastSeenAt: now, UserAgent: ua, IP: ip,
		}); err != nil {
			return err
		}
		if err := q.Admins().TouchLogin(r.Context(), a.ID); err != nil {
			return err
		}
		_, err := q.Audit().Append(r.Context(), store.AuditEntry{
			AdminID: &a.ID, Actor: a.Username, ActorRole: string(a.Role), Action: action, TargetType: "admin",
			TargetID: a.ID.String(), After: snapshot, IP: ip,
		})
		return err
	})
	if err != nil {
		s.storeError(w, r, err)
		return loginResponse{}, false
	}
	tok := base64.RawURLEncoding.EncodeToString(token)
	csrfTok := csrfToken(token)
	secure := s.secureCookies(r)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", Expires: expires,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: csrfTok, Path: "/", Expires: expires,
		Secure: secure, SameSite: http.SameSiteStrictMode})
	return loginResponse{Token: tok, ExpiresAt: expires, CSRFToken: csrfTok}, true
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
	secure := s.secureCookies(r)
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

// loginFailed audits a failed login (never the password) and logs it
// without the username: people type passwords into it, and logs travel
// further than the audit log, which only admins read.
func (s *Server) loginFailed(r *http.Request, username string, a store.Admin, disabled bool, ip *netip.Addr) {
	reason := "bad_credentials"
	if disabled {
		reason = "disabled"
	}
	targetID := ""
	if a.ID != uuid.Nil {
		targetID = a.ID.String()
	}
	after, _ := json.Marshal(map[string]string{"username": username, "reason": reason})
	ctx := context.WithoutCancel(r.Context())
	attrs := []slog.Attr{}
	if ip != nil {
		attrs = append(attrs, slog.String("client", ip.String()))
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "admin: failed login", attrs...)
	if _, err := s.st.Audit().Append(ctx, store.AuditEntry{
		Actor: "anonymous", Action: "admin.login_failed", TargetType: "admin", TargetID: targetID, After: after, IP: ip,
	}); err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "admin: could not audit a failed login", slog.String("error", err.Error()))
	}
}

// retryAfter sets Retry-After to wait, in whole seconds rounded up.
func retryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
}
