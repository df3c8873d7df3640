-- Per-minute rate limits (requests, input tokens, output tokens) of access
-- keys and users, and later teams: one row per limited subject. The limits
-- travel to extproc in the KeyService's key lookup, which enforces them in
-- Redis; NULL means no limit on that dimension.

-- +goose Up
CREATE TABLE rate_limits (
    -- key, user or team: what subject_id names. Not a foreign key, so that
    -- one table serves every scope; keys are revoked and users soft-deleted,
    -- never removed, and a revoked key's or deleted user's row is never read
    -- (the key lookup refuses the key first).
    scope                    text        NOT NULL CHECK (scope IN ('key', 'user', 'team')),
    subject_id               uuid        NOT NULL,
    requests_per_minute      bigint      CHECK (requests_per_minute BETWEEN 1 AND 1000000),
    input_tokens_per_minute  bigint      CHECK (input_tokens_per_minute BETWEEN 1 AND 10000000000),
    output_tokens_per_minute bigint      CHECK (output_tokens_per_minute BETWEEN 1 AND 10000000000),
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject_id),
    -- A row without any limit is deleted instead.
    CHECK (requests_per_minute IS NOT NULL OR input_tokens_per_minute IS NOT NULL
           OR output_tokens_per_minute IS NOT NULL)
);

CREATE TRIGGER rate_limits_touch BEFORE UPDATE ON rate_limits
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

-- +goose Down
DROP TABLE rate_limits;
