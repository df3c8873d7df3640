-- Session trees: what a usage row says about Claude Code's agent tree.
--
--  * parent_agent_id: the x-claude-code-parent-agent-id header, when the
--    client sends one ('' otherwise; Claude Code 2.1.332 does not).
--  * agent_spawns: how many tool_use blocks of the answer call Claude
--    Code's subagent tool (Agent, or Task in older releases), counted by
--    extproc from the answer's content_block_start events. The admin
--    service infers a subagent's parent from these counts and the timing
--    when no parent header was sent (docs/sessions.md).
--
-- Both have constant defaults, so adding them rewrites no partition.

-- +goose Up
ALTER TABLE usage_events
    ADD COLUMN parent_agent_id text     NOT NULL DEFAULT '',
    ADD COLUMN agent_spawns    smallint NOT NULL DEFAULT 0 CHECK (agent_spawns >= 0);

-- +goose Down
ALTER TABLE usage_events DROP COLUMN agent_spawns, DROP COLUMN parent_agent_id;
