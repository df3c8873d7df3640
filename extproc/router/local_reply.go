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
		}
		attrs = append(attrs, slog.String("attempts", string(tried)))
	}
	p.logger().LogAttrs(ctx, slog.LevelWarn, "Envoy answered the request itself; the client gets an Anthropic error", attrs...)

	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Body:    apierror.BodyWithRequestID(apierror.TypeForStatus(status), localReplyMessage(status), p.req.id),
		Details: "ccproxy_envoy_local_reply",
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
