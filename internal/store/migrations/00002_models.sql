-- Model mappings: which Bedrock model serves an Anthropic model id, under
-- which inference profile in each AWS region.

-- +goose Up

CREATE TABLE model_mappings (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The canonical id clients send, e.g. claude-sonnet-4-5-20250929.
    anthropic_model_id text        NOT NULL UNIQUE CHECK (anthropic_model_id ~ '^[a-z0-9][a-z0-9.:@_-]{0,199}$'),
    -- opus, sonnet, haiku, fable, …: a format check rather than a list,
    -- because Anthropic adds families (Fable arrived in 2026).
    family             text        NOT NULL CHECK (family ~ '^[a-z][a-z0-9]{0,31}$'),
    -- The base (in-region) model id, e.g. anthropic.claude-sonnet-4-5-20250929-v1:0;
    -- CountTokens takes this one, never a profile id.
    bedrock_model_id   text        NOT NULL CHECK (length(bedrock_model_id) BETWEEN 1 AND 200),
    enabled            boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Other names clients use for a mapping's model, e.g. claude-sonnet-4-5.
CREATE TABLE model_aliases (
    alias      text PRIMARY KEY CHECK (alias ~ '^[a-z0-9][a-z0-9.:@_-]{0,199}$'),
    mapping_id uuid NOT NULL REFERENCES model_mappings (id) ON DELETE CASCADE
);
CREATE INDEX model_aliases_mapping_idx ON model_aliases (mapping_id);

-- The model id to invoke from a source region: a geographic or global
-- cross-region inference profile, or the base id where in-region on-demand
-- works. region '' is the fallback for regions without a row of their own
-- (the global profile where the model has one).
CREATE TABLE model_regions (
    mapping_id uuid NOT NULL REFERENCES model_mappings (id) ON DELETE CASCADE,
    region     text NOT NULL CHECK (region = '' OR region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    profile_id text NOT NULL CHECK (length(profile_id) BETWEEN 1 AND 200),
    PRIMARY KEY (mapping_id, region)
);

-- Canonical ids and aliases share one namespace, which two tables cannot
-- express as a constraint. The advisory lock serialises concurrent writers so
-- the check cannot race; model edits are rare admin actions.
-- +goose StatementBegin
CREATE FUNCTION ccproxy_model_names_unique() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ccproxy_model_names'));
    IF TG_TABLE_NAME = 'model_aliases' THEN
        IF EXISTS (SELECT 1 FROM model_mappings WHERE anthropic_model_id = NEW.alias) THEN
            RAISE EXCEPTION 'model name "%" is already a model id', NEW.alias
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'model_names_unique';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM model_aliases WHERE alias = NEW.anthropic_model_id) THEN
        RAISE EXCEPTION 'model name "%" is already an alias', NEW.anthropic_model_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'model_names_unique';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER model_mappings_names BEFORE INSERT OR UPDATE OF anthropic_model_id ON model_mappings
    FOR EACH ROW EXECUTE FUNCTION ccproxy_model_names_unique();
CREATE TRIGGER model_aliases_names BEFORE INSERT OR UPDATE OF alias ON model_aliases
    FOR EACH ROW EXECUTE FUNCTION ccproxy_model_names_unique();
CREATE TRIGGER model_mappings_touch BEFORE UPDATE ON model_mappings
    FOR EACH ROW EXECUTE FUNCTION ccproxy_touch_updated_at();

CREATE TRIGGER model_mappings_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION ccproxy_notify_config();
CREATE TRIGGER model_aliases_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION ccproxy_notify_config();
CREATE TRIGGER model_regions_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_regions
    FOR EACH STATEMENT EXECUTE FUNCTION ccproxy_notify_config();

-- Seed, as of 2026-11-01. Sources:
--  * Anthropic, "Model IDs and versioning" and the per-model overview pages
--    (platform.claude.com/docs/en/about-claude/models/…): API ids, aliases,
--    and the Bedrock id scheme (dated ids end -v1:0; Opus 4.6 is the last with
--    a -v1 suffix; from Sonnet 4.6 on ids are dateless: anthropic.claude-<name>-<major>-<minor>).
--  * Anthropic, "Claude on Amazon Bedrock (legacy)": base Bedrock ids and
--    which of global/us/eu/jp/apac profiles each model has.
--  * AWS, Bedrock user guide model cards (model-card-anthropic-claude-*.html)
--    and "Supported Regions and models for inference profiles": profile ids,
--    including the au.* profiles, and each geography's source regions.
--  * Claude Code 2.1.332 in Bedrock mode invokes us.anthropic.claude-opus-5-5
--    (testdata/claude-code-2.1.332/bedrock-mode-turn1.request.json).
-- Where a model's geographic profiles were not documented (Opus/Sonnet 5.5,
-- Fable), only the ones seen are seeded; region '' (global) covers the rest.
-- Admins edit all of this through the API.

CREATE TEMPORARY TABLE seed_geo (geo text, region text, rank int) ON COMMIT DROP;
INSERT INTO seed_geo (geo, region, rank)
SELECT g.geo, r.region, g.rank
FROM (VALUES
    ('us',   1, ARRAY['us-east-1', 'us-east-2', 'us-west-1', 'us-west-2', 'ca-central-1', 'ca-west-1']),
    ('eu',   1, ARRAY['eu-central-1', 'eu-central-2', 'eu-north-1', 'eu-south-1', 'eu-south-2',
                      'eu-west-1', 'eu-west-2', 'eu-west-3']),
    ('jp',   1, ARRAY['ap-northeast-1', 'ap-northeast-3']),
    ('au',   1, ARRAY['ap-southeast-2', 'ap-southeast-4']),
    -- apac spans jp and au regions; there the narrower profile wins (rank).
    ('apac', 2, ARRAY['ap-northeast-1', 'ap-northeast-2', 'ap-northeast-3', 'ap-south-1', 'ap-south-2',
                      'ap-southeast-1', 'ap-southeast-2'])
) AS g(geo, rank, regions)
CROSS JOIN LATERAL unnest(g.regions) AS r(region);

CREATE TEMPORARY TABLE seed_model (anthropic_model_id text, family text, bedrock_model_id text,
                                   aliases text[], geos text[]) ON COMMIT DROP;
INSERT INTO seed_model VALUES
    ('claude-fable-5-1',           'fable',  'anthropic.claude-fable-5-1',                '{}',                        '{us,global}'),
    ('claude-fable-5',             'fable',  'anthropic.claude-fable-5',                  '{}',                        '{us,global}'),
    ('claude-opus-5-5',            'opus',   'anthropic.claude-opus-5-5',                 '{}',                        '{us,au,global}'),
    ('claude-sonnet-5-5',          'sonnet', 'anthropic.claude-sonnet-5-5',               '{}',                        '{us,global}'),
    ('claude-opus-5',              'opus',   'anthropic.claude-opus-5',                   '{}',                        '{us,eu,au,global}'),
    ('claude-sonnet-5',            'sonnet', 'anthropic.claude-sonnet-5',                 '{}',                        '{us,eu,au,global}'),
    ('claude-opus-4-8',            'opus',   'anthropic.claude-opus-4-8',                 '{}',                        '{us,eu,jp,au,global}'),
    ('claude-opus-4-7',            'opus',   'anthropic.claude-opus-4-7',                 '{}',                        '{us,eu,jp,au,global}'),
    ('claude-opus-4-6',            'opus',   'anthropic.claude-opus-4-6-v1',              '{}',                        '{us,eu,jp,au,apac,global}'),
    ('claude-sonnet-4-6',          'sonnet', 'anthropic.claude-sonnet-4-6',               '{}',                        '{us,eu,jp,au,global}'),
    ('claude-opus-4-5-20251101',   'opus',   'anthropic.claude-opus-4-5-20251101-v1:0',   '{claude-opus-4-5}',         '{us,eu,global}'),
    ('claude-sonnet-4-5-20250929', 'sonnet', 'anthropic.claude-sonnet-4-5-20250929-v1:0', '{claude-sonnet-4-5}',       '{us,eu,jp,au,global}'),
    ('claude-haiku-4-5-20251001',  'haiku',  'anthropic.claude-haiku-4-5-20251001-v1:0',  '{claude-haiku-4-5}',        '{us,eu,jp,au,global}'),
    ('claude-opus-4-1-20250805',   'opus',   'anthropic.claude-opus-4-1-20250805-v1:0',   '{claude-opus-4-1}',         '{us}'),
    ('claude-sonnet-4-20250514',   'sonnet', 'anthropic.claude-sonnet-4-20250514-v1:0',   '{claude-sonnet-4-0}',       '{us,eu,apac,global}'),
    ('claude-opus-4-20250514',     'opus',   'anthropic.claude-opus-4-20250514-v1:0',     '{claude-opus-4-0}',         '{us}'),
    ('claude-3-5-haiku-20241022',  'haiku',  'anthropic.claude-3-5-haiku-20241022-v1:0',  '{claude-3-5-haiku-latest}', '{us}');

INSERT INTO model_mappings (anthropic_model_id, family, bedrock_model_id)
SELECT anthropic_model_id, family, bedrock_model_id FROM seed_model;

INSERT INTO model_aliases (alias, mapping_id)
SELECT a.alias, m.id
FROM seed_model s
JOIN model_mappings m USING (anthropic_model_id)
CROSS JOIN LATERAL unnest(s.aliases) AS a(alias);

-- Geographic profiles: one row per source region, the narrowest geography first.
INSERT INTO model_regions (mapping_id, region, profile_id)
SELECT DISTINCT ON (m.id, g.region) m.id, g.region, g.geo || '.' || s.bedrock_model_id
FROM seed_model s
JOIN model_mappings m USING (anthropic_model_id)
JOIN seed_geo g ON g.geo = ANY (s.geos)
ORDER BY m.id, g.region, g.rank;

-- The global profile, for any other commercial region.
INSERT INTO model_regions (mapping_id, region, profile_id)
SELECT m.id, '', 'global.' || s.bedrock_model_id
FROM seed_model s
JOIN model_mappings m USING (anthropic_model_id)
WHERE 'global' = ANY (s.geos);

-- +goose Down
DROP TABLE model_regions;
DROP TABLE model_aliases;
DROP TABLE model_mappings;
DROP FUNCTION ccproxy_model_names_unique();
