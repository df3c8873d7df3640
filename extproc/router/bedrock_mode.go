package router

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// bedrockModePrefix starts the paths of Claude Code's own Bedrock mode
// (ANTHROPIC_BEDROCK_BASE_URL=<gateway>/ak/<key>/bedrock): the AWS SDK
// appends Bedrock's own paths to it.
const bedrockModePrefix = "/bedrock/"

// bedrockPath is a parsed Bedrock-mode path (after the /bedrock prefix).
type bedrockPath struct {
	upstream string // the path sent to Bedrock, still escaped, with the query
	model    string // decoded model id
	op       string // invoke, invoke-with-response-stream, count-tokens
}

// parseBedrockPath recognises /model/{id}/{op}; id is one escaped segment.
func parseBedrockPath(rest []byte) (bedrockPath, bool) {
	p := string(rest[len(bedrockModePrefix)-1:]) // keep the leading "/"
	pathOnly, _, _ := strings.Cut(p, "?")
	seg := strings.Split(pathOnly, "/")
	if len(seg) != 4 || seg[0] != "" || seg[1] != "model" || seg[2] == "" {
		return bedrockPath{}, false
	}
	switch seg[3] {
	case "invoke", "invoke-with-response-stream", "count-tokens":
	default:
		return bedrockPath{}, false
	}
	model, err := url.PathUnescape(seg[2])
	if err != nil || model == "" {
		return bedrockPath{}, false
	}
	return bedrockPath{upstream: p, model: model, op: seg[3]}, true
}

// bedrockMode serves Claude Code's own Bedrock mode: Claude Code already
// speaks Bedrock, so the request is forwarded as sent with the gateway's
// credential added, and the answer, errors included, passes in Bedrock's own
// format (its AWS SDK parses it). The event stream is still decoded, only to
// meter it.
type bedrockMode struct{ a bedrockAnswer }

// newBedrockMode prepares r: Bedrock's own path and the body as sent.
func newBedrockMode(p *Processor, cfg *runtimeconfig.Config, body []byte, r *handoff.Request) *bedrockMode {
	path := p.req.bedrock
	r.Path, r.Body = path.upstream, body
	p.req.fields.model = cfg.AnthropicIDFor(path.model)
	if p.req.fields.model == "" {
		p.req.fields.model = truncate(path.model, maxModelLen)
	}
	p.req.fields.stream = path.op == "invoke-with-response-stream"
	return &bedrockMode{a: bedrockAnswer{model: path.model}}
}

func (b *bedrockMode) answer() *bedrockAnswer { return &b.a }

func (b *bedrockMode) responseHeaders(_ context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	b.a.headers(p, rh, resp, false)
}

func (b *bedrockMode) responseBody(_ context.Context, p *Processor, body []byte, end bool) *extprocv3.CommonResponse {
	if b.a.stream {
		return b.a.streamChunk(p, body, end, false)
	}
	if p.resp.status == 200 && !p.resp.encoded {
		switch p.req.bedrock.op {
		case "invoke":
			b.a.json, _ = metering.FromJSON(body)
		case "count-tokens":
			var ans struct {
				InputTokens int64 `json:"inputTokens"`
			}
			if json.Unmarshal(body, &ans) == nil {
				b.a.counted = ans.InputTokens
			}
		}
	}
	p.endResponse()
	return nil
}

func (b *bedrockMode) streamEnded(context.Context, *Processor) {}

func (b *bedrockMode) meter(p *Processor, ev *usage.Event) { b.a.meter(p, ev) }

// inferenceProfiles answers Claude Code's Bedrock-mode
// GET /bedrock/inference-profiles (ListInferenceProfiles) from the model
// mappings for the user's region, so that it can pick a model without a
// call to the Bedrock control plane, which the gateway does not proxy.
func (p *Processor) inferenceProfiles(ctx context.Context) *extprocv3.ProcessingResponse {
	bc := p.r.bedrock
	var cfg *runtimeconfig.Config
	if bc != nil {
		cfg = bc.Runtime.Current()
	}
	if cfg == nil {
		return p.refuseBedrock(ctx, refuseNoRuntime, 503, "ccproxy: the gateway has not received its Bedrock configuration yet; try again shortly", nil)
	}
	region := ""
	if c := p.req.identity.Bedrock; c != nil {
		region = c.Region
	}
	type modelRef struct {
		ModelArn string `json:"modelArn"`
	}
	type profile struct {
		InferenceProfileName string     `json:"inferenceProfileName"`
		InferenceProfileID   string     `json:"inferenceProfileId"`
		InferenceProfileArn  string     `json:"inferenceProfileArn"`
		Description          string     `json:"description"`
		Models               []modelRef `json:"models"`
		Status               string     `json:"status"`
		Type                 string     `json:"type"`
	}
	out := struct {
		InferenceProfileSummaries []profile `json:"inferenceProfileSummaries"`
	}{InferenceProfileSummaries: []profile{}}
	for _, m := range cfg.Models() {
		id := m.InvokeIDFor(region)
		if id == "" || id == m.BaseID {
			continue // not a profile
		}
		out.InferenceProfileSummaries = append(out.InferenceProfileSummaries, profile{
			InferenceProfileName: m.AnthropicID,
			InferenceProfileID:   id,
			InferenceProfileArn:  "arn:aws:bedrock:" + region + "::inference-profile/" + id,
			Description:          "ccproxy mapping of " + m.AnthropicID,
			Models:               []modelRef{{ModelArn: "arn:aws:bedrock:" + region + "::foundation-model/" + m.BaseID}},
			Status:               "ACTIVE",
			Type:                 "SYSTEM_DEFINED",
		})
	}
	body, _ := json.Marshal(out)
	p.r.metrics.request(OutcomeModels)
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
		Body:    body,
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", []byte("application/json"))}},
		Details: "ccproxy_inference_profiles",
	}}}
}
