package store_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

func i64(n int64) *int64 { return &n }

func TestRateLimits(t *testing.T) {
	ctx := testCtx(t)
	rl := testStore.RateLimits()
	u := mustUser(t, "ratelimits")
	k := mustKey(t, u.ID)

	if _, err := rl.Get(ctx, store.RateLimitUser, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get before Put = %v; want ErrNotFound", err)
	}
	l1, err := rl.Put(ctx, store.RateLimitUser, u.ID, store.RateLimitValues{RequestsPerMinute: i64(5)})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Scope != store.RateLimitUser || l1.SubjectID != u.ID || *l1.RequestsPerMinute != 5 || l1.InputTokensPerMinute != nil {
		t.Fatalf("put %+v", l1)
	}
	// A second Put replaces every value, unset ones included.
	l2, err := rl.Put(ctx, store.RateLimitUser, u.ID, store.RateLimitValues{InputTokensPerMinute: i64(1000), OutputTokensPerMinute: i64(200)})
	if err != nil {
		t.Fatal(err)
	}
	if l2.RequestsPerMinute != nil || *l2.InputTokensPerMinute != 1000 || *l2.OutputTokensPerMinute != 200 || !l2.CreatedAt.Equal(l1.CreatedAt) {
		t.Fatalf("replaced %+v (was %+v)", l2, l1)
	}
	if _, err := rl.Put(ctx, store.RateLimitKey, k.ID, store.RateLimitValues{RequestsPerMinute: i64(60)}); err != nil {
		t.Fatal(err)
	}

	// ForSubjects keeps the order asked for and skips subjects without limits.
	team := uuid.New()
	got, err := rl.ForSubjects(ctx,
		store.RateLimitSubject{Scope: store.RateLimitKey, ID: k.ID},
		store.RateLimitSubject{Scope: store.RateLimitTeam, ID: team},
		store.RateLimitSubject{Scope: store.RateLimitUser, ID: u.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Scope != store.RateLimitKey || *got[0].RequestsPerMinute != 60 || got[1].Scope != store.RateLimitUser {
		t.Fatalf("ForSubjects = %+v", got)
	}
	// The scope matters: the key's id as a user has no limits.
	if got, err := rl.ForSubjects(ctx, store.RateLimitSubject{Scope: store.RateLimitUser, ID: k.ID}); err != nil || len(got) != 0 {
		t.Fatalf("ForSubjects(user, key id) = %+v, %v", got, err)
	}

	for _, tc := range []struct {
		name  string
		scope store.RateLimitScope
		v     store.RateLimitValues
	}{
		{"no limit", store.RateLimitUser, store.RateLimitValues{}},
		{"zero rpm", store.RateLimitUser, store.RateLimitValues{RequestsPerMinute: i64(0)}},
		{"rpm too high", store.RateLimitUser, store.RateLimitValues{RequestsPerMinute: i64(store.MaxRequestsPerMinute + 1)}},
		{"negative tokens", store.RateLimitUser, store.RateLimitValues{OutputTokensPerMinute: i64(-1)}},
		{"tokens too high", store.RateLimitUser, store.RateLimitValues{InputTokensPerMinute: i64(store.MaxTokensPerMinute + 1)}},
		{"unknown scope", "org", store.RateLimitValues{RequestsPerMinute: i64(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := rl.Put(ctx, tc.scope, u.ID, tc.v); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Put = %v; want ErrInvalid", err)
			}
		})
	}

	if err := rl.Delete(ctx, store.RateLimitUser, u.ID); err != nil {
		t.Fatal(err)
	}
	if err := rl.Delete(ctx, store.RateLimitUser, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete = %v; want ErrNotFound", err)
	}
}
