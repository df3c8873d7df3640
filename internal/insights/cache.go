package insights

import (
	"cmp"
	"slices"
	"time"

	"github.com/shopspring/decimal"
)

// Prompt-cache lifetimes: a cache entry lives this long after it was last
// written or read.
const (
	TTL5m = 5 * time.Minute
	TTL1h = time.Hour
)

// Cache-break rule (docs/sessions.md, "Cache breaks").
const (
	// BreakWarmGap is the longest pause between the end of a turn's
	// previous turn and the turn for which the previous prefix is still
	// expected warm: every cache entry, 5-minute or 1-hour, outlives it.
	BreakWarmGap = TTL5m
	// BreakMinTokens is the smallest expected prefix a break is reported
	// for: Anthropic caches no prompt shorter than 1,024 tokens.
	BreakMinTokens = 1024
)

// ChainKey identifies a cache chain: the successive requests of one agent
// of one session with one model, which reuse one growing prompt prefix. A
// subagent has its own system prompt and so its own prefix; another model
// has its own cache. Rows without a session form one chain per developer,
// agent and model.
type ChainKey struct {
	UserID, SessionID, AgentID, Model string
}

func keyOf(r Request) ChainKey {
	return ChainKey{UserID: r.UserID, SessionID: r.SessionID, AgentID: r.AgentID, Model: r.Model}
}

// Break is a turn whose cache read collapsed.
type Break struct {
	RequestID string
	Chain     ChainKey
	Time      time.Time
	// Turn is the request's 1-based position in its chain among the rows
	// analysed.
	Turn int
	// PreviousRequestID is the chain's previous turn, whose prefix was
	// expected warm; Gap is from the end of its answer to this request.
	PreviousRequestID string
	Gap               time.Duration
	// Expected is the previous turn's cache read + cache writes: the prefix
	// it left in the cache. CacheRead is what this turn read; Lost the
	// difference, re-written or sent uncached.
	Expected, CacheRead, Lost int64
	// WastedUSD is what the lost tokens cost beyond reading them from the
	// cache (exact, not rounded).
	WastedUSD decimal.Decimal
}

// Fact is what the cache analysis found about one request.
type Fact struct {
	Request Request
	// SavedUSD is what the request would have cost without prompt caching
	// minus what it cost: cache reads at the input rate instead of the
	// cache-read rate, less the premium of cache writes over the input
	// rate. Negative when writes cost more than reads saved. Exact.
	SavedUSD decimal.Decimal
	// Unread5m and Unread1h are the request's cache-write tokens that no
	// later request of its chain read within their lifetime; UnreadUSD5m
	// and UnreadUSD1h what writing them cost. Pending5m and Pending1h are
	// writes whose lifetime had not ended at the analysis time: neither
	// read nor unread yet.
	Unread5m, Unread1h, Pending5m, Pending1h int64
	UnreadUSD5m, UnreadUSD1h                 decimal.Decimal
	// Break is set when the request is a cache break.
	Break *Break
}

// pendingWrite is a request's cache writes of one lifetime, waiting for a
// read.
type pendingWrite struct {
	fact     int // index in the facts
	ttl1h    bool
	deadline time.Time
}

// chainState follows one chain through the rows.
type chainState struct {
	turns   int
	prev    int // index of the previous billed row's fact, -1 before
	pending []pendingWrite
}

// AnalyzeCache computes the cache facts of reqs (any order; rows of any
// sessions), returned in time order. Only answered Messages requests (status
// 200, not count_tokens) take part; the others get zero facts. asOf is the
// analysis time: a write whose lifetime ends after it is pending, not
// unread.
//
// A request's cache writes of one lifetime were read back when a later
// request of the same chain that started no later than the writing
// request's answer end plus the lifetime read from the cache (cache read
// tokens > 0); otherwise they are unread. Reading refreshes a cache entry,
// so a write read once is never counted as unread.
//
// A request n is a cache break when its chain's previous answered request
// p ended at most BreakWarmGap before n started (so p's prefix was warm),
// p left a prefix of Expected = p's cache read + cache writes ≥
// BreakMinTokens, n's prompt (input + cache read + cache writes) is at least
// Expected tokens (it did not shrink, as it would after a compaction), and
// n read less than half of Expected. The Lost = Expected − n's cache read
// tokens are taken from n's 5-minute writes, then its 1-hour writes, then
// its uncached input; WastedUSD prices each at its rate minus the cache-read
// rate.
func AnalyzeCache(reqs []Request, asOf time.Time) []Fact {
	rs := slices.Clone(reqs)
	slices.SortStableFunc(rs, func(a, b Request) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.RequestID, b.RequestID))
	})
	facts := make([]Fact, len(rs))
	chains := map[ChainKey]*chainState{}
	for i, r := range rs {
		f := &facts[i]
		f.Request = r
		f.SavedUSD, f.UnreadUSD5m, f.UnreadUSD1h = decimal.Zero, decimal.Zero, decimal.Zero
		if !r.billed() {
			continue
		}
		f.SavedUSD = Saved(r)
		k := keyOf(r)
		c := chains[k]
		if c == nil {
			c = &chainState{prev: -1}
			chains[k] = c
		}
		c.turns++
		// Settle the earlier writes this request reads or outlived.
		kept := c.pending[:0]
		for _, w := range c.pending {
			switch {
			case r.Time.After(w.deadline):
				facts[w.fact].unread(w.ttl1h)
			case r.CacheRead > 0:
				// read back
			default:
				kept = append(kept, w)
			}
		}
		c.pending = kept
		if c.prev >= 0 {
			f.Break = checkBreak(facts[c.prev].Request, r, c.turns)
		}
		if r.CacheWrite5m > 0 {
			c.pending = append(c.pending, pendingWrite{fact: i, deadline: r.End().Add(TTL5m)})
		}
		if r.CacheWrite1h > 0 {
			c.pending = append(c.pending, pendingWrite{fact: i, ttl1h: true, deadline: r.End().Add(TTL1h)})
		}
		c.prev = i
	}
	for _, c := range chains {
		for _, w := range c.pending {
			if asOf.After(w.deadline) {
				facts[w.fact].unread(w.ttl1h)
			} else if w.ttl1h {
				facts[w.fact].Pending1h = facts[w.fact].Request.CacheWrite1h
			} else {
				facts[w.fact].Pending5m = facts[w.fact].Request.CacheWrite5m
			}
		}
	}
	return facts
}

func (f *Fact) unread(ttl1h bool) {
	r := f.Request
	if ttl1h {
		f.Unread1h, f.UnreadUSD1h = r.CacheWrite1h, usd(r.CacheWrite1h, r.Rates.CacheWrite1h)
	} else {
		f.Unread5m, f.UnreadUSD5m = r.CacheWrite5m, usd(r.CacheWrite5m, r.Rates.CacheWrite5m)
	}
}

// Saved is what r would have cost without prompt caching minus what it
// cost, exact: cache reads × (input − cache-read rate) − 5-minute writes ×
// (5-minute write − input rate) − 1-hour writes × (1-hour write − input
// rate). Output tokens cost the same either way.
func Saved(r Request) decimal.Decimal {
	rt := r.Rates
	return usd(r.CacheRead, rt.Input.Sub(rt.CacheRead)).
		Sub(usd(r.CacheWrite5m, rt.CacheWrite5m.Sub(rt.Input))).
		Sub(usd(r.CacheWrite1h, rt.CacheWrite1h.Sub(rt.Input)))
}

// checkBreak applies the break rule to request n, the turn-th of its chain,
// whose chain's previous answered request is p.
func checkBreak(p, n Request, turn int) *Break {
	gap := n.Time.Sub(p.End())
	if gap > BreakWarmGap || gap < -SpawnSkew {
		return nil
	}
	expected := p.CacheRead + p.CacheWrite5m + p.CacheWrite1h
	prompt := n.Input + n.CacheRead + n.CacheWrite5m + n.CacheWrite1h
	if expected < BreakMinTokens || prompt < expected || 2*n.CacheRead >= expected {
		return nil
	}
	lost := expected - n.CacheRead
	rt := n.Rates
	left := lost
	take := func(avail int64) int64 {
		t := min(avail, left)
		left -= t
		return t
	}
	a5, a1, ai := take(n.CacheWrite5m), take(n.CacheWrite1h), take(n.Input)
	wasted := usd(a5, rt.CacheWrite5m.Sub(rt.CacheRead)).
		Add(usd(a1, rt.CacheWrite1h.Sub(rt.CacheRead))).
		Add(usd(ai, rt.Input.Sub(rt.CacheRead)))
	return &Break{
		RequestID: n.RequestID, Chain: keyOf(n), Time: n.Time, Turn: turn,
		PreviousRequestID: p.RequestID, Gap: gap,
		Expected: expected, CacheRead: n.CacheRead, Lost: lost, WastedUSD: wasted,
	}
}

// Totals adds up the cache facts of a group of requests.
type Totals struct {
	// Requests counts the answered Messages requests.
	Requests                                     int64
	Input, CacheRead, CacheWrite5m, CacheWrite1h int64
	// SavedUSD, UnreadUSD5m, UnreadUSD1h and BreakWastedUSD are exact sums;
	// round them with Round6 for display.
	SavedUSD                                 decimal.Decimal
	Unread5m, Unread1h, Pending5m, Pending1h int64
	UnreadUSD5m, UnreadUSD1h                 decimal.Decimal
	Breaks                                   int64
	BreakWastedUSD                           decimal.Decimal
}

// Add adds one request's facts.
func (t *Totals) Add(f Fact) {
	if !f.Request.billed() {
		return
	}
	r := f.Request
	t.Requests++
	t.Input += r.Input
	t.CacheRead += r.CacheRead
	t.CacheWrite5m += r.CacheWrite5m
	t.CacheWrite1h += r.CacheWrite1h
	t.SavedUSD = t.SavedUSD.Add(f.SavedUSD)
	t.Unread5m += f.Unread5m
	t.Unread1h += f.Unread1h
	t.Pending5m += f.Pending5m
	t.Pending1h += f.Pending1h
	t.UnreadUSD5m = t.UnreadUSD5m.Add(f.UnreadUSD5m)
	t.UnreadUSD1h = t.UnreadUSD1h.Add(f.UnreadUSD1h)
	if f.Break != nil {
		t.Breaks++
		t.BreakWastedUSD = t.BreakWastedUSD.Add(f.Break.WastedUSD)
	}
}

// HitRate is cache read / (cache read + uncached input + cache writes), the
// share of prompt tokens served from the cache; ok is false when the group
// sent no prompt tokens.
func (t Totals) HitRate() (rate decimal.Decimal, ok bool) {
	den := t.CacheRead + t.Input + t.CacheWrite5m + t.CacheWrite1h
	if den == 0 {
		return decimal.Zero, false
	}
	return decimal.NewFromInt(t.CacheRead).DivRound(decimal.NewFromInt(den), 6), true
}
