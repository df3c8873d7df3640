-- What the dashboard's fleet-wide pages read, kept small at 5 million events
-- a month (docs/performance.md):
--
--  * usage_daily_user: usage_daily summed over keys and models, one row per
--    UTC day, user and provider. "Top developers", "active developers" and
--    the developer list's month spend group every user's usage by user;
--    the per-key, per-model daily rollup has ~1 million rows a month for
--    2,000 developers, this table ~120 thousand. Like usage_hourly_all it is
--    kept exact by statement-level triggers, here on usage_daily.
--  * usage_events_fallback_idx: a covering partial index over the fallback
--    rows only, so "fallbacks by reason" over a month reads the fallbacks
--    (a few percent of the rows) with an index-only scan instead of the
--    whole partition.

-- +goose Up
CREATE TABLE usage_daily_user (
    bucket                timestamptz   NOT NULL,
    user_id               uuid          NOT NULL,
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
    PRIMARY KEY (user_id, bucket, provider)
);
CREATE INDEX usage_daily_user_bucket_idx ON usage_daily_user (bucket);

-- The same delta logic as usage_hourly_all_apply (migration 00007), keyed
-- by day, user and provider; rows are upserted in key order so concurrent
-- ingesters wait rather than deadlock.
-- +goose StatementBegin
CREATE FUNCTION usage_daily_user_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    upsert CONSTANT text := $sql$
        INSERT INTO usage_daily_user AS a (bucket, user_id, provider, requests, input_tokens, output_tokens,
            cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
        SELECT bucket, user_id, provider, sum(requests), sum(input_tokens), sum(output_tokens),
            sum(cache_read_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_usd),
            sum(fallbacks), sum(errors), sum(aborted)
        FROM (%s) d
        GROUP BY user_id, bucket, provider ORDER BY user_id, bucket, provider
        ON CONFLICT (user_id, bucket, provider) DO UPDATE SET
            requests = a.requests + EXCLUDED.requests,
            input_tokens = a.input_tokens + EXCLUDED.input_tokens,
            output_tokens = a.output_tokens + EXCLUDED.output_tokens,
            cache_read_tokens = a.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cache_write_5m_tokens = a.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
            cache_write_1h_tokens = a.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
            cost_usd = a.cost_usd + EXCLUDED.cost_usd,
            fallbacks = a.fallbacks + EXCLUDED.fallbacks,
            errors = a.errors + EXCLUDED.errors,
            aborted = a.aborted + EXCLUDED.aborted$sql$;
    added CONSTANT text := $sql$
        SELECT bucket, user_id, provider, requests, input_tokens, output_tokens, cache_read_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted
        FROM new_rows$sql$;
    removed CONSTANT text := $sql$
        SELECT bucket, user_id, provider, -requests AS requests, -input_tokens AS input_tokens,
            -output_tokens AS output_tokens, -cache_read_tokens AS cache_read_tokens,
            -cache_write_5m_tokens AS cache_write_5m_tokens, -cache_write_1h_tokens AS cache_write_1h_tokens,
            -cost_usd AS cost_usd, -fallbacks AS fallbacks, -errors AS errors, -aborted AS aborted
        FROM old_rows$sql$;
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(upsert, added);
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format(upsert, added || ' UNION ALL ' || removed);
    ELSE
        EXECUTE format(upsert, removed);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER usage_daily_user_insert AFTER INSERT ON usage_daily
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_user_apply();
CREATE TRIGGER usage_daily_user_update AFTER UPDATE ON usage_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_user_apply();
CREATE TRIGGER usage_daily_user_delete AFTER DELETE ON usage_daily
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_user_apply();

-- Backfill; the share lock keeps writers out until this migration commits.
LOCK TABLE usage_daily IN SHARE MODE;
INSERT INTO usage_daily_user (bucket, user_id, provider, requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
SELECT bucket, user_id, provider, sum(requests), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
    sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_usd), sum(fallbacks), sum(errors),
    sum(aborted)
FROM usage_daily GROUP BY 1, 2, 3;
ANALYZE usage_daily_user;

CREATE INDEX usage_events_fallback_idx ON usage_events (event_time)
    INCLUDE (fallback_reason, provider, status, aborted, input_tokens, output_tokens, cache_read_tokens,
             cache_write_5m_tokens, cache_write_1h_tokens, cost_usd)
    WHERE fallback;

-- +goose Down
DROP INDEX usage_events_fallback_idx;
DROP TRIGGER usage_daily_user_delete ON usage_daily;
DROP TRIGGER usage_daily_user_update ON usage_daily;
DROP TRIGGER usage_daily_user_insert ON usage_daily;
DROP FUNCTION usage_daily_user_apply();
DROP TABLE usage_daily_user;
