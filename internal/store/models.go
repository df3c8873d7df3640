package store

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ModelMapping maps an Anthropic model id (and its aliases) to Bedrock.
type ModelMapping struct {
	ID uuid.UUID
	// AnthropicModelID is the canonical id, e.g. claude-sonnet-4-5-20250929.
	AnthropicModelID string
	// Aliases are other names for the same model, e.g. claude-sonnet-4-5.
	Aliases []string
	// Family is opus, sonnet, haiku, fable, …
	Family string
	// BedrockModelID is the base model id, e.g.
	// anthropic.claude-sonnet-4-5-20250929-v1:0 (what CountTokens takes).
	BedrockModelID string
	// Regions maps a source AWS region to the model id to invoke from it
	// (usually an inference profile such as us.anthropic.…); the key ""
	// applies to regions without their own entry (the global profile).
	Regions   map[string]string
	Enabled   bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ProfileFor returns the model id to invoke from region: the region's own
// entry, else the "" entry. ok is false when neither exists.
func (m ModelMapping) ProfileFor(region string) (id string, ok bool) {
	if id, ok = m.Regions[region]; ok {
		return id, true
	}
	id, ok = m.Regions[""]
	return id, ok
}

// NewModelMapping holds the fields of a mapping to create. It is enabled
// unless Disabled is set.
type NewModelMapping struct {
	AnthropicModelID string
	Aliases          []string
	Family           string
	BedrockModelID   string
	Regions          map[string]string
	Disabled         bool
}

// ModelMappingPatch is a partial update of a mapping; Aliases and Regions
// replace the whole set when set.
type ModelMappingPatch struct {
	AnthropicModelID Optional[string]
	Aliases          Optional[[]string]
	Family           Optional[string]
	BedrockModelID   Optional[string]
	Regions          Optional[map[string]string]
	Enabled          Optional[bool]
}

// Models is the model mapping repository.
type Models struct{ q *Queries }

// Models returns the model mapping repository.
func (q *Queries) Models() Models { return Models{q} }

const mappingSelect = `
	SELECT m.id, m.anthropic_model_id, m.family, m.bedrock_model_id, m.enabled, m.created_at, m.updated_at,
	       coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM model_aliases a WHERE a.mapping_id = m.id), '{}'),
	       coalesce((SELECT jsonb_object_agg(r.region, r.profile_id) FROM model_regions r WHERE r.mapping_id = m.id), '{}')
	FROM model_mappings m`

func scanMapping(row pgx.Row) (ModelMapping, error) {
	var m ModelMapping
	err := row.Scan(&m.ID, &m.AnthropicModelID, &m.Family, &m.BedrockModelID, &m.Enabled, &m.CreatedAt, &m.UpdatedAt,
		&m.Aliases, &m.Regions)
	return m, err
}

func (r Models) list(ctx context.Context, op, where string, args ...any) ([]ModelMapping, error) {
	rows, err := r.q.db.Query(ctx, mappingSelect+" "+where+" ORDER BY m.family, m.anthropic_model_id", args...)
	if err != nil {
		return nil, mapErr(op, err)
	}
	ms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ModelMapping, error) { return scanMapping(row) })
	return ms, mapErr(op, err)
}

// List returns every mapping, ordered by family and id.
func (r Models) List(ctx context.Context) ([]ModelMapping, error) {
	return r.list(ctx, "store: list model mappings", "")
}

// ListEnabled returns the enabled mappings: what the control plane serves to
// extproc.
func (r Models) ListEnabled(ctx context.Context) ([]ModelMapping, error) {
	return r.list(ctx, "store: list enabled model mappings", "WHERE m.enabled")
}

// Get returns a mapping by id.
func (r Models) Get(ctx context.Context, id uuid.UUID) (ModelMapping, error) {
	m, err := scanMapping(r.q.db.QueryRow(ctx, mappingSelect+` WHERE m.id = $1`, id))
	return m, mapErr("store: get model mapping", err)
}

// Resolve returns the mapping whose id or one of whose aliases is name,
// enabled or not.
func (r Models) Resolve(ctx context.Context, name string) (ModelMapping, error) {
	m, err := scanMapping(r.q.db.QueryRow(ctx, mappingSelect+`
		WHERE m.anthropic_model_id = $1
		   OR m.id = (SELECT mapping_id FROM model_aliases WHERE alias = $1)`, name))
	return m, mapErr("store: resolve model", err)
}

// Create inserts a mapping with its aliases and regions. A name already used
// as an id or alias is ErrConflict.
func (r Models) Create(ctx context.Context, nm NewModelMapping) (ModelMapping, error) {
	var out ModelMapping
	err := r.q.tx(ctx, func(q *Queries) error {
		var id uuid.UUID
		err := q.db.QueryRow(ctx, `
			INSERT INTO model_mappings (anthropic_model_id, family, bedrock_model_id, enabled)
			VALUES ($1, $2, $3, $4) RETURNING id`,
			nm.AnthropicModelID, nm.Family, nm.BedrockModelID, !nm.Disabled).Scan(&id)
		if err != nil {
			return err
		}
		if err := replaceAliases(ctx, q, id, nm.Aliases); err != nil {
			return err
		}
		if err := replaceRegions(ctx, q, id, nm.Regions); err != nil {
			return err
		}
		out, err = scanMapping(q.db.QueryRow(ctx, mappingSelect+` WHERE m.id = $1`, id))
		return err
	})
	return out, mapErr("store: create model mapping", err)
}

// Update changes the fields set in p and returns the updated mapping.
func (r Models) Update(ctx context.Context, id uuid.UUID, p ModelMappingPatch) (ModelMapping, error) {
	var out ModelMapping
	err := r.q.tx(ctx, func(q *Queries) error {
		var s setList
		if p.AnthropicModelID.Set {
			s.add("anthropic_model_id", p.AnthropicModelID.Value)
		}
		if p.Family.Set {
			s.add("family", p.Family.Value)
		}
		if p.BedrockModelID.Set {
			s.add("bedrock_model_id", p.BedrockModelID.Value)
		}
		if p.Enabled.Set {
			s.add("enabled", p.Enabled.Value)
		}
		// Always touch the row: it proves it exists and bumps updated_at
		// when only aliases or regions change.
		s.sets = append(s.sets, "updated_at = now()")
		s.args = append(s.args, id)
		tag, err := q.db.Exec(ctx, `UPDATE model_mappings SET `+strings.Join(s.sets, ", ")+
			` WHERE id = $`+strconv.Itoa(len(s.args)), s.args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		if p.Aliases.Set {
			if _, err := q.db.Exec(ctx, `DELETE FROM model_aliases WHERE mapping_id = $1`, id); err != nil {
				return err
			}
			if err := replaceAliases(ctx, q, id, p.Aliases.Value); err != nil {
				return err
			}
		}
		if p.Regions.Set {
			if _, err := q.db.Exec(ctx, `DELETE FROM model_regions WHERE mapping_id = $1`, id); err != nil {
				return err
			}
			if err := replaceRegions(ctx, q, id, p.Regions.Value); err != nil {
				return err
			}
		}
		out, err = scanMapping(q.db.QueryRow(ctx, mappingSelect+` WHERE m.id = $1`, id))
		return err
	})
	return out, mapErr("store: update model mapping", err)
}

// Delete removes a mapping with its aliases and regions.
func (r Models) Delete(ctx context.Context, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM model_mappings WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	return mapErr("store: delete model mapping", err)
}

func replaceAliases(ctx context.Context, q *Queries, id uuid.UUID, aliases []string) error {
	if len(aliases) == 0 {
		return nil
	}
	_, err := q.db.Exec(ctx, `INSERT INTO model_aliases (alias, mapping_id) SELECT unnest($2::text[]), $1`, id, aliases)
	return err
}

func replaceRegions(ctx context.Context, q *Queries, id uuid.UUID, regions map[string]string) error {
	if len(regions) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(regions))
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = regions[k]
	}
	_, err := q.db.Exec(ctx, `
		INSERT INTO model_regions (mapping_id, region, profile_id)
		SELECT $1, r, p FROM unnest($2::text[], $3::text[]) AS t(r, p)`, id, keys, vals)
	return err
}
