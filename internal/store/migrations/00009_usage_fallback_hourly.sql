-- Fallbacks by reason, all users, per hour: the overview's "fallbacks by
-- reason" over a month read ~125 thousand fallback rows of 5 million
-- events through usage_events_fallback_idx (migration 00008), about 2 s on
-- the loaded 2-core build machine; this rollup has one row per hour,
-- reason and provider (a few thousand a month). See docs/performance.md.
--
-- A statement-level trigger on usage_events adds every inserted fallback
-- row, in the same statement, whatever inserts it (the ingester, a
-- backfill). Like the other rollups it keeps counting what retention later
-- drops from the raw events (DROP of a partition fires no trigger).

-- +goose Up
CREATE TABLE usage_fallback_hourly (
    bucket                timestamptz   NOT NULL,
    fallback_reason       text          NOT NULL,
    provider              text          NOT NULL CHECK (provider IN ('anthropic', 'bedrock')),
    requests              bigint        NOT NULL DEFAULT 0,
    input_tokens          bigint        NOT NULL DEFAULT 0,
    output_tokens         bigint        NOT NULL DEFAULT 0,
    cache_read_tokens     bigint        NOT NULL DEFAULT 0,
    cache_write_5m_tokens bigint        NOT NULL DEFAULT 0,
    cache_write_1h_tokens bigint        NOT NULL DEFAULT 0,
    cost_usd              numeric(18,6) NOT NULL DEFAULT 0,
    fallbacks             bigint        NOT NULL DEFAULT 0,
    errors                bigint        NOT NULL DEFAULT 0,
    aborted               bigint        NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, fallback_reason, provider)
);

-- Rows are upserted in key order, so concurrent ingesters wait rather than
-- deadlock.
-- +goose StatementBegin
CREATE FUNCTION usage_fallback_hourly_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_fallback_hourly AS f (bucket, fallback_reason, provider, requests, input_tokens,
        output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks,
        errors, aborted)
    SELECT date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', fallback_reason, provider,
        count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens),
        sum(cache_write_1h_tokens), sum(cost_usd), count(*), count(*) FILTER (WHERE status = 0 OR status >= 400),
        count(*) FILTER (WHERE aborted)
    FROM new_rows WHERE fallback
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (bucket, fallback_reason, provider) DO UPDATE SET
        requests = f.requests + EXCLUDED.requests,
        input_tokens = f.input_tokens + EXCLUDED.input_tokens,
        output_tokens = f.output_tokens + EXCLUDED.output_tokens,
        cache_read_tokens = f.cache_read_tokens + EXCLUDED.cache_read_tokens,
        cache_write_5m_tokens = f.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
        cache_write_1h_tokens = f.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
        cost_usd = f.cost_usd + EXCLUDED.cost_usd,
        fallbacks = f.fallbacks + EXCLUDED.fallbacks,
        errors = f.errors + EXCLUDED.errors,
        aborted = f.aborted + EXCLUDED.aborted;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER usage_fallback_hourly_insert AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_fallback_hourly_apply();

-- Backfill; the share lock keeps the ingester out until this commits.
LOCK TABLE usage_events IN SHARE MODE;
INSERT INTO usage_fallback_hourly (bucket, fallback_reason, provider, requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
SELECT date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', fallback_reason, provider,
    count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens),
    sum(cache_write_1h_tokens), sum(cost_usd), count(*), count(*) FILTER (WHERE status = 0 OR status >= 400),
    count(*) FILTER (WHERE aborted)
FROM usage_events WHERE fallback GROUP BY 1, 2, 3;
ANALYZE usage_fallback_hourly;

-- The raw fallback rows are now read only with a user or key filter,
-- which the (user_id, event_time) and (access_key_id, event_time) indexes serve.
DROP INDEX usage_events_fallback_idx;

-- +goose Down
CREATE INDEX usage_events_fallback_idx ON usage_events (event_time)
    INCLUDE (fallback_reason, provider, status, aborted, input_tokens, output_tokens, cache_read_tokens,
             cache_write_5m_tokens, cache_write_1h_tokens, cost_usd)
    WHERE fallback;
DROP TRIGGER usage_fallback_hourly_insert ON usage_events;
DROP FUNCTION usage_fallback_hourly_apply();
DROP TABLE usage_fallback_hourly;
