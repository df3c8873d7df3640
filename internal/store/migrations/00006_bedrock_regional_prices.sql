-- +goose Up
-- Bedrock's per-region prices where they differ from the list price. For the
-- Claude models from Sonnet 4.5 on, invoking through a geographic
-- cross-region inference profile (us., eu., jp., au., apac.) costs 10 % more
-- than through the global profile, which is priced like Anthropic's list
-- (AWS, "Amazon Bedrock pricing" and the announcement of global cross-Region
-- inference for Claude Sonnet 4.5, 2025-09; checked 2026-11-01). The gateway
-- invokes the profile the model mapping names for the credential's region,
-- so a region gets the premium exactly where its mapping entry is a
-- geographic profile; regions served by the global profile keep the
-- any-region (list) row. Older models (Opus 4.1, Opus 4, Sonnet 4, Haiku 3.5)
-- have no such premium.
INSERT INTO prices (provider, region, model_id, family, input_usd_per_mtok, output_usd_per_mtok,
                    cache_read_usd_per_mtok, cache_write_5m_usd_per_mtok, cache_write_1h_usd_per_mtok,
                    effective_from, source)
SELECT 'bedrock', r.region, m.anthropic_model_id, '',
       p.input_usd_per_mtok * 1.1, p.output_usd_per_mtok * 1.1, p.cache_read_usd_per_mtok * 1.1,
       p.cache_write_5m_usd_per_mtok * 1.1, p.cache_write_1h_usd_per_mtok * 1.1,
       '2000-01-01T00:00:00Z',
       'Bedrock geographic cross-region profile: list price +10%, AWS Bedrock pricing, 2026-11-01'
FROM model_regions r
JOIN model_mappings m ON m.id = r.mapping_id
JOIN prices p ON p.provider = 'bedrock' AND p.region = '' AND p.model_id = m.anthropic_model_id
             AND p.effective_to IS NULL
WHERE r.region <> ''
  AND r.profile_id NOT LIKE 'global.%'
  AND m.anthropic_model_id NOT IN ('claude-opus-4-1-20250805', 'claude-opus-4-20250514',
                                   'claude-sonnet-4-20250514', 'claude-3-5-haiku-20241022');

-- +goose Down
DELETE FROM prices
WHERE provider = 'bedrock' AND region <> ''
  AND source = 'Bedrock geographic cross-region profile: list price +10%, AWS Bedrock pricing, 2026-11-01';
