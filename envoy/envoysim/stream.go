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
	local       *localReply
	resetErr    error
	abortCh     chan struct{}
	aborted     bool

	respStarted atomic.Bool
	idleMu      sync.Mutex
	idleTimer   *time.Timer
	idleTimeout time.Duration
	reqTimer    *time.Timer
}

func (s *stream) alive() bool {
	select {
	case <-s.abortCh:
		return false
	default:
		return true
	}
}

// wait blocks until done is closed or the stream is aborted.
func (s *stream) wait(done chan struct{}) bool {
	select {
	case <-done:
		return s.alive()
	case <-s.abortCh:
		return false
	case <-s.ctx.Done():
		return false
	}
}

// abortLocked stops the stream: waiters wake up and the upstream request, if
// any, is reset (a local reply resets the upstream stream in Envoy too).
func (s *stream) abortLocked() {
	if !s.aborted {
		s.aborted = true
		close(s.abortCh)
		s.cancel()
	}
}

// requestLocalReply asks for a local reply; the first request wins. When
// response headers already went downstream the stream is reset instead
// (FilterManager::sendLocalReply after headers were sent).
func (s *stream) requestLocalReply(lr *localReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return
	}
	s.local = lr
	s.abortLocked()
}

// requestReset resets the stream without a reply.
func (s *stream) requestReset(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return
	}
	s.resetErr = err
	s.abortLocked()
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
		// ActiveStream::onIdleTimeout: 408 "stream timeout" before response
		// headers, a reset after.
		s.requestLocalReply(&localReply{status: 408, body: []byte("stream timeout"), details: "stream_idle_timeout"})
	})
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
	}
	return s.route, s.vhost
}

func (s *stream) serve() {
	defer s.cleanup()
	s.setIdleTimeout(s.hcm.streamIdleTimeout)
	if s.hcm.requestTimeout > 0 {
		s.reqTimer = time.AfterFunc(s.hcm.requestTimeout, func() {
			s.requestLocalReply(&localReply{status: 408, body: []byte("request timeout"), details: "request_overall_timeout"})
		})
	}
	s.prepareRequestHeaders()
	rt, vh := s.currentRoute()
	limit := s.lc.bufferLimit
	if rt != nil && rt.bufferLimit > 0 {
		limit = rt.bufferLimit
	} else if vh != nil && vh.bufferLimit > 0 {
		limit = vh.bufferLimit
	}
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
		if body, ok = f.bodyAfterHeaders(f.dec, body, noBody, limit); !ok {
			s.finish()
			return
		}
	}
	s.runRouter(body, noBody, limit)
	s.finish()
}

func (s *stream) requestComplete() {
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
	s.writeAccessLogs()
}

// finish writes a pending local reply, or resets the stream when a reply can
// no longer be sent.
func (s *stream) finish() {
	s.mu.Lock()
	lr, resetErr, aborted := s.local, s.resetErr, s.aborted
	s.mu.Unlock()
	if !aborted {
		return
	}
	if lr == nil || s.respStarted.Load() {
		if resetErr != nil {
			s.log.Debug("stream reset", "err", resetErr)
		} else if lr != nil {
			s.log.Debug("local reply after response started: stream reset", "status", lr.status, "details", lr.details)
		}
		panic(http.ErrAbortHandler)
	}
	s.writeLocalReply(lr)
}

func (s *stream) writeLocalReply(lr *localReply) {
	h := &headerMap{}
	h.set(":status", strconv.Itoa(lr.status))
	if len(lr.body) > 0 {
		// Utility::prepareLocalReply: text/plain for a non-empty body.
		h.set("content-type", "text/plain")
	}
	h.set("content-length", strconv.Itoa(len(lr.body)))
	if lr.mutate != nil {
		lr.mutate(h)
	}
	s.log.Debug("local reply", "status", lr.status, "details", lr.details)
	s.writeHeaders(h)
	if s.r.Method != http.MethodHead && len(lr.body) > 0 {
		_, _ = s.w.Write(lr.body)
	}
}

func (s *stream) writeHeaders(h *headerMap) {
	code, err := strconv.Atoi(h.value(":status"))
	if err != nil {
		code = 502
	}
	// HCM server header (server_header_transformation, default OVERWRITE).
	switch s.hcm.serverHeaderTransform {
	case 0: // OVERWRITE
		h.set("server", s.hcm.serverName)
	case 1: // APPEND_IF_ABSENT
		if !h.has("server") {
			h.set("server", s.hcm.serverName)
		}
	}
	dst := s.w.Header()
	for k, v := range h.httpHeader() {
		dst[k] = v
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
		h.remove(k)
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
			if cur, ok := h.get("x-forwarded-for"); ok && cur != "" {
				h.set("x-forwarded-for", cur+","+ip)
			} else {
				h.set("x-forwarded-for", ip)
			}
		}
		h.set("x-forwarded-proto", "http")
	} else if !h.has("x-forwarded-proto") {
		h.set("x-forwarded-proto", "http")
	}
	for _, k := range cleanedInternalHeaders {
		h.remove(k)
	}
	if edge {
		h.remove("x-envoy-decorator-operation")
		h.remove("x-envoy-downstream-service-cluster")
		h.remove("x-envoy-downstream-service-node")
		if net.ParseIP(remoteIP) != nil {
			h.set("x-envoy-external-address", remoteIP)
		}
	}
	for _, k := range s.routes.internalOnlyHeaders {
		h.remove(strings.ToLower(k))
	}
	if s.hcm.generateRequestID {
		// The UUID request id extension: force a new id for edge requests
		// unless preserve_external_request_id; otherwise set one when missing
		// or empty (empty since 1.34).
		if (edge && !s.hcm.preserveExternalRequestID) || h.value("x-request-id") == "" {
			h.set("x-request-id", uuid.NewString())
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
func (s *stream) runRouter(body bodySource, noBody bool, bufferLimit int64) {
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
		clusterName = s.reqH.value(ra.clusterHeader)
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
		s.reqH.set(":authority", ra.hostRewriteLiteral)
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
			s.reqH.set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(exp.Milliseconds(), 10))
		}
	}
	autoSNIHost := s.reqH.value(":authority")

	// Request body: feed the retry buffer from the filter chain.
	rb := newRetryBuffer(bufferLimit)
	downstreamDone := make(chan struct{})
	go func() {
		for {
			data, eos, err := body.next(s.ctx)
			rb.push(data, eos, err)
			if err != nil {
				if !errors.Is(err, errAborted) {
					s.requestReset(err)
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
		host := uc.pickHost(load)
		if host == nil {
			s.requestLocalReply(&localReply{status: 503, body: []byte("no healthy upstream"), mutate: respMut, details: "no_healthy_upstream"})
			return
		}
		if pp, ok := load.(*previousPriorities); ok {
			pp.onHostAttempted(host)
		}
		// The downstream StreamInfo's attempt count (upstream.request_attempt_count):
		// 1 for the first attempt, incremented by Router::Filter::doRetry.
		s.info.setAttempts(attempts)
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
		if !s.backoff(policy, attempts, globalFired) {
			s.timeoutOrAbort(respMut, globalFired)
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
			if res.transportFail != "" {
				msg += ", transport failure reason: " + res.transportFail
			}
			s.requestLocalReply(&localReply{status: 503, body: []byte(msg), mutate: respMut, details: "upstream_reset_before_response_started{" + res.kind.String() + "}"})
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
func (s *stream) backoff(p *retryPolicy, attempt int, globalFired chan struct{}) bool {
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
	case <-s.abortCh:
		return false
	case <-s.ctx.Done():
		return false
	}
}

func (s *stream) timeoutOrAbort(respMut func(*headerMap), globalFired chan struct{}) {
	select {
	case <-globalFired:
		s.requestLocalReply(&localReply{status: 504, body: []byte("upstream request timeout"), mutate: respMut, details: "upstream_response_timeout"})
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
	// stalled by an ignored local reply) gives up with the attempt.
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
	if len(uc.cfg.upstreamFilters) > 0 {
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
		s.reqH.set(":authority", rewriteHost)
	}

	scheme := "http"
	if uc.cfg.tls != nil {
		scheme = "https"
	}
	method := s.reqH.value(":method")
	path := s.reqH.value(":path")
	authority := s.reqH.value(":authority")
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+authority+path, nil)
	if err != nil {
		cancel(err)
		res.release()
		res.kind = resetRemote
		res.transportFail = err.Error()
		return res
	}
	req.Host = authority
	req.Header = s.reqH.httpHeader()
	if replaced {
		// CONTINUE_AND_REPLACE: the replacement is the body; the original is
		// discarded and content-length was removed (a later filter may set it).
		req.Body = &onceReader{data: replacement, onEOF: startPerTry}
		req.ContentLength = -1
		if len(replacement) == 0 {
			req.Body = http.NoBody
			startPerTry()
		}
		if cl, ok := s.reqH.get("content-length"); ok {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				req.ContentLength = n
			}
		}
	} else if noBody {
		req.Body = http.NoBody
		req.ContentLength = 0
		startPerTry()
	} else {
		// The per-try timer starts when the request is fully sent upstream.
		req.Body = rb.reader(ctx, startPerTry)
		req.ContentLength = -1
		if cl, ok := s.reqH.get("content-length"); ok {
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
		if code, err := strconv.Atoi(res.respH.value(":status")); err == nil {
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
	h.set(":status", strconv.Itoa(resp.StatusCode))
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range vs {
			h.add(lk, v)
		}
	}
	if resp.ContentLength >= 0 && !h.has("content-length") && resp.ContentLength > 0 {
		h.set("content-length", strconv.FormatInt(resp.ContentLength, 10))
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
		h.set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(res.start).Milliseconds(), 10))
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
			s.requestLocalReply(&localReply{status: 504, body: []byte("upstream request timeout"), mutate: respMut, details: "upstream_response_timeout"})
			_ = resp.Body.Close()
		case <-upstreamDone:
		case <-watchDone:
		}
	}()
	for i := len(s.filters) - 1; i >= 0; i-- {
		f := s.filters[i]
		if !f.headers(f.enc, h, noBody) {
			return
		}
		var ok bool
		if body, ok = f.bodyAfterHeaders(f.enc, body, noBody, s.lc.bufferLimit); !ok {
			return
		}
	}
	if !s.alive() {
		return
	}
	s.writeHeaders(h)
	flusher := http.NewResponseController(s.w)
	_ = flusher.Flush()
	for {
		data, eos, err := body.next(s.ctx)
		if err != nil {
			if !errors.Is(err, errAborted) {
				s.requestReset(fmt.Errorf("upstream body: %w", err))
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
