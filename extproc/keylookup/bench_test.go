package keylookup_test

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
)

// BenchmarkLookup measures one Store lookup answered by each layer below the
// in-process cache.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	key, _ := e.newKey(b)
	hash := e.hasher.Hash(key)
	in := e.instance(b, keylookup.Config{}, accesskey.CacheConfig{})
	if _, err := in.store.Lookup(ctx, hash); err != nil {
		b.Fatal(err)
	}
	b.Run("redis hit", func(b *testing.B) {
		for b.Loop() {
			if _, err := in.store.Lookup(ctx, hash); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("key service", func(b *testing.B) {
		for b.Loop() {
			in.store.Invalidate(hash)
			if err := e.rdb.Del(ctx, e.prefix+"keyservice:key:"+hex.EncodeToString(hash)).Err(); err != nil {
				b.Fatal(err)
			}
			if _, err := in.store.Lookup(ctx, hash); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("in-process cache", func(b *testing.B) {
		for b.Loop() {
			if _, err := in.cache.Resolve(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}
