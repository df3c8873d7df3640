package keylookup_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
)

// proxy is a TCP proxy to Redis that the test can cut, standing in for a
// Redis outage without disturbing the shared server.
type proxy struct {
	lis    net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	t.Cleanup(func() { lis.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// cut drops every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.down.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() { p.down.Store(false) }

func TestSubscriberPurgesAfterRedisOutage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	p := newProxy(t, e.rdb.Options().Addr)
	opts := *e.rdb.Options()
	opts.Addr = p.lis.Addr().String()
	viaProxy := redis.NewClient(&opts)
	t.Cleanup(func() { viaProxy.Close() })

	in := e.instance(t, keylookup.Config{FreshTTL: time.Hour}, accesskey.CacheConfig{TTL: time.Hour})
	subscribed := make(chan struct{}, 10)
	e.subscribe(t, viaProxy, in, subscribed)
	<-subscribed

	key, row := e.newKey(t)
	if _, err := in.cache.Resolve(ctx, key); err != nil {
		t.Fatal(err)
	}
	p.cut()
	// Published while the subscriber is cut off: this message is lost.
	if _, err := e.st.AccessKeys().Revoke(ctx, row.ID); err != nil {
		t.Fatal(err)
	}
	if err := keylookup.NewPublisher(e.rdb, e.prefix).PublishKeyChange(ctx, e.hasher.Hash(key)); err != nil {
		t.Fatal(err)
	}
	p.restore()
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber did not resubscribe")
	}
	if _, err := in.cache.Resolve(ctx, key); !errors.Is(err, accesskey.ErrRevoked) {
		t.Fatalf("after resubscribing: err = %v, want ErrRevoked", err)
	}
}

// TestNoCachedKeyTrustedWhileFeedDown: while an instance's invalidation
// subscription is down, a revocation published meanwhile is lost — so the
// instance must not serve a key from its caches then: it re-confirms with
// the KeyService (and refuses, rather than serve a stale copy, when that is
// unreachable too).
func TestNoCachedKeyTrustedWhileFeedDown(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	p := newProxy(t, e.rdb.Options().Addr)
	opts := *e.rdb.Options()
	opts.Addr = p.lis.Addr().String()
	viaProxy := redis.NewClient(&opts)
	t.Cleanup(func() { viaProxy.Close() })

	feed := new(keylookup.Feed)
	in := e.instance(t, keylookup.Config{FreshTTL: time.Hour, Feed: feed},
		accesskey.CacheConfig{TTL: time.Hour, Trusted: feed.Live})
	e.subscribeFeed(t, viaProxy, in, feed)
	if !feed.Live() {
		t.Fatal("feed not live after subscribing")
	}

	revoked, revokedRow := e.newKey(t)
	kept, _ := e.newKey(t)
	for _, k := range []string{revoked, kept} {
		if _, err := in.cache.Resolve(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	p.cut()
	for feed.Live() {
		time.Sleep(5 * time.Millisecond) // the subscriber notices the cut connection
	}
	// Acknowledged by the admin service (committed and published), but this
	// instance is not listening.
	if _, err := e.st.AccessKeys().Revoke(ctx, revokedRow.ID); err != nil {
		t.Fatal(err)
	}
	if err := keylookup.NewPublisher(e.rdb, e.prefix).PublishKeyChange(ctx, e.hasher.Hash(revoked)); err != nil {
		t.Fatal(err)
	}
	if _, err := in.cache.Resolve(ctx, revoked); !errors.Is(err, accesskey.ErrRevoked) {
		t.Fatalf("revoked key while the feed is down: err = %v, want ErrRevoked", err)
	}
	if _, err := in.cache.Resolve(ctx, kept); err != nil {
		t.Fatalf("valid key while the feed is down: %v", err)
	}
	// KeyService unreachable too: no cached copy is served.
	e.srv.Stop()
	if _, err := in.cache.Resolve(ctx, kept); err == nil {
		t.Fatal("valid key served from a cached copy while both the feed and the KeyService are down")
	}
}

// subscribeFeed runs a Subscriber with feed for in until the test ends and
// waits until the feed is live.
func (e *env) subscribeFeed(t *testing.T, rdb redis.UniversalClient, in instance, feed *keylookup.Feed) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	live := make(chan struct{})
	var once sync.Once
	sub := keylookup.NewSubscriber(rdb, e.prefix, keylookup.SubscriberOptions{
		PingInterval: 100 * time.Millisecond,
		RetryDelay:   20 * time.Millisecond,
		Feed:         feed,
		OnSubscribe:  func() { once.Do(func() { close(live) }) },
	}, in.cache, in.store)
	wg.Go(func() { sub.Run(ctx) })
	select {
	case <-live:
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber did not subscribe")
	}
}
