package admin

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/ingest"
	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/store"
)

// The endpoints the dashboard's pages need beyond the resources: who is
// logged in (and the reporting time zone), the developer list with spend,
// a user's budget status and sessions, top developers and the cost split
// by token component. Each page makes a handful of calls whatever the
// number of developers; none is a call per row.

func (s *Server) dashboardRoutes(authed func(string, http.HandlerFunc)) {
	authed("GET /api/v1/auth/session", s.handleSession)
	authed("GET /api/v1/developers", s.handleDevelopers)
	authed("GET /api/v1/users/{id}/budget", s.handleBudget)
	authed("GET /api/v1/users/{id}/sessions", s.handleSessions)
	authed("GET /api/v1/usage/top-users", s.handleTopUsers)
	authed("GET /api/v1/usage/cost-split", s.handleCostSplit)
	authed("GET /api/v1/users/{id}/bedrock", func(w http.ResponseWriter, r *http.Request) { s.getBedrock(w, r, false) })
	authed("GET /api/v1/keys/{id}/bedrock", func(w http.ResponseWriter, r *http.Request) { s.getBedrock(w, r, true) })
}

// credentialJSON describes a stored Bedrock credential; the API key itself
// is never returned.
type credentialJSON struct {
	Type      string    `json:"type"`
	Region    string    `json:"region"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (s *Server) getBedrock(w http.ResponseWriter, r *http.Request, forKey bool) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var (
		c   store.BedrockCredential
		err error
	)
	if forKey {
		c, err = s.st.Credentials().GetForKey(r.Context(), id)
	} else {
		c, err = s.st.Credentials().GetForUser(r.Context(), id)
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, credentialJSON{Type: string(c.Kind), Region: c.Region, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt})
}

type sessionJSON struct {
	Username string `json:"username"`
	// Role is the admin's role; the dashboard hides what it may not do.
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
	// BillingTimezone is the IANA zone budgets and reports use.
	BillingTimezone string `json:"billing_timezone"`
	// GatewayURL is where developers point ANTHROPIC_BASE_URL ("" when
	// the admin service was not told).
	GatewayURL string `json:"gateway_url"`
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	a := actorFrom(r.Context())
	sess, _, err := s.st.Sessions().Get(r.Context(), a.sessionID)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionJSON{Username: a.username, Role: string(a.role), ExpiresAt: sess.ExpiresAt.UTC(),
		BillingTimezone: s.loc.String(), GatewayURL: s.gateway})
}

// tzParam reads the optional tz query parameter, an IANA zone name.
func tzParam(r *http.Request, errs *[]fieldError) *time.Location {
	v := r.URL.Query().Get("tz")
	if v == "" {
		return nil
	}
	loc, err := billing.LoadLocation(v)
	if err != nil {
		*errs = append(*errs, fieldError{Field: "tz", Message: "must be an IANA time zone such as Europe/Paris"})
		return nil
	}
	return loc
}

type developerJSON struct {
	userJSON
	Keys           int        `json:"keys"`
	ActiveKeys     int        `json:"active_keys"`
	LastUsedAt     *time.Time `json:"last_used_at"`
	Requests       int64      `json:"requests"`
	PlanCostUSD    string     `json:"plan_cost_usd"`
	BedrockCostUSD string     `json:"bedrock_cost_usd"`
}

type developerPage struct {
	Items      []developerJSON `json:"items"`
	NextCursor *string         `json:"next_cursor"`
	Total      int             `json:"total"`
	// Month is the billing month the spend is for (YYYY-MM), From and To
	// its bounds.
	Month string    `json:"month"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
}

func (s *Server) handleDevelopers(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	q := r.URL.Query()
	dq := store.DeveloperQuery{Search: q.Get("q"), Status: store.UserStatus(q.Get("status")),
		Strategy: store.RoutingStrategy(q.Get("routing_strategy")), Sort: store.DeveloperSort(q.Get("sort")),
		Desc: q.Get("order") == "desc", Limit: limit}
	if len(dq.Search) > 200 {
		errs = append(errs, fieldError{Field: "q", Message: "at most 200 characters"})
	}
	if dq.Status != "" && !dq.Status.Valid() {
		errs = append(errs, fieldError{Field: "status", Message: "must be active or disabled"})
	}
	if dq.Strategy != "" && !dq.Strategy.Valid() {
		errs = append(errs, fieldError{Field: "routing_strategy", Message: "must be plan_first, bedrock_only or plan_only"})
	}
	if dq.Sort != "" && !dq.Sort.Valid() {
		errs = append(errs, fieldError{Field: "sort", Message: "must be name, created, spend, plan_cost, requests or last_used"})
	}
	if o := q.Get("order"); o != "" && o != "asc" && o != "desc" {
		errs = append(errs, fieldError{Field: "order", Message: "must be asc or desc"})
	}
	if cursor != "" {
		off, ok := offsetCursor(cursor)
		if !ok {
			errs = append(errs, fieldError{Field: "cursor", Message: "malformed cursor"})
		}
		dq.Offset = off
	}
	m := billing.MonthOf(s.now(), s.loc)
	if v := q.Get("month"); v != "" {
		pm, err := billing.ParseMonth(v, s.loc)
		if err != nil {
			errs = append(errs, fieldError{Field: "month", Message: "must be a month as YYYY-MM"})
		}
		m = pm
	}
	if v := q.Get("team_id"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			errs = append(errs, fieldError{Field: "team_id", Message: "must be a UUID"})
		}
		dq.TeamID = &id
	}
	// A team admin sees its own team's developers, whatever it asks.
	if own := actorFrom(r.Context()).teamScope(); own != nil {
		dq.TeamID = own
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	dq.From, dq.To = m.Start, m.End
	devs, total, err := s.st.Usage().Developers(r.Context(), dq)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := developerPage{Items: make([]developerJSON, len(devs)), Total: total, Month: m.Key, From: m.Start.UTC(), To: m.End.UTC()}
	for i, d := range devs {
		out.Items[i] = developerJSON{userJSON: toUser(d.User), Keys: d.Keys, ActiveKeys: d.ActiveKeys, LastUsedAt: d.LastUsedAt,
			Requests: d.Requests, PlanCostUSD: d.PlanCostUSD.StringFixed(6), BedrockCostUSD: d.BedrockCostUSD.StringFixed(6)}
	}
	if next := dq.Offset + len(devs); len(devs) > 0 && next < total {
		c := encodeOffset(next)
		out.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, out)
}

// offsetCursor decodes a cursor of slicePage's format (the base64url of
// "o:<offset>").
func offsetCursor(c string) (int, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	v, ok := strings.CutPrefix(string(raw), "o:")
	n, err := strconv.Atoi(v)
	return n, ok && err == nil && n >= 0
}

func encodeOffset(n int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.Itoa(n)))
}

type budgetJSON struct {
	UserID           uuid.UUID `json:"user_id"`
	MonthlyBudgetUSD *string   `json:"monthly_budget_usd"`
	// SpentUSD is the Bedrock spend of the billing month, as the budget
	// check counts it.
	SpentUSD     string  `json:"spent_usd"`
	RemainingUSD *string `json:"remaining_usd"`
	// Percent is spent ÷ budget × 100, rounded to two decimals; null
	// without a budget.
	Percent    *float64  `json:"percent"`
	Month      string    `json:"month"`
	MonthStart time.Time `json:"month_start"`
	ResetsAt   time.Time `json:"resets_at"`
	Timezone   string    `json:"timezone"`
}

func (s *Server) handleBudget(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	u, err := s.st.Users().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	m := billing.MonthOf(s.now(), s.loc)
	spent, err := s.st.Usage().MonthlySpend(r.Context(), id, store.ProviderBedrock, m.Start, m.End)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := budgetJSON{UserID: id, SpentUSD: spent.StringFixed(6), Month: m.Key, MonthStart: m.Start.UTC(),
		ResetsAt: m.End.UTC(), Timezone: s.loc.String()}
	if u.MonthlyBudgetUSD != nil {
		b := u.MonthlyBudgetUSD.StringFixed(2)
		out.MonthlyBudgetUSD = &b
		rem := decimal.Max(u.MonthlyBudgetUSD.Sub(spent), decimal.Zero).StringFixed(6)
		out.RemainingUSD = &rem
		var pct float64
		if u.MonthlyBudgetUSD.IsPositive() {
			pct = spent.Div(*u.MonthlyBudgetUSD).Mul(decimal.NewFromInt(100)).Round(2).InexactFloat64()
		} else if spent.IsPositive() {
			pct = 100
		}
		out.Percent = &pct
	}
	writeJSON(w, http.StatusOK, out)
}

type sessionSummaryJSON struct {
	SessionID string    `json:"session_id"`
	FirstAt   time.Time `json:"first_at"`
	LastAt    time.Time `json:"last_at"`
	Models    []string  `json:"models"`
	// Agents counts the main agent and the subagents; CostUSD is Plan and
	// Bedrock cost together (the cost sort's key).
	Agents  int64  `json:"agents"`
	CostUSD string `json:"cost_usd"`
	usageTotalsJSON
}

func (s *Server) handleSessions(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var errs []fieldError
	limit, _ := pageParams(r, &errs)
	_, _, from, to := s.usageFilters(r, &errs, true)
	sort := store.SessionSort(r.URL.Query().Get("sort"))
	if sort != "" && !sort.Valid() {
		errs = append(errs, fieldError{Field: "sort", Message: "must be recent or cost"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	if _, err := s.st.Users().Get(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	ss, err := s.st.Usage().Sessions(r.Context(), id, from, to, limit, sort)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	items := make([]sessionSummaryJSON, len(ss))
	for i, x := range ss {
		items[i] = sessionSummaryJSON{SessionID: x.ID, FirstAt: x.FirstAt, LastAt: x.LastAt, Models: x.Models,
			Agents: x.Agents, CostUSD: x.CostUSD.String(), usageTotalsJSON: totalsJSON(x.UsageTotals)}
	}
	writeJSON(w, http.StatusOK, page[sessionSummaryJSON]{Items: items})
}

func totalsJSON(t store.UsageTotals) usageTotalsJSON {
	return usageTotalsJSON{Requests: t.Requests, BedrockRequests: t.BedrockRequests, InputTokens: t.InputTokens,
		OutputTokens: t.OutputTokens, CacheReadTokens: t.CacheReadTokens, CacheWrite5mTokens: t.CacheWrite5mTokens,
		CacheWrite1hTokens: t.CacheWrite1hTokens, PlanCostUSD: t.PlanCostUSD.String(), BedrockCostUSD: t.BedrockCostUSD.String(),
		Fallbacks: t.Fallbacks, Errors: t.Errors, Aborted: t.Aborted}
}

type topUserJSON struct {
	UserID uuid.UUID `json:"user_id"`
	Name   string    `json:"name"`
	Email  *string   `json:"email"`
	usageTotalsJSON
}

type topUsersJSON struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// ActiveUsers counts the users with any request in the range.
	ActiveUsers int           `json:"active_users"`
	Items       []topUserJSON `json:"items"`
}

// handleTopUsers ranks users by cost (Bedrock spend plus Plan list-price
// equivalent, or one of them with by=bedrock|plan, or by requests).
func (s *Server) handleTopUsers(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	_, _, from, to := s.usageFilters(r, &errs, true)
	limit := 10
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			errs = append(errs, fieldError{Field: "limit", Message: "must be an integer from 1 to 100"})
		}
		limit = n
	}
	by := r.URL.Query().Get("by")
	switch by {
	case "":
		by = "cost"
	case "cost", "bedrock", "plan", "requests":
	default:
		errs = append(errs, fieldError{Field: "by", Message: "must be cost, bedrock, plan or requests"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	groups, active, err := s.st.Usage().TopUsers(r.Context(), from, to, store.TopUserScore(by), limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := topUsersJSON{From: from, To: to, ActiveUsers: active, Items: []topUserJSON{}}
	ids := make([]uuid.UUID, 0, len(groups))
	for _, g := range groups {
		if id, err := uuid.Parse(g.Key); err == nil {
			ids = append(ids, id)
		}
	}
	users, err := s.st.Users().UsersByID(r.Context(), ids)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	for _, g := range groups {
		id, _ := uuid.Parse(g.Key)
		u := users[id]
		out.Items = append(out.Items, topUserJSON{UserID: id, Name: u.Name, Email: u.Email, usageTotalsJSON: totalsJSON(g.UsageTotals)})
	}
	writeJSON(w, http.StatusOK, out)
}

// Cost split.

type componentsJSON struct {
	InputUSD        string `json:"input_usd"`
	OutputUSD       string `json:"output_usd"`
	CacheReadUSD    string `json:"cache_read_usd"`
	CacheWrite5mUSD string `json:"cache_write_5m_usd"`
	CacheWrite1hUSD string `json:"cache_write_1h_usd"`
	TotalUSD        string `json:"total_usd"`
	// CacheSavingsUSD is what caching saved: cache reads at the input
	// price minus their price, less the premium of cache writes over the
	// input price (negative when writes cost more than reads saved).
	CacheSavingsUSD string `json:"cache_savings_usd"`
}

type modelSplitJSON struct {
	Model    string `json:"model"`
	Provider string `json:"provider"`
	usageTotalsJSON
	componentsJSON
}

type costSplitJSON struct {
	From   time.Time        `json:"from"`
	To     time.Time        `json:"to"`
	Total  componentsJSON   `json:"total"`
	Models []modelSplitJSON `json:"models"`
}

// components is a cost split in exact decimals.
type components struct {
	in, out, read, w5m, w1h, savings decimal.Decimal
}

func (c components) add(o components) components {
	return components{c.in.Add(o.in), c.out.Add(o.out), c.read.Add(o.read), c.w5m.Add(o.w5m), c.w1h.Add(o.w1h), c.savings.Add(o.savings)}
}

func (c components) json() componentsJSON {
	total := c.in.Add(c.out).Add(c.read).Add(c.w5m).Add(c.w1h)
	return componentsJSON{InputUSD: c.in.StringFixed(6), OutputUSD: c.out.StringFixed(6), CacheReadUSD: c.read.StringFixed(6),
		CacheWrite5mUSD: c.w5m.StringFixed(6), CacheWrite1hUSD: c.w1h.StringFixed(6), TotalUSD: total.StringFixed(6),
		CacheSavingsUSD: c.savings.StringFixed(6)}
}

// splitCost divides the stored cost of some tokens among their components
// in the proportions of the rates. The rollups keep one cost per hour,
// model and provider, not per component; the stored cost is the sum of
// tokens × rate at each event's own price (region premium included), and a
// premium scales every rate alike, so the proportions of the rate card
// split it exactly. The last non-zero component takes the rounding
// remainder: the parts always add up to the stored cost.
func splitCost(cost decimal.Decimal, t store.UsageTotals, r store.PriceRates) components {
	tok := []decimal.Decimal{decimal.NewFromInt(t.InputTokens), decimal.NewFromInt(t.OutputTokens),
		decimal.NewFromInt(t.CacheReadTokens), decimal.NewFromInt(t.CacheWrite5mTokens), decimal.NewFromInt(t.CacheWrite1hTokens)}
	rates := []decimal.Decimal{r.Input, r.Output, r.CacheRead, r.CacheWrite5m, r.CacheWrite1h}
	weights := make([]decimal.Decimal, 5)
	sum := decimal.Zero
	for i := range weights {
		weights[i] = tok[i].Mul(rates[i])
		sum = sum.Add(weights[i])
	}
	parts := make([]decimal.Decimal, 5)
	if sum.IsZero() {
		parts[0] = cost // nothing to weigh by: it cannot be split
	} else {
		rest, last := cost, -1
		for i := range parts {
			if weights[i].IsZero() {
				continue
			}
			parts[i] = cost.Mul(weights[i]).Div(sum).Round(6)
			rest = rest.Sub(parts[i])
			last = i
		}
		parts[last] = parts[last].Add(rest)
	}
	c := components{in: parts[0], out: parts[1], read: parts[2], w5m: parts[3], w1h: parts[4]}
	if !sum.IsZero() {
		// The same scale (stored cost ÷ list cost) applies to the savings.
		saved := tok[2].Mul(r.Input.Sub(r.CacheRead)).
			Sub(tok[3].Mul(r.CacheWrite5m.Sub(r.Input))).
			Sub(tok[4].Mul(r.CacheWrite1h.Sub(r.Input)))
		c.savings = cost.Mul(saved).Div(sum).Round(6)
	}
	return c
}

func (s *Server) handleCostSplit(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	user, _, from, to := s.usageFilters(r, &errs, true)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	ms, err := s.st.Usage().TokensByModel(r.Context(), user, from, to)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := costSplitJSON{From: from, To: to, Models: make([]modelSplitJSON, len(ms))}
	var total components
	for i, m := range ms {
		rates, err := s.ratesFor(r, m.Provider, m.Model, m.LastHour)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		c := splitCost(m.CostUSD, m.UsageTotals, rates)
		total = total.add(c)
		out.Models[i] = modelSplitJSON{Model: m.Model, Provider: string(m.Provider), usageTotalsJSON: totalsJSON(m.UsageTotals), componentsJSON: c.json()}
	}
	out.Total = total.json()
	writeJSON(w, http.StatusOK, out)
}

// ratesFor finds the any-region rates the ingester would price a model
// with at t: its own or its family's, else the provider default, else the
// ingester's fallback rates. Only their proportions matter (splitCost).
func (s *Server) ratesFor(r *http.Request, p store.Provider, model string, t time.Time) (store.PriceRates, error) {
	return ingest.NewRateFinder(s.st).Rates(r.Context(), &store.UsageEvent{Provider: p, RequestedModel: model, EventTime: t})
}
