package router

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/metering"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/translate/bedrock"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// bedrockModePrefix starts the paths of Claude Code's own Bedrock mode
// (ANTHROPIC_BEDROCK_BASE_URL=<gateway>/ak/<key>/bedrock): the AWS SDK
// appends Bedrock's own paths to it.
const bedrockModePrefix = "/bedrock/"

// bedrockPath is a parsed Bedrock-mode path (after the /bedrock prefix).
type bedrockPath struct {
	upstream string // the path sent to Bedrock, escaped, without a query
	model    string // decoded model id
	op       string // invoke, invoke-with-response-stream, count-tokens
}

// maxBedrockModelIDLen bounds a Bedrock model id; real ids are far shorter.
const maxBedrockModelIDLen = 128

// parseBedrockPath recognises /model/{id}/{op}; id is one escaped segment
// that decodes to a plain model or inference-profile id. The request goes
// to Bedrock with the company's credential, so nothing the client wrote
// reaches it unchecked: an ARN, a '/' smuggled in as %2F, a dot segment are
// refused here; the path sent upstream is rebuilt from the decoded id in
// the AWS SDK's own escaping; and the query is dropped (InvokeModel takes
// none). The id must still resolve through the model mappings
// (newBedrockMode).
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
	if err != nil || !validBedrockModelID(model) {
		return bedrockPath{}, false
	}
	return bedrockPath{upstream: bedrockModePath(model, seg[3]), model: model, op: seg[3]}, true
}

// bedrockModePath is the path sent to Bedrock for op on model, escaped as
// the AWS SDK escapes it.
func bedrockModePath(model, op string) string {
	return strings.TrimSuffix(bedrock.ModelPath(model, false), "/invoke") + "/" + op
}

// validBedrockModelID accepts the shape of Bedrock model and system
// inference-profile ids (us.anthropic.claude-opus-5-5,
// anthropic.claude-sonnet-4-5-20250929-v1:0): letters and digits first,
// then letters, digits, '.', '-', '_' and ':'.
func validBedrockModelID(id string) bool {
	if id == "" || len(id) > maxBedrockModelIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '-' || c == '_' || c == ':'):
		default:
			return false
		}
	}
	return true
}

// bedrockMode serves Claude Code's own Bedrock mode: Claude Code already
// speaks Bedrock, so the request is forwarded as sent with the gateway's
// credential added, and the answer, errors included, passes in Bedrock's own
// format (its AWS SDK parses it). The event stream is still decoded, only to
// meter it.
type bedrockMode struct{ a bedrockAnswer }

// newBedrockMode prepares r: Bedrock's own path and the body as sent. Only
// models the admin mapped are served: the mapping is what budgets, prices
// and metering know, and anything else (another vendor's model, a
// provisioned model) would spend the company's Bedrock money unmetered.
func newBedrockMode(p *Processor, cfg *runtimeconfig.Config, body []byte, r *handoff.Request) (*bedrockMode, *bedrockFailure) {
	path := p.req.bedrock
	p.req.fields.model = cfg.AnthropicIDFor(path.model)
	if p.req.fields.model == "" {
		return nil, &bedrockFailure{refuseModel, 400, "ccproxy: model " + strconv.Quote(path.model) + " is not served through the gateway; use a model from the inference profiles it lists, or ask the gateway administrator to map it", nil}
	}
	r.Path, r.Body = path.upstream, body
	p.req.fields.stream = path.op == "invoke-with-response-stream"
	return &bedrockMode{a: bedrockAnswer{model: path.model}}, nil
}

func (b *bedrockMode) answer() *bedrockAnswer { return &b.a }

func (b *bedrockMode) responseHeaders(ctx context.Context, p *Processor, _ *extprocv3.ProcessingRequest, rh *responseHead, resp *extprocv3.ProcessingResponse) {
	if p.resp.status == 200 && !isAmazonEventStream(rh.contentType) && !isJSON(rh.contentType) &&
		rh.inputTokens < 0 && rh.outputTokens < 0 {
		// An answer the gateway can read no usage from must not be free:
		// refused, in Bedrock's error format.
		p.logger().LogAttrs(ctx, slog.LevelWarn, "bedrock answer in a format the gateway cannot meter refused",
			slog.String("content_type", headerString(rh.contentType)))
		p.resp.status = 502
		resp.Response = bedrockImmediate(502, "ccproxy: Bedrock answered in a format the gateway cannot meter").Response
		p.endResponse()
		return
	}
	b.a.headers(p, rh, resp, false)
}

// isJSON reports whether a content-type is application/json.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte("application/json"))
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
