-- Per-user usage by UTC day, ISO week (Monday) and month, for the
-- dashboard's fleet-wide pages: top and active developers and the
-- developer list group every user's usage of a range by user. With 5
-- million events a month, usage_daily_user (migration 00008) had ~124
-- thousand rows to sum for a month (one per user, day and provider); here a
-- month is one row per user, and any other range of whole days is cut into
-- whole months, whole weeks and the days left over (at most six at either
-- end of a run of weeks), so 30 days read at most ~16 rows per user instead
-- of ~60. See docs/performance.md.
--
-- One row per span, bucket and user, Plan and Bedrock in columns of their
-- own (no provider in the key: half the rows). Like usage_daily_user it is
-- maintained by statement-level triggers on usage_daily, with the new rows
-- minus the old ones, so it stays exact whatever changes the daily rollup
-- (the ingester's upserts, a correction, a backfill) and in the same
-- transaction. It replaces usage_daily_user, whose triggers would
-- otherwise cost the ingester a second set of upserts.

-- +goose Up
CREATE TABLE usage_user_rollup (
    span                  text          NOT NULL CHECK (span IN ('day', 'week', 'month')),
    -- Start of the UTC day, of the ISO week (Monday 00:00 UTC) or of the
    -- UTC month.
    bucket                timestamptz   NOT NULL,
    user_id               uuid          NOT NULL,
    requests              bigint        NOT NULL DEFAULT 0,
    bedrock_requests      bigint        NOT NULL DEFAULT 0,
    input_tokens          bigint        NOT NULL DEFAULT 0,
    output_tokens         bigint        NOT NULL DEFAULT 0,
    cache_read_tokens     bigint        NOT NULL DEFAULT 0,
    cache_write_5m_tokens bigint        NOT NULL DEFAULT 0,
    cache_write_1h_tokens bigint        NOT NULL DEFAULT 0,
    plan_cost_usd         numeric(18,6) NOT NULL DEFAULT 0,
    bedrock_cost_usd      numeric(18,6) NOT NULL DEFAULT 0,
    fallbacks             bigint        NOT NULL DEFAULT 0,
    errors                bigint        NOT NULL DEFAULT 0,
    aborted               bigint        NOT NULL DEFAULT 0,
    -- The queries read one span's buckets of a range for every user.
    PRIMARY KEY (span, bucket, user_id)
-- Every ingest batch updates the current day's, week's and month's row of
-- each of its users; free space in each page lets those updates stay on
-- the page (HOT) without a new index entry each time.
) WITH (fillfactor = 70);

-- Adds the change a statement made to usage_daily (new rows minus old
-- ones) to the three spans. Rows are upserted in key order so concurrent
-- ingesters wait rather than deadlock.
-- +goose StatementBegin
CREATE FUNCTION usage_user_rollup_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    upsert CONSTANT text := $sql$
        INSERT INTO usage_user_rollup AS a (span, bucket, user_id, requests, bedrock_requests, input_tokens,
            output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, plan_cost_usd,
            bedrock_cost_usd, fallbacks, errors, aborted)
        SELECT s.span, date_trunc(s.span, d.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', d.user_id,
            sum(d.requests), coalesce(sum(d.requests) FILTER (WHERE d.provider = 'bedrock'), 0), sum(d.input_tokens),
            sum(d.output_tokens), sum(d.cache_read_tokens), sum(d.cache_write_5m_tokens),
            sum(d.cache_write_1h_tokens), coalesce(sum(d.cost_usd) FILTER (WHERE d.provider = 'anthropic'), 0),
            coalesce(sum(d.cost_usd) FILTER (WHERE d.provider = 'bedrock'), 0), sum(d.fallbacks), sum(d.errors),
            sum(d.aborted)
        FROM (%s) d CROSS JOIN (VALUES ('day'), ('week'), ('month')) s(span)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (span, bucket, user_id) DO UPDATE SET
            requests = a.requests + EXCLUDED.requests,
            bedrock_requests = a.bedrock_requests + EXCLUDED.bedrock_requests,
            input_tokens = a.input_tokens + EXCLUDED.input_tokens,
            output_tokens = a.output_tokens + EXCLUDED.output_tokens,
            cache_read_tokens = a.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cache_write_5m_tokens = a.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
            cache_write_1h_tokens = a.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
            plan_cost_usd = a.plan_cost_usd + EXCLUDED.plan_cost_usd,
            bedrock_cost_usd = a.bedrock_cost_usd + EXCLUDED.bedrock_cost_usd,
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

DROP TRIGGER usage_daily_user_delete ON usage_daily;
DROP TRIGGER usage_daily_user_update ON usage_daily;
DROP TRIGGER usage_daily_user_insert ON usage_daily;
DROP FUNCTION usage_daily_user_apply();
DROP TABLE usage_daily_user;

CREATE TRIGGER usage_user_rollup_insert AFTER INSERT ON usage_daily
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_user_rollup_apply();
CREATE TRIGGER usage_user_rollup_update AFTER UPDATE ON usage_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_user_rollup_apply();
CREATE TRIGGER usage_user_rollup_delete AFTER DELETE ON usage_daily
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_user_rollup_apply();

-- Backfill; the share lock keeps writers out of usage_daily until this
-- migration commits, so nothing is counted twice or missed.
LOCK TABLE usage_daily IN SHARE MODE;
INSERT INTO usage_user_rollup (span, bucket, user_id, requests, bedrock_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, plan_cost_usd, bedrock_cost_usd, fallbacks,
    errors, aborted)
SELECT s.span, date_trunc(s.span, d.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', d.user_id, sum(d.requests),
    coalesce(sum(d.requests) FILTER (WHERE d.provider = 'bedrock'), 0), sum(d.input_tokens), sum(d.output_tokens),
    sum(d.cache_read_tokens), sum(d.cache_write_5m_tokens), sum(d.cache_write_1h_tokens),
    coalesce(sum(d.cost_usd) FILTER (WHERE d.provider = 'anthropic'), 0),
    coalesce(sum(d.cost_usd) FILTER (WHERE d.provider = 'bedrock'), 0), sum(d.fallbacks), sum(d.errors),
    sum(d.aborted)
FROM usage_daily d CROSS JOIN (VALUES ('day'), ('week'), ('month')) s(span)
GROUP BY 1, 2, 3
-- In key order, so that a bucket's rows share pages as the ingester's do.
ORDER BY 1, 2, 3;
ANALYZE usage_user_rollup;

-- +goose Down
DROP TRIGGER usage_user_rollup_delete ON usage_daily;
DROP TRIGGER usage_user_rollup_update ON usage_daily;
DROP TRIGGER usage_user_rollup_insert ON usage_daily;
DROP FUNCTION usage_user_rollup_apply();
DROP TABLE usage_user_rollup;

-- usage_daily_user as migration 00008 made it, rebuilt from usage_daily.
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

LOCK TABLE usage_daily IN SHARE MODE;
INSERT INTO usage_daily_user (bucket, user_id, provider, requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, fallbacks, errors, aborted)
SELECT bucket, user_id, provider, sum(requests), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
    sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cost_usd), sum(fallbacks), sum(errors),
    sum(aborted)
FROM usage_daily GROUP BY 1, 2, 3;
