package store_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
)

func TestCredentials(t *testing.T) {
	ctx := testCtx(t)
	creds := testStore.Credentials()
	u := mustUser(t, "creds")
	k := mustKey(t, u.ID)

	c1, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "us-east-1", SecretCiphertext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if c1.UserID != u.ID || c1.AccessKeyID != nil || c1.Kind != store.CredentialAPIKey || string(c1.SecretCiphertext) != "v1" {
		t.Fatalf("put %+v", c1)
	}
	// A second put replaces the same row.
	c2, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "us-west-2"})
	if err != nil {
		t.Fatal(err)
	}
	if c2.ID != c1.ID || c2.Kind != store.CredentialAWSDefaultChain || c2.Region != "us-west-2" || c2.SecretCiphertext != nil || !c2.UpdatedAt.After(c1.UpdatedAt) {
		t.Fatalf("replaced %+v (was %+v)", c2, c1)
	}
	got, err := creds.GetForUser(ctx, u.ID)
	if err != nil || got.ID != c1.ID || got.Region != "us-west-2" {
		t.Fatalf("GetForUser = %+v, %v", got, err)
	}
	if _, err := creds.GetForKey(ctx, k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetForKey without override = %v", err)
	}
	ko, err := creds.PutForKey(ctx, k.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "eu-west-1", SecretCiphertext: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if ko.UserID != u.ID || *ko.AccessKeyID != k.ID {
		t.Fatalf("key override %+v", ko)
	}
	if got, err := creds.GetForKey(ctx, k.ID); err != nil || got.ID != ko.ID {
		t.Fatalf("GetForKey = %+v, %v", got, err)
	}

	revoked := mustKey(t, u.ID)
	if _, err := testStore.AccessKeys().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	chain := store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "us-east-1"}
	tests := []struct {
		name string
		put  func() error
		want error
	}{
		{"api key without secret", func() error {
			_, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "us-east-1"})
			return err
		}, store.ErrInvalid},
		{"default chain with secret", func() error {
			_, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "us-east-1", SecretCiphertext: []byte("x")})
			return err
		}, store.ErrInvalid},
		{"unknown kind", func() error {
			_, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: "iam_user", Region: "us-east-1"})
			return err
		}, store.ErrInvalid},
		{"malformed region", func() error {
			_, err := creds.PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "US East"})
			return err
		}, store.ErrInvalid},
		{"unknown user", func() error { _, err := creds.PutForUser(ctx, uuid.New(), chain); return err }, store.ErrNotFound},
		{"unknown key", func() error { _, err := creds.PutForKey(ctx, uuid.New(), chain); return err }, store.ErrNotFound},
		{"revoked key", func() error { _, err := creds.PutForKey(ctx, revoked.ID, chain); return err }, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.put(); !errors.Is(err, tc.want) {
				t.Fatalf("put = %v, want %v", err, tc.want)
			}
		})
	}

	if err := creds.DeleteForKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := creds.DeleteForKey(ctx, k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteForKey = %v", err)
	}
	// Without the override the key falls back to the user's default.
	if l, err := testStore.AccessKeys().LookupByHash(ctx, k.Hash); err != nil || l.Credential == nil || l.Credential.ID != c1.ID {
		t.Fatalf("lookup after override deleted = %+v, %v", l.Credential, err)
	}
	if err := creds.DeleteForUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := creds.GetForUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetForUser after delete = %v", err)
	}
	if err := creds.DeleteForUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteForUser = %v", err)
	}
}

func TestRegionsInUse(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	put := func(name, region string, perKey bool) uuid.UUID {
		u, err := st.Users().Create(ctx, store.NewUser{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		in := store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: region}
		if perKey {
			k, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u.ID, Hash: randomHash(t), Prefix: "ak_x"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.Credentials().PutForKey(ctx, k.ID, in)
			if err != nil {
				t.Fatal(err)
			}
		} else if _, err := st.Credentials().PutForUser(ctx, u.ID, in); err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	put("a", "us-east-1", false)
	put("b", "eu-west-1", true)
	put("c", "us-east-1", true)
	gone := put("d", "ap-southeast-2", false)
	if _, err := st.Users().SoftDelete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	got, err := st.Credentials().RegionsInUse(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eu-west-1", "us-east-1"}; !slices.Equal(got, want) {
		t.Fatalf("RegionsInUse = %v, want %v", got, want)
	}
}
