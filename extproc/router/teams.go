package router

import (
	"context"
	"log/slog"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
)

// A team's model allow-list (accesskey.Identity.AllowedModels) is enforced
// here, before any routing: a Messages or count_tokens request, or a
// Claude Code Bedrock-mode request, for a model not on it is answered
// locally and reaches no upstream, and GET /v1/models lists only the
// allowed models (so Claude Code's /model offers what will be served).

// runtimeConfig is the runtime configuration in force, nil without one (no
// Bedrock configuration, or none received yet).
func (r *Router) runtimeConfig() *runtimeconfig.Config {
	if b := r.bedrock; b != nil && b.Runtime != nil {
		return b.Runtime.Current()
	}
	return nil
}

// modelAllowed reports whether model is on the allow-list allowed (nil
// allows every model). Names match as the model catalog resolves them:
// exactly, after removing a context-window selector such as "[1m]", or
// through the catalog (an alias such as claude-sonnet-4-5 allows its
// mapping's id claude-sonnet-4-5-20250929 and every other alias of it, and
// the other way round). Without a catalog entry, an alias allows the ids
// that are the alias followed by a -YYYYMMDD date.
func modelAllowed(cfg *runtimeconfig.Config, allowed []string, model string) bool {
	if allowed == nil {
		return true
	}
	name := runtimeconfig.StripContextSuffix(model)
	if name == "" {
		return false
	}
	canon := func(n string) string {
		if cfg != nil {
			if id, ok := cfg.CanonicalID(n); ok {
				return id
			}
		}
		return n
	}
	want := canon(name)
	for _, a := range allowed {
		if a == name || canon(a) == want || isDatedID(name, a) {
			return true
		}
	}
	return false
}

// isDatedID reports whether id is alias followed by "-YYYYMMDD".
func isDatedID(id, alias string) bool {
	rest, ok := strings.CutPrefix(id, alias+"-")
	return ok && len(rest) == 8 && isDigits(rest)
}

// checkModel refuses a request whose model the team does not allow; nil
// lets it through. The status is 400 invalid_request_error: the request
// names a model this developer may not use, which only a different
// request fixes. A 403 permission_error would say the credential lacks a
// permission, which Claude Code treats as an authentication problem, and
// 404 would suggest the model does not exist. The message names the
// allowed models so that the developer can pick one with /model.
func (p *Processor) checkModel(ctx context.Context, model string) *extprocv3.ProcessingResponse {
	id := p.req.identity
	if modelAllowed(p.r.runtimeConfig(), id.AllowedModels, model) {
		return nil
	}
	p.r.metrics.request(OutcomeModelNotAllowed)
	p.logger().LogAttrs(ctx, slog.LevelInfo, "model not allowed for the team",
		slog.String("model", boundedModel(model)), slog.String("team", id.TeamName))
	return immediate(400, apierror.InvalidRequest, modelRefusal(model, id.TeamName, id.AllowedModels), "ccproxy_model_not_allowed")
}

// modelRefusal is the refusal's message.
func modelRefusal(model, team string, allowed []string) string {
	who := "your team"
	if team != "" {
		who += " (" + team + ")"
	}
	if model == "" {
		return "ccproxy: the request names no model; " + who + " allows only: " + strings.Join(allowed, ", ")
	}
	return "ccproxy: model " + boundedModel(model) + " is not allowed for " + who + "; allowed models: " + strings.Join(allowed, ", ")
}

// boundedModel keeps a client-chosen model name short in messages and logs.
func boundedModel(m string) string {
	if len(m) > 100 {
		m = m[:100] + "…"
	}
	return strings.ToValidUTF8(m, "\uFFFD")
}

// checkBedrockModel applies the allow-list to a Claude Code Bedrock-mode
// request, whose model is a Bedrock model or inference-profile id in the
// path: it is matched under the Anthropic id the catalog maps it to. The
// refusal is in Bedrock's format, as 403 AccessDeniedException: what
// Bedrock answers for a model the caller may not invoke.
func (p *Processor) checkBedrockModel(ctx context.Context) *extprocv3.ProcessingResponse {
	id := p.req.identity
	if id.AllowedModels == nil {
		return nil
	}
	cfg := p.r.runtimeConfig()
	model := p.req.bedrock.model
	if cfg != nil {
		if a := cfg.AnthropicIDFor(model); a != "" {
			model = a
		}
	}
	if modelAllowed(cfg, id.AllowedModels, model) {
		return nil
	}
	p.r.metrics.request(OutcomeModelNotAllowed)
	p.logger().LogAttrs(ctx, slog.LevelInfo, "model not allowed for the team",
		slog.String("model", boundedModel(p.req.bedrock.model)), slog.String("team", id.TeamName))
	return bedrockImmediate(403, modelRefusal(p.req.bedrock.model, id.TeamName, id.AllowedModels))
}
