package store_test

import (
	"errors"
	"testing"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

func TestUserCreateGet(t *testing.T) {
	ctx := testCtx(t)
	users := testStore.Users()
	budget := decimal.RequireFromString("12.50")
	u, err := users.Create(ctx, store.NewUser{Name: "Ada", Email: ptr("  Ada@Example.com "), MonthlyBudgetUSD: &budget})
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == uuid.Nil || u.Name != "Ada" || *u.Email != "Ada@Example.com" || u.RoutingStrategy != store.PlanFirst ||
		u.Status != store.UserActive || !u.MonthlyBudgetUSD.Equal(budget) || u.CreatedAt.IsZero() || u.DeletedAt != nil {
		t.Fatalf("created %+v", u)
	}
	got, err := users.Get(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || *got.Email != "Ada@Example.com" || got.MonthlyBudgetUSD.String() != "12.5" {
		t.Fatalf("got %+v", got)
	}

	tests := []struct {
		name string
		nu   store.NewUser
		want error
	}{
		{"duplicate email, other case", store.NewUser{Name: "Other", Email: ptr("ada@EXAMPLE.com")}, store.ErrConflict},
		{"unknown strategy", store.NewUser{Name: "X", RoutingStrategy: "sometimes"}, store.ErrInvalid},
		{"negative budget", store.NewUser{Name: "X", MonthlyBudgetUSD: ptr(decimal.RequireFromString("-1"))}, store.ErrInvalid},
		{"budget with cents fractions", store.NewUser{Name: "X", MonthlyBudgetUSD: ptr(decimal.RequireFromString("1.005"))}, store.ErrInvalid},
		{"empty name", store.NewUser{Name: ""}, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := users.Create(ctx, tc.nu); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := users.Get(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
}

func TestUserUpdate(t *testing.T) {
	ctx := testCtx(t)
	users := testStore.Users()
	u, err := users.Create(ctx, store.NewUser{Name: "Grace", Email: ptr("grace-" + uuid.NewString() + "@example.com"),
		MonthlyBudgetUSD: ptr(decimal.RequireFromString("10"))})
	if err != nil {
		t.Fatal(err)
	}

	// Partial: only the fields set change; nil clears a nullable column.
	got, err := users.Update(ctx, u.ID, store.UserPatch{
		RoutingStrategy:  store.Some(store.BedrockOnly),
		MonthlyBudgetUSD: store.Some[*decimal.Decimal](nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Grace" || got.Email == nil || *got.Email != *u.Email || got.RoutingStrategy != store.BedrockOnly ||
		got.MonthlyBudgetUSD != nil || !got.UpdatedAt.After(u.UpdatedAt) {
		t.Fatalf("after patch %+v", got)
	}
	got, err = users.Update(ctx, u.ID, store.UserPatch{Name: store.Some("Grace H."), Email: store.Some[*string](nil),
		Status: store.Some(store.UserDisabled)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Grace H." || got.Email != nil || got.Status != store.UserDisabled || got.RoutingStrategy != store.BedrockOnly {
		t.Fatalf("after second patch %+v", got)
	}
	if same, err := users.Update(ctx, u.ID, store.UserPatch{}); err != nil || same.Name != "Grace H." {
		t.Fatalf("empty patch = %+v, %v", same, err)
	}

	otherEmail := "other-" + uuid.NewString() + "@example.com"
	if _, err := users.Create(ctx, store.NewUser{Name: "Other", Email: &otherEmail}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		id    uuid.UUID
		patch store.UserPatch
		want  error
	}{
		{"unknown user", uuid.New(), store.UserPatch{Name: store.Some("x")}, store.ErrNotFound},
		{"bad strategy", u.ID, store.UserPatch{RoutingStrategy: store.Some(store.RoutingStrategy("x"))}, store.ErrInvalid},
		{"bad status", u.ID, store.UserPatch{Status: store.Some(store.UserStatus("gone"))}, store.ErrInvalid},
		{"email taken", u.ID, store.UserPatch{Email: store.Some(&otherEmail)}, store.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := users.Update(ctx, tc.id, tc.patch); !errors.Is(err, tc.want) {
				t.Fatalf("Update = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUserSoftDelete(t *testing.T) {
	ctx := testCtx(t)
	users := testStore.Users()
	email := "del-" + uuid.NewString() + "@example.com"
	u, err := users.Create(ctx, store.NewUser{Name: "Del", Email: &email})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := mustKey(t, u.ID), mustKey(t, u.ID)
	if _, err := testStore.AccessKeys().Revoke(ctx, k2.ID); err != nil {
		t.Fatal(err)
	}

	revoked, err := users.SoftDelete(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 1 || revoked[0].ID != k1.ID || revoked[0].Status != store.KeyRevoked || revoked[0].RevokedAt == nil {
		t.Fatalf("revoked %+v, want only %s", revoked, k1.ID)
	}
	if _, err := users.Get(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get deleted = %v", err)
	}
	if _, err := users.Update(ctx, u.ID, store.UserPatch{Name: store.Some("x")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update deleted = %v", err)
	}
	if _, err := users.SoftDelete(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second SoftDelete = %v", err)
	}
	if _, err := users.SoftDelete(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SoftDelete unknown = %v", err)
	}
	// The lookup still finds the key (usage keeps its user), but not usable.
	l, err := testStore.AccessKeys().LookupByHash(ctx, k1.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if l.Usable(l.Key.CreatedAt) || l.User.DeletedAt == nil || l.User.Status != store.UserDisabled {
		t.Fatalf("lookup of deleted user's key: usable=%v user=%+v", l.Usable(l.Key.CreatedAt), l.User)
	}
	// Keys cannot be issued to a deleted user; its email is free again.
	if _, err := testStore.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u.ID, Hash: randomHash(t), Prefix: "ak_x"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key for deleted user = %v", err)
	}
	if _, err := users.Create(ctx, store.NewUser{Name: "Del again", Email: &email}); err != nil {
		t.Fatalf("reuse email of deleted user: %v", err)
	}
}

func TestUserList(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	var ids []uuid.UUID
	for i := range 7 {
		u, err := st.Users().Create(ctx, store.NewUser{Name: "u" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	if _, err := st.Users().SoftDelete(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Users().Update(ctx, ids[4], store.UserPatch{Status: store.Some(store.UserDisabled)}); err != nil {
		t.Fatal(err)
	}

	collect := func(opt store.UserListOptions) ([]uuid.UUID, int) {
		t.Helper()
		var got []uuid.UUID
		pages := 0
		for {
			page, next, err := st.Users().List(ctx, opt)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, u := range page {
				got = append(got, u.ID)
			}
			if next == "" {
				return got, pages
			}
			opt.Cursor = next
		}
	}
	tests := []struct {
		name      string
		opt       store.UserListOptions
		want      []uuid.UUID
		wantPages int
	}{
		{"pages of 3", store.UserListOptions{Limit: 3}, []uuid.UUID{ids[0], ids[1], ids[3], ids[4], ids[5], ids[6]}, 2},
		{"pages of 4 with deleted", store.UserListOptions{Limit: 4, IncludeDeleted: true}, ids, 2},
		{"one page", store.UserListOptions{}, []uuid.UUID{ids[0], ids[1], ids[3], ids[4], ids[5], ids[6]}, 1},
		{"disabled only", store.UserListOptions{Status: store.UserDisabled}, []uuid.UUID{ids[4]}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, pages := collect(tc.opt)
			if len(got) != len(tc.want) || pages != tc.wantPages {
				t.Fatalf("got %d users in %d pages, want %d in %d", len(got), pages, len(tc.want), tc.wantPages)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("user %d = %s, want %s", i, got[i], tc.want[i])
				}
			}
		})
	}
	if _, _, err := st.Users().List(ctx, store.UserListOptions{Cursor: "!!"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad cursor = %v", err)
	}
}
