package router

import (
	"context"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// bedrockMessages serves an Anthropic /v1/messages request from Bedrock:
// the request is translated to InvokeModel (or InvokeModelWithResponseStream)
// for the model's Bedrock id in the user's region, the event stream is
// converted back to Anthropic SSE, and Bedrock's errors become Anthropic's.
type bedrockMessages struct{ a bedrockAnswer }

// newBedrockMessages translates the request into r for the upstream
// processor.
func newBedrockMessages(ctx context.Context, p *Processor, cfg *runtimeconfig.Config, body []byte, r *handoff.Request) (*bedrockMessages, *bedrockFailure) {
	m, bf := p.resolveModel(ctx, cfg, r.Credential.Region)
	if bf != nil {
		return nil, bf
	}
	r.RemoveHeaders = append(r.RemoveHeaders, p.req.anthropicHeaders...)
	tr, err := cfg.Translator.TranslateRequest(body, p.req.betaHeader, p.req.fields.stream, m.InvokeID)
	if err != nil {
		return nil, invalidBody()
	}
	p.noteDrops(ctx, tr)
	r.Path, r.Body, r.ReplaceBody = tr.Path, tr.Body, true
	accept := "application/json"
	if p.req.fields.stream {
		accept = "application/vnd.amazon.eventstream"
	}
	r.SetHeaders = []bedrockauth.Header{{Name: "content-type", Value: "application/json"}, {Name: "accept", Value: accept}}
	return &bedrockMessages{a: bedrockAnswer{model: m.InvokeID}}, nil
}

func (b *bedrockMessages) answer() *bedrockAnswer { return &b.a }

func (b *bedrockMessages) responseHeaders(_ context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	b.a.headers(p, rh, resp, true)
}

func (b *bedrockMessages) responseBody(ctx context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse {
	if b.a.stream {
		return b.a.streamChunk(p, body, end, true)
	}
	// BUFFERED: the whole body.
	var common *extprocv3.CommonResponse
	switch {
	case p.resp.status != 200:
		common = b.a.mapError(ctx, p, body)
	case !p.resp.encoded:
		b.a.json, _ = metering.FromJSON(body)
	}
	p.endResponse()
	return common
}

func (b *bedrockMessages) streamEnded(context.Context, *Processor) {}

func (b *bedrockMessages) meter(p *Processor, ev *usage.Event) { b.a.meter(p, ev) }
