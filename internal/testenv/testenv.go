// Package testenv gives tests real, isolated Postgres databases and Redis
// namespaces on the servers that scripts/services.sh found or started.
//
// Tests never mock Postgres or Redis. Each call to Postgres creates a fresh
// database that is dropped when the test ends; each call to Redis returns a
// client plus a key prefix unique to the test, whose keys are deleted when the
// test ends. Servers are located through CCPROXY_TEST_DATABASE_URL /
// DATABASE_URL and CCPROXY_TEST_REDIS_URL / REDIS_URL, falling back to the
// local defaults that `make test` ensures are running.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// DefaultPostgresURL is the maintenance database used when no URL is configured.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DefaultRedisURL is the Redis server used when no URL is configured.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// PostgresAdminURL returns the URL of the server-level connection used to
// create and drop test databases.
func PostgresAdminURL() string {
	for _, name := range []string{"CCPROXY_TEST_DATABASE_URL", "DATABASE_URL"} {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return DefaultPostgresURL
}

// RedisURL returns the URL of the Redis server tests use.
func RedisURL() string {
	for _, name := range []string{"CCPROXY_TEST_REDIS_URL", "REDIS_URL"} {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return DefaultRedisURL
}

// CreateDatabase creates an empty database whose name starts with
// ccproxy_test_ and returns its URL and a function that drops it.
func CreateDatabase(ctx context.Context, label string) (dsn string, drop func() error, err error) {
	admin := PostgresAdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("testenv: connect to postgres at %s (run `make services`): %w", redactURL(admin), err)
	}
	defer conn.Close(ctx)

	name := "ccproxy_test_" + sanitize(label) + "_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("testenv: create database %s: %w", name, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, fmt.Errorf("testenv: parse postgres url: %w", err)
	}
	u.Path = "/" + name
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return fmt.Errorf("testenv: connect to drop %s: %w", name, err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("testenv: drop database %s: %w", name, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// Postgres creates a throwaway database for tb and returns its URL. The
// database is dropped when tb's test ends.
func Postgres(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, drop, err := CreateDatabase(ctx, tb.Name())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := drop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return dsn
}

// Redis returns a client for the test Redis server and a key prefix unique to
// tb. Every key under the prefix is deleted, and the client closed, when tb's
// test ends. Tests must put all their keys under the prefix.
func Redis(tb testing.TB) (*redis.Client, string) {
	tb.Helper()
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatalf("testenv: parse redis url: %v", err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("testenv: ping redis at %s (run `make services`): %v", opts.Addr, err)
	}
	prefix := "ccproxytest:" + sanitize(tb.Name()) + ":" + randomHex(6) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			client.Del(ctx, keys...)
		}
		_ = client.Close()
	})
	return client, prefix
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 30 {
			break
		}
	}
	return b.String()
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
