package store_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
)

func TestAccessKeyCreateGetList(t *testing.T) {
	ctx := testCtx(t)
	keys := testStore.AccessKeys()
	u := mustUser(t, "keys")
	hash := randomHash(t)
	k, err := keys.Create(ctx, store.NewAccessKey{UserID: u.ID, Name: "ci", Hash: hash, Prefix: "ak_12345678",
		RoutingStrategy: ptr(store.PlanOnly)})
	if err != nil {
		t.Fatal(err)
	}
	if k.UserID != u.ID || k.Name != "ci" || !bytes.Equal(k.Hash, hash) || k.Prefix != "ak_12345678" ||
		k.Status != store.KeyActive || *k.RoutingStrategy != store.PlanOnly || k.RevokedAt != nil || k.LastUsedAt != nil {
		t.Fatalf("created %+v", k)
	}
	got, err := keys.Get(ctx, k.ID)
	if err != nil || got.ID != k.ID || !bytes.Equal(got.Hash, hash) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	k2 := mustKey(t, u.ID)
	list, err := keys.ListByUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != k2.ID || list[1].ID != k.ID {
		t.Fatalf("ListByUser = %v, want newest first [%s %s]", list, k2.ID, k.ID)
	}
	if list, err := keys.ListByUser(ctx, uuid.New()); err != nil || len(list) != 0 {
		t.Fatalf("ListByUser unknown = %v, %v", list, err)
	}

	upd, err := keys.Update(ctx, k.ID, store.AccessKeyPatch{Name: store.Some("ci-2"), RoutingStrategy: store.Some[*store.RoutingStrategy](nil)})
	if err != nil || upd.Name != "ci-2" || upd.RoutingStrategy != nil {
		t.Fatalf("Update = %+v, %v", upd, err)
	}

	tests := []struct {
		name string
		nk   store.NewAccessKey
		want error
	}{
		{"duplicate hash", store.NewAccessKey{UserID: u.ID, Hash: hash, Prefix: "ak_x"}, store.ErrConflict},
		{"short hash", store.NewAccessKey{UserID: u.ID, Hash: []byte("short"), Prefix: "ak_x"}, store.ErrInvalid},
		{"no prefix", store.NewAccessKey{UserID: u.ID, Hash: randomHash(t)}, store.ErrInvalid},
		{"bad strategy", store.NewAccessKey{UserID: u.ID, Hash: randomHash(t), Prefix: "ak_x", RoutingStrategy: ptr(store.RoutingStrategy("x"))}, store.ErrInvalid},
		{"unknown user", store.NewAccessKey{UserID: uuid.New(), Hash: randomHash(t), Prefix: "ak_x"}, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := keys.Create(ctx, tc.nk); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := keys.Get(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get unknown = %v", err)
	}
	if _, err := keys.Update(ctx, uuid.New(), store.AccessKeyPatch{Name: store.Some("x")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}
}

func TestLookupByHash(t *testing.T) {
	ctx := testCtx(t)
	keys, creds := testStore.AccessKeys(), testStore.Credentials()
	u := mustUser(t, "lookup")
	plain, overridden := mustKey(t, u.ID), mustKey(t, u.ID)

	// No credential at all.
	l, err := keys.LookupByHash(ctx, plain.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if l.Key.ID != plain.ID || l.User.ID != u.ID || l.User.Name != "lookup" || l.Credential != nil {
		t.Fatalf("lookup without credential = %+v", l)
	}

	def, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "us-east-1", SecretCiphertext: []byte("sealed-default")})
	if err != nil {
		t.Fatal(err)
	}
	over, err := creds.PutForKey(ctx, overridden.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		hash       []byte
		wantKey    uuid.UUID
		wantCred   uuid.UUID
		wantRegion string
		wantSecret string
	}{
		{"user default", plain.Hash, plain.ID, def.ID, "us-east-1", "sealed-default"},
		{"per-key override", overridden.Hash, overridden.ID, over.ID, "eu-west-1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := keys.LookupByHash(ctx, tc.hash)
			if err != nil {
				t.Fatal(err)
			}
			if l.Key.ID != tc.wantKey || l.Credential == nil || l.Credential.ID != tc.wantCred ||
				l.Credential.Region != tc.wantRegion || string(l.Credential.SecretCiphertext) != tc.wantSecret ||
				l.Credential.UserID != u.ID {
				t.Fatalf("lookup = key %s cred %+v", l.Key.ID, l.Credential)
			}
		})
	}
	if _, err := keys.LookupByHash(ctx, randomHash(t)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash = %v", err)
	}
}

func TestKeyLookupUsableAndStrategy(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Minute), now.Add(-time.Minute)
	active := store.User{Status: store.UserActive, RoutingStrategy: store.PlanFirst}
	tests := []struct {
		name   string
		l      store.KeyLookup
		usable bool
		strat  store.RoutingStrategy
	}{
		{"active", store.KeyLookup{Key: store.AccessKey{Status: store.KeyActive}, User: active}, true, store.PlanFirst},
		{"rotating in grace", store.KeyLookup{Key: store.AccessKey{Status: store.KeyRotating, GraceUntil: &later}, User: active}, true, store.PlanFirst},
		{"rotating past grace", store.KeyLookup{Key: store.AccessKey{Status: store.KeyRotating, GraceUntil: &earlier}, User: active}, false, store.PlanFirst},
		{"revoked", store.KeyLookup{Key: store.AccessKey{Status: store.KeyRevoked}, User: active}, false, store.PlanFirst},
		{"user disabled", store.KeyLookup{Key: store.AccessKey{Status: store.KeyActive}, User: store.User{Status: store.UserDisabled, RoutingStrategy: store.PlanOnly}}, false, store.PlanOnly},
		{"user deleted", store.KeyLookup{Key: store.AccessKey{Status: store.KeyActive}, User: store.User{Status: store.UserActive, DeletedAt: &earlier}}, false, ""},
		{"key override", store.KeyLookup{Key: store.AccessKey{Status: store.KeyActive, RoutingStrategy: ptr(store.BedrockOnly)}, User: active}, true, store.BedrockOnly},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.Usable(now); got != tc.usable {
				t.Errorf("Usable = %v, want %v", got, tc.usable)
			}
			if got := tc.l.RoutingStrategy(); got != tc.strat {
				t.Errorf("RoutingStrategy = %q, want %q", got, tc.strat)
			}
		})
	}
}

func TestRotateWithGrace(t *testing.T) {
	ctx := testCtx(t)
	keys, creds := testStore.AccessKeys(), testStore.Credentials()
	u := mustUser(t, "rotate")
	old, err := keys.Create(ctx, store.NewAccessKey{UserID: u.ID, Name: "laptop", Hash: randomHash(t), Prefix: "ak_old",
		RoutingStrategy: ptr(store.BedrockOnly)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "us-west-2"}); err != nil {
		t.Fatal(err)
	}
	over, err := creds.PutForKey(ctx, old.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "eu-central-1", SecretCiphertext: []byte("sealed")})
	if err != nil {
		t.Fatal(err)
	}

	newHash := randomHash(t)
	before := time.Now()
	oldK, newK, err := keys.Rotate(ctx, old.ID, newHash, "ak_new", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if oldK.Status != store.KeyRotating || oldK.GraceUntil == nil || *oldK.RotatedTo != newK.ID ||
		oldK.GraceUntil.Before(before.Add(59*time.Minute)) || oldK.GraceUntil.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("old after rotate %+v", oldK)
	}
	if newK.Status != store.KeyActive || newK.UserID != u.ID || newK.Name != "laptop" || newK.Prefix != "ak_new" ||
		!bytes.Equal(newK.Hash, newHash) || *newK.RoutingStrategy != store.BedrockOnly {
		t.Fatalf("new key %+v", newK)
	}
	// Both keys authenticate with the override during the grace period.
	for name, h := range map[string][]byte{"old": old.Hash, "new": newHash} {
		l, err := keys.LookupByHash(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if !l.Usable(time.Now()) || l.Credential == nil || l.Credential.Region != "eu-central-1" ||
			string(l.Credential.SecretCiphertext) != "sealed" || l.Credential.AccessKeyID == nil || *l.Credential.AccessKeyID != l.Key.ID {
			t.Fatalf("%s key lookup: usable=%v cred=%+v", name, l.Usable(time.Now()), l.Credential)
		}
		if name == "new" && l.Credential.ID == over.ID {
			t.Fatalf("new key shares the old key's credential row; want a copy")
		}
	}
	if l, _ := keys.LookupByHash(ctx, old.Hash); l.Usable(time.Now().Add(2 * time.Hour)) {
		t.Fatal("old key usable after its grace period")
	}

	// Only an active key rotates; a failed rotation changes nothing.
	if _, _, err := keys.Rotate(ctx, old.ID, randomHash(t), "ak_x", time.Hour); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("rotate rotating key = %v, want ErrConflict", err)
	}
	if _, _, err := keys.Rotate(ctx, newK.ID, old.Hash, "ak_x", time.Hour); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("rotate to a used hash = %v, want ErrConflict", err)
	}
	if k, _ := keys.Get(ctx, newK.ID); k.Status != store.KeyActive || k.RotatedTo != nil {
		t.Fatalf("failed rotation changed the key: %+v", k)
	}
	if _, _, err := keys.Rotate(ctx, uuid.New(), randomHash(t), "ak_x", time.Hour); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotate unknown = %v, want ErrNotFound", err)
	}
}

func TestRotateWithoutGrace(t *testing.T) {
	ctx := testCtx(t)
	keys, creds := testStore.AccessKeys(), testStore.Credentials()
	u := mustUser(t, "rotate-now")
	old := mustKey(t, u.ID)
	over, err := creds.PutForKey(ctx, old.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "ap-northeast-1"})
	if err != nil {
		t.Fatal(err)
	}
	oldK, newK, err := keys.Rotate(ctx, old.ID, randomHash(t), "ak_new", 0)
	if err != nil {
		t.Fatal(err)
	}
	if oldK.Status != store.KeyRevoked || oldK.RevokedAt == nil || *oldK.RotatedTo != newK.ID {
		t.Fatalf("old key %+v", oldK)
	}
	moved, err := creds.GetForKey(ctx, newK.ID)
	if err != nil || moved.ID != over.ID || moved.Region != "ap-northeast-1" {
		t.Fatalf("override after rotation = %+v, %v; want row %s moved", moved, err, over.ID)
	}
	if _, err := creds.GetForKey(ctx, old.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old key still has an override: %v", err)
	}
}

func TestRevokeAndExpiry(t *testing.T) {
	ctx := testCtx(t)
	keys := testStore.AccessKeys()
	u := mustUser(t, "revoke")
	k := mustKey(t, u.ID)
	r, err := keys.Revoke(ctx, k.ID)
	if err != nil || r.Status != store.KeyRevoked || r.RevokedAt == nil {
		t.Fatalf("Revoke = %+v, %v", r, err)
	}
	again, err := keys.Revoke(ctx, k.ID)
	if err != nil || !again.RevokedAt.Equal(*r.RevokedAt) {
		t.Fatalf("second Revoke = %+v, %v; want unchanged", again, err)
	}
	if _, err := keys.Revoke(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Revoke unknown = %v", err)
	}

	k2 := mustKey(t, u.ID)
	old, _, err := keys.Rotate(ctx, k2.ID, randomHash(t), "ak_n", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	expired, err := keys.RevokeExpiredRotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range expired {
		if e.ID == old.ID {
			found = e.Status == store.KeyRevoked && e.RevokedAt.Equal(*old.GraceUntil)
		}
	}
	if !found {
		t.Fatalf("expired rotations %+v do not include %s revoked at its grace end", expired, old.ID)
	}
}

func TestTouchLastUsed(t *testing.T) {
	ctx := testCtx(t)
	keys := testStore.AccessKeys()
	u := mustUser(t, "touch")
	a, b := mustKey(t, u.ID), mustKey(t, u.ID)
	t0 := time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
	err := keys.TouchLastUsed(ctx, []store.KeyUse{
		{ID: a.ID, At: t0.Add(time.Second)},
		{ID: b.ID, At: t0},
		{ID: a.ID, At: t0.Add(3 * time.Second)},
		{ID: a.ID, At: t0.Add(2 * time.Second)},
		{ID: uuid.New(), At: t0}, // unknown ids are ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	// An older use never moves last_used_at back.
	if err := keys.TouchLastUsed(ctx, []store.KeyUse{{ID: b.ID, At: t0.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := keys.TouchLastUsed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uuid.UUID]time.Time{a.ID: t0.Add(3 * time.Second), b.ID: t0} {
		k, err := keys.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if k.LastUsedAt == nil || !k.LastUsedAt.Equal(want) {
			t.Errorf("key %s last used %v, want %v", id, k.LastUsedAt, want)
		}
	}
}
