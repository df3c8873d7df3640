package controlplane

import (
	"fmt"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/store"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// RuntimeBedrockName names the ExtensionConfig (resource.ExtensionConfigType) that carries
// extproc's BedrockConfig. Envoy never subscribes to it; extproc does, over ADS (SotW).
const RuntimeBedrockName = "ccproxy.bedrock"

// BetaTableProto converts an extproc beta allow-list to its runtime proto.
func BetaTableProto(t bedrockpolicy.BetaTable) *runtimev1.BetaTable {
	out := &runtimev1.BetaTable{Version: t.Version, Rules: make([]*runtimev1.BetaRule, 0, len(t.Rules))}
	for _, r := range t.Rules {
		action := runtimev1.BetaRule_ACTION_DROP
		switch r.Action {
		case bedrockpolicy.BetaKeep:
			action = runtimev1.BetaRule_ACTION_KEEP
		case bedrockpolicy.BetaRename:
			action = runtimev1.BetaRule_ACTION_RENAME
		}
		out.Rules = append(out.Rules, &runtimev1.BetaRule{Anthropic: r.Anthropic, Action: action, Bedrock: r.Bedrock})
	}
	return out
}

// FieldTableProto converts an extproc body-member allow-list to its runtime proto.
func FieldTableProto(t bedrockpolicy.FieldTable) *runtimev1.FieldTable {
	return &runtimev1.FieldTable{Version: t.Version, TopLevel: slices.Clone(t.TopLevel), Message: slices.Clone(t.Message)}
}

// ModelMappingProto converts a stored model mapping to its runtime proto.
func ModelMappingProto(m store.ModelMapping) *runtimev1.ModelMapping {
	return &runtimev1.ModelMapping{
		AnthropicModelId: m.AnthropicModelID,
		Aliases:          slices.Clone(m.Aliases),
		Family:           m.Family,
		BedrockModelId:   m.BedrockModelID,
		RegionModelIds:   maps.Clone(m.Regions),
	}
}

// PriceCardProto converts stored prices and model mappings to the rate card extproc prices
// requests with. Every mapping is listed, enabled or not: the ingester's lookup resolves a
// requested name through all of them.
func PriceCardProto(prices []store.Price, models []store.ModelMapping) *runtimev1.PriceCard {
	c := &runtimev1.PriceCard{Rows: make([]*runtimev1.PriceRow, len(prices)), Models: make([]*runtimev1.PricedModel, len(models))}
	for i, p := range prices {
		r := &runtimev1.PriceRow{
			Provider: string(p.Provider), Region: p.Region, ModelId: p.ModelID, Family: p.Family,
			Input: p.Input.String(), Output: p.Output.String(), CacheRead: p.CacheRead.String(),
			CacheWrite_5M: p.CacheWrite5m.String(), CacheWrite_1H: p.CacheWrite1h.String(),
			EffectiveFrom: timestamppb.New(p.EffectiveFrom),
		}
		if p.EffectiveTo != nil {
			r.EffectiveTo = timestamppb.New(*p.EffectiveTo)
		}
		c.Rows[i] = r
	}
	for i, m := range models {
		c.Models[i] = &runtimev1.PricedModel{AnthropicModelId: m.AnthropicModelID, Aliases: slices.Clone(m.Aliases), Family: m.Family}
	}
	return c
}

// resolveBedrockConfig completes a copy of in (nil is empty): the regions of the Bedrock and
// fallback clusters built, and the built-in beta and field tables where in has none.
func resolveBedrockConfig(in *runtimev1.BedrockConfig, endpoints, fallback []bedrockEndpoint) (*runtimev1.BedrockConfig, error) {
	c := &runtimev1.BedrockConfig{}
	if in != nil {
		c = proto.Clone(in).(*runtimev1.BedrockConfig)
	}
	c.Regions = make([]string, len(endpoints))
	for i, e := range endpoints {
		c.Regions[i] = e.region
	}
	// Computed like Regions, never taken from in: only the control plane knows which
	// plan+bedrock-<region> clusters it built. Both lists are sorted (parseBedrock).
	c.FallbackRegions = make([]string, len(fallback))
	for i, e := range fallback {
		c.FallbackRegions[i] = e.region
	}
	if len(c.GetBetas().GetRules()) == 0 {
		c.Betas = BetaTableProto(bedrockpolicy.DefaultBetaTable())
	}
	if len(c.GetFields().GetTopLevel()) == 0 {
		c.Fields = FieldTableProto(bedrockpolicy.DefaultFieldTable())
	}
	if err := checkBedrockConfig(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkBedrockConfig rejects what extproc could not use unambiguously. BedrockConfig has no
// protoc-gen-validate rules, so this is its validation.
func checkBedrockConfig(c *runtimev1.BedrockConfig) error {
	names := map[string]string{}
	for _, m := range c.GetModels() {
		if err := checkModelMapping(m); err != nil {
			return err
		}
		for _, n := range append([]string{m.GetAnthropicModelId()}, m.GetAliases()...) {
			if other, dup := names[n]; dup {
				return invalid("Bedrock model name %q used by both %s and %s", n, other, m.GetAnthropicModelId())
			}
			names[n] = m.GetAnthropicModelId()
		}
	}
	if _, err := pricing.CardFromProto(c.GetPrices()); err != nil {
		return invalid("rate card: %v", err)
	}
	if c.GetBetas().GetVersion() == "" || c.GetFields().GetVersion() == "" {
		return invalid("Bedrock beta and field tables need a version")
	}
	seen := map[string]bool{}
	for _, r := range c.GetBetas().GetRules() {
		if r.GetAnthropic() == "" || seen[r.GetAnthropic()] {
			return invalid("Bedrock beta rule %q: empty or duplicate flag", r.GetAnthropic())
		}
		seen[r.GetAnthropic()] = true
		if _, known := runtimev1.BetaRule_Action_name[int32(r.GetAction())]; !known {
			return invalid("Bedrock beta rule %q: unknown action %d", r.GetAnthropic(), r.GetAction())
		}
		if (r.GetAction() == runtimev1.BetaRule_ACTION_RENAME) != (r.GetBedrock() != "") {
			return invalid("Bedrock beta rule %q: a Bedrock name goes with ACTION_RENAME only", r.GetAnthropic())
		}
	}
	for _, f := range append(slices.Clone(c.GetFields().GetTopLevel()), c.GetFields().GetMessage()...) {
		if f == "" {
			return invalid("Bedrock field table: empty member name")
		}
	}
	return nil
}

// checkModelMapping checks one mapping; WatchDatabase uses it to skip a bad row instead of
// refusing the whole configuration.
func checkModelMapping(m *runtimev1.ModelMapping) error {
	if m.GetAnthropicModelId() == "" || m.GetBedrockModelId() == "" {
		return invalid("Bedrock model mapping %q: needs an Anthropic and a Bedrock model id", m.GetAnthropicModelId())
	}
	for region, id := range m.GetRegionModelIds() {
		if region != "" {
			if CheckRegion(region) != nil {
				return invalid("Bedrock model mapping %q: %q is not an AWS region name", m.GetAnthropicModelId(), region)
			}
		}
		if id == "" {
			return invalid("Bedrock model mapping %q: empty model id for region %q", m.GetAnthropicModelId(), region)
		}
	}
	return nil
}

// buildRuntimeConfig wraps the BedrockConfig in the ExtensionConfig extproc subscribes to.
// TypedExtensionConfig is the ECDS resource type, which go-control-plane's snapshot cache
// serves over ADS like any other; Envoy itself never asks for this name.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/overview/extension
func buildRuntimeConfig(o resolved) (*corev3.TypedExtensionConfig, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, o.runtime, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("controlplane: pack BedrockConfig: %w", err)
	}
	return &corev3.TypedExtensionConfig{Name: RuntimeBedrockName, TypedConfig: a}, nil
}
