package ingest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
	"github.com/ccproxy/ccproxy/internal/usagestream"
)

// BenchmarkPipeline measures the whole usage path on the machine's Redis
// and Postgres: extproc's Producer XADDs events, one Consumer reads them and
// the Ingester prices and stores them (dedupe, partitions, rollups, spend
// counters), acknowledging after each commit. One op is a burst of 10,000
// events of 200 users, half of them Bedrock; events/s is the end-to-end
// rate from the first Record to the last commit.
func BenchmarkPipeline(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	st := storetest.Open(b)
	rdb, prefix := testenv.Redis(b)
	in, err := New(Options{Store: st, Redis: rdb, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	var stored atomic.Int64
	cons, err := usagestream.NewConsumer(usagestream.ConsumerOptions{Redis: rdb, Prefix: prefix, Block: 50 * time.Millisecond},
		func(ctx context.Context, evs []usage.Event) error {
			if err := in.Handle(ctx, evs); err != nil {
				return err
			}
			stored.Add(int64(len(evs)))
			return nil
		})
	if err != nil {
		b.Fatal(err)
	}
	prod, err := usagestream.NewProducer(usagestream.ProducerOptions{Redis: rdb, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = cons.Run(ctx) }()
	go func() { defer wg.Done(); _ = prod.Run(ctx) }()
	// Both stop (cancel, then wait: defers run last first) before the
	// test's Redis and database are cleaned up.
	defer wg.Wait()
	defer cancel()

	users := make([]uuid.UUID, 200)
	for i := range users {
		users[i] = uuid.New()
	}
	key := uuid.New()
	const burst = 10_000
	var sent int64
	now := time.Now().UTC()
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		for i := range burst {
			provider := usage.ProviderAnthropic
			if i%2 == 1 {
				provider = usage.ProviderBedrock
			}
			prod.Record(ctx, usage.Event{
				RequestID: fmt.Sprintf("bench-%d", sent+int64(i)), Time: now, UserID: users[i%len(users)], KeyID: key,
				SessionID: "bench", PathKind: usage.PathMessages, Model: "claude-sonnet-4-5-20250929",
				Provider: provider, Region: "us-east-1", Stream: true, Status: 200,
				Usage:   usage.Usage{InputTokens: 1200, OutputTokens: 300, CacheReadInputTokens: 40_000, CacheWrite5mInputTokens: 900},
				Latency: 2 * time.Second,
			})
		}
		sent += burst
		for stored.Load() < sent {
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(sent)/total.Seconds(), "events/s")
}
