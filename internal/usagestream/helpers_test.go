package usagestream

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
)

func testEvent(i int) usage.Event {
	return usage.Event{
		RequestID: fmt.Sprintf("req-%05d", i),
		Time:      time.Date(2026, 3, 1, 12, 0, 0, i, time.UTC),
		UserID:    uuid.MustParse("0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69"),
		KeyID:     uuid.MustParse("1c8f9a4b-4d1f-4c9f-8b54-2a3e4d5c6b7a"),
		PathKind:  usage.PathMessages,
		Model:     "claude-sonnet-4-5",
		Provider:  usage.ProviderAnthropic,
		Status:    200,
		Usage:     usage.Usage{InputTokens: int64(i), OutputTokens: 1},
	}
}

// switchableRedis is a client whose server address can be changed: it
// starts at a closed port (Redis unreachable) and moves to the real server.
type switchableRedis struct {
	*redis.Client
	addr atomic.Value // string
}

func newSwitchableRedis(t *testing.T) (*switchableRedis, string) {
	t.Helper()
	real, prefix := testenv.Redis(t)
	s := &switchableRedis{}
	s.addr.Store(closedAddr(t))
	opts := *real.Options()
	opts.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.addr.Load().(string))
	}
	opts.MaxRetries = -1
	opts.DialTimeout = 200 * time.Millisecond
	s.Client = redis.NewClient(&opts)
	t.Cleanup(func() { s.Client.Close() })
	return s, prefix
}

func (s *switchableRedis) connect(t *testing.T, real *redis.Client) {
	t.Helper()
	s.addr.Store(real.Options().Addr)
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func streamIDs(t *testing.T, rdb redis.UniversalClient, key string) []string {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ev, err := Decode([]byte(m.Values[Field].(string)))
		if err != nil {
			t.Fatalf("entry %s: %v", m.ID, err)
		}
		out = append(out, ev.RequestID)
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
