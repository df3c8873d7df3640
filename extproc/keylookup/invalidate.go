package keylookup

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/keys"
)

// Invalidation messages on the channel: "purge", or "keys" followed by the
// hex hashes of the changed keys, space separated.
const (
	msgPurge = "purge"
	msgKeys  = "keys"
	// maxHashesPerMessage bounds one message (and so one parse).
	maxHashesPerMessage = 1000
)

// ChannelName is the Redis pub/sub channel carrying invalidations for the
// given prefix.
func ChannelName(prefix string) string { return prefix + "keyservice:invalidate" }

func keyspace(prefix string) string { return prefix + "keyservice:key:" }

// encodeKeys returns the "keys" message for hashes.
func encodeKeys(hashes [][]byte) string {
	var b bytes.Buffer
	b.WriteString(msgKeys)
	for _, h := range hashes {
		b.WriteByte(' ')
		b.WriteString(hex.EncodeToString(h))
	}
	return b.String()
}

// parseMessage decodes an invalidation message: purge reports a "purge"
// message, else hashes holds the changed keys' hashes.
func parseMessage(msg string) (purge bool, hashes [][]byte, err error) {
	if msg == msgPurge {
		return true, nil, nil
	}
	fields := bytes.Fields([]byte(msg))
	if len(fields) < 2 || string(fields[0]) != msgKeys {
		return false, nil, errors.New("keylookup: unknown invalidation message")
	}
	if len(fields)-1 > maxHashesPerMessage {
		return false, nil, errors.New("keylookup: too many hashes in invalidation message")
	}
	for _, f := range fields[1:] {
		if len(f) != 2*keys.HashLen {
			return false, nil, errors.New("keylookup: bad hash length in invalidation message")
		}
		h := make([]byte, keys.HashLen)
		if _, err := hex.Decode(h, f); err != nil {
			return false, nil, fmt.Errorf("keylookup: bad hash in invalidation message: %w", err)
		}
		hashes = append(hashes, h)
	}
	return false, hashes, nil
}

// Publisher announces key changes to every extproc instance. The admin
// service calls it after committing a change that affects a key (revoke,
// rotate, user disabled or edited, credential changed).
type Publisher struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewPublisher returns a Publisher using rdb and the Redis key prefix the
// extproc instances use.
func NewPublisher(rdb redis.UniversalClient, prefix string) *Publisher {
	return &Publisher{rdb: rdb, prefix: prefix}
}

// PublishKeyChange deletes the shared cache entries of the keys with the
// given hashes and tells every instance to forget them. Hashes must be
// keys.HashLen bytes long.
func (p *Publisher) PublishKeyChange(ctx context.Context, keyHashes ...[]byte) error {
	if len(keyHashes) == 0 {
		return nil
	}
	names := make([]string, len(keyHashes))
	for i, h := range keyHashes {
		if len(h) != keys.HashLen {
			return fmt.Errorf("keylookup: publish: hash %d is %d bytes, want %d", i, len(h), keys.HashLen)
		}
		names[i] = keyspace(p.prefix) + hex.EncodeToString(h)
	}
	if err := p.rdb.Del(ctx, names...).Err(); err != nil {
		return fmt.Errorf("keylookup: publish: delete cached keys: %w", err)
	}
	for start := 0; start < len(keyHashes); start += maxHashesPerMessage {
		batch := keyHashes[start:min(start+maxHashesPerMessage, len(keyHashes))]
		if err := p.rdb.Publish(ctx, ChannelName(p.prefix), encodeKeys(batch)).Err(); err != nil {
			return fmt.Errorf("keylookup: publish key change: %w", err)
		}
	}
	return nil
}

// PublishPurge deletes every shared cache entry and tells every instance to
// forget every key, e.g. after a change affecting many keys.
func (p *Publisher) PublishPurge(ctx context.Context) error {
	iter := p.rdb.Scan(ctx, 0, keyspace(p.prefix)+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := p.rdb.Del(ctx, batch...).Err(); err != nil {
				return fmt.Errorf("keylookup: purge cached keys: %w", err)
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("keylookup: purge cached keys: %w", err)
	}
	if len(batch) > 0 {
		if err := p.rdb.Del(ctx, batch...).Err(); err != nil {
			return fmt.Errorf("keylookup: purge cached keys: %w", err)
		}
	}
	if err := p.rdb.Publish(ctx, ChannelName(p.prefix), msgPurge).Err(); err != nil {
		return fmt.Errorf("keylookup: publish purge: %w", err)
	}
	return nil
}

// An Invalidator forgets cached keys: *auth.Cache and *Store are ones.
type Invalidator interface {
	Invalidate(hash []byte)
	Purge()
}

// SubscriberOptions configures a Subscriber.
type SubscriberOptions struct {
	// Logger receives connection problems; nil discards them.
	Logger *slog.Logger
	// PingInterval is how long the subscription may be silent before it is
	// checked with a PING (default 5 s), so a dead connection is noticed.
	PingInterval time.Duration
	// RetryDelay is the wait before resubscribing after a failure (default
	// 200 ms, doubling to 5 s).
	RetryDelay time.Duration
	// OnSubscribe, if set, is called after every (re)subscription and the
	// purge that follows it.
	OnSubscribe func()
	// Feed, if set, is marked live while the subscription is established
	// (after the purge that follows subscribing) and down as soon as it
	// fails. Give the same Feed to the Store (Config.Feed) and the
	// accesskey.Cache (CacheConfig.Trusted = Feed.Live).
	Feed *Feed
}

// Feed reports whether an instance's invalidation subscription is live.
// While it is not, invalidations published meanwhile are lost, so cached
// answers cannot be trusted to reflect a revocation the admin service has
// acknowledged: the cache and the Store then re-confirm every key with the
// KeyService and serve no stale copy. The zero Feed is down.
type Feed struct{ live atomic.Bool }

// Live reports whether the subscription is established. A nil Feed is
// always live (no gating), for callers that do not track it.
func (f *Feed) Live() bool { return f == nil || f.live.Load() }

func (f *Feed) set(live bool) {
	if f != nil {
		f.live.Store(live)
	}
}

// Subscriber applies published invalidations to the Invalidators of one
// extproc instance.
type Subscriber struct {
	rdb      redis.UniversalClient
	channel  string
	keyspace string
	targets  []Invalidator
	opts     SubscriberOptions
}

// NewSubscriber returns a Subscriber listening on the channel for prefix and
// invalidating targets (typically the auth.Cache and the Store).
func NewSubscriber(rdb redis.UniversalClient, prefix string, opts SubscriberOptions, targets ...Invalidator) *Subscriber {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 5 * time.Second
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 200 * time.Millisecond
	}
	return &Subscriber{rdb: rdb, channel: ChannelName(prefix), keyspace: keyspace(prefix), targets: targets, opts: opts}
}

// Run applies invalidations until ctx ends, resubscribing after Redis
// failures. It returns nil when ctx ends.
func (s *Subscriber) Run(ctx context.Context) error {
	delay := s.opts.RetryDelay
	for {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.opts.Logger.Warn("key invalidation feed lost; resubscribing", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		if err == nil {
			delay = s.opts.RetryDelay
		}
	}
}

// session subscribes once and applies messages until the connection fails.
func (s *Subscriber) session(ctx context.Context) error {
	ps := s.rdb.Subscribe(ctx)
	defer ps.Close()
	// From the moment the connection fails, messages may be lost.
	defer s.opts.Feed.set(false)
	if err := ps.Subscribe(ctx, s.channel); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// Wait for the confirmation so nothing published from here on is missed.
	if _, err := ps.ReceiveTimeout(ctx, s.opts.PingInterval); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// Anything published while we were not subscribed is lost.
	for _, t := range s.targets {
		t.Purge()
	}
	s.opts.Feed.set(true)
	if s.opts.OnSubscribe != nil {
		s.opts.OnSubscribe()
	}
	for {
		m, err := ps.ReceiveTimeout(ctx, s.opts.PingInterval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				if err := ps.Ping(ctx); err != nil {
					return fmt.Errorf("ping: %w", err)
				}
				continue
			}
			return err
		}
		if msg, ok := m.(*redis.Message); ok {
			s.apply(ctx, msg.Payload)
		}
	}
}

func (s *Subscriber) apply(ctx context.Context, payload string) {
	purge, hashes, err := parseMessage(payload)
	if err != nil {
		s.opts.Logger.Error("ignoring invalidation message", "err", err)
		return
	}
	if purge {
		for _, t := range s.targets {
			t.Purge()
		}
		return
	}
	// The publisher deleted the shared entries already; deleting again
	// removes any an instance wrote back from a lookup that raced the change.
	names := make([]string, len(hashes))
	for i, h := range hashes {
		for _, t := range s.targets {
			t.Invalidate(h)
		}
		names[i] = s.keyspace + hex.EncodeToString(h)
	}
	if err := s.rdb.Del(ctx, names...).Err(); err != nil {
		s.opts.Logger.Warn("deleting invalidated keys from cache failed", "err", err)
	}
}
