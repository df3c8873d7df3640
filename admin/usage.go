package admin

import (
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// usageTotalsJSON is what one group of GET /usage adds up.
type usageTotalsJSON struct {
	Requests           int64  `json:"requests"`
	BedrockRequests    int64  `json:"bedrock_requests"`
	InputTokens        int64  `json:"input_tokens"`
	OutputTokens       int64  `json:"output_tokens"`
	CacheReadTokens    int64  `json:"cache_read_tokens"`
	CacheWrite5mTokens int64  `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens int64  `json:"cache_write_1h_tokens"`
	PlanCostUSD        string `json:"plan_cost_usd"`
	BedrockCostUSD     string `json:"bedrock_cost_usd"`
	Fallbacks          int64  `json:"fallbacks"`
	Errors             int64  `json:"errors"`
	Aborted            int64  `json:"aborted"`
}

type usageGroupJSON struct {
	Key     string     `json:"key"`
	FirstAt *time.Time `json:"first_at,omitempty"`
	LastAt  *time.Time `json:"last_at,omitempty"`
	usageTotalsJSON
}

type usageJSON struct {
	From    time.Time        `json:"from"`
	To      time.Time        `json:"to"`
	GroupBy string           `json:"group_by"`
	Groups  []usageGroupJSON `json:"groups"`
}

// usageTeam reads the team_id filter; a team admin's usage is its team's
// whatever it asks.
func usageTeam(r *http.Request, errs *[]fieldError) *uuid.UUID {
	team := uuidParam(r, "team_id", errs)
	if own := actorFrom(r.Context()).teamScope(); own != nil {
		team = own
	}
	return team
}

// usageFilters reads user_id, key_id, from and to.
func (s *Server) usageFilters(r *http.Request, errs *[]fieldError, defaultRange bool) (user, key *uuid.UUID, from, to time.Time) {
	q := r.URL.Query()
	idParam := func(name string) *uuid.UUID {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		id, err := uuid.Parse(v)
		if err != nil || len(v) != 36 {
			*errs = append(*errs, fieldError{Field: name, Message: "must be a UUID"})
			return nil
		}
		return &id
	}
	timeParam := func(name string) time.Time {
		v := q.Get(name)
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			*errs = append(*errs, fieldError{Field: name, Message: "must be an RFC 3339 time"})
		}
		return t.UTC()
	}
	user, key = idParam("user_id"), idParam("key_id")
	from, to = timeParam("from"), timeParam("to")
	if defaultRange {
		if to.IsZero() {
			to = s.now().UTC().Truncate(time.Hour).Add(time.Hour)
		}
		if from.IsZero() {
			from = to.Add(-30 * 24 * time.Hour)
		}
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		*errs = append(*errs, fieldError{Field: "from", Message: "must be before to"})
	}
	return user, key, from, to
}

func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	user, key, from, to := s.usageFilters(r, &errs, true)
	gb := store.UsageGroupBy(r.URL.Query().Get("group_by"))
	if gb == "" {
		gb = store.GroupByDay
	}
	if !gb.Valid() {
		errs = append(errs, fieldError{Field: "group_by", Message: "must be hour, day, model, provider, session, user, key, fallback_reason or team"})
	}
	team := usageTeam(r, &errs)
	loc := tzParam(r, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	groups, err := s.st.Usage().Summary(r.Context(), store.UsageSummaryQuery{UserID: user, AccessKeyID: key, TeamID: team,
		From: from, To: to, GroupBy: gb, Location: loc})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := usageJSON{From: from, To: to, GroupBy: string(gb), Groups: make([]usageGroupJSON, len(groups))}
	for i, g := range groups {
		out.Groups[i] = usageGroupJSON{Key: g.Key, usageTotalsJSON: usageTotalsJSON{
			Requests: g.Requests, BedrockRequests: g.BedrockRequests, InputTokens: g.InputTokens, OutputTokens: g.OutputTokens,
			CacheReadTokens: g.CacheReadTokens, CacheWrite5mTokens: g.CacheWrite5mTokens, CacheWrite1hTokens: g.CacheWrite1hTokens,
			PlanCostUSD: g.PlanCostUSD.String(), BedrockCostUSD: g.BedrockCostUSD.String(),
			Fallbacks: g.Fallbacks, Errors: g.Errors, Aborted: g.Aborted}}
		if gb == store.GroupBySession {
			fa, la := g.FirstAt, g.LastAt
			out.Groups[i].FirstAt, out.Groups[i].LastAt = &fa, &la
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type usageEventJSON struct {
	RequestID          string    `json:"request_id"`
	EventTime          time.Time `json:"event_time"`
	UserID             uuid.UUID `json:"user_id"`
	AccessKeyID        uuid.UUID `json:"access_key_id"`
	SessionID          string    `json:"session_id"`
	AgentID            string    `json:"agent_id"`
	ClientVersion      string    `json:"client_version"`
	Kind               string    `json:"kind"`
	RequestedModel     string    `json:"requested_model"`
	BedrockModelID     string    `json:"bedrock_model_id"`
	Provider           string    `json:"provider"`
	Region             string    `json:"region"`
	Fallback           bool      `json:"fallback"`
	FallbackReason     string    `json:"fallback_reason"`
	Stream             bool      `json:"stream"`
	Status             int       `json:"status"`
	InputTokens        int64     `json:"input_tokens"`
	OutputTokens       int64     `json:"output_tokens"`
	CacheReadTokens    int64     `json:"cache_read_tokens"`
	CacheWrite5mTokens int64     `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens int64     `json:"cache_write_1h_tokens"`
	CostUSD            string    `json:"cost_usd"`
	PriceFlag          string    `json:"price_flag"`
	TTFTMs             *int      `json:"ttft_ms"`
	LatencyMs          int       `json:"latency_ms"`
	Aborted            bool      `json:"aborted"`
	ParentAgentID      string    `json:"parent_agent_id"`
	AgentSpawns        int       `json:"agent_spawns"`
	// TeamID is the team the user was in when the request was served.
	TeamID *uuid.UUID `json:"team_id"`
}

func toUsageEvent(e store.UsageEvent) usageEventJSON {
	return usageEventJSON{RequestID: e.RequestID, EventTime: e.EventTime, UserID: e.UserID, AccessKeyID: e.AccessKeyID,
		SessionID: e.SessionID, AgentID: e.AgentID, ClientVersion: e.ClientVersion, Kind: string(e.Kind),
		RequestedModel: e.RequestedModel, BedrockModelID: e.BedrockModelID, Provider: string(e.Provider), Region: e.Region,
		Fallback: e.Fallback, FallbackReason: e.FallbackReason, Stream: e.Stream, Status: e.Status,
		InputTokens: e.InputTokens, OutputTokens: e.OutputTokens, CacheReadTokens: e.CacheReadTokens,
		CacheWrite5mTokens: e.CacheWrite5mTokens, CacheWrite1hTokens: e.CacheWrite1hTokens, CostUSD: e.CostUSD.String(),
		PriceFlag: string(e.PriceFlag), TTFTMs: e.TTFTMs, LatencyMs: e.LatencyMs, Aborted: e.Aborted,
		ParentAgentID: e.ParentAgentID, AgentSpawns: e.AgentSpawns, TeamID: e.TeamID}
}

func (s *Server) handleUsageRequests(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.usageRequestFilter, s.st.Usage().ListRequests, toUsageEvent)
}

// usageRequestFilter reads the filters of GET /usage/requests.
func (s *Server) usageRequestFilter(r *http.Request, errs *[]fieldError) store.UsageFilter {
	user, key, from, to := s.usageFilters(r, errs, false)
	f := store.UsageFilter{UserID: user, AccessKeyID: key, TeamID: usageTeam(r, errs), From: from, To: to,
		SessionID: r.URL.Query().Get("session_id"), Provider: store.Provider(r.URL.Query().Get("provider"))}
	if f.Provider != "" && !f.Provider.Valid() {
		*errs = append(*errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	return f
}
