-- Admin roles and single sign-on. Every admin has a role: owner (everything,
-- including managing admins), admin (everything but managing admins),
-- viewer (reads only) or team_admin (one team's users, keys and usage;
-- team_id names the team). Admins signed in through OpenID Connect are
-- linked by their issuer and subject and may have no password. Audit
-- entries keep the role the actor had when it acted.

-- +goose Up
-- The admins that exist already could do everything: they become owners.
ALTER TABLE admins ADD COLUMN role text NOT NULL DEFAULT 'owner'
    CHECK (role IN ('owner', 'admin', 'viewer', 'team_admin'));
ALTER TABLE admins ALTER COLUMN role SET DEFAULT 'admin';
-- No foreign key yet: the team a team admin is scoped to is checked by the
-- API; a team admin always names one, nobody else does.
ALTER TABLE admins ADD COLUMN team_id uuid;
ALTER TABLE admins ADD CONSTRAINT admins_team_scope_check
    CHECK ((role = 'team_admin') = (team_id IS NOT NULL));
ALTER TABLE admins ADD COLUMN oidc_issuer text;
ALTER TABLE admins ADD COLUMN oidc_subject text;
ALTER TABLE admins ADD CONSTRAINT admins_oidc_check
    CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL));
CREATE UNIQUE INDEX admins_oidc_key ON admins (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL;
-- Single sign-on admins have no password; password logins refuse them.
ALTER TABLE admins ALTER COLUMN password_hash DROP NOT NULL;

ALTER TABLE audit_log ADD COLUMN actor_role text NOT NULL DEFAULT '';

-- An OpenID Connect login in progress: what the callback must find again.
-- The browser holds a random token in a cookie; the row is keyed by the
-- SHA-256 of the state parameter and bound to the token's hash, and the
-- callback deletes it, so each flow completes at most once.
CREATE TABLE admin_oidc_flows (
    state_hash    bytea       PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    browser_hash  bytea       NOT NULL CHECK (octet_length(browser_hash) = 32),
    nonce         text        NOT NULL CHECK (nonce <> ''),
    -- The PKCE code verifier (RFC 7636); useless without the code.
    code_verifier text        NOT NULL CHECK (code_verifier <> ''),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX admin_oidc_flows_expires_idx ON admin_oidc_flows (expires_at);

-- +goose Down
DROP TABLE admin_oidc_flows;
ALTER TABLE audit_log DROP COLUMN actor_role;
DELETE FROM admins WHERE password_hash IS NULL;
ALTER TABLE admins ALTER COLUMN password_hash SET NOT NULL;
DROP INDEX admins_oidc_key;
ALTER TABLE admins DROP COLUMN oidc_subject, DROP COLUMN oidc_issuer, DROP COLUMN team_id, DROP COLUMN role;
