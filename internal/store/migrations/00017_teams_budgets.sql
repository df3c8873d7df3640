-- Teams and budgets that act.
--
-- A team groups developers: each user belongs to at most one. A team has a
-- default routing strategy for its members and a model allow-list. Its
-- monthly Bedrock budget and its monthly budget on the Plan list-price
-- equivalent of its traffic are rows of budgets (scope team, window
-- monthly, metric bedrock or plan_list), not columns: they notify at their
-- thresholds like every budget.
--
-- Budgets generalise the user's monthly Bedrock budget: one row per
-- (subject, window, metric), for an access key, a user or a team, over a
-- daily, weekly or monthly window in the billing time zone, with the
-- thresholds that notify once per window and the action taken at 100 %.
-- The user's monthly_budget_usd stays what it was: shorthand for a monthly
-- Bedrock budget whose action is block.

-- +goose Up
CREATE TABLE teams (
    id                   uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text          NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- NULL: members keep their own routing strategy.
    routing_strategy     text          CHECK (routing_strategy IN ('plan_first', 'bedrock_only', 'plan_only')),
    -- NULL: every model. Otherwise the model ids (or family aliases such as
    -- claude-sonnet-4-5) members may use.
    allowed_models       text[],
    -- NULL: the gateway's default; a Plan utilization fraction in [0, 1].
    preempt_threshold    double precision CHECK (preempt_threshold BETWEEN 0 AND 1),
    created_at           timestamptz   NOT NULL DEFAULT now(),
    updated_at           timestamptz   NOT NULL DEFAULT now(),
    -- Soft-deleted, like users, so that usage keeps naming the team.
    deleted_at           timestamptz
);
CREATE UNIQUE INDEX teams_name_key ON teams (lower(name)) WHERE deleted_at IS NULL;
CREATE TRIGGER teams_touch BEFORE UPDATE ON teams
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

ALTER TABLE users ADD COLUMN team_id uuid REFERENCES teams (id);
CREATE INDEX users_team_idx ON users (team_id) WHERE team_id IS NOT NULL;
ALTER TABLE admins ADD CONSTRAINT admins_team_fk FOREIGN KEY (team_id) REFERENCES teams (id);

CREATE TABLE budgets (
    id             uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    -- key, user or team: what subject_id names (not a foreign key, as in
    -- rate_limits: one table for every scope).
    scope          text          NOT NULL CHECK (scope IN ('key', 'user', 'team')),
    subject_id     uuid          NOT NULL,
    -- Calendar day, ISO week (Monday first) or calendar month in the
    -- billing time zone.
    budget_window  text          NOT NULL CHECK (budget_window IN ('daily', 'weekly', 'monthly')),
    -- bedrock: Bedrock spend; plan_list: Plan traffic at Anthropic's list
    -- prices; all: both.
    metric         text          NOT NULL DEFAULT 'bedrock' CHECK (metric IN ('bedrock', 'plan_list', 'all')),
    amount_usd     numeric(14,2) NOT NULL CHECK (amount_usd >= 0),
    -- Percentages that notify once per window (100 is the action's own).
    thresholds     smallint[]    NOT NULL DEFAULT '{50,80,100}',
    -- At 100 %: block (refuse with 429), downgrade (serve the configured
    -- cheaper model), plan_only (no Bedrock: Plan's refusals reach the
    -- client), notify (nothing but the notifications).
    action         text          NOT NULL DEFAULT 'block' CHECK (action IN ('block', 'downgrade', 'plan_only', 'notify')),
    -- For downgrade: requested model (id or family alias) -> served model.
    downgrade_map  jsonb         NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(downgrade_map) = 'object'),
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (scope, subject_id, budget_window, metric),
    CHECK (action <> 'downgrade' OR downgrade_map <> '{}'),
    CHECK (1 <= ALL (thresholds) AND 100 >= ALL (thresholds))
);
CREATE TRIGGER budgets_touch BEFORE UPDATE ON budgets
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

-- Which thresholds of which window have notified: at most once each.
CREATE TABLE budget_alerts (
    budget_id    uuid        NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    window_start date        NOT NULL,
    threshold    smallint    NOT NULL,
    notified_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, window_start, threshold)
);

-- Usage names the team the developer was in when the request was served,
-- and, when a budget acted on the request, what it did and the model the
-- client asked for (requested_model is then the model served).
ALTER TABLE usage_events ADD COLUMN team_id uuid;
ALTER TABLE usage_events ADD COLUMN budget_action text NOT NULL DEFAULT ''
    CHECK (budget_action IN ('', 'downgrade', 'plan_only'));
ALTER TABLE usage_events ADD COLUMN original_model text NOT NULL DEFAULT '';
CREATE INDEX usage_events_team_idx ON usage_events (team_id, event_time) WHERE team_id IS NOT NULL;

-- +goose Down
DROP INDEX usage_events_team_idx;
ALTER TABLE usage_events DROP COLUMN original_model, DROP COLUMN budget_action, DROP COLUMN team_id;
DROP TABLE budget_alerts;
DROP TABLE budgets;
ALTER TABLE admins DROP CONSTRAINT admins_team_fk;
DROP INDEX users_team_idx;
ALTER TABLE users DROP COLUMN team_id;
DROP TABLE teams;
