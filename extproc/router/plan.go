package router

import (
	"context"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// plan is the Plan pass-through backend: Anthropic's answer reaches the
// client byte for byte, errors included (Claude Code's recovery logic
// matches Anthropic's wording); the processor only reads the usage out of
// it. A streamed 200 switches the body to STREAMED so every chunk is seen as
// it passes; anything else stays BUFFERED.
type plan struct {
	sse     bool
	scanner metering.SSEScanner
	json    usage.Usage
	model   string // of a JSON answer to a request whose body was skipped
	counted int64
}

func (b *plan) responseHeaders(_ context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	if !rh.unified.Empty() {
		// Read, never changed: Claude Code sees the headers as Plan sent them.
		p.resp.limits = rh.unified.Limits()
	}
	b.sse = p.resp.status == 200 && isEventStream(rh.contentType)
	if b.sse {
		resp.ModeOverride = streamedResponseMode(p.requestBodyMode())
		return
	}
	p.firstToken()
}

func (b *plan) responseBody(_ context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse {
	if b.sse {
		if !p.resp.encoded {
			b.scanner.Write(body)
			if b.scanner.ContentStarted() {
				p.firstToken()
			}
		}
		if end {
			p.endResponse()
		}
		return nil
	}
	// BUFFERED: this one message is the whole body, even when it does not
	// carry end_of_stream (Envoy sends it that way when trailers follow).
	if p.resp.status == 200 && !p.resp.encoded {
		switch p.req.kind {
		case pathMessages:
			b.json, _ = metering.FromJSON(body)
			if p.req.bodySkipped {
				b.model = metering.ModelFromJSON(body)
			}
		case pathCountTokens:
			b.counted, _ = metering.CountedTokens(body)
		}
	}
	p.endResponse()
	return nil
}

func (b *plan) streamEnded(context.Context, *Processor) {}

func (b *plan) meter(p *Processor, ev *usage.Event) {
	if b.sse {
		ev.Usage = b.scanner.Usage()
		ev.AgentSpawns = b.scanner.AgentSpawns()
		ev.Aborted = !p.resp.ended && !b.scanner.Completed()
	} else {
		ev.Usage = b.json
	}
	ev.CountedInputTokens = b.counted
	if p.req.bodySkipped {
		// What the body would have said, from the answer: the model it
		// names (a refusal names none) and whether it streams.
		ev.Stream = b.sse
		ev.Model = b.model
		if b.sse {
			ev.Model = b.scanner.Model()
		}
	}
}

// skipsBody reports whether the request is routed with its headers, so that
// Envoy does not send its body (bodyLen is its content-length, -1 when there
// is none): with Config.SkipPlanRequestBodies, a Messages request that goes
// to Plan alone — it cannot go to Bedrock, now or as a fallback — whose
// body the gateway would only read for the usage row. The model and the
// stream flag then come from the answer, so a refusal's row names no model
// and says stream=false. Not skipped: count_tokens (its answer names no
// model), a request without x-claude-code-session-id (Claude Code releases
// before 2.1.86 name the session only in the body's metadata) and one
// without content-length (its size is checked against the limit as it
// arrives).
//
// The 48 KB body of a Claude Code turn was the largest cost of a Plan
// pass-through on the ext_proc stream: one message more, and its copies
// (docs/performance.md).
func (p *Processor) skipsBody(bodyLen int64) bool {
	return p.r.skipPlanBodies && p.req.kind == pathMessages && p.req.sessionID != "" && bodyLen >= 0 &&
		!p.wantsBedrock() && !p.mayFallBack() && len(p.req.identity.Budgets) == 0 && // a downgrade rewrites the body
		p.req.identity.AllowedModels == nil // the allow-list reads the model
}

// requestBodyMode is the request body mode in force: NONE once skipsBody
// chose the route, BUFFERED as configured otherwise.
func (p *Processor) requestBodyMode() extprocfilterv3.ProcessingMode_BodySendMode {
	if p.req.bodySkipped {
		return extprocfilterv3.ProcessingMode_NONE
	}
	return extprocfilterv3.ProcessingMode_BUFFERED
}
