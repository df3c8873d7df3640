package router

import (
	"context"

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
	counted int64
}

func (b *plan) responseHeaders(_ context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	b.sse = p.resp.status == 200 && isEventStream(rh.contentType)
	if b.sse {
		resp.ModeOverride = streamedResponseMode()
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
		ev.Aborted = !p.resp.ended && !b.scanner.Completed()
	} else {
		ev.Usage = b.json
	}
	ev.CountedInputTokens = b.counted
}
