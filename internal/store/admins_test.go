package store_test

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
)

const testHash = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

func mustAdmin(t *testing.T, st *store.Store, name string) store.Admin {
	t.Helper()
	a, err := st.Admins().Create(testCtx(t), name, testHash)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sessionID(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func TestAdmins(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	admins := st.Admins()
	if n, err := admins.Count(ctx); err != nil || n != 0 {
		t.Fatalf("Count on empty = %d, %v", n, err)
	}
	a := mustAdmin(t, st, "Root")
	if a.Username != "Root" || a.PasswordHash != testHash || a.Disabled || a.LastLoginAt != nil {
		t.Fatalf("created %+v", a)
	}
	if got, err := admins.GetByUsername(ctx, "root"); err != nil || got.ID != a.ID {
		t.Fatalf("GetByUsername case-insensitive = %+v, %v", got, err)
	}
	if _, err := admins.Create(ctx, "ROOT", testHash); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate username = %v", err)
	}
	if _, err := admins.Create(ctx, "x", ""); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty hash = %v", err)
	}
	if _, err := admins.GetByUsername(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown username = %v", err)
	}
	if err := admins.TouchLogin(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := admins.SetPassword(ctx, a.ID, "$argon2id$new"); err != nil {
		t.Fatal(err)
	}
	got, err := admins.Get(ctx, a.ID)
	if err != nil || got.LastLoginAt == nil || got.PasswordHash != "$argon2id$new" {
		t.Fatalf("after login and new password %+v, %v", got, err)
	}
	mustAdmin(t, st, "alice")
	list, err := admins.List(ctx)
	if err != nil || len(list) != 2 || list[0].Username != "alice" || list[1].Username != "Root" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if n, err := admins.Count(ctx); err != nil || n != 2 {
		t.Fatalf("Count = %d, %v", n, err)
	}
	for name, f := range map[string]func() error{
		"TouchLogin":  func() error { return admins.TouchLogin(ctx, uuid.New()) },
		"SetPassword": func() error { return admins.SetPassword(ctx, uuid.New(), "h") },
		"SetDisabled": func() error { return admins.SetDisabled(ctx, uuid.New(), true) },
		"Get":         func() error { _, err := admins.Get(ctx, uuid.New()); return err },
	} {
		if err := f(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s unknown admin = %v", name, err)
		}
	}
}

func TestAdminSessions(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	sessions := st.Sessions()
	a := mustAdmin(t, st, "ops")
	ip := netip.MustParseAddr("203.0.113.7")
	exp := time.Now().Add(time.Hour)
	s, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t1"), AdminID: a.ID, ExpiresAt: exp, UserAgent: "curl/8", IP: &ip})
	if err != nil {
		t.Fatal(err)
	}
	if s.AdminID != a.ID || s.UserAgent != "curl/8" || *s.IP != ip || s.RevokedAt != nil {
		t.Fatalf("created %+v", s)
	}
	gs, ga, err := sessions.Get(ctx, sessionID("t1"))
	if err != nil || ga.ID != a.ID || ga.Username != "ops" || !gs.ExpiresAt.Equal(s.ExpiresAt) {
		t.Fatalf("Get = %+v %+v, %v", gs, ga, err)
	}
	if err := sessions.Touch(ctx, sessionID("t1")); err != nil {
		t.Fatal(err)
	}

	expired, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t-exp"), AdminID: a.ID, ExpiresAt: time.Now().Add(-time.Minute)})
	if err != nil || expired.IP != nil {
		t.Fatalf("create expired = %+v, %v", expired, err)
	}
	if _, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t2"), AdminID: a.ID, ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ns   store.NewAdminSession
		want error
	}{
		{"short id", store.NewAdminSession{ID: []byte("x"), AdminID: a.ID, ExpiresAt: exp}, store.ErrInvalid},
		{"duplicate id", store.NewAdminSession{ID: sessionID("t1"), AdminID: a.ID, ExpiresAt: exp}, store.ErrConflict},
		{"unknown admin", store.NewAdminSession{ID: sessionID("t3"), AdminID: uuid.New(), ExpiresAt: exp}, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sessions.Create(ctx, tc.ns); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}

	// Get returns only valid sessions.
	if _, _, err := sessions.Get(ctx, sessionID("t-exp")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get expired = %v", err)
	}
	if err := sessions.Revoke(ctx, sessionID("t1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sessions.Get(ctx, sessionID("t1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get revoked = %v", err)
	}
	if err := sessions.Revoke(ctx, sessionID("t1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Revoke = %v", err)
	}
	if _, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t4"), AdminID: a.ID, ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if n, err := sessions.RevokeAllForAdmin(ctx, a.ID); err != nil || n != 2 {
		t.Fatalf("RevokeAllForAdmin = %d, %v; want t2 and t4", n, err)
	}
	if _, _, err := sessions.Get(ctx, sessionID("t2")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after RevokeAll = %v", err)
	}

	// Disabling an admin ends its sessions and forbids new ones.
	if _, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t5"), AdminID: a.ID, ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := st.Admins().SetDisabled(ctx, a.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sessions.Get(ctx, sessionID("t5")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session of disabled admin = %v", err)
	}
	if _, err := sessions.Create(ctx, store.NewAdminSession{ID: sessionID("t6"), AdminID: a.ID, ExpiresAt: exp}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session for disabled admin = %v", err)
	}
	if err := st.Admins().SetDisabled(ctx, a.ID, false); err != nil {
		t.Fatal(err)
	}

	// Everything expired or revoked before the cutoff goes: t-exp, t1, t2, t4, t5.
	n, err := sessions.DeleteExpired(ctx, time.Now().Add(time.Second))
	if err != nil || n != 5 {
		t.Fatalf("DeleteExpired = %d, %v; want 5", n, err)
	}
	if err := sessions.Touch(ctx, sessionID("t1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Touch deleted = %v", err)
	}
}

func TestAuditLog(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	a := mustAdmin(t, st, "auditor")
	ip := netip.MustParseAddr("2001:db8::1")

	// The change and its entry commit together, or not at all.
	u, err := func() (store.User, error) {
		var u store.User
		err := st.WithTx(ctx, func(tx *store.Queries) error {
			var err error
			if u, err = tx.Users().Create(ctx, store.NewUser{Name: "audited"}); err != nil {
				return err
			}
			after, _ := json.Marshal(map[string]string{"name": u.Name})
			_, err = tx.Audit().Append(ctx, store.AuditEntry{AdminID: &a.ID, Actor: a.Username, Action: "user.create",
				TargetType: "user", TargetID: u.ID.String(), After: after, IP: &ip})
			return err
		})
		return u, err
	}()
	if err != nil {
		t.Fatal(err)
	}
	rolledBack := errors.New("rolled back")
	err = st.WithTx(ctx, func(tx *store.Queries) error {
		if _, err := tx.Audit().Append(ctx, store.AuditEntry{Actor: "system", Action: "user.delete", TargetType: "user", TargetID: u.ID.String()}); err != nil {
			return err
		}
		return rolledBack
	})
	if !errors.Is(err, rolledBack) {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := st.Audit().Append(ctx, store.AuditEntry{Actor: "system", Action: "key.revoke", TargetType: "access_key",
			TargetID: "k" + string(rune('0'+i)), Before: json.RawMessage(`{"status":"active"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Audit().Append(ctx, store.AuditEntry{Actor: "system"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("entry without action = %v", err)
	}

	all, next, err := st.Audit().List(ctx, store.AuditFilter{}, 0, "")
	if err != nil || next != "" || len(all) != 5 {
		t.Fatalf("List = %d entries, next %q, %v", len(all), next, err)
	}
	first := all[4]
	if first.Action != "user.create" || *first.AdminID != a.ID || first.Actor != "auditor" || string(first.After) != `{"name": "audited"}` ||
		first.Before != nil || *first.IP != ip || first.At.IsZero() {
		t.Fatalf("first entry %+v (after %s)", first, first.After)
	}

	var ids []string
	cursor := ""
	for {
		page, next, err := st.Audit().List(ctx, store.AuditFilter{Action: "key.revoke"}, 3, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			ids = append(ids, e.TargetID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(ids) != 4 || ids[0] != "k3" || ids[3] != "k0" {
		t.Fatalf("paged revocations %v, want k3..k0", ids)
	}
	for _, tc := range []struct {
		name string
		f    store.AuditFilter
		want int
	}{
		{"by admin", store.AuditFilter{AdminID: &a.ID}, 1},
		{"by target", store.AuditFilter{TargetType: "access_key", TargetID: "k2"}, 1},
		{"by time", store.AuditFilter{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)}, 5},
		{"future", store.AuditFilter{From: time.Now().Add(time.Hour)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := st.Audit().List(ctx, tc.f, 0, "")
			if err != nil || len(got) != tc.want {
				t.Fatalf("List = %d, %v; want %d", len(got), err, tc.want)
			}
		})
	}
	if _, _, err := st.Audit().List(ctx, store.AuditFilter{}, 0, "x"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad cursor = %v", err)
	}
}
