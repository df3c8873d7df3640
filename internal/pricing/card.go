package pricing

import (
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// Row is one price of a rate card, effective in [From, To).
type Row struct {
	// Provider is "anthropic" (Plan) or "bedrock".
	Provider string
	// Region is an AWS region, or "" for any.
	Region string
	// ModelID is a canonical Anthropic model id, or "" for a family or
	// default row.
	ModelID string
	// Family prices a whole family when ModelID is ""; both "" is the
	// provider's default.
	Family string
	Rates
	From time.Time
	// To is zero while the price is current.
	To time.Time
}

func (r *Row) effectiveAt(at time.Time) bool {
	return !r.From.After(at) && (r.To.IsZero() || r.To.After(at))
}

func (r *Row) flag() Flag {
	switch {
	case r.ModelID != "":
		return Exact
	case r.Family != "":
		return Family
	}
	return Default
}

// Model is a model mapping's names and family, which the lookup resolves a
// requested name through.
type Model struct {
	// ID is the canonical Anthropic model id.
	ID      string
	Aliases []string
	Family  string
}

// Card is a rate card and the model names it resolves. It is immutable and
// safe for concurrent use.
type Card struct {
	rows   []Row
	byName map[string]*Model // canonical ids and aliases
}

// NewCard returns the card of rows, resolving requested names through
// models.
func NewCard(rows []Row, models []Model) *Card {
	c := &Card{rows: append([]Row(nil), rows...), byName: make(map[string]*Model, len(models))}
	ms := append([]Model(nil), models...)
	for i := range ms {
		m := &ms[i]
		c.byName[m.ID] = m
		for _, a := range m.Aliases {
			c.byName[a] = m
		}
	}
	return c
}

// Len is the number of price rows on the card; 0 for a nil card.
func (c *Card) Len() int {
	if c == nil {
		return 0
	}
	return len(c.rows)
}

// Price returns the rates a request of provider, region and model (as
// requested) at is priced at, and the kind of row that matched — the
// ingester's lookup: the model's own row or its mapping's family first;
// then, for a model the mappings do not know, the family its name says
// (claude-opus-9 → opus); then the provider default; then Fallback.
func (c *Card) Price(provider, region, model string, at time.Time) (Rates, Flag) {
	r, found := c.match(provider, region, model, "", at)
	if (!found || r.flag() == Default) && FamilyOf(model) != "" {
		if fr, ok := c.match(provider, region, model, FamilyOf(model), at); ok && fr.flag() != Default {
			r, found = fr, true
		}
	}
	if !found {
		return Fallback(), Default
	}
	return r.Rates, r.flag()
}

// match is the rate card query (internal/store Prices.PriceAt): among the
// rows effective at at for the provider, the region or any region, the
// model (by the requested name or its mapping's canonical id) or none, and
// the family asked for (or, when none is, the mapping's) or none, the most
// specific — a model row before a family row before the default, a
// region's row before any region's.
func (c *Card) match(provider, region, model, family string, at time.Time) (*Row, bool) {
	m := c.byName[model]
	var (
		best  *Row
		score = -1
	)
	for i := range c.rows {
		r := &c.rows[i]
		if r.Provider != provider || (r.Region != region && r.Region != "") || !r.effectiveAt(at) {
			continue
		}
		if r.ModelID != "" && r.ModelID != model && (m == nil || r.ModelID != m.ID) {
			continue
		}
		if r.Family != "" && r.Family != family && (family != "" || m == nil || r.Family != m.Family) {
			continue
		}
		s := 0
		if r.ModelID != "" {
			s += 4
		}
		if r.Family != "" {
			s += 2
		}
		if r.Region != "" {
			s++
		}
		if s > score {
			best, score = r, s
		}
	}
	return best, best != nil
}

// CardFromProto validates pb and builds its Card; nil pb is no card (nil,
// nil): the control plane reads no database.
func CardFromProto(pb *runtimev1.PriceCard) (*Card, error) {
	if pb == nil {
		return nil, nil
	}
	rows := make([]Row, 0, len(pb.GetRows()))
	for i, p := range pb.GetRows() {
		r := Row{Provider: p.GetProvider(), Region: p.GetRegion(), ModelID: p.GetModelId(), Family: p.GetFamily()}
		if r.Provider == "" {
			return nil, fmt.Errorf("pricing: rows[%d]: empty provider", i)
		}
		if r.ModelID != "" && r.Family != "" {
			return nil, fmt.Errorf("pricing: rows[%d]: a price is for a model or for a family, not both", i)
		}
		for _, f := range []struct {
			name string
			in   string
			out  *decimal.Decimal
		}{
			{"input", p.GetInput(), &r.Input},
			{"output", p.GetOutput(), &r.Output},
			{"cache_read", p.GetCacheRead(), &r.CacheRead},
			{"cache_write_5m", p.GetCacheWrite_5M(), &r.CacheWrite5m},
			{"cache_write_1h", p.GetCacheWrite_1H(), &r.CacheWrite1h},
		} {
			d, err := decimal.NewFromString(f.in)
			if err != nil || d.IsNegative() {
				return nil, fmt.Errorf("pricing: rows[%d]: %s %q is not a price", i, f.name, f.in)
			}
			*f.out = d
		}
		if p.GetEffectiveFrom() == nil {
			return nil, fmt.Errorf("pricing: rows[%d]: no effective_from", i)
		}
		r.From = p.GetEffectiveFrom().AsTime()
		if p.GetEffectiveTo() != nil {
			r.To = p.GetEffectiveTo().AsTime()
		}
		rows = append(rows, r)
	}
	models := make([]Model, 0, len(pb.GetModels()))
	for i, m := range pb.GetModels() {
		if m.GetAnthropicModelId() == "" {
			return nil, fmt.Errorf("pricing: models[%d]: empty anthropic_model_id", i)
		}
		models = append(models, Model{ID: m.GetAnthropicModelId(), Aliases: append([]string(nil), m.GetAliases()...), Family: m.GetFamily()})
	}
	return NewCard(rows, models), nil
}
