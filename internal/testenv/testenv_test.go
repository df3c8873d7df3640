package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPostgresDatabaseIsCreatedAndDropped(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("inner", func(t *testing.T) {
		dsn := Postgres(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "select current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "ccproxy_test_") {
			t.Fatalf("database %q lacks the test prefix", name)
		}
	})
	admin, err := pgx.Connect(ctx, PostgresAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, "select exists(select 1 from pg_database where datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestRedisNamespaceIsCleaned(t *testing.T) {
	ctx := context.Background()
	var prefix string
	t.Run("inner", func(t *testing.T) {
		client, p := Redis(t)
		prefix = p
		if err := client.Set(ctx, p+"a", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	client, other := Redis(t)
	if other == prefix {
		t.Fatal("two tests got the same prefix")
	}
	n, err := client.Exists(ctx, prefix+"a").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("key %sa survived its test", prefix)
	}
}
