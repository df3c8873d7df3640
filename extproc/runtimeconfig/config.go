// Package runtimeconfig owns extproc's view of the runtime configuration the
// control plane serves over xDS: the Bedrock model mapping table, the regions
// that have a Bedrock cluster, the anthropic-beta and body-field allow-lists
// (compiled into a bedrock.Translator), the profile-rule fallback flag and the
// rate card (a pricing.Card).
//
// extproc holds no database credentials; the control plane reads these tables
// from Postgres and serves them as the ECDS resource "ccproxy.bedrock" (a
// TypedExtensionConfig wrapping runtimev1.BedrockConfig) in its ADS snapshot.
// Client subscribes to that resource, validates each version with FromProto,
// ACKs or NACKs it and publishes the accepted Config atomically. A Config is
// immutable; request handling reads the current one through a Source.
package runtimeconfig

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ccproxy/ccproxy/extproc/translate/bedrock"
	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	"github.com/ccproxy/ccproxy/internal/pricing"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// ErrUnmappable is matched (errors.Is) by the error ResolveModel returns
// when a model cannot be invoked on Bedrock from a region.
var ErrUnmappable = errors.New("model not available on Bedrock")

// UnmappableError names the model and region ResolveModel could not map.
// It matches ErrUnmappable.
type UnmappableError struct {
	Model  string // the model name as requested
	Region string // the source region
	Reason string // why, for the error message
}

func (e *UnmappableError) Error() string {
	return fmt.Sprintf("model %q is not available on Bedrock from region %q: %s", e.Model, e.Region, e.Reason)
}

// Is reports whether target is ErrUnmappable.
func (e *UnmappableError) Is(target error) bool { return target == ErrUnmappable }

// Model is the outcome of ResolveModel.
type Model struct {
	// AnthropicID is the canonical Anthropic id (an alias resolves to its
	// model's id); for a guess, the requested name without any suffix.
	AnthropicID string
	// InvokeID is the Bedrock model id to invoke: usually an inference
	// profile such as us.anthropic.claude-sonnet-4-5-20250929-v1:0.
	InvokeID string
	// BaseID is the base Bedrock model id (what CountTokens takes).
	BaseID string
	// Guessed is true when InvokeID was derived by the profile rule rather
	// than taken from the mapping table: it may not exist on Bedrock, and
	// its use should be logged and counted.
	Guessed bool
}

// ModelInfo describes one mapped model, for listings.
type ModelInfo struct {
	AnthropicID string
	Aliases     []string
	Family      string
	// BaseID is the base Bedrock model id.
	BaseID string
	// InvokeIDs maps a source region to the model id invoked from it; the
	// key "" applies to regions without their own entry.
	InvokeIDs map[string]string
}

// Config is one accepted version of the runtime configuration. It is
// immutable and safe for concurrent use.
type Config struct {
	// Translator translates requests with this version's beta and field
	// tables. Read-only: it is shared by every request using the Config.
	Translator *bedrock.Translator

	models    []modelEntry
	byName    map[string]*modelEntry // canonical ids and aliases
	byBedrock map[string]string      // base and invoke ids → Anthropic id
	regions   map[string]struct{}
	// fallbackRegions have a plan+bedrock-<region> cluster and route.
	fallbackRegions map[string]struct{}
	fallback        bool
	prices          *pricing.Card
	version         string
}

type modelEntry struct {
	id        string
	aliases   []string
	family    string
	baseID    string
	invokeIDs map[string]string
}

// profileFor is store.ModelMapping.ProfileFor: the region's own entry, else
// the "" entry.
func (m *modelEntry) profileFor(region string) (string, bool) {
	if id, ok := m.invokeIDs[region]; ok {
		return id, true
	}
	id, ok := m.invokeIDs[""]
	return id, ok
}

// FromProto validates pb and builds a Config from it. Beta and field tables
// the proto leaves empty fall back to bedrockpolicy.DefaultBetaTable and
// bedrockpolicy.DefaultFieldTable. The returned Config has an empty Version.
func FromProto(pb *runtimev1.BedrockConfig) (*Config, error) {
	if pb == nil {
		return nil, errors.New("runtimeconfig: nil BedrockConfig")
	}
	c := &Config{
		models:          make([]modelEntry, 0, len(pb.GetModels())),
		byName:          make(map[string]*modelEntry),
		byBedrock:       make(map[string]string),
		regions:         make(map[string]struct{}, len(pb.GetRegions())),
		fallbackRegions: make(map[string]struct{}, len(pb.GetFallbackRegions())),
		fallback:        pb.GetProfileRuleFallback(),
	}
	for _, r := range pb.GetRegions() {
		if !validRegion(r) {
			return nil, fmt.Errorf("runtimeconfig: regions: invalid region %q", r)
		}
		c.regions[r] = struct{}{}
	}
	for _, r := range pb.GetFallbackRegions() {
		// A fallback route ends on that region's Bedrock cluster, so the
		// region must have one.
		if _, ok := c.regions[r]; !ok {
			return nil, fmt.Errorf("runtimeconfig: fallback_regions: %q is not in regions", r)
		}
		c.fallbackRegions[r] = struct{}{}
	}

	owner := make(map[string]int) // name → index of the model that claims it
	claim := func(name string, i int) error {
		if prev, dup := owner[name]; dup {
			id := pb.GetModels()[i].GetAnthropicModelId()
			if prev == i {
				return fmt.Errorf("runtimeconfig: model %q: name %q listed twice", id, name)
			}
			return fmt.Errorf("runtimeconfig: model %q: name %q is already used by model %q",
				id, name, pb.GetModels()[prev].GetAnthropicModelId())
		}
		owner[name] = i
		return nil
	}
	for i, m := range pb.GetModels() {
		id := m.GetAnthropicModelId()
		if id == "" {
			return nil, fmt.Errorf("runtimeconfig: models[%d]: empty anthropic_model_id", i)
		}
		if err := claim(id, i); err != nil {
			return nil, err
		}
		for _, a := range m.GetAliases() {
			if a == "" {
				return nil, fmt.Errorf("runtimeconfig: model %q: empty alias", id)
			}
			if err := claim(a, i); err != nil {
				return nil, err
			}
		}
		if m.GetBedrockModelId() == "" {
			return nil, fmt.Errorf("runtimeconfig: model %q: empty bedrock_model_id", id)
		}
		for region, invoke := range m.GetRegionModelIds() {
			if region != "" && !validRegion(region) {
				return nil, fmt.Errorf("runtimeconfig: model %q: region_model_ids: invalid region %q", id, region)
			}
			if invoke == "" {
				return nil, fmt.Errorf("runtimeconfig: model %q: region_model_ids[%q]: empty model id", id, region)
			}
		}
		c.models = append(c.models, modelEntry{
			id:        id,
			aliases:   slices.Clone(m.GetAliases()),
			family:    m.GetFamily(),
			baseID:    m.GetBedrockModelId(),
			invokeIDs: maps.Clone(m.GetRegionModelIds()),
		})
	}
	// c.models no longer grows: pointers into it are stable.
	for i := range c.models {
		e := &c.models[i]
		c.byName[e.id] = e
		for _, a := range e.aliases {
			c.byName[a] = e
		}
		// The first model to name a Bedrock id keeps it.
		for _, bid := range append([]string{e.baseID}, slices.Collect(maps.Values(e.invokeIDs))...) {
			if _, taken := c.byBedrock[bid]; !taken {
				c.byBedrock[bid] = e.id
			}
		}
	}

	betas, err := betaTable(pb.GetBetas())
	if err != nil {
		return nil, err
	}
	fields, err := fieldTable(pb.GetFields())
	if err != nil {
		return nil, err
	}
	c.Translator = bedrock.NewTranslator(betas, fields)
	if c.prices, err = pricing.CardFromProto(pb.GetPrices()); err != nil {
		return nil, fmt.Errorf("runtimeconfig: prices: %w", err)
	}
	return c, nil
}

// Prices is the rate card requests are priced at for their trace spans; nil
// when the control plane serves none (it reads no database).
func (c *Config) Prices() *pricing.Card { return c.prices }

func betaTable(pb *runtimev1.BetaTable) (bedrockpolicy.BetaTable, error) {
	if len(pb.GetRules()) == 0 {
		return bedrockpolicy.DefaultBetaTable(), nil
	}
	t := bedrockpolicy.BetaTable{Version: pb.GetVersion(), Rules: make([]bedrockpolicy.BetaRule, 0, len(pb.GetRules()))}
	seen := make(map[string]struct{}, len(pb.GetRules()))
	for i, r := range pb.GetRules() {
		flag := r.GetAnthropic()
		if flag == "" {
			return bedrockpolicy.BetaTable{}, fmt.Errorf("runtimeconfig: betas.rules[%d]: empty anthropic flag", i)
		}
		if _, dup := seen[flag]; dup {
			return bedrockpolicy.BetaTable{}, fmt.Errorf("runtimeconfig: betas: flag %q listed twice", flag)
		}
		seen[flag] = struct{}{}
		rule := bedrockpolicy.BetaRule{Anthropic: flag}
		switch r.GetAction() {
		case runtimev1.BetaRule_ACTION_DROP:
			rule.Action = bedrockpolicy.BetaDrop
		case runtimev1.BetaRule_ACTION_KEEP:
			rule.Action = bedrockpolicy.BetaKeep
		case runtimev1.BetaRule_ACTION_RENAME:
			if r.GetBedrock() == "" {
				return bedrockpolicy.BetaTable{}, fmt.Errorf("runtimeconfig: betas: flag %q: rename without a Bedrock name", flag)
			}
			rule.Action, rule.Bedrock = bedrockpolicy.BetaRename, r.GetBedrock()
		default:
			return bedrockpolicy.BetaTable{}, fmt.Errorf("runtimeconfig: betas: flag %q: unknown action %d", flag, r.GetAction())
		}
		t.Rules = append(t.Rules, rule)
	}
	return t, nil
}

func fieldTable(pb *runtimev1.FieldTable) (bedrockpolicy.FieldTable, error) {
	top, msg := pb.GetTopLevel(), pb.GetMessage()
	switch {
	case len(top) == 0 && len(msg) == 0:
		return bedrockpolicy.DefaultFieldTable(), nil
	case len(top) == 0:
		// An empty list would drop every member, messages included.
		return bedrockpolicy.FieldTable{}, errors.New("runtimeconfig: fields: message is set but top_level is empty")
	case len(msg) == 0:
		return bedrockpolicy.FieldTable{}, errors.New("runtimeconfig: fields: top_level is set but message is empty")
	}
	return bedrockpolicy.FieldTable{Version: pb.GetVersion(), TopLevel: slices.Clone(top), Message: slices.Clone(msg)}, nil
}

// validRegion reports whether r looks like an AWS region (the check the
// model_regions table applies): ^[a-z]{2}(-[a-z]+)+-[0-9]+$.
func validRegion(r string) bool {
	parts := strings.Split(r, "-")
	if len(parts) < 3 || len(parts[0]) != 2 || !allIn(parts[0], 'a', 'z') {
		return false
	}
	for _, p := range parts[1 : len(parts)-1] {
		if p == "" || !allIn(p, 'a', 'z') {
			return false
		}
	}
	last := parts[len(parts)-1]
	return last != "" && allIn(last, '0', '9')
}

func allIn(s string, lo, hi byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < lo || s[i] > hi {
			return false
		}
	}
	return true
}

// Version returns the xDS version the Config arrived with: "" for a Config
// not received from the control plane, or a nil Config.
func (c *Config) Version() string {
	if c == nil {
		return ""
	}
	return c.version
}

// HasRegion reports whether region has a Bedrock cluster and route.
func (c *Config) HasRegion(region string) bool {
	_, ok := c.regions[region]
	return ok
}

// HasFallback reports whether region has a plan+bedrock-<region> cluster and
// route: Plan first, falling back to the region's Bedrock by Envoy's retry.
func (c *Config) HasFallback(region string) bool {
	_, ok := c.fallbackRegions[region]
	return ok
}

// Regions returns the regions with a Bedrock cluster, sorted.
func (c *Config) Regions() []string { return slices.Sorted(maps.Keys(c.regions)) }

// ProfileRuleFallback reports whether unmapped Claude models are invoked
// through a guessed inference profile.
func (c *Config) ProfileRuleFallback() bool { return c.fallback }

// ResolveModel maps the model name of an Anthropic request to the Bedrock id
// to invoke from region. model is matched exactly against the mapping
// table's ids and aliases, after removing a trailing context-window selector
// such as "[1m]" (Claude Code's syntax, which it normally strips but has
// been seen to leak onto the wire). The invoke id is the region's own entry,
// else the "" entry. A mapped model with neither is an error: the base id is
// not invocable on demand for the newer models. An unmapped name is an
// error too unless the profile-rule fallback is on and the name looks like a
// Claude model id, in which case "<geo>.anthropic.<name>" is guessed. Errors
// match ErrUnmappable and are *UnmappableError.
func (c *Config) ResolveModel(model, region string) (Model, error) {
	e, ok := c.byName[model]
	name := model
	if !ok {
		name = StripContextSuffix(model)
		e, ok = c.byName[name]
	}
	if ok {
		id, found := e.profileFor(region)
		if !found {
			return Model{}, &UnmappableError{Model: model, Region: region,
				Reason: "the model mapping has no inference profile for the region and no default"}
		}
		return Model{AnthropicID: e.id, InvokeID: id, BaseID: e.baseID}, nil
	}
	if name == "" {
		return Model{}, &UnmappableError{Model: model, Region: region, Reason: "empty model name"}
	}
	if !c.fallback {
		return Model{}, &UnmappableError{Model: model, Region: region, Reason: "no model mapping"}
	}
	if !looksLikeClaudeID(name) {
		return Model{}, &UnmappableError{Model: model, Region: region, Reason: "no model mapping, and not a Claude model id"}
	}
	base := "anthropic." + name
	return Model{AnthropicID: name, InvokeID: GeoPrefix(region) + "." + base, BaseID: base, Guessed: true}, nil
}

// looksLikeClaudeID reports whether name is "claude-" followed by [a-z0-9.-].
func looksLikeClaudeID(name string) bool {
	const prefix = "claude-"
	if len(name) <= len(prefix) || len(name) > 200 || !strings.HasPrefix(name, prefix) {
		return false
	}
	for i := len(prefix); i < len(name); i++ {
		ch := name[i]
		if !('a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '.' || ch == '-') {
			return false
		}
	}
	return true
}

// GeoPrefix returns the cross-region inference profile prefix for a source
// region, as the seeded mapping table assigns them: us-gov-* → us-gov,
// us-* and ca-* → us, eu-* → eu, ap-northeast-1/3 → jp, ap-southeast-2/4 →
// au, other ap-* → apac, anything else → global.
func GeoPrefix(region string) string {
	switch {
	case strings.HasPrefix(region, "us-gov-"):
		return "us-gov"
	case strings.HasPrefix(region, "us-"), strings.HasPrefix(region, "ca-"):
		return "us"
	case strings.HasPrefix(region, "eu-"):
		return "eu"
	case region == "ap-northeast-1", region == "ap-northeast-3":
		return "jp"
	case region == "ap-southeast-2", region == "ap-southeast-4":
		return "au"
	case strings.HasPrefix(region, "ap-"):
		return "apac"
	}
	return "global"
}

// StripContextSuffix removes trailing bracketed selectors such as "[1m]"
// (any case, possibly repeated: "[1M][1m]") from a model name. A bracket
// group must be non-empty and hold no brackets; anything else is left alone.
func StripContextSuffix(name string) string {
	for len(name) > 0 && name[len(name)-1] == ']' {
		open := strings.LastIndexByte(name, '[')
		if open < 0 || open == len(name)-2 || strings.IndexByte(name[open+1:len(name)-1], ']') >= 0 {
			break
		}
		name = name[:open]
	}
	return name
}

// CanonicalID returns the Anthropic model id of the mapping whose id or
// alias is name, matched as ResolveModel matches (a trailing context-window
// selector removed); ok is false for a name no mapping has.
func (c *Config) CanonicalID(name string) (id string, ok bool) {
	e, ok := c.byName[name]
	if !ok {
		e, ok = c.byName[StripContextSuffix(name)]
	}
	if !ok {
		return "", false
	}
	return e.id, true
}

// AnthropicIDFor returns the Anthropic model id whose mapping names
// bedrockID as its base or an invoke id, "" if none does: Claude Code's
// Bedrock mode requests Bedrock ids, metered under Anthropic names.
func (c *Config) AnthropicIDFor(bedrockID string) string { return c.byBedrock[bedrockID] }

// InvokeIDFor is the model id m is invoked by from region: the region's
// own entry, else the "" entry, else "".
func (m ModelInfo) InvokeIDFor(region string) string {
	if id, ok := m.InvokeIDs[region]; ok {
		return id
	}
	return m.InvokeIDs[""]
}

// Models lists the mapped models in the order the control plane sent them.
// The result is a copy.
func (c *Config) Models() []ModelInfo {
	out := make([]ModelInfo, len(c.models))
	for i, e := range c.models {
		out[i] = ModelInfo{
			AnthropicID: e.id,
			Aliases:     slices.Clone(e.aliases),
			Family:      e.family,
			BaseID:      e.baseID,
			InvokeIDs:   maps.Clone(e.invokeIDs),
		}
	}
	return out
}

// Source supplies the current Config. *Client and StaticSource implement it.
type Source interface {
	// Current returns the Config in force, or nil when none has arrived.
	Current() *Config
}

// StaticSource is a Source that always returns Config: for tests,
// benchmarks and tools that run without a control plane.
type StaticSource struct{ Config *Config }

// Current returns s.Config.
func (s StaticSource) Current() *Config { return s.Config }
