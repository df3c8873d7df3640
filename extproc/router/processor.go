package router

import (
	"context"
	"errors"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/translate/eventstream"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// Processor is the state machine of one ext_proc stream. It is driven by a
// single goroutine: Process for each message in order, then Close.
//
// Envoy sends, for a pass-through request: request headers, the request
// body (BUFFERED, one message, unless the headers ended the stream),
// response headers, then the response body — one message when BUFFERED,
// one per chunk after the STREAMED mode_override. Every message but an
// ImmediateResponse gets exactly one reply of its own kind.
type Processor struct {
	r *Router

	// Request.
	started   bool
	start     time.Time
	requestID string
	sessionID string
	agentID   string
	client    string
	identity  accesskey.Identity
	kind      pathKind
	forward   bool // the request goes upstream once its last phase is answered
	route     string
	fields    requestFields

	// Bedrock (bedrock.go).
	bedrockKind             bedrockKind
	bedrockPath             bedrockPath
	backendModel            string
	handoffID               string
	handoffReq              *handoff.Request
	betaHeader              string
	anthropicHeaders        []string // anthropic-* header names, removed for Bedrock
	clientCredentialHeaders []string // x-api-key, authorization: never sent to Bedrock
	amznErrorType           string
	bedrockStream           bool
	conv                    *eventstream.Converter
	sseBuf                  []byte

	// Fallback (fallback.go).
	fallbackKind   bedrockKind // the Bedrock translation, used if Bedrock answers
	fallbackModel  string      // its Bedrock model id
	fallback       bool        // Bedrock answered a plan_first request
	fallbackReason string
	attemptCount   int // upstream.request_attempt_count, 0 when not sent

	// Response.
	status     int
	sse        bool
	encoded    bool // content-encoding other than identity: usage unreadable
	ended      bool // the response ended (end_of_stream seen)
	ttft       time.Duration
	ttftSet    bool
	latency    time.Duration
	scanner    metering.SSEScanner
	jsonUsage  usage.Usage
	counted    int64
	bodyReply  *extprocv3.ProcessingResponse
	closedOnce bool
}

// Process handles one message and returns the reply to send, or nil when
// none is due (observability mode, messages that carry no phase). An error
// is a gRPC status for a message Envoy should not have sent; returning it
// fails the request (Envoy answers 500 with failure_mode_allow off).
func (p *Processor) Process(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	t := time.Now()
	var (
		resp *extprocv3.ProcessingResponse
		err  error
		ph   int
	)
	switch m := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		ph = phaseRequestHeaders
		resp, err = p.requestHeaders(ctx, m.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		ph = phaseRequestBody
		resp = p.requestBody(ctx, m.RequestBody)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		ph = phaseResponseHeaders
		p.readResponseAttributes(req)
		if p.fallbackKind != bedrockNone {
			p.whoAnswered(ctx)
		}
		resp = p.responseHeaders(m.ResponseHeaders)
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
func (p *Processor) RequestID() string { return p.requestID }

func rawValue(h *corev3.HeaderValue) []byte {
	// Envoy sends header values in raw_value (runtime guard
	// envoy.reloadable_features.send_header_raw_value, on by default);
	// value is only a fallback for older or differently configured Envoys.
	if len(h.RawValue) > 0 || h.Value == "" {
		return h.RawValue
	}
	return []byte(h.Value)
}

func (p *Processor) requestHeaders(ctx context.Context, h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	if p.started {
		return nil, status.Error(codes.FailedPrecondition, "request headers received twice on one stream")
	}
	p.started = true
	p.start = p.r.now()

	var method, path, headerKey []byte
	var hasHeaderKey bool
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
			p.requestID = headerString(rawValue(hv))
		case "user-agent":
			p.client = clientVersion(rawValue(hv))
		case sessionIDHeader:
			p.sessionID = headerString(rawValue(hv))
		case agentIDHeader:
			p.agentID = headerString(rawValue(hv))
		}
	}

	if p.requestID == "" {
		// Envoy's HCM always sets one; without it usage rows could not be
		// told apart (the ingester is idempotent on the request id).
		p.requestID = uuid.NewString()
	}

	// The path prefix wins over the header; the header is removed either
	// way so that no copy of the key travels upstream.
	key, rest, inPath := splitKeyPath(path)
	if !inPath {
		key = headerKey
	}
	p.kind = classify(rest)
	if !inPath && !hasHeaderKey {
		return p.refuse(ctx, reasonMissing), nil
	}
	id, err := p.r.keys.Resolve(ctx, string(key))
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
		p.r.log.LogAttrs(ctx, slog.LevelError, "access key lookup failed",
			slog.String("request_id", p.requestID), slog.Any("error", err))
		return immediate(500, apierror.API, "ccproxy: the access key could not be checked; try again", "ccproxy_key_lookup_failed"), nil
	}
	p.identity = id

	switch {
	case string(method) == "HEAD":
		// Claude Code probes the base URL with HEAD /ak/<key>/api/hello
		// before its first request.
		p.r.metrics.request(OutcomeProbe)
		return immediate(200, "", "", "ccproxy_probe"), nil
	case p.kind == pathModels && string(method) == "GET":
		p.r.metrics.request(OutcomeModels)
		return p.r.modelsResponse(rest), nil
	case p.kind == pathOther:
		p.r.metrics.request(OutcomeNotFound)
		return immediate(404, apierror.NotFound, "ccproxy: not found; the gateway serves the Anthropic API under /v1/", "ccproxy_not_found"), nil
	case p.kind == pathBedrockProfiles && string(method) == "GET":
		return p.inferenceProfiles(ctx), nil
	case p.kind == pathBedrockOther || p.kind == pathBedrockProfiles:
		p.r.metrics.request(OutcomeNotFound)
		return bedrockImmediate(404, "ccproxy: the gateway serves only InvokeModel, InvokeModelWithResponseStream, CountTokens and ListInferenceProfiles in Bedrock mode"), nil
	case p.kind == pathBedrockModel:
		var ok bool
		if p.bedrockPath, ok = parseBedrockPath(rest); !ok || string(method) != "POST" {
			p.r.metrics.request(OutcomeNotFound)
			return bedrockImmediate(404, "ccproxy: unsupported Bedrock request"), nil
		}
		if id.RoutingStrategy == accesskey.RoutingPlanOnly {
			return p.refuseBedrock(ctx, refusePlanOnly, 403, "ccproxy: your account is plan_only; Bedrock mode is not available", nil), nil
		}
	case p.kind == pathV1 && id.RoutingStrategy == accesskey.RoutingBedrockOnly:
		return p.refuseBedrock(ctx, refusePath, 404, "ccproxy: this endpoint is not available to bedrock_only accounts; only /v1/messages and /v1/messages/count_tokens are served by Bedrock", nil), nil
	}

	if p.wantsBedrock() || p.mayFallBack() {
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
	if h.GetEndOfStream() {
		// No body follows: this is the last request phase, so the route is
		// chosen here.
		if p.wantsBedrock() {
			return p.refuseBedrock(ctx, refuseBody, 400, "ccproxy: the request has no body", nil), nil
		}
		p.setRoute(common, dataplane.RoutePlan)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: common}}}, nil
}

// setRoute sets the route header and clear_route_cache in common, which
// must be the reply to the last request phase: Envoy re-matches the route
// only when clear_route_cache comes with a header mutation in the same
// CommonResponse.
func (p *Processor) setRoute(common *extprocv3.CommonResponse, route string) {
	p.route = route
	p.r.metrics.forwarded(route)
	if common.HeaderMutation == nil {
		common.HeaderMutation = &extprocv3.HeaderMutation{}
	}
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setHeader(dataplane.RouteHeader, []byte(p.route)))
	common.ClearRouteCache = true
}

func (p *Processor) refuse(ctx context.Context, reason string) *extprocv3.ProcessingResponse {
	p.r.metrics.authFailure(reason)
	p.r.metrics.request(OutcomeRefused)
	p.r.log.LogAttrs(ctx, slog.LevelInfo, "access key refused",
		slog.String("request_id", p.requestID), slog.String("reason", reason))
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
	if p.kind == pathBedrockModel || p.kind == pathBedrockProfiles || p.kind == pathBedrockOther {
		// The AWS SDK of Claude Code's Bedrock mode parses Bedrock's format.
		return bedrockImmediate(403, msg)
	}
	return immediate(401, apierror.Authentication, msg, "ccproxy_auth_"+reason)
}

// collectBedrockHeaders notes what a Bedrock-bound request must lose or
// carry over: the client's credentials, the anthropic-* headers (for a
// translated request), and the anthropic-beta flags.
func (p *Processor) collectBedrockHeaders(h *extprocv3.HttpHeaders) {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch {
		case hv.Key == "x-api-key" || hv.Key == "authorization":
			p.clientCredentialHeaders = appendOnce(p.clientCredentialHeaders, hv.Key)
		case hv.Key == "anthropic-beta":
			if p.betaHeader != "" {
				p.betaHeader += ","
			}
			p.betaHeader += string(rawValue(hv))
			p.anthropicHeaders = appendOnce(p.anthropicHeaders, hv.Key)
		case len(hv.Key) > len("anthropic-") && hv.Key[:len("anthropic-")] == "anthropic-":
			p.anthropicHeaders = appendOnce(p.anthropicHeaders, hv.Key)
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

func (p *Processor) requestBody(ctx context.Context, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	common := &extprocv3.CommonResponse{}
	if p.forward && p.route == "" {
		if p.kind == pathMessages || p.kind == pathCountTokens {
			p.fields = scanRequest(b.GetBody())
		}
		switch {
		case p.wantsBedrock():
			if refusal := p.routeBedrock(ctx, b.GetBody(), common); refusal != nil {
				return refusal
			}
		case p.mayFallBack():
			p.routePlanFirst(ctx, b.GetBody(), common)
		default:
			p.setRoute(common, dataplane.RoutePlan)
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: common}}}
}

func (p *Processor) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	var ct, ce, amznType []byte
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":status":
			p.status = parseStatus(rawValue(hv))
		case "content-type":
			ct = rawValue(hv)
		case "content-encoding":
			ce = rawValue(hv)
		case "x-amzn-errortype":
			amznType = rawValue(hv)
		}
	}
	if p.bedrockKind != bedrockNone {
		p.encoded = len(ce) > 0 && string(ce) != "identity"
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
		p.bedrockResponseHeaders(resp, ct, amznType)
		if !p.bedrockStream && p.started {
			p.ttft, p.ttftSet = p.r.now().Sub(p.start), true
		}
		if h.GetEndOfStream() {
			p.endResponse()
		}
		return resp
	}
	p.sse = p.status == 200 && isEventStream(ct)
	p.encoded = len(ce) > 0 && string(ce) != "identity"
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	if p.sse {
		resp.ModeOverride = streamedResponseMode()
	} else if p.started {
		p.ttft, p.ttftSet = p.r.now().Sub(p.start), true
	}
	if h.GetEndOfStream() {
		p.endResponse()
	}
	return resp
}

func (p *Processor) responseBody(ctx context.Context, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	body := b.GetBody()
	if p.bedrockStream {
		return p.bedrockStreamChunk(b)
	}
	if p.bedrockKind != bedrockNone {
		// BUFFERED: the whole body, see below.
		common := p.bedrockBufferedBody(ctx, body)
		p.endResponse()
		if common != nil {
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
				ResponseBody: &extprocv3.BodyResponse{Response: common}}}
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	}
	switch {
	case p.sse:
		if !p.encoded {
			p.scanner.Write(body)
			if !p.ttftSet && p.started && p.scanner.ContentStarted() {
				p.ttft, p.ttftSet = p.r.now().Sub(p.start), true
			}
		}
		if b.GetEndOfStream() {
			p.endResponse()
		}
	default:
		// BUFFERED: this one message is the whole body, even when it does
		// not carry end_of_stream (Envoy sends it that way when trailers
		// follow).
		if p.status == 200 && !p.encoded {
			switch p.kind {
			case pathMessages:
				p.jsonUsage, _ = metering.FromJSON(body)
			case pathCountTokens:
				p.counted, _ = metering.CountedTokens(body)
			}
		}
		p.endResponse()
	}
	if p.bodyReply == nil {
		p.bodyReply = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	}
	// The reply is identical for every chunk and gRPC has marshalled the
	// previous one before Process is called again, so it is reused.
	return p.bodyReply
}

func (p *Processor) endResponse() {
	if p.ended || !p.started {
		return
	}
	p.ended = true
	p.latency = p.r.now().Sub(p.start)
}

// Close ends the stream: it emits the usage event of a metered request that
// reached an upstream. ctx should outlive the stream (its values are passed
// to the sink).
func (p *Processor) Close(ctx context.Context) {
	if p.closedOnce {
		return
	}
	p.closedOnce = true
	if p.handoffID != "" {
		if p.fallbackKind != bedrockNone && p.status == 0 {
			// No response reached this filter: whatever Plan attempt there
			// was got none either.
			p.whoAnswered(ctx)
		}
		p.r.bedrock.Requests.Delete(p.handoffID)
	}
	metered := p.kind == pathMessages || p.kind == pathCountTokens ||
		(p.kind == pathBedrockModel && p.bedrockPath.op != "")
	if p.route == "" || !metered {
		return
	}
	aborted := !p.ended && !p.scanner.Completed()
	latency := p.latency
	if !p.ended {
		latency = p.r.now().Sub(p.start)
	}
	ev := usage.Event{
		RequestID:          p.requestID,
		Time:               p.start,
		UserID:             p.identity.UserID,
		KeyID:              p.identity.KeyID,
		SessionID:          p.sessionID,
		AgentID:            p.agentID,
		ClientVersion:      p.client,
		PathKind:           usage.PathMessages,
		Model:              p.fields.model,
		Route:              p.route,
		Provider:           usage.ProviderAnthropic,
		Stream:             p.fields.stream,
		Status:             p.status,
		CountedInputTokens: p.counted,
		TTFT:               p.ttft,
		Latency:            latency,
		Aborted:            aborted,
		Fallback:           p.fallback,
		FallbackReason:     p.fallbackReason,
	}
	if p.kind == pathCountTokens || p.bedrockPath.op == "count-tokens" {
		ev.PathKind = usage.PathCountTokens
	}
	switch {
	case p.bedrockStream:
		ev.Usage = p.scanner.Usage()
		// Bedrock's invocation metrics fill counts the events left out.
		cu := p.conv.Usage()
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
	case p.sse:
		ev.Usage = p.scanner.Usage()
	default:
		ev.Usage = p.jsonUsage
	}
	if p.bedrockKind != bedrockNone {
		ev.Provider = usage.ProviderBedrock
		ev.BackendModel = p.backendModel
		if c := p.identity.Bedrock; c != nil {
			ev.Region = c.Region
		}
	}
	if p.encoded && p.status == 200 {
		p.r.metrics.unparsed.WithLabelValues("content_encoding").Inc()
		p.r.log.LogAttrs(ctx, slog.LevelWarn, "response usage unreadable: compressed upstream response",
			slog.String("request_id", p.requestID))
	}
	p.r.emit(ctx, ev)
}
