// Package storetest gives tests outside internal/store a migrated store on a
// throwaway database (internal/testenv), closed and dropped when the test ends.
package storetest

import (
	"context"
	"testing"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

// Open creates a fresh database, migrates it up and opens a store on it.
func Open(tb testing.TB) *store.Store {
	tb.Helper()
	ctx := context.Background()
	dsn := testenv.Postgres(tb)
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	return st
}
