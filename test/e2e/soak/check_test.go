package soak

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/usagestream"
)

// rates are USD per million tokens: input, output, cache read, cache write
// 5 m, cache write 1 h. Hand-copied from the seeded rate card (not read from
// the database): Anthropic's list price for claude-opus-5-5, and Bedrock's in
// us-east-1, where the mapping invokes the geographic us. profile at list
// +10 %.
type rates [5]string

var (
	planRates    = rates{"4", "20", "0.2", "5", "8"}
	bedrockRates = rates{"4.4", "22", "0.22", "5.5", "8.8"}
)

func cost(r rates, n [5]int64) decimal.Decimal {
	sum := decimal.Zero
	for i := range n {
		sum = sum.Add(decimal.RequireFromString(r[i]).Mul(decimal.NewFromInt(n[i])))
	}
	return sum.Div(decimal.NewFromInt(1_000_000)).Round(6)
}

// waitSettled waits until no usage event can still be stored: extproc's
// buffer is empty and the ingest group has read and acknowledged every
// stream entry. Only then are row counts final.
func (env *soakEnv) waitSettled(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: env.rd.Addr()})
	defer rdb.Close()
	stream := usagestream.StreamKey(env.prefix)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		state := ""
		m, err := env.extproc.metrics("ccproxy_usage_stream_buffer_events")
		groups, gerr := rdb.XInfoGroups(ctx, stream).Result()
		switch {
		case err != nil:
			state = err.Error()
		case m["ccproxy_usage_stream_buffer_events"] != 0:
			state = fmt.Sprintf("%v events in extproc's buffer", m["ccproxy_usage_stream_buffer_events"])
		case gerr != nil:
			state = gerr.Error()
		default:
			state = "no consumer group"
			for _, g := range groups {
				if g.Name == usagestream.Group {
					if g.Pending == 0 && (g.Lag == 0 || deliveredAll(ctx, rdb, stream, g.LastDeliveredID)) {
						return
					}
					state = fmt.Sprintf("%d pending, %d unread (last delivered %s)", g.Pending, g.Lag, g.LastDeliveredID)
				}
			}
		}
		if time.Now().After(deadline) {
			// What each consumer was doing: a stuck reader shows a large
			// inactive time.
			var cs []string
			consumers, _ := rdb.XInfoConsumers(ctx, stream, usagestream.Group).Result()
			for _, c := range consumers {
				cs = append(cs, fmt.Sprintf("%s: %d pending, idle %v, inactive %v", c.Name, c.Pending, c.Idle, c.Inactive))
			}
			last := ""
			if info, err := rdb.XInfoStream(ctx, stream).Result(); err == nil {
				last = info.LastGeneratedID
			}
			t.Fatalf("usage not settled after 2 min: %s; stream's last id %s; consumers: %s", state, last, strings.Join(cs, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deliveredAll reports whether the group has been delivered the stream's
// newest entry. Redis's lag is only an estimate once its entries-read
// counter is invalid (entries deleted after the group's last delivered
// id, a group created or claimed at an arbitrary id, an AOF reload), and it
// can then report entries unread that were delivered; the delivered id is
// exact. Whether each delivered entry became one usage row is what the
// invariants check next.
func deliveredAll(ctx context.Context, rdb *redis.Client, stream, lastDelivered string) bool {
	info, err := rdb.XInfoStream(ctx, stream).Result()
	if err != nil {
		return false
	}
	return compareStreamIDs(lastDelivered, info.LastGeneratedID) >= 0
}

// compareStreamIDs orders two stream ids ("ms-seq").
func compareStreamIDs(a, b string) int {
	parse := func(id string) (uint64, uint64) {
		ms, seq, _ := strings.Cut(id, "-")
		m, _ := strconv.ParseUint(ms, 10, 64)
		q, _ := strconv.ParseUint(seq, 10, 64)
		return m, q
	}
	am, aq := parse(a)
	bm, bq := parse(b)
	if c := cmp.Compare(am, bm); c != 0 {
		return c
	}
	return cmp.Compare(aq, bq)
}

// resources is a process's goroutines and resident memory.
type resources struct{ goroutines, rss float64 }

func (env *soakEnv) snapshot(t *testing.T) map[string]resources {
	t.Helper()
	out := map[string]resources{}
	for _, c := range env.comps[:3] {
		m, err := c.metrics("go_goroutines", "process_resident_memory_bytes")
		if err != nil {
			t.Fatal(err)
		}
		out[c.name] = resources{m["go_goroutines"], m["process_resident_memory_bytes"]}
	}
	return out
}

// Tolerances of the end state against the baseline: pools, gRPC and
// Redis connections re-established after faults may add a few goroutines
// and heap, a leak adds them per request or per fault.
const (
	goroutineSlack = 25
	rssFactor      = 1.5
	rssSlack       = 48 << 20
)

type row struct {
	kind, provider, priceFlag      string
	status                         int
	fallback, aborted              bool
	in, out, cacheRead, cw5m, cw1h int64
	cost                           decimal.Decimal
}

// report is the soak's summary.
type report struct {
	seed       uint64
	elapsed    time.Duration
	byKind     map[kind]map[outcome]int
	byOutcome  map[outcome]int
	rows       int
	faults     []fault
	revoked    int
	revokeErrs int
	base, end  map[string]resources
	starts     map[string]int
	violations []string
}

func (env *soakEnv) check(t *testing.T, warm, tr *traffic, ch *chaos, base, end map[string]resources) *report {
	t.Helper()
	rep := &report{byKind: map[kind]map[outcome]int{}, byOutcome: map[outcome]int{}, faults: ch.faults, base: base, end: end,
		revoked: len(tr.revoked) + len(warm.revoked), revokeErrs: tr.revokeErrors + warm.revokeErrors, starts: map[string]int{}}
	for _, c := range env.comps[:3] {
		rep.starts[c.name] = c.starts
	}
	violate := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		rep.violations = append(rep.violations, msg)
		t.Error(msg)
	}

	rows := map[string][]row{}
	q, err := env.db.Query(context.Background(), `
		SELECT session_id, kind, provider, price_flag, status, fallback, aborted,
		       input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd::text
		FROM usage_events`)
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var session, c string
		var r row
		if err := q.Scan(&session, &r.kind, &r.provider, &r.priceFlag, &r.status, &r.fallback, &r.aborted,
			&r.in, &r.out, &r.cacheRead, &r.cw5m, &r.cw1h, &c); err != nil {
			t.Fatal(err)
		}
		r.cost = decimal.RequireFromString(c)
		rows[session] = append(rows[session], r)
		rep.rows++
	}
	q.Close()
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}

	revokedAt := map[string]time.Time{}
	for _, r := range append(append([]revocation(nil), warm.revoked...), tr.revoked...) {
		revokedAt[r.keyID] = r.ackAt
	}
	specs := env.reqs.all()
	known := map[string]bool{}
	for _, s := range specs {
		known[s.id] = true
		if rep.byKind[s.kind] == nil {
			rep.byKind[s.kind] = map[outcome]int{}
		}
		rep.byKind[s.kind][s.out]++
		rep.byOutcome[s.out]++
		got := rows[s.id]
		if s.out == hung {
			violate("%s (%s): no complete answer within %s", s.id, s.kind, requestTimeout)
		}
		if len(got) > 1 {
			violate("%s (%s, %s): %d usage rows, want at most one", s.id, s.kind, s.out, len(got))
		}
		ok2xx := s.status >= 200 && s.status < 300
		if s.kind == badKey && ok2xx {
			violate("%s: a bad key was served (%d)", s.id, s.status)
		}
		if at, ok := revokedAt[s.keyID]; ok && ok2xx && s.sentAt.After(at) {
			violate("%s (sent at %s): key %s served (%d) %s after its revocation was acknowledged", s.id, s.sentAt.Sub(env.began).Round(time.Millisecond),
				s.keyID, s.status, s.sentAt.Sub(at).Round(time.Millisecond))
		}
		if s.out != served && s.out != aborted {
			continue
		}
		if len(got) == 0 {
			violate("%s (%s, %s %d, sent at %s, took %s): no usage row", s.id, s.kind, s.out, s.status,
				s.sentAt.Sub(env.began).Round(time.Millisecond), s.took.Round(time.Millisecond))
			continue
		}
		if msg := wantRow(s, got[0]); msg != "" {
			violate("%s (%s, %s): %s", s.id, s.kind, s.out, msg)
		}
	}
	for session, rs := range rows {
		if !known[session] {
			violate("usage rows of no request of the soak: session %q, %d rows", session, len(rs))
		}
	}

	for name, b := range base {
		e := end[name]
		if e.goroutines > b.goroutines+goroutineSlack {
			violate("%s: %v goroutines at the end, baseline %v (+%d allowed)", name, e.goroutines, b.goroutines, goroutineSlack)
		}
		if e.rss > b.rss*rssFactor+rssSlack {
			violate("%s: RSS %s at the end, baseline %s (×%.1f + %s allowed)", name, mib(e.rss), mib(b.rss), rssFactor, mib(rssSlack))
		}
	}
	for _, c := range env.comps {
		lines, err := panics(c.logPath)
		if err != nil {
			t.Error(err)
		}
		for _, l := range lines[:min(len(lines), 5)] {
			violate("%s log mentions a panic: %.300s", c.name, l)
		}
	}
	return rep
}

// wantRow compares a request's usage row with what the fakes answered.
func wantRow(s *spec, r row) string {
	provider, rt := "anthropic", planRates
	switch s.kind {
	case bedrockStream, bedrockJSON, bedrockAbort, bedrockCount, fallbackStream:
		provider, rt = "bedrock", bedrockRates
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if r.provider != provider {
		bad("provider %s, want %s", r.provider, provider)
	}
	if r.status != s.status {
		bad("status %d, want %d", r.status, s.status)
	}
	if r.fallback != (s.kind == fallbackStream) {
		bad("fallback %t", r.fallback)
	}
	if r.aborted != (s.out == aborted) {
		bad("aborted %t", r.aborted)
	}
	if s.kind == planCount || s.kind == bedrockCount {
		if r.kind != "count_tokens" || !r.cost.IsZero() || r.priceFlag != "" {
			bad("kind %s cost %s price_flag %q; want an unpriced count_tokens row", r.kind, r.cost, r.priceFlag)
		}
		return strings.Join(problems, "; ")
	}
	u := s.usage
	want := [5]int64{int64(u.Input), int64(u.Output), int64(u.CacheRead), int64(u.CacheWrite5m), int64(u.CacheWrite1h)}
	if s.out == aborted {
		// Only message_start arrived: its input and cache counts, and the
		// placeholder output count it carries.
		want[1] = r.out
	}
	got := [5]int64{r.in, r.out, r.cacheRead, r.cw5m, r.cw1h}
	if r.kind != "messages" {
		bad("kind %s", r.kind)
	}
	if got != want {
		bad("tokens %v, want %v", got, want)
	}
	if c := cost(rt, want); !r.cost.Equal(c) || r.priceFlag != "exact" {
		bad("cost %s (%s), want %s (exact)", r.cost, r.priceFlag, c)
	}
	return strings.Join(problems, "; ")
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos soak: %s of traffic, seed %d\n\n", r.elapsed.Round(time.Second), r.seed)
	total := 0
	for _, n := range r.byOutcome {
		total += n
	}
	outcomes := []outcome{served, aborted, truncated, refused, failed, noAnswer, hung}
	fmt.Fprintf(&b, "requests: %d", total)
	for _, o := range outcomes {
		fmt.Fprintf(&b, ", %s %d", o, r.byOutcome[o])
	}
	b.WriteString("\n\n| kind |")
	for _, o := range outcomes {
		fmt.Fprintf(&b, " %s |", o)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---:|", len(outcomes)))
	b.WriteString("\n")
	var kinds []string
	for k := range r.byKind {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "| %s |", k)
		for _, o := range outcomes {
			fmt.Fprintf(&b, " %d |", r.byKind[kind(k)][o])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nusage rows: %d; keys revoked: %d (revocation calls not acknowledged and retried: %d)\n", r.rows, r.revoked, r.revokeErrs)
	fmt.Fprintf(&b, "process starts: admin %d, controlplane %d, extproc %d\n", r.starts["admin"], r.starts["controlplane"], r.starts["extproc"])

	var recs []time.Duration
	recovered := 0
	fmt.Fprintf(&b, "\nfaults injected: %d\n\n| # | at | target | mode | down | recovered in | exited on their own |\n|---:|---:|---|---|---:|---:|---|\n", len(r.faults))
	for _, f := range r.faults {
		rec := "NOT RECOVERED"
		if f.recovered {
			rec = f.recovery.Round(10 * time.Millisecond).String()
			recs = append(recs, f.recovery)
			recovered++
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", f.n, f.at.Round(100*time.Millisecond), f.target, f.mode,
			f.down.Round(10*time.Millisecond), rec, strings.Join(f.exits, ", "))
	}
	if len(recs) > 0 {
		slices.Sort(recs)
		fmt.Fprintf(&b, "\nrecovered: %d of %d; recovery min %s, median %s, max %s\n", recovered, len(r.faults),
			recs[0].Round(10*time.Millisecond), recs[len(recs)/2].Round(10*time.Millisecond), recs[len(recs)-1].Round(10*time.Millisecond))
	}
	b.WriteString("\n| process | goroutines baseline → end | RSS baseline → end |\n|---|---|---|\n")
	for _, name := range []string{"admin", "controlplane", "extproc"} {
		fmt.Fprintf(&b, "| %s | %.0f → %.0f | %s → %s |\n", name, r.base[name].goroutines, r.end[name].goroutines, mib(r.base[name].rss), mib(r.end[name].rss))
	}
	if len(r.violations) == 0 {
		b.WriteString("\ninvariants: all held (no lost or duplicated usage row, no hung request, no revoked key served, resources at baseline, no panic)\n")
	} else {
		fmt.Fprintf(&b, "\ninvariant violations: %d\n", len(r.violations))
		for _, v := range r.violations[:min(len(r.violations), 40)] {
			fmt.Fprintf(&b, "- %s\n", v)
		}
	}
	return b.String()
}
