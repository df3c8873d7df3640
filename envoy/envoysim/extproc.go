package envoysim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// This file emulates Envoy's ext_proc HTTP filter
// (source/extensions/filters/http/ext_proc/ext_proc.cc and processor_state.cc,
// Envoy 1.40) for the modes ccproxy uses: headers SEND/SKIP, bodies
// NONE/BUFFERED/STREAMED, trailers SKIP. Like Envoy it is a state machine per
// direction (ProcessorState) driven by replies arriving on one gRPC stream per
// HTTP request; a reply that does not fit the awaited phase is "spurious".

// errSpurious marks a reply that does not match the awaited phase
// (absl::FailedPreconditionError("spurious message") in processor_state.cc).
var errSpurious = errors.New("spurious message")

type callbackState int

const (
	cbIdle callbackState = iota
	cbHeaders
	cbBufferedBody
	cbStreamedBody
)

type direction int

const (
	dirRequest direction = iota
	dirResponse
)

type bodyChunk struct {
	data []byte
	eos  bool
	err  error
}

// procState is ProcessorState: one per direction.
type procState struct {
	dir          direction
	sendHeaders  bool
	bodyMode     extprocv3.ProcessingMode_BodySendMode
	cb           callbackState
	timerGen     uint64
	timer        *time.Timer
	newTimeout   bool       // an override_message_timeout was already honoured for this call
	headers      *headerMap // modifiable headers while a reply may still change them
	noBody       bool
	done         chan struct{} // closed when the pending headers/buffered call finishes
	body         []byte        // BUFFERED body sent and (mutated) received
	queue        []bodyChunk   // STREAMED chunks sent and awaiting a reply, in order
	outQ         []bodyChunk   // STREAMED chunks ready for the next filter
	outSig       chan struct{}
	bodyReplaced bool
	replacement  []byte
	attrsSent    bool // this direction's attributes went out (sent_attributes_)
}

func (st *procState) setMode(m *extprocv3.ProcessingMode) {
	// DecodingProcessorState/EncodingProcessorState::setProcessingModeInternal:
	// headers are sent unless SKIP, trailers only when SEND.
	if st.dir == dirRequest {
		st.sendHeaders = extprocrules.SendsHeaders(m.GetRequestHeaderMode())
		st.bodyMode = m.GetRequestBodyMode()
	} else {
		st.sendHeaders = extprocrules.SendsHeaders(m.GetResponseHeaderMode())
		st.bodyMode = m.GetResponseBodyMode()
	}
}

// shouldRemoveContentLength is ProcessorState::shouldRemoveContentLength.
func (st *procState) shouldRemoveContentLength() bool {
	return extprocrules.RemovesContentLength(st.bodyMode, st.sendHeaders)
}

func (st *procState) notifyOut() {
	select {
	case st.outSig <- struct{}{}:
	default:
	}
}

// extProcFilter is one ext_proc filter instance for one HTTP request.
type extProcFilter struct {
	cfg *extProcConfig
	s   *stream

	mu sync.Mutex
	// completeA mirrors complete for readers that cannot take mu
	// (stream.requestLocalReplyLocked, under the stream's lock).
	completeA          atomic.Bool
	opened             bool
	client             extprocsvc.ExternalProcessor_ProcessClient
	cancel             context.CancelFunc
	closed             bool
	complete           bool // processing_complete_
	protocolConfigSent bool
	dec, enc           *procState

	// Upstream filter chain only: the attempt's host (request_attributes),
	// the attempt context (per-try/route timeout) and whether a local reply
	// was ignored (RuleStall) so the attempt stalls.
	host       *hostConfig
	attemptCtx context.Context
	stalled    bool

	sendMu sync.Mutex
	sendQ  []*extprocsvc.ProcessingRequest
	sendC  chan struct{}
	closeQ bool
}

// setCompleteLocked sets processing_complete_.
func (f *extProcFilter) setCompleteLocked() {
	f.complete = true
	f.completeA.Store(true)
}

func newExtProcFilter(cfg *extProcConfig, s *stream) *extProcFilter {
	f := &extProcFilter{
		cfg:   cfg,
		s:     s,
		dec:   &procState{dir: dirRequest, outSig: make(chan struct{}, 1)},
		enc:   &procState{dir: dirResponse, outSig: make(chan struct{}, 1)},
		sendC: make(chan struct{}, 1),
	}
	f.dec.setMode(cfg.mode)
	f.enc.setMode(cfg.mode)
	return f
}

// openLocked opens the gRPC stream on first use (Filter::openStream).
func (f *extProcFilter) openLocked() error {
	if f.opened {
		return nil
	}
	f.opened = true
	conn, err := f.s.sim.grpcConn(f.s.snap, f.cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if len(f.cfg.initialMetadata) > 0 {
		var kv []string
		for _, h := range f.cfg.initialMetadata {
			v := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				v = string(h.GetRawValue())
			}
			kv = append(kv, h.GetKey(), v)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	client, err := extprocsvc.NewExternalProcessorClient(conn).Process(ctx,
		grpc.CallAuthority(f.cfg.authority), grpc.MaxCallRecvMsgSize(f.cfg.maxRecvMsgSize),
		grpc.MaxCallSendMsgSize(int(^uint32(0)>>1)))
	if err != nil {
		cancel()
		return err
	}
	f.client, f.cancel = client, cancel
	go f.sender()
	go f.receiver(client)
	return nil
}

// send queues a message; a single sender goroutine keeps them in order.
func (f *extProcFilter) send(req *extprocsvc.ProcessingRequest) {
	f.sendMu.Lock()
	if f.closeQ {
		f.sendMu.Unlock()
		return
	}
	f.sendQ = append(f.sendQ, req)
	f.sendMu.Unlock()
	select {
	case f.sendC <- struct{}{}:
	default:
	}
}

func (f *extProcFilter) sender() {
	for {
		f.sendMu.Lock()
		q := f.sendQ
		f.sendQ = nil
		closing := f.closeQ
		f.sendMu.Unlock()
		for _, req := range q {
			if err := f.client.Send(req); err != nil {
				f.cancel()
				return
			}
		}
		if closing {
			// ExternalProcessorStreamImpl::close: closeStream (half close)
			// then resetStream.
			_ = f.client.CloseSend()
			f.cancel()
			return
		}
		<-f.sendC
	}
}

// closeStreamLocked is Filter::closeStream. Envoy 1.40 does not enable
// envoy.reloadable_features.ext_proc_graceful_grpc_close by default, so the
// stream is half-closed and reset at once: a server reading after the
// half-close may see io.EOF or Canceled.
func (f *extProcFilter) closeStreamLocked() {
	if !f.opened || f.closed || f.client == nil {
		f.closed = true
		return
	}
	f.closed = true
	f.sendMu.Lock()
	f.closeQ = true
	f.sendMu.Unlock()
	select {
	case f.sendC <- struct{}{}:
	default:
	}
}

func (f *extProcFilter) receiver(client extprocsvc.ExternalProcessor_ProcessClient) {
	for {
		resp, err := client.Recv()
		if err != nil {
			f.onStreamEnd(err)
			return
		}
		f.onReceive(resp)
	}
}

func (f *extProcFilter) onStreamEnd(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if errors.Is(err, io.EOF) {
		f.onGrpcCloseLocked()
		return
	}
	st, _ := status.FromError(err)
	f.onGrpcErrorLocked(st.Code(), st.Message())
}

// onGrpcCloseLocked: the server closed the stream with OK; the request goes
// on without the processor (Filter::onGrpcClose).
func (f *extProcFilter) onGrpcCloseLocked() {
	if f.complete {
		return
	}
	f.setCompleteLocked()
	f.closeStreamLocked()
	f.clearAsyncStateLocked()
}

// onGrpcErrorLocked: a non-OK status fails the request with status_on_error
// unless failure_mode_allow (Filter::onGrpcError).
func (f *extProcFilter) onGrpcErrorLocked(code codes.Code, msg string) {
	if f.complete {
		return
	}
	if f.cfg.failureModeAllow {
		f.onGrpcCloseLocked()
		return
	}
	f.setCompleteLocked()
	f.finishCallLocked(f.dec)
	f.finishCallLocked(f.enc)
	f.closeStreamLocked()
	f.sendImmediateLocked(&extprocsvc.ImmediateResponse{
		Status:  statusCode(f.cfg.statusOnError),
		Details: fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", int(code), msg),
	})
}

func (f *extProcFilter) startTimerLocked(st *procState) {
	f.armTimerLocked(st, f.cfg.messageTimeout)
	st.newTimeout = false
}

func (f *extProcFilter) armTimerLocked(st *procState, d time.Duration) {
	if st.timer != nil {
		st.timer.Stop()
	}
	st.timerGen++
	gen := st.timerGen
	st.timer = time.AfterFunc(d, func() { f.onMessageTimeout(st, gen) })
}

// onNewTimeoutLocked is Filter::onNewTimeout: an override between 1 ms and
// max_message_timeout restarts the running timer, once per call.
func (f *extProcFilter) onNewTimeoutLocked(d time.Duration) {
	if d < time.Millisecond || d > f.cfg.maxMessageTimeout {
		f.s.log.Warn("ext_proc override_message_timeout out of range; ignored", "timeout", d, "max", f.cfg.maxMessageTimeout)
		return
	}
	for _, st := range []*procState{f.dec, f.enc} {
		if st.timer != nil && !st.newTimeout {
			f.armTimerLocked(st, d)
			st.newTimeout = true
		}
	}
}

func (f *extProcFilter) stopTimerLocked(st *procState) {
	st.newTimeout = false
	st.timerGen++
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
}

// finishCallLocked is onFinishProcessorCall: stop the timer, go idle and
// release whoever waits for the call.
func (f *extProcFilter) finishCallLocked(st *procState) {
	f.stopTimerLocked(st)
	st.cb = cbIdle
	if st.done != nil {
		close(st.done)
		st.done = nil
	}
}

// clearAsyncStateLocked: stop waiting, pass queued streamed chunks on
// unprocessed (ProcessorState::clearAsyncState).
func (f *extProcFilter) clearAsyncStateLocked() {
	for _, st := range []*procState{f.dec, f.enc} {
		f.finishCallLocked(st)
		if len(st.queue) > 0 {
			var data []byte
			eos := false
			for _, c := range st.queue {
				data = append(data, c.data...)
				eos = eos || c.eos
			}
			st.queue = nil
			st.outQ = append(st.outQ, bodyChunk{data: data, eos: eos})
			st.notifyOut()
		}
	}
}

// onMessageTimeout: 504 local reply, or continue without the processor with
// failure_mode_allow (Filter::onMessageTimeout).
func (f *extProcFilter) onMessageTimeout(st *procState, gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != st.timerGen || f.complete {
		return
	}
	f.s.log.Debug("ext_proc message timeout", "filter", f.cfg.name)
	f.setCompleteLocked()
	f.closeStreamLocked()
	if f.cfg.failureModeAllow {
		f.clearAsyncStateLocked()
		return
	}
	f.finishCallLocked(f.dec)
	f.finishCallLocked(f.enc)
	f.sendImmediateLocked(&extprocsvc.ImmediateResponse{
		Status:  statusCode(504),
		Details: "ext_proc_error_per-message_timeout_exceeded",
	})
}

// sendImmediateLocked is Filter::sendImmediateResponse: status below 200
// becomes 200, the header mutation is checked against the filter's mutation
// rules, and the reply is a local reply with the given body.
func (f *extProcFilter) sendImmediateLocked(ir *extprocsvc.ImmediateResponse) {
	code := 200
	if ir.GetStatus() != nil {
		code = int(ir.GetStatus().GetCode())
	}
	if code < 200 {
		code = 200
	}
	rules := f.cfg.rules
	hm := ir.GetHeaders()
	lr := &localReply{
		status:  code,
		body:    ir.GetBody(),
		details: replaceAllEmptySpace(ir.GetDetails()),
		mutate: func(h *headerMap) {
			if hm == nil {
				return
			}
			if err := extprocrules.ApplyHeaderMutation(hm, h, false, rules, false); err != nil {
				f.s.log.Error("Immediate response mutations failed", "err", err)
			}
		},
	}
	if f.cfg.upstream && f.s.sim.opts.UpstreamFailureRule == RuleStall {
		// Envoy 1.35 and older, Filter::sendImmediateResponse: "Ignoring
		// send immediate response when ext_proc filter is in upstream"
		// (counter send_immediate_resp_upstream_ignored). Nothing continues
		// the filter chain: the attempt stalls until a timeout ends it.
		// Since 1.36 the check is gone and an upstream filter's reply is
		// the downstream stream's local reply (UpstreamRequest's
		// UpstreamFilterManager::sendLocalReply), below: the attempt ends,
		// the router resets its other attempts and does not retry.
		f.s.sim.sendImmediateRespUpstreamIgnored.Add(1)
		f.s.log.Debug("ignoring send immediate response when ext_proc filter is in upstream", "filter", f.cfg.name, "status", lr.status, "details", lr.details)
		f.stalled = true
		return
	}
	f.s.requestLocalReply(lr)
}

// waitIfStalled blocks an upstream attempt whose processor asked for an
// ignored local reply until the attempt ends; it returns false then.
func (f *extProcFilter) waitIfStalled(ctx context.Context) bool {
	f.mu.Lock()
	stalled := f.stalled
	f.mu.Unlock()
	if !stalled {
		return f.s.alive() && ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
	case <-f.s.abortCh:
	}
	return false
}

// wait blocks until a call finishes; an upstream filter also stops when its
// attempt ends.
func (f *extProcFilter) wait(done chan struct{}) bool {
	if f.attemptCtx == nil {
		return f.s.wait(done)
	}
	select {
	case <-done:
		return f.s.alive() && f.attemptCtx.Err() == nil
	case <-f.s.abortCh:
		return false
	case <-f.s.ctx.Done():
		return false
	case <-f.attemptCtx.Done():
		return false
	}
}

func (f *extProcFilter) handleErrorLocked(err error) {
	f.setCompleteLocked()
	f.finishCallLocked(f.dec)
	f.finishCallLocked(f.enc)
	f.closeStreamLocked()
	f.sendImmediateLocked(&extprocsvc.ImmediateResponse{Status: statusCode(f.cfg.statusOnError), Details: err.Error()})
}

// onReceive is Filter::onReceiveMessage.
func (f *extProcFilter) onReceive(resp *extprocsvc.ProcessingResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.complete {
		return
	}
	if d := resp.GetOverrideMessageTimeout(); d != nil {
		f.onNewTimeoutLocked(d.AsDuration())
		return
	}
	if f.cfg.allowModeOverride && (f.dec.cb == cbHeaders || f.enc.cb == cbHeaders) && resp.GetModeOverride() != nil {
		m := extprocrules.EffectiveModeOverride(resp.GetModeOverride(), f.cfg.mode)
		if err := checkModeImplemented(m); err != nil {
			f.s.log.Error("envoysim: mode_override asks for an unimplemented mode", "err", err)
			f.handleErrorLocked(fmt.Errorf("envoysim_unimplemented_mode_override: %w", err))
			return
		}
		f.dec.setMode(m)
		f.enc.setMode(m)
	}
	var err error
	switch r := resp.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		f.setDynamicMetadataLocked(resp)
		err = f.handleHeadersLocked(f.dec, r.RequestHeaders.GetResponse())
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		f.setDynamicMetadataLocked(resp)
		err = f.handleHeadersLocked(f.enc, r.ResponseHeaders.GetResponse())
	case *extprocsvc.ProcessingResponse_RequestBody:
		f.setDynamicMetadataLocked(resp)
		err = f.handleBodyLocked(f.dec, r.RequestBody.GetResponse())
	case *extprocsvc.ProcessingResponse_ResponseBody:
		f.setDynamicMetadataLocked(resp)
		err = f.handleBodyLocked(f.enc, r.ResponseBody.GetResponse())
	case *extprocsvc.ProcessingResponse_ImmediateResponse:
		f.setDynamicMetadataLocked(resp)
		f.setCompleteLocked()
		f.finishCallLocked(f.dec)
		f.finishCallLocked(f.enc)
		f.closeStreamLocked()
		f.sendImmediateLocked(r.ImmediateResponse)
		return
	default:
		// Trailers replies (trailer mode SKIP) and empty messages.
		err = fmt.Errorf("unhandled message: %w", errSpurious)
	}
	switch {
	case err == nil:
		f.closeIfLastLocked(resp)
	case errors.Is(err, errSpurious):
		// envoy.reloadable_features.ext_proc_fail_close_spurious_resp (default
		// true since 1.35): a spurious reply follows failure_mode_allow.
		f.s.log.Warn("spurious ext_proc response", "filter", f.cfg.name, "type", fmt.Sprintf("%T", resp.GetResponse()))
		if f.cfg.failureModeAllow {
			f.closeStreamLocked()
			f.clearAsyncStateLocked()
			f.setCompleteLocked()
			return
		}
		f.handleErrorLocked(err)
	default:
		f.handleErrorLocked(err)
	}
}

// closeIfLastLocked is closeGrpcStreamIfLastRespReceived
// (envoy.reloadable_features.ext_proc_stream_close_optimization, default true
// since 1.37): once nothing more will be sent, the stream is closed.
func (f *extProcFilter) closeIfLastLocked(resp *extprocsvc.ProcessingResponse) {
	if f.closed || f.complete {
		return
	}
	encNone := !f.enc.sendHeaders && f.enc.bodyMode == extprocv3.ProcessingMode_NONE
	last := false
	switch resp.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		last = (f.dec.noBody || f.dec.bodyMode == extprocv3.ProcessingMode_NONE) && encNone
	case *extprocsvc.ProcessingResponse_RequestBody:
		last = f.dec.bodyMode == extprocv3.ProcessingMode_STREAMED && f.lastStreamedLocked(f.dec) && encNone
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		last = f.enc.noBody || f.enc.bodyMode == extprocv3.ProcessingMode_NONE
	case *extprocsvc.ProcessingResponse_ResponseBody:
		last = f.enc.bodyMode == extprocv3.ProcessingMode_STREAMED && f.lastStreamedLocked(f.enc)
	}
	if last {
		f.setCompleteLocked()
		f.closeStreamLocked()
	}
}

func (f *extProcFilter) lastStreamedLocked(st *procState) bool {
	n := len(st.outQ)
	return n > 0 && st.outQ[n-1].eos && len(st.queue) == 0
}

func (f *extProcFilter) setDynamicMetadataLocked(resp *extprocsvc.ProcessingResponse) {
	dm := resp.GetDynamicMetadata()
	if dm == nil || len(f.cfg.receiveNamespaces) == 0 {
		return
	}
	for ns, v := range dm.GetFields() {
		if !contains(f.cfg.receiveNamespaces, ns) {
			continue
		}
		if sv := v.GetStructValue(); sv != nil {
			f.s.info.mergeMetadata(ns, sv)
		}
	}
}

// handleHeadersLocked is ProcessorState::handleHeadersResponse.
func (f *extProcFilter) handleHeadersLocked(st *procState, cr *extprocsvc.CommonResponse) error {
	if st.cb != cbHeaders {
		return errSpurious
	}
	if cr.GetHeaderMutation() != nil {
		replacing := cr.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
		if err := extprocrules.ApplyHeaderMutation(cr.GetHeaderMutation(), st.headers, replacing, f.cfg.rules, st.shouldRemoveContentLength()); err != nil {
			return err
		}
	}
	f.clearRouteCacheLocked(st, cr)
	if cr.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE {
		if cr.GetBodyMutation() != nil {
			// The processor probably did not set a matching content-length.
			st.headers.Remove("content-length")
			st.bodyReplaced = true
			st.replacement = extprocrules.ApplyBodyMutation(cr.GetBodyMutation(), nil)
		}
		st.queue = nil
		st.bodyMode = extprocv3.ProcessingMode_NONE
	}
	if st.bodyMode != extprocv3.ProcessingMode_BUFFERED && st.bodyMode != extprocv3.ProcessingMode_STREAMED {
		st.headers = nil
	}
	f.finishCallLocked(st)
	return nil
}

// handleBodyLocked is ProcessorState::handleBodyResponse.
func (f *extProcFilter) handleBodyLocked(st *procState, cr *extprocsvc.CommonResponse) error {
	switch st.cb {
	case cbBufferedBody:
		if cr.GetHeaderMutation() != nil && st.headers != nil {
			if err := extprocrules.ApplyHeaderMutation(cr.GetHeaderMutation(), st.headers, false, f.cfg.rules, st.shouldRemoveContentLength()); err != nil {
				return err
			}
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			if st.headers != nil {
				if cl, ok := st.headers.Get("content-length"); ok {
					if n, err := parseUint(cl); err == nil && n != uint64(len(bm.GetBody())) {
						return errors.New("mismatch between content length and the length of the mutated body")
					}
				}
			}
			st.body = extprocrules.ApplyBodyMutation(bm, st.body)
		}
		f.finishCallLocked(st)
	case cbStreamedBody:
		if len(st.queue) == 0 {
			return errSpurious
		}
		c := st.queue[0]
		st.queue = st.queue[1:]
		if bm := cr.GetBodyMutation(); bm != nil {
			c.data = extprocrules.ApplyBodyMutation(bm, c.data)
		}
		st.outQ = append(st.outQ, c)
		st.notifyOut()
		if len(st.queue) == 0 {
			f.finishCallLocked(st)
		} else {
			// onFinishProcessorCall(Ok, StreamedBodyCallback) stops the timer
			// even though chunks are still pending; the next send re-arms it.
			f.stopTimerLocked(st)
		}
	default:
		return errSpurious
	}
	f.clearRouteCacheLocked(st, cr)
	st.headers = nil
	return nil
}

// clearRouteCacheLocked is DecodingProcessorState::clearRouteCache: request
// direction only, and only when the same CommonResponse has a header
// mutation (else counted as clear_route_cache_ignored).
func (f *extProcFilter) clearRouteCacheLocked(st *procState, cr *extprocsvc.CommonResponse) {
	if st.dir != dirRequest {
		return
	}
	if f.cfg.upstream {
		// An upstream filter cannot clear the route cache (counter
		// clear_route_cache_upstream_ignored).
		if cr.GetClearRouteCache() {
			f.s.log.Debug("ext_proc clear_route_cache ignored in an upstream filter chain", "filter", f.cfg.name)
		}
		return
	}
	if cr.GetHeaderMutation() == nil {
		if cr.GetClearRouteCache() {
			f.s.log.Debug("ext_proc clear_route_cache ignored: no header mutation", "filter", f.cfg.name)
		}
		return
	}
	switch f.cfg.routeCacheAction {
	case extprocv3.ExternalProcessor_DEFAULT:
		if cr.GetClearRouteCache() {
			f.s.clearRouteCache()
		}
	case extprocv3.ExternalProcessor_CLEAR:
		f.s.clearRouteCache()
	}
}

// baseRequestLocked starts a message of st's direction. Like
// Filter::buildHeaderRequest and Filter::setupBodyChunk (both call
// Filter::addAttributes), the first message of a direction carries that
// direction's attributes — request_attributes, response_attributes — in
// attributes["envoy.filters.http.ext_proc"], once
// (ProcessorState::sendAttributes / setSentAttributes).
func (f *extProcFilter) baseRequestLocked(st *procState) *extprocsvc.ProcessingRequest {
	req := &extprocsvc.ProcessingRequest{MetadataContext: f.s.info.forwardMetadata(f.cfg.forwardNamespaces)}
	attrs := f.cfg.requestAttrs
	if st.dir == dirResponse {
		attrs = f.cfg.responseAttrs
	}
	if len(attrs) > 0 && !st.attrsSent {
		st.attrsSent = true
		req.Attributes = map[string]*structpb.Struct{extProcAttributesKey: evaluateAttributes(attrs, f.host, f.s.info.attempts())}
	}
	if !f.protocolConfigSent {
		f.protocolConfigSent = true
		req.ProtocolConfig = &extprocsvc.ProtocolConfiguration{
			RequestBodyMode:  f.dec.bodyMode,
			ResponseBodyMode: f.enc.bodyMode,
		}
	}
	return req
}

// headers sends a headers message and waits for its reply. It returns false
// when the request must stop (a local reply or reset was requested).
func (f *extProcFilter) headers(st *procState, h *headerMap, endStream bool) bool {
	f.mu.Lock()
	if f.complete || !st.sendHeaders {
		if !f.complete && st.shouldRemoveContentLength() {
			h.Remove("content-length")
		}
		f.mu.Unlock()
		return true
	}
	if err := f.openLocked(); err != nil {
		f.onGrpcErrorLocked(codes.Unavailable, err.Error())
		f.mu.Unlock()
		return f.s.alive()
	}
	st.headers = h
	st.noBody = endStream
	req := f.baseRequestLocked(st)
	hh := &extprocsvc.HttpHeaders{Headers: h.ToProto(), EndOfStream: endStream}
	if st.dir == dirRequest {
		req.Request = &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: hh}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}
	}
	st.cb = cbHeaders
	st.done = make(chan struct{})
	done := st.done
	f.startTimerLocked(st)
	// decodeHeaders/encodeHeaders remove content-length right after sending,
	// with the configured mode (before any mode_override).
	if st.shouldRemoveContentLength() {
		h.Remove("content-length")
	}
	f.mu.Unlock()
	f.send(req)
	return f.wait(done)
}

// bodyAfterHeaders wires the body for the mode in force after the headers
// reply.
func (f *extProcFilter) bodyAfterHeaders(st *procState, body bodySource, noBody bool, limit int64) (bodySource, bool) {
	f.mu.Lock()
	complete, mode, replaced, repl := f.complete, st.bodyMode, st.bodyReplaced, st.replacement
	f.mu.Unlock()
	if replaced {
		return &replacedBody{inner: body, data: repl, noBody: noBody}, true
	}
	if noBody || complete {
		return body, true
	}
	switch mode {
	case extprocv3.ProcessingMode_BUFFERED:
		return f.buffered(st, body, limit)
	case extprocv3.ProcessingMode_STREAMED:
		return &streamedBody{f: f, st: st, inner: body}, true
	}
	return body, true
}

// buffered reads the whole body (up to the buffer limit), sends it as one
// message and waits for the reply (BUFFERED mode).
func (f *extProcFilter) buffered(st *procState, body bodySource, limit int64) (bodySource, bool) {
	data, err := readAll(f.s.curCtx(), body, limit)
	if err != nil {
		if errors.Is(err, errBufferLimit) {
			f.s.bufferOverflow(st.dir)
		} else {
			f.s.requestReset(err)
		}
		return nil, false
	}
	f.mu.Lock()
	if f.complete {
		f.mu.Unlock()
		return &bytesBody{data: data}, true
	}
	if err := f.openLocked(); err != nil {
		f.onGrpcErrorLocked(codes.Unavailable, err.Error())
		f.mu.Unlock()
		return &bytesBody{data: data}, f.s.alive()
	}
	st.body = data
	req := f.baseRequestLocked(st)
	hb := &extprocsvc.HttpBody{Body: data, EndOfStream: true}
	if st.dir == dirRequest {
		req.Request = &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}
	} else {
		req.Request = &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}
	}
	st.cb = cbBufferedBody
	st.done = make(chan struct{})
	done := st.done
	f.startTimerLocked(st)
	f.mu.Unlock()
	f.send(req)
	if !f.s.wait(done) {
		return nil, false
	}
	f.mu.Lock()
	out := st.body
	f.mu.Unlock()
	return &bytesBody{data: out}, true
}

// streamedBody pipes chunks through the processor (STREAMED): each chunk is
// sent as it arrives without waiting for earlier replies, and replies are
// matched to chunks in order.
type streamedBody struct {
	f       *extProcFilter
	st      *procState
	inner   bodySource
	started bool
}

func (b *streamedBody) next(ctx context.Context) ([]byte, bool, error) {
	abort := b.f.s.cur().abortCh
	if !b.started {
		b.started = true
		go b.pump(ctx)
	}
	for {
		b.f.mu.Lock()
		if len(b.st.outQ) > 0 {
			c := b.st.outQ[0]
			b.st.outQ = b.st.outQ[1:]
			b.f.mu.Unlock()
			return c.data, c.eos, c.err
		}
		b.f.mu.Unlock()
		select {
		case <-b.st.outSig:
		case <-abort:
			return nil, false, errAborted
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

func (b *streamedBody) pump(ctx context.Context) {
	f, st := b.f, b.st
	for {
		data, eos, err := b.inner.next(ctx)
		f.mu.Lock()
		if err != nil {
			st.outQ = append(st.outQ, bodyChunk{err: err})
			st.notifyOut()
			f.mu.Unlock()
			return
		}
		if f.complete || st.bodyMode != extprocv3.ProcessingMode_STREAMED {
			st.outQ = append(st.outQ, bodyChunk{data: data, eos: eos})
			st.notifyOut()
			f.mu.Unlock()
		} else {
			req := f.baseRequestLocked(st)
			hb := &extprocsvc.HttpBody{Body: data, EndOfStream: eos}
			if st.dir == dirRequest {
				req.Request = &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}
			} else {
				req.Request = &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}
			}
			st.queue = append(st.queue, bodyChunk{data: data, eos: eos})
			st.cb = cbStreamedBody
			f.startTimerLocked(st)
			f.mu.Unlock()
			f.send(req)
		}
		if eos {
			return
		}
	}
}

// destroy is Filter::onDestroy: the stream is closed when the HTTP stream ends.
func (f *extProcFilter) destroy() {
	f.mu.Lock()
	f.setCompleteLocked()
	f.stopTimerLocked(f.dec)
	f.stopTimerLocked(f.enc)
	f.closeStreamLocked()
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		// Guard against a sender blocked by flow control.
		time.AfterFunc(time.Second, cancel)
	}
}

// streamInfo holds what Envoy keeps in StreamInfo for one request: dynamic
// metadata shared by every filter (and every upstream attempt).
type streamInfo struct {
	mu       sync.Mutex
	metadata map[string]*structpb.Struct
	// attemptCount is StreamInfo::attemptCount, set by the router for each
	// upstream attempt (Router::Filter::decodeHeaders, doRetry:
	// callbacks_->streamInfo().setAttemptCount(attempt_count_)).
	attemptCount uint32
}

// setAttempts records the router's attempt count.
func (si *streamInfo) setAttempts(n int) {
	si.mu.Lock()
	defer si.mu.Unlock()
	si.attemptCount = uint32(n)
}

// attempts is the router's attempt count so far, 0 before the router ran.
func (si *streamInfo) attempts() uint32 {
	si.mu.Lock()
	defer si.mu.Unlock()
	return si.attemptCount
}

func (si *streamInfo) mergeMetadata(ns string, v *structpb.Struct) {
	si.mu.Lock()
	defer si.mu.Unlock()
	if si.metadata == nil {
		si.metadata = map[string]*structpb.Struct{}
	}
	cur, ok := si.metadata[ns]
	if !ok {
		cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		si.metadata[ns] = cur
	}
	// StreamInfo::setDynamicMetadata merges (Struct MergeFrom): top-level
	// keys are replaced.
	for k, fv := range v.GetFields() {
		cur.Fields[k] = fv
	}
}

// Metadata returns a copy of one namespace of dynamic metadata.
func (si *streamInfo) forwardMetadata(namespaces []string) *corev3.Metadata {
	md := &corev3.Metadata{}
	si.mu.Lock()
	defer si.mu.Unlock()
	for _, ns := range namespaces {
		if v, ok := si.metadata[ns]; ok {
			if md.FilterMetadata == nil {
				md.FilterMetadata = map[string]*structpb.Struct{}
			}
			md.FilterMetadata[ns] = v
		}
	}
	return md
}
