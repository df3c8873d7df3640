package router

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Response headers that say a budget changed the request.
const (
	// BudgetActionHeader is "downgrade" when a budget served a cheaper
	// model than the one asked for.
	BudgetActionHeader = "x-ccproxy-budget-action"
	// OriginalModelHeader is the model the client asked for.
	OriginalModelHeader = "x-ccproxy-original-model"
)

// budgetState is what the request's budgets decided (docs/budgets.md).
type budgetState struct {
	verdict budget.Verdict
	// noBedrock: a used-up plan_only budget, or a used-up block budget on
	// the Bedrock metric, withholds Bedrock: plan_first requests go to
	// Plan alone, Bedrock-bound ones are refused.
	noBedrock bool
	// recorded is the usage event's budget_action: usage.BudgetDowngrade
	// or usage.BudgetPlanOnly when the budget changed what happened.
	recorded string
	// originalModel is the model asked for, when a downgrade rewrote it.
	originalModel string
}

// applyBudgets checks the budgets that act on a Messages, count_tokens or
// Bedrock-mode request and applies the strongest used-up action
// (extproc/budget): block refuses the request (a used-up Bedrock block
// budget only withholds Bedrock, as the monthly budget does), plan_only
// withholds Bedrock, downgrade rewrites the body's model (the path's, for a
// Claude Code Bedrock-mode request). body is replaced
// by the rewritten body, and common carries it to Envoy with its length.
// A budget whose spend is unknown is skipped (fail open).
func (p *Processor) applyBudgets(ctx context.Context, body *[]byte, common *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if len(p.req.identity.Budgets) == 0 || p.r.bedrock == nil || p.r.bedrock.Budgets == nil {
		return nil
	}
	switch p.req.kind {
	case pathMessages, pathCountTokens, pathBedrockModel:
	default:
		return nil
	}
	v := p.r.bedrock.Budgets.CheckBudgets(ctx, p.req.identity.Budgets)
	if v.Unchecked > 0 {
		p.r.metrics.budgetUnchecked.Add(float64(v.Unchecked))
	}
	p.req.budget.verdict = v
	switch v.Action {
	case budget.ActionBlock:
		if v.Budget.Metric == "bedrock" {
			p.req.budget.noBedrock = true
			return nil
		}
		if p.req.kind == pathCountTokens {
			return nil // counting tokens spends nothing
		}
		return p.refuseBudgetAction(ctx)
	case budget.ActionPlanOnly:
		p.req.budget.noBedrock = true
	case budget.ActionDowngrade:
		if p.req.kind == pathBedrockModel {
			p.downgradeBedrockPath(ctx, v)
			return nil
		}
		if *body == nil {
			return nil
		}
		to, ok := p.downgradeTarget(v.Budget.Downgrade)
		if !ok || to == p.req.fields.model {
			return nil
		}
		out, ok := replaceModel(*body, to)
		if !ok {
			return nil // malformed: Anthropic answers it with its own 400
		}
		p.logger().LogAttrs(ctx, slog.LevelInfo, "budget used up: model downgraded",
			slog.String("budget_id", v.Budget.ID), slog.String("model", p.req.fields.model), slog.String("served", to))
		p.req.budget.recorded, p.req.budget.originalModel = usage.BudgetDowngrade, p.req.fields.model
		p.req.fields.model = to
		*body = out
		if common.HeaderMutation == nil {
			common.HeaderMutation = &extprocv3.HeaderMutation{}
		}
		// A BUFFERED body mutation must come with its length (docs/envoy.md).
		common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders,
			setHeader("content-length", []byte(strconv.Itoa(len(out)))))
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
	}
	return nil
}

// downgradeBedrockPath applies a downgrade to a Claude Code Bedrock-mode
// request, whose model is the path's Bedrock id: the path is rewritten to
// the target's id for the user's region (its inference profile, or its base
// id for count-tokens, as the gateway's own translation invokes it). A
// model the catalog does not map is left as asked (newBedrockMode refuses
// it), and so is a target that cannot be invoked from the region.
func (p *Processor) downgradeBedrockPath(ctx context.Context, v budget.Verdict) {
	cfg := p.r.runtimeConfig()
	if cfg == nil {
		return
	}
	asked := cfg.AnthropicIDFor(p.req.bedrock.model)
	if asked == "" {
		return
	}
	p.req.fields.model = asked // what downgradeTarget matches the map's keys against
	to, ok := p.downgradeTarget(v.Budget.Downgrade)
	if !ok {
		return
	}
	region := ""
	if p.req.identity.Bedrock != nil {
		region = p.req.identity.Bedrock.Region
	}
	target, err := cfg.ResolveModel(to, region)
	if err != nil || target.Guessed || target.AnthropicID == asked {
		return
	}
	id := target.InvokeID
	if p.req.bedrock.op == "count-tokens" {
		id = target.BaseID
	}
	p.logger().LogAttrs(ctx, slog.LevelInfo, "budget used up: model downgraded",
		slog.String("budget_id", v.Budget.ID), slog.String("model", asked), slog.String("served", target.AnthropicID))
	p.req.budget.recorded, p.req.budget.originalModel = usage.BudgetDowngrade, asked
	p.req.bedrock = bedrockPath{upstream: bedrockModePath(id, p.req.bedrock.op), model: id, op: p.req.bedrock.op}
}

// refuseBudgetAction refuses a request because of a used-up budget: 429
// rate_limit_error naming the budget, with retry-after to its reset.
func (p *Processor) refuseBudgetAction(ctx context.Context) *extprocv3.ProcessingResponse {
	v := p.req.budget.verdict
	b := v.Budget
	whose := map[string]string{"key": "this access key's", "user": "your", "team": "your team's"}[b.Scope]
	what := map[string]string{"bedrock": "Bedrock", "plan_list": "Plan (list-price)", "all": "Plan and Bedrock"}[b.Metric]
	var msg string
	if v.Action == budget.ActionBlock && b.Metric != "bedrock" {
		msg = fmt.Sprintf("ccproxy: %s %s %s budget of $%s is used up ($%s spent); requests are refused until it resets at %s",
			whose, b.Window, what, b.AmountUSD.StringFixed(2), v.Spent.StringFixed(2), v.ResetAt.UTC().Format(time.RFC3339))
	} else {
		msg = fmt.Sprintf("ccproxy: %s %s %s budget of $%s is used up ($%s spent); Bedrock is not used until it resets at %s",
			whose, b.Window, what, b.AmountUSD.StringFixed(2), v.Spent.StringFixed(2), v.ResetAt.UTC().Format(time.RFC3339))
	}
	retryAfter := max(int64(math.Ceil(v.ResetAt.Sub(p.r.now()).Seconds())), 1)
	resp := p.refuseBedrock(ctx, refuseBudget, 429, msg, nil)
	ir := resp.GetImmediateResponse()
	if ir.Headers == nil {
		ir.Headers = &extprocv3.HeaderMutation{}
	}
	ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, setHeader("retry-after", []byte(strconv.FormatInt(retryAfter, 10))))
	return resp
}

// budgetHeaders adds the downgrade headers to the response.
func (p *Processor) budgetHeaders(resp *extprocv3.ProcessingResponse) {
	if p.req.budget.recorded != usage.BudgetDowngrade {
		return
	}
	common := resp.GetResponseHeaders().GetResponse()
	if common == nil {
		return
	}
	if common.HeaderMutation == nil {
		common.HeaderMutation = &extprocv3.HeaderMutation{}
	}
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders,
		&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: BudgetActionHeader, RawValue: []byte(usage.BudgetDowngrade)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: OriginalModelHeader, RawValue: []byte(p.req.budget.originalModel)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
}

// downgradeTarget finds the model to serve instead of the requested one.
// A downgrade map's keys are model ids, aliases or families ("opus"):
// the requested model matches a key equal to it, to it without a
// context-window suffix ("[1m]"), to the canonical id it resolves to in the
// runtime configuration, or to its family (the word after "claude-").
func (p *Processor) downgradeTarget(m map[string]string) (string, bool) {
	model := p.req.fields.model
	if model == "" || len(m) == 0 {
		return "", false
	}
	cands := []string{model, runtimeconfig.StripContextSuffix(model)}
	var cfg *runtimeconfig.Config
	if p.r.bedrock != nil && p.r.bedrock.Runtime != nil {
		cfg = p.r.bedrock.Runtime.Current()
	}
	region := ""
	if p.req.identity.Bedrock != nil {
		region = p.req.identity.Bedrock.Region
	}
	canonical := func(name string) string {
		if cfg == nil {
			return ""
		}
		r, err := cfg.ResolveModel(name, region)
		if err != nil || r.Guessed {
			return ""
		}
		return r.AnthropicID
	}
	id := canonical(model)
	if id != "" {
		cands = append(cands, id)
	}
	if f := family(cands[1]); f != "" {
		cands = append(cands, f)
	}
	for _, c := range cands {
		if to, ok := m[c]; ok {
			return to, true
		}
	}
	if id != "" {
		for k, to := range m {
			if canonical(k) == id {
				return to, true
			}
		}
	}
	return "", false
}

// family is the model family of a Claude model id: claude-opus-4-1 →
// opus; "" for other names.
func family(model string) string {
	rest, ok := strings.CutPrefix(model, "claude-")
	if !ok {
		return ""
	}
	f, _, _ := strings.Cut(rest, "-")
	for _, c := range f {
		if c < 'a' || c > 'z' {
			return ""
		}
	}
	return f
}

// replaceModel returns body with its top-level "model" (the last one, as
// for scanRequest) set to model; false when body is not a JSON object with
// a model.
func replaceModel(body []byte, model string) ([]byte, bool) {
	it := jsonscan.StrictObject(body)
	found := false
	var last jsonscan.Member
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if string(jsonscan.KeyName(m.Key(body))) == "model" {
			last, found = m, true
		}
	}
	if it.Err() != nil || !found {
		return nil, false
	}
	q, _ := json.Marshal(model) // a string cannot fail
	out := make([]byte, 0, len(body)-(last.ValueEnd-last.ValueStart)+len(q))
	out = append(out, body[:last.ValueStart]...)
	out = append(out, q...)
	return append(out, body[last.ValueEnd:]...), true
}
