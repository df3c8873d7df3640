package router

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/handoff"
)

// Envoy answers some requests itself: 503 "no healthy upstream", 504
// "upstream request timeout", the 500 or 504 of an upstream-chain ext_proc
// stream that failed or timed out, 507 when a retry's body no longer fits
// the buffer. Since Envoy 1.37 such local replies pass through this filter's
// response phases (docs/envoy.md, "Upstream filter failures"); older
// releases send them to the client unseen. A local reply is text/plain, or
// has no content type when its body is empty, while Anthropic and Bedrock
// answer errors in JSON — that is how the processor tells one from an
// upstream's answer.

// isLocalReply reports whether response headers with status and contentType
// are Envoy's own error reply rather than an upstream's.
func isLocalReply(status int, contentType []byte) bool {
	if status < 400 {
		return false
	}
	if len(contentType) == 0 {
		return true
	}
	if i := bytes.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(contentType), []byte("text/plain"))
}

// convertsLocalReplies reports whether the request's client reads Anthropic
// errors. Claude Code's Bedrock mode reads AWS errors through the AWS SDK,
// so its local replies pass unchanged.
func (p *Processor) convertsLocalReplies() bool {
	switch p.req.kind {
	case pathMessages, pathCountTokens, pathV1:
		return true
	}
	return false
}

// answerLocalReply replaces Envoy's local reply with an Anthropic error of
// the same status that carries the request id, so that Claude Code shows
// (and retries) it like any API error and a developer's report names a
// request an operator can find. A plan_first request first settles which
// backend the reply ends: a fallback whose Bedrock attempt failed is still
// a fallback. The request stays metered with the reply's status.
func (p *Processor) answerLocalReply(ctx context.Context, req *extprocv3.ProcessingRequest, status int) *extprocv3.ProcessingResponse {
	if b, ok := p.backend.(*planFirst); ok && b.chosen == nil {
		b.readAttemptCount(req)
		b.decide(ctx, p)
	}
	p.endResponse()
	p.r.metrics.localReply(status)
	p.logger().LogAttrs(ctx, slog.LevelWarn, "Envoy answered the request itself; the client gets an Anthropic error", p.replyAttrs(status)...)
	return p.errorReply(status, localReplyMessage(status), "ccproxy_envoy_local_reply")
}

// AttemptFailed answers the client at once when the upstream processor
// failed the request's attempt a (handoff.Watcher), before any response
// reached this processor. Envoy 1.37–1.40 would send their own 500 or 504
// through this processor a moment later; older releases would stall the
// attempt until its per-try timeout, and only this processor can end that
// wait (an ImmediateResponse is taken in any state of the ext_proc filter:
// ext_proc.cc, Filter::onReceiveMessage). Either way the client gets the
// same error: the status Envoy would answer (504 for a late reply, 500 for
// a failed stream) in the client's format, metered with that status. The
// breaker is not charged: the gateway failed, not Plan. It runs on the
// upstream processor's goroutine.
func (p *Processor) AttemptFailed(a handoff.Attempt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.interrupted || p.out == nil || p.resp.status != 0 || p.outCtx.Err() != nil {
		// The stream is over, or a response (Envoy's own reply included)
		// already reached this processor and is answered as such.
		return
	}
	ctx := p.outCtx
	status := a.Failure.Status()
	if b, ok := p.backend.(*planFirst); ok && b.chosen == nil {
		b.decide(ctx, p)
	}
	p.resp.status = status
	p.endResponse()
	p.interrupted = true
	p.r.metrics.attemptFailures.WithLabelValues(a.Backend, a.Failure.String()).Inc()
	attrs := append(p.replyAttrs(status), slog.String("failure", a.Failure.String()), slog.String("backend", a.Backend))
	p.logger().LogAttrs(ctx, slog.LevelError, "the upstream processor failed the attempt; the client gets an error at once", attrs...)
	msg := "ccproxy: the gateway failed while preparing the request for its upstream; retry"
	if a.Failure == handoff.FailureLate {
		msg = "ccproxy: the gateway did not prepare the request for its upstream in time; retry"
	}
	var resp *extprocv3.ProcessingResponse
	if p.convertsLocalReplies() {
		resp = p.errorReply(status, msg, "ccproxy_upstream_processor_failed")
	} else {
		resp = bedrockImmediate(status, msg)
	}
	if err := p.Send(resp); err != nil {
		p.logger().LogAttrs(ctx, slog.LevelWarn, "the error for a failed attempt could not be sent", slog.Any("error", err))
	}
}

// replyAttrs are the log attributes of a reply the gateway makes for Envoy:
// the status, the route and the attempts as the upstream processor saw them.
func (p *Processor) replyAttrs(status int) []slog.Attr {
	attrs := []slog.Attr{slog.Int("status", status), slog.String("route", p.route)}
	if p.stored.req != nil {
		var tried []byte
		for i, a := range p.stored.req.Attempts.List() {
			if i > 0 {
				tried = append(tried, ',')
			}
			tried = append(tried, a.Backend...)
			tried = append(tried, ':')
			tried = strconv.AppendInt(tried, int64(a.Status), 10)
			if a.Failure != handoff.FailureNone {
				tried = append(tried, ':')
				tried = append(tried, a.Failure.String()...)
			}
		}
		attrs = append(attrs, slog.String("attempts", string(tried)))
	}
	return attrs
}

// errorReply is an Anthropic error of status with the request id.
func (p *Processor) errorReply(status int, msg, details string) *extprocv3.ProcessingResponse {
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Body:    apierror.BodyWithRequestID(apierror.TypeForStatus(status), msg, p.req.id),
		Details: details,
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-type", []byte("application/json")),
		}},
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
}

// localReplyMessage says what a local reply's status means for the
// developer, without Envoy's wording (which names internals, not a cause
// the developer can act on).
func localReplyMessage(status int) string {
	switch status {
	case 503:
		return "ccproxy: no upstream could take the request right now; retry shortly"
	case 504, 408:
		return "ccproxy: the upstream did not answer in time"
	case 413, 507:
		return "ccproxy: the request is too large for the gateway to forward"
	case 500:
		return "ccproxy: the gateway failed while forwarding the request"
	}
	return "ccproxy: the gateway could not forward the request (status " + strconv.Itoa(status) + ")"
}
