package insights

import (
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// opus are the rates of the hand-computed cases, USD per million tokens.
var opus = Rates{Input: dec("5"), Output: dec("25"), CacheRead: dec("0.5"), CacheWrite5m: dec("6.25"), CacheWrite1h: dec("10")}

var t0 = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

// turn is a main-agent Messages request of session s1 on claude-opus-5-5,
// starting at t0+at and answered in 5 s.
func turn(id string, at time.Duration, input, read, w5, w1 int64) Request {
	return Request{RequestID: id, UserID: "u1", SessionID: "s1", Time: t0.Add(at), Latency: 5 * time.Second,
		Model: "claude-opus-5-5", Provider: "anthropic", Status: 200,
		Input: input, Output: 100, CacheRead: read, CacheWrite5m: w5, CacheWrite1h: w1, Rates: opus}
}

// conversation is six turns 30 s apart whose fifth lost its cache: it read
// nothing and re-wrote the whole prefix.
func conversation() []Request {
	return []Request{
		turn("t1", 0, 10, 0, 20000, 0),
		turn("t2", 30*time.Second, 12, 20000, 1500, 0),
		turn("t3", 60*time.Second, 8, 21500, 800, 0),
		turn("t4", 90*time.Second, 9, 22300, 1200, 0),
		turn("t5", 120*time.Second, 7, 0, 24700, 0),
		turn("t6", 150*time.Second, 10, 24700, 600, 0),
	}
}

func TestSaved(t *testing.T) {
	tests := []struct {
		name string
		r    Request
		want string
	}{
		// 20000 × (6.25 − 5) / 1e6 = 0.025 spent on the write premium.
		{"write only", turn("a", 0, 10, 0, 20000, 0), "-0.025"},
		// 20000 × 4.5 / 1e6 − 1500 × 1.25 / 1e6 = 0.09 − 0.001875.
		{"read and write", turn("b", 0, 12, 20000, 1500, 0), "0.088125"},
		// 1h writes: 3000 × (10 − 5) / 1e6 = 0.015; read 7 × 4.5 / 1e6 = 0.0000315.
		{"1h write, tiny read", turn("c", 0, 1, 7, 0, 3000), "-0.0149685"},
		{"no cache", turn("d", 0, 500, 0, 0, 0), "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Saved(tt.r); !got.Equal(dec(tt.want)) {
				t.Errorf("Saved = %s; want %s", got, tt.want)
			}
		})
	}
}

func TestCacheBreakAtTurnFive(t *testing.T) {
	facts := AnalyzeCache(conversation(), t0.Add(24*time.Hour))
	var breaks []*Break
	var tot Totals
	for _, f := range facts {
		tot.Add(f)
		if f.Break != nil {
			breaks = append(breaks, f.Break)
		}
	}
	if len(breaks) != 1 {
		t.Fatalf("%d breaks; want 1: %+v", len(breaks), breaks)
	}
	b := breaks[0]
	// Turn 4 left 22300 read + 1200 written = 23500 tokens warm; turn 5,
	// 25 s after turn 4's answer ended, read none and wrote 24700: the
	// 23500 lost tokens were written at 6.25 instead of read at 0.5:
	// 23500 × 5.75 / 1e6 = 0.135125.
	want := Break{RequestID: "t5", Chain: ChainKey{UserID: "u1", SessionID: "s1", Model: "claude-opus-5-5"},
		Time: t0.Add(120 * time.Second), Turn: 5, PreviousRequestID: "t4", Gap: 25 * time.Second,
		Expected: 23500, CacheRead: 0, Lost: 23500, WastedUSD: dec("0.135125")}
	if !b.WastedUSD.Equal(want.WastedUSD) {
		t.Errorf("wasted %s; want %s", b.WastedUSD, want.WastedUSD)
	}
	b.WastedUSD, want.WastedUSD = decimal.Zero, decimal.Zero
	if *b != want {
		t.Errorf("break\n got %+v\nwant %+v", *b, want)
	}
	// Saved: −0.025 + 0.088125 + 0.09575 + 0.09885 − 0.030875 + 0.1104.
	if !tot.SavedUSD.Equal(dec("0.33725")) {
		t.Errorf("saved %s; want 0.33725", tot.SavedUSD)
	}
	// Only turn 6's write is never read: 600 × 6.25 / 1e6.
	if tot.Unread5m != 600 || !tot.UnreadUSD5m.Equal(dec("0.00375")) || tot.Unread1h != 0 || !tot.UnreadUSD1h.IsZero() {
		t.Errorf("unread 5m %d ($%s), 1h %d ($%s); want 600 ($0.00375), 0", tot.Unread5m, tot.UnreadUSD5m, tot.Unread1h, tot.UnreadUSD1h)
	}
	// 88500 read / (88500 + 56 input + 48800 written).
	if r, ok := tot.HitRate(); !ok || !r.Equal(dec("0.644311")) {
		t.Errorf("hit rate %s, %v; want 0.644311", r, ok)
	}
	if tot.Breaks != 1 || !tot.BreakWastedUSD.Equal(dec("0.135125")) || tot.Requests != 6 {
		t.Errorf("totals %+v", tot)
	}
}

func TestCacheBreakRule(t *testing.T) {
	prev := turn("p", 0, 10, 20000, 4000, 0) // leaves 24000 tokens warm
	tests := []struct {
		name   string
		next   Request
		wasted string // "" = no break
	}{
		{"warm read", turn("n", 60*time.Second, 10, 24000, 300, 0), ""},
		{"read exactly half is no break", turn("n", 60*time.Second, 10, 12000, 12300, 0), ""},
		// Lost 24000 − 11999 = 12001: 12001 from the 5m writes at 5.75.
		{"read just under half", turn("n", 60*time.Second, 10, 11999, 12301, 0), "0.06900575"},
		// Gap 5 min exactly (answer ended at 5 s): still warm.
		{"gap of 5 minutes", turn("n", 5*time.Second+5*time.Minute, 10, 0, 24300, 0), "0.138"},
		{"gap over 5 minutes: cold is expected", turn("n", 5*time.Second+5*time.Minute+time.Millisecond, 10, 0, 24300, 0), ""},
		{"prompt shrank (compaction)", turn("n", 60*time.Second, 10, 0, 9000, 0), ""},
		// Lost 24000: 5000 5m writes at 5.75, 15000 1h writes at 9.5,
		// 4000 input at 4.5 = 0.02875 + 0.1425 + 0.018.
		{"lost spread over writes and input", turn("n", 60*time.Second, 4000, 0, 5000, 15000), "0.18925"},
		{"other model is another chain", func() Request {
			r := turn("n", 60*time.Second, 10, 0, 24300, 0)
			r.Model = "claude-haiku-4-5"
			return r
		}(), ""},
		{"other agent is another chain", func() Request { r := turn("n", 60*time.Second, 10, 0, 24300, 0); r.AgentID = "a1"; return r }(), ""},
		{"error answers are skipped", func() Request { r := turn("n", 60*time.Second, 0, 0, 0, 0); r.Status = 429; return r }(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			facts := AnalyzeCache([]Request{prev, tt.next}, t0.Add(time.Hour*3))
			b := facts[1].Break
			switch {
			case tt.wasted == "" && b != nil:
				t.Errorf("break %+v; want none", *b)
			case tt.wasted != "" && b == nil:
				t.Errorf("no break; want one wasting %s", tt.wasted)
			case tt.wasted != "" && !b.WastedUSD.Equal(dec(tt.wasted)):
				t.Errorf("wasted %s; want %s", b.WastedUSD, tt.wasted)
			}
		})
	}
	t.Run("small prefix", func(t *testing.T) {
		facts := AnalyzeCache([]Request{turn("p", 0, 10, 0, 1023, 0), turn("n", time.Minute, 10, 0, 1100, 0)}, t0)
		if facts[1].Break != nil {
			t.Errorf("break below %d tokens: %+v", BreakMinTokens, *facts[1].Break)
		}
	})
}

func TestUnreadWrites(t *testing.T) {
	asOf := t0.Add(3 * time.Hour)
	tests := []struct {
		name                 string
		reqs                 []Request
		asOf                 time.Time
		unread5m, unread1h   int64
		pending5m, pending1h int64
		usd5m, usd1h         string
	}{
		{
			name: "read within 5 minutes",
			reqs: []Request{turn("a", 0, 1, 0, 5000, 0), turn("b", 5*time.Second+5*time.Minute, 1, 5000, 0, 0)},
			asOf: asOf, usd5m: "0", usd1h: "0",
		},
		{
			name: "next read comes after 5 minutes",
			reqs: []Request{turn("a", 0, 1, 0, 5000, 0), turn("b", 5*time.Second+5*time.Minute+time.Millisecond, 1, 5000, 0, 0)},
			asOf: asOf, unread5m: 5000, usd5m: "0.03125", usd1h: "0",
		},
		{
			name: "1h write read after 50 minutes, 5m write of the same turn lost",
			reqs: []Request{turn("a", 0, 1, 0, 2000, 8000), turn("b", 50*time.Minute, 1, 8000, 0, 0)},
			asOf: asOf, unread5m: 2000, usd5m: "0.0125", usd1h: "0",
		},
		{
			name: "1h write never read",
			reqs: []Request{turn("a", 0, 1, 0, 0, 8000), turn("b", 2*time.Hour, 1, 0, 0, 0)},
			asOf: asOf, unread1h: 8000, usd5m: "0", usd1h: "0.08",
		},
		{
			name: "a later turn without reads does not settle; the next read does",
			reqs: []Request{turn("a", 0, 1, 0, 3000, 0), turn("b", time.Minute, 1, 0, 0, 0), turn("c", 2*time.Minute, 1, 3000, 0, 0)},
			asOf: asOf, usd5m: "0", usd1h: "0",
		},
		{
			name: "lifetime still open at the analysis time: pending",
			reqs: []Request{turn("a", 0, 1, 0, 3000, 4000)},
			asOf: t0.Add(time.Minute), pending5m: 3000, pending1h: 4000, usd5m: "0", usd1h: "0",
		},
		{
			name: "another session does not read it",
			reqs: []Request{turn("a", 0, 1, 0, 3000, 0), func() Request { r := turn("b", time.Minute, 1, 3000, 0, 0); r.SessionID = "s2"; return r }()},
			asOf: asOf, unread5m: 3000, usd5m: "0.01875", usd1h: "0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tot Totals
			for _, f := range AnalyzeCache(tt.reqs, tt.asOf) {
				tot.Add(f)
			}
			if tot.Unread5m != tt.unread5m || tot.Unread1h != tt.unread1h || tot.Pending5m != tt.pending5m || tot.Pending1h != tt.pending1h ||
				!tot.UnreadUSD5m.Equal(dec(tt.usd5m)) || !tot.UnreadUSD1h.Equal(dec(tt.usd1h)) {
				t.Errorf("unread 5m %d ($%s) 1h %d ($%s), pending %d/%d; want %d ($%s) %d ($%s), %d/%d",
					tot.Unread5m, tot.UnreadUSD5m, tot.Unread1h, tot.UnreadUSD1h, tot.Pending5m, tot.Pending1h,
					tt.unread5m, tt.usd5m, tt.unread1h, tt.usd1h, tt.pending5m, tt.pending1h)
			}
		})
	}
}

func TestHitRateWithoutPrompt(t *testing.T) {
	if _, ok := (Totals{}).HitRate(); ok {
		t.Error("hit rate of nothing: ok")
	}
}

// req is a request of session s1 by agent at t0+at, answered in lat, with
// a cost.
func req(id, agent string, at, lat time.Duration, cost string, spawns int) Request {
	return Request{RequestID: id, UserID: "u1", SessionID: "s1", AgentID: agent, Time: t0.Add(at), Latency: lat,
		Model: "claude-opus-5-5", Status: 200, Cost: dec(cost), AgentSpawns: spawns}
}

// shape renders a tree as "agent(parent source, cost/subtree)[children]".
func shape(n *Node) string {
	s := n.AgentID + "(" + n.ParentSource + " " + n.Cost.String() + "/" + n.SubtreeCost.String() + ")"
	if len(n.Children) > 0 {
		var parts []string
		for _, c := range n.Children {
			parts = append(parts, shape(c))
		}
		s += "[" + strings.Join(parts, " ") + "]"
	}
	return s
}

func TestBuildTree(t *testing.T) {
	s := time.Second
	tests := []struct {
		name, source, want string
		reqs               []Request
	}{
		{
			name:   "main agent only",
			reqs:   []Request{req("r1", "", 0, s, "0.1", 0), req("r2", "", 10*s, s, "0.2", 0)},
			source: SourceNone, want: "(root 0.3/0.3)",
		},
		{
			// The main agent's answer calls Agent; the subagent's two
			// requests follow; the main agent's next turn carries the result.
			name: "one subagent, spawn inferred",
			reqs: []Request{
				req("m1", "", 0, 2*s, "0.5", 1),
				req("a1", "agent-a", 3*s, s, "0.03", 0),
				req("a2", "agent-a", 5*s, s, "0.04", 0),
				req("m2", "", 8*s, s, "0.6", 0),
			},
			source: SourceInferred, want: "(root 1.1/1.17)[agent-a(spawn 0.07/0.07)]",
		},
		{
			name: "nested and parallel subagents",
			reqs: []Request{
				req("m1", "", 0, 2*s, "1", 2),
				req("a1", "agent-a", 3*s, 2*s, "0.1", 1),
				req("b1", "agent-b", 3*s+500*time.Millisecond, s, "0.2", 0),
				req("c1", "agent-c", 6*s, s, "0.3", 0), // spawned by agent-a's answer a1
				req("m2", "", 10*s, s, "1", 0),
			},
			source: SourceInferred, want: "(root 2/2.6)[agent-a(spawn 0.1/0.4)[agent-c(spawn 0.3/0.3)] agent-b(spawn 0.2/0.2)]",
		},
		{
			name:   "no subagent call seen: assumed under the main agent",
			reqs:   []Request{req("m1", "", 0, 2*s, "1", 0), req("a1", "agent-a", 3*s, s, "0.5", 0)},
			source: SourceInferred, want: "(root 1/1.5)[agent-a(assumed 0.5/0.5)]",
		},
		{
			name: "parent header wins",
			reqs: []Request{
				req("m1", "", 0, 2*s, "1", 1),
				req("a1", "agent-a", 3*s, 2*s, "0.1", 0),
				func() Request { r := req("b1", "agent-b", 6*s, s, "0.2", 0); r.ParentAgentID = "agent-a"; return r }(),
				func() Request { r := req("c1", "agent-c", 7*s, s, "0.3", 0); r.ParentAgentID = "agent-z"; return r }(),
			},
			source: SourceHeader, want: "(root 1/1.6)[agent-a(header 0.1/0.3)[agent-b(header 0.2/0.2)] agent-z(unseen 0/0.3)[agent-c(header 0.3/0.3)]]",
		},
		{
			// Without a header, the main agent is the parent: it has no id
			// a header could name.
			name: "headers only",
			reqs: []Request{
				req("m1", "", 0, 2*s, "1", 0),
				req("a1", "agent-a", 3*s, s, "0.25", 0),
				func() Request { r := req("b1", "agent-b", 4*s, s, "0.5", 0); r.ParentAgentID = "agent-a"; return r }(),
			},
			source: SourceHeader, want: "(root 1/1.75)[agent-a(header 0.25/0.75)[agent-b(header 0.5/0.5)]]",
		},
		{
			name: "header cycle is cut at the root",
			reqs: []Request{
				req("m1", "", 0, 2*s, "1", 0),
				func() Request { r := req("a1", "agent-a", 3*s, s, "0.1", 0); r.ParentAgentID = "agent-b"; return r }(),
				func() Request { r := req("b1", "agent-b", 4*s, s, "0.2", 0); r.ParentAgentID = "agent-a"; return r }(),
			},
			source: SourceInferred, want: "(root 1/1.3)[agent-a(assumed 0.1/0.3)[agent-b(header 0.2/0.2)]]",
		},
		{
			name:   "subagents only in the rows: an empty main agent",
			reqs:   []Request{req("a1", "agent-a", 3*s, s, "0.5", 0)},
			source: SourceInferred, want: "(root 0/0.5)[agent-a(assumed 0.5/0.5)]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := BuildTree(tt.reqs)
			if got := shape(tree.Root); got != tt.want {
				t.Errorf("tree\n got %s\nwant %s", got, tt.want)
			}
			if tree.Source != tt.source {
				t.Errorf("source %q; want %q", tree.Source, tt.source)
			}
			sum := decimal.Zero
			for _, n := range tree.Nodes() {
				sum = sum.Add(n.Cost)
			}
			if !sum.Equal(tree.Cost) || !tree.Root.SubtreeCost.Equal(tree.Cost) || tree.Requests != len(tt.reqs) {
				t.Errorf("node costs sum to %s, root subtree %s, session %s over %d requests", sum, tree.Root.SubtreeCost, tree.Cost, tree.Requests)
			}
		})
	}
}

func TestBuildTreeNodeTotals(t *testing.T) {
	a := req("a1", "agent-a", 3*time.Second, 2*time.Second, "0.1", 0)
	a.Input, a.Output, a.CacheRead, a.CacheWrite5m, a.CacheWrite1h = 1, 2, 3, 4, 5
	b := req("a2", "agent-a", 10*time.Second, 500*time.Millisecond, "0.2", 0)
	b.Model, b.Fallback, b.Provider, b.Input = "claude-haiku-4-5", true, "bedrock", 10
	c := req("a3", "agent-a", 12*time.Second, 0, "0", 0)
	c.Status = 529
	tree := BuildTree([]Request{req("m1", "", 0, time.Second, "1", 1), a, b, c})
	n := tree.Root.Children[0]
	if n.Requests != 3 || n.Input != 11 || n.Output != 2 || n.CacheRead != 3 || n.CacheWrite5m != 4 || n.CacheWrite1h != 5 ||
		n.Fallbacks != 1 || n.Errors != 1 || strings.Join(n.Models, ",") != "claude-haiku-4-5,claude-opus-5-5" ||
		n.Duration() != 9*time.Second || n.SpawnedBy != "m1" || !n.Cost.Equal(dec("0.3")) {
		t.Errorf("node %+v (duration %v)", *n, n.Duration())
	}
	if tree.End.Sub(tree.Start) != 12*time.Second || tree.Root.Spawns != 1 {
		t.Errorf("session %v – %v, spawns %d", tree.Start, tree.End, tree.Root.Spawns)
	}
}
