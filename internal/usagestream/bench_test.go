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
// and sync it (one fsync shared by the events recorded meanwhile), then
// buffer. Each runs 16 recording goroutines, as many responses end at once
// on a busy extproc.
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
			ev := testEvent(1)
			b.ReportAllocs()
			b.ResetTimer()
			// Many requests end at once, as on a busy extproc.
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.Record(ctx, ev)
				}
			})
			// Run's final flush (up to FlushTimeout against an unreachable
			// Redis) is not part of Record's cost.
			b.StopTimer()
			cancel()
			<-done
		})
	}
}
