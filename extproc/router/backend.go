package router

import (
	"context"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// A backend is one way a request can go upstream:
//
//   - plan (plan.go): Plan pass-through, the answer read but never changed;
//   - bedrockMessages (bedrock_messages.go): /v1/messages translated to
//     InvokeModel, the event stream converted to SSE;
//   - bedrockCountTokens (bedrock_counttokens.go): count_tokens translated to
//     Bedrock's CountTokens;
//   - bedrockMode (bedrock_mode.go): Claude Code's own Bedrock mode,
//     forwarded as sent with the gateway's credential;
//   - planFirst (fallback.go): Plan first, Bedrock when Envoy's retry moved
//     the request there, composing plan and a Bedrock backend.
//
// The processor chooses one when the route is decided (route.go) and hands
// it every response message; the backend alone knows how its upstream
// answers. Adding a way to route a request is one file with a backend and
// one case where the route is chosen.
type backend interface {
	// responseHeaders reads the response headers (the processor has parsed
	// the status and content-encoding into p.resp, the rest into rh) and
	// completes resp, the reply: a mode_override for a body it must see
	// chunk by chunk, header mutations for an answer it rewrites.
	responseHeaders(ctx context.Context, p *Processor, req *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse)
	// responseBody handles one response body message — the whole body when
	// BUFFERED, one chunk when STREAMED — and returns the reply's
	// CommonResponse, nil for a message passed unchanged. It calls
	// p.endResponse when the body ends.
	responseBody(ctx context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse
	// streamEnded is called when the ext_proc stream ends, before meter,
	// whether or not a response arrived.
	streamEnded(ctx context.Context, p *Processor)
	// meter completes the request's usage event with what the backend read
	// of the answer: provider, usage, counted tokens, whether it was
	// aborted.
	meter(p *Processor, ev *usage.Event)
}
