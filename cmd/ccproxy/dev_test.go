package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
)

func TestDevStateSurvivesRestarts(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	dir := t.TempDir()

	secret, err := stateSecret(filepath.Join(dir, "server-secret"))
	if err != nil || len(secret) != 32 {
		t.Fatalf("secret: %d bytes, %v", len(secret), err)
	}
	again, err := stateSecret(filepath.Join(dir, "server-secret"))
	if err != nil || string(again) != string(secret) {
		t.Fatal("the server secret changed across restarts")
	}
	hasher, _ := keys.NewHasher(secret)
	keyFile := filepath.Join(dir, "demo-key")

	first, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Parse(first); err != nil {
		t.Fatalf("demo key %v", err)
	}
	second, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil || second != first {
		t.Fatalf("restart issued a new key (%v)", err)
	}
	// The key file is lost: the existing demo user gets a new key.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	third, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil || third == first {
		t.Fatalf("lost key file: %v", err)
	}
	users, _, err := st.Users().List(ctx, store.UserListOptions{})
	if err != nil || len(users) != 1 || users[0].Name != "demo" {
		t.Fatalf("users = %+v, %v", users, err)
	}
	ks, _ := st.AccessKeys().ListByUser(ctx, users[0].ID)
	if len(ks) != 2 {
		t.Fatalf("demo user has %d keys, want 2", len(ks))
	}
	if raw, _ := os.ReadFile(keyFile); strings.TrimSpace(string(raw)) != third {
		t.Fatal("key file does not hold the current key")
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
}
