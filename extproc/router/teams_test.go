package router

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

var teamID = uuid.MustParse("5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b")

// teamRuntime maps Sonnet (with its family alias) and Opus.
func teamRuntime(t testing.TB) *runtimeconfig.Config {
	t.Helper()
	cfg, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{
			{AnthropicModelId: "claude-sonnet-4-5-20250929", Aliases: []string{"claude-sonnet-4-5"}, Family: "sonnet",
				BedrockModelId: "anthropic.claude-sonnet-4-5-20250929-v1:0",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}},
			{AnthropicModelId: "claude-opus-4-1-20250805", Aliases: []string{"claude-opus-4-1"}, Family: "opus",
				BedrockModelId: "anthropic.claude-opus-4-1-20250805-v1:0",
				RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-opus-4-1-20250805-v1:0"}},
		},
		Regions:         []string{"us-east-1"},
		FallbackRegions: []string{"us-east-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestModelAllowed(t *testing.T) {
	cfg := teamRuntime(t)
	for _, tc := range []struct {
		name    string
		cfg     *runtimeconfig.Config
		allowed []string
		model   string
		want    bool
	}{
		{"no allow-list", cfg, nil, "claude-opus-4-1-20250805", true},
		{"alias allows the id", cfg, []string{"claude-sonnet-4-5"}, "claude-sonnet-4-5-20250929", true},
		{"alias allows itself", cfg, []string{"claude-sonnet-4-5"}, "claude-sonnet-4-5", true},
		{"id allows the alias", cfg, []string{"claude-sonnet-4-5-20250929"}, "claude-sonnet-4-5", true},
		{"context suffix", cfg, []string{"claude-sonnet-4-5"}, "claude-sonnet-4-5-20250929[1m]", true},
		{"other family", cfg, []string{"claude-sonnet-4-5"}, "claude-opus-4-1-20250805", false},
		{"other family's alias", cfg, []string{"claude-sonnet-4-5"}, "claude-opus-4-1", false},
		{"no model", cfg, []string{"claude-sonnet-4-5"}, "", false},
		{"prefix is not a date", cfg, []string{"claude-sonnet-4"}, "claude-sonnet-4-5-20250929", false},
		{"dated id without a catalog", nil, []string{"claude-haiku-4-5"}, "claude-haiku-4-5-20251001", true},
		{"longer id without a catalog", nil, []string{"claude-haiku-4"}, "claude-haiku-4-5-20251001", false},
		{"unknown to the catalog, exact", cfg, []string{"claude-haiku-4-5"}, "claude-haiku-4-5", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := modelAllowed(tc.cfg, tc.allowed, tc.model); got != tc.want {
				t.Fatalf("modelAllowed(%v, %q) = %v, want %v", tc.allowed, tc.model, got, tc.want)
			}
		})
	}
}

// TestTeamAllowList: a team member's Messages and count_tokens requests
// for a model off the allow-list are refused locally (no route, no
// handoff, no usage), the others go on; the model list shows the allowed
// models only; Bedrock mode is refused in Bedrock's format.
func TestTeamAllowList(t *testing.T) {
	cfg := teamRuntime(t)
	h := newBedrockHarness(t, cfg, nil)
	h.r.bedrock.Breaker = &fakeBreaker{}
	key := h.keys["team-sonnet"]
	const opusRefusal = `{"type":"error","error":{"type":"invalid_request_error","message":` +
		`"ccproxy: model claude-opus-4-1-20250805 is not allowed for your team (Platform); allowed models: claude-sonnet-4-5"}}`
	for _, tc := range []struct {
		name, path, body string
		status           int32 // 0: not refused
		want             string
	}{
		{"sonnet id", "/v1/messages", `{"model":"claude-sonnet-4-5-20250929","max_tokens":1}`, 0, ""},
		{"sonnet alias", "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1}`, 0, ""},
		{"sonnet, 1m context", "/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5-20250929[1m]"}`, 0, ""},
		{"opus", "/v1/messages", `{"model":"claude-opus-4-1-20250805","max_tokens":1,"stream":true}`, 400, opusRefusal},
		{"opus, count_tokens", "/v1/messages/count_tokens", `{"model":"claude-opus-4-1-20250805"}`, 400, opusRefusal},
		{"no model", "/v1/messages", `{"max_tokens":1}`, 400, `{"type":"error","error":{"type":"invalid_request_error","message":` +
			`"ccproxy: the request names no model; your team (Platform) allows only: claude-sonnet-4-5"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.requests.Len()
			p := h.r.NewProcessor()
			if resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+key+tc.path, "x-claude-code-session-id", "s1")); resp.GetImmediateResponse() != nil {
				t.Fatalf("headers refused: %v", resp)
			}
			resp := mustProcess(t, p, reqBody([]byte(tc.body)))
			ir := resp.GetImmediateResponse()
			p.Close(context.Background())
			if tc.status == 0 {
				if ir != nil || p.route == "" {
					t.Fatalf("refused (%v) or unrouted (%q)", ir, p.route)
				}
				return
			}
			if ir.GetStatus().GetCode() != 400 || string(ir.GetBody()) != tc.want || ir.GetDetails() != "ccproxy_model_not_allowed" {
				t.Fatalf("reply %d %s (%s); want %d %s", ir.GetStatus().GetCode(), ir.GetBody(), ir.GetDetails(), tc.status, tc.want)
			}
			if hdr := setHeaders(ir.GetHeaders()); hdr["x-should-retry"] != "false" {
				t.Errorf("headers %v", hdr)
			}
			if p.route != "" || h.requests.Len() != before {
				t.Errorf("route %q, handoffs %d→%d; want none", p.route, before, h.requests.Len())
			}
		})
	}
	// Refused requests leave no usage: only the three served ones do.
	if n := len(h.sink.Events()); n != 3 {
		t.Errorf("%d usage events; want 3", n)
	}
	for _, ev := range h.sink.Events() {
		if ev.TeamID != teamID {
			t.Errorf("usage event team %v; want %v", ev.TeamID, teamID)
		}
	}

	// The model list: the team's models only.
	h.r.modelsF = RuntimeModels(runtimeconfig.StaticSource{Config: cfg})
	list := func(k string) []string {
		p := h.r.NewProcessor()
		resp := mustProcess(t, p, reqHeadersEnd("GET", "/ak/"+k+"/v1/models"))
		p.Close(context.Background())
		var l struct{ Data []struct{ ID string } }
		if err := json.Unmarshal(resp.GetImmediateResponse().GetBody(), &l); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range l.Data {
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got := list(key); !slices.Equal(got, []string{"claude-sonnet-4-5-20250929"}) {
		t.Errorf("team's models %v", got)
	}
	if got := list(h.keys["plan-first"]); !slices.Equal(got, []string{"claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"}) {
		t.Errorf("everyone's models %v", got)
	}

	// Bedrock mode: the Bedrock id is matched under its Anthropic id.
	p := h.r.NewProcessor()
	resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+key+"/bedrock/model/us.anthropic.claude-opus-4-1-20250805-v1%3A0/invoke"))
	p.Close(context.Background())
	ir := resp.GetImmediateResponse()
	const bedrockWant = `{"message":"ccproxy: model us.anthropic.claude-opus-4-1-20250805-v1:0 is not allowed for your team (Platform); allowed models: claude-sonnet-4-5"}`
	if ir.GetStatus().GetCode() != 403 || string(ir.GetBody()) != bedrockWant {
		t.Errorf("bedrock mode: %d %s; want 403 %s", ir.GetStatus().GetCode(), ir.GetBody(), bedrockWant)
	}
	p = h.r.NewProcessor()
	resp = mustProcess(t, p, reqHeaders("POST", "/ak/"+key+"/bedrock/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"))
	p.Close(context.Background())
	if resp.GetImmediateResponse() != nil {
		t.Errorf("bedrock mode, sonnet: refused %v", resp)
	}
}
