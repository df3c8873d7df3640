-- Usage: one row per request that reached an upstream, partitioned by month,
-- plus hourly and daily rollups.

-- +goose Up

-- No foreign keys to users/access_keys: each would add a per-row trigger on
-- the ingest path (≥ 20,000 rows/s), and neither parent is ever hard-deleted
-- (users are soft-deleted, keys revoked), so the references cannot dangle.
CREATE TABLE usage_events (
    request_id            text          NOT NULL CHECK (length(request_id) BETWEEN 1 AND 200),
    -- Fixed by the producer (extproc), so a re-delivered event is identical.
    event_time            timestamptz   NOT NULL,
    user_id               uuid          NOT NULL,
    access_key_id         uuid          NOT NULL,
    session_id            text          NOT NULL DEFAULT '',
    agent_id              text          NOT NULL DEFAULT '',
    client_version        text          NOT NULL DEFAULT '',
    kind                  text          NOT NULL CHECK (kind IN ('messages', 'count_tokens')),
    requested_model       text          NOT NULL DEFAULT '',
    bedrock_model_id      text          NOT NULL DEFAULT '',
    provider              text          NOT NULL CHECK (provider IN ('anthropic', 'bedrock')),
    region                text          NOT NULL DEFAULT '',
    fallback              boolean       NOT NULL DEFAULT false,
    fallback_reason       text          NOT NULL DEFAULT '',
    stream                boolean       NOT NULL DEFAULT false,
    -- 0: no response status (connect failure, reset before headers).
    status                integer       NOT NULL CHECK (status BETWEEN 0 AND 999),
    input_tokens          bigint        NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens         bigint        NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_read_tokens     bigint        NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cache_write_5m_tokens bigint        NOT NULL DEFAULT 0 CHECK (cache_write_5m_tokens >= 0),
    cache_write_1h_tokens bigint        NOT NULL DEFAULT 0 CHECK (cache_write_1h_tokens >= 0),
    cost_usd              numeric(18,6) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    -- How the price was found (exact model, family, provider default); ''
    -- when nothing was billable.
    price_flag            text          NOT NULL DEFAULT '' CHECK (price_flag IN ('', 'exact', 'family', 'default')),
    ttft_ms               integer       CHECK (ttft_ms >= 0),
    latency_ms            integer       NOT NULL DEFAULT 0 CHECK (latency_ms >= 0),
    aborted               boolean       NOT NULL DEFAULT false,
    -- Postgres needs the partition key in every unique constraint. Time
    -- first: inserts append to the right edge of the index, and the index
    -- serves "latest requests" scans. Uniqueness of request_id alone is
    -- usage_dedupe's job.
    PRIMARY KEY (event_time, request_id)
) PARTITION BY RANGE (event_time);

CREATE INDEX usage_events_user_idx ON usage_events (user_id, event_time);
CREATE INDEX usage_events_key_idx ON usage_events (access_key_id, event_time);
CREATE INDEX usage_events_session_idx ON usage_events (session_id, event_time) WHERE session_id <> '';

-- Catches events for months whose partition does not exist (yet, or any
-- more); usage_ensure_partition moves them out when the month is created.
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

-- Request ids seen, whatever event_time they came with: a re-delivered
-- event is dropped even if its time differs. Inserting here first (ON
-- CONFLICT DO NOTHING) decides which events are new. Unpartitioned; the
-- retention job deletes old rows with one sequential pass (no time index to
-- keep on the ingest path).
CREATE TABLE usage_dedupe (
    request_id text        PRIMARY KEY,
    event_time timestamptz NOT NULL
);

-- Creates the monthly partition (UTC months) holding t, if missing, and
-- returns its name. Rows already in the default partition for that month are
-- moved into the new table before it is attached, which the attach would
-- otherwise refuse. Locking the default partition makes concurrent callers
-- (replicas starting together) wait rather than fail; a table lock, unlike an
-- advisory lock, also refreshes this backend's catalog cache, so the second
-- look sees the partition the first caller created.
-- +goose StatementBegin
CREATE FUNCTION usage_ensure_partition(t timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start_at timestamptz := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    end_at   timestamptz := (date_trunc('month', t AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    part     text        := 'usage_events_' || to_char(t AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    LOCK TABLE usage_events_default IN SHARE ROW EXCLUSIVE MODE;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM usage_events_default WHERE event_time >= %L AND event_time < %L RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', start_at, end_at, part);
    EXECUTE format('ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, start_at, end_at);
    RETURN part;
END
$$;
-- +goose StatementEnd

-- Rollups. bucket is the start of the UTC hour / UTC day. model is the
-- requested model. Counters only ever grow, by upserts adding each newly
-- inserted event exactly once (in the same statement as the insert).
CREATE TABLE usage_hourly (
    bucket                timestamptz   NOT NULL,
    user_id               uuid          NOT NULL,
    access_key_id         uuid          NOT NULL,
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
    -- status 0 or >= 400
    errors                bigint        NOT NULL DEFAULT 0,
    aborted               bigint        NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, bucket, access_key_id, model, provider)
);
CREATE INDEX usage_hourly_key_idx ON usage_hourly (access_key_id, bucket);
CREATE INDEX usage_hourly_bucket_idx ON usage_hourly (bucket);

-- Same columns, checks, primary key and indexes as usage_hourly.
CREATE TABLE usage_daily (LIKE usage_hourly INCLUDING ALL);

-- +goose Down
DROP TABLE usage_daily;
DROP TABLE usage_hourly;
DROP FUNCTION usage_ensure_partition(timestamptz);
DROP TABLE usage_dedupe;
DROP TABLE usage_events;
