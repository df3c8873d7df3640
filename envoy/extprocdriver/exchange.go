package extprocdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// This file plays Envoy 1.40's ext_proc filter (ext_proc.cc and
// processor_state.cc) for one HTTP exchange, message by message, with the
// rules of package extprocrules. It is synchronous where Envoy is
// asynchronous: each message waits for its reply before the next is sent,
// which is what Envoy does for headers and BUFFERED bodies and, for
// STREAMED bodies, what happens when the data trickles in (an upstream
// streaming tokens) rather than arriving at once.

// Message is an HTTP message as it stands at one point of an exchange.
type Message struct {
	Headers *extprocrules.HeaderMap
	Body    []byte
}

// Outcome is what one exchange produced.
type Outcome struct {
	// RoutedRequest is the request after the router-level filter.
	RoutedRequest Message
	// UpstreamRequest is the request as it leaves Envoy.
	UpstreamRequest Message
	// DownstreamResponse is the response as it reaches the client.
	DownstreamResponse Message
	// Messages is how many ext_proc messages were sent, on all streams;
	// each was answered by one reply.
	Messages int
}

// Tracer sees every message of an exchange in order: stream is "router" or
// "upstream", sent is false for the server's replies.
type Tracer func(stream string, sent bool, m proto.Message)

// PhaseError is a server that failed or broke the protocol at one phase of
// a stream: Envoy would fail the request (500 or 504).
type PhaseError struct {
	// Stream is "router" or "upstream".
	Stream string
	// Phase is the message that was sent, e.g. "response_body chunk 2/4".
	Phase string
	Err   error
}

func (e *PhaseError) Error() string { return e.Stream + " stream, " + e.Phase + ": " + e.Err.Error() }

func (e *PhaseError) Unwrap() error { return e.Err }

// ImmediateResponseError is a server that answered with an
// ImmediateResponse: Envoy would send that local reply to the client
// instead of the exchange the scenario describes.
type ImmediateResponseError struct {
	Status  int
	Details string
	Body    []byte
}

func (e *ImmediateResponseError) Error() string {
	return fmt.Sprintf("ImmediateResponse %d (details %q): %.300q", e.Status, e.Details, e.Body)
}

// direction is one direction of an HTTP stream, a ProcessorState in Envoy.
type direction int

const (
	request direction = iota
	response
)

// Exchange plays Envoy's part for one HTTP exchange of s on c: the
// router-level filter's stream for the request, the upstream filter's
// stream if the scenario has one, the upstream's response through both,
// and the streams' close. It returns what Envoy would have sent upstream and
// downstream, or the first thing Envoy would have failed the request for.
// It does not check the scenario's expectations (see Verifier).
func (s *Scenario) Exchange(ctx context.Context, c extprocsvc.ExternalProcessorClient, trace Tracer) (*Outcome, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends any stream an error left open
	out := &Outcome{}
	router := newFilterStream(ctx, "router", s.router, c, trace, &out.Messages)

	// The connection manager generates x-request-id (generate_request_id).
	h := s.reqHeaders.Clone()
	h.Set("x-request-id", uuid.NewString())
	body, replaced, err := router.headers(request, h, s.reqBody, len(s.reqBody) == 0)
	if err != nil {
		return nil, err
	}
	if !replaced {
		if body, err = router.body(request, h, body, nil, s.reqChunks); err != nil {
			return nil, err
		}
	}
	out.RoutedRequest = Message{h.Clone(), body}

	for _, k := range s.route.RemoveHeaders {
		h.Remove(k)
	}
	for _, k := range sortedKeys(s.route.SetHeaders) {
		h.Set(k, s.route.SetHeaders[k])
	}
	var up *filterStream
	if s.upstream != nil {
		up = newFilterStream(ctx, "upstream", s.upstream, c, trace, &out.Messages)
		if body, replaced, err = up.headers(request, h, body, len(body) == 0); err != nil {
			return nil, err
		}
		if !replaced {
			if body, err = up.body(request, h, body, nil, 1); err != nil {
				return nil, err
			}
		}
	}
	if s.hostRewrite != "" {
		h.Set(":authority", s.hostRewrite)
	}
	out.UpstreamRequest = Message{h, body}

	rh, rb, chunks := s.respHeaders.Clone(), s.respBody, s.respChunks
	if up != nil {
		if rb, replaced, err = up.headers(response, rh, rb, len(rb) == 0); err != nil {
			return nil, err
		}
		if replaced {
			chunks = nil
		}
	}
	if rb, replaced, err = router.headers(response, rh, rb, len(rb) == 0); err != nil {
		return nil, err
	}
	if !replaced {
		if rb, err = router.body(response, rh, rb, chunks, len(s.respChunks)); err != nil {
			return nil, err
		}
	}
	out.DownstreamResponse = Message{rh, rb}
	// The upstream request ends with the response, then the downstream one.
	up.close()
	router.close()
	return out, nil
}

// filterStream is one ext_proc filter instance for one HTTP exchange and
// its gRPC stream, opened on the first message as Envoy does.
type filterStream struct {
	name     string
	cfg      *filterConfig
	ctx      context.Context
	client   extprocsvc.ExternalProcessorClient
	trace    Tracer
	messages *int

	stream     extprocsvc.ExternalProcessor_ProcessClient
	cancel     context.CancelFunc
	mode       *extprocv3.ProcessingMode // in force: configured until a mode_override
	complete   bool                      // nothing more goes to the server
	configSent bool
	attrsSent  [2]bool
	noBody     [2]bool
}

func newFilterStream(ctx context.Context, name string, cfg *filterConfig, c extprocsvc.ExternalProcessorClient, trace Tracer, messages *int) *filterStream {
	return &filterStream{name: name, cfg: cfg, ctx: ctx, client: c, trace: trace, messages: messages, mode: cfg.mode}
}

func (f *filterStream) sendsHeaders(d direction) bool {
	if d == request {
		return extprocrules.SendsHeaders(f.mode.GetRequestHeaderMode())
	}
	return extprocrules.SendsHeaders(f.mode.GetResponseHeaderMode())
}

func (f *filterStream) bodyMode(d direction) extprocv3.ProcessingMode_BodySendMode {
	if d == request {
		return f.mode.GetRequestBodyMode()
	}
	return f.mode.GetResponseBodyMode()
}

func (f *filterStream) setBodyMode(d direction, m extprocv3.ProcessingMode_BodySendMode) {
	f.mode = proto.CloneOf(f.mode)
	if d == request {
		f.mode.RequestBodyMode = m
	} else {
		f.mode.ResponseBodyMode = m
	}
}

// headers sends d's headers h (unless the mode skips them) and applies the
// reply to h. When the reply is CONTINUE_AND_REPLACE with a body, that body
// replaces body and replaced is true; the direction's body is then not sent.
func (f *filterStream) headers(d direction, h *extprocrules.HeaderMap, body []byte, endStream bool) (_ []byte, replaced bool, _ error) {
	if f.complete || !f.sendsHeaders(d) {
		if !f.complete && extprocrules.RemovesContentLength(f.bodyMode(d), false) {
			h.Remove("content-length")
		}
		return body, false, nil
	}
	phase := [2]string{"request_headers", "response_headers"}[d]
	hh := &extprocsvc.HttpHeaders{Headers: h.ToProto(), EndOfStream: endStream}
	req := f.newRequest(d)
	if d == request {
		req.Request = &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: hh}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}
	}
	f.noBody[d] = endStream
	// The filter drops content-length right after sending the headers, by
	// the mode configured before any mode_override (decodeHeaders).
	if extprocrules.RemovesContentLength(f.bodyMode(d), true) {
		h.Remove("content-length")
	}
	resp, err := f.roundTrip(phase, req)
	if err != nil {
		return nil, false, err
	}
	if f.cfg.allowModeOverride && resp.GetModeOverride() != nil {
		m := extprocrules.EffectiveModeOverride(resp.GetModeOverride(), f.cfg.mode)
		if err := checkModePlayable(m); err != nil {
			return nil, false, &PhaseError{f.name, phase, fmt.Errorf("mode_override: %w", err)}
		}
		f.mode = m
	}
	var cr *extprocsvc.CommonResponse
	if d == request {
		cr = resp.GetRequestHeaders().GetResponse()
	} else {
		cr = resp.GetResponseHeaders().GetResponse()
	}
	replacing := cr.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
	if hm := cr.GetHeaderMutation(); hm != nil {
		if err := extprocrules.ApplyHeaderMutation(hm, h, replacing, f.cfg.rules, extprocrules.RemovesContentLength(f.bodyMode(d), true)); err != nil {
			return nil, false, &PhaseError{f.name, phase, err}
		}
	}
	if replacing {
		if bm := cr.GetBodyMutation(); bm != nil {
			// The processor probably did not set a matching content-length.
			h.Remove("content-length")
			body, replaced = extprocrules.ApplyBodyMutation(bm, nil), true
		}
		f.setBodyMode(d, extprocv3.ProcessingMode_NONE)
	}
	f.closeIfLast(d, false, false)
	return body, replaced, nil
}

// body sends d's body in the mode in force and returns it as the replies
// left it. A STREAMED body goes in chunks (cut into n pieces when chunks is
// nil), each after the previous reply.
func (f *filterStream) body(d direction, h *extprocrules.HeaderMap, body []byte, chunks [][]byte, n int) ([]byte, error) {
	if f.complete || len(body) == 0 {
		return body, nil
	}
	phase := [2]string{"request_body", "response_body"}[d]
	switch f.bodyMode(d) {
	case extprocv3.ProcessingMode_BUFFERED:
		resp, err := f.roundTrip(phase, f.bodyRequest(d, body, true))
		if err != nil {
			return nil, err
		}
		cr := commonOf(d, resp)
		// The headers are still held while a buffered body is processed,
		// if they went to the processor (handleBodyResponse).
		held := f.sendsHeaders(d)
		if hm := cr.GetHeaderMutation(); hm != nil && held {
			if err := extprocrules.ApplyHeaderMutation(hm, h, false, f.cfg.rules, extprocrules.RemovesContentLength(f.bodyMode(d), true)); err != nil {
				return nil, &PhaseError{f.name, phase, err}
			}
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			if cl, ok := h.Get("content-length"); ok && held {
				if n, err := strconv.ParseUint(cl, 10, 64); err == nil && n != uint64(len(bm.GetBody())) {
					return nil, &PhaseError{f.name, phase, fmt.Errorf("mismatch between content length (%d) and the length of the mutated body (%d)", n, len(bm.GetBody()))}
				}
			}
			body = extprocrules.ApplyBodyMutation(bm, body)
		}
		f.closeIfLast(d, true, false)
		return body, nil
	case extprocv3.ProcessingMode_STREAMED:
		if chunks == nil {
			chunks, _ = split(body, n, nil)
		}
		var out []byte
		for i, chunk := range chunks {
			last := i == len(chunks)-1
			resp, err := f.roundTrip(fmt.Sprintf("%s chunk %d/%d", phase, i+1, len(chunks)), f.bodyRequest(d, chunk, last))
			if err != nil {
				return nil, err
			}
			// Header mutations in a streamed chunk's reply come too late:
			// the headers have gone on.
			out = append(out, extprocrules.ApplyBodyMutation(commonOf(d, resp).GetBodyMutation(), chunk)...)
		}
		f.closeIfLast(d, true, true)
		return out, nil
	default:
		return body, nil
	}
}

func (f *filterStream) bodyRequest(d direction, data []byte, eos bool) *extprocsvc.ProcessingRequest {
	hb := &extprocsvc.HttpBody{Body: data, EndOfStream: eos}
	req := f.newRequest(d)
	if d == request {
		req.Request = &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}
	}
	return req
}

// commonOf is the CommonResponse of a body reply in direction d.
func commonOf(d direction, resp *extprocsvc.ProcessingResponse) *extprocsvc.CommonResponse {
	if d == request {
		return resp.GetRequestBody().GetResponse()
	}
	return resp.GetResponseBody().GetResponse()
}

// newRequest starts a message of direction d: the stream's first message
// carries protocol_config, a direction's first message that direction's
// attributes (Filter::addAttributes, ProcessorState::sendAttributes).
func (f *filterStream) newRequest(d direction) *extprocsvc.ProcessingRequest {
	req := &extprocsvc.ProcessingRequest{}
	attrs := f.cfg.requestAttrs
	if d == response {
		attrs = f.cfg.responseAttrs
	}
	if attrs != nil && !f.attrsSent[d] {
		f.attrsSent[d] = true
		req.Attributes = map[string]*structpb.Struct{extprocrules.AttributesKey: attrs}
	}
	if !f.configSent {
		f.configSent = true
		req.ProtocolConfig = &extprocsvc.ProtocolConfiguration{
			RequestBodyMode:  f.mode.GetRequestBodyMode(),
			ResponseBodyMode: f.mode.GetResponseBodyMode(),
		}
	}
	return req
}

// roundTrip sends req, opening the stream first if needed, and returns the
// reply, which must answer req. Replies that only ask for a longer message
// timeout are skipped, as Envoy keeps waiting after them.
func (f *filterStream) roundTrip(phase string, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
	if f.stream == nil {
		ctx, cancel := context.WithCancel(f.ctx)
		if f.cfg.metadata != nil {
			ctx = metadata.NewOutgoingContext(ctx, f.cfg.metadata)
		}
		s, err := f.client.Process(ctx)
		if err != nil {
			cancel()
			return nil, &PhaseError{f.name, phase, fmt.Errorf("opening the stream: %w", err)}
		}
		f.stream, f.cancel = s, cancel
	}
	if f.trace != nil {
		f.trace(f.name, true, req)
	}
	*f.messages++
	if err := f.stream.Send(req); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream has ended; Recv has the reason.
			_, err = f.stream.Recv()
		}
		return nil, &PhaseError{f.name, phase, fmt.Errorf("send: %w", err)}
	}
	for {
		resp, err := f.stream.Recv()
		if errors.Is(err, io.EOF) {
			// Envoy would go on without the processor (onGrpcClose): the
			// rest of the exchange would not be the one measured.
			return nil, &PhaseError{f.name, phase, errors.New("the server ended the stream instead of replying")}
		}
		if err != nil {
			return nil, &PhaseError{f.name, phase, err}
		}
		if f.trace != nil {
			f.trace(f.name, false, resp)
		}
		if resp.GetOverrideMessageTimeout() != nil && resp.GetResponse() == nil {
			continue
		}
		if err := checkReply(phase, req, resp); err != nil {
			return nil, &PhaseError{f.name, phase, err}
		}
		return resp, nil
	}
}

// checkReply accepts only the reply type that answers req. Anything else
// Envoy calls spurious and fails the request for (runtime default
// ext_proc_fail_close_spurious_resp); an ImmediateResponse it turns into a
// local reply.
func checkReply(phase string, req *extprocsvc.ProcessingRequest, resp *extprocsvc.ProcessingResponse) error {
	if ir := resp.GetImmediateResponse(); ir != nil {
		return &ImmediateResponseError{Status: int(ir.GetStatus().GetCode()), Details: ir.GetDetails(), Body: ir.GetBody()}
	}
	ok := false
	switch req.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		ok = resp.GetRequestHeaders() != nil
	case *extprocsvc.ProcessingRequest_RequestBody:
		ok = resp.GetRequestBody() != nil
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		ok = resp.GetResponseHeaders() != nil
	case *extprocsvc.ProcessingRequest_ResponseBody:
		ok = resp.GetResponseBody() != nil
	}
	if !ok {
		return fmt.Errorf("spurious reply: a %s reply to %s", replyType(resp), phase)
	}
	return nil
}

// replyType names the kind of reply resp is.
func replyType(resp *extprocsvc.ProcessingResponse) string {
	switch resp.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocsvc.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocsvc.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocsvc.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocsvc.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	default:
		return "empty"
	}
}

// closeIfLast closes the stream once nothing more will be sent on it
// (closeGrpcStreamIfLastRespReceived, runtime default
// ext_proc_stream_close_optimization), after a reply to d's headers or,
// with isBody, to d's body (lastChunk: a STREAMED body's last chunk).
func (f *filterStream) closeIfLast(d direction, isBody, lastChunk bool) {
	responseNone := !f.sendsHeaders(response) && f.bodyMode(response) == extprocv3.ProcessingMode_NONE
	var last bool
	switch {
	case d == request && !isBody:
		last = (f.noBody[request] || f.bodyMode(request) == extprocv3.ProcessingMode_NONE) && responseNone
	case d == request:
		last = f.bodyMode(request) == extprocv3.ProcessingMode_STREAMED && lastChunk && responseNone
	case !isBody:
		last = f.noBody[response] || f.bodyMode(response) == extprocv3.ProcessingMode_NONE
	default:
		last = f.bodyMode(response) == extprocv3.ProcessingMode_STREAMED && lastChunk
	}
	if last {
		f.close()
	}
}

// close ends the stream as Envoy 1.40 does (graceful close is not its
// default): a half-close immediately followed by a reset, without waiting
// for the server's status. close on a nil or closed stream does nothing.
func (f *filterStream) close() {
	if f == nil || f.complete {
		return
	}
	f.complete = true
	if f.stream != nil {
		_ = f.stream.CloseSend()
		f.cancel()
	}
}
