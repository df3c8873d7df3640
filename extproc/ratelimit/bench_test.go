package ratelimit_test

import (
	"context"
	"testing"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

// BenchmarkCheck is the cost of one rate-limited request's check: a key
// and a user scope, all three dimensions, one script call against the test
// Redis (a limit high enough never to refuse).
func BenchmarkCheck(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	lim, err := ratelimit.New(ratelimit.Config{Redis: rdb, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	scopes := []accesskey.RateLimit{
		scope(accesskey.ScopeKey, 1_000_000, 10_000_000_000, 10_000_000_000),
		scope(accesskey.ScopeUser, 1_000_000, 10_000_000_000, 10_000_000_000),
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := lim.Check(ctx, scopes); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
