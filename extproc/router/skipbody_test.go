package router

import (
	"testing"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// TestSkipsBodyOnlyForPlanAlone: with SkipPlanRequestBodies, only a Messages
// request that can go nowhere but Plan, with a session header and a
// content-length, is routed on its headers; everything that may reach
// Bedrock, or whose body the gateway needs, is read.
func TestSkipsBodyOnlyForPlanAlone(t *testing.T) {
	h := newBedrockHarness(t, testRuntime(t), nil)
	h.r.skipPlanBodies = true
	const session = "b473eea4-d18b-43ee-8233-a866e4a71422"
	tests := []struct {
		key, path string
		headers   []string
		skip      bool
	}{
		{"plan-only", "/v1/messages", []string{"x-claude-code-session-id", session, "content-length", "100"}, true},
		{"plan-first-no-cred", "/v1/messages?beta=true", []string{"x-claude-code-session-id", session, "content-length", "100"}, true},
		{"plan-first", "/v1/messages", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
		{"plan-first-budget", "/v1/messages", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
		{"bedrock", "/v1/messages", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
		{"bedrock-no-cred", "/v1/messages", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
		{"plan-only", "/v1/messages/count_tokens", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
		{"plan-only", "/v1/messages", []string{"content-length", "100"}, false},
		{"plan-only", "/v1/messages", []string{"x-claude-code-session-id", session}, false},
		{"plan-first-no-cred", "/model/us.anthropic.claude-opus-5-5/invoke", []string{"x-claude-code-session-id", session, "content-length", "100"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.key+" "+tt.path+" "+tt.headers[0], func(t *testing.T) {
			p := h.r.NewProcessor()
			resp := mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tt.key]+tt.path, tt.headers...))
			if resp.GetImmediateResponse() != nil {
				if tt.skip {
					t.Fatalf("answered at once: %v", resp)
				}
				return
			}
			skipped := resp.GetModeOverride() != nil && resp.GetModeOverride().GetRequestBodyMode() == extprocfilterv3.ProcessingMode_NONE
			if skipped != tt.skip {
				t.Fatalf("body skipped = %v, want %v (reply %v)", skipped, tt.skip, resp)
			}
			if skipped != (p.route != "") {
				t.Fatalf("route %q chosen with the headers, body skipped = %v", p.route, skipped)
			}
		})
	}
}
