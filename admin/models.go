package admin

import (
	"context"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// modelJSON is the API form of a model mapping: which Bedrock model, and
// which inference profile in each region, serve an Anthropic model id.
type modelJSON struct {
	ID               uuid.UUID         `json:"id"`
	AnthropicModelID string            `json:"anthropic_model_id"`
	Aliases          []string          `json:"aliases"`
	Family           string            `json:"family"`
	BedrockModelID   string            `json:"bedrock_model_id"`
	Regions          map[string]string `json:"regions"`
	Enabled          bool              `json:"enabled"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
}

func toModel(m store.ModelMapping) modelJSON {
	out := modelJSON{ID: m.ID, AnthropicModelID: m.AnthropicModelID, Aliases: m.Aliases, Family: m.Family,
		BedrockModelID: m.BedrockModelID, Regions: m.Regions, Enabled: m.Enabled, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
	if out.Aliases == nil {
		out.Aliases = []string{}
	}
	if out.Regions == nil {
		out.Regions = map[string]string{}
	}
	return out
}

var modelIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$`)

func checkModelID(field, v string, errs *[]fieldError) {
	if !modelIDRE.MatchString(v) {
		*errs = append(*errs, fieldError{Field: field, Message: "must be 1 to 200 characters of letters, digits and ._:/@-"})
	}
}

func checkAliases(v []string, errs *[]fieldError) {
	if len(v) > 50 {
		*errs = append(*errs, fieldError{Field: "aliases", Message: "at most 50 aliases"})
	}
	for _, a := range v {
		checkModelID("aliases", a, errs)
	}
}

func checkRegions(v map[string]string, errs *[]fieldError) {
	if len(v) > 50 {
		*errs = append(*errs, fieldError{Field: "regions", Message: "at most 50 regions"})
	}
	for reg, prof := range v {
		if reg != "" && !regionRE.MatchString(reg) {
			*errs = append(*errs, fieldError{Field: "regions", Message: "keys must be AWS regions or \"\""})
		}
		checkModelID("regions", prof, errs)
	}
}

type createModelRequest struct {
	AnthropicModelID string            `json:"anthropic_model_id"`
	Aliases          []string          `json:"aliases"`
	Family           string            `json:"family"`
	BedrockModelID   string            `json:"bedrock_model_id"`
	Regions          map[string]string `json:"regions"`
	Enabled          *bool             `json:"enabled"`
}

func (s *Server) handleCreateModel(w http.ResponseWriter, r *http.Request) {
	var req createModelRequest
	if !s.decode(w, r, &req) {
		return
	}
	var errs []fieldError
	checkModelID("anthropic_model_id", req.AnthropicModelID, &errs)
	checkModelID("family", req.Family, &errs)
	checkModelID("bedrock_model_id", req.BedrockModelID, &errs)
	checkAliases(req.Aliases, &errs)
	checkRegions(req.Regions, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	nm := store.NewModelMapping{AnthropicModelID: req.AnthropicModelID, Aliases: req.Aliases, Family: req.Family,
		BedrockModelID: req.BedrockModelID, Regions: req.Regions, Disabled: req.Enabled != nil && !*req.Enabled}
	var out modelJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		m, err := q.Models().Create(r.Context(), nm)
		if err != nil {
			return err
		}
		out = toModel(m)
		return s.audit(r.Context(), q, "model.create", "model_mapping", m.ID.String(), nil, out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListModels(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, noFilter, wholeList(func(ctx context.Context, _ struct{}) ([]store.ModelMapping, error) {
		return s.st.Models().List(ctx)
	}), toModel)
}

func (s *Server) handleGetModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	m, err := s.st.Models().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toModel(m))
}

type patchModelRequest struct {
	AnthropicModelID optional[string]            `json:"anthropic_model_id"`
	Aliases          optional[[]string]          `json:"aliases"`
	Family           optional[string]            `json:"family"`
	BedrockModelID   optional[string]            `json:"bedrock_model_id"`
	Regions          optional[map[string]string] `json:"regions"`
	Enabled          optional[bool]              `json:"enabled"`
}

func (s *Server) handlePatchModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req patchModelRequest
	if !s.decode(w, r, &req) {
		return
	}
	var (
		errs []fieldError
		p    store.ModelMappingPatch
	)
	str := func(field string, o optional[string], dst *store.Optional[string]) {
		if !o.Set {
			return
		}
		if o.Null {
			errs = append(errs, fieldError{Field: field, Message: "cannot be null"})
			return
		}
		checkModelID(field, o.Value, &errs)
		*dst = store.Some(o.Value)
	}
	str("anthropic_model_id", req.AnthropicModelID, &p.AnthropicModelID)
	str("family", req.Family, &p.Family)
	str("bedrock_model_id", req.BedrockModelID, &p.BedrockModelID)
	if req.Aliases.Set {
		checkAliases(req.Aliases.Value, &errs)
		p.Aliases = store.Some(req.Aliases.Value)
	}
	if req.Regions.Set {
		checkRegions(req.Regions.Value, &errs)
		p.Regions = store.Some(req.Regions.Value)
	}
	if req.Enabled.Set {
		if req.Enabled.Null {
			errs = append(errs, fieldError{Field: "enabled", Message: "cannot be null"})
		}
		p.Enabled = store.Some(req.Enabled.Value)
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	var out modelJSON
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Models().Get(r.Context(), id)
		if err != nil {
			return err
		}
		m, err := q.Models().Update(r.Context(), id, p)
		if err != nil {
			return err
		}
		out = toModel(m)
		return s.audit(r.Context(), q, "model.update", "model_mapping", id.String(), toModel(before), out)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteModel(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		before, err := q.Models().Get(r.Context(), id)
		if err != nil {
			return err
		}
		if err := q.Models().Delete(r.Context(), id); err != nil {
			return err
		}
		return s.audit(r.Context(), q, "model.delete", "model_mapping", id.String(), toModel(before), nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
