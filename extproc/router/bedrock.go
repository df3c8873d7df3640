package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/translate/bedrock"
	"github.com/ccproxy/ccproxy/extproc/translate/eventstream"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// bedrockModePrefix starts the paths of Claude Code's own Bedrock mode
// (ANTHROPIC_BEDROCK_BASE_URL=<gateway>/ak/<key>/bedrock): the AWS SDK
// appends Bedrock's own paths to it.
const bedrockModePrefix = "/bedrock/"

// BedrockConfig is what the router needs to serve Bedrock routes.
type BedrockConfig struct {
	// Runtime supplies the control plane's runtime configuration (model
	// mappings, allow-lists, regions with a route). Required.
	Runtime runtimeconfig.Source
	// Credentials checks that a user's Bedrock credential can be applied
	// (an API key decrypts; the AWS chain gives credentials), before the
	// request is routed. Required.
	Credentials CredentialChecker
	// Requests receives what the upstream processor needs. Required.
	Requests *handoff.Store
	// Budgets checks monthly Bedrock budgets; nil checks none (users
	// without a budget are never checked).
	Budgets BudgetChecker
	// Breaker is the per-access-key Plan circuit breaker consulted before a
	// plan_first request is routed; nil means always closed.
	Breaker Breaker
}

// BudgetChecker is implemented by budget.Checker.
type BudgetChecker interface {
	Check(ctx context.Context, userID uuid.UUID, budget decimal.Decimal) (budget.Status, error)
}

// CredentialChecker is implemented by bedrockauth.Signer.
type CredentialChecker interface {
	Check(ctx context.Context, cred bedrockauth.Credential) error
}

// bedrockKind says how a Bedrock-routed request is translated.
type bedrockKind uint8

const (
	bedrockNone        bedrockKind = iota
	bedrockMessages                // Anthropic /v1/messages → InvokeModel
	bedrockCountTokens             // Anthropic count_tokens → CountTokens
	bedrockPassthrough             // Claude Code's Bedrock mode: forwarded as sent
)

// Bedrock refusal reasons (label "reason" of
// ccproxy_extproc_bedrock_refusals_total).
const (
	refuseNotConfigured = "not_configured"
	refuseNoRuntime     = "no_runtime_config"
	refuseNoCredential  = "no_credential"
	refuseNoRegion      = "region_not_routed"
	refuseCredential    = "credential_unusable"
	refuseModel         = "unmappable_model"
	refuseBody          = "invalid_body"
	refusePlanOnly      = "plan_only"
	refusePath          = "unsupported_path"
	refuseBudget        = "over_budget"
)

// bedrockPath is a parsed Bedrock-mode path (after the /bedrock prefix).
type bedrockPath struct {
	upstream string // the path sent to Bedrock, still escaped, with the query
	model    string // decoded model id
	op       string // invoke, invoke-with-response-stream, count-tokens
}

// parseBedrockPath recognises /model/{id}/{op}; id is one escaped segment.
func parseBedrockPath(rest []byte) (bedrockPath, bool) {
	p := string(rest[len(bedrockModePrefix)-1:]) // keep the leading "/"
	pathOnly, _, _ := strings.Cut(p, "?")
	seg := strings.Split(pathOnly, "/")
	if len(seg) != 4 || seg[0] != "" || seg[1] != "model" || seg[2] == "" {
		return bedrockPath{}, false
	}
	switch seg[3] {
	case "invoke", "invoke-with-response-stream", "count-tokens":
	default:
		return bedrockPath{}, false
	}
	model, err := url.PathUnescape(seg[2])
	if err != nil || model == "" {
		return bedrockPath{}, false
	}
	return bedrockPath{upstream: p, model: model, op: seg[3]}, true
}

// wantsBedrock reports whether the request goes to Bedrock.
func (p *Processor) wantsBedrock() bool {
	switch p.kind {
	case pathBedrockModel:
		return true
	case pathMessages, pathCountTokens:
		return p.identity.RoutingStrategy == accesskey.RoutingBedrockOnly
	}
	return false
}

// routeBedrock decides everything about a Bedrock-bound request: it either
// refuses it (the returned response is an ImmediateResponse) or stores the
// rewritten request for the upstream processor and sets the route in
// common (and returns nil).
func (p *Processor) routeBedrock(ctx context.Context, body []byte, common *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	bc := p.r.bedrock
	if bc == nil {
		return p.refuseBedrock(ctx, refuseNotConfigured, 503, "ccproxy: this gateway has no Bedrock configuration; ask the gateway administrator", nil)
	}
	cfg := bc.Runtime.Current()
	if cfg == nil {
		return p.refuseBedrock(ctx, refuseNoRuntime, 503, "ccproxy: the gateway has not received its Bedrock configuration from the control plane yet; try again shortly", nil)
	}
	c := p.identity.Bedrock
	if c == nil {
		return p.refuseBedrock(ctx, refuseNoCredential, 500, "ccproxy: no Bedrock credential is registered for your account; ask the gateway administrator to add one", nil)
	}
	if !cfg.HasRegion(c.Region) {
		return p.refuseBedrock(ctx, refuseNoRegion, 503, "ccproxy: the gateway has no Bedrock route for region "+c.Region+" yet; try again shortly", nil)
	}
	if st, over := p.budgetSpent(ctx); over {
		return p.refuseBudget(ctx, st)
	}
	r, bf := p.prepareBedrock(ctx, body, cfg)
	if bf != nil {
		return p.refuseBedrock(ctx, bf.reason, bf.code, bf.msg, bf.cause)
	}
	p.handOff(common, r, dataplane.BedrockRoutePrefix+c.Region)
	return nil
}

// handOff stores r for the upstream processor and routes the request to
// route with the handoff header.
func (p *Processor) handOff(common *extprocv3.CommonResponse, r *handoff.Request, route string) {
	id := p.r.bedrock.Requests.Put(r)
	p.handoffID = id
	p.handoffReq = r
	p.setRoute(common, route)
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setHeader(dataplane.StateHeader, []byte(id)))
}

// bedrockFailure is why a request cannot be sent to Bedrock: a refusal for
// a Bedrock-bound request, the reason Plan gets it alone for a plan_first
// one.
type bedrockFailure struct {
	reason string
	code   int
	msg    string
	cause  error
}

// prepareBedrock checks the user's credential and translates the request
// for Bedrock. It sets p.bedrockKind and p.backendModel (the Bedrock
// translation of the request; a plan_first request only uses them if
// Bedrock answers) and returns the request for the upstream processor.
func (p *Processor) prepareBedrock(ctx context.Context, body []byte, cfg *runtimeconfig.Config) (*handoff.Request, *bedrockFailure) {
	c := p.identity.Bedrock
	cred := bedrockauth.Credential{ID: c.ID, UserID: p.identity.UserID, Kind: c.Kind, Region: c.Region, SecretCiphertext: c.SecretCiphertext}
	if err := p.r.bedrock.Credentials.Check(ctx, cred); err != nil {
		p.r.log.LogAttrs(ctx, slog.LevelError, "bedrock credential unusable",
			slog.String("request_id", p.requestID), slog.String("credential_id", c.ID.String()),
			slog.String("credential_kind", c.Kind), slog.Any("error", err))
		return nil, &bedrockFailure{refuseCredential, 500, "ccproxy: the gateway's Bedrock credential for your account cannot be used; ask the gateway administrator to check it", err}
	}

	r := &handoff.Request{
		RequestID:     p.requestID,
		Method:        "POST",
		Credential:    cred,
		RemoveHeaders: p.clientCredentialHeaders,
	}
	switch p.kind {
	case pathBedrockModel:
		p.bedrockKind = bedrockPassthrough
		r.Path = p.bedrockPath.upstream
		r.Body = body
		p.backendModel = p.bedrockPath.model
		p.fields.model = cfg.AnthropicIDFor(p.bedrockPath.model)
		if p.fields.model == "" {
			p.fields.model = truncate(p.bedrockPath.model, maxModelLen)
		}
		p.fields.stream = p.bedrockPath.op == "invoke-with-response-stream"
	case pathMessages, pathCountTokens:
		m, err := cfg.ResolveModel(p.fields.model, c.Region)
		if err != nil {
			return nil, &bedrockFailure{refuseModel, 400, "ccproxy: model " + strconv.Quote(p.fields.model) + " is not available on Bedrock for region " + c.Region + "; choose another model or ask the gateway administrator to map it", nil}
		}
		if m.Guessed {
			p.r.metrics.bedrockGuessed.Inc()
			p.r.log.LogAttrs(ctx, slog.LevelWarn, "bedrock model id guessed by the profile rule (no mapping)",
				slog.String("request_id", p.requestID), slog.String("model", p.fields.model), slog.String("bedrock_model", m.InvokeID))
		}
		r.RemoveHeaders = append(r.RemoveHeaders, p.anthropicHeaders...)
		invalid := &bedrockFailure{refuseBody, 400, "ccproxy: the request body is not a valid JSON object", nil}
		if p.kind == pathMessages {
			tr, err := cfg.Translator.TranslateRequest(body, p.betaHeader, p.fields.stream, m.InvokeID)
			if err != nil {
				return nil, invalid
			}
			p.noteDrops(ctx, tr)
			p.bedrockKind = bedrockMessages
			p.backendModel = m.InvokeID
			r.Path, r.Body = tr.Path, tr.Body
			accept := "application/json"
			if p.fields.stream {
				accept = "application/vnd.amazon.eventstream"
			}
			r.SetHeaders = []bedrockauth.Header{{Name: "content-type", Value: "application/json"}, {Name: "accept", Value: accept}}
		} else {
			tr, err := cfg.Translator.TranslateRequest(body, p.betaHeader, false, m.BaseID)
			if err != nil {
				return nil, invalid
			}
			p.noteDrops(ctx, tr)
			p.bedrockKind = bedrockCountTokens
			p.backendModel = m.BaseID
			r.Path = strings.TrimSuffix(tr.Path, "/invoke") + "/count-tokens"
			r.Body = countTokensBody(tr.Body)
			r.SetHeaders = []bedrockauth.Header{{Name: "content-type", Value: "application/json"}, {Name: "accept", Value: "application/json"}}
		}
		r.ReplaceBody = true
	}
	return r, nil
}

// budgetSpent reports whether the user's monthly Bedrock budget is spent.
// When the spend cannot be learned at all it fails open (extproc/budget
// explains why), logging and counting the request.
func (p *Processor) budgetSpent(ctx context.Context) (budget.Status, bool) {
	b := p.identity.MonthlyBudgetUSD
	if b == nil || p.r.bedrock.Budgets == nil {
		return budget.Status{}, false
	}
	st, err := p.r.bedrock.Budgets.Check(ctx, p.identity.UserID, *b)
	if err != nil {
		if ctx.Err() != nil {
			return budget.Status{}, false // the request is going away anyway
		}
		p.r.metrics.budgetUnchecked.Inc()
		p.r.log.LogAttrs(ctx, slog.LevelWarn, "budget unknown: serving the request (fail open)",
			slog.String("request_id", p.requestID), slog.String("user_id", p.identity.UserID.String()), slog.Any("error", err))
		return budget.Status{}, false
	}
	return st, st.Over
}

// refuseBudget refuses a Bedrock-bound request of a user whose monthly
// Bedrock budget is spent: 429 rate_limit_error with retry-after to the
// reset (Claude Code must not retry: x-should-retry false).
func (p *Processor) refuseBudget(ctx context.Context, st budget.Status) *extprocv3.ProcessingResponse {
	retryAfter := int64(math.Ceil(st.ResetAt.Sub(p.r.now()).Seconds()))
	retryAfter = max(retryAfter, 1)
	msg := fmt.Sprintf("ccproxy: your monthly Bedrock budget of $%s is used up ($%s spent); it resets at %s",
		st.Budget.StringFixed(2), st.Spent.StringFixed(2), st.ResetAt.UTC().Format(time.RFC3339))
	resp := p.refuseBedrock(ctx, refuseBudget, 429, msg, nil)
	ir := resp.GetImmediateResponse()
	ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, setHeader("retry-after", []byte(strconv.FormatInt(retryAfter, 10))))
	return resp
}

// countTokensBody wraps an InvokeModel body for Bedrock's CountTokens API,
// adding the max_tokens InvokeModel requires and count_tokens requests lack.
func countTokensBody(invoke []byte) []byte {
	hasMax := false
	it := jsonscan.Object(invoke)
	for k, _, ok := it.Next(); ok; k, _, ok = it.Next() {
		if jsonscan.KeyIs(k, "max_tokens") {
			hasMax = true
			break
		}
	}
	if !hasMax {
		i := bytes.LastIndexByte(invoke, '}')
		withMax := make([]byte, 0, len(invoke)+16)
		withMax = append(withMax, invoke[:i]...)
		withMax = append(withMax, `,"max_tokens":1}`...)
		invoke = withMax
	}
	var wrapped struct {
		Input struct {
			InvokeModel struct {
				Body []byte `json:"body"` // base64, as Bedrock wants
			} `json:"invokeModel"`
		} `json:"input"`
	}
	wrapped.Input.InvokeModel.Body = invoke
	b, _ := json.Marshal(wrapped) // cannot fail for this type
	return b
}

// noteDrops counts and logs what the allow-lists removed.
func (p *Processor) noteDrops(ctx context.Context, tr bedrock.Request) {
	if len(tr.DroppedBetas) == 0 && len(tr.DroppedFields) == 0 {
		return
	}
	p.r.metrics.bedrockDroppedBetas.Add(float64(len(tr.DroppedBetas)))
	p.r.metrics.bedrockDroppedFields.Add(float64(len(tr.DroppedFields)))
	// Names are logged, not used as metric labels: clients choose them.
	p.r.log.LogAttrs(ctx, slog.LevelInfo, "bedrock translation dropped what Bedrock would reject",
		slog.String("request_id", p.requestID),
		slog.Any("dropped_betas", capList(tr.DroppedBetas)),
		slog.Any("dropped_fields", capList(tr.DroppedFields)))
}

func capList(s []string) []string {
	const max = 16
	if len(s) > max {
		return s[:max]
	}
	return s
}

// refuseBedrock answers a Bedrock-bound request the gateway cannot serve,
// in Anthropic error JSON, or in Bedrock's own format for Claude Code's
// Bedrock mode (whose AWS SDK parses that). cause is only logged.
func (p *Processor) refuseBedrock(ctx context.Context, reason string, code int, msg string, cause error) *extprocv3.ProcessingResponse {
	p.r.metrics.bedrockRefusals.WithLabelValues(reason).Inc()
	p.r.metrics.request(OutcomeBedrockRefused)
	attrs := []slog.Attr{slog.String("request_id", p.requestID), slog.String("reason", reason), slog.Int("status", code)}
	if cause != nil {
		attrs = append(attrs, slog.Any("error", cause))
	}
	p.r.log.LogAttrs(ctx, slog.LevelWarn, "bedrock request refused", attrs...)
	p.forward = false
	if p.kind == pathBedrockModel || p.kind == pathBedrockOther {
		return bedrockImmediate(code, msg)
	}
	var typ string
	switch code {
	case 400:
		typ = apierror.InvalidRequest
	case 403:
		typ = apierror.Permission
	case 404:
		typ = apierror.NotFound
	case 429:
		// Only a spent budget: immediate adds x-should-retry: false, as for
		// every gateway 4xx, so Claude Code reports it at once.
		typ = apierror.RateLimit
	default:
		typ = apierror.API
	}
	resp := immediate(code, typ, msg, "ccproxy_bedrock_"+reason)
	if code == 500 {
		// An administrator must act first; retrying only delays the message.
		ir := resp.GetImmediateResponse()
		ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, setHeader("x-should-retry", []byte("false")))
	}
	return resp
}

// bedrockImmediate is a refusal in Bedrock's REST error format: the
// exception type in x-amzn-ErrorType and {"message": …} as the body, which
// the AWS SDK in Claude Code's Bedrock mode turns into a readable error.
func bedrockImmediate(code int, msg string) *extprocv3.ProcessingResponse {
	typ := "InternalServerException"
	switch code {
	case 400:
		typ = "ValidationException"
	case 401, 403:
		typ = "AccessDeniedException"
	case 404:
		typ = "ResourceNotFoundException"
	case 429:
		// A spent budget; unlike ThrottlingException the AWS SDK does not
		// retry it.
		typ = "ServiceQuotaExceededException"
	case 503:
		typ = "ServiceUnavailableException"
	}
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Body:   body,
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-type", []byte("application/json")),
			setHeader("x-amzn-errortype", []byte(typ)),
		}},
		Details: "ccproxy_bedrock_refused",
	}}}
}

// inferenceProfiles answers Claude Code's Bedrock-mode
// GET /bedrock/inference-profiles (ListInferenceProfiles) from the model
// mappings for the user's region, so that it can pick a model without a
// call to the Bedrock control plane, which the gateway does not proxy.
func (p *Processor) inferenceProfiles(ctx context.Context) *extprocv3.ProcessingResponse {
	bc := p.r.bedrock
	var cfg *runtimeconfig.Config
	if bc != nil {
		cfg = bc.Runtime.Current()
	}
	if cfg == nil {
		return p.refuseBedrock(ctx, refuseNoRuntime, 503, "ccproxy: the gateway has not received its Bedrock configuration yet; try again shortly", nil)
	}
	region := ""
	if c := p.identity.Bedrock; c != nil {
		region = c.Region
	}
	type modelRef struct {
		ModelArn string `json:"modelArn"`
	}
	type profile struct {
		InferenceProfileName string     `json:"inferenceProfileName"`
		InferenceProfileID   string     `json:"inferenceProfileId"`
		InferenceProfileArn  string     `json:"inferenceProfileArn"`
		Description          string     `json:"description"`
		Models               []modelRef `json:"models"`
		Status               string     `json:"status"`
		Type                 string     `json:"type"`
	}
	out := struct {
		InferenceProfileSummaries []profile `json:"inferenceProfileSummaries"`
	}{InferenceProfileSummaries: []profile{}}
	for _, m := range cfg.Models() {
		id := m.InvokeIDFor(region)
		if id == "" || id == m.BaseID {
			continue // not a profile
		}
		out.InferenceProfileSummaries = append(out.InferenceProfileSummaries, profile{
			InferenceProfileName: m.AnthropicID,
			InferenceProfileID:   id,
			InferenceProfileArn:  "arn:aws:bedrock:" + region + "::inference-profile/" + id,
			Description:          "ccproxy mapping of " + m.AnthropicID,
			Models:               []modelRef{{ModelArn: "arn:aws:bedrock:" + region + "::foundation-model/" + m.BaseID}},
			Status:               "ACTIVE",
			Type:                 "SYSTEM_DEFINED",
		})
	}
	body, _ := json.Marshal(out)
	p.r.metrics.request(OutcomeModels)
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
		Body:    body,
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", []byte("application/json"))}},
		Details: "ccproxy_inference_profiles",
	}}}
}

// bedrockResponseHeaders handles the response headers of a Bedrock-routed
// request. resp is the reply being built.
func (p *Processor) bedrockResponseHeaders(resp *extprocv3.ProcessingResponse, ct, errType []byte) {
	p.amznErrorType = string(errType)
	common := resp.GetResponseHeaders().GetResponse()
	if p.status != 200 {
		if p.status == 403 && isCredentialError(string(errType)) {
			p.credentialRejected(string(errType))
		}
		return // BUFFERED: mapped in the body phase (translated kinds only)
	}
	if !isAmazonEventStream(ct) {
		return
	}
	p.bedrockStream = true
	resp.ModeOverride = streamedResponseMode()
	p.conv = eventstream.NewConverter()
	if p.bedrockKind == bedrockPassthrough {
		return // Claude Code's Bedrock mode checks the event-stream content type
	}
	common.HeaderMutation = &extprocv3.HeaderMutation{
		SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-type", []byte("text/event-stream; charset=utf-8")),
			setHeader("cache-control", []byte("no-cache")),
		},
		// The SSE is longer than the event stream; Envoy removes the length
		// in STREAMED mode anyway (ext_proc.cc), this states it.
		RemoveHeaders: []string{"content-length", "x-amzn-bedrock-content-type"},
	}
}

func isAmazonEventStream(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte("application/vnd.amazon.eventstream"))
}

func isCredentialError(t string) bool {
	if i := strings.IndexByte(t, ':'); i >= 0 {
		t = t[:i]
	}
	switch t {
	case "UnrecognizedClientException", "AccessDeniedException", "InvalidSignatureException", "ExpiredTokenException":
		return true
	}
	return false
}

func (p *Processor) credentialRejected(errType string) {
	p.r.metrics.bedrockCredentialRejected.Inc()
	var cred string
	if c := p.identity.Bedrock; c != nil {
		cred = c.ID.String()
	}
	p.r.log.LogAttrs(context.Background(), slog.LevelError, "Bedrock rejected the gateway's credential: the administrator must fix it",
		slog.String("request_id", p.requestID), slog.String("credential_id", cred), slog.String("bedrock_error", errType))
}

// bedrockStreamChunk converts (or, for pass-through, only reads) one chunk
// of a Bedrock event stream.
func (p *Processor) bedrockStreamChunk(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	out, _ := p.conv.Write(p.sseBuf[:0], b.GetBody())
	if b.GetEndOfStream() {
		out, _ = p.conv.Finish(out)
	}
	p.sseBuf = out[:0]
	if !p.encoded {
		p.scanner.Write(out)
		if !p.ttftSet && p.started && p.scanner.ContentStarted() {
			p.ttft, p.ttftSet = p.r.now().Sub(p.start), true
		}
	}
	if b.GetEndOfStream() {
		p.endResponse()
	}
	if p.bedrockKind == bedrockPassthrough {
		if p.bodyReply == nil {
			p.bodyReply = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
				ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
		}
		return p.bodyReply
	}
	// Exactly one reply per chunk; an empty output (a frame split across
	// chunks) empties the chunk. The reply gets its own copy: p.sseBuf is
	// reused for the next chunk, and gRPC does not promise that a message is
	// no longer read once Send returns (stats handlers may read it lazily).
	bm := &extprocv3.BodyMutation{}
	if len(out) == 0 {
		bm.Mutation = &extprocv3.BodyMutation_ClearBody{ClearBody: true}
	} else {
		bm.Mutation = &extprocv3.BodyMutation_Body{Body: bytes.Clone(out)}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: bm}}}}
}

// bedrockBufferedBody handles a BUFFERED Bedrock response body: usage of an
// /invoke answer, the CountTokens answer, and Bedrock errors mapped to
// Anthropic's. It returns nil when the body passes unchanged.
func (p *Processor) bedrockBufferedBody(ctx context.Context, body []byte) *extprocv3.CommonResponse {
	switch {
	case p.bedrockKind == bedrockPassthrough:
		if p.status == 200 && !p.encoded {
			switch p.bedrockPath.op {
			case "invoke":
				p.jsonUsage, _ = metering.FromJSON(body)
			case "count-tokens":
				var ans struct {
					InputTokens int64 `json:"inputTokens"`
				}
				if json.Unmarshal(body, &ans) == nil {
					p.counted = ans.InputTokens
				}
			}
		}
		return nil
	case p.status == 200 && p.bedrockKind == bedrockMessages:
		if !p.encoded {
			p.jsonUsage, _ = metering.FromJSON(body)
		}
		return nil
	case p.status == 200 && p.bedrockKind == bedrockCountTokens:
		var ans struct {
			InputTokens *int64 `json:"inputTokens"`
		}
		if err := json.Unmarshal(body, &ans); err != nil || ans.InputTokens == nil {
			p.r.log.LogAttrs(ctx, slog.LevelError, "unreadable Bedrock CountTokens answer",
				slog.String("request_id", p.requestID))
			return replaceBody(502, apierror.Body(apierror.API, "ccproxy: Bedrock returned an unreadable token count"))
		}
		p.counted = *ans.InputTokens
		return replaceBody(200, []byte(`{"input_tokens":`+strconv.FormatInt(*ans.InputTokens, 10)+`}`))
	case p.status != 200:
		me := bedrock.MapError(p.status, p.amznErrorType, body)
		if me.CredentialRejected && !(p.status == 403 && isCredentialError(p.amznErrorType)) {
			p.credentialRejected(me.BedrockType)
		}
		p.r.log.LogAttrs(ctx, slog.LevelInfo, "bedrock error mapped",
			slog.String("request_id", p.requestID), slog.Int("bedrock_status", p.status),
			slog.String("bedrock_type", me.BedrockType), slog.Int("status", me.Status))
		p.status = me.Status
		return replaceBody(me.Status, me.Body)
	}
	return nil
}

// replaceBody replaces a BUFFERED response: status, JSON body and its
// length (a content-length that disagrees with a mutated BUFFERED body is a
// local 500 in Envoy, PROTOCOL-NOTES.md "Envoy rules").
func replaceBody(status int, body []byte) *extprocv3.CommonResponse {
	return &extprocv3.CommonResponse{
		HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders: []*corev3.HeaderValueOption{
				setHeader(":status", []byte(strconv.Itoa(status))),
				setHeader("content-type", []byte("application/json")),
				setHeader("content-length", []byte(strconv.Itoa(len(body)))),
			},
			RemoveHeaders: []string{"x-amzn-errortype"},
		},
		BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}},
	}
}
