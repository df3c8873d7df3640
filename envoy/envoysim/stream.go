package envoysim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// localReply is what Envoy's sendLocalReply produces.
type localReply struct {
	status  int
	body    []byte
	mutate  func(*headerMap)
	details string
	flags   string // %RESPONSE_FLAGS%, logged
}

// stream is one downstream request through the HCM, its filters and the
// router (Http::FilterManager + Router::Filter in one).
type stream struct {
	sim    *Sim
	snap   *snapshot
	lc     *listenerConfig
	hcm    *hcmConfig
	routes *routeConfig
	w      http.ResponseWriter
	r      *http.Request
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	reqH    *headerMap
	info    *streamInfo
	filters []*extProcFilter
	// logState is what the access log records as the stream runs (accesslog.go).
	logState *streamLog

	mu          sync.Mutex
	routeCached bool
	route       *route
	vhost       *virtualHost
	// bufLimit is the stream's buffer limit (FilterManager::bufferLimit):
	// the listener's per_connection_buffer_limit_bytes, raised to the
	// route's request body buffer limit when the route is resolved.
	bufLimit int64

	// main is the phase of the request and the upstream response; ctx,
	// cancel and abortCh are main's. lr is set once a local reply goes
	// through the encoder filters (RuleLocalReply).
	main    *phase
	lr      atomic.Pointer[phase]
	abortCh chan struct{}
	// mainDirect (guarded by mu) is a local reply asked for after main's
	// local reply was requested but before it entered the encoder filters
	// (RuleLocalReply). Envoy encodes a local reply synchronously, so there
	// the second request finds the first stopped in the encoder filters
	// and is sent directly (sendDirectLocalReply); envoysim's goroutines
	// leave a window between the two that this closes the same way.
	mainDirect *localReply
	// mainStops (guarded by mu): when main's local reply was requested, a
	// router-level ext_proc filter was still processing, so in Envoy the
	// reply would stop there awaiting its response_headers reply.
	mainStops bool

	respStarted atomic.Bool
	// respEncoding: response headers entered the encoder filters.
	respEncoding atomic.Bool
	reqComplete  atomic.Bool
	idleMu       sync.Mutex
	idleTimer    *time.Timer
	idleTimeout  time.Duration
	reqTimer     *time.Timer
}

// phase is a stage of a stream that a local reply or a reset ends: first
// the request and the upstream response; then, when a local reply is
// encoded through the filter chain, that reply — a second local reply
// meanwhile is sent directly to the codec, bypassing the filters
// (DownstreamFilterManager::sendLocalReply: response headers exist but were
// not encoded → sendDirectLocalReply).
type phase struct {
	abortCh chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	// guarded by stream.mu
	aborted  bool
	local    *localReply
	resetErr error
}

func newPhase(parent context.Context) *phase {
	ctx, cancel := context.WithCancel(parent)
	return &phase{abortCh: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// cur is the phase in force.
func (s *stream) cur() *phase {
	if p := s.lr.Load(); p != nil {
		return p
	}
	return s.main
}

// curCtx is the context of the phase in force.
func (s *stream) curCtx() context.Context { return s.cur().ctx }

func (s *stream) alive() bool {
	select {
	case <-s.cur().abortCh:
		return false
	default:
		return true
	}
}

// wait blocks until done is closed or the phase in force is aborted.
func (s *stream) wait(done chan struct{}) bool {
	p := s.cur()
	select {
	case <-done:
		return s.alive()
	case <-p.abortCh:
		return false
	case <-p.ctx.Done():
		return false
	}
}

// abortLocked stops a phase: waiters wake up and the upstream request, if
// any, is reset (a local reply resets the upstream stream in Envoy too).
func (p *phase) abortLocked() {
	if !p.aborted {
		p.aborted = true
		close(p.abortCh)
		p.cancel()
	}
}

// requestLocalReply asks for a local reply in the phase in force; the first
// request wins. When response headers already went downstream the stream is
// reset instead (FilterManager::sendLocalReply after headers were sent).
func (s *stream) requestLocalReply(lr *localReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestLocalReplyLocked(s.cur(), lr)
}

func (s *stream) requestLocalReplyLocked(p *phase, lr *localReply) {
	if p.aborted {
		if p == s.main && p.local != nil && s.mainStops && s.lr.Load() == nil && s.mainDirect == nil &&
			s.sim.opts.UpstreamFailureRule == RuleLocalReply {
			s.mainDirect = lr
		}
		return
	}
	if p == s.main {
		for _, f := range s.filters {
			s.mainStops = s.mainStops || !f.completeA.Load()
		}
	}
	p.local = lr
	p.abortLocked()
}

// requestReset resets the stream without a reply.
func (s *stream) requestReset(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestResetLocked(s.cur(), err)
}

func (s *stream) requestResetLocked(p *phase, err error) {
	if p.aborted {
		return
	}
	p.resetErr = err
	p.abortLocked()
}

// requestMainReset and requestMainLocalReply are for goroutines of the main
// phase (request body, upstream response): once a local reply is being
// encoded they are no longer part of the stream.
func (s *stream) requestMainReset(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestResetLocked(s.main, err)
}

func (s *stream) requestMainLocalReply(lr *localReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestLocalReplyLocked(s.main, lr)
}

func (s *stream) bufferOverflow(dir direction) {
	if dir == dirRequest {
		// FilterManager: decoder buffer over the limit -> 413 (details
		// request_payload_too_large).
		s.requestLocalReply(&localReply{status: 413, body: []byte("Payload Too Large"), details: "request_payload_too_large"})
		return
	}
	// Encoder buffer over the limit before headers were sent -> 500 (details
	// response_payload_too_large).
	s.requestLocalReply(&localReply{status: 500, body: []byte("Internal Server Error"), details: "response_payload_too_large"})
}

func (s *stream) touch() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.idleTimer != nil {
		s.idleTimer.Reset(s.idleTimeout)
	}
}

// setIdleTimeout (re)arms the stream idle timer; a route idle_timeout
// replaces the HCM stream_idle_timeout once the route is known.
func (s *stream) setIdleTimeout(d time.Duration) {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
	s.idleTimeout = d
	if d <= 0 {
		return
	}
	s.idleTimer = time.AfterFunc(d, func() {
		// ActiveStream::onIdleTimeout: "stream timeout" before response
		// headers (a reset after), 504 when the whole request was received
		// and 408 otherwise (Utility::maybeRequestTimeoutCode).
		s.requestLocalReply(&localReply{status: s.requestTimeoutCode(), body: []byte("stream timeout"), details: "stream_idle_timeout"})
	})
}

// requestTimeoutCode is Http::Utility::maybeRequestTimeoutCode for the HCM's
// own timeouts: 504 once the last downstream byte was received, else 408.
func (s *stream) requestTimeoutCode() int {
	if s.reqComplete.Load() {
		return http.StatusGatewayTimeout
	}
	return http.StatusRequestTimeout
}

func (s *stream) clearRouteCache() {
	s.mu.Lock()
	s.routeCached = false
	s.mu.Unlock()
}

func (s *stream) currentRoute() (*route, *virtualHost) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.routeCached {
		s.vhost, s.route = s.routes.match(s.reqH)
		s.routeCached = true
		// ActiveStream::refreshCachedRoute: a route idle_timeout replaces
		// the HCM stream_idle_timeout as soon as the route is resolved.
		if s.route != nil && s.route.action != nil && s.route.action.idleTimeout != nil {
			s.setIdleTimeout(*s.route.action.idleTimeout)
		}
		// ActiveStream::refreshBufferLimit (since 1.37): the route's
		// request body buffer limit raises — never lowers — the stream's
		// buffer limit, for buffered request and response data alike
		// (FilterManager::setBufferLimit sets both watermarks).
		if s.route != nil && s.route.action != nil {
			if l, ok := requestBodyBufferLimit(s.route, s.vhost); ok && l > s.bufLimit {
				s.bufLimit = l
			}
		}
	}
	return s.route, s.vhost
}

// streamBufferLimit is FilterManager::bufferLimit.
func (s *stream) streamBufferLimit() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bufLimit
}

// requestBodyBufferLimit is Router::getRequestBodyBufferLimit
// (source/common/router/config_impl.cc, since 1.37): the route's
// request_body_buffer_limit, then the virtual host's, then the deprecated
// per_request_buffer_limit_bytes of the route, then of the virtual host.
func requestBodyBufferLimit(rt *route, vh *virtualHost) (int64, bool) {
	switch {
	case rt.bodyLimit >= 0:
		return rt.bodyLimit, true
	case vh != nil && vh.bodyLimit >= 0:
		return vh.bodyLimit, true
	case rt.legacyLimit >= 0:
		return rt.legacyLimit, true
	case vh != nil && vh.legacyLimit >= 0:
		return vh.legacyLimit, true
	}
	return 0, false
}

func (s *stream) serve() {
	defer s.cleanup()
	s.bufLimit = s.lc.bufferLimit
	s.setIdleTimeout(s.hcm.streamIdleTimeout)
	if s.hcm.requestTimeout > 0 {
		s.reqTimer = time.AfterFunc(s.hcm.requestTimeout, func() {
			// ActiveStream::onRequestTimeout, the same 504/408 rule.
			s.requestLocalReply(&localReply{status: s.requestTimeoutCode(), body: []byte("request timeout"), details: "request_overall_timeout"})
		})
	}
	if s.hcm.paths.enabled() {
		np, ok := s.hcm.paths.apply(s.reqH.Value(":path"))
		if !ok {
			// Sent before the filter chain exists: no filter sees it.
			s.writeLocalReply(&localReply{status: http.StatusBadRequest, details: "path_normalization_failed"})
			return
		}
		s.reqH.Set(":path", np)
	}
	s.prepareRequestHeaders()
	s.currentRoute()
	noBody := s.r.Body == nil || s.r.Body == http.NoBody || s.r.ContentLength == 0
	var body bodySource = &readerBody{
		r:       s.r.Body,
		length:  s.r.ContentLength,
		onChunk: func(int) { s.touch() },
		onEOS:   s.requestComplete,
	}
	if noBody {
		s.requestComplete()
		body = &bytesBody{sent: true}
	}
	for _, f := range s.filters {
		if !f.headers(f.dec, s.reqH, noBody) {
			s.finish()
			return
		}
		var ok bool
		if body, ok = f.bodyAfterHeaders(f.dec, body, noBody, s.streamBufferLimit()); !ok {
			s.finish()
			return
		}
	}
	s.runRouter(body, noBody)
	s.finish()
}

func (s *stream) requestComplete() {
	s.reqComplete.Store(true)
	if s.reqTimer != nil {
		s.reqTimer.Stop()
	}
}

func (s *stream) cleanup() {
	s.setIdleTimeout(0)
	if s.reqTimer != nil {
		s.reqTimer.Stop()
	}
	for _, f := range s.filters {
		f.destroy()
	}
	s.cancel()
	if p := s.lr.Load(); p != nil {
		p.cancel()
	}
	s.writeAccessLogs()
}

// finish sends the main phase's local reply, or resets the stream when a
// reply can no longer be sent.
func (s *stream) finish() {
	s.mu.Lock()
	lr, resetErr, aborted := s.main.local, s.main.resetErr, s.main.aborted
	viaFilters := aborted && lr != nil && !s.respStarted.Load() && !s.respEncoding.Load() &&
		s.sim.opts.UpstreamFailureRule == RuleLocalReply && len(s.filters) > 0
	var p *phase
	var direct *localReply
	if viaFilters {
		// From here on a further local reply belongs to this one's phase
		// (s.cur()); one asked for before is sent instead, directly.
		p = newPhase(s.r.Context())
		s.lr.Store(p)
		direct = s.mainDirect
	}
	s.mu.Unlock()
	if !aborted {
		return
	}
	if lr == nil || s.respStarted.Load() {
		s.resetStream(lr, resetErr)
	}
	switch {
	case direct != nil:
		p.cancel()
		s.sim.observeLocalReply(lr)
		lr = direct
	case s.respEncoding.Load():
		// Response headers are in the filter chain but not sent:
		// DownstreamFilterManager::sendDirectLocalReply bypasses the
		// filters.
	case viaFilters:
		s.localReplyViaFilterChain(lr, p)
		return
	}
	// Under RuleStall (Envoy 1.36 and older) every ext_proc filter's
	// onLocalReply sets processing_complete_ (skip_ext_proc_on_local_reply),
	// so the reply passes the filters untouched.
	s.writeLocalReply(lr)
}

// resetStream ends the downstream stream without a (further) reply.
func (s *stream) resetStream(lr *localReply, resetErr error) {
	if resetErr != nil {
		s.log.Debug("stream reset", "err", resetErr)
	} else if lr != nil {
		s.log.Debug("local reply after response started: stream reset", "status", lr.status, "details", lr.details)
	}
	panic(http.ErrAbortHandler)
}

// localReplyViaFilterChain, in phase p, is DownstreamFilterManager::
// sendLocalReplyViaFilterChain in Envoy 1.37+: the reply's headers and body
// are encoded through every encoder filter from the first, so each
// router-level ext_proc filter whose processing is not complete — not the
// one that asked for the reply — gets response_headers (with
// response_attributes on the first response message) and, in BUFFERED or
// STREAMED mode, the body, and may mutate it like an upstream response. A
// local reply asked for meanwhile (an ImmediateResponse, a message timeout,
// a gRPC error, a timeout) is sent directly, bypassing the filters.
func (s *stream) localReplyViaFilterChain(lr *localReply, p *phase) {
	go func() {
		// A downstream disconnect resets the stream.
		select {
		case <-s.r.Context().Done():
			s.requestReset(errors.New("downstream disconnected"))
		case <-p.ctx.Done():
		}
	}()
	s.log.Debug("local reply via the filter chain", "status", lr.status, "details", lr.details, "flags", lr.flags)
	s.sim.observeLocalReply(lr)
	h := localReplyHeaders(lr)
	noBody := len(lr.body) == 0 || s.r.Method == http.MethodHead
	var body bodySource = &bytesBody{data: lr.body}
	if noBody {
		body = &bytesBody{sent: true}
	}
	s.encode(h, body, noBody)
	s.mu.Lock()
	lr2, resetErr, aborted := p.local, p.resetErr, p.aborted
	s.mu.Unlock()
	if !aborted {
		return
	}
	if lr2 == nil || s.respStarted.Load() {
		s.resetStream(lr2, resetErr)
	}
	// DownstreamFilterManager::sendDirectLocalReply.
	s.writeLocalReply(lr2)
}

// localReplyHeaders is Utility::prepareLocalReply
// (source/common/http/utility.cc): the filter's header changes first; then a
// non-empty body gets content-length and, unless one was set, content-type
// text/plain, while an empty body drops both.
func localReplyHeaders(lr *localReply) *headerMap {
	h := &headerMap{}
	h.Set(":status", strconv.Itoa(lr.status))
	if lr.mutate != nil {
		lr.mutate(h)
	}
	if len(lr.body) > 0 {
		h.Set("content-length", strconv.Itoa(len(lr.body)))
		if !h.Has("content-type") {
			h.Set("content-type", "text/plain")
		}
	} else {
		h.Remove("content-length")
		h.Remove("content-type")
	}
	return h
}

// writeLocalReply sends a local reply straight to the codec.
func (s *stream) writeLocalReply(lr *localReply) {
	h := localReplyHeaders(lr)
	s.log.Debug("local reply", "status", lr.status, "details", lr.details, "flags", lr.flags)
	s.sim.observeLocalReply(lr)
	s.writeHeaders(h)
	if s.r.Method != http.MethodHead && len(lr.body) > 0 {
		_, _ = s.w.Write(lr.body)
	}
}

func (s *stream) writeHeaders(h *headerMap) {
	code, err := strconv.Atoi(h.Value(":status"))
	if err != nil {
		code = 502
	}
	// HCM server header (server_header_transformation, default OVERWRITE).
	switch s.hcm.serverHeaderTransform {
	case 0: // OVERWRITE
		h.Set("server", s.hcm.serverName)
	case 1: // APPEND_IF_ABSENT
		if !h.Has("server") {
			h.Set("server", s.hcm.serverName)
		}
	}
	dst := s.w.Header()
	for k, v := range httpHeader(h) {
		dst[k] = v
	}
	if !s.reqComplete.Load() && s.r.ProtoMajor < 2 {
		// ActiveStream::encodeHeaders: a response before the request is
		// complete closes an HTTP/1 connection (Connection: close).
		dst.Set("Connection", "close")
	}
	s.respStarted.Store(true)
	s.logState.noteStatus(code)
	s.w.WriteHeader(code)
	s.touch()
}

// prepareRequestHeaders is ConnectionManagerUtility::mutateRequestHeaders
// (source/common/http/conn_manager_utility.cc, Envoy 1.40). Since 1.33 no
// address is internal unless internal_address_config says so (envoysim does
// not implement that field), so every request is external: Envoy's internal
// x-envoy-* control headers are stripped, and with use_remote_address the
// request is an edge request (XFF appended, x-request-id replaced).
func (s *stream) prepareRequestHeaders() {
	h := s.reqH
	for _, k := range []string{"connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding", "x-envoy-internal"} {
		h.Remove(k)
	}
	remoteIP := hostOnly(s.r.RemoteAddr)
	edge := s.hcm.useRemoteAddress
	if edge {
		if !s.hcm.skipXffAppend {
			ip := remoteIP
			if addr := net.ParseIP(remoteIP); addr != nil && addr.IsLoopback() {
				// A loopback peer gets Envoy's own local address appended.
				if la, ok := s.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
					ip = hostOnly(la.String())
				}
			}
			if cur, ok := h.Get("x-forwarded-for"); ok && cur != "" {
				h.Set("x-forwarded-for", cur+","+ip)
			} else {
				h.Set("x-forwarded-for", ip)
			}
		}
		h.Set("x-forwarded-proto", "http")
	} else if !h.Has("x-forwarded-proto") {
		h.Set("x-forwarded-proto", "http")
	}
	for _, k := range cleanedInternalHeaders {
		h.Remove(k)
	}
	if edge {
		h.Remove("x-envoy-decorator-operation")
		h.Remove("x-envoy-downstream-service-cluster")
		h.Remove("x-envoy-downstream-service-node")
		h.Remove("x-envoy-original-path")
		h.Remove("x-envoy-original-host")
		if net.ParseIP(remoteIP) != nil {
			h.Set("x-envoy-external-address", remoteIP)
		}
	}
	for _, k := range s.routes.internalOnlyHeaders {
		h.Remove(strings.ToLower(k))
	}
	if s.hcm.generateRequestID {
		// The UUID request id extension: force a new id for edge requests
		// unless preserve_external_request_id; otherwise set one when missing
		// or empty (empty since 1.34).
		if (edge && !s.hcm.preserveExternalRequestID) || h.Value("x-request-id") == "" {
			h.Set("x-request-id", uuid.NewString())
		}
	}
}

// cleanedInternalHeaders are removed from every non-internal request
// (ConnectionManagerUtility::cleanInternalHeaders, Envoy 1.40). Other
// x-envoy-* headers pass through.
var cleanedInternalHeaders = []string{
	"x-envoy-retriable-status-codes",
	"x-envoy-retriable-header-names",
	"x-envoy-retry-on",
	"x-envoy-retry-grpc-on",
	"x-envoy-max-retries",
	"x-envoy-upstream-alt-stat-name",
	"x-envoy-upstream-rq-timeout-ms",
	"x-envoy-upstream-rq-per-try-timeout-ms",
	"x-envoy-upstream-rq-timeout-alt-response",
	"x-envoy-expected-rq-timeout-ms",
	"x-envoy-force-trace",
	"x-envoy-ip-tags",
	"x-envoy-original-url",
	"x-envoy-hedge-on-per-try-timeout",
}

func hostOnly(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// ---- router ----

type resetKind int

const (
	resetNone resetKind = iota
	resetOverflow
	resetConnectFailure
	resetConnectTimeout
	resetConnectionTermination
	resetRemote
	resetRemoteRefused
	resetPerTryTimeout
	resetGlobalTimeout
	resetDownstream
)

type attemptResult struct {
	resp          *http.Response
	respH         *headerMap // response headers after the upstream filter chain
	status        int
	chain         *upstreamChain
	kind          resetKind
	started       bool // request headers were written upstream
	transportFail string
	start         time.Time
	release       func()
}

func (k resetKind) String() string {
	switch k {
	case resetOverflow:
		return "overflow"
	case resetConnectFailure:
		return "remote connection failure"
	case resetConnectTimeout:
		return "connection timeout"
	case resetConnectionTermination:
		return "connection termination"
	case resetRemote:
		return "remote reset"
	case resetRemoteRefused:
		return "remote refused stream reset"
	}
	return "local reset"
}

// runRouter is Router::Filter: route lookup, cluster, header finalisation,
// timeouts, retries, and the response path.
func (s *stream) runRouter(body bodySource, noBody bool) {
	rt, vh := s.currentRoute()
	if rt == nil {
		// Router::Filter::decodeHeaders: no route -> 404, empty body.
		s.requestLocalReply(&localReply{status: 404, details: "route_not_found"})
		return
	}
	respMut := func(h *headerMap) {
		rt.respHeaders.apply(h)
		vh.respHeaders.apply(h)
		s.routes.respHeaders.apply(h)
	}
	if rt.direct != nil {
		s.requestLocalReply(&localReply{status: rt.direct.status, body: rt.direct.body, mutate: respMut, details: "direct_response"})
		return
	}
	ra := rt.action
	clusterName := ra.cluster
	if ra.clusterHeader != "" {
		clusterName = s.reqH.Value(ra.clusterHeader)
	}
	uc := s.sim.cluster(s.snap, clusterName)
	if uc == nil {
		s.requestLocalReply(&localReply{status: ra.clusterNotFoundCode, mutate: respMut, details: "cluster_not_found"})
		return
	}
	// finalizeRequestHeaders: route, then virtual host, then route config.
	rt.reqHeaders.apply(s.reqH)
	vh.reqHeaders.apply(s.reqH)
	s.routes.reqHeaders.apply(s.reqH)
	if ra.hostRewriteLiteral != "" {
		s.reqH.Set(":authority", ra.hostRewriteLiteral)
	}
	policy := ra.retry
	if policy == nil {
		policy = vh.retry
	}
	var perTry time.Duration
	if policy != nil {
		perTry = policy.perTryTimeout
	}
	// FilterUtility::finalTimeout: a per-try timeout not below a non-zero
	// global timeout is ignored.
	if ra.timeout > 0 && perTry >= ra.timeout {
		perTry = 0
	}
	if !s.hcm.suppressEnvoyHeaders {
		// FilterUtility::setTimeoutHeaders: the expected timeout is the per
		// try timeout if set, else the global one, capped by the global one.
		exp := ra.timeout
		if perTry > 0 {
			exp = perTry
		}
		if exp > 0 {
			s.reqH.Set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(exp.Milliseconds(), 10))
		}
	}
	autoSNIHost := s.reqH.Value(":authority")

	// Request body: feed the retry buffer from the filter chain. The limit
	// is Router::Filter::calculateEffectiveBufferLimit: the route's request
	// body buffer limit, else the stream's buffer limit. A body that outgrows
	// it while retries are enabled (any retry_on) gives up buffering
	// (Router::Filter::decodeData): cluster.<c>.retry_or_shadow_abandoned,
	// no retry for this request; the attempt in flight goes on, and when
	// none is (waiting for a retry back-off) the reply is a local 507.
	retryEnabled := policy != nil && policy.on != (retryOn{})
	limit := s.streamBufferLimit()
	if l, ok := requestBodyBufferLimit(rt, vh); ok {
		limit = l
	}
	overflowed := make(chan struct{})
	rb := newRetryBuffer(limit, func() {
		if retryEnabled {
			s.log.Debug("request body exceeds the retry buffer limit: giving up on buffering, no retries", "cluster", uc.cfg.name, "limit", limit)
			s.sim.incCluster(uc.cfg.name, statRetryOrShadowAbandoned)
			close(overflowed)
		}
	})
	downstreamDone := make(chan struct{})
	go func() {
		for {
			data, eos, err := body.next(s.ctx)
			rb.push(data, eos, err)
			if err != nil {
				if !errors.Is(err, errAborted) {
					s.requestMainReset(err)
				}
				return
			}
			if eos {
				close(downstreamDone)
				return
			}
		}
	}()
	// The global route timeout starts once the downstream request is
	// complete (Router::Filter::onRequestComplete) and spans the whole
	// response, streaming included.
	globalFired := make(chan struct{})
	var globalTimer *time.Timer
	if ra.timeout > 0 {
		go func() {
			select {
			case <-downstreamDone:
			case <-s.ctx.Done():
				return
			}
			s.mu.Lock()
			globalTimer = time.AfterFunc(ra.timeout, func() { close(globalFired) })
			s.mu.Unlock()
		}()
	}
	defer func() {
		s.mu.Lock()
		if globalTimer != nil {
			globalTimer.Stop()
		}
		s.mu.Unlock()
	}()

	remaining := 0
	if policy != nil {
		remaining = policy.numRetries
	}
	var heldRetry bool
	releaseRetry := func() {
		if heldRetry {
			uc.retries.Add(-1)
			heldRetry = false
		}
	}
	defer releaseRetry()
	var load priorityLoad = defaultPriorityLoad{}
	if policy != nil && policy.previousPrioritiesFreq > 0 {
		load = newPreviousPriorities(policy.previousPrioritiesFreq)
	}
	attempts := 0
	var res attemptResult
	defer func() { res.chain.destroy() }()
	for {
		attempts++
		// The downstream StreamInfo's attempt count (upstream.request_attempt_count):
		// 1 for the first attempt, incremented by Router::Filter::doRetry —
		// both before the host is chosen.
		s.info.setAttempts(attempts)
		host := uc.pickHost(load)
		if host == nil {
			// Router::Filter::sendNoHealthyUpstreamResponse: response flag
			// UH, not retried (a local reply), after
			// cluster.<c>.upstream_cx_none_healthy (ClusterEntry::chooseHost).
			s.sim.incCluster(uc.cfg.name, statNoneHealthy)
			s.requestLocalReply(&localReply{status: 503, body: []byte("no healthy upstream"), mutate: respMut, details: "no_healthy_upstream", flags: "UH"})
			return
		}
		if pp, ok := load.(*previousPriorities); ok {
			pp.onHostAttempted(host)
		}
		s.logState.noteUpstream(uc.cfg.name, host.address)
		rewrite := ""
		if ra.autoHostRewrite && host.hostname != "" {
			rewrite = host.hostname
		}
		res = s.attempt(uc, host, rb, noBody, perTry, globalFired, autoSNIHost, rewrite)
		// RetryStateImpl::shouldRetry: a held retry slot is released first.
		releaseRetry()
		retry := false
		if policy != nil && rb.canRetry() && res.kind != resetGlobalTimeout && res.kind != resetDownstream {
			would := false
			if res.resp != nil {
				would = policy.wouldRetryStatus(res.status)
			} else {
				would = policy.wouldRetryReset(res.kind, res.started)
			}
			if would && remaining > 0 {
				remaining--
				if tryAcquire(&uc.retries, uc.cfg.thresholds.maxRetries) {
					heldRetry = true
					retry = true
				} else {
					s.log.Debug("retry overflow (circuit_breakers max_retries)", "cluster", uc.cfg.name)
					s.sim.incCluster(uc.cfg.name, statRetryOverflow)
				}
			}
		}
		if !retry {
			break
		}
		if res.resp != nil {
			_ = res.resp.Body.Close()
			res.release()
		}
		// The retried UpstreamRequest is destroyed with its filters.
		res.chain.destroy()
		res.chain = nil
		s.sim.incCluster(uc.cfg.name, statRetry)
		if !s.backoff(policy, attempts, globalFired, overflowed) {
			s.timeoutOrAbort(respMut, globalFired, overflowed)
			return
		}
	}
	if res.resp == nil {
		switch res.kind {
		case resetDownstream:
			s.requestReset(errors.New("downstream aborted"))
		case resetGlobalTimeout, resetPerTryTimeout:
			details := "upstream_response_timeout"
			if res.kind == resetPerTryTimeout {
				details = "upstream_per_try_timeout"
			}
			s.requestLocalReply(&localReply{status: 504, body: []byte("upstream request timeout"), mutate: respMut, details: details})
		default:
			msg := "upstream connect error or disconnect/reset before headers. "
			if attempts > 1 {
				msg += "retried and the latest reset reason: "
			} else {
				msg += "reset reason: "
			}
			msg += res.kind.String()
			// Since 1.39 the transport failure reason stays out of the body
			// (runtime guard hide_transport_failure_reason_in_response_body,
			// default true); it is still in the details
			// (Router::Filter::onUpstreamReset).
			details := res.kind.String()
			if res.transportFail != "" {
				details += "|" + res.transportFail
			}
			details = replaceAllEmptySpace("upstream_reset_before_response_started{" + details + "}")
			flags := "UF"
			if res.kind == resetOverflow {
				flags = "UO"
			}
			s.requestLocalReply(&localReply{status: 503, body: []byte(msg), mutate: respMut, details: details, flags: flags})
		}
		return
	}
	defer res.release()
	s.respond(res, respMut, globalFired)
}

func (p *retryPolicy) wouldRetryStatus(code int) bool {
	switch {
	case p.on.fiveXX && code >= 500:
		return true
	case p.on.gatewayError && (code == 502 || code == 503 || code == 504):
		return true
	case p.on.retriable4xx && code == 409:
		return true
	case p.on.retriableStatusCodes && p.statusCodes[code]:
		return true
	}
	return false
}

// wouldRetryReset follows RetryStateImpl::wouldRetryFromReset: overflow is
// never retried; reset, 5xx and gateway-error cover every other reset
// (a per-try timeout is a local reset); connect-failure and refused-stream
// cover their own reasons.
func (p *retryPolicy) wouldRetryReset(k resetKind, started bool) bool {
	switch k {
	case resetOverflow, resetNone:
		return false
	}
	if p.on.resetBeforeRequest && !started {
		return true
	}
	if p.on.reset || p.on.fiveXX || p.on.gatewayError {
		return true
	}
	if p.on.connectFailure && (k == resetConnectFailure || k == resetConnectTimeout) {
		return true
	}
	if p.on.refusedStream && k == resetRemoteRefused {
		return true
	}
	return false
}

// backoff sleeps a fully jittered exponential interval
// (JitteredExponentialBackOffStrategy).
func (s *stream) backoff(p *retryPolicy, attempt int, globalFired, overflowed chan struct{}) bool {
	ceiling := p.baseInterval << min(attempt-1, 30)
	if ceiling > p.maxInterval || ceiling <= 0 {
		ceiling = p.maxInterval
	}
	d := time.Duration(0)
	if ceiling > 0 {
		d = time.Duration(rand.Int64N(int64(ceiling)))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-globalFired:
		return false
	case <-overflowed:
		return false
	case <-s.abortCh:
		return false
	case <-s.ctx.Done():
		return false
	}
}

// timeoutOrAbort answers a retry back-off that ended early: the route
// timeout fired, or the request body outgrew the retry buffer while no
// attempt was in flight (Router::Filter::decodeData → 507).
func (s *stream) timeoutOrAbort(respMut func(*headerMap), globalFired, overflowed chan struct{}) {
	select {
	case <-overflowed:
		s.requestLocalReply(&localReply{status: 507, body: []byte("exceeded request buffer limit while retrying upstream"), mutate: respMut, details: "request_payload_exceeded_retry_buffer_limit"})
		return
	default:
	}
	select {
	case <-globalFired:
		s.requestLocalReply(&localReply{status: 504, body: []byte("upstream request timeout"), mutate: respMut, details: "upstream_response_timeout", flags: "UT"})
	default:
	}
}

// attempt runs one upstream request until its response headers have passed
// the cluster's upstream filter chain. rewriteHost is the auto_host_rewrite
// value ("" for none).
func (s *stream) attempt(uc *upstreamCluster, host *hostConfig, rb *retryBuffer, noBody bool, perTry time.Duration, globalFired chan struct{}, autoSNIHost, rewriteHost string) attemptResult {
	res := attemptResult{start: time.Now(), release: func() {}}
	if !tryAcquire(&uc.requests, uc.cfg.thresholds.maxRequests) {
		res.kind = resetOverflow
		return res
	}
	if uc.pending.Load() >= uc.cfg.thresholds.maxPending {
		uc.requests.Add(-1)
		res.kind = resetOverflow
		return res
	}
	var releaseOnce sync.Once
	res.release = func() { releaseOnce.Do(func() { uc.requests.Add(-1) }) }

	ctx, cancel := context.WithCancelCause(s.ctx)
	var gotConn, wroteHeaders atomic.Bool
	var pendingCounted atomic.Bool
	var dialErr, tlsErr atomic.Value
	// onPoolReady is UpstreamRequest::onPoolReady's per-try timer start
	// (set below, before the request is sent).
	var onPoolReady func()
	trace := &httptrace.ClientTrace{
		GetConn: func(string) {
			if pendingCounted.CompareAndSwap(false, true) {
				uc.pending.Add(1)
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			gotConn.Store(true)
			if pendingCounted.CompareAndSwap(true, false) {
				uc.pending.Add(-1)
			}
			if onPoolReady != nil {
				onPoolReady()
			}
		},
		WroteHeaders: func() { wroteHeaders.Store(true) },
		ConnectDone: func(_, _ string, err error) {
			if err != nil {
				dialErr.Store(err)
			}
		},
		TLSHandshakeDone: func(_ tlsConnState, err error) {
			if err != nil {
				tlsErr.Store(err)
			}
		},
	}
	ctx = httptrace.WithClientTrace(ctx, trace)

	perTryFired := make(chan struct{})
	var perTryTimer *time.Timer
	var ptMu sync.Mutex
	startPerTry := func() {
		if perTry <= 0 {
			return
		}
		ptMu.Lock()
		defer ptMu.Unlock()
		if perTryTimer == nil {
			perTryTimer = time.AfterFunc(perTry, func() { close(perTryFired) })
		}
	}
	stopPerTry := func() {
		ptMu.Lock()
		defer ptMu.Unlock()
		if perTryTimer != nil {
			perTryTimer.Stop()
		}
	}

	// The attempt context ends with the per-try or route timeout and with a
	// downstream abort, so an upstream filter waiting for its processor (or
	// stalled by a local reply ignored under RuleStall) gives up with the
	// attempt.
	watchStop := make(chan struct{})
	defer close(watchStop)
	go func() {
		select {
		case <-perTryFired:
			cancel(errPerTry)
		case <-globalFired:
			cancel(errGlobal)
		case <-s.abortCh:
			cancel(errDownstream)
		case <-watchStop:
		}
	}()
	failPhase := func() attemptResult {
		cause := context.Cause(ctx)
		stopPerTry()
		cancel(cause)
		res.release()
		switch {
		case errors.Is(cause, errPerTry):
			res.kind = resetPerTryTimeout
		case errors.Is(cause, errGlobal):
			res.kind = resetGlobalTimeout
		default:
			res.kind = resetDownstream
		}
		res.chain.destroy()
		res.chain = nil
		return res
	}
	var replacement []byte
	replaced := false
	if len(uc.cfg.upstreamFilters) == 0 {
		// UpstreamRequest::onPoolReady starts the per-try timer when the
		// downstream request is complete, else Router::Filter::
		// onRequestComplete starts it when it completes
		// (create_per_try_timeout_on_request_complete_): connecting does not
		// count, sending the body does.
		onPoolReady = func() {
			go func() {
				if rb.waitComplete(ctx) {
					startPerTry()
				}
			}()
		}
	} else {
		// UpstreamRequest::acceptHeadersFromRouter asks the pool for a stream
		// (newStream) before the upstream filter chain decodes the headers;
		// onPoolReady starts the per-try timer once the downstream request is
		// complete, concurrently with the chain.
		// Otherwise the timer starts when the downstream request completes
		// (create_per_try_timeout_on_request_complete_).
		go func() {
			if rb.waitComplete(ctx) {
				startPerTry()
			}
		}()
		res.chain = newUpstreamChain(s, uc.cfg.upstreamFilters, host, ctx)
		if !res.chain.decodeHeaders(s, s.reqH, noBody, ctx) {
			return failPhase()
		}
		replacement, replaced = res.chain.requestBody()
	}
	if rewriteHost != "" {
		// UpstreamRequest::onPoolReady: auto_host_rewrite updates :authority
		// in the shared downstream header map (later attempts see it). The
		// pool becomes ready after the upstream filters started, so their
		// first request-headers message shows the header map before this
		// attempt's rewrite.
		s.reqH.Set(":authority", rewriteHost)
	}

	scheme := "http"
	if uc.cfg.tls != nil {
		scheme = "https"
	}
	method := s.reqH.Value(":method")
	path := s.reqH.Value(":path")
	authority := s.reqH.Value(":authority")
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+authority+path, nil)
	if err != nil {
		cancel(err)
		res.release()
		res.kind = resetRemote
		res.transportFail = err.Error()
		return res
	}
	req.Host = authority
	req.Header = httpHeader(s.reqH)
	if replaced {
		// CONTINUE_AND_REPLACE: the replacement is the body; the original is
		// discarded and content-length was removed (a later filter may set it).
		req.Body = &onceReader{data: replacement, onEOF: startPerTry}
		req.ContentLength = -1
		if len(replacement) == 0 {
			req.Body = http.NoBody
			startPerTry()
		}
		if cl, ok := s.reqH.Get("content-length"); ok {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				req.ContentLength = n
			}
		}
	} else if noBody {
		req.Body = http.NoBody
		req.ContentLength = 0
	} else {
		req.Body = rb.reader(ctx, nil)
		req.ContentLength = -1
		if cl, ok := s.reqH.Get("content-length"); ok {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				req.ContentLength = n
			}
		}
		req.GetBody = nil
	}

	type rtResult struct {
		resp *http.Response
		err  error
	}
	ch := make(chan rtResult, 1)
	go func() {
		resp, err := uc.transport(host, autoSNIHost).RoundTrip(req)
		ch <- rtResult{resp, err}
	}()
	var r rtResult
	select {
	case r = <-ch:
	case <-perTryFired:
		cancel(errors.New("per try timeout"))
		r = <-ch
		if r.err == nil {
			_ = r.resp.Body.Close()
		}
		r = rtResult{err: errPerTry}
	case <-globalFired:
		cancel(errors.New("global timeout"))
		r = <-ch
		if r.err == nil {
			_ = r.resp.Body.Close()
		}
		r = rtResult{err: errGlobal}
	case <-s.abortCh:
		cancel(errAborted)
		r = <-ch
		if r.err == nil {
			_ = r.resp.Body.Close()
		}
		r = rtResult{err: errDownstream}
	}
	if res.chain == nil {
		stopPerTry()
	}
	res.started = wroteHeaders.Load()
	if pendingCounted.CompareAndSwap(true, false) {
		uc.pending.Add(-1)
	}
	if r.err != nil {
		stopPerTry()
		cancel(r.err)
		res.release()
		res.chain.destroy()
		res.chain = nil
		// The attempt watcher may have cancelled the request first.
		cause := context.Cause(ctx)
		switch {
		case errors.Is(r.err, errPerTry) || errors.Is(cause, errPerTry):
			res.kind = resetPerTryTimeout
		case errors.Is(r.err, errGlobal) || errors.Is(cause, errGlobal):
			res.kind = resetGlobalTimeout
		case errors.Is(r.err, errDownstream) || errors.Is(cause, errDownstream) || s.ctx.Err() != nil:
			res.kind = resetDownstream
		case !gotConn.Load():
			res.kind = resetConnectFailure
			var cause error
			if v, ok := tlsErr.Load().(error); ok {
				cause = v
				res.transportFail = "TLS_error:|" + v.Error() + ":TLS_error_end"
			} else if v, ok := dialErr.Load().(error); ok {
				cause = v
				res.transportFail = "delayed connect error: " + connectErrorText(v)
			} else {
				cause = r.err
				res.transportFail = connectErrorText(r.err)
			}
			if errors.Is(cause, context.DeadlineExceeded) || isTimeout(cause) {
				res.kind = resetConnectTimeout
				res.transportFail = ""
			}
		case strings.Contains(r.err.Error(), "REFUSED_STREAM"):
			res.kind = resetRemoteRefused
		case strings.Contains(r.err.Error(), "stream error"):
			res.kind = resetRemote
		default:
			res.kind = resetConnectionTermination
		}
		s.log.Debug("upstream attempt failed", "cluster", uc.cfg.name, "host", host.address, "reason", res.kind.String(), "err", r.err)
		return res
	}
	res.resp = r.resp
	res.respH = responseHeaderMap(r.resp)
	res.status = r.resp.StatusCode
	if res.chain != nil {
		// The response headers pass the upstream filters (in reverse order)
		// before the router sees them; the per-try timer still runs.
		if !res.chain.encodeHeaders(s, res.respH, responseNoBody(r.resp, s.r.Method), ctx) {
			_ = r.resp.Body.Close()
			res.resp = nil
			return failPhase()
		}
		stopPerTry()
		if code, err := strconv.Atoi(res.respH.Value(":status")); err == nil {
			res.status = code
		}
	}
	prevRelease := res.release
	res.release = func() { cancel(nil); prevRelease() }
	return res
}

func responseNoBody(resp *http.Response, method string) bool {
	return resp.ContentLength == 0 || method == http.MethodHead || resp.StatusCode == 204 || resp.StatusCode == 304
}

// responseHeaderMap is the codec's view of an upstream response.
func responseHeaderMap(resp *http.Response) *headerMap {
	h := &headerMap{}
	h.Set(":status", strconv.Itoa(resp.StatusCode))
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range vs {
			h.Add(lk, v)
		}
	}
	if resp.ContentLength >= 0 && !h.Has("content-length") && resp.ContentLength > 0 {
		h.Set("content-length", strconv.FormatInt(resp.ContentLength, 10))
	}
	return h
}

// onceReader delivers a replacement body and reports its end.
type onceReader struct {
	data  []byte
	off   int
	onEOF func()
	eof   bool
}

func (r *onceReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		if !r.eof {
			r.eof = true
			if r.onEOF != nil {
				r.onEOF()
			}
		}
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

func (r *onceReader) Close() error { return nil }

var (
	errPerTry     = errors.New("per try timeout")
	errGlobal     = errors.New("global timeout")
	errDownstream = errors.New("downstream reset")
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func connectErrorText(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "Connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "Connection reset by peer"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "DNS resolution failed: " + dnsErr.Err
	}
	return err.Error()
}

// respond runs the response through the encoder filters (in reverse order)
// and streams it downstream, flushing every chunk.
func (s *stream) respond(res attemptResult, respMut func(*headerMap), globalFired chan struct{}) {
	resp := res.resp
	h := res.respH
	s.logState.noteUpstreamResponse()
	if !s.hcm.suppressEnvoyHeaders {
		h.Set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(res.start).Milliseconds(), 10))
	}
	respMut(h)
	noBody := responseNoBody(resp, s.r.Method)
	upstreamDone := make(chan struct{})
	var upOnce sync.Once
	var body bodySource = &readerBody{
		r:       resp.Body,
		length:  resp.ContentLength,
		onChunk: func(int) { s.touch() },
		onEOS:   func() { upOnce.Do(func() { close(upstreamDone) }) },
	}
	if noBody {
		upOnce.Do(func() { close(upstreamDone) })
		body = &bytesBody{sent: true}
	}
	if res.chain != nil {
		body = res.chain.responseBody(body, noBody)
	}
	// The route timeout covers the response until it is complete: when it
	// fires mid-stream the downstream stream is reset.
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-globalFired:
			select {
			case <-upstreamDone:
				return
			default:
			}
			s.requestMainLocalReply(&localReply{status: 504, body: []byte("upstream request timeout"), mutate: respMut, details: "upstream_response_timeout", flags: "UT"})
			_ = resp.Body.Close()
		case <-upstreamDone:
		case <-watchDone:
		}
	}()
	s.encode(h, body, noBody)
}

// encode runs response headers and body through the encoder filters (in
// reverse order) and streams them downstream, flushing every chunk. It
// returns when the body is done or the phase in force was aborted.
func (s *stream) encode(h *headerMap, body bodySource, noBody bool) {
	// From here on the response headers are in the filter chain: a local
	// reply can no longer go through it.
	s.respEncoding.Store(true)
	for i := len(s.filters) - 1; i >= 0; i-- {
		f := s.filters[i]
		if !f.headers(f.enc, h, noBody) {
			return
		}
		var ok bool
		if body, ok = f.bodyAfterHeaders(f.enc, body, noBody, s.streamBufferLimit()); !ok {
			return
		}
	}
	if !s.alive() {
		return
	}
	s.writeHeaders(h)
	flusher := http.NewResponseController(s.w)
	if !noBody {
		_ = flusher.Flush()
	}
	ctx := s.curCtx()
	for {
		data, eos, err := body.next(ctx)
		if err != nil {
			if !errors.Is(err, errAborted) {
				s.requestReset(fmt.Errorf("response body: %w", err))
			}
			return
		}
		if len(data) > 0 {
			if _, err := s.w.Write(data); err != nil {
				s.requestReset(err)
				return
			}
			_ = flusher.Flush()
			s.touch()
		}
		if eos {
			return
		}
	}
}

// emptySpace is StringUtil::replaceAllEmptySpace's replacement map
// (source/common/common/utility.cc): response code details carry no
// whitespace.
var emptySpace = strings.NewReplacer(" ", "_", "\t", "_", "\f", "_", "\v", "_", "\n", "_", "\r", "_")

func replaceAllEmptySpace(s string) string { return emptySpace.Replace(s) }
