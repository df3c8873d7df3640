package usagestream

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// BenchmarkProducerRecord is the cost Record adds to the end of one
// response: "buffered" is the in-memory append (the event reaches Redis
// later, from Run), "sync" the synchronous XADD extproc uses (the event is
// in Redis when Record returns), against the shared test Redis, and
// "spooled" the path while Redis is unreachable: append to the spool file
// and sync it, then buffer.
func BenchmarkProducerRecord(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts ProducerOptions
	}{
		{"buffered", ProducerOptions{}},
		{"sync", ProducerOptions{SyncTimeout: DefaultSyncTimeout}},
		{"spooled", ProducerOptions{SyncTimeout: DefaultSyncTimeout, Buffer: 1 << 20}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rdb, prefix := testenv.Redis(b)
			if tc.name == "spooled" {
				opts := *rdb.Options()
				opts.Addr, opts.MaxRetries = closedAddr(b), -1
				rdb = redis.NewClient(&opts)
				defer rdb.Close()
				tc.opts.SpoolDir = b.TempDir()
			}
			tc.opts.Redis, tc.opts.Prefix = rdb, prefix
			p, err := NewProducer(tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = p.Run(ctx) }()
			defer func() { cancel(); <-done }()
			ev := testEvent(1)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				p.Record(ctx, ev)
			}
		})
	}
}
