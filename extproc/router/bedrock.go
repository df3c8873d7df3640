package router

import (
	"bytes"
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
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/translate/bedrock"
	"github.com/ccproxy/ccproxy/extproc/translate/eventstream"
	"github.com/ccproxy/ccproxy/internal/usage"
)

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
	// PreemptThreshold is the gateway's default pre-emptive failover
	// threshold (CCPROXY_PREEMPT_THRESHOLD), a Plan utilization fraction
	// in [0, 1], for users without a threshold of their own; 0 is off.
	PreemptThreshold float64
}

// preemptThreshold is the request's pre-emptive failover threshold: the
// user's own (which the key service resolves, a team's included), else the
// gateway's default.
func (p *Processor) preemptThreshold() float64 {
	if t := p.req.identity.PreemptThreshold; t != nil {
		return *t
	}
	return p.r.bedrock.PreemptThreshold
}

// BudgetChecker is implemented by budget.Checker.
type BudgetChecker interface {
	Check(ctx context.Context, userID uuid.UUID, budget decimal.Decimal) (budget.Status, error)
	// CheckBudgets checks the budgets that act (docs/budgets.md).
	CheckBudgets(ctx context.Context, budgets []accesskey.Budget) budget.Verdict
}

// CredentialChecker is implemented by bedrockauth.Signer.
type CredentialChecker interface {
	Check(ctx context.Context, cred bedrockauth.Credential) error
}

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
	refuseBudget        = "over_budget"
)

// bedrockFailure is why a request cannot be sent to Bedrock: a refusal for
// a Bedrock-bound request, the reason Plan gets it alone for a plan_first
// one.
type bedrockFailure struct {
	reason string
	code   int
	msg    string
	cause  error
}

// newBedrockBackend prepares a request for Bedrock: it checks the user's
// credential, translates the request for the backend its path calls for and
// returns that backend with the request the upstream processor will send.
func (p *Processor) newBedrockBackend(ctx context.Context, body []byte, cfg *runtimeconfig.Config) (bedrockBackend, *handoff.Request, *bedrockFailure) {
	c := p.req.identity.Bedrock
	cred := bedrockauth.Credential{ID: c.ID, UserID: p.req.identity.UserID, Kind: c.Kind, Region: c.Region, SecretCiphertext: c.SecretCiphertext}
	if err := p.r.bedrock.Credentials.Check(ctx, cred); err != nil {
		p.logger().LogAttrs(ctx, slog.LevelError, "bedrock credential unusable",
			slog.String("credential_id", c.ID.String()), slog.String("credential_kind", c.Kind), slog.Any("error", err))
		return nil, nil, &bedrockFailure{refuseCredential, 500, "ccproxy: the gateway's Bedrock credential for your account cannot be used; ask the gateway administrator to check it", err}
	}
	r := &handoff.Request{
		RequestID:     p.req.id,
		Method:        "POST",
		Credential:    cred,
		RemoveHeaders: p.req.credentialHeaders,
	}
	var (
		b  bedrockBackend
		bf *bedrockFailure
	)
	switch p.req.kind {
	case pathBedrockModel:
		b, bf = newBedrockMode(p, cfg, body, r)
	case pathMessages:
		b, bf = newBedrockMessages(ctx, p, cfg, body, r)
	case pathCountTokens:
		b, bf = newBedrockCountTokens(ctx, p, cfg, body, r)
	}
	if bf != nil {
		return nil, nil, bf
	}
	return b, r, nil
}

// bedrockBackend is a backend whose upstream is Bedrock.
type bedrockBackend interface {
	backend
	// answer is the shared reading of the Bedrock answer.
	answer() *bedrockAnswer
}

// resolveModel maps the request's model to Bedrock for region, counting and
// logging a model id guessed by the profile rule.
func (p *Processor) resolveModel(ctx context.Context, cfg *runtimeconfig.Config, region string) (runtimeconfig.Model, *bedrockFailure) {
	m, err := cfg.ResolveModel(p.req.fields.model, region)
	if err != nil {
		return m, &bedrockFailure{refuseModel, 400, "ccproxy: model " + strconv.Quote(p.req.fields.model) + " is not available on Bedrock for region " + region + "; choose another model or ask the gateway administrator to map it", nil}
	}
	if m.Guessed {
		p.r.metrics.bedrockGuessed.Inc()
		p.logger().LogAttrs(ctx, slog.LevelWarn, "bedrock model id guessed by the profile rule (no mapping)",
			slog.String("model", p.req.fields.model), slog.String("bedrock_model", m.InvokeID))
	}
	return m, nil
}

// invalidBody refuses a body the translation cannot read.
func invalidBody() *bedrockFailure {
	return &bedrockFailure{refuseBody, 400, "ccproxy: the request body is not a valid JSON object", nil}
}

// wantsBedrock reports whether the request goes to Bedrock.
func (p *Processor) wantsBedrock() bool {
	switch p.req.kind {
	case pathBedrockModel:
		return true
	case pathMessages, pathCountTokens:
		return p.req.identity.RoutingStrategy == accesskey.RoutingBedrockOnly
	}
	return false
}

// mayGoToBedrock reports whether the request might be sent to Bedrock, so
// its headers must be noted (collectBedrockHeaders).
func (p *Processor) mayGoToBedrock() bool { return p.wantsBedrock() || p.mayFallBack() }

// collectBedrockHeaders notes what a Bedrock-bound request must lose or
// carry over: the client's credentials, the anthropic-* headers (for a
// translated request), and the anthropic-beta flags.
func (p *Processor) collectBedrockHeaders(h *extprocv3.HttpHeaders) {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch {
		case hv.Key == "x-api-key" || hv.Key == "authorization":
			p.req.credentialHeaders = appendOnce(p.req.credentialHeaders, hv.Key)
		case hv.Key == "anthropic-beta":
			if p.req.betaHeader != "" {
				p.req.betaHeader += ","
			}
			p.req.betaHeader += string(rawValue(hv))
			p.req.anthropicHeaders = appendOnce(p.req.anthropicHeaders, hv.Key)
		case len(hv.Key) > len("anthropic-") && hv.Key[:len("anthropic-")] == "anthropic-":
			p.req.anthropicHeaders = appendOnce(p.req.anthropicHeaders, hv.Key)
		}
	}
}

func appendOnce(list []string, s string) []string {
	for _, v := range list {
		if v == s {
			return list
		}
	}
	return append(list, s)
}

// budgetSpent reports whether the user's monthly Bedrock budget is spent.
// When the spend cannot be learned at all it fails open (extproc/budget
// explains why), logging and counting the request.
func (p *Processor) budgetSpent(ctx context.Context) (budget.Status, bool) {
	b := p.req.identity.MonthlyBudgetUSD
	if b == nil || p.r.bedrock.Budgets == nil {
		return budget.Status{}, false
	}
	st, err := p.r.bedrock.Budgets.Check(ctx, p.req.identity.UserID, *b)
	if err != nil {
		if ctx.Err() != nil {
			return budget.Status{}, false // the request is going away anyway
		}
		p.r.metrics.budgetUnchecked.Inc()
		p.logger().LogAttrs(ctx, slog.LevelWarn, "budget unknown: serving the request (fail open)",
			slog.String("user_id", p.req.identity.UserID.String()), slog.Any("error", err))
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

// noteDrops counts and logs what the allow-lists removed.
func (p *Processor) noteDrops(ctx context.Context, tr bedrock.Request) {
	if len(tr.DroppedBetas) == 0 && len(tr.DroppedFields) == 0 {
		return
	}
	p.r.metrics.bedrockDroppedBetas.Add(float64(len(tr.DroppedBetas)))
	p.r.metrics.bedrockDroppedFields.Add(float64(len(tr.DroppedFields)))
	// Names are logged, not used as metric labels: clients choose them.
	p.logger().LogAttrs(ctx, slog.LevelInfo, "bedrock translation dropped what Bedrock would reject",
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
	attrs := []slog.Attr{slog.String("reason", reason), slog.Int("status", code)}
	if cause != nil {
		attrs = append(attrs, slog.Any("error", cause))
	}
	p.logger().LogAttrs(ctx, slog.LevelWarn, "bedrock request refused", attrs...)
	p.forward = false
	if p.req.kind == pathBedrockModel || p.req.kind == pathBedrockOther {
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
	return bedrockReply(code, typ, msg)
}

// bedrockReply is an immediate response in Bedrock's error format with the given
// x-amzn-errortype.
func bedrockReply(code int, typ, msg string) *extprocv3.ProcessingResponse {
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

// bedrockAnswer reads a Bedrock answer for the Bedrock backends: an event
// stream is decoded and converted to Anthropic SSE chunk by chunk (for the
// client, unless the backend passes Bedrock's format through, and always for
// metering); a JSON body is read whole.
type bedrockAnswer struct {
	model     string // the Bedrock model id, for the usage event
	errorType string // x-amzn-errortype of an error answer
	stream    bool
	conv      *eventstream.Converter
	sseBuf    []byte
	scanner   metering.SSEScanner
	json      usage.Usage
	counted   int64
	// Bedrock's token-count response headers, -1 when absent: the usage of
	// an answer whose body says none.
	headerInput, headerOutput int64
}

// headers handles the response headers of a Bedrock answer. convert says
// whether an event stream is converted to SSE for the client.
func (a *bedrockAnswer) headers(p *Processor, rh *responseHead, resp *extprocv3.ProcessingResponse, convert bool) {
	a.errorType = string(rh.errorType)
	a.headerInput, a.headerOutput = rh.inputTokens, rh.outputTokens
	common := resp.GetResponseHeaders().GetResponse()
	if p.resp.status != 200 {
		if p.resp.status == 403 && isCredentialError(a.errorType) {
			p.credentialRejected(a.errorType)
		}
		p.firstToken()
		return // BUFFERED: mapped in the body phase (translated kinds only)
	}
	if !isAmazonEventStream(rh.contentType) {
		p.firstToken()
		return
	}
	a.stream = true
	resp.ModeOverride = streamedResponseMode(p.requestBodyMode())
	a.conv = eventstream.NewConverter()
	if !convert {
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

// streamChunk converts (or, without convert, only reads) one chunk of a
// Bedrock event stream.
func (a *bedrockAnswer) streamChunk(p *Processor, chunk []byte, end, convert bool) *extprocv3.CommonResponse {
	out, _ := a.conv.Write(a.sseBuf[:0], chunk)
	if end {
		out, _ = a.conv.Finish(out)
	}
	a.sseBuf = out[:0]
	if !p.resp.encoded {
		a.scanner.Write(out)
		if a.scanner.ContentStarted() {
			p.firstToken()
		}
	}
	if end {
		p.endResponse()
	}
	if !convert {
		return nil
	}
	// Exactly one reply per chunk; an empty output (a frame split across
	// chunks) empties the chunk. The reply gets its own copy: a.sseBuf is
	// reused for the next chunk, and gRPC does not promise that a message is
	// no longer read once Send returns (stats handlers may read it lazily).
	bm := &extprocv3.BodyMutation{}
	if len(out) == 0 {
		bm.Mutation = &extprocv3.BodyMutation_ClearBody{ClearBody: true}
	} else {
		bm.Mutation = &extprocv3.BodyMutation_Body{Body: bytes.Clone(out)}
	}
	return &extprocv3.CommonResponse{BodyMutation: bm}
}

// mapError replaces a Bedrock error answer with the matching Anthropic
// error (status and JSON body).
func (a *bedrockAnswer) mapError(ctx context.Context, p *Processor, body []byte) *extprocv3.CommonResponse {
	me := bedrock.MapError(p.resp.status, a.errorType, body)
	if me.CredentialRejected && !(p.resp.status == 403 && isCredentialError(a.errorType)) {
		p.credentialRejected(me.BedrockType)
	}
	p.logger().LogAttrs(ctx, slog.LevelInfo, "bedrock error mapped",
		slog.Int("bedrock_status", p.resp.status), slog.String("bedrock_type", me.BedrockType), slog.Int("status", me.Status))
	p.resp.status = me.Status
	return replaceBody(me.Status, me.Body)
}

// meter fills the usage event of a Bedrock answer.
func (a *bedrockAnswer) meter(p *Processor, ev *usage.Event) {
	ev.Provider = usage.ProviderBedrock
	ev.BackendModel = a.model
	if c := p.req.identity.Bedrock; c != nil {
		ev.Region = c.Region
		if p.resp.credRejected {
			ev.RejectedCredentialID = c.ID
		}
	}
	ev.CountedInputTokens = a.counted
	if !a.stream {
		ev.Usage = a.json
		// An answer whose body names no usage is still metered from the
		// counts Bedrock reports in the headers, so that no model answers
		// for free.
		if ev.Usage.InputTokens == 0 && a.headerInput > 0 {
			ev.Usage.InputTokens = a.headerInput
		}
		if ev.Usage.OutputTokens == 0 && a.headerOutput > 0 {
			ev.Usage.OutputTokens = a.headerOutput
		}
		return
	}
	ev.Usage = a.scanner.Usage()
	ev.AgentSpawns = a.scanner.AgentSpawns()
	ev.Aborted = !p.resp.ended && !a.scanner.Completed()
	// Bedrock's invocation metrics fill counts the events left out.
	cu := a.conv.Usage()
	if ev.Usage.InputTokens == 0 {
		ev.Usage.InputTokens = cu.InputTokens
	}
	if ev.Usage.OutputTokens == 0 {
		ev.Usage.OutputTokens = cu.OutputTokens
	}
	if ev.Usage.CacheReadInputTokens == 0 {
		ev.Usage.CacheReadInputTokens = cu.CacheReadInputTokens
	}
	if ev.Usage.CacheWrite5mInputTokens == 0 && ev.Usage.CacheWrite1hInputTokens == 0 {
		ev.Usage.CacheWrite5mInputTokens = cu.CacheCreationInputTokens
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
	p.resp.credRejected = true
	var cred string
	if c := p.req.identity.Bedrock; c != nil {
		cred = c.ID.String()
	}
	p.logger().LogAttrs(context.Background(), slog.LevelError, "Bedrock rejected the gateway's credential: the administrator must fix it",
		slog.String("credential_id", cred), slog.String("bedrock_error", errType))
}

// replaceBody replaces a BUFFERED response: status, JSON body and its
// length (a content-length that disagrees with a mutated BUFFERED body is a
// local 500 in Envoy; docs/envoy.md).
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
