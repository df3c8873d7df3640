package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
	"github.com/ccproxy/ccproxy/internal/usagestream"
)

var (
	userA = uuid.MustParse("0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69")
	userB = uuid.MustParse("5d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a")
	keyA  = uuid.MustParse("1c8f9a4b-4d1f-4c9f-8b54-2a3e4d5c6b7a")
)

func event(id string, at time.Time, provider, model string, in, out int64) usage.Event {
	return usage.Event{
		RequestID: id, Time: at, UserID: userA, KeyID: keyA, PathKind: usage.PathMessages,
		Model: model, Provider: provider, Status: 200,
		Usage: usage.Usage{InputTokens: in, OutputTokens: out},
	}
}

func newIngester(t *testing.T, st *store.Store, rdb redis.UniversalClient, prefix string, loc *time.Location, now time.Time) *Ingester {
	t.Helper()
	in, err := New(Options{Store: st, Redis: rdb, Prefix: prefix, Location: loc, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func TestHandlePricesRows(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, time.UTC, at)

	exact := event("exact", at, usage.ProviderAnthropic, "claude-sonnet-4-5-20250929", 1000, 2000)
	exact.Usage.CacheReadInputTokens, exact.Usage.CacheWrite5mInputTokens, exact.Usage.CacheWrite1hInputTokens = 10000, 400, 100
	alias := event("alias", at, usage.ProviderAnthropic, "claude-sonnet-4-5", 1_000_000, 0)
	family := event("family", at, usage.ProviderAnthropic, "claude-opus-9-1", 1_000_000, 1_000_000)
	unknown := event("unknown", at, usage.ProviderAnthropic, "mystery-model", 1_000_000, 0)
	counted := event("counted", at, usage.ProviderAnthropic, "claude-sonnet-4-5", 0, 0)
	counted.PathKind, counted.CountedInputTokens = usage.PathCountTokens, 123
	tiny := event("tiny", at, usage.ProviderAnthropic, "claude-haiku-4-5", 1, 0) // $0.000001
	odd := event("odd", at, usage.ProviderAnthropic, "claude-haiku-4-5", 0, 1)   // $0.000005

	if err := in.Handle(ctx, []usage.Event{exact, alias, family, unknown, counted, tiny, odd}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		cost string
		flag store.PriceFlag
	}{
		// 1000×3 + 2000×15 + 10000×0.3 + 400×3.75 + 100×6 per million.
		{"exact", "0.038100", store.PriceExact},
		{"alias", "3", store.PriceExact},
		{"family", "30", store.PriceFamily}, // opus family: 5 + 25
		{"unknown", "5", store.PriceDefault},
		{"counted", "0", store.PriceNone},
		{"tiny", "0.000001", store.PriceExact},
		{"odd", "0.000005", store.PriceExact},
	}
	for _, tt := range tests {
		row, err := st.Usage().GetRequest(ctx, tt.id)
		if err != nil {
			t.Fatalf("%s: %v", tt.id, err)
		}
		if !row.CostUSD.Equal(dec(tt.cost)) || row.PriceFlag != tt.flag {
			t.Errorf("%s: cost %s flag %q; want %s %q", tt.id, row.CostUSD, row.PriceFlag, tt.cost, tt.flag)
		}
	}
	if got := testutil.ToFloat64(in.m.events.WithLabelValues("anthropic", "claude-sonnet-4-5-20250929")); got != 1 {
		t.Errorf("events{model=exact id} = %v", got)
	}
	if got := testutil.ToFloat64(in.m.events.WithLabelValues("anthropic", "other")); got != 2 {
		t.Errorf("events{model=other} = %v, want 2 (family and default)", got)
	}
	if got := testutil.ToFloat64(in.m.tokens.WithLabelValues("anthropic", "cache_read")); got != 10000 {
		t.Errorf("tokens{cache_read} = %v", got)
	}
	if got := testutil.ToFloat64(in.m.cost.WithLabelValues("anthropic", "other")); got != 35 {
		t.Errorf("cost{other} = %v", got)
	}
}

func TestHandlePricesAtEventTime(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	change := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	if _, err := st.Prices().Supersede(ctx, store.NewPrice{
		Provider: store.ProviderAnthropic, ModelID: "claude-haiku-4-5-20251001",
		PriceRates:    store.PriceRates{Input: dec("2"), Output: dec("10"), CacheRead: dec("0.2"), CacheWrite5m: dec("2.5"), CacheWrite1h: dec("4")},
		EffectiveFrom: change,
	}); err != nil {
		t.Fatal(err)
	}
	in := newIngester(t, st, rdb, prefix, time.UTC, change)
	before := event("before", change.Add(-time.Nanosecond), usage.ProviderAnthropic, "claude-haiku-4-5", 1_000_000, 0)
	after := event("after", change, usage.ProviderAnthropic, "claude-haiku-4-5", 1_000_000, 0)
	again := event("before-again", change.Add(-time.Hour), usage.ProviderAnthropic, "claude-haiku-4-5", 1_000_000, 0)
	if err := in.Handle(ctx, []usage.Event{before, after, again}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"before": "1", "after": "2", "before-again": "1"} {
		row, err := st.Usage().GetRequest(ctx, id)
		if err != nil || !row.CostUSD.Equal(dec(want)) {
			t.Errorf("%s: cost %s, %v; want %s", id, row.CostUSD, err, want)
		}
	}
}

func TestHandleIsIdempotent(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, time.UTC, at)
	a := event("a", at, usage.ProviderBedrock, "claude-sonnet-4-5", 1000, 100)
	b := event("b", at, usage.ProviderBedrock, "claude-sonnet-4-5", 2000, 200)
	aLater := a
	aLater.Time = at.Add(time.Minute) // same request id, different time: still a duplicate
	if err := in.Handle(ctx, []usage.Event{a, a}); err != nil {
		t.Fatal(err)
	}
	if err := in.Handle(ctx, []usage.Event{aLater, b, b}); err != nil {
		t.Fatal(err)
	}
	if err := in.Handle(ctx, []usage.Event{a, b}); err != nil {
		t.Fatal(err)
	}
	rows, _, err := st.Usage().ListRequests(ctx, store.UsageFilter{}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	// a twice in the first batch, aLater and b twice in the second, a and b.
	if got := testutil.ToFloat64(in.m.duplicates); got != 5 {
		t.Errorf("duplicates = %v, want 5", got)
	}
	if got := testutil.ToFloat64(in.m.events.WithLabelValues("bedrock", "claude-sonnet-4-5")); got != 2 {
		t.Errorf("events = %v, want 2", got)
	}
	// The rollups count each request once.
	spend, err := st.Usage().MonthlySpend(ctx, userA, store.ProviderBedrock, at.Add(-time.Hour), at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := Cost(store.PriceRates{Input: dec("3"), Output: dec("15")}, &store.UsageEvent{InputTokens: 3000, OutputTokens: 300})
	if !spend.Equal(want) {
		t.Errorf("spend %s, want %s", spend, want)
	}
}

func TestHandleSetsSpendCounters(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	ny, err := billing.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, ny, now)
	febLocal := event("feb", time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC), usage.ProviderBedrock, "claude-sonnet-4-5", 1_000_000, 0) // Feb 28 in New York
	mar := event("mar", time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC), usage.ProviderBedrock, "claude-sonnet-4-5", 0, 1_000_000)
	plan := event("plan", time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), usage.ProviderAnthropic, "claude-sonnet-4-5", 1_000_000, 0)
	planOnly := event("plan-b", time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), usage.ProviderAnthropic, "claude-sonnet-4-5", 1, 0)
	planOnly.UserID = userB
	if err := in.Handle(ctx, []usage.Event{febLocal, mar, plan, planOnly}); err != nil {
		t.Fatal(err)
	}
	for month, want := range map[string]string{"2026-02": "3.000000", "2026-03": "15.000000"} {
		key := billing.SpendKey(prefix, userA, month)
		got, err := rdb.Get(ctx, key).Result()
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %s (Bedrock only, New York months)", key, got, err, want)
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl < billing.SpendTTL-time.Minute || ttl > billing.SpendTTL {
			t.Errorf("%s TTL %v", key, ttl)
		}
	}
	if n := rdb.Exists(ctx, billing.SpendKey(prefix, userB, "2026-03")).Val(); n != 0 {
		t.Errorf("a counter was set for a user without Bedrock rows")
	}
	// A batch of an older month refreshes that month and the current one.
	if err := rdb.Set(ctx, billing.SpendKey(prefix, userA, "2026-03"), "999", 0).Err(); err != nil {
		t.Fatal(err)
	}
	late := event("late-feb", time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC), usage.ProviderBedrock, "claude-sonnet-4-5", 1_000_000, 0)
	if err := in.Handle(ctx, []usage.Event{late}); err != nil {
		t.Fatal(err)
	}
	for month, want := range map[string]string{"2026-02": "6.000000", "2026-03": "15.000000"} {
		if got := rdb.Get(ctx, billing.SpendKey(prefix, userA, month)).Val(); got != want {
			t.Errorf("after a late event, %s = %s, want %s", month, got, want)
		}
	}
	// A redelivered batch (all duplicates) still repairs the counters.
	if err := rdb.Set(ctx, billing.SpendKey(prefix, userA, "2026-02"), "0.000000", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := in.Handle(ctx, []usage.Event{late}); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(ctx, billing.SpendKey(prefix, userA, "2026-02")).Val(); got != "6.000000" {
		t.Errorf("after a redelivery, 2026-02 = %s", got)
	}
}

func TestToStoreEventCleansText(t *testing.T) {
	ev := event("r", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), usage.ProviderAnthropic, "claude\x00-sonnet", 1, 1)
	ev.SessionID = strings.Repeat("é", 400) // 800 bytes
	ev.AgentID = "a\xffb"
	ev.TTFT, ev.Latency = 1500*time.Microsecond, 2*time.Second
	row := ToStoreEvent(ev)
	if row.RequestedModel != "claude-sonnet" || len(row.SessionID) != MaxTextLen || !strings.HasPrefix(ev.SessionID, row.SessionID) || row.AgentID != "a\uFFFDb" {
		t.Errorf("row %q %d %q", row.RequestedModel, len(row.SessionID), row.AgentID)
	}
	if row.TTFTMs == nil || *row.TTFTMs != 1 || row.LatencyMs != 2000 {
		t.Errorf("durations %v %d", row.TTFTMs, row.LatencyMs)
	}
	if err := row.Validate(); err != nil {
		t.Error(err)
	}
}

// FuzzStoreEvent: whatever the stream decoder accepts becomes a row the
// schema accepts, so an entry can never block the ingester; the row keeps
// the event's values, its free text only cleaned (NUL bytes removed,
// invalid UTF-8 replaced) and cut at a character boundary to the longest
// prefix that fits.
func FuzzStoreEvent(f *testing.F) {
	f.Add([]byte(usagestream.Encode(event("r", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), "bedrock", "claude-sonnet-4-5", 1, 2))))
	f.Add([]byte(`{"v":1,"request_id":"x","time":"2026-01-01T00:00:00Z","path":"messages","provider":"anthropic","status":0,"model":"a\u0000b","session_id":"\udc00"}`))
	long := usage.Event{RequestID: strings.Repeat("é", 99) + "x", Time: time.Date(2026, 3, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)),
		PathKind: usage.PathMessages, Provider: usage.ProviderBedrock, Model: "m" + strings.Repeat("\u20ac", 200), SessionID: strings.Repeat("\x00a", 600),
		Region: "r\xffr", Status: 529, Latency: 1500 * time.Microsecond, TTFT: time.Millisecond,
		Usage: usage.Usage{InputTokens: 1, OutputTokens: 2, CacheReadInputTokens: 3, CacheWrite5mInputTokens: 4, CacheWrite1hInputTokens: 5}}
	f.Add([]byte(usagestream.Encode(long)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := usagestream.Decode(b)
		if err != nil {
			return
		}
		row := ToStoreEvent(ev)
		row.PriceFlag, row.CostUSD = store.PriceDefault, Cost(pricing.Fallback(), &row)
		if err := row.Validate(); err != nil {
			t.Fatalf("decoded event %+v makes an invalid row: %v", ev, err)
		}
		for _, c := range []struct {
			name, got, in string
			max           int
		}{
			{"request_id", row.RequestID, ev.RequestID, 200},
			{"session_id", row.SessionID, ev.SessionID, MaxTextLen},
			{"agent_id", row.AgentID, ev.AgentID, MaxTextLen},
			{"parent_agent_id", row.ParentAgentID, ev.ParentAgentID, MaxTextLen},
			{"client_version", row.ClientVersion, ev.ClientVersion, MaxTextLen},
			{"requested_model", row.RequestedModel, ev.Model, MaxTextLen},
			{"bedrock_model_id", row.BedrockModelID, ev.BackendModel, MaxTextLen},
			{"region", row.Region, ev.Region, MaxTextLen},
			{"fallback_reason", row.FallbackReason, ev.FallbackReason, MaxTextLen},
		} {
			full := strings.ToValidUTF8(strings.ReplaceAll(c.in, "\x00", ""), "\uFFFD")
			rest, isPrefix := strings.CutPrefix(full, c.got)
			_, next := utf8.DecodeRuneInString(rest)
			if !isPrefix || len(c.got) > c.max || !utf8.ValidString(c.got) || rest != "" && len(c.got)+next <= c.max {
				t.Fatalf("%s %q from %q: want the longest prefix of %q within %d bytes", c.name, c.got, c.in, full, c.max)
			}
		}
		ttft := (*int)(nil)
		if ev.TTFT > 0 {
			ms := int(ev.TTFT.Milliseconds())
			ttft = &ms
		}
		if !row.EventTime.Equal(ev.Time) || row.EventTime.Location() != time.UTC || row.UserID != ev.UserID || row.AccessKeyID != ev.KeyID ||
			string(row.Kind) != ev.PathKind || string(row.Provider) != ev.Provider || row.Fallback != ev.Fallback || row.Stream != ev.Stream ||
			row.Status != ev.Status || row.Aborted != ev.Aborted || row.LatencyMs != int(ev.Latency.Milliseconds()) ||
			(row.TTFTMs == nil) != (ttft == nil) || ttft != nil && *row.TTFTMs != *ttft ||
			row.InputTokens != ev.Usage.InputTokens || row.OutputTokens != ev.Usage.OutputTokens ||
			row.CacheReadTokens != ev.Usage.CacheReadInputTokens || row.CacheWrite5mTokens != ev.Usage.CacheWrite5mInputTokens ||
			row.CacheWrite1hTokens != ev.Usage.CacheWrite1hInputTokens {
			t.Fatalf("row %+v does not keep the values of event %+v", row, ev)
		}
	})
}

func TestPipelineEndToEnd(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	reg := prometheus.NewRegistry()
	in, err := New(Options{Store: st, Redis: rdb, Prefix: prefix, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	p, err := usagestream.NewProducer(usagestream.ProducerOptions{Redis: rdb, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	c, err := usagestream.NewConsumer(usagestream.ConsumerOptions{Redis: rdb, Prefix: prefix, Block: 100 * time.Millisecond, Registerer: reg}, in.Handle)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { _ = p.Run(rctx); done <- struct{}{} }()
	go func() { _ = c.Run(rctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	at := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 300 {
		ev := event(fmt.Sprintf("e2e-%03d", i), at.Add(time.Duration(i)*time.Millisecond), usage.ProviderBedrock, "claude-sonnet-4-5", 1000, 10)
		p.Record(ctx, ev)
		if i%10 == 0 {
			p.Record(ctx, ev) // extproc never does this, but a retried XADD can
		}
	}
	waitRows(t, st, 300, 10*time.Second)
	// 330 entries: once all are acknowledged, every handler call that could
	// store a late duplicate has returned (acknowledgement follows commit).
	waitFor(t, "330 entries acknowledged", 10*time.Second, func() bool {
		return p.Sent() == 330 && gathered(t, reg, "ccproxy_usage_ingest_acked_total") == 330
	})
	waitRows(t, st, 300, 0)
	if got := gathered(t, reg, "ccproxy_usage_duplicates_total"); got != 30 {
		t.Errorf("duplicates = %v, want the 30 events added twice", got)
	}
	month := billing.MonthOf(at, time.UTC)
	spend, err := st.Usage().MonthlySpend(ctx, userA, store.ProviderBedrock, month.Start, month.End)
	if err != nil {
		t.Fatal(err)
	}
	if want := dec("0.003150").Mul(decimal.NewFromInt(300)); !spend.Equal(want) {
		t.Errorf("spend %s, want %s", spend, want)
	}
	waitFor(t, "spend counter", 5*time.Second, func() bool {
		return rdb.Get(ctx, billing.SpendKey(prefix, userA, month.Key)).Val() == billing.FormatSpend(spend)
	})
}

func countRows(t *testing.T, st *store.Store) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM usage_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitRows waits until usage_events has want rows, and fails if it ever
// has more.
func waitRows(t *testing.T, st *store.Store, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := countRows(t, st)
		if n > want {
			t.Fatalf("usage_events has %d rows, want %d", n, want)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage_events has %d rows after %v, want %d", n, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// TestHandleWritesEMF runs a mixed batch through the ingester — Plan and
// Bedrock, a fallback, errors, streamed and not, a model without a price —
// and checks every CloudWatch metric the EMF lines define (name, unit,
// dimensions, value) against values computed by hand from the seeded rate
// card: the original proxy's metric set, cache writes split by lifetime,
// and the per-user metrics only when enabled.
func TestHandleWritesEMF(t *testing.T) {
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// $3 / $15 / $0.30 / $3.75 / $6 per million tokens (sonnet 4.5), $1 / $5 (haiku 4.5).
	planStream := event("plan-stream", at, usage.ProviderAnthropic, "claude-sonnet-4-5-20250929", 1000, 2000)
	planStream.Stream, planStream.TTFT, planStream.Latency = true, ms(250), ms(1500)
	planStream.Usage.CacheReadInputTokens, planStream.Usage.CacheWrite5mInputTokens, planStream.Usage.CacheWrite1hInputTokens = 10000, 400, 100
	// 1000×3 + 2000×15 + 10000×0.3 + 400×3.75 + 100×6 = 38100 µ$
	bedrockPlain := event("bedrock-plain", at, usage.ProviderBedrock, "claude-haiku-4-5-20251001", 2000, 100)
	bedrockPlain.Region, bedrockPlain.TTFT, bedrockPlain.Latency = "us-east-1", ms(900), ms(900)
	// 2000×1 + 100×5 = 2500 µ$, +10% for a regional (not global) Bedrock
	// profile = 2750 µ$; not streamed: no proxy.ttft
	fallback := event("fallback", at, usage.ProviderBedrock, "claude-sonnet-4-5-20250929", 500, 50)
	fallback.Region, fallback.Stream, fallback.TTFT, fallback.Latency = "us-east-1", true, ms(400), ms(2000)
	fallback.Fallback, fallback.FallbackReason, fallback.Route = true, "plan_429", "plan_first"
	fallback.Usage.CacheWrite1hInputTokens = 1000
	// (500×3 + 50×15 + 1000×6) × 1.1 = 9075 µ$
	overloaded := event("overloaded", at, usage.ProviderAnthropic, "claude-sonnet-4-5-20250929", 0, 0)
	overloaded.Status, overloaded.Stream, overloaded.Latency = 529, true, ms(300)
	noAnswer := event("no-answer", at, usage.ProviderBedrock, "claude-haiku-4-5-20251001", 0, 0)
	noAnswer.Status, noAnswer.Aborted, noAnswer.Region, noAnswer.Latency = 0, true, "us-east-1", ms(5000)
	mystery := event("mystery", at, usage.ProviderAnthropic, "mystery-model", 10, 0)
	mystery.Latency = ms(40)
	// 10×5 (provider default) = 50 µ$, reported under Model "other"
	batch := []usage.Event{planStream, bedrockPlain, fallback, overloaded, noAnswer, mystery}

	want := map[string]float64{
		"proxy.requests Count Model=claude-sonnet-4-5-20250929 Provider=anthropic Status=200 Stream=true":       1,
		"proxy.requests Count Model=claude-haiku-4-5-20251001 Provider=bedrock Status=200 Stream=false":         1,
		"proxy.requests Count Model=claude-sonnet-4-5-20250929 Provider=bedrock Status=200 Stream=true":         1,
		"proxy.requests Count Model=claude-sonnet-4-5-20250929 Provider=anthropic Status=529 Stream=true":       1,
		"proxy.requests Count Model=claude-haiku-4-5-20251001 Provider=bedrock Status=0 Stream=false":           1,
		"proxy.requests Count Model=other Provider=anthropic Status=200 Stream=false":                           1,
		"proxy.latency Milliseconds Model=claude-sonnet-4-5-20250929 Provider=anthropic Status=200 Stream=true": 1500,
		"proxy.latency Milliseconds Model=claude-haiku-4-5-20251001 Provider=bedrock Status=200 Stream=false":   900,
		"proxy.latency Milliseconds Model=claude-sonnet-4-5-20250929 Provider=bedrock Status=200 Stream=true":   2000,
		"proxy.latency Milliseconds Model=claude-sonnet-4-5-20250929 Provider=anthropic Status=529 Stream=true": 300,
		"proxy.latency Milliseconds Model=claude-haiku-4-5-20251001 Provider=bedrock Status=0 Stream=false":     5000,
		"proxy.latency Milliseconds Model=other Provider=anthropic Status=200 Stream=false":                     40,
		"proxy.ttft Milliseconds Model=claude-sonnet-4-5-20250929 Provider=anthropic":                           250,
		"proxy.ttft Milliseconds Model=claude-sonnet-4-5-20250929 Provider=bedrock":                             400,
		"proxy.cost None Model=claude-sonnet-4-5-20250929 Provider=anthropic":                                   0.0381,
		"proxy.cost None Model=claude-haiku-4-5-20251001 Provider=bedrock":                                      0.00275,
		"proxy.cost None Model=claude-sonnet-4-5-20250929 Provider=bedrock":                                     0.009075,
		"proxy.cost None Model=other Provider=anthropic":                                                        0.00005,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=input":                1000,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=output":               2000,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=cache_read":           10000,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=cache_write":          500,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=cache_write_5m":       400,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=anthropic TokenType=cache_write_1h":       100,
		"proxy.tokens Count Model=claude-haiku-4-5-20251001 Provider=bedrock TokenType=input":                   2000,
		"proxy.tokens Count Model=claude-haiku-4-5-20251001 Provider=bedrock TokenType=output":                  100,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=bedrock TokenType=input":                  500,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=bedrock TokenType=output":                 50,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=bedrock TokenType=cache_write":            1000,
		"proxy.tokens Count Model=claude-sonnet-4-5-20250929 Provider=bedrock TokenType=cache_write_1h":         1000,
		"proxy.tokens Count Model=other Provider=anthropic TokenType=input":                                     10,
		"proxy.errors Count ErrorType=overloaded_error Provider=anthropic":                                      1,
		"proxy.errors Count ErrorType=no_response Provider=bedrock":                                             1,
		"proxy.fallbacks Count FromProvider=anthropic Reason=plan_429 ToProvider=bedrock":                       1,
	}
	perUser := map[string]float64{
		"proxy.user.requests Count UserId=" + userA.String(): 6,
		"proxy.user.tokens Count UserId=" + userA.String():   1000 + 2000 + 10000 + 400 + 100 + 2000 + 100 + 500 + 50 + 1000 + 10,
		"proxy.user.cost None UserId=" + userA.String():      0.0381 + 0.00275 + 0.009075 + 0.00005,
	}
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprintf("per_user=%v", enabled), func(t *testing.T) {
			ctx := context.Background()
			st := storetest.Open(t)
			rdb, prefix := testenv.Redis(t)
			var out bytes.Buffer
			w := emf.NewWriter(&out, emf.Options{PerUser: enabled, Now: func() time.Time { return at }})
			in, err := New(Options{Store: st, Redis: rdb, Prefix: prefix, EMF: w})
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Handle(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if err := in.Handle(ctx, batch[:1]); err != nil { // a duplicate: nothing written
				t.Fatal(err)
			}
			got := emfValues(t, out.Bytes(), at)
			exp := maps.Clone(want)
			if enabled {
				maps.Copy(exp, perUser)
			}
			for k, v := range exp {
				g, ok := got[k]
				if !ok {
					t.Errorf("missing %s", k)
				} else if math.Abs(g-v) > 1e-12 {
					t.Errorf("%s = %v, want %v", k, g, v)
				}
			}
			for k, v := range got {
				if _, ok := exp[k]; !ok {
					t.Errorf("unexpected %s = %v", k, v)
				}
			}
		})
	}
}

// emfValues reads EMF lines as CloudWatch would: every metric of every
// directive, under each of its dimension sets, keyed "name unit k=v …"
// (dimensions sorted), values summed over the lines.
func emfValues(t *testing.T, out []byte, at time.Time) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var root map[string]json.RawMessage
		if err := json.Unmarshal(line, &root); err != nil {
			t.Fatalf("line %s: %v", line, err)
		}
		var meta struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		}
		if err := json.Unmarshal(root["_aws"], &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Timestamp != at.UnixMilli() {
			t.Errorf("Timestamp %d", meta.Timestamp)
		}
		for _, d := range meta.CloudWatchMetrics {
			if d.Namespace != "ClaudeCodeProxy" {
				t.Errorf("namespace %q", d.Namespace)
			}
			for _, set := range d.Dimensions {
				dims := slices.Clone(set)
				slices.Sort(dims)
				for i, k := range dims {
					var v string
					if err := json.Unmarshal(root[k], &v); err != nil || v == "" {
						t.Fatalf("dimension %s = %s in %s", k, root[k], line)
					}
					dims[i] = k + "=" + v
				}
				for _, m := range d.Metrics {
					var v float64
					if err := json.Unmarshal(root[m.Name], &v); err != nil {
						t.Fatalf("metric %s = %s in %s", m.Name, root[m.Name], line)
					}
					got[strings.Join(append([]string{m.Name, m.Unit}, dims...), " ")] += v
				}
			}
		}
	}
	return got
}

// TestHandleTouchesLastUsed: each batch moves its keys' last_used_at to
// their latest event, never backwards, with one statement per batch.
func TestHandleTouchesLastUsed(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	u, err := st.Users().Create(ctx, store.NewUser{Name: "touch"})
	if err != nil {
		t.Fatal(err)
	}
	var keyIDs []uuid.UUID
	for i := range 2 {
		k, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u.ID, Hash: bytes.Repeat([]byte{byte(i + 1)}, store.KeyHashLen), Prefix: "ak_t"})
		if err != nil {
			t.Fatal(err)
		}
		keyIDs = append(keyIDs, k.ID)
	}
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, time.UTC, at)
	ev := func(id string, key uuid.UUID, when time.Time) usage.Event {
		e := event(id, when, usage.ProviderAnthropic, "claude-sonnet-4-5", 10, 1)
		e.UserID, e.KeyID = u.ID, key
		return e
	}
	lastUsed := func() []*time.Time {
		var out []*time.Time
		for _, id := range keyIDs {
			k, err := st.AccessKeys().Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, k.LastUsedAt)
		}
		return out
	}
	steps := []struct {
		name  string
		batch []usage.Event
		want  []*time.Time
	}{
		{"first batch: latest event per key", []usage.Event{ev("t1", keyIDs[0], at), ev("t2", keyIDs[0], at.Add(3*time.Second))},
			[]*time.Time{ptr(at.Add(3 * time.Second)), nil}},
		{"an older event never moves it back", []usage.Event{ev("t3", keyIDs[0], at.Add(-time.Hour)), ev("t4", keyIDs[1], at.Add(time.Minute))},
			[]*time.Time{ptr(at.Add(3 * time.Second)), ptr(at.Add(time.Minute))}},
		{"a redelivered batch changes nothing", []usage.Event{ev("t4", keyIDs[1], at.Add(time.Minute))},
			[]*time.Time{ptr(at.Add(3 * time.Second)), ptr(at.Add(time.Minute))}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := in.Handle(ctx, s.batch); err != nil {
				t.Fatal(err)
			}
			got := lastUsed()
			for i := range got {
				if (got[i] == nil) != (s.want[i] == nil) || got[i] != nil && !got[i].Equal(*s.want[i]) {
					t.Fatalf("key %d last_used_at = %v, want %v", i, got[i], s.want[i])
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestHandleNotifiesRefusedCredentials: events saying Bedrock refused the
// gateway's credential queue one credential.refused per credential and
// hour, however many requests, batches or redeliveries show it.
func TestHandleNotifiesRefusedCredentials(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	at := time.Date(2026, 3, 10, 12, 5, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, time.UTC, at)
	woken := 0
	in.opt.OnNotify = func() { woken++ }
	credA, credB := uuid.New(), uuid.New()
	refused := func(id string, at time.Time, cred uuid.UUID) usage.Event {
		ev := event(id, at, usage.ProviderBedrock, "claude-sonnet-4-5", 0, 0)
		ev.Status, ev.Region, ev.RejectedCredentialID = 500, "us-east-1", cred
		return ev
	}
	batches := [][]usage.Event{
		{refused("r1", at, credA), refused("r2", at.Add(time.Minute), credA), event("ok", at, usage.ProviderBedrock, "claude-sonnet-4-5", 10, 10)},
		{refused("r1", at, credA), refused("r3", at.Add(20*time.Minute), credA), refused("r4", at, credB)}, // r1 redelivered
		{refused("r5", at.Add(time.Hour), credA)}, // the next hour
	}
	for _, b := range batches {
		if err := in.Handle(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := st.Pool().Query(ctx, `SELECT type, dedupe_key, occurred_at, data->>'credential_id' FROM notification_events ORDER BY dedupe_key`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var typ, key, cred string
		var occurred time.Time
		if err := rows.Scan(&typ, &key, &occurred, &cred); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s %s", typ, key, occurred.UTC().Format(time.RFC3339), cred))
	}
	want := []string{
		fmt.Sprintf("credential.refused credential.refused:%s:2026031012 2026-03-10T12:05:00Z %s", credA, credA),
		fmt.Sprintf("credential.refused credential.refused:%s:2026031013 2026-03-10T13:05:00Z %s", credA, credA),
		fmt.Sprintf("credential.refused credential.refused:%s:2026031012 2026-03-10T12:05:00Z %s", credB, credB),
	}
	sortStrings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if woken != 3 {
		t.Errorf("OnNotify called %d times, want 3 (once per batch that queued)", woken)
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}
