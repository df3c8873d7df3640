package admin

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/ingest"
	"github.com/ccproxy/ccproxy/internal/insights"
	"github.com/ccproxy/ccproxy/internal/store"
)

// maxAnalysisRows bounds the usage rows one session or cache analysis reads
// (about 100 MB of memory at most); a wider question is refused with a
// problem asking for a narrower range or one developer.
const maxAnalysisRows = 200_000

// Margins around an analysed range (docs/sessions.md): the rows of the hour
// before it give the first turns in range their previous turn, and the rows
// of the lifetime of a 1-hour write after it (plus a long answer) tell
// whether the writes in range were read back.
const (
	analysisBefore = time.Hour
	analysisAfter  = time.Hour + 15*time.Minute
)

// intParam reads an optional integer query parameter in [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int, errs *[]fieldError) int {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		*errs = append(*errs, fieldError{Field: name, Message: "must be an integer from " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi)})
	}
	return n
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type agentNodeJSON struct {
	AgentID            string          `json:"agent_id"`
	ParentAgentID      string          `json:"parent_agent_id"`
	ParentSource       string          `json:"parent_source"`
	SpawnedBy          string          `json:"spawned_by_request_id,omitempty"`
	Requests           int             `json:"requests"`
	Models             []string        `json:"models"`
	InputTokens        int64           `json:"input_tokens"`
	OutputTokens       int64           `json:"output_tokens"`
	CacheReadTokens    int64           `json:"cache_read_tokens"`
	CacheWrite5mTokens int64           `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens int64           `json:"cache_write_1h_tokens"`
	CostUSD            string          `json:"cost_usd"`
	SubtreeCostUSD     string          `json:"subtree_cost_usd"`
	Fallbacks          int             `json:"fallbacks"`
	Errors             int             `json:"errors"`
	SubagentCalls      int             `json:"subagent_calls"`
	FirstAt            *time.Time      `json:"first_at"`
	LastAt             *time.Time      `json:"last_at"`
	DurationMs         int64           `json:"duration_ms"`
	Children           []agentNodeJSON `json:"children"`
}

func toAgentNode(n *insights.Node) agentNodeJSON {
	out := agentNodeJSON{AgentID: n.AgentID, ParentAgentID: n.ParentAgentID, ParentSource: n.ParentSource,
		SpawnedBy: n.SpawnedBy, Requests: n.Requests, Models: nonNil(n.Models), InputTokens: n.Input,
		OutputTokens: n.Output, CacheReadTokens: n.CacheRead, CacheWrite5mTokens: n.CacheWrite5m,
		CacheWrite1hTokens: n.CacheWrite1h, CostUSD: n.Cost.String(), SubtreeCostUSD: n.SubtreeCost.String(),
		Fallbacks: n.Fallbacks, Errors: n.Errors, SubagentCalls: n.Spawns, Children: []agentNodeJSON{}}
	if n.Requests > 0 {
		first, last := n.Start, n.End
		out.FirstAt, out.LastAt, out.DurationMs = &first, &last, n.Duration().Milliseconds()
	}
	for _, c := range n.Children {
		out.Children = append(out.Children, toAgentNode(c))
	}
	return out
}

type cacheTotalsJSON struct {
	Requests           int64   `json:"requests"`
	InputTokens        int64   `json:"input_tokens"`
	CacheReadTokens    int64   `json:"cache_read_tokens"`
	CacheWrite5mTokens int64   `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens int64   `json:"cache_write_1h_tokens"`
	HitRate            *string `json:"hit_rate"`
	SavedUSD           string  `json:"saved_usd"`
	Unread5mTokens     int64   `json:"unread_5m_tokens"`
	Unread5mUSD        string  `json:"unread_5m_usd"`
	Unread1hTokens     int64   `json:"unread_1h_tokens"`
	Unread1hUSD        string  `json:"unread_1h_usd"`
	Pending5mTokens    int64   `json:"pending_5m_tokens"`
	Pending1hTokens    int64   `json:"pending_1h_tokens"`
	Breaks             int64   `json:"breaks"`
	BreakWastedUSD     string  `json:"break_wasted_usd"`
}

func toCacheTotals(t insights.Totals) cacheTotalsJSON {
	out := cacheTotalsJSON{Requests: t.Requests, InputTokens: t.Input, CacheReadTokens: t.CacheRead,
		CacheWrite5mTokens: t.CacheWrite5m, CacheWrite1hTokens: t.CacheWrite1h,
		SavedUSD: insights.Round6(t.SavedUSD).String(), Unread5mTokens: t.Unread5m,
		Unread5mUSD: insights.Round6(t.UnreadUSD5m).String(), Unread1hTokens: t.Unread1h,
		Unread1hUSD: insights.Round6(t.UnreadUSD1h).String(), Pending5mTokens: t.Pending5m, Pending1hTokens: t.Pending1h,
		Breaks: t.Breaks, BreakWastedUSD: insights.Round6(t.BreakWastedUSD).String()}
	if rate, ok := t.HitRate(); ok {
		s := rate.StringFixed(6)
		out.HitRate = &s
	}
	return out
}

type cacheBreakJSON struct {
	RequestID         string    `json:"request_id"`
	UserID            string    `json:"user_id"`
	SessionID         string    `json:"session_id"`
	AgentID           string    `json:"agent_id"`
	Model             string    `json:"model"`
	Time              time.Time `json:"time"`
	Turn              int       `json:"turn"`
	PreviousRequestID string    `json:"previous_request_id"`
	GapMs             int64     `json:"gap_ms"`
	ExpectedTokens    int64     `json:"expected_tokens"`
	CacheReadTokens   int64     `json:"cache_read_tokens"`
	LostTokens        int64     `json:"lost_tokens"`
	WastedUSD         string    `json:"wasted_usd"`
}

func toCacheBreak(b *insights.Break) cacheBreakJSON {
	return cacheBreakJSON{RequestID: b.RequestID, UserID: b.Chain.UserID, SessionID: b.Chain.SessionID,
		AgentID: b.Chain.AgentID, Model: b.Chain.Model, Time: b.Time, Turn: b.Turn,
		PreviousRequestID: b.PreviousRequestID, GapMs: b.Gap.Milliseconds(), ExpectedTokens: b.Expected,
		CacheReadTokens: b.CacheRead, LostTokens: b.Lost, WastedUSD: insights.Round6(b.WastedUSD).String()}
}

type sessionTreeJSON struct {
	SessionID   string           `json:"session_id"`
	UserID      uuid.UUID        `json:"user_id"`
	TreeSource  string           `json:"tree_source"`
	Requests    int              `json:"requests"`
	CostUSD     string           `json:"cost_usd"`
	FirstAt     time.Time        `json:"first_at"`
	LastAt      time.Time        `json:"last_at"`
	DurationMs  int64            `json:"duration_ms"`
	Root        agentNodeJSON    `json:"root"`
	Cache       cacheTotalsJSON  `json:"cache"`
	CacheBreaks []cacheBreakJSON `json:"cache_breaks"`
}

// handleGetSession serves GET /users/{id}/sessions/{session_id}: the agent
// tree of the developer's session and its prompt-cache economics, from all
// of the session's rows.
func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	sid := r.PathValue("session_id")
	if len(sid) > ingest.MaxTextLen {
		s.problem(w, r, http.StatusNotFound, "not found", "no session has this id")
		return
	}
	reqs, err := s.analysisRows(r.Context(), store.EventScan{UserID: &id, SessionID: sid})
	if err != nil {
		s.analysisError(w, r, err)
		return
	}
	if len(reqs) == 0 {
		s.problem(w, r, http.StatusNotFound, "not found", "the developer has no request in this session")
		return
	}
	tree := insights.BuildTree(reqs)
	var tot insights.Totals
	out := sessionTreeJSON{SessionID: sid, UserID: id, TreeSource: tree.Source, Requests: tree.Requests,
		CostUSD: tree.Cost.String(), FirstAt: tree.Start, LastAt: tree.End, DurationMs: tree.End.Sub(tree.Start).Milliseconds(),
		Root: toAgentNode(tree.Root), CacheBreaks: []cacheBreakJSON{}}
	for _, f := range insights.AnalyzeCache(reqs, s.now()) {
		tot.Add(f)
		if f.Break != nil {
			out.CacheBreaks = append(out.CacheBreaks, toCacheBreak(f.Break))
		}
	}
	out.Cache = toCacheTotals(tot)
	writeJSON(w, http.StatusOK, out)
}

// analysisRows reads the Messages rows s selects, with the rates each was
// priced at.
func (s *Server) analysisRows(ctx context.Context, scan store.EventScan) ([]insights.Request, error) {
	scan.Limit = maxAnalysisRows
	rates := ingest.NewRateFinder(s.st)
	var out []insights.Request
	err := s.st.Usage().ScanEvents(ctx, scan, func(e store.UsageEvent) error {
		rt, err := rates.Rates(ctx, &e)
		if err != nil {
			return err
		}
		out = append(out, insights.Request{
			RequestID: e.RequestID, UserID: e.UserID.String(), SessionID: e.SessionID, AgentID: e.AgentID,
			ParentAgentID: e.ParentAgentID, AgentSpawns: e.AgentSpawns, Time: e.EventTime,
			Latency: time.Duration(e.LatencyMs) * time.Millisecond, Model: e.RequestedModel,
			Provider: string(e.Provider), Fallback: e.Fallback, FallbackReason: e.FallbackReason, Status: e.Status,
			CountTokens: e.Kind == store.KindCountTokens, Input: e.InputTokens, Output: e.OutputTokens,
			CacheRead: e.CacheReadTokens, CacheWrite5m: e.CacheWrite5mTokens, CacheWrite1h: e.CacheWrite1hTokens,
			Cost: e.CostUSD, Rates: insights.Rates{Input: rt.Input, Output: rt.Output, CacheRead: rt.CacheRead,
				CacheWrite5m: rt.CacheWrite5m, CacheWrite1h: rt.CacheWrite1h},
		})
		return nil
	})
	return out, err
}

func (s *Server) analysisError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrTooMany) {
		s.problem(w, r, http.StatusUnprocessableEntity, "too many usage rows",
			"more than "+strconv.Itoa(maxAnalysisRows)+" requests match: narrow the time range or pick a developer")
		return
	}
	s.storeError(w, r, err)
}

// Cache economics groupings.
var cacheGroups = map[string]func(f insights.Fact) string{
	"user":    func(f insights.Fact) string { return f.Request.UserID },
	"session": func(f insights.Fact) string { return f.Request.SessionID },
	"model":   func(f insights.Fact) string { return f.Request.Model },
	"day":     func(f insights.Fact) string { return f.Request.Time.UTC().Format(time.DateOnly) },
}

type cacheGroupJSON struct {
	Key string `json:"key"`
	// Name is the developer's name of a user group.
	Name string `json:"name,omitempty"`
	cacheTotalsJSON
}

type cacheEconomicsJSON struct {
	From    time.Time        `json:"from"`
	To      time.Time        `json:"to"`
	GroupBy string           `json:"group_by"`
	Total   cacheTotalsJSON  `json:"total"`
	Groups  []cacheGroupJSON `json:"groups"`
}

// cacheFacts reads the parameters shared by the cache endpoints and
// returns the facts of the requests in range; it answers the request itself
// when ok is false.
func (s *Server) cacheFacts(w http.ResponseWriter, r *http.Request, errs []fieldError) ([]insights.Fact, time.Time, time.Time, bool) {
	user, _, from, to := s.usageFilters(r, &errs, true)
	sid := r.URL.Query().Get("session_id")
	if len(sid) > ingest.MaxTextLen {
		errs = append(errs, fieldError{Field: "session_id", Message: "too long"})
	}
	if r.URL.Query().Has("key_id") {
		errs = append(errs, fieldError{Field: "key_id", Message: "is not a filter of this endpoint"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return nil, from, to, false
	}
	reqs, err := s.analysisRows(r.Context(), store.EventScan{UserID: user, SessionID: sid,
		From: from.Add(-analysisBefore), To: to.Add(analysisAfter)})
	if err != nil {
		s.analysisError(w, r, err)
		return nil, from, to, false
	}
	var in []insights.Fact
	for _, f := range insights.AnalyzeCache(reqs, s.now()) {
		if t := f.Request.Time; !t.Before(from) && t.Before(to) {
			in = append(in, f)
		}
	}
	return in, from, to, true
}

// handleCacheEconomics serves GET /cache/economics.
func (s *Server) handleCacheEconomics(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	gb := cmp.Or(r.URL.Query().Get("group_by"), "day")
	key, ok := cacheGroups[gb]
	if !ok {
		errs = append(errs, fieldError{Field: "group_by", Message: "must be user, session, model or day"})
	}
	facts, from, to, ok := s.cacheFacts(w, r, errs)
	if !ok {
		return
	}
	var total insights.Totals
	groups := map[string]*insights.Totals{}
	for _, f := range facts {
		total.Add(f)
		k := key(f)
		if groups[k] == nil {
			groups[k] = &insights.Totals{}
		}
		groups[k].Add(f)
	}
	out := cacheEconomicsJSON{From: from, To: to, GroupBy: gb, Total: toCacheTotals(total), Groups: []cacheGroupJSON{}}
	for k, t := range groups {
		if t.Requests > 0 {
			out.Groups = append(out.Groups, cacheGroupJSON{Key: k, cacheTotalsJSON: toCacheTotals(*t)})
		}
	}
	slices.SortFunc(out.Groups, func(a, b cacheGroupJSON) int { return cmp.Compare(a.Key, b.Key) })
	if gb == "user" && len(out.Groups) > 0 {
		ids := make([]uuid.UUID, 0, len(out.Groups))
		for _, g := range out.Groups {
			if id, err := uuid.Parse(g.Key); err == nil {
				ids = append(ids, id)
			}
		}
		names, err := s.st.Users().Names(r.Context(), ids)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		for i, g := range out.Groups {
			if id, err := uuid.Parse(g.Key); err == nil {
				out.Groups[i].Name = names[id]
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type cacheBreaksJSON struct {
	From   time.Time        `json:"from"`
	To     time.Time        `json:"to"`
	Breaks []cacheBreakJSON `json:"breaks"`
}

// handleCacheBreaks serves GET /cache/breaks: the breaks in range, the most
// wasteful first.
func (s *Server) handleCacheBreaks(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit := intParam(r, "limit", 100, 1, 1000, &errs)
	facts, from, to, ok := s.cacheFacts(w, r, errs)
	if !ok {
		return
	}
	var bs []*insights.Break
	for _, f := range facts {
		if f.Break != nil {
			bs = append(bs, f.Break)
		}
	}
	slices.SortStableFunc(bs, func(a, b *insights.Break) int {
		return cmp.Or(b.WastedUSD.Cmp(a.WastedUSD), a.Time.Compare(b.Time), cmp.Compare(a.RequestID, b.RequestID))
	})
	out := cacheBreaksJSON{From: from, To: to, Breaks: []cacheBreakJSON{}}
	for _, b := range bs[:min(limit, len(bs))] {
		out.Breaks = append(out.Breaks, toCacheBreak(b))
	}
	writeJSON(w, http.StatusOK, out)
}
