-- All-users hourly rollup: usage_hourly summed over users and keys, for
-- the dashboard's all-users summaries (daily series, by model, by
-- provider). Those read ~1 million per-user rollup rows for 30 days with
-- 5 million events (about 300-400 ms on the 2-core build machine); this
-- table has at most one row per hour, model and provider (a few thousand
-- for 30 days), read in a few milliseconds. See docs/performance.md.
--
-- It is maintained by statement-level triggers on usage_hourly, so it stays
-- exact whatever writes the per-user rollups (the ingester's upserts, a
-- backfill, an ingester of an older release still running during a
-- deployment): every change to usage_hourly is added to it in the same
-- transaction.

-- +goose Up
CREATE TABLE usage_hourly_all (
    bucket                timestamptz   NOT NULL,
    model                 text          NOT NULL,
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
    PRIMARY KEY (bucket, model, provider)
);

-- Adds the change a statement made to usage_hourly: the new rows minus the
-- old ones (an insert has only new rows, a delete only old ones). The
-- rollup upserts never change a row's key, but a change of key would be
-- counted right too. Rows are upserted in key order, so concurrent
-- ingesters lock them in the same order and wait rather than deadlock.
-- +goose StatementBegin
CREATE FUNCTION usage_hourly_all_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    upsert CONSTANT text := $sql$
        INSERT INTO usage_hourly_all AS a (bucket, model, provider, requests, input_tokens, output_tokens,
            cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
        SELECT bucket, model, provider, sum(requests), sum(input_tokens), sum(output_tokens),
            sum(cache_read_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_usd),
            sum(fallbacks), sum(errors), sum(aborted)
        FROM (%s) d
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (bucket, model, provider) DO UPDATE SET
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
        SELECT bucket, model, provider, requests, input_tokens, output_tokens, cache_read_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted
        FROM new_rows$sql$;
    removed CONSTANT text := $sql$
        SELECT bucket, model, provider, -requests AS requests, -input_tokens AS input_tokens,
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

CREATE TRIGGER usage_hourly_all_insert AFTER INSERT ON usage_hourly
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_hourly_all_apply();
CREATE TRIGGER usage_hourly_all_update AFTER UPDATE ON usage_hourly
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_hourly_all_apply();
CREATE TRIGGER usage_hourly_all_delete AFTER DELETE ON usage_hourly
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_hourly_all_apply();

-- Backfill from the per-user rollups. The share lock keeps writers out of
-- usage_hourly until this migration commits, so nothing is counted twice or
-- missed (the triggers exist from this point on).
LOCK TABLE usage_hourly IN SHARE MODE;
INSERT INTO usage_hourly_all (bucket, model, provider, requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
SELECT bucket, model, provider, sum(requests), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
    sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_usd), sum(fallbacks), sum(errors),
    sum(aborted)
FROM usage_hourly GROUP BY 1, 2, 3;
ANALYZE usage_hourly_all;

-- +goose Down
DROP TRIGGER usage_hourly_all_delete ON usage_hourly;
DROP TRIGGER usage_hourly_all_update ON usage_hourly;
DROP TRIGGER usage_hourly_all_insert ON usage_hourly;
DROP FUNCTION usage_hourly_all_apply();
DROP TABLE usage_hourly_all;
