package store_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/google/uuid"
)

// One migrated database serves the package; tests that need isolation use
// unique names and ids, and the migration tests make their own databases.
var (
	testDSN   string
	testStore *store.Store
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, drop, err := testenv.CreateDatabase(ctx, "store")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := drop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	testDSN, testStore = dsn, st
	return m.Run()
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// randomHash returns a fresh 32-byte key hash.
func randomHash(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return h[:]
}

func ptr[T any](v T) *T { return &v }

func mustUser(t testing.TB, name string) store.User {
	t.Helper()
	u, err := testStore.Users().Create(testCtx(t), store.NewUser{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustKey(t testing.TB, userID uuid.UUID) store.AccessKey {
	t.Helper()
	k, err := testStore.AccessKeys().Create(testCtx(t), store.NewAccessKey{UserID: userID, Name: "laptop", Hash: randomHash(t), Prefix: "ak_abcdefgh"})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// freshStore returns a store on a newly migrated database of its own, for
// tests whose expected output covers whole tables.
func freshStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := testCtx(t)
	dsn := testenv.Postgres(t)
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}
