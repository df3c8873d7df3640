-- Webhook notifications: the endpoints admins configure, a durable outbox
-- of notification events, one delivery per (event, webhook) and a log of
-- every delivery attempt.

-- +goose Up

CREATE TABLE webhooks (
    id                uuid        PRIMARY KEY,
    name              text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url               text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- generic: the event as JSON; slack: a Slack-compatible {"text": …} body.
    format            text        NOT NULL CHECK (format IN ('generic', 'slack')),
    -- The signing secret, sealed (internal/secrets) with the webhook id as
    -- associated data; never returned by the API after creation.
    secret_ciphertext bytea       NOT NULL,
    -- Event types delivered; empty means every type.
    event_types       text[]      NOT NULL DEFAULT '{}',
    enabled           boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The outbox. A row is written in the transaction of the change that
-- causes it where there is one (a key issued or revoked), together with a
-- pending delivery for every enabled webhook that wants its type.
CREATE TABLE notification_events (
    id          uuid        PRIMARY KEY,
    type        text        NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
    -- Producers that may see the same fact several times (a usage event
    -- redelivered, several admin replicas watching the same breaker) name
    -- it; a second event with the same key is dropped.
    dedupe_key  text        UNIQUE CHECK (dedupe_key IS NULL OR length(dedupe_key) BETWEEN 1 AND 300),
    occurred_at timestamptz NOT NULL,
    -- One line for people (the Slack body's text).
    summary     text        NOT NULL DEFAULT '',
    data        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_events_created_idx ON notification_events (created_at);

CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id         uuid        NOT NULL REFERENCES notification_events (id) ON DELETE CASCADE,
    webhook_id       uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending delivery is due. A dispatcher that claims it moves
    -- this forward by its lease, so that another replica takes it over only
    -- if the first one died mid-attempt.
    next_attempt_at  timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text        NOT NULL DEFAULT '',
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);

CREATE TABLE webhook_delivery_attempts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    -- 0 when no HTTP answer came (refused, timeout, refused target).
    status_code integer     NOT NULL,
    error       text        NOT NULL DEFAULT '',
    duration_ms integer     NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX webhook_delivery_attempts_delivery_idx ON webhook_delivery_attempts (delivery_id, id);

-- +goose Down

DROP TABLE webhook_delivery_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE notification_events;
DROP TABLE webhooks;
