-- Login throttling state, shared by every admin replica: one row per
-- throttled key (a username, a client address). A login attempt is counted
-- in a locked row before its password is verified, so parallel guesses
-- cannot all pass a check made before any of them is counted.

-- +goose Up
CREATE TABLE admin_login_throttle (
    -- SHA-256 of the key ("username\0" + lower-cased username, or
    -- "address\0" + client address): people type passwords into the
    -- username field, and this table keeps no typed text.
    key             bytea       PRIMARY KEY CHECK (octet_length(key) = 32),
    -- Attempts counted since the state was last forgotten or reset.
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is allowed; NULL when it is allowed now.
    next_attempt_at timestamptz,
    -- When the state is forgotten (and the maintenance job deletes the row).
    expires_at      timestamptz NOT NULL
);
CREATE INDEX admin_login_throttle_expires_idx ON admin_login_throttle (expires_at);

-- +goose Down
DROP TABLE admin_login_throttle;
