package storebridge

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
)

func openStore(t *testing.T) *store.Store { return storetest.Open(t) }

func TestKeyStoreThroughResolver(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	newKey := func(t *testing.T, userID uuid.UUID) (string, store.AccessKey) {
		k, _ := keys.Generate()
		ak, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: userID, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
		if err != nil {
			t.Fatal(err)
		}
		return k, ak
	}
	user, err := st.Users().Create(ctx, store.NewUser{Name: "ada", RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	resolver := auth.NewStoreResolver(KeyStore{Store: st}, hasher, nil)

	active, activeRow := newKey(t, user.ID)
	revoked, revokedRow := newKey(t, user.ID)
	if _, err := st.AccessKeys().Revoke(ctx, revokedRow.ID); err != nil {
		t.Fatal(err)
	}
	rotating, rotatingRow := newKey(t, user.ID)
	replacement, _ := keys.Generate()
	if _, _, err := st.AccessKeys().Rotate(ctx, rotatingRow.ID, hasher.Hash(replacement), keys.DisplayPrefix(replacement), time.Hour); err != nil {
		t.Fatal(err)
	}
	unknown, _ := keys.Generate()

	t.Run("active key resolves with the user's strategy", func(t *testing.T) {
		id, err := resolver.Resolve(ctx, active)
		if err != nil {
			t.Fatal(err)
		}
		if id.KeyID != activeRow.ID || id.UserID != user.ID || id.RoutingStrategy != "bedrock_only" || id.KeyPrefix != keys.DisplayPrefix(active) {
			t.Fatalf("identity = %+v", id)
		}
	})
	t.Run("rotating key resolves until its grace ends", func(t *testing.T) {
		id, err := resolver.Resolve(ctx, rotating)
		if err != nil {
			t.Fatal(err)
		}
		if id.ExpiresAt.IsZero() || time.Until(id.ExpiresAt) > time.Hour || time.Until(id.ExpiresAt) < 59*time.Minute {
			t.Fatalf("expires at %v, want about an hour from now", id.ExpiresAt)
		}
	})
	for _, tt := range []struct {
		name, key string
		want      error
	}{
		{"revoked", revoked, auth.ErrRevoked},
		{"unknown", unknown, auth.ErrUnknownKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := resolver.Resolve(ctx, tt.key); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("disabled user", func(t *testing.T) {
		if _, err := st.Users().Update(ctx, user.ID, store.UserPatch{Status: store.Some(store.UserDisabled)}); err != nil {
			t.Fatal(err)
		}
		if _, err := resolver.Resolve(ctx, active); err == nil {
			t.Fatal("a disabled user's key still resolves")
		}
	})
}
