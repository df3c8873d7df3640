package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/pricing"
)

// PriceRates are USD per million tokens: the pricing rules' own type, so
// that a stored price is priced by them without conversion.
type PriceRates = pricing.Rates

// Price is a rate card row, effective in [EffectiveFrom, EffectiveTo).
type Price struct {
	ID       uuid.UUID
	Provider Provider
	// Region is an AWS region, or "" for any.
	Region string
	// ModelID is a canonical Anthropic model id, or "" for a family or
	// default row.
	ModelID string
	// Family prices a whole family when ModelID is ""; both "" is the
	// provider's default.
	Family string
	PriceRates
	EffectiveFrom time.Time
	// EffectiveTo is nil while the price is current.
	EffectiveTo *time.Time
	// Source says where the numbers come from.
	Source    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// NewPrice holds the fields of a price to create.
type NewPrice struct {
	Provider Provider
	Region   string
	ModelID  string
	Family   string
	PriceRates
	EffectiveFrom time.Time
	EffectiveTo   *time.Time
	Source        string
}

// PricePatch is a partial update of a price row (to fix a mistake; a price
// change is a new row, see Supersede).
type PricePatch struct {
	Rates       Optional[PriceRates]
	EffectiveTo Optional[*time.Time]
	Source      Optional[string]
}

// PriceFilter selects prices to list; zero fields do not filter.
type PriceFilter struct {
	Provider Provider
	ModelID  string
	Family   string
	// At keeps only prices effective at that instant.
	At *time.Time
	// EndsAfter keeps only prices in effect at that instant or later (not
	// ended by then).
	EndsAfter *time.Time
}

// Prices is the price repository.
type Prices struct{ q *Queries }

// Prices returns the price repository.
func (q *Queries) Prices() Prices { return Prices{q} }

const priceColumns = `id, provider, region, model_id, family, input_usd_per_mtok, output_usd_per_mtok,
	cache_read_usd_per_mtok, cache_write_5m_usd_per_mtok, cache_write_1h_usd_per_mtok,
	effective_from, effective_to, source, created_at, updated_at`

func priceDest(p *Price) []any {
	return []any{&p.ID, &p.Provider, &p.Region, &p.ModelID, &p.Family, &p.Input, &p.Output,
		&p.CacheRead, &p.CacheWrite5m, &p.CacheWrite1h, &p.EffectiveFrom, &p.EffectiveTo, &p.Source,
		&p.CreatedAt, &p.UpdatedAt}
}

func scanPrice(row pgx.Row) (Price, error) {
	var p Price
	err := row.Scan(priceDest(&p)...)
	return p, err
}

func (n NewPrice) validate() error {
	if !n.Provider.Valid() {
		return invalidf("provider %q", n.Provider)
	}
	if n.ModelID != "" && n.Family != "" {
		return invalidf("a price is for a model or for a family, not both")
	}
	if n.EffectiveFrom.IsZero() {
		return invalidf("price without effective_from")
	}
	return validateRates(n.PriceRates)
}

func validateRates(r PriceRates) error {
	for _, v := range []decimal.Decimal{r.Input, r.Output, r.CacheRead, r.CacheWrite5m, r.CacheWrite1h} {
		if v.IsNegative() {
			return invalidf("negative price %s", v)
		}
	}
	return nil
}

// Create inserts a price. One overlapping the effective range of another
// price for the same provider, region, model and family is ErrConflict.
func (r Prices) Create(ctx context.Context, n NewPrice) (Price, error) {
	if err := n.validate(); err != nil {
		return Price{}, err
	}
	p, err := scanPrice(r.q.db.QueryRow(ctx, `
		INSERT INTO prices (provider, region, model_id, family, input_usd_per_mtok, output_usd_per_mtok,
		                    cache_read_usd_per_mtok, cache_write_5m_usd_per_mtok, cache_write_1h_usd_per_mtok,
		                    effective_from, effective_to, source)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		RETURNING `+priceColumns,
		n.Provider, n.Region, n.ModelID, n.Family, n.Input, n.Output, n.CacheRead, n.CacheWrite5m, n.CacheWrite1h,
		n.EffectiveFrom, n.EffectiveTo, n.Source))
	return p, mapErr("store: create price", err)
}

// Supersede records a price change: the price for the same key in effect at
// n.EffectiveFrom (if any, and open-ended or ending later) is closed at
// n.EffectiveFrom, and n is inserted, in one transaction.
func (r Prices) Supersede(ctx context.Context, n NewPrice) (Price, error) {
	if err := n.validate(); err != nil {
		return Price{}, err
	}
	var out Price
	err := r.q.tx(ctx, func(q *Queries) error {
		_, err := q.db.Exec(ctx, `
			UPDATE prices SET effective_to = $5
			WHERE provider = $1 AND region = $2 AND model_id = $3 AND family = $4
			  AND effective_from < $5 AND (effective_to IS NULL OR effective_to > $5)`,
			n.Provider, n.Region, n.ModelID, n.Family, n.EffectiveFrom)
		if err != nil {
			return err
		}
		out, err = q.Prices().Create(ctx, n)
		return err
	})
	return out, mapErr("store: supersede price", err)
}

// Get returns a price by id.
func (r Prices) Get(ctx context.Context, id uuid.UUID) (Price, error) {
	p, err := scanPrice(r.q.db.QueryRow(ctx, `SELECT `+priceColumns+` FROM prices WHERE id = $1`, id))
	return p, mapErr("store: get price", err)
}

// List returns the prices matching f, ordered by provider, model, family,
// region and start.
func (r Prices) List(ctx context.Context, f PriceFilter) ([]Price, error) {
	where := []string{"true"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Provider != "" {
		where = append(where, "provider = "+arg(f.Provider))
	}
	if f.ModelID != "" {
		where = append(where, "model_id = "+arg(f.ModelID))
	}
	if f.Family != "" {
		where = append(where, "family = "+arg(f.Family))
	}
	if f.At != nil {
		a := arg(*f.At)
		where = append(where, "effective_from <= "+a+" AND (effective_to IS NULL OR effective_to > "+a+")")
	}
	if f.EndsAfter != nil {
		where = append(where, "(effective_to IS NULL OR effective_to > "+arg(*f.EndsAfter)+")")
	}
	rows, err := r.q.db.Query(ctx, `SELECT `+priceColumns+` FROM prices WHERE `+strings.Join(where, " AND ")+
		` ORDER BY provider, model_id, family, region, effective_from`, args...)
	if err != nil {
		return nil, mapErr("store: list prices", err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Price, error) { return scanPrice(row) })
	return ps, mapErr("store: list prices", err)
}

// Update changes the fields set in p and returns the updated price.
func (r Prices) Update(ctx context.Context, id uuid.UUID, p PricePatch) (Price, error) {
	var s setList
	if p.Rates.Set {
		if err := validateRates(p.Rates.Value); err != nil {
			return Price{}, err
		}
		v := p.Rates.Value
		s.add("input_usd_per_mtok", v.Input)
		s.add("output_usd_per_mtok", v.Output)
		s.add("cache_read_usd_per_mtok", v.CacheRead)
		s.add("cache_write_5m_usd_per_mtok", v.CacheWrite5m)
		s.add("cache_write_1h_usd_per_mtok", v.CacheWrite1h)
	}
	if p.EffectiveTo.Set {
		s.add("effective_to", p.EffectiveTo.Value)
	}
	if p.Source.Set {
		s.add("source", p.Source.Value)
	}
	if len(s.sets) == 0 {
		return r.Get(ctx, id)
	}
	s.args = append(s.args, id)
	out, err := scanPrice(r.q.db.QueryRow(ctx, `UPDATE prices SET `+strings.Join(s.sets, ", ")+
		` WHERE id = $`+strconv.Itoa(len(s.args))+` RETURNING `+priceColumns, s.args...))
	return out, mapErr("store: update price", err)
}

// Delete removes a price.
func (r Prices) Delete(ctx context.Context, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM prices WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr("store: delete price", err)
}

// PriceQuery identifies what to price.
type PriceQuery struct {
	Provider Provider
	// Region is the AWS region the request went to ("" for Plan).
	Region string
	// Model is the model id as requested; an alias resolves to its canonical
	// id through the model mappings.
	Model string
	// Family is the model's family; "" takes the mapping's family.
	Family string
	// At is the event time.
	At time.Time
}

// PriceAt returns the price in effect for q.At, the most specific match
// first: a row for the model beats one for its family, which beats the
// provider default; among those, a row for the region beats one for any
// region. The flag says which kind matched. No match is ErrNotFound.
func (r Prices) PriceAt(ctx context.Context, q PriceQuery) (Price, PriceFlag, error) {
	var (
		p    Price
		flag PriceFlag
	)
	dest := append(priceDest(&p), &flag)
	err := r.q.db.QueryRow(ctx, `
		WITH m AS (
			SELECT anthropic_model_id AS canonical, family FROM model_mappings
			WHERE anthropic_model_id = $3 OR id = (SELECT mapping_id FROM model_aliases WHERE alias = $3)
		)
		SELECT `+priceColumns+`,
		       CASE WHEN model_id <> '' THEN 'exact' WHEN family <> '' THEN 'family' ELSE 'default' END
		FROM prices
		WHERE provider = $1
		  AND region IN ($2, '')
		  AND (model_id = '' OR model_id = $3 OR model_id IN (SELECT canonical FROM m))
		  AND (family = '' OR family = $4 OR ($4 = '' AND family IN (SELECT family FROM m)))
		  AND effective_from <= $5 AND (effective_to IS NULL OR effective_to > $5)
		ORDER BY model_id <> '' DESC, family <> '' DESC, region <> '' DESC
		LIMIT 1`, q.Provider, q.Region, q.Model, q.Family, q.At).Scan(dest...)
	if err != nil {
		return Price{}, PriceNone, mapErr("store: price at", err)
	}
	return p, flag, nil
}
