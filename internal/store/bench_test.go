package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

const benchBatch = 1000

// benchEvents returns batch events with unique request ids (prefix + n),
// spread over 100 users with 2 keys each, 3 models, both providers and the
// hours of one day.
func benchEvents(prefix string, n *atomic.Int64, users []uuid.UUID, keys []uuid.UUID, day time.Time) []store.UsageEvent {
	models := []string{"claude-opus-5-5", "claude-sonnet-4-6", "claude-haiku-4-5"}
	evs := make([]store.UsageEvent, benchBatch)
	for i := range evs {
		id := n.Add(1)
		u := int(id % int64(len(users)))
		e := event(fmt.Sprintf("%s-%d", prefix, id), day.Add(time.Duration(id%86400)*time.Second), users[u], keys[2*u+int(id%2)])
		e.RequestedModel = models[id%3]
		e.SessionID = fmt.Sprintf("session-%d", id%500)
		if id%4 == 0 {
			e.Provider, e.Fallback, e.FallbackReason = store.ProviderBedrock, true, "plan_429"
		}
		e.CostUSD = decimal.New(id%10000, -6)
		evs[i] = e
	}
	return evs
}

func benchStore(b *testing.B) *store.Store {
	b.Helper()
	ctx := context.Background()
	dsn := testenv.Postgres(b)
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	return st
}

func benchIDs() (users, keys []uuid.UUID) {
	for range 100 {
		users = append(users, uuid.New())
		keys = append(keys, uuid.New(), uuid.New())
	}
	return users, keys
}

// BenchmarkInsertEvents measures one ingester storing batches of 1,000 new
// events (dedupe, partitioned insert, hourly and daily rollups).
func BenchmarkInsertEvents(b *testing.B) {
	st := benchStore(b)
	ctx := context.Background()
	users, keys := benchIDs()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	var n atomic.Int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		evs := benchEvents("serial", &n, users, keys, day)
		b.StartTimer()
		got, err := st.Usage().InsertEvents(ctx, evs)
		if err != nil {
			b.Fatal(err)
		}
		if got != benchBatch {
			b.Fatalf("inserted %d, want %d", got, benchBatch)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkInsertEventsParallel runs GOMAXPROCS ingesters at once.
func BenchmarkInsertEventsParallel(b *testing.B) {
	st := benchStore(b)
	ctx := context.Background()
	users, keys := benchIDs()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			evs := benchEvents("parallel", &n, users, keys, day)
			got, err := st.Usage().InsertEvents(ctx, evs)
			if err != nil {
				b.Error(err)
				return
			}
			if got != benchBatch {
				b.Errorf("inserted %d, want %d", got, benchBatch)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkInsertEventsReplay measures re-delivered batches (all duplicates),
// what an ingester pays after a crash before its acknowledgement.
func BenchmarkInsertEventsReplay(b *testing.B) {
	st := benchStore(b)
	ctx := context.Background()
	users, keys := benchIDs()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	var n atomic.Int64
	evs := benchEvents("replay", &n, users, keys, day)
	if _, err := st.Usage().InsertEvents(ctx, evs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		got, err := st.Usage().InsertEvents(ctx, evs)
		if err != nil || got != 0 {
			b.Fatalf("replay inserted %d, %v", got, err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}
