package router

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// bedrockCountTokens serves an Anthropic count_tokens request from Bedrock's
// CountTokens API, which counts for the base model id (no inference
// profile) and takes the InvokeModel body base64-wrapped. Its answer
// {"inputTokens":N} becomes Anthropic's {"input_tokens":N}; when Bedrock
// cannot count for a model, the client gets Bedrock's reason, never a
// made-up count.
type bedrockCountTokens struct{ a bedrockAnswer }

// newBedrockCountTokens translates the request into r for the upstream
// processor.
func newBedrockCountTokens(ctx context.Context, p *Processor, cfg *runtimeconfig.Config, body []byte, r *handoff.Request) (*bedrockCountTokens, *bedrockFailure) {
	m, bf := p.resolveModel(ctx, cfg, r.Credential.Region)
	if bf != nil {
		return nil, bf
	}
	r.RemoveHeaders = append(r.RemoveHeaders, p.req.anthropicHeaders...)
	tr, err := cfg.Translator.TranslateRequest(body, p.req.betaHeader, false, m.BaseID)
	if err != nil {
		return nil, invalidBody()
	}
	p.noteDrops(ctx, tr)
	r.Path = strings.TrimSuffix(tr.Path, "/invoke") + "/count-tokens"
	r.Body, r.ReplaceBody = countTokensBody(tr.Body), true
	r.SetHeaders = []bedrockauth.Header{{Name: "content-type", Value: "application/json"}, {Name: "accept", Value: "application/json"}}
	return &bedrockCountTokens{a: bedrockAnswer{model: m.BaseID}}, nil
}

// countTokensBody wraps an InvokeModel body for Bedrock's CountTokens API,
// adding the max_tokens InvokeModel requires and count_tokens requests lack.
func countTokensBody(invoke []byte) []byte {
	hasMax := false
	it := jsonscan.Object(invoke)
	for k, _, ok := it.Next(); ok; k, _, ok = it.Next() {
		if jsonscan.KeyIs(k, "max_tokens") {
			hasMax = true
			break
		}
	}
	if !hasMax {
		i := bytes.LastIndexByte(invoke, '}')
		withMax := make([]byte, 0, len(invoke)+16)
		withMax = append(withMax, invoke[:i]...)
		withMax = append(withMax, `,"max_tokens":1}`...)
		invoke = withMax
	}
	var wrapped struct {
		Input struct {
			InvokeModel struct {
				Body []byte `json:"body"` // base64, as Bedrock wants
			} `json:"invokeModel"`
		} `json:"input"`
	}
	wrapped.Input.InvokeModel.Body = invoke
	b, _ := json.Marshal(wrapped) // cannot fail for this type
	return b
}

func (b *bedrockCountTokens) answer() *bedrockAnswer { return &b.a }

func (b *bedrockCountTokens) responseHeaders(_ context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	b.a.headers(p, rh, resp, true)
}

func (b *bedrockCountTokens) responseBody(ctx context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse {
	if b.a.stream {
		return b.a.streamChunk(p, body, end, true)
	}
	var common *extprocv3.CommonResponse
	if p.resp.status != 200 {
		common = b.a.mapError(ctx, p, body)
	} else {
		var ans struct {
			InputTokens *int64 `json:"inputTokens"`
		}
		if err := json.Unmarshal(body, &ans); err != nil || ans.InputTokens == nil {
			p.logger().LogAttrs(ctx, slog.LevelError, "unreadable Bedrock CountTokens answer")
			common = replaceBody(502, apierror.Body(apierror.API, "ccproxy: Bedrock returned an unreadable token count"))
		} else {
			b.a.counted = *ans.InputTokens
			common = replaceBody(200, []byte(`{"input_tokens":`+strconv.FormatInt(*ans.InputTokens, 10)+`}`))
		}
	}
	p.endResponse()
	return common
}

func (b *bedrockCountTokens) streamEnded(context.Context, *Processor) {}

func (b *bedrockCountTokens) meter(p *Processor, ev *usage.Event) { b.a.meter(p, ev) }
