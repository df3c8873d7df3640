package admin

import (
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// priceJSON is the API form of a price: the per-million-token rates usage
// is costed with. Rates are decimal strings, never floats.
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
	serveList(s, w, r, priceFilter, wholeList(s.st.Prices().List), toPrice)
}

// priceFilter reads the filters of GET /prices.
func priceFilter(r *http.Request, errs *[]fieldError) store.PriceFilter {
	q := r.URL.Query()
	f := store.PriceFilter{Provider: store.Provider(q.Get("provider")), ModelID: q.Get("model_id"), Family: q.Get("family")}
	if f.Provider != "" && !f.Provider.Valid() {
		*errs = append(*errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	return f
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
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Prices().Get(r.Context(), id)
		if err != nil {
			return err
		}
		var (
			p    store.PricePatch
			errs []fieldError
		)
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
			return &invalidError{errs: errs}
		}
		np, err := q.Prices().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toPrice(np)
		return s.audit(r.Context(), q, "price.update", "price", id.String(), toPrice(before), out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

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
