package keylookup_test

import (
	"bytes"
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminks "github.com/ccproxy/ccproxy/admin/keyservice"
	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

type env struct {
	st     *store.Store
	hasher *keys.Hasher
	rdb    *redis.Client
	prefix string
	addr   string
	srv    *grpc.Server
	user   store.User
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rdb, prefix := testenv.Redis(t)
	budget := decimal.RequireFromString("40")
	preempt := 0.9
	user, err := st.Users().Create(ctx, store.NewUser{Name: "ada", MonthlyBudgetUSD: &budget, PreemptThreshold: &preempt})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, hasher: hasher, rdb: rdb, prefix: prefix, user: user}
	e.startServer(t, "127.0.0.1:0")
	return e
}

// startServer (re)starts the KeyService on addr.
func (e *env) startServer(t testing.TB, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	e.srv = grpc.NewServer()
	adminks.NewServer(e.st, adminks.Options{}).Register(e.srv)
	go e.srv.Serve(lis)
	t.Cleanup(e.srv.Stop)
}

func (e *env) client(t testing.TB, addr string) keyservicev1.KeyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return keyservicev1.NewKeyServiceClient(conn)
}

func (e *env) newKey(t testing.TB) (string, store.AccessKey) {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := e.st.AccessKeys().Create(context.Background(), store.NewAccessKey{UserID: e.user.ID, Name: "k", Hash: e.hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
	if err != nil {
		t.Fatal(err)
	}
	return k, ak
}

// instance is one extproc's resolver chain.
type instance struct {
	store *keylookup.Store
	cache *accesskey.Cache
}

func (e *env) instance(t testing.TB, cfg keylookup.Config, cacheCfg accesskey.CacheConfig) instance {
	t.Helper()
	if cfg.Client == nil {
		cfg.Client = e.client(t, e.addr)
	}
	if cfg.Redis == nil {
		cfg.Redis = e.rdb
	}
	cfg.Prefix = e.prefix
	if cfg.MACKey == nil {
		cfg.MACKey = e.hasher.Derive(keylookup.CacheMACPurpose)
	}
	s, err := keylookup.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return instance{store: s, cache: keylookup.NewResolver(s, e.hasher, cacheCfg)}
}

// subscribe runs a Subscriber for in until the test ends and waits for its
// first subscription.
func (e *env) subscribe(t testing.TB, rdb redis.UniversalClient, in instance, subscribed chan<- struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	first := make(chan struct{})
	var once sync.Once
	sub := keylookup.NewSubscriber(rdb, e.prefix, keylookup.SubscriberOptions{
		PingInterval: 100 * time.Millisecond,
		RetryDelay:   20 * time.Millisecond,
		OnSubscribe: func() {
			once.Do(func() { close(first) })
			if subscribed != nil {
				subscribed <- struct{}{}
			}
		},
	}, in.cache, in.store)
	wg.Go(func() { sub.Run(ctx) })
	select {
	case <-first:
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber did not subscribe")
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestLookupIsCachedAtEachLayer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	key, row := e.newKey(t)
	a := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})

	rec, err := a.store.Lookup(ctx, e.hasher.Hash(key))
	if err != nil {
		t.Fatal(err)
	}
	if rec.KeyID != row.ID || rec.UserID != e.user.ID || rec.Prefix != keys.DisplayPrefix(key) || rec.RoutingStrategy != "plan_first" ||
		rec.MonthlyBudgetUSD == nil || rec.MonthlyBudgetUSD.String() != "40" || rec.Credential != nil ||
		rec.PreemptThreshold == nil || *rec.PreemptThreshold != 0.9 {
		t.Fatalf("record = %+v", rec)
	}
	id, err := a.cache.Resolve(ctx, key)
	if err != nil || id.KeyID != row.ID || id.MonthlyBudgetUSD == nil || !id.MonthlyBudgetUSD.Equal(decimal.RequireFromString("40")) ||
		id.PreemptThreshold == nil || *id.PreemptThreshold != 0.9 {
		t.Fatalf("Resolve = %+v, %v", id, err)
	}

	t.Run("redis holds the answer under the prefix", func(t *testing.T) {
		n, err := e.rdb.Exists(ctx, e.prefix+"keyservice:key:"+hex.EncodeToString(e.hasher.Hash(key))).Result()
		if err != nil || n != 1 {
			t.Fatalf("Exists = %d, %v", n, err)
		}
	})
	e.srv.Stop()
	t.Run("in-process cache answers without the key service", func(t *testing.T) {
		if got := a.cache.Len(); got != 1 {
			t.Fatalf("cache.Len = %d", got)
		}
		if id, err := a.cache.Resolve(ctx, key); err != nil || id.KeyID != row.ID {
			t.Fatalf("Resolve = %+v, %v", id, err)
		}
	})
	t.Run("a second instance answers from redis", func(t *testing.T) {
		b := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})
		if id, err := b.cache.Resolve(ctx, key); err != nil || id.KeyID != row.ID || id.MonthlyBudgetUSD == nil || id.MonthlyBudgetUSD.String() != "40" {
			t.Fatalf("Resolve = %+v, %v", id, err)
		}
		other, _ := e.newKey(t)
		if _, err := b.cache.Resolve(ctx, other); err == nil || errors.Is(err, accesskey.ErrUnknownKey) {
			t.Fatalf("uncached key with the key service down: err = %v, want a lookup failure", err)
		}
	})
}

func TestUnknownKey(t *testing.T) {
	e := newEnv(t)
	a := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})
	k, _ := keys.Generate()
	if _, err := a.cache.Resolve(context.Background(), k); !errors.Is(err, accesskey.ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
}

func TestRevocationReachesEveryInstance(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	pub := keylookup.NewPublisher(e.rdb, e.prefix)
	// Long TTLs: only the invalidation can make the instances notice.
	long := accesskey.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}
	instances := []instance{
		e.instance(t, keylookup.Config{FreshTTL: time.Hour}, long),
		e.instance(t, keylookup.Config{FreshTTL: time.Hour}, long),
	}
	for _, in := range instances {
		e.subscribe(t, e.rdb, in, nil)
	}
	var latencies []time.Duration
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, row store.AccessKey)
	}{
		{"revoke", func(t *testing.T, row store.AccessKey) {
			if _, err := e.st.AccessKeys().Revoke(ctx, row.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"rotate without grace", func(t *testing.T, row store.AccessKey) {
			k, _ := keys.Generate()
			if _, _, err := e.st.AccessKeys().Rotate(ctx, row.ID, e.hasher.Hash(k), keys.DisplayPrefix(k), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"disable the user", func(t *testing.T, row store.AccessKey) {
			if _, err := e.st.Users().Update(ctx, row.UserID, store.UserPatch{Status: store.Some(store.UserDisabled)}); err != nil {
				t.Fatal(err)
			}
			// Every key of the test belongs to this user.
			t.Cleanup(func() {
				if _, err := e.st.Users().Update(ctx, row.UserID, store.UserPatch{Status: store.Some(store.UserActive)}); err != nil {
					t.Error(err)
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, row := e.newKey(t)
			for i, in := range instances {
				if _, err := in.cache.Resolve(ctx, key); err != nil {
					t.Fatalf("instance %d before: %v", i, err)
				}
			}
			tc.change(t, row)
			published := time.Now()
			if err := pub.PublishKeyChange(ctx, e.hasher.Hash(key)); err != nil {
				t.Fatal(err)
			}
			for i, in := range instances {
				d, err := untilRefused(ctx, in, key, published)
				if err != nil {
					t.Fatalf("instance %d: %v", i, err)
				}
				latencies = append(latencies, d)
			}
		})
	}
	// The promise is one second. A loaded CI machine can stall any single
	// measurement, so the test holds the median to it and every instance to
	// a generous bound (the caches' hour-long TTLs rule out any other way to
	// notice); BenchmarkRevocationPropagation reports the figure itself.
	slices.Sort(latencies)
	if len(latencies) != 6 {
		t.Fatalf("%d measurements, want 6", len(latencies))
	}
	if med := latencies[len(latencies)/2]; med >= time.Second {
		t.Errorf("median revocation latency %v over %v, want < 1s", med, latencies)
	}
	t.Run("purge", func(t *testing.T) {
		key, _ := e.newKey(t)
		if _, err := instances[0].cache.Resolve(ctx, key); err != nil {
			t.Fatal(err)
		}
		if err := pub.PublishPurge(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(revocationBound)
		for instances[0].cache.Len() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("cache.Len = %d after purge", instances[0].cache.Len())
			}
			time.Sleep(10 * time.Millisecond)
		}
		n, err := e.rdb.Exists(ctx, e.prefix+"keyservice:key:"+hex.EncodeToString(e.hasher.Hash(key))).Result()
		if err != nil || n != 0 {
			t.Fatalf("redis entry after purge: Exists = %d, %v", n, err)
		}
	})
}

// revocationBound is how long a test waits for an invalidation before it
// declares it lost; far above the one-second promise, far below the caches'
// TTLs.
const revocationBound = 30 * time.Second

// untilRefused polls in until it refuses key and returns how long after
// since that happened.
func untilRefused(ctx context.Context, in instance, key string, since time.Time) (time.Duration, error) {
	for {
		_, err := in.cache.Resolve(ctx, key)
		if errors.Is(err, accesskey.ErrRevoked) {
			return time.Since(since), nil
		}
		if time.Since(since) > revocationBound {
			return 0, fmt.Errorf("still accepts the key %v after the change (err %v)", revocationBound, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkRevocationPropagation measures the revocation promise: from the
// invalidation being published to a second extproc instance refusing the
// key (ns/op is the propagation latency; the promise is < 1 s).
func BenchmarkRevocationPropagation(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	pub := keylookup.NewPublisher(e.rdb, e.prefix)
	long := accesskey.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour}
	in := e.instance(b, keylookup.Config{FreshTTL: time.Hour}, long)
	e.subscribe(b, e.rdb, in, nil)
	for b.Loop() {
		b.StopTimer()
		key, row := e.newKey(b)
		if _, err := in.cache.Resolve(ctx, key); err != nil {
			b.Fatal(err)
		}
		if _, err := e.st.AccessKeys().Revoke(ctx, row.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		published := time.Now()
		if err := pub.PublishKeyChange(ctx, e.hasher.Hash(key)); err != nil {
			b.Fatal(err)
		}
		if _, err := untilRefused(ctx, in, key, published); err != nil {
			b.Fatal(err)
		}
	}
}

// clock is a settable clock shared by a Store and its cache.
type clock struct{ ns atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

func TestServesCachedKeysWhileDependenciesAreDown(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	deadRedis := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
	t.Cleanup(func() { deadRedis.Close() })

	for _, tc := range []struct {
		name  string
		redis redis.UniversalClient
	}{
		{"redis up", e.rdb},
		{"redis unreachable", deadRedis},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.startServer(t, "127.0.0.1:0")
			clk := newClock()
			in := e.instance(t, keylookup.Config{Redis: tc.redis, FreshTTL: time.Second, StaleTTL: time.Minute, Now: clk.now},
				accesskey.CacheConfig{TTL: time.Second, Now: clk.now})
			key, row := e.newKey(t)
			if _, err := in.cache.Resolve(ctx, key); err != nil {
				t.Fatal(err)
			}
			e.srv.Stop()

			clk.add(30 * time.Second) // past every fresh TTL, within StaleTTL
			if id, err := in.cache.Resolve(ctx, key); err != nil || id.KeyID != row.ID {
				t.Fatalf("stale but within StaleTTL: Resolve = %+v, %v", id, err)
			}
			clk.add(time.Minute) // past StaleTTL
			if _, err := in.cache.Resolve(ctx, key); err == nil || errors.Is(err, accesskey.ErrRevoked) || errors.Is(err, accesskey.ErrUnknownKey) {
				t.Fatalf("past StaleTTL: err = %v, want a lookup failure", err)
			}
		})
	}
}

func TestBreakerOpensAndFailsFast(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	deadRedis := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
	t.Cleanup(func() { deadRedis.Close() })
	in := e.instance(t, keylookup.Config{
		Client:           e.client(t, closedAddr(t)),
		Redis:            deadRedis,
		BreakerFailures:  2,
		BreakerOpenDelay: time.Hour,
	}, accesskey.CacheConfig{})
	hash := e.hasher.Hash("irrelevant")
	for range 2 {
		if _, err := in.store.Lookup(ctx, hash); err == nil || errors.Is(err, gobreaker.ErrOpenState) {
			t.Fatalf("err = %v, want a dependency failure", err)
		}
	}
	r, rpc := in.store.BreakerStates()
	if r != gobreaker.StateOpen || rpc != gobreaker.StateOpen {
		t.Fatalf("breakers = %v, %v; want open, open", r, rpc)
	}
	if _, err := in.store.Lookup(ctx, hash); !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("err = %v, want ErrOpenState", err)
	}
}

// TestForgedCacheEntriesIgnored: whoever can write to Redis must not be able
// to grant access. With the KeyService down, an instance that finds a
// tampered, unsealed, moved or foreign-keyed entry in Redis must fail the
// lookup rather than believe it.
func TestForgedCacheEntriesIgnored(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	keyA, rowA := e.newKey(t)
	keyB, _ := e.newKey(t)
	redisName := func(k string) string { return e.prefix + "keyservice:key:" + hex.EncodeToString(e.hasher.Hash(k)) }
	a := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})
	for _, k := range []string{keyA, keyB} {
		if _, err := a.store.Lookup(ctx, e.hasher.Hash(k)); err != nil {
			t.Fatal(err)
		}
	}
	sealedA, err := e.rdb.Get(ctx, redisName(keyA)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sealedB, err := e.rdb.Get(ctx, redisName(keyB)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()

	t.Run("an authentic entry is believed", func(t *testing.T) {
		b := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})
		if id, err := b.cache.Resolve(ctx, keyA); err != nil || id.KeyID != rowA.ID {
			t.Fatalf("Resolve = %+v, %v", id, err)
		}
	})
	tampered := bytes.Clone(sealedA)
	i := bytes.Index(tampered, []byte(rowA.ID.String()))
	if i < 0 {
		t.Fatalf("key id not found in the cached entry %q", sealedA)
	}
	tampered[i] ^= 1
	tests := []struct {
		name  string
		key   string // the key resolved
		value []byte // written under its Redis name
	}{
		{"a tampered record", keyA, tampered},
		{"an unsealed record (no MAC)", keyA, sealedA[32:]},
		{"another key's entry moved under this key's name", keyB, sealedA},
		{"too short to hold a MAC", keyA, []byte("{}")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.rdb.Set(ctx, redisName(tc.key), tc.value, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			b := e.instance(t, keylookup.Config{}, accesskey.CacheConfig{})
			if id, err := b.cache.Resolve(ctx, tc.key); err == nil {
				t.Fatalf("forged entry believed: %+v", id)
			}
		})
	}
	t.Run("an entry sealed under another secret", func(t *testing.T) {
		other, err := keys.NewHasher([]byte("another secret, also 32 bytes long"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.rdb.Set(ctx, redisName(keyB), sealedB, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		b := e.instance(t, keylookup.Config{MACKey: other.Derive(keylookup.CacheMACPurpose)}, accesskey.CacheConfig{})
		if id, err := b.cache.Resolve(ctx, keyB); err == nil {
			t.Fatalf("entry sealed under another secret believed: %+v", id)
		}
	})
	t.Run("a short MAC key is refused", func(t *testing.T) {
		if _, err := keylookup.New(keylookup.Config{Client: e.client(t, e.addr), Redis: e.rdb, MACKey: make([]byte, 31)}); err == nil {
			t.Fatal("New accepted a 31-byte MAC key")
		}
	})
}
