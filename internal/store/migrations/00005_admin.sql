-- Admin accounts, their sessions, and the audit log.

-- +goose Up

CREATE TABLE admins (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text        NOT NULL CHECK (length(username) BETWEEN 1 AND 100),
    -- argon2id in the PHC string format ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
    password_hash text        NOT NULL CHECK (password_hash <> ''),
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE UNIQUE INDEX admins_username_key ON admins (lower(username));

CREATE TABLE admin_sessions (
    -- SHA-256 of the session token; the token itself lives only in the cookie.
    id           bytea       PRIMARY KEY CHECK (octet_length(id) = 32),
    admin_id     uuid        NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    user_agent   text        NOT NULL DEFAULT '',
    ip           inet
);
CREATE INDEX admin_sessions_admin_idx ON admin_sessions (admin_id);
CREATE INDEX admin_sessions_expires_idx ON admin_sessions (expires_at);

CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- NULL for changes made by the system or by a since-deleted admin; actor
    -- keeps the name either way.
    admin_id    uuid        REFERENCES admins (id) ON DELETE SET NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action <> ''),
    target_type text        NOT NULL DEFAULT '',
    target_id   text        NOT NULL DEFAULT '',
    -- Snapshots without secrets; the writer redacts.
    before      jsonb,
    after       jsonb,
    ip          inet
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_admin_idx ON audit_log (admin_id, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE admin_sessions;
DROP TABLE admins;
