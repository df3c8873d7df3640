-- Users, their access keys and their Bedrock credentials.

-- +goose Up

-- Keeps updated_at current on every table that has the column.
-- +goose StatementBegin
CREATE FUNCTION ccproxy_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- Tells the control plane (LISTEN ccproxy_config) that configuration it
-- serves to Envoy and extproc changed. The payload is the table name; the
-- listener reloads rather than applying row deltas, so one notification per
-- statement is enough.
-- +goose StatementBegin
CREATE FUNCTION ccproxy_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ccproxy_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TABLE users (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email              text        CHECK (email IS NULL OR length(email) BETWEEN 3 AND 320),
    routing_strategy   text        NOT NULL DEFAULT 'plan_first'
                                   CHECK (routing_strategy IN ('plan_first', 'bedrock_only', 'plan_only')),
    -- NULL means no budget; the budget applies to Bedrock spend per month.
    monthly_budget_usd numeric(14,2) CHECK (monthly_budget_usd >= 0),
    status             text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Users are soft-deleted so that usage rows keep pointing at them.
    deleted_at         timestamptz
);

-- A deleted user's address may be reused by a new user.
CREATE UNIQUE INDEX users_email_key ON users (lower(email))
    WHERE email IS NOT NULL AND deleted_at IS NULL;
-- Keyset pagination of the user list.
CREATE INDEX users_created_idx ON users (created_at, id);

CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

CREATE TABLE access_keys (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid        NOT NULL REFERENCES users (id),
    name             text        NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    -- HMAC-SHA256(server secret, key); the key itself is never stored.
    key_hash         bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix           text        NOT NULL CHECK (length(prefix) BETWEEN 1 AND 32),
    status           text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'rotating', 'revoked')),
    -- NULL: the user's strategy applies.
    routing_strategy text        CHECK (routing_strategy IN ('plan_first', 'bedrock_only', 'plan_only')),
    -- A rotating key keeps working until grace_until.
    grace_until      timestamptz,
    rotated_to       uuid        REFERENCES access_keys (id),
    last_used_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    -- Target of bedrock_credentials' (access_key_id, user_id) foreign key,
    -- which guarantees an override belongs to the key's own user.
    UNIQUE (id, user_id),
    CHECK (status <> 'rotating' OR grace_until IS NOT NULL),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

CREATE INDEX access_keys_user_idx ON access_keys (user_id, created_at);

CREATE TABLE bedrock_credentials (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid        NOT NULL REFERENCES users (id),
    -- NULL: the user's default credential; else an override for one key.
    access_key_id     uuid,
    kind              text        NOT NULL CHECK (kind IN ('api_key', 'aws_default_chain')),
    region            text        NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    -- Envelope-encrypted Bedrock API key (internal/secrets); only api_key has one.
    secret_ciphertext bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (access_key_id, user_id) REFERENCES access_keys (id, user_id),
    CHECK ((kind = 'api_key') = (secret_ciphertext IS NOT NULL))
);

-- At most one default per user and one override per key.
CREATE UNIQUE INDEX bedrock_credentials_user_default_key ON bedrock_credentials (user_id)
    WHERE access_key_id IS NULL;
CREATE UNIQUE INDEX bedrock_credentials_key_override_key ON bedrock_credentials (access_key_id)
    WHERE access_key_id IS NOT NULL;

CREATE TRIGGER bedrock_credentials_touch BEFORE UPDATE ON bedrock_credentials
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();
-- The regions in use decide which Bedrock clusters the control plane serves.
CREATE TRIGGER bedrock_credentials_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bedrock_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION ccproxy_notify_config();

-- +goose Down
DROP TABLE bedrock_credentials;
DROP TABLE access_keys;
DROP TABLE users;
DROP FUNCTION ccproxy_notify_config();
DROP FUNCTION ccproxy_touch_updated_at();
