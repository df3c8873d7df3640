package accesskey

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/testenv/parked"
)

func newHasher(t testing.TB) *keys.Hasher {
	t.Helper()
	h, err := keys.NewHasher([]byte(strings.Repeat("s", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newKey(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a manually advanced time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestStoreResolver(t *testing.T) {
	h := newHasher(t)
	user, keyID := uuid.New(), uuid.New()
	active, planOnly, revoked, futureRevoked, expired, rotating, disabled, unknown :=
		newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	budgeted := newKey(t)
	budget := decimal.RequireFromString("12.50")
	cred := &BedrockCredential{ID: uuid.New(), Kind: "api_key", Region: "us-east-1"}
	store := MemoryStore{}
	store.Add(h, budgeted, KeyRecord{KeyID: keyID, UserID: user, RoutingStrategy: RoutingBedrockOnly, Credential: cred, MonthlyBudgetUSD: &budget})
	store.Add(h, active, KeyRecord{KeyID: keyID, UserID: user, Prefix: keys.DisplayPrefix(active)})
	store.Add(h, planOnly, KeyRecord{KeyID: keyID, UserID: user, RoutingStrategy: RoutingPlanOnly})
	store.Add(h, revoked, KeyRecord{KeyID: keyID, UserID: user, RevokedAt: t0.Add(-time.Second)})
	store.Add(h, futureRevoked, KeyRecord{KeyID: keyID, UserID: user, RevokedAt: t0.Add(time.Hour)})
	store.Add(h, expired, KeyRecord{KeyID: keyID, UserID: user, ExpiresAt: t0})
	store.Add(h, rotating, KeyRecord{KeyID: keyID, UserID: user, ExpiresAt: t0.Add(time.Minute)})
	store.Add(h, disabled, KeyRecord{KeyID: keyID, UserID: user, UserDisabled: true})
	r := NewStoreResolver(store, h, func() time.Time { return t0 })

	tests := []struct {
		name    string
		key     string
		want    Identity
		wantErr error
	}{
		{"active", active, Identity{UserID: user, KeyID: keyID, KeyPrefix: keys.DisplayPrefix(active), RoutingStrategy: RoutingPlanFirst}, nil},
		{"budget and credential", budgeted, Identity{UserID: user, KeyID: keyID, RoutingStrategy: RoutingBedrockOnly, Bedrock: cred, MonthlyBudgetUSD: &budget}, nil},
		{"plan only", planOnly, Identity{UserID: user, KeyID: keyID, RoutingStrategy: RoutingPlanOnly}, nil},
		{"revoked", revoked, Identity{}, ErrRevoked},
		{"revocation scheduled", futureRevoked, Identity{UserID: user, KeyID: keyID, RoutingStrategy: RoutingPlanFirst, ExpiresAt: t0.Add(time.Hour)}, nil},
		{"grace period over", expired, Identity{}, ErrRevoked},
		{"rotating", rotating, Identity{UserID: user, KeyID: keyID, RoutingStrategy: RoutingPlanFirst, ExpiresAt: t0.Add(time.Minute)}, nil},
		{"user disabled", disabled, Identity{}, ErrRevoked},
		{"unknown", unknown, Identity{}, ErrUnknownKey},
		{"malformed", "ak_test123", Identity{}, ErrMalformed},
		{"empty", "", Identity{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(context.Background(), tt.key)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("identity = %+v, want %+v", got, tt.want)
			}
			if err != nil && tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error %q contains the key", err)
			}
		})
	}
}

// countingResolver counts lookups and can hold them until released.
type countingResolver struct {
	next  Resolver
	calls atomic.Int32
	gate  chan struct{} // if non-nil, lookups wait for it to close
	fail  atomic.Bool
}

func (c *countingResolver) Resolve(ctx context.Context, key string) (Identity, error) {
	c.calls.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return Identity{}, ctx.Err()
		}
	}
	if c.fail.Load() {
		return Identity{}, errors.New("store unavailable")
	}
	return c.next.Resolve(ctx, key)
}

func TestCache(t *testing.T) {
	h := newHasher(t)
	store := MemoryStore{}
	user := uuid.New()
	good, revoked, unknown, rotating := newKey(t), newKey(t), newKey(t), newKey(t)
	store.Add(h, good, KeyRecord{KeyID: uuid.New(), UserID: user})
	store.Add(h, revoked, KeyRecord{KeyID: uuid.New(), UserID: user, RevokedAt: t0.Add(-time.Hour)})
	store.Add(h, rotating, KeyRecord{KeyID: uuid.New(), UserID: user, ExpiresAt: t0.Add(10 * time.Second)})
	clk := &clock{now: t0}
	ctx := context.Background()

	newCache := func(max int) (*Cache, *countingResolver) {
		cr := &countingResolver{next: NewStoreResolver(store, h, clk.Now)}
		return NewCache(cr, h, CacheConfig{TTL: time.Minute, NegativeTTL: 5 * time.Second, MaxEntries: max, Now: clk.Now}), cr
	}

	t.Run("positive entries live for TTL", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(10)
		for range 3 {
			if id, err := c.Resolve(ctx, good); err != nil || id.UserID != user {
				t.Fatalf("Resolve = %+v, %v", id, err)
			}
		}
		if n := cr.calls.Load(); n != 1 {
			t.Fatalf("lookups = %d, want 1", n)
		}
		clk.Add(time.Minute)
		if _, err := c.Resolve(ctx, good); err != nil {
			t.Fatal(err)
		}
		if n := cr.calls.Load(); n != 2 {
			t.Fatalf("lookups after TTL = %d, want 2", n)
		}
	})
	t.Run("expiry shortens TTL", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(10)
		c.Resolve(ctx, rotating)
		clk.Add(9 * time.Second)
		c.Resolve(ctx, rotating)
		clk.Add(time.Second)
		if _, err := c.Resolve(ctx, rotating); !errors.Is(err, ErrRevoked) {
			t.Fatalf("after grace period: err = %v, want ErrRevoked", err)
		}
		if n := cr.calls.Load(); n != 2 {
			t.Fatalf("lookups = %d, want 2", n)
		}
	})
	t.Run("negative entries live for NegativeTTL", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(10)
		for range 2 {
			if _, err := c.Resolve(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("err = %v, want ErrUnknownKey", err)
			}
			if _, err := c.Resolve(ctx, revoked); !errors.Is(err, ErrRevoked) {
				t.Fatalf("err = %v, want ErrRevoked", err)
			}
		}
		if n := cr.calls.Load(); n != 2 {
			t.Fatalf("lookups = %d, want 2", n)
		}
		clk.Add(5 * time.Second)
		c.Resolve(ctx, unknown)
		if n := cr.calls.Load(); n != 3 {
			t.Fatalf("lookups after NegativeTTL = %d, want 3", n)
		}
	})
	t.Run("malformed keys never reach the store or the cache", func(t *testing.T) {
		c, cr := newCache(10)
		if _, err := c.Resolve(ctx, "ak_test123"); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
		if cr.calls.Load() != 0 || c.Len() != 0 {
			t.Fatalf("lookups = %d, entries = %d", cr.calls.Load(), c.Len())
		}
	})
	t.Run("lookup failures are not cached", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(10)
		cr.fail.Store(true)
		if _, err := c.Resolve(ctx, good); err == nil || errors.Is(err, ErrUnknownKey) {
			t.Fatalf("err = %v, want a lookup failure", err)
		}
		cr.fail.Store(false)
		if _, err := c.Resolve(ctx, good); err != nil {
			t.Fatal(err)
		}
		if n := cr.calls.Load(); n != 2 {
			t.Fatalf("lookups = %d, want 2", n)
		}
	})
	t.Run("bounded, least recently used evicted", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(2)
		a, b, d := newKey(t), newKey(t), newKey(t)
		c.Resolve(ctx, a) // 1 lookup
		c.Resolve(ctx, b) // 2
		c.Resolve(ctx, a) // hit; b is now least recently used
		c.Resolve(ctx, d) // 3, evicts b
		c.Resolve(ctx, a) // hit
		c.Resolve(ctx, b) // 4
		if n := cr.calls.Load(); n != 4 || c.Len() != 2 {
			t.Fatalf("lookups = %d (want 4), entries = %d (want 2)", n, c.Len())
		}
	})
	t.Run("concurrent misses share one lookup", func(t *testing.T) {
		const resolve = "github.com/ccproxy/ccproxy/extproc/accesskey.(*Cache).resolve"
		clk.now = t0
		c, cr := newCache(10)
		cr.gate = make(chan struct{})
		// The caller that starts the lookup gives up; the lookup goes on
		// for the others.
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { _, err := c.Resolve(cctx, good); done <- err }()
		parked.Wait(t, 1, "select", resolve)
		parked.Wait(t, 1, "select", "github.com/ccproxy/ccproxy/extproc/accesskey.(*countingResolver).Resolve") // the lookup, at the gate
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				id, err := c.Resolve(ctx, good)
				if err == nil && id.UserID != user {
					err = errors.New("wrong identity")
				}
				errs <- err
			})
		}
		// All nine callers wait while the gate holds the lookup: had any
		// of them started another, the store would count it.
		parked.Wait(t, 9, "select", resolve)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter: err = %v", err)
		}
		close(cr.gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := cr.calls.Load(); n != 1 {
			t.Fatalf("lookups = %d, want 1", n)
		}
	})
	t.Run("invalidate and purge", func(t *testing.T) {
		clk.now = t0
		c, cr := newCache(10)
		c.Resolve(ctx, good)
		c.Resolve(ctx, unknown)
		c.Invalidate(h.Hash(good))
		c.Resolve(ctx, good)
		c.Resolve(ctx, unknown)
		if n := cr.calls.Load(); n != 3 {
			t.Fatalf("lookups after Invalidate = %d, want 3", n)
		}
		c.Purge()
		if c.Len() != 0 {
			t.Fatalf("entries after Purge = %d", c.Len())
		}
	})
}

func BenchmarkCacheHit(b *testing.B) {
	h := newHasher(b)
	store := MemoryStore{}
	key := newKey(b)
	store.Add(h, key, KeyRecord{KeyID: uuid.New(), UserID: uuid.New()})
	c := NewCache(NewStoreResolver(store, h, nil), h, CacheConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Resolve(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// answerThenRevoke answers its first lookup with a valid key once released,
// as a lookup answered just before a revocation committed; every later
// lookup says the key is revoked.
type answerThenRevoke struct {
	calls   atomic.Int32
	started chan struct{}
	release chan struct{}
}

func (a *answerThenRevoke) Resolve(ctx context.Context, _ string) (Identity, error) {
	if a.calls.Add(1) > 1 {
		return Identity{}, ErrRevoked
	}
	close(a.started)
	<-a.release
	return Identity{KeyID: uuid.New()}, nil
}

// TestCacheLooksUpAgainWhenInvalidatedMidFlight: an invalidation that
// arrives while a lookup is in flight means the change is committed and the
// answer may predate it, so the caller does not get that answer: the cache
// asks again.
func TestCacheLooksUpAgainWhenInvalidatedMidFlight(t *testing.T) {
	h := newHasher(t)
	key := newKey(t)
	next := &answerThenRevoke{started: make(chan struct{}), release: make(chan struct{})}
	c := NewCache(next, h, CacheConfig{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Resolve(context.Background(), key)
		done <- err
	}()
	<-next.started
	c.Invalidate(h.Hash(key))
	close(next.release)
	if err := <-done; !errors.Is(err, ErrRevoked) {
		t.Fatalf("Resolve = %v, want ErrRevoked (the answer raced an invalidation)", err)
	}
	if n := next.calls.Load(); n != 2 {
		t.Errorf("lookups = %d, want 2", n)
	}
}

// TestCacheUntrustedSkipsValidEntries: while CacheConfig.Trusted reports
// false, cached valid answers are not used (refusals still are).
func TestCacheUntrustedSkipsValidEntries(t *testing.T) {
	h := newHasher(t)
	key := newKey(t)
	var trusted atomic.Bool
	trusted.Store(true)
	store := MemoryStore{}
	store.Add(h, key, KeyRecord{KeyID: uuid.New(), UserID: uuid.New()})
	next := &countingResolver{next: NewStoreResolver(store, h, nil)}
	c := NewCache(next, h, CacheConfig{TTL: time.Hour, Trusted: trusted.Load})
	for range 2 {
		if _, err := c.Resolve(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	if n := next.calls.Load(); n != 1 {
		t.Fatalf("trusted: lookups = %d, want 1", n)
	}
	trusted.Store(false)
	for range 2 {
		if _, err := c.Resolve(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	if n := next.calls.Load(); n != 3 {
		t.Errorf("untrusted: lookups = %d, want 3 (each asks)", n)
	}
}
