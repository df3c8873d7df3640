// Package upstream owns the upstream-level ext_proc processor: the filter in
// a Bedrock cluster's upstream HTTP filter chain, which Envoy runs once per
// upstream attempt, retries included (docs/design.md, "Two ext_proc
// filters").
//
// For each attempt it learns the chosen backend from the endpoint's host
// metadata (the filter's request_attributes) and rewrites the request for
// it from what the router-level processor decided and stored in a
// handoff.Store: the Bedrock path, the translated body
// (CONTINUE_AND_REPLACE, with the new length published as dynamic metadata
// for the header_mutation filter that restores content-length), the
// removal of the client's credentials and the Bedrock credential itself —
// an API key or a SigV4 signature computed here, per attempt, over the
// final body and the endpoint's host.
//
// It never fails a request. Depending on the Envoy release, an
// ImmediateResponse, gRPC error or message timeout of an upstream filter is
// either ignored (the attempt hangs until its per-try timeout) or a local
// reply that Envoy never retries, so no fallback (docs/envoy.md, "Upstream
// filter failures"). Everything that could fail was checked by the
// router-level processor; every call made here is bounded well below the
// message timeout (Redis by the breaker's own timeout, signing by
// SignTimeout) and ends when Envoy gives up on the stream; what still fails
// (a lost handoff entry, AWS credentials that expired or could not be
// fetched between check and sign) is logged, counted, and the request
// continues unchanged so that Bedrock's own error reaches the router-level
// processor, which reports it.
//
// When a reply cannot reach Envoy in time all the same — the stream ended
// before it was sent (Abandoned) — the attempt is recorded as failed in the
// handoff state, which tells the request's router-level processor at once:
// under either Envoy rule the client then gets an Anthropic error within the
// message timeout, and the failure is never charged to the Plan circuit
// breaker.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/internal/headers"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// Signer applies a Bedrock credential to a request (bedrockauth.Signer).
type Signer interface {
	Sign(ctx context.Context, cred bedrockauth.Credential, method, host, escapedPath string, body []byte) ([]bedrockauth.Header, error)
}

// Breaker receives the outcome of Plan attempts (planbreaker.Breaker).
type Breaker interface {
	Report(ctx context.Context, keyID uuid.UUID, status int, get func(name string) string) planbreaker.Outcome
	// Preempt opens the key's breaker until resetAt for pre-emptive
	// failover.
	Preempt(ctx context.Context, keyID uuid.UUID, resetAt time.Time)
}

// Config configures a Handler.
type Config struct {
	// Requests holds what the router-level processor decided. Required.
	Requests *handoff.Store
	// Signer applies credentials. Required.
	Signer Signer
	// Breaker receives Plan attempts' outcomes; nil reports none.
	Breaker Breaker
	// SignTimeout bounds applying a credential to one attempt (the AWS
	// credential chain may call STS or the instance metadata service);
	// DefaultSignTimeout when zero.
	SignTimeout time.Duration
	// Logger receives the processor's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil skips registration.
	Registerer prometheus.Registerer
	// Tracer, when set, opens a span per attempt of a traced request, a
	// child of the request's span (handoff.Request.Trace); nil traces
	// nothing.
	Tracer trace.Tracer
}

// DefaultSignTimeout bounds signing well below the ext_proc message timeout
// the control plane configures (30 s by default): an attempt whose
// credential cannot be applied in time continues unsigned and Bedrock's
// refusal reaches the router-level processor as an error it reports, where
// an expired message timeout would be Envoy's own local reply — never
// retried, so never a fallback (docs/envoy.md, "Upstream filter failures").
const DefaultSignTimeout = 5 * time.Second

// Handler holds what every attempt's Processor shares. It is safe for
// concurrent use.
type Handler struct {
	requests *handoff.Store
	signer   Signer
	breaker  Breaker
	log      *slog.Logger
	signWait time.Duration
	tracer   trace.Tracer

	attempts  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	abandoned *prometheus.CounterVec
	phase     prometheus.Observer
	// faults injects failures in test builds (build tag ccproxyfaults); a
	// zero-size no-op otherwise.
	faults faults
}

// Attempt outcomes (label "outcome" of ccproxy_extproc_upstream_attempts_total).
const (
	outcomeBedrock = "bedrock"      // rewritten for Bedrock
	outcomePlan    = "plan"         // Plan endpoint: nothing to change
	outcomeUnknown = "unrecognised" // no or unknown backend attribute: unchanged
	outcomeLost    = "no_state"     // no handoff entry: unchanged
	outcomeSignErr = "sign_error"   // credential could not be applied: unchanged
	// A Plan attempt after a Bedrock attempt: cannot happen with the
	// control plane's single retry and previous_priorities, and the shared
	// header map already carries the Bedrock rewrite, so it is only logged.
	outcomePlanAfterBedrock = "plan_after_bedrock"
)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Requests == nil || cfg.Signer == nil {
		return nil, errors.New("upstream: Config.Requests and Config.Signer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SignTimeout <= 0 {
		cfg.SignTimeout = DefaultSignTimeout
	}
	h := &Handler{
		signWait: cfg.SignTimeout,
		requests: cfg.Requests,
		signer:   cfg.Signer,
		breaker:  cfg.Breaker,
		log:      cfg.Logger,
		tracer:   cfg.Tracer,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_upstream_attempts_total",
			Help: "Upstream attempts seen by the upstream-level ext_proc filter, by outcome.",
		}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_upstream_failures_total",
			Help: "Upstream attempts the upstream-level filter could not rewrite (they continue unchanged and fail at Bedrock), by reason.",
		}, []string{"reason"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_extproc_upstream_abandoned_attempts_total",
			Help: "Upstream attempts whose ext_proc reply did not reach Envoy (late: the stream ended first, i.e. message_timeout or a reset; stream_failed), by cause; the client got an error, not a fallback.",
		}, []string{"cause"}),
	}
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ccproxy_extproc_upstream_request_headers_seconds",
		Help:    "Time to answer the upstream filter's request headers (including SigV4 signing).",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 0.1},
	})
	h.phase = hist
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{h.attempts, h.failures, h.abandoned, hist} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("upstream: register metrics: %w", err)
			}
		}
	}
	return h, nil
}

// NewProcessor returns the processor of one upstream attempt's ext_proc
// stream.
func (h *Handler) NewProcessor() *Processor { return &Processor{h: h} }

// Processor handles one attempt: request headers, then response headers.
// It is driven by a single goroutine.
type Processor struct {
	h     *Handler
	attrs map[string]*structpb.Value
	// The attempt's request and its index in req.Attempts, once the
	// request headers were seen.
	req     *handoff.Request
	attempt int
	backend string
	// err, set only by fault injection in test builds, ends the stream
	// with a gRPC error (Err).
	err error
	// span is the attempt's span; nil when the request is not traced.
	span trace.Span
}

// Err returns the error the stream must end with, nil to go on. It is nil
// except in test builds that inject failures.
func (p *Processor) Err() error { return p.err }

// Abandoned records that a reply of this attempt did not reach Envoy: the
// stream ended (ctx done) before it was sent, or sending failed, because
// Envoy stopped waiting — its message_timeout expired or the attempt was
// reset. Depending on the release Envoy then answers 504 at once or stalls
// the attempt until its per-try timeout; either way the router-level
// processor is told (handoff.Request.FailAttempt) and answers the client.
// A stream that ended after its last reply is not abandoned; the caller
// calls Abandoned only for a reply it could not send.
func (p *Processor) Abandoned(ctx context.Context, cause error) {
	p.fail(ctx, handoff.FailureLate, cause)
}

// fail records the attempt as failed by this processor.
func (p *Processor) fail(ctx context.Context, f handoff.Failure, cause error) {
	p.h.abandoned.WithLabelValues(f.String()).Inc()
	attrs := []slog.Attr{slog.String("failure", f.String()), slog.String("backend", p.backend), slog.Any("cause", cause)}
	if p.req == nil {
		p.h.log.LogAttrs(ctx, slog.LevelWarn, "upstream processor reply did not reach Envoy; attempt without routing state, nobody to tell", attrs...)
		return
	}
	p.h.log.LogAttrs(ctx, slog.LevelError, "upstream processor failed the attempt; the router-level processor answers the client",
		append(attrs, slog.String("request_id", p.req.RequestID), slog.Int("attempt", p.attempt+1))...)
	p.req.FailAttempt(p.attempt, f)
	if p.span != nil {
		p.span.SetStatus(otelcodes.Error, f.String())
		p.End()
	}
}

// startSpan opens the attempt's span when its request is traced.
func (p *Processor) startSpan(ctx context.Context) {
	if p.h.tracer == nil || !p.req.Trace.IsValid() {
		return
	}
	parent := trace.ContextWithRemoteSpanContext(context.WithoutCancel(ctx), p.req.Trace)
	_, p.span = p.h.tracer.Start(parent, "ccproxy.upstream_attempt", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("ccproxy.backend", p.backend), attribute.Int("ccproxy.attempt", p.attempt+1),
			attribute.String("ccproxy.request_id", p.req.RequestID)))
}

// End ends the attempt's span, if any is still open: the stream ended
// without response headers (a connect failure, a reset, a timeout).
func (p *Processor) End() {
	if p.span == nil {
		return
	}
	p.span.End()
	p.span = nil
}

// Process returns the reply to req, or nil when none is due. It never
// returns an error for a message it understands, so that the attempt is
// never stalled by this filter.
func (p *Processor) Process(ctx context.Context, req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	if a := req.GetAttributes()[dataplane.AttributesKey]; a != nil && p.attrs == nil {
		p.attrs = a.GetFields()
	}
	switch m := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if req.GetObservabilityMode() {
			return nil
		}
		t := time.Now()
		resp := p.requestHeaders(ctx, m.RequestHeaders)
		p.h.phase.Observe(time.Since(t).Seconds())
		return resp
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		p.responseHeaders(ctx, m.ResponseHeaders)
	}
	return Unchanged(req)
}

// responseHeaders records the attempt's status and reports a Plan
// attempt's outcome to the breaker, before Envoy decides on a retry (the
// router-level processor reads the record when the answer reaches it).
func (p *Processor) responseHeaders(ctx context.Context, hs *extprocv3.HttpHeaders) {
	if p.req == nil {
		return
	}
	hvs := hs.GetHeaders().GetHeaders()
	get := func(name string) string {
		for _, hv := range hvs {
			if hv.Key == name {
				return string(headers.Value(hv))
			}
		}
		return ""
	}
	status, _ := strconv.Atoi(get(":status"))
	p.req.Attempts.Respond(p.attempt, status)
	if p.span != nil {
		p.span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 || status == 429 {
			p.span.SetStatus(otelcodes.Error, strconv.Itoa(status))
		}
		p.End()
	}
	if p.backend != dataplane.BackendPlan || p.h.breaker == nil || p.req.KeyID == uuid.Nil {
		return
	}
	success := planbreaker.Classify(status, get) == planbreaker.OutcomeSuccess
	if success && p.req.Preempt > 0 {
		// Pre-emptive failover is on for this user: an answer at or above
		// the threshold opens the breaker instead of counting as a success
		// (the answer itself, headers included, reaches the client as is).
		u := planbreaker.UnifiedFrom(get)
		if until, hit := planbreaker.Preempt(u.Limits(), p.req.Preempt); hit {
			p.h.breaker.Preempt(ctx, p.req.KeyID, until)
			p.h.log.LogAttrs(ctx, slog.LevelInfo, "plan utilization reached the pre-emptive failover threshold",
				slog.String("request_id", p.req.RequestID), slog.Float64("threshold", p.req.Preempt), slog.Time("until", until))
			return
		}
	}
	if !p.req.Probe && success {
		// A success changes nothing unless it ends the half-open probe:
		// skip the Redis round trip on every ordinary Plan answer.
		return
	}
	o := p.h.breaker.Report(ctx, p.req.KeyID, status, get)
	if o != planbreaker.OutcomeSuccess {
		p.h.log.LogAttrs(ctx, slog.LevelInfo, "plan attempt reported to the circuit breaker",
			slog.String("request_id", p.req.RequestID), slog.Int("status", status), slog.String("outcome", o.String()))
	}
}

func (p *Processor) attr(name string) string {
	return p.attrs[name].GetStringValue()
}

func (p *Processor) requestHeaders(ctx context.Context, hs *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	unchanged := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{}}}

	var stateID, requestID, method string
	for _, hv := range hs.GetHeaders().GetHeaders() {
		switch hv.Key {
		case dataplane.StateHeader:
			stateID = string(headers.Value(hv))
		case "x-request-id":
			requestID = string(headers.Value(hv))
		case ":method":
			method = string(headers.Value(hv))
		}
	}
	// The first attempt finds its request by the handoff header and removes
	// it; a retry, which shares the header map, by x-request-id.
	r, err := p.h.requests.Lookup(stateID, requestID, handoff.PeerOf(ctx))
	if errors.Is(err, handoff.ErrOtherPeer) {
		// Another process than the data plane that routed the request is
		// asking for its credential: nothing is handed out.
		p.h.failures.WithLabelValues("other_peer").Inc()
		p.h.log.LogAttrs(ctx, slog.LevelError, "upstream stream from another peer than the request's router stream; nothing handed out",
			slog.String("peer", handoff.PeerOf(ctx)))
	}
	backend := p.attr(dataplane.AttributeBackend)
	switch backend {
	case dataplane.BackendBedrock:
	case dataplane.BackendPlan:
		p.h.attempts.WithLabelValues(outcomePlan).Inc()
		if r != nil {
			for _, a := range r.Attempts.List() {
				if a.Backend == dataplane.BackendBedrock {
					p.h.attempts.WithLabelValues(outcomePlanAfterBedrock).Inc()
					p.h.log.LogAttrs(ctx, slog.LevelError, "plan attempt after a bedrock attempt: the route's retry policy is not the control plane's",
						slog.String("request_id", r.RequestID))
					break
				}
			}
			p.req, p.backend = r, backend
			p.attempt = r.Attempts.Start(backend)
			p.startSpan(ctx)
		}
		if stateID != "" {
			return reply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{dataplane.StateHeader}}})
		}
		return unchanged
	default:
		p.h.attempts.WithLabelValues(outcomeUnknown).Inc()
		p.h.log.LogAttrs(ctx, slog.LevelError, "upstream attempt without a known backend in its host metadata; request continues unchanged",
			slog.String("backend", backend))
		return unchanged
	}

	if r == nil {
		p.h.attempts.WithLabelValues(outcomeLost).Inc()
		p.h.failures.WithLabelValues("no_state").Inc()
		p.h.log.LogAttrs(ctx, slog.LevelError, "bedrock attempt without its routing state; request continues unchanged and Bedrock will refuse it",
			slog.Bool("state_header", stateID != ""))
		return unchanged
	}
	p.req, p.backend = r, backend
	p.attempt = r.Attempts.Start(backend)
	p.startSpan(ctx)
	if err := p.h.faults.inject(ctx, r.Body); err != nil {
		// Test builds only: the stream fails as if the processor had died.
		p.fail(ctx, handoff.FailureStream, err)
		p.err = err
		return nil
	}
	if method == "" {
		method = r.Method
	}
	host := p.attr(dataplane.AttributeHost)
	sctx, cancel := context.WithTimeout(ctx, p.h.signWait)
	auth, err := p.h.signer.Sign(sctx, r.Credential, method, host, r.Path, r.Body)
	cancel()
	if err != nil {
		p.h.attempts.WithLabelValues(outcomeSignErr).Inc()
		p.h.failures.WithLabelValues("sign").Inc()
		p.h.log.LogAttrs(ctx, slog.LevelError, "bedrock credential could not be applied; request continues unsigned and Bedrock will refuse it",
			slog.String("request_id", r.RequestID), slog.String("credential_id", r.Credential.ID.String()), slog.Any("error", err))
		auth = nil
	}
	p.h.attempts.WithLabelValues(outcomeBedrock).Inc()

	// Every mutation is rebuilt from the stored request: an earlier attempt
	// already changed Envoy's shared header map (source/docs/upstream_filters.md).
	hm := &extprocv3.HeaderMutation{
		RemoveHeaders: notForBedrock(hs.GetHeaders().GetHeaders(), append([]string{dataplane.StateHeader}, r.RemoveHeaders...)),
		SetHeaders:    make([]*corev3.HeaderValueOption, 0, 2+len(r.SetHeaders)+len(auth)),
	}
	hm.SetHeaders = append(hm.SetHeaders, headers.Set(":path", []byte(r.Path)))
	for _, h := range r.SetHeaders {
		hm.SetHeaders = append(hm.SetHeaders, headers.Set(h.Name, []byte(h.Value)))
	}
	for _, h := range auth {
		hm.SetHeaders = append(hm.SetHeaders, headers.Set(h.Name, []byte(h.Value)))
	}
	common := &extprocv3.CommonResponse{HeaderMutation: hm}
	resp := reply(common)
	if r.ReplaceBody {
		// CONTINUE_AND_REPLACE replaces the body with body_mutation and
		// drops content-length (ext_proc.cc, handleHeadersResponse); the
		// header_mutation filter after this one puts the new length back
		// from dynamic metadata.
		common.Status = extprocv3.CommonResponse_CONTINUE_AND_REPLACE
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: r.Body}}
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			dataplane.MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				dataplane.ContentLengthKey: structpb.NewStringValue(strconv.Itoa(len(r.Body))),
			}}),
		}}
	}
	return resp
}

// keptForBedrock reports the client headers a Bedrock attempt keeps: what
// describes the body and the exchange. Everything else the client sent —
// x-amz-* (a forged security token, a content hash), x-amzn-bedrock-*
// (service tier, guardrails, trace), anthropic-*, tracing headers, the
// gateway's own route header — is removed: the request leaves with the
// company's credential, and Bedrock must see only what the gateway vouches
// for. Pseudo-headers, host and x-envoy-* are Envoy's (its default mutation
// rules ignore changes to them).
func keptForBedrock(name string) bool {
	switch name {
	case "content-type", "content-length", "accept", "accept-encoding", "user-agent",
		"x-request-id", "x-forwarded-for", "x-forwarded-proto":
		return true
	}
	return false
}

// notForBedrock returns remove extended by every header of hs that a Bedrock
// attempt must not carry (keptForBedrock), each name once, remove's order
// first. It works from the headers this attempt is shown: an earlier
// attempt's removals are already gone from the shared header map, and the
// credential headers set below are set after the removals (Envoy applies
// removals first).
func notForBedrock(hs []*corev3.HeaderValue, remove []string) []string {
	for _, hv := range hs {
		k := hv.Key
		if keptForBedrock(k) || k == "host" || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "x-envoy-") || slices.Contains(remove, k) {
			continue
		}
		remove = append(remove, k)
	}
	return remove
}

// Unchanged returns the reply that lets req's phase continue unmodified
// (nil for messages that need none). A server without Bedrock configured
// answers upstream streams with it.
func Unchanged(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	if req.GetObservabilityMode() {
		return nil
	}
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil
}

func reply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

// setHeader overwrites key with value, in raw_value only and with the
// deprecated append flag, which is what Envoy's ext_proc reads
// (mutation_utils.cc, applyHeaderMutations).
