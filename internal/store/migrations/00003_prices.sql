-- Effective-dated token prices, in USD per million tokens.

-- +goose Up

-- For the no-overlap exclusion constraint (text equality in a GiST index).
-- btree_gist is a trusted extension, so the database owner may create it.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE prices (
    id                          uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    -- anthropic rows price Plan traffic at list price (what the subscription
    -- saved); bedrock rows are real spend. Sums never mix them.
    provider                    text          NOT NULL CHECK (provider IN ('anthropic', 'bedrock')),
    -- '' matches any region.
    region                      text          NOT NULL DEFAULT ''
                                              CHECK (region = '' OR region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    -- A row prices one model (canonical Anthropic id; aliases resolve to it),
    -- or a whole family, or — both empty — is the provider's default.
    model_id                    text          NOT NULL DEFAULT '',
    family                      text          NOT NULL DEFAULT '',
    input_usd_per_mtok          numeric(14,6) NOT NULL CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok         numeric(14,6) NOT NULL CHECK (output_usd_per_mtok >= 0),
    cache_read_usd_per_mtok     numeric(14,6) NOT NULL CHECK (cache_read_usd_per_mtok >= 0),
    cache_write_5m_usd_per_mtok numeric(14,6) NOT NULL CHECK (cache_write_5m_usd_per_mtok >= 0),
    cache_write_1h_usd_per_mtok numeric(14,6) NOT NULL CHECK (cache_write_1h_usd_per_mtok >= 0),
    -- The price applies to events in [effective_from, effective_to).
    effective_from              timestamptz   NOT NULL,
    effective_to                timestamptz,
    source                      text          NOT NULL DEFAULT '',
    created_at                  timestamptz   NOT NULL DEFAULT now(),
    updated_at                  timestamptz   NOT NULL DEFAULT now(),
    CHECK (model_id = '' OR family = ''),
    CHECK (effective_to IS NULL OR effective_to > effective_from),
    -- One price per key at any instant.
    CONSTRAINT prices_no_overlap EXCLUDE USING gist (
        provider WITH =, region WITH =, model_id WITH =, family WITH =,
        tstzrange(effective_from, effective_to, '[)') WITH &&
    )
);

CREATE TRIGGER prices_touch BEFORE UPDATE ON prices
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

-- Seed, as of 2026-11-01: Anthropic list prices per million tokens from the
-- model overview pages and the pricing page (platform.claude.com/docs/en/
-- about-claude/pricing, models/<model>/overview). Cache reads are usually 0.1×
-- input, cache writes 1.25× (5 min) and 2× (1 h), but not always: Opus 5.5
-- reads at 0.05× and Fable 5.1 at 0.025× (the latter from a reseller's copy
-- of the rate card; check it). Effective from 2000-01-01 so that any event is
-- priced; later changes are new rows (Prices.Supersede).
CREATE TEMPORARY TABLE seed_price (model_id text, family text, input numeric, output numeric,
                                   cache_read numeric, cache_write_5m numeric, cache_write_1h numeric)
    ON COMMIT DROP;
INSERT INTO seed_price VALUES
    ('claude-fable-5-1',           '', 10.00, 50.00, 0.25, 12.50, 20.00),
    ('claude-fable-5',             '', 10.00, 50.00, 1.00, 12.50, 20.00),
    ('claude-opus-5-5',            '',  4.00, 20.00, 0.20,  5.00,  8.00),
    ('claude-opus-5',              '',  5.00, 25.00, 0.50,  6.25, 10.00),
    ('claude-opus-4-8',            '',  5.00, 25.00, 0.50,  6.25, 10.00),
    ('claude-opus-4-7',            '',  5.00, 25.00, 0.50,  6.25, 10.00),
    ('claude-opus-4-6',            '',  5.00, 25.00, 0.50,  6.25, 10.00),
    ('claude-opus-4-5-20251101',   '',  5.00, 25.00, 0.50,  6.25, 10.00),
    ('claude-opus-4-1-20250805',   '', 15.00, 75.00, 1.50, 18.75, 30.00),
    ('claude-opus-4-20250514',     '', 15.00, 75.00, 1.50, 18.75, 30.00),
    ('claude-sonnet-5-5',          '',  2.00, 10.00, 0.20,  2.50,  4.00),
    ('claude-sonnet-5',            '',  2.00, 10.00, 0.20,  2.50,  4.00),
    ('claude-sonnet-4-6',          '',  3.00, 15.00, 0.30,  3.75,  6.00),
    ('claude-sonnet-4-5-20250929', '',  3.00, 15.00, 0.30,  3.75,  6.00),
    ('claude-sonnet-4-20250514',   '',  3.00, 15.00, 0.30,  3.75,  6.00),
    ('claude-haiku-4-5-20251001',  '',  1.00,  5.00, 0.10,  1.25,  2.00),
    ('claude-3-5-haiku-20241022',  '',  0.80,  4.00, 0.08,  1.00,  1.60),
    -- Family fallbacks for models not priced above (flagged "family"): the
    -- higher of the family's current rates, so an unknown model is never
    -- under-counted against a budget.
    ('', 'fable',  10.00, 50.00, 1.00, 12.50, 20.00),
    ('', 'opus',    5.00, 25.00, 0.50,  6.25, 10.00),
    ('', 'sonnet',  3.00, 15.00, 0.30,  3.75,  6.00),
    ('', 'haiku',   1.00,  5.00, 0.10,  1.25,  2.00),
    -- Provider default for a model of unknown family (flagged "default").
    ('', '',        5.00, 25.00, 0.50,  6.25, 10.00);

-- Bedrock's on-demand price for the global profile equals Anthropic's list
-- price; geographic (regional) profiles of models from Sonnet 4.5 on cost 10%
-- more. That premium is not seeded here: metering refines Bedrock rows per
-- region (a row with a region beats the any-region row).
INSERT INTO prices (provider, model_id, family, input_usd_per_mtok, output_usd_per_mtok,
                    cache_read_usd_per_mtok, cache_write_5m_usd_per_mtok, cache_write_1h_usd_per_mtok,
                    effective_from, source)
SELECT p.provider, s.model_id, s.family, s.input, s.output, s.cache_read, s.cache_write_5m, s.cache_write_1h,
       '2000-01-01T00:00:00Z',
       CASE p.provider
           WHEN 'anthropic' THEN 'Anthropic list price, platform.claude.com pricing, 2026-11-01'
           ELSE 'Bedrock global-profile on-demand = Anthropic list price, 2026-11-01'
       END
FROM seed_price s
CROSS JOIN (VALUES ('anthropic'), ('bedrock')) AS p(provider);

-- +goose Down
DROP TABLE prices;
-- Created by this migration's Up (IF NOT EXISTS: it may have pre-existed; a
-- schema that needs it elsewhere would fail this drop loudly, not silently).
DROP EXTENSION IF EXISTS btree_gist;
