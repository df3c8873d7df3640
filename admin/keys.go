package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
)

// keyJSON is the API form of an access key; it never holds the key itself.
type keyJSON struct {
	ID              uuid.UUID  `json:"id"`
	UserID          uuid.UUID  `json:"user_id"`
	Name            string     `json:"name"`
	Prefix          string     `json:"prefix"`
	Status          string     `json:"status"`
	RoutingStrategy *string    `json:"routing_strategy"`
	GraceUntil      *time.Time `json:"grace_until"`
	RotatedTo       *uuid.UUID `json:"rotated_to"`
	LastUsedAt      *time.Time `json:"last_used_at"`
	CreatedAt       time.Time  `json:"created_at"`
	RevokedAt       *time.Time `json:"revoked_at"`
}

// issuedKeyJSON is the only response that holds the key.
type issuedKeyJSON struct {
	keyJSON
	Key string `json:"key"`
	// Previous is the rotated key (rotation only).
	Previous *keyJSON `json:"previous,omitempty"`
}

func toKey(k store.AccessKey) keyJSON {
	out := keyJSON{ID: k.ID, UserID: k.UserID, Name: k.Name, Prefix: k.Prefix, Status: string(k.Status),
		GraceUntil: k.GraceUntil, RotatedTo: k.RotatedTo, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt}
	if k.RoutingStrategy != nil {
		rs := string(*k.RoutingStrategy)
		out.RoutingStrategy = &rs
	}
	return out
}

type issueKeyRequest struct {
	Name            *string `json:"name"`
	RoutingStrategy *string `json:"routing_strategy"`
}

func (s *Server) handleIssueKey(w http.ResponseWriter, r *http.Request) {
	userID, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req issueKeyRequest
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		if !s.decode(w, r, &req) {
			return
		}
	}
	var errs []fieldError
	nk := store.NewAccessKey{UserID: userID}
	if req.Name != nil {
		if *req.Name != "" {
			checkName("name", *req.Name, 200, &errs)
		}
		nk.Name = *req.Name
	}
	if req.RoutingStrategy != nil {
		rs := checkStrategy("routing_strategy", *req.RoutingStrategy, &errs)
		nk.RoutingStrategy = &rs
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	secret, err := keys.Generate()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	nk.Hash, nk.Prefix = s.hasher.Hash(secret), keys.DisplayPrefix(secret)
	var out issuedKeyJSON
	var created store.AccessKey
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		k, err := q.AccessKeys().Create(r.Context(), nk)
		if err != nil {
			return err
		}
		created = k
		out = issuedKeyJSON{keyJSON: toKey(k), Key: secret}
		if err := s.audit(r.Context(), q, "key.create", "access_key", k.ID.String(), nil, out.keyJSON); err != nil {
			return err
		}
		return s.enqueueKeyEvent(r.Context(), q, notifications.TypeKeyCreated, k)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.notified()
	// A negative cache entry for this hash may exist.
	s.invalidate(r.Context(), keysInvalidation(userID, []store.AccessKey{created}))
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	userID, ok := s.pathID(w, r)
	if !ok {
		return
	}
	serveList(s, w, r, noFilter, wholeList(func(ctx context.Context, _ struct{}) ([]store.AccessKey, error) {
		// An unknown user is a 404, not an empty list.
		if _, err := s.st.Users().Get(ctx, userID); err != nil {
			return nil, err
		}
		return s.st.AccessKeys().ListByUser(ctx, userID)
	}), toKey)
}

type rotateKeyRequest struct {
	GracePeriodSeconds *int64 `json:"grace_period_seconds"`
}

// maxRotationGrace bounds how long an old key may outlive its rotation.
const maxRotationGrace = 30 * 24 * time.Hour

func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req rotateKeyRequest
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		if !s.decode(w, r, &req) {
			return
		}
	}
	grace := DefaultRotationGrace
	if req.GracePeriodSeconds != nil {
		g := *req.GracePeriodSeconds
		if g < 0 || g > int64(maxRotationGrace/time.Second) {
			s.invalid(w, r, []fieldError{{Field: "grace_period_seconds", Message: "must be from 0 to " + strconv.FormatInt(int64(maxRotationGrace/time.Second), 10)}})
			return
		}
		grace = time.Duration(g) * time.Second
	}
	secret, err := keys.Generate()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var (
		out     issuedKeyJSON
		old, nw store.AccessKey
	)
	err = s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.AccessKeys().Get(r.Context(), id)
		if err != nil {
			return err
		}
		old, nw, err = q.AccessKeys().Rotate(r.Context(), id, s.hasher.Hash(secret), keys.DisplayPrefix(secret), grace)
		if err != nil {
			return err
		}
		prev := toKey(old)
		out = issuedKeyJSON{keyJSON: toKey(nw), Key: secret, Previous: &prev}
		if err := s.audit(r.Context(), q, "key.rotate", "access_key", id.String(), toKey(before),
			map[string]any{"old": prev, "new": out.keyJSON}); err != nil {
			return err
		}
		return s.enqueueKeyEvent(r.Context(), q, notifications.TypeKeyCreated, nw)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.notified()
	s.invalidate(r.Context(), keysInvalidation(old.UserID, []store.AccessKey{old, nw}))
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var k store.AccessKey
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.AccessKeys().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if k, err = q.AccessKeys().Revoke(r.Context(), id); err != nil {
			return err
		}
		if before.Status == store.KeyRevoked {
			return nil
		}
		if err := s.audit(r.Context(), q, "key.revoke", "access_key", id.String(), toKey(before), toKey(k)); err != nil {
			return err
		}
		return s.enqueueKeyEvent(r.Context(), q, notifications.TypeKeyRevoked, k)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.notified()
	// Invalidate even when it was already revoked: it is idempotent and
	// repairs a cache that missed the first message.
	if !s.invalidateOrUnavailable(w, r, keysInvalidation(k.UserID, []store.AccessKey{k})) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
