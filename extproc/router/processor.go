package router

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Processor is the state machine of one ext_proc stream. It is driven by a
// single goroutine: Process for each message in order, then Close. The one
// exception is AttemptFailed, which the upstream processor of the request's
// attempt calls from its own goroutine; mu orders it with the rest.
//
// Envoy sends, for a request that goes upstream: request headers, the
// request body (BUFFERED, one message, unless the headers ended the
// stream), response headers, then the response body — one message when
// BUFFERED, one per chunk after a STREAMED mode_override. Every message but
// an ImmediateResponse gets exactly one reply of its own kind.
//
// The processor authenticates the key and answers what the gateway answers
// itself (request headers), chooses the backend and the route once the body
// is known (route.go), and hands every response message to that backend.
type Processor struct {
	r   *Router
	log *slog.Logger // with the request id; built on first use (logger)

	req     request
	forward bool   // the request goes upstream once its last phase is answered
	route   string // the route chosen; "" until then
	backend backend
	stored  storedRequest // what the upstream processor will look up
	resp    response

	bodyReply *extprocv3.ProcessingResponse
	emitted   bool // the usage event was recorded
	closed    bool
	slot      bool   // holds one of the key's concurrency slots (limits.go)
	charge    bool   // the response's tokens count against rate limits (ratelimits.go)
	peer      string // the data plane's identity (handoff.PeerOf), bound to what is handed off

	// mu guards the processor's state against AttemptFailed; Process and
	// Close hold it.
	mu sync.Mutex
	// sendMu serialises the stream's sends: gRPC allows one sender at a
	// time, and AttemptFailed sends from another goroutine.
	sendMu sync.Mutex
	// out and outCtx are the stream and its context (Attach); nil when the
	// processor is driven without a stream (tests).
	out    Sender
	outCtx context.Context
	// interrupted: AttemptFailed answered the client; the stream's further
	// messages get no reply (Envoy ignores them once it took the answer).
	interrupted bool

	// Tracing (tracing.go), only with Config.Tracer: the request's span and
	// its context, the Plan attempt's span, and the status of an answer the
	// gateway gave itself.
	span        trace.Span
	spanCtx     context.Context
	upSpan      trace.Span
	localStatus int
}

// Sender sends a reply on the processor's ext_proc stream.
type Sender interface {
	Send(*extprocv3.ProcessingResponse) error
}

// Attach binds the processor to its stream, so that it can answer the
// client without being asked (AttemptFailed). ctx is the stream's context.
// The stream's own replies must then go through Send.
func (p *Processor) Attach(ctx context.Context, out Sender) {
	p.out, p.outCtx = out, ctx
}

// Send sends resp on the attached stream.
func (p *Processor) Send(resp *extprocv3.ProcessingResponse) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.out.Send(resp)
}

// request is what the processor learned from the request.
type request struct {
	start     time.Time // when the headers arrived; zero before
	id        string    // x-request-id
	sessionID string
	agentID   string
	parentID  string
	client    string
	identity  accesskey.Identity
	kind      pathKind
	bedrock   bedrockPath // kind == pathBedrockModel
	fields    requestFields
	// bodySkipped: the route was chosen with the headers and Envoy was told
	// not to send the body (plan.go, skipsBody).
	bodySkipped bool
	// For requests that may go to Bedrock (bedrock_only, plan_first with a
	// credential, Claude Code's Bedrock mode).
	betaHeader        string   // anthropic-beta, repeated headers joined
	anthropicHeaders  []string // anthropic-* header names, removed for a translated request
	credentialHeaders []string // x-api-key, authorization: never sent to Bedrock
	// budget is what the request's budgets decided (budgets.go).
	budget budgetState
}

func (q *request) started() bool { return !q.start.IsZero() }

// response is what every backend shares about the upstream answer.
type response struct {
	status  int
	encoded bool // content-encoding other than identity: usage unreadable
	ended   bool // the response ended (end_of_stream seen)
	ttft    time.Duration
	ttftSet bool
	latency time.Duration
	// limits is the Plan subscription state the answer announced (zero
	// when none): the usage event carries it to the headroom history.
	limits usage.PlanLimits
	// credRejected: Bedrock refused the gateway's credential (the usage
	// event says so, for the admin's notification).
	credRejected bool
}

// storedRequest is the request handed to the upstream processor.
type storedRequest struct {
	id  string
	req *handoff.Request
}

// Process handles one message and returns the reply to send, or nil when
// none is due (observability mode, messages that carry no phase). An error
// is a gRPC status for a message Envoy should not have sent; returning it
// fails the request (Envoy answers 500 with failure_mode_allow off).
func (p *Processor) Process(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.interrupted {
		// The client was answered already (AttemptFailed); Envoy, which
		// took that answer, ignores anything more on this stream.
		return nil, nil
	}
	t := time.Now()
	var (
		resp *extprocv3.ProcessingResponse
		err  error
		ph   int
	)
	switch m := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		ph = phaseRequestHeaders
		p.peer = handoff.PeerOf(ctx)
		resp, err = p.requestHeaders(ctx, m.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		ph = phaseRequestBody
		resp = p.requestBody(ctx, m.RequestBody)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		ph = phaseResponseHeaders
		resp = p.responseHeaders(ctx, req, m.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		ph = phaseResponseBody
		resp = p.responseBody(ctx, m.ResponseBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		ph = phaseTrailers
		resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		ph = phaseTrailers
		// Trailers end the response when a STREAMED body's last chunk did
		// not carry end_of_stream.
		p.endResponse()
		resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}
	default:
		return nil, nil
	}
	if p.span != nil {
		if ir := resp.GetImmediateResponse(); ir != nil {
			p.localStatus = int(ir.GetStatus().GetCode())
		}
	}
	if p.resp.ended && !p.emitted && err == nil {
		// The reply to the message that ended the response releases its
		// end to the client (Envoy holds a BUFFERED body, and each STREAMED
		// chunk, until the ext_proc answers it). Recording the usage now,
		// before that reply, means a client that has its whole answer has
		// its usage recorded: with the Redis producer's synchronous XADD, a
		// process killed right after the response cannot lose it.
		p.emitUsage(context.WithoutCancel(ctx))
	}
	p.r.metrics.phase[ph].Observe(time.Since(t).Seconds())
	if err != nil {
		return nil, err
	}
	if req.GetObservabilityMode() {
		return nil, nil
	}
	return resp, nil
}

// RequestID returns the request's x-request-id, once its headers were seen.
func (p *Processor) RequestID() string { return p.req.id }

// logger is the request's logger, carrying its id. It is built on first use:
// most requests log nothing, and building one costs allocations.
func (p *Processor) logger() *slog.Logger {
	if p.log == nil {
		p.log = p.r.log.With(slog.String("request_id", p.req.id))
	}
	return p.log
}

func (p *Processor) requestHeaders(ctx context.Context, h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	if p.req.started() {
		return nil, status.Error(codes.FailedPrecondition, "request headers received twice on one stream")
	}
	p.req.start = p.r.now()
	if p.r.tracer != nil {
		p.startSpan(ctx, h)
	}

	var method, path, headerKey []byte
	var hasHeaderKey bool
	bodyLen := int64(-1)
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":method":
			method = rawValue(hv)
		case ":path":
			path = rawValue(hv)
		case dataplane.KeyHeader:
			if !hasHeaderKey {
				headerKey, hasHeaderKey = rawValue(hv), true
			}
		case dataplane.RequestIDHeader:
			p.req.id = headerString(rawValue(hv))
		case "user-agent":
			p.req.client = clientVersion(rawValue(hv))
		case sessionIDHeader:
			p.req.sessionID = headerString(rawValue(hv))
		case agentIDHeader:
			p.req.agentID = headerString(rawValue(hv))
		case parentIDHeader:
			p.req.parentID = headerString(rawValue(hv))
		case "content-length":
			bodyLen = parseCount(rawValue(hv))
		}
	}

	if p.req.id == "" {
		// Envoy's HCM always sets one; without it usage rows could not be
		// told apart (the ingester is idempotent on the request id).
		p.req.id = uuid.NewString()
	}

	// The path prefix wins over the header; the header is removed either
	// way so that no copy of the key travels upstream.
	key, rest, inPath := splitKeyPath(path)
	if !inPath {
		key = headerKey
	}
	p.req.kind = classify(rest)
	if !inPath && !hasHeaderKey {
		return p.refuse(ctx, reasonMissing), nil
	}
	ks := p.childSpan(SpanKeyLookup)
	id, err := p.r.keys.Resolve(ctx, string(key))
	if ks != nil {
		endChild(ks, err != nil, keyLookupFailure(err))
	}
	if err != nil {
		switch {
		case errors.Is(err, accesskey.ErrMalformed):
			return p.refuse(ctx, reasonMalformed), nil
		case errors.Is(err, accesskey.ErrUnknownKey):
			return p.refuse(ctx, reasonUnknown), nil
		case errors.Is(err, accesskey.ErrRevoked):
			return p.refuse(ctx, reasonRevoked), nil
		}
		p.r.metrics.authFailure(reasonLookup)
		p.r.metrics.request(OutcomeLookupError)
		p.logger().LogAttrs(ctx, slog.LevelError, "access key lookup failed", slog.Any("error", err))
		return immediate(500, apierror.API, "ccproxy: the access key could not be checked; try again", "ccproxy_key_lookup_failed"), nil
	}
	p.req.identity = id

	if local := p.answerLocally(ctx, string(method), rest); local != nil {
		return local, nil
	}
	if max := p.r.limits.MaxRequestBodyBytes; max > 0 && bodyLen > max {
		// Refused before Envoy buffers the body.
		return p.tooLarge(), nil
	}
	if !p.r.slots.acquire(p.req.identity.KeyID) {
		return p.tooManyConcurrent(), nil
	}
	p.slot = true
	// After the concurrency slot: a request refused for concurrency takes
	// nothing from the rate limits. Close gives the slot back.
	if refusal := p.checkRateLimits(ctx); refusal != nil {
		return refusal, nil
	}

	if p.mayGoToBedrock() {
		p.collectBedrockHeaders(h)
	}
	p.forward = true
	hm := &extprocv3.HeaderMutation{RemoveHeaders: []string{dataplane.RouteHeader, dataplane.StateHeader}}
	if hasHeaderKey {
		hm.RemoveHeaders = append(hm.RemoveHeaders, dataplane.KeyHeader)
	}
	if inPath {
		hm.SetHeaders = []*corev3.HeaderValueOption{setHeader(":path", rest)}
	}
	common := &extprocv3.CommonResponse{HeaderMutation: hm}
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: common}}}
	switch {
	case h.GetEndOfStream():
		// No body follows: this is the last request phase, so the route is
		// chosen here.
		if refusal := p.chooseRoute(ctx, nil, common); refusal != nil {
			return refusal, nil
		}
	case p.skipsBody(bodyLen):
		if refusal := p.chooseRoute(ctx, nil, common); refusal != nil {
			return refusal, nil
		}
		p.req.bodySkipped = true
		resp.ModeOverride = skipRequestBodyMode()
	}
	return resp, nil
}

// answerLocally answers what the gateway answers itself, once the key is
// known good: probes, the model list, unknown paths and what the user's
// routing strategy rules out. It returns nil for requests that go upstream.
func (p *Processor) answerLocally(ctx context.Context, method string, rest []byte) *extprocv3.ProcessingResponse {
	strategy := p.req.identity.RoutingStrategy
	switch kind := p.req.kind; {
	case method == "HEAD":
		// Claude Code probes the base URL with HEAD /ak/<key>/api/hello
		// before its first request.
		p.r.metrics.request(OutcomeProbe)
		return immediate(200, "", "", "ccproxy_probe")
	case kind == pathModels && method == "GET":
		p.r.metrics.request(OutcomeModels)
		return p.r.modelsResponse(rest, p.req.identity.AllowedModels)
	case kind == pathMe && method == "GET":
		return p.selfStatus(ctx)
	case kind == pathMe:
		p.r.metrics.request(OutcomeNotFound)
		return immediate(405, apierror.InvalidRequest, "ccproxy: /me answers GET only", "ccproxy_me_method")
	case kind == pathOther:
		p.r.metrics.request(OutcomeNotFound)
		return immediate(404, apierror.NotFound, "ccproxy: not found; the gateway serves the Anthropic API under /v1/", "ccproxy_not_found")
	case kind == pathNotCanonical:
		p.r.metrics.request(OutcomeNotFound)
		return immediate(404, apierror.NotFound, "ccproxy: not found; spell the path without percent-encoding, empty or dot segments or a trailing slash", "ccproxy_path_not_canonical")
	case kind == pathBedrockProfiles && method == "GET":
		return p.inferenceProfiles(ctx)
	case kind == pathBedrockOther || kind == pathBedrockProfiles:
		p.r.metrics.request(OutcomeNotFound)
		return bedrockImmediate(404, "ccproxy: the gateway serves only InvokeModel, InvokeModelWithResponseStream, CountTokens and ListInferenceProfiles in Bedrock mode")
	case kind == pathBedrockModel:
		var ok bool
		if p.req.bedrock, ok = parseBedrockPath(rest); !ok || method != "POST" {
			p.r.metrics.request(OutcomeNotFound)
			return bedrockImmediate(404, "ccproxy: unsupported Bedrock request")
		}
		if strategy == accesskey.RoutingPlanOnly {
			return p.refuseBedrock(ctx, refusePlanOnly, 403, "ccproxy: your account is plan_only; Bedrock mode is not available", nil)
		}
		if refusal := p.checkBedrockModel(ctx); refusal != nil {
			return refusal
		}
	case kind == pathV1 || kind == pathModels:
		// Only what is metered goes upstream: every forwarded request leaves
		// exactly one usage row. Other Anthropic endpoints (files, batches,
		// model details, …) would spend or expose the developer's credential
		// through the gateway without a trace, and Claude Code does not use
		// them.
		p.r.metrics.request(OutcomeNotFound)
		return immediate(404, apierror.NotFound, "ccproxy: not found; the gateway serves POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models", "ccproxy_endpoint_not_served")
	}
	return nil
}

func (p *Processor) refuse(ctx context.Context, reason string) *extprocv3.ProcessingResponse {
	p.r.metrics.authFailure(reason)
	p.r.metrics.request(OutcomeRefused)
	p.logger().LogAttrs(ctx, slog.LevelInfo, "access key refused", slog.String("reason", reason))
	var msg string
	switch reason {
	case reasonMissing:
		msg = "ccproxy: no access key; set ANTHROPIC_BASE_URL to the gateway URL ending in /ak/<your access key>"
	case reasonMalformed:
		msg = "ccproxy: malformed access key"
	case reasonRevoked:
		msg = "ccproxy: access key revoked"
	default:
		msg = "ccproxy: invalid access key"
	}
	if k := p.req.kind; k == pathBedrockModel || k == pathBedrockProfiles || k == pathBedrockOther {
		// The AWS SDK of Claude Code's Bedrock mode parses Bedrock's format.
		return bedrockImmediate(403, msg)
	}
	return immediate(401, apierror.Authentication, msg, "ccproxy_auth_"+reason)
}

func (p *Processor) requestBody(ctx context.Context, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	common := &extprocv3.CommonResponse{}
	if max := p.r.limits.MaxRequestBodyBytes; p.forward && max > 0 && int64(len(b.GetBody())) > max {
		// A body without content-length (chunked) is measured here.
		p.forward = false
		return p.tooLarge()
	}
	if p.forward && p.route == "" {
		if refusal := p.chooseRoute(ctx, b.GetBody(), common); refusal != nil {
			return refusal
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: common}}}
}

// responseHead is what the processor reads of the response headers for the
// backend.
type responseHead struct {
	contentType []byte
	errorType   []byte // x-amzn-errortype (Bedrock)
	end         bool   // no body follows
	// Bedrock's token counts of an InvokeModel answer
	// (x-amzn-bedrock-input-token-count, -output-token-count); -1 when
	// absent.
	inputTokens, outputTokens int64
	// unified holds Plan's subscription rate-limit headers (aliasing the
	// header map: no copy), parsed by the plan backend.
	unified planbreaker.UnifiedHeaders
}

func (p *Processor) responseHeaders(ctx context.Context, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	var ce []byte
	rh := responseHead{end: h.GetEndOfStream(), inputTokens: -1, outputTokens: -1}
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":status":
			p.resp.status = parseStatus(rawValue(hv))
			if p.upSpan != nil {
				p.endPlanAttempt(p.resp.status)
			}
		case "content-type":
			rh.contentType = rawValue(hv)
		case "content-encoding":
			ce = rawValue(hv)
		case "x-amzn-errortype":
			rh.errorType = rawValue(hv)
		case "x-amzn-bedrock-input-token-count":
			rh.inputTokens = parseCount(rawValue(hv))
		case "x-amzn-bedrock-output-token-count":
			rh.outputTokens = parseCount(rawValue(hv))
		default:
			if len(hv.Key) > len(planbreaker.UnifiedPrefix) && hv.Key[:len(planbreaker.UnifiedPrefix)] == planbreaker.UnifiedPrefix {
				rh.unified.Set(hv.Key, rawValue(hv))
			}
		}
	}
	p.resp.encoded = len(ce) > 0 && string(ce) != "identity"
	if p.backend != nil && p.convertsLocalReplies() && isLocalReply(p.resp.status, rh.contentType) {
		return p.answerLocalReply(ctx, req, p.resp.status)
	}
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	if p.backend != nil {
		p.backend.responseHeaders(ctx, p, req, &rh, resp)
	}
	p.budgetHeaders(resp)
	if rh.end {
		p.endResponse()
	}
	return resp
}

func (p *Processor) responseBody(ctx context.Context, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	var common *extprocv3.CommonResponse
	if p.backend != nil {
		common = p.backend.responseBody(ctx, p, b.GetBody(), b.GetEndOfStream())
	} else {
		p.endResponse()
	}
	if common != nil {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: common}}}
	}
	if p.bodyReply == nil {
		p.bodyReply = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	}
	// The unchanged-chunk reply is identical for every chunk and gRPC has
	// marshalled the previous one before Process is called again, so it is
	// reused.
	return p.bodyReply
}

// firstToken notes the time to first token, once.
func (p *Processor) firstToken() {
	if !p.resp.ttftSet && p.req.started() {
		p.resp.ttft, p.resp.ttftSet = p.r.now().Sub(p.req.start), true
	}
}

func (p *Processor) endResponse() {
	if p.resp.ended || !p.req.started() {
		return
	}
	p.resp.ended = true
	p.resp.latency = p.r.now().Sub(p.req.start)
}

// Close ends the stream: it frees what was stored for the upstream processor
// and emits the usage event of a metered request that reached an upstream,
// unless the end of the response emitted it already (a response that did
// not end: the client went away, or the upstream broke off).
// ctx should outlive the stream (its values are passed to the sink).
func (p *Processor) Close(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.slot {
		p.r.slots.release(p.req.identity.KeyID)
	}
	if p.backend != nil {
		p.backend.streamEnded(ctx, p)
	}
	if p.stored.id != "" {
		p.r.bedrock.Requests.Delete(p.stored.id)
	}
	if !p.emitted {
		p.emitUsage(ctx)
	}
	if p.span != nil {
		p.endSpan(nil, p.localStatus)
	}
}

// emitUsage records the usage event of a metered request that reached an
// upstream, once.
func (p *Processor) emitUsage(ctx context.Context) {
	p.emitted = true
	if p.route == "" || !p.metered() {
		return
	}
	latency := p.resp.latency
	if !p.resp.ended {
		latency = p.r.now().Sub(p.req.start)
	}
	ev := usage.Event{
		RequestID:     p.req.id,
		Time:          p.req.start,
		UserID:        p.req.identity.UserID,
		KeyID:         p.req.identity.KeyID,
		SessionID:     p.req.sessionID,
		AgentID:       p.req.agentID,
		ParentAgentID: p.req.parentID,
		ClientVersion: p.req.client,
		PathKind:      usage.PathMessages,
		Model:         p.req.fields.model,
		Route:         p.route,
		Provider:      usage.ProviderAnthropic,
		Stream:        p.req.fields.stream,
		Status:        p.resp.status,
		TTFT:          p.resp.ttft,
		Latency:       latency,
		Aborted:       !p.resp.ended,
	}
	if t := p.req.identity.TeamID; t != nil {
		ev.TeamID = *t
	}
	if p.req.kind == pathCountTokens || p.req.bedrock.op == "count-tokens" {
		ev.PathKind = usage.PathCountTokens
	}
	p.backend.meter(p, &ev)
	ev.BudgetAction, ev.OriginalModel = p.req.budget.recorded, p.req.budget.originalModel
	p.chargeTokens(&ev)
	if ev.Provider == usage.ProviderAnthropic {
		ev.PlanLimits = p.resp.limits
	}
	if p.resp.encoded && p.resp.status == 200 {
		p.r.metrics.unparsed.WithLabelValues("content_encoding").Inc()
		p.logger().LogAttrs(ctx, slog.LevelWarn, "response usage unreadable: compressed upstream response")
	}
	if p.span != nil {
		p.endSpan(&ev, 0)
	}
	p.r.emit(ctx, ev)
}

// metered reports whether the request produces a usage event: Messages and
// count_tokens requests, and Claude Code's Bedrock-mode model calls.
func (p *Processor) metered() bool {
	switch p.req.kind {
	case pathMessages, pathCountTokens:
		return true
	case pathBedrockModel:
		return p.req.bedrock.op != ""
	}
	return false
}
