package usagestream

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// TestProducerPublishesBeforeRecordReturns: with SyncTimeout, the event is
// in the stream when Record returns — Run is not even running — so a
// process killed right after the response ended loses nothing.
func TestProducerPublishesBeforeRecordReturns(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	p, err := NewProducer(ProducerOptions{Redis: rdb, Prefix: prefix, SyncTimeout: DefaultSyncTimeout, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		p.Record(context.Background(), testEvent(i))
		if got := streamIDs(t, rdb, StreamKey(prefix)); !equal(got, want(i+1, 0)) {
			t.Fatalf("after Record %d the stream holds %v, want %v", i, got, want(i+1, 0))
		}
	}
	if p.Buffered() != 0 {
		t.Errorf("buffered %d, want 0", p.Buffered())
	}
	if got := testutil.ToFloat64(p.metrics.direct); got != 3 {
		t.Errorf("direct = %v, want 3", got)
	}
}

// TestProducerSpoolSurvivesKill: events recorded while Redis is unreachable
// are on disk when Record returns; a process that dies then (nothing of the
// Producer but its spool directory survives, as after SIGKILL) leaves them
// to the next one, which publishes them and empties the spool.
func TestProducerSpoolSurvivesKill(t *testing.T) {
	real, _ := testenv.Redis(t)
	sw, prefix := newSwitchableRedis(t)
	dir := t.TempDir()
	dead, err := NewProducer(ProducerOptions{Redis: sw, Prefix: prefix, SyncTimeout: 100 * time.Millisecond, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		dead.Record(context.Background(), testEvent(i))
	}
	if dead.Buffered() != 20 {
		t.Fatalf("buffered %d, want 20", dead.Buffered())
	}
	// The process is gone: its Producer is never run nor stopped.

	next, err := NewProducer(ProducerOptions{Redis: real, Prefix: prefix, SyncTimeout: DefaultSyncTimeout, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(next.metrics.replayed); got != 20 {
		t.Fatalf("replayed = %v, want 20", got)
	}
	// New events wait behind the replayed ones, spooled too.
	next.Record(context.Background(), testEvent(20))
	runProducer(t, next)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := next.WaitSent(ctx, 21); err != nil {
		t.Fatal(err)
	}
	if got := streamIDs(t, real, StreamKey(prefix)); !equal(got, want(21, 0)) {
		t.Fatalf("stream holds %v, want the 21 events once each in order", got)
	}
	waitFor(t, "the spool to be emptied", 5*time.Second, func() bool {
		fi, err := os.Stat(filepath.Join(dir, SpoolFile))
		return err == nil && fi.Size() == 0
	})
}

// TestProducerShutdownWithRedisDownKeepsSpool: with a spool, events still
// waiting when the flush deadline passes are not lost but left for the next
// start.
func TestProducerShutdownWithRedisDownKeepsSpool(t *testing.T) {
	sw, prefix := newSwitchableRedis(t)
	dir := t.TempDir()
	p, err := NewProducer(ProducerOptions{Redis: sw, Prefix: prefix, SpoolDir: dir, FlushTimeout: 200 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := runProducer(t, p)
	for i := range 5 {
		p.Record(context.Background(), testEvent(i))
	}
	stop()
	p.Record(context.Background(), testEvent(5)) // after Run returned
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("shutdown")); got != 0 {
		t.Errorf("dropped{shutdown} = %v, want 0", got)
	}
	f, err := os.Open(filepath.Join(dir, SpoolFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, bad, err := readSpool(f)
	if err != nil || bad != 0 || len(evs) != 6 {
		t.Fatalf("spool holds %d events (%d undecodable, err %v), want 6", len(evs), bad, err)
	}
	for i, ev := range evs {
		if ev != testEvent(i) {
			t.Errorf("spool event %d = %+v, want %+v", i, ev, testEvent(i))
		}
	}
}

// TestReadSpoolSkipsTornLine: a line cut short by a crash mid-write is
// skipped and counted; the lines before it are kept.
func TestReadSpoolSkipsTornLine(t *testing.T) {
	full := string(Encode(testEvent(0))) + "\n" + string(Encode(testEvent(1))) + "\n"
	torn := string(Encode(testEvent(2)))
	torn = torn[:len(torn)/2]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SpoolFile), []byte(full+torn), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, evs, bad, err := openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 || len(evs) != 2 || evs[0] != testEvent(0) || evs[1] != testEvent(1) {
		t.Fatalf("read %d events, %d undecodable; want 2, 1", len(evs), bad)
	}
	// The next event appended is whole on its own line.
	if err := sp.append(testEvent(3)); err != nil {
		t.Fatal(err)
	}
	sp.close()
	_, evs, bad, err = openSpool(dir)
	if err != nil || bad != 1 || len(evs) != 3 || evs[2] != testEvent(3) {
		t.Fatalf("after appending: %d events, %d undecodable, err %v; want 3, 1", len(evs), bad, err)
	}
}

// TestProducerSpoolConcurrentRecords: events recorded at once by many
// goroutines (sharing fsyncs) are all in the spool when their Record
// returns.
func TestProducerSpoolConcurrentRecords(t *testing.T) {
	sw, prefix := newSwitchableRedis(t)
	dir := t.TempDir()
	p, err := NewProducer(ProducerOptions{Redis: sw, Prefix: prefix, SyncTimeout: 50 * time.Millisecond, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				p.Record(context.Background(), testEvent(g*25+i))
			}
		})
	}
	wg.Wait()
	_, evs, bad, err := openSpool(dir)
	if err != nil || bad != 0 {
		t.Fatalf("openSpool: %v (%d undecodable)", err, bad)
	}
	seen := make(map[string]bool)
	for _, ev := range evs {
		seen[ev.RequestID] = true
	}
	for i := range 200 {
		if !seen[testEvent(i).RequestID] {
			t.Errorf("event %d missing from the spool (%d events in it)", i, len(evs))
		}
	}
}
