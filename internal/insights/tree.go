package insights

import (
	"cmp"
	"slices"
	"time"

	"github.com/shopspring/decimal"
)

// How a node's parent was found (Node.ParentSource).
const (
	// ParentRoot marks the main agent: the requests without an agent id.
	ParentRoot = "root"
	// ParentHeader: the subagent's requests carried
	// x-claude-code-parent-agent-id.
	ParentHeader = "header"
	// ParentSpawn: inferred. The parent is the agent whose answer, ended
	// before the subagent's first request, called the subagent tool (Agent
	// or Task) with a call no earlier subagent was matched to; of several,
	// the one that ended last.
	ParentSpawn = "spawn"
	// ParentAssumed: inferred without evidence. No unmatched subagent call
	// ended before the subagent's first request (a non-streamed answer, or
	// one outside the rows read), so the subagent is attached to the main
	// agent.
	ParentAssumed = "assumed"
	// ParentUnseen marks a node created for a parent id that a header named
	// but that sent no request in the rows read; it hangs under the root.
	ParentUnseen = "unseen"
)

// Tree sources (Tree.Source).
const (
	// SourceNone: the session has no subagents.
	SourceNone = "none"
	// SourceHeader: every subagent's parent came from the parent header.
	SourceHeader = "header"
	// SourceInferred: at least one parent was inferred (ParentSpawn or
	// ParentAssumed).
	SourceInferred = "inferred"
)

// SpawnSkew is how far a subagent's first request may precede the end of
// the answer that spawned it and still be matched to it: the two instants
// may be measured by different extproc replicas whose clocks differ a
// little. A subagent cannot really start before that answer ended.
const SpawnSkew = 2 * time.Second

// Node is one agent of a session: its own requests' totals and the
// subagents it spawned.
type Node struct {
	// AgentID is '' for the main agent.
	AgentID string
	// ParentAgentID is the parent's agent id ('' for the main agent and its
	// direct children).
	ParentAgentID string
	// ParentSource is one of the Parent* constants.
	ParentSource string
	// SpawnedBy is the request whose answer's subagent call was matched to
	// this agent (ParentSpawn only).
	SpawnedBy string
	// Requests counts the agent's own requests (count_tokens included).
	Requests int
	// Models are the models the agent's requests asked for, sorted.
	Models                                               []string
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int64
	// Cost is the sum of the agent's own rows' stored costs; SubtreeCost
	// adds its descendants'.
	Cost, SubtreeCost decimal.Decimal
	// Fallbacks counts requests served by Bedrock after Plan refused or
	// failed; Errors requests whose status was 0 or ≥ 400.
	Fallbacks, Errors int
	// Spawns is the number of subagent tool calls in the agent's answers.
	Spawns int
	// Start is the agent's first request, End the end of its last answer.
	Start, End time.Time
	Children   []*Node
}

// Duration is End − Start.
func (n *Node) Duration() time.Duration { return n.End.Sub(n.Start) }

// Tree is the agent tree of one session.
type Tree struct {
	Root *Node
	// Source is one of the Source* constants.
	Source string
	// Requests and Cost are the whole session's: Cost equals
	// Root.SubtreeCost, the sum of every node's Cost.
	Requests   int
	Cost       decimal.Decimal
	Start, End time.Time
}

// Nodes returns the tree's nodes depth first, parents before children.
func (t Tree) Nodes() []*Node {
	var out []*Node
	var walk func(n *Node)
	walk = func(n *Node) {
		out = append(out, n)
		for _, c := range n.Children {
			walk(c)
		}
	}
	if t.Root != nil {
		walk(t.Root)
	}
	return out
}

// BuildTree builds the agent tree of one session's requests (any order).
// Requests without an agent id belong to the main agent, the root; each
// other agent id is a subagent, attached to the parent its header names,
// else to the parent inferred from the subagent tool calls and timing (see
// the Parent* constants).
func BuildTree(reqs []Request) Tree {
	rs := slices.Clone(reqs)
	slices.SortStableFunc(rs, func(a, b Request) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.RequestID, b.RequestID))
	})
	nodes := map[string]*Node{}
	var order []*Node
	node := func(id string) *Node {
		n, ok := nodes[id]
		if !ok {
			n = &Node{AgentID: id}
			nodes[id] = n
			order = append(order, n)
		}
		return n
	}
	root := node("")
	root.ParentSource = ParentRoot
	header := map[string]string{}
	models := map[*Node]map[string]bool{}
	t := Tree{Root: root, Cost: decimal.Zero}
	for _, r := range rs {
		n := node(r.AgentID)
		if r.ParentAgentID != "" && r.AgentID != "" && r.ParentAgentID != r.AgentID {
			if _, ok := header[r.AgentID]; !ok {
				header[r.AgentID] = r.ParentAgentID
			}
		}
		if n.Requests == 0 || r.Time.Before(n.Start) {
			n.Start = r.Time
		}
		if e := r.End(); e.After(n.End) {
			n.End = e
		}
		n.Requests++
		if models[n] == nil {
			models[n] = map[string]bool{}
		}
		if r.Model != "" {
			models[n][r.Model] = true
		}
		n.Input += r.Input
		n.Output += r.Output
		n.CacheRead += r.CacheRead
		n.CacheWrite5m += r.CacheWrite5m
		n.CacheWrite1h += r.CacheWrite1h
		n.Cost = n.Cost.Add(r.Cost)
		n.Spawns += r.AgentSpawns
		if r.Fallback {
			n.Fallbacks++
		}
		if r.Status == 0 || r.Status >= 400 {
			n.Errors++
		}
		t.Requests++
		t.Cost = t.Cost.Add(r.Cost)
		if t.Start.IsZero() || r.Time.Before(t.Start) {
			t.Start = r.Time
		}
		if r.End().After(t.End) {
			t.End = r.End()
		}
	}
	for n, m := range models {
		for id := range m {
			n.Models = append(n.Models, id)
		}
		slices.Sort(n.Models)
	}

	// Parents. Subagents are matched in the order they started, so that
	// each claims the latest free subagent call before it.
	slots := map[int]int{} // index in rs → subagent calls not yet matched
	for i, r := range rs {
		if r.AgentSpawns > 0 {
			slots[i] = r.AgentSpawns
		}
	}
	subagents := slices.Clone(order[1:])
	slices.SortStableFunc(subagents, func(a, b *Node) int { return a.Start.Compare(b.Start) })
	inferred, hasSub := false, false
	for _, n := range subagents {
		if n.Requests == 0 {
			continue // a placeholder made for an unseen header parent
		}
		hasSub = true
		if p, ok := header[n.AgentID]; ok {
			parent, seen := nodes[p]
			if !seen {
				// Placed in time where its first known child starts.
				parent = node(p)
				parent.ParentSource, parent.Start, parent.End = ParentUnseen, n.Start, n.Start
				root.Children = append(root.Children, parent)
			}
			n.ParentAgentID, n.ParentSource = p, ParentHeader
			parent.Children = append(parent.Children, n)
			continue
		}
		if len(header) > 0 {
			// A client that names parents names every parent but the main
			// agent, which has no id to name.
			n.ParentSource = ParentHeader
			root.Children = append(root.Children, n)
			continue
		}
		inferred = true
		// Answers that ended before the subagent started first; only
		// without one, answers ending within the clock skew after.
		best := spawner(rs, slots, nodes, n, 0)
		if best < 0 {
			best = spawner(rs, slots, nodes, n, SpawnSkew)
		}
		if best < 0 {
			n.ParentSource = ParentAssumed
			root.Children = append(root.Children, n)
			continue
		}
		slots[best]--
		parent := nodes[rs[best].AgentID]
		n.ParentAgentID, n.ParentSource, n.SpawnedBy = parent.AgentID, ParentSpawn, rs[best].RequestID
		parent.Children = append(parent.Children, n)
	}
	switch {
	case !hasSub:
		t.Source = SourceNone
	case inferred:
		t.Source = SourceInferred
	default:
		t.Source = SourceHeader
	}
	// A header naming an agent's own descendant would make a cycle that the
	// root cannot reach; such nodes are re-attached to the root.
	reached := map[*Node]bool{}
	var mark func(n *Node)
	mark = func(n *Node) {
		if reached[n] {
			return
		}
		reached[n] = true
		for _, c := range n.Children {
			mark(c)
		}
	}
	mark(root)
	for _, n := range order {
		if !reached[n] {
			t.Source = SourceInferred
			n.ParentAgentID, n.ParentSource = "", ParentAssumed
			for _, p := range order {
				p.Children = slices.DeleteFunc(p.Children, func(c *Node) bool { return c == n })
			}
			root.Children = append(root.Children, n)
			mark(n)
		}
	}
	var sum func(n *Node) decimal.Decimal
	sum = func(n *Node) decimal.Decimal {
		slices.SortStableFunc(n.Children, func(a, b *Node) int {
			return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.AgentID, b.AgentID))
		})
		total := n.Cost
		for _, c := range n.Children {
			total = total.Add(sum(c))
		}
		n.SubtreeCost = total
		return total
	}
	sum(root)
	return t
}

// spawner returns the index of the answer in rs whose unmatched subagent
// call most likely started subagent n: of the answers of other agents that
// started no later than n, with a call left, ended at most skew after n's
// first request, the one that ended last; -1 if none.
func spawner(rs []Request, slots map[int]int, nodes map[string]*Node, n *Node, skew time.Duration) int {
	best := -1
	for i, r := range rs {
		if slots[i] == 0 || r.AgentID == n.AgentID || r.End().After(n.Start.Add(skew)) {
			continue
		}
		if nodes[r.AgentID].Start.After(n.Start) {
			continue // an agent that started later cannot have spawned n
		}
		if best < 0 || !r.End().Before(rs[best].End()) {
			best = i
		}
	}
	return best
}
