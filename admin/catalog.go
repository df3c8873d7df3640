package admin

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Model mappings, prices, usage and the audit log.

type modelJSON struct {
	ID               uuid.UUID         `json:"id"`
	AnthropicModelID string            `json:"anthropic_model_id"`
	Aliases          []string          `json:"aliases"`
	Family           string            `json:"family"`
	BedrockModelID   string            `json:"bedrock_model_id"`
	Regions          map[string]string `json:"regions"`
	Enabled          bool              `json:"enabled"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
}

func toModel(m store.ModelMapping) modelJSON {
	out := modelJSON{ID: m.ID, AnthropicModelID: m.AnthropicModelID, Aliases: m.Aliases, Family: m.Family,
		BedrockModelID: m.BedrockModelID, Regions: m.Regions, Enabled: m.Enabled, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
	if out.Aliases == nil {
		out.Aliases = []string{}
	}
	if out.Regions == nil {
		out.Regions = map[string]string{}
	}
	return out
}

var modelIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$`)

func checkModelID(field, v string, errs *[]fieldError) {
	if !modelIDRE.MatchString(v) {
		*errs = append(*errs, fieldError{Field: field, Message: "must be 1 to 200 characters of letters, digits and ._:/@-"})
	}
}

func checkAliases(v []string, errs *[]fieldError) {
	if len(v) > 50 {
		*errs = append(*errs, fieldError{Field: "aliases", Message: "at most 50 aliases"})
	}
	for _, a := range v {
		checkModelID("aliases", a, errs)
	}
}

func checkRegions(v map[string]string, errs *[]fieldError) {
	if len(v) > 50 {
		*errs = append(*errs, fieldError{Field: "regions", Message: "at most 50 regions"})
	}
	for reg, prof := range v {
		if reg != "" && !regionRE.MatchString(reg) {
			*errs = append(*errs, fieldError{Field: "regions", Message: "keys must be AWS regions or \"\""})
		}
		checkModelID("regions", prof, errs)
	}
}

type createModelRequest struct {
	AnthropicModelID string            `json:"anthropic_model_id"`
	Aliases          []string          `json:"aliases"`
	Family           string            `json:"family"`
	BedrockModelID   string            `json:"bedrock_model_id"`
	Regions          map[string]string `json:"regions"`
	Enabled          *bool             `json:"enabled"`
}

func (s *Server) handleCreateModel(w http.ResponseWriter, r *http.Request) {
	var req createModelRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	checkModelID("anthropic_model_id", req.AnthropicModelID, &errs)
	checkModelID("family", req.Family, &errs)
	checkModelID("bedrock_model_id", req.BedrockModelID, &errs)
	checkAliases(req.Aliases, &errs)
	checkRegions(req.Regions, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	nm := store.NewModelMapping{AnthropicModelID: req.AnthropicModelID, Aliases: req.Aliases, Family: req.Family,
		BedrockModelID: req.BedrockModelID, Regions: req.Regions, Disabled: req.Enabled != nil && !*req.Enabled}
	var out modelJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		m, err := q.Models().Create(r.Context(), nm)
		if err != nil {
			return err
		}
		out = toModel(m)
		return s.audit(r.Context(), q, "model.create", "model_mapping", m.ID.String(), nil, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListModels(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	ms, err := s.st.Models().List(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	pg, next, ok := slicePage(ms, limit, cursor)
	if !ok {
		s.invalid(w, r, []fieldError{{Field: "cursor", Message: "malformed cursor"}})
		return
	}
	items := make([]modelJSON, len(pg))
	for i, m := range pg {
		items[i] = toModel(m)
	}
	writeJSON(w, http.StatusOK, newPage(items, next))
}

func (s *Server) handleGetModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	m, err := s.st.Models().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toModel(m))
}

type patchModelRequest struct {
	AnthropicModelID optional[string]            `json:"anthropic_model_id"`
	Aliases          optional[[]string]          `json:"aliases"`
	Family           optional[string]            `json:"family"`
	BedrockModelID   optional[string]            `json:"bedrock_model_id"`
	Regions          optional[map[string]string] `json:"regions"`
	Enabled          optional[bool]              `json:"enabled"`
}

func (s *Server) handlePatchModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchModelRequest
	if !s.decode(w, r, &req) {
		return
	}
	var (
		errs []fieldError
		p    store.ModelMappingPatch
	)
	str := func(field string, o optional[string], dst *store.Optional[string]) {
		if !o.Set {
			return
		}
		if o.Null {
			errs = append(errs, fieldError{Field: field, Message: "cannot be null"})
			return
		}
		checkModelID(field, o.Value, &errs)
		*dst = store.Some(o.Value)
	}
	str("anthropic_model_id", req.AnthropicModelID, &p.AnthropicModelID)
	str("family", req.Family, &p.Family)
	str("bedrock_model_id", req.BedrockModelID, &p.BedrockModelID)
	if req.Aliases.Set {
		checkAliases(req.Aliases.Value, &errs)
		p.Aliases = store.Some(req.Aliases.Value)
	}
	if req.Regions.Set {
		checkRegions(req.Regions.Value, &errs)
		p.Regions = store.Some(req.Regions.Value)
	}
	if req.Enabled.Set {
		if req.Enabled.Null {
			errs = append(errs, fieldError{Field: "enabled", Message: "cannot be null"})
		}
		p.Enabled = store.Some(req.Enabled.Value)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var out modelJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Models().Get(r.Context(), id)
		if err != nil {
			return err
		}
		m, err := q.Models().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toModel(m)
		return s.audit(r.Context(), q, "model.update", "model_mapping", id.String(), toModel(before), out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Models().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if err := q.Models().Delete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "model.delete", "model_mapping", id.String(), toModel(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Prices.

type priceJSON struct {
	ID            uuid.UUID  `json:"id"`
	Provider      string     `json:"provider"`
	Region        string     `json:"region"`
	ModelID       string     `json:"model_id"`
	Family        string     `json:"family"`
	Input         string     `json:"input_usd_per_mtok"`
	Output        string     `json:"output_usd_per_mtok"`
	CacheRead     string     `json:"cache_read_usd_per_mtok"`
	CacheWrite5m  string     `json:"cache_write_5m_usd_per_mtok"`
	CacheWrite1h  string     `json:"cache_write_1h_usd_per_mtok"`
	EffectiveFrom time.Time  `json:"effective_from"`
	EffectiveTo   *time.Time `json:"effective_to"`
	Source        string     `json:"source"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

func toPrice(p store.Price) priceJSON {
	return priceJSON{ID: p.ID, Provider: string(p.Provider), Region: p.Region, ModelID: p.ModelID, Family: p.Family,
		Input: p.Input.String(), Output: p.Output.String(), CacheRead: p.CacheRead.String(),
		CacheWrite5m: p.CacheWrite5m.String(), CacheWrite1h: p.CacheWrite1h.String(),
		EffectiveFrom: p.EffectiveFrom, EffectiveTo: p.EffectiveTo, Source: p.Source, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

var rateRE = regexp.MustCompile(`^[0-9]{1,8}(\.[0-9]{1,6})?$`)

func parseRate(field, v string, errs *[]fieldError) decimal.Decimal {
	if !rateRE.MatchString(v) {
		*errs = append(*errs, fieldError{Field: field, Message: `must be a non-negative decimal string with at most 6 decimals, like "3.00"`})
		return decimal.Zero
	}
	d, _ := decimal.NewFromString(v)
	return d
}

type priceRequest struct {
	Provider      string     `json:"provider"`
	Region        string     `json:"region"`
	ModelID       string     `json:"model_id"`
	Family        string     `json:"family"`
	Input         string     `json:"input_usd_per_mtok"`
	Output        string     `json:"output_usd_per_mtok"`
	CacheRead     string     `json:"cache_read_usd_per_mtok"`
	CacheWrite5m  string     `json:"cache_write_5m_usd_per_mtok"`
	CacheWrite1h  string     `json:"cache_write_1h_usd_per_mtok"`
	EffectiveFrom *time.Time `json:"effective_from"`
	EffectiveTo   *time.Time `json:"effective_to"`
	Source        string     `json:"source"`
	// Supersede ends the open price of the same scope at effective_from.
	Supersede bool `json:"supersede"`
}

func (s *Server) handleCreatePrice(w http.ResponseWriter, r *http.Request) {
	var req priceRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	np := store.NewPrice{Provider: store.Provider(req.Provider), Region: req.Region, ModelID: req.ModelID,
		Family: req.Family, EffectiveTo: req.EffectiveTo, Source: req.Source}
	if !np.Provider.Valid() {
		errs = append(errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	if req.Region != "" && !regionRE.MatchString(req.Region) {
		errs = append(errs, fieldError{Field: "region", Message: "must be an AWS region or empty"})
	}
	if req.ModelID != "" {
		checkModelID("model_id", req.ModelID, &errs)
	}
	if req.Family != "" {
		checkModelID("family", req.Family, &errs)
	}
	if req.ModelID != "" && req.Family != "" {
		errs = append(errs, fieldError{Field: "family", Message: "a price is for a model_id or a family, not both"})
	}
	np.Input = parseRate("input_usd_per_mtok", req.Input, &errs)
	np.Output = parseRate("output_usd_per_mtok", req.Output, &errs)
	np.CacheRead = parseRate("cache_read_usd_per_mtok", req.CacheRead, &errs)
	np.CacheWrite5m = parseRate("cache_write_5m_usd_per_mtok", req.CacheWrite5m, &errs)
	np.CacheWrite1h = parseRate("cache_write_1h_usd_per_mtok", req.CacheWrite1h, &errs)
	if req.EffectiveFrom == nil {
		errs = append(errs, fieldError{Field: "effective_from", Message: "required"})
	} else {
		np.EffectiveFrom = *req.EffectiveFrom
		if req.EffectiveTo != nil && !req.EffectiveTo.After(*req.EffectiveFrom) {
			errs = append(errs, fieldError{Field: "effective_to", Message: "must be after effective_from"})
		}
	}
	if len(req.Source) > 500 || strings.ContainsFunc(req.Source, isControl) {
		errs = append(errs, fieldError{Field: "source", Message: "at most 500 characters without control characters"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var out priceJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		var (
			p   store.Price
			err error
		)
		if req.Supersede {
			p, err = q.Prices().Supersede(r.Context(), np)
		} else {
			p, err = q.Prices().Create(r.Context(), np)
		}
		if err != nil {
			return err
		}
		out = toPrice(p)
		return s.audit(r.Context(), q, "price.create", "price", p.ID.String(), nil, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListPrices(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	q := r.URL.Query()
	f := store.PriceFilter{Provider: store.Provider(q.Get("provider")), ModelID: q.Get("model_id"), Family: q.Get("family")}
	if f.Provider != "" && !f.Provider.Valid() {
		errs = append(errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	ps, err := s.st.Prices().List(r.Context(), f)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	pg, next, ok := slicePage(ps, limit, cursor)
	if !ok {
		s.invalid(w, r, []fieldError{{Field: "cursor", Message: "malformed cursor"}})
		return
	}
	items := make([]priceJSON, len(pg))
	for i, p := range pg {
		items[i] = toPrice(p)
	}
	writeJSON(w, http.StatusOK, newPage(items, next))
}

func (s *Server) handleGetPrice(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, err := s.st.Prices().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toPrice(p))
}

type patchPriceRequest struct {
	Input        optional[string]    `json:"input_usd_per_mtok"`
	Output       optional[string]    `json:"output_usd_per_mtok"`
	CacheRead    optional[string]    `json:"cache_read_usd_per_mtok"`
	CacheWrite5m optional[string]    `json:"cache_write_5m_usd_per_mtok"`
	CacheWrite1h optional[string]    `json:"cache_write_1h_usd_per_mtok"`
	EffectiveTo  optional[time.Time] `json:"effective_to"`
	Source       optional[string]    `json:"source"`
}

func (s *Server) handlePatchPrice(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchPriceRequest
	if !s.decode(w, r, &req) {
		return
	}
	var out priceJSON
	var errs []fieldError
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Prices().Get(r.Context(), id)
		if err != nil {
			return err
		}
		var p store.PricePatch
		rates, changed := before.PriceRates, false
		rate := func(field string, o optional[string], dst *decimal.Decimal) {
			if !o.Set {
				return
			}
			changed = true
			if o.Null {
				errs = append(errs, fieldError{Field: field, Message: "cannot be null"})
				return
			}
			*dst = parseRate(field, o.Value, &errs)
		}
		rate("input_usd_per_mtok", req.Input, &rates.Input)
		rate("output_usd_per_mtok", req.Output, &rates.Output)
		rate("cache_read_usd_per_mtok", req.CacheRead, &rates.CacheRead)
		rate("cache_write_5m_usd_per_mtok", req.CacheWrite5m, &rates.CacheWrite5m)
		rate("cache_write_1h_usd_per_mtok", req.CacheWrite1h, &rates.CacheWrite1h)
		if changed {
			p.Rates = store.Some(rates)
		}
		if req.EffectiveTo.Set {
			if req.EffectiveTo.Null {
				p.EffectiveTo = store.Some[*time.Time](nil)
			} else {
				if !req.EffectiveTo.Value.After(before.EffectiveFrom) {
					errs = append(errs, fieldError{Field: "effective_to", Message: "must be after effective_from"})
				}
				p.EffectiveTo = store.Some(&req.EffectiveTo.Value)
			}
		}
		if req.Source.Set {
			if req.Source.Null || len(req.Source.Value) > 500 || strings.ContainsFunc(req.Source.Value, isControl) {
				errs = append(errs, fieldError{Field: "source", Message: "at most 500 characters without control characters"})
			}
			p.Source = store.Some(req.Source.Value)
		}
		if len(errs) > 0 {
			return errValidation
		}
		np, err := q.Prices().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toPrice(np)
		return s.audit(r.Context(), q, "price.update", "price", id.String(), toPrice(before), out)
	})
	if err == errValidation {
		s.invalid(w, r, errs)
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// errValidation aborts a transaction whose handler answers with the field
// errors it collected.
var errValidation = &httpError{status: http.StatusUnprocessableEntity, title: "validation failed"}

func (s *Server) handleDeletePrice(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Prices().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if err := q.Prices().Delete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "price.delete", "price", id.String(), toPrice(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Usage.

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
		errs = append(errs, fieldError{Field: "group_by", Message: "must be hour, day, model, provider or session"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	groups, err := s.st.Usage().Summary(r.Context(), store.UsageSummaryQuery{UserID: user, AccessKeyID: key, From: from, To: to, GroupBy: gb})
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
}

func (s *Server) handleUsageRequests(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	user, key, from, to := s.usageFilters(r, &errs, false)
	f := store.UsageFilter{UserID: user, AccessKeyID: key, From: from, To: to,
		SessionID: r.URL.Query().Get("session_id"), Provider: store.Provider(r.URL.Query().Get("provider"))}
	if f.Provider != "" && !f.Provider.Valid() {
		errs = append(errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	evs, next, err := s.st.Usage().ListRequests(r.Context(), f, limit, cursor)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	items := make([]usageEventJSON, len(evs))
	for i, e := range evs {
		items[i] = usageEventJSON{RequestID: e.RequestID, EventTime: e.EventTime, UserID: e.UserID, AccessKeyID: e.AccessKeyID,
			SessionID: e.SessionID, AgentID: e.AgentID, ClientVersion: e.ClientVersion, Kind: string(e.Kind),
			RequestedModel: e.RequestedModel, BedrockModelID: e.BedrockModelID, Provider: string(e.Provider), Region: e.Region,
			Fallback: e.Fallback, FallbackReason: e.FallbackReason, Stream: e.Stream, Status: e.Status,
			InputTokens: e.InputTokens, OutputTokens: e.OutputTokens, CacheReadTokens: e.CacheReadTokens,
			CacheWrite5mTokens: e.CacheWrite5mTokens, CacheWrite1hTokens: e.CacheWrite1hTokens, CostUSD: e.CostUSD.String(),
			PriceFlag: string(e.PriceFlag), TTFTMs: e.TTFTMs, LatencyMs: e.LatencyMs, Aborted: e.Aborted}
	}
	writeJSON(w, http.StatusOK, newPage(items, next))
}

// Audit log.

type auditJSON struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	AdminID    *uuid.UUID      `json:"admin_id"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type"`
	TargetID   string          `json:"target_id"`
	Before     json.RawMessage `json:"before"`
	After      json.RawMessage `json:"after"`
	IP         *string         `json:"ip"`
}

func (s *Server) handleListAudit(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	q := r.URL.Query()
	f := store.AuditFilter{Action: q.Get("action"), TargetType: q.Get("target_type"), TargetID: q.Get("target_id")}
	_, _, f.From, f.To = s.usageFilters(r, &errs, false)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	es, next, err := s.st.Audit().List(r.Context(), f, limit, cursor)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	items := make([]auditJSON, len(es))
	for i, e := range es {
		items[i] = auditJSON{ID: e.ID, At: e.At, AdminID: e.AdminID, Actor: e.Actor, Action: e.Action,
			TargetType: e.TargetType, TargetID: e.TargetID, Before: e.Before, After: e.After}
		if items[i].Before == nil {
			items[i].Before = json.RawMessage("null")
		}
		if items[i].After == nil {
			items[i].After = json.RawMessage("null")
		}
		if e.IP != nil {
			ip := e.IP.String()
			items[i].IP = &ip
		}
	}
	writeJSON(w, http.StatusOK, newPage(items, next))
}
