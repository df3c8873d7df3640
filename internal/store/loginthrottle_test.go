package store_test

import (
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
)

func throttleKey(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestLoginThrottles(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	lt := st.LoginThrottles()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := throttleKey("a"), throttleKey("b")

	read := func(t *testing.T, at time.Time, keys ...[]byte) []store.LoginThrottle {
		t.Helper()
		var got []store.LoginThrottle
		if err := lt.Update(ctx, at, keys, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) {
			got = s
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}

	t.Run("unknown keys have no state", func(t *testing.T) {
		got := read(t, now, b, a)
		if len(got) != 2 || string(got[0].Key) != string(b) || string(got[1].Key) != string(a) ||
			got[0].Attempts != 0 || !got[0].NextAttemptAt.IsZero() || !got[0].ExpiresAt.IsZero() {
			t.Fatalf("states %+v", got)
		}
	})
	t.Run("written state is read back until it expires", func(t *testing.T) {
		next := now.Add(time.Minute)
		if err := lt.Update(ctx, now, [][]byte{a}, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) {
			s[0].Attempts, s[0].NextAttemptAt, s[0].ExpiresAt = 3, next, now.Add(time.Hour)
			return s, nil
		}); err != nil {
			t.Fatal(err)
		}
		got := read(t, now.Add(59*time.Minute), a, b)
		if got[0].Attempts != 3 || !got[0].NextAttemptAt.Equal(next) || !got[0].ExpiresAt.Equal(now.Add(time.Hour)) || got[1].Attempts != 0 {
			t.Fatalf("states %+v", got)
		}
		if got := read(t, now.Add(time.Hour), a); got[0].Attempts != 0 || !got[0].NextAttemptAt.IsZero() {
			t.Fatalf("expired state read back: %+v", got)
		}
	})
	t.Run("an error from fn rolls back", func(t *testing.T) {
		boom := errors.New("boom")
		err := lt.Update(ctx, now, [][]byte{a}, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) {
			return nil, boom
		})
		if err != boom {
			t.Fatalf("Update = %v, want fn's error", err)
		}
		if got := read(t, now, a); got[0].Attempts != 3 {
			t.Fatalf("state after rollback %+v", got)
		}
	})
	t.Run("bad keys", func(t *testing.T) {
		err := lt.Update(ctx, now, [][]byte{[]byte("short")}, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) { return nil, nil })
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("short key = %v", err)
		}
	})
	t.Run("concurrent updates are serialised", func(t *testing.T) {
		// Each update increments both keys; a lost update would show as a
		// count below n.
		const n = 40
		c, d := throttleKey("c"), throttleKey("d")
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			keys := [][]byte{c, d}
			if i%2 == 1 {
				keys = [][]byte{d, c} // the other order must not deadlock
			}
			wg.Go(func() {
				errs <- lt.Update(ctx, now, keys, func(s []store.LoginThrottle) ([]store.LoginThrottle, error) {
					for i := range s {
						s[i].Attempts++
						s[i].ExpiresAt = now.Add(time.Hour)
					}
					return s, nil
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := read(t, now, c, d); got[0].Attempts != n || got[1].Attempts != n {
			t.Fatalf("attempts %d and %d, want %d", got[0].Attempts, got[1].Attempts, n)
		}
	})
	t.Run("delete and delete expired", func(t *testing.T) {
		if err := lt.Delete(ctx, throttleKey("c")); err != nil {
			t.Fatal(err)
		}
		if got := read(t, now, throttleKey("c"), throttleKey("d")); got[0].Attempts != 0 || got[1].Attempts != 40 {
			t.Fatalf("after Delete %+v", got)
		}
		// Left: a (expires now+1h), d (now+1h), and rows created by reads,
		// which expire at once.
		n, err := lt.DeleteExpired(ctx, now.Add(time.Second))
		if err != nil || n != 2 {
			t.Fatalf("DeleteExpired = %d, %v; want b and c", n, err)
		}
		if n, err := lt.DeleteExpired(ctx, now.Add(2*time.Hour)); err != nil || n != 2 {
			t.Fatalf("DeleteExpired later = %d, %v; want a and d", n, err)
		}
	})
}

func TestRevokeOthers(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	a := mustAdmin(t, st, "keeper")
	other := mustAdmin(t, st, "other")
	exp := time.Now().Add(time.Hour)
	for _, s := range []struct {
		token string
		admin store.Admin
	}{{"keep", a}, {"k1", a}, {"k2", a}, {"o1", other}} {
		if _, err := st.Sessions().Create(ctx, store.NewAdminSession{ID: sessionID(s.token), AdminID: s.admin.ID, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := st.Sessions().RevokeOthers(ctx, a.ID, sessionID("keep")); err != nil || n != 2 {
		t.Fatalf("RevokeOthers = %d, %v; want 2", n, err)
	}
	for token, valid := range map[string]bool{"keep": true, "k1": false, "k2": false, "o1": true} {
		if _, _, err := st.Sessions().Get(ctx, sessionID(token)); (err == nil) != valid {
			t.Errorf("session %s: Get = %v, want valid %v", token, err, valid)
		}
	}
}
