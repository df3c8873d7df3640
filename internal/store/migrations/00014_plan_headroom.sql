-- Plan headroom: the subscription rate-limit state Anthropic announces on
-- every Plan answer (anthropic-ratelimit-unified-* headers), per developer
-- over time, and the per-developer settings that act on it.
--
-- plan_headroom holds at most one sample per user and 5-minute bucket: the
-- ingester upserts the latest reading of the bucket (an older reading never
-- replaces a newer one, so a redelivered batch changes nothing). A busy
-- developer therefore costs at most 288 rows a day, whatever their request
-- rate, and the maintenance job deletes buckets older than 35 days: the
-- table is bounded by users × 10,080 rows.
--
-- users.preempt_threshold is the pre-emptive failover threshold (a
-- utilization fraction in (0, 1]; 0 turns it off for the user; NULL means
-- the gateway's default, CCPROXY_PREEMPT_THRESHOLD). users.seat_type is the
-- developer's seat (pro, max_5x, max_20x or api) for seat economics; NULL
-- means not recorded.

-- +goose Up
CREATE TABLE plan_headroom (
    user_id          uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bucket           timestamptz      NOT NULL,
    sampled_at       timestamptz      NOT NULL,
    access_key_id    uuid             NOT NULL,
    status           text             NOT NULL DEFAULT '',
    claim            text             NOT NULL DEFAULT '',
    utilization_5h   double precision CHECK (utilization_5h >= 0),
    reset_5h         timestamptz,
    utilization_7d   double precision CHECK (utilization_7d >= 0),
    reset_7d         timestamptz,
    reset_at         timestamptz,
    PRIMARY KEY (user_id, bucket)
);

ALTER TABLE users
    ADD COLUMN preempt_threshold double precision
        CHECK (preempt_threshold >= 0 AND preempt_threshold <= 1),
    ADD COLUMN seat_type text
        CHECK (seat_type IN ('pro', 'max_5x', 'max_20x', 'api'));

-- +goose Down
ALTER TABLE users DROP COLUMN seat_type, DROP COLUMN preempt_threshold;
DROP TABLE plan_headroom;
