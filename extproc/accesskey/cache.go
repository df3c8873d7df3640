package accesskey

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ccproxy/ccproxy/internal/keys"
)

// Cache defaults.
const (
	DefaultCacheTTL         = 30 * time.Second
	DefaultNegativeCacheTTL = 5 * time.Second
	DefaultCacheEntries     = 10000
	DefaultLookupTimeout    = 5 * time.Second
)

// CacheConfig configures a Cache. Zero fields take the defaults above.
type CacheConfig struct {
	// TTL bounds how long a valid key is trusted without asking again (and
	// so how long a revocation can go unnoticed when no invalidation
	// arrives). An Identity's ExpiresAt shortens it.
	TTL time.Duration
	// NegativeTTL is how long unknown and revoked keys are remembered, so
	// a client retrying with a bad key does not reach the store each time.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache; the least recently used entry goes first.
	MaxEntries int
	// LookupTimeout bounds one call to the wrapped Resolver. The call is
	// shared by every request waiting for that key, so it does not end when
	// the request that started it is cancelled.
	LookupTimeout time.Duration
	// Trusted, if set, reports whether cached valid answers may be used.
	// While it returns false every lookup of a valid key asks the wrapped
	// Resolver (answers for unknown and revoked keys are still used: they
	// only refuse). extproc passes its invalidation feed's state, so that a
	// revocation published while the feed was down cannot be missed.
	Trusted func() bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Cache is a Resolver that remembers the answers of another Resolver. It is
// keyed by the keys' HMAC hashes, never by the keys; it holds at most
// MaxEntries answers; concurrent misses for one key share a single lookup.
// Lookup failures other than unknown/revoked keys are not cached.
type Cache struct {
	next   Resolver
	hasher *keys.Hasher
	cfg    CacheConfig

	mu      sync.Mutex
	entries map[[keys.HashLen]byte]*list.Element // of *cacheEntry
	lru     list.List                            // front = most recently used
	flights map[[keys.HashLen]byte]*flight
	gen     uint64 // bumped by invalidations; stale lookups are not stored
}

type cacheEntry struct {
	hash    [keys.HashLen]byte
	id      Identity
	err     error
	expires time.Time
}

type flight struct {
	done chan struct{}
	id   Identity
	err  error
	// invalidated reports that an invalidation arrived while the lookup
	// was in flight: its answer may predate the change.
	invalidated bool
}

// maxLookupRetries bounds how often Resolve looks a key up again because
// an invalidation raced the lookup.
const maxLookupRetries = 3

// NewCache returns a Cache in front of next that hashes keys with hasher.
func NewCache(next Resolver, hasher *keys.Hasher, cfg CacheConfig) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultCacheTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = DefaultNegativeCacheTTL
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultCacheEntries
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{
		next:    next,
		hasher:  hasher,
		cfg:     cfg,
		entries: make(map[[keys.HashLen]byte]*list.Element),
		flights: make(map[[keys.HashLen]byte]*flight),
	}
}

// Resolve implements Resolver.
func (c *Cache) Resolve(ctx context.Context, key string) (Identity, error) {
	if _, err := keys.Parse(key); err != nil {
		// Never cached: malformed strings would only fill the cache.
		return Identity{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	h := [keys.HashLen]byte(c.hasher.Hash(key))
	for attempt := 0; ; attempt++ {
		id, raced, err := c.resolve(ctx, h, key)
		// A valid answer fetched while an invalidation arrived may be the
		// state before a revocation the admin service has acknowledged:
		// ask again, now that the change is committed.
		if !raced || err != nil || attempt == maxLookupRetries {
			return id, err
		}
	}
}

func (c *Cache) resolve(ctx context.Context, h [keys.HashLen]byte, key string) (Identity, bool, error) {
	now := c.cfg.Now()
	trusted := c.cfg.Trusted == nil || c.cfg.Trusted()

	c.mu.Lock()
	if el, ok := c.entries[h]; ok {
		e := el.Value.(*cacheEntry)
		if now.Before(e.expires) && (trusted || e.err != nil) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.id, false, e.err
		}
		c.removeLocked(el)
	}
	f, ok := c.flights[h]
	if !ok {
		f = &flight{done: make(chan struct{})}
		c.flights[h] = f
		go c.fetch(context.WithoutCancel(ctx), h, key, f, c.gen)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.id, f.invalidated, f.err
	case <-ctx.Done():
		return Identity{}, false, fmt.Errorf("accesskey: waiting for key lookup: %w", ctx.Err())
	}
}

func (c *Cache) fetch(ctx context.Context, h [keys.HashLen]byte, key string, f *flight, gen uint64) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LookupTimeout)
	id, err := c.next.Resolve(ctx, key)
	cancel()
	now := c.cfg.Now()

	c.mu.Lock()
	delete(c.flights, h)
	if gen == c.gen {
		switch {
		case err == nil:
			expires := now.Add(c.cfg.TTL)
			if !id.ExpiresAt.IsZero() && id.ExpiresAt.Before(expires) {
				expires = id.ExpiresAt
			}
			c.storeLocked(h, id, nil, expires)
		case errors.Is(err, ErrUnknownKey), errors.Is(err, ErrRevoked):
			c.storeLocked(h, Identity{}, err, now.Add(c.cfg.NegativeTTL))
		}
	}
	f.id, f.err, f.invalidated = id, err, gen != c.gen
	c.mu.Unlock()
	close(f.done)
}

func (c *Cache) storeLocked(h [keys.HashLen]byte, id Identity, err error, expires time.Time) {
	if el, ok := c.entries[h]; ok {
		c.removeLocked(el)
	}
	for c.lru.Len() >= c.cfg.MaxEntries {
		c.removeLocked(c.lru.Back())
	}
	c.entries[h] = c.lru.PushFront(&cacheEntry{hash: h, id: id, err: err, expires: expires})
}

func (c *Cache) removeLocked(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry).hash)
	c.lru.Remove(el)
}

// Invalidate forgets the answer for the key with the given HMAC hash (as
// published when a key is revoked or changed). Lookups already in flight are
// not cached.
func (c *Cache) Invalidate(hash []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if len(hash) != keys.HashLen {
		return
	}
	if el, ok := c.entries[[keys.HashLen]byte(hash)]; ok {
		c.removeLocked(el)
	}
}

// Purge forgets every answer, e.g. after losing the invalidation feed.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.lru.Init()
}

// Len returns the number of cached answers.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
