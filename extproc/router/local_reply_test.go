package router

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// TestEnvoyLocalReplies: since Envoy 1.37 Envoy's own error replies pass
// through the router-level processor's response phases. The processor
// answers them as Anthropic errors with the request id, meters the request
// with the reply's status, and charges the breaker for nothing Envoy did
// itself; upstream answers, even errors, pass as before.
func TestEnvoyLocalReplies(t *testing.T) {
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	type attempt struct {
		backend string
		status  int
	}
	tests := []struct {
		name        string
		key         string // harness key name
		path        string
		attempts    []attempt
		status      string
		kv          []string // response headers besides :status
		wantBody    string   // "" = the answer passes unchanged
		wantStatus  int      // usage event status
		wantRoute   string
		wantReason  string
		wantMetric  string // ccproxy_extproc_envoy_local_replies_total label
		wantMetered bool
	}{
		{name: "plan route: no healthy upstream", key: "plan-only", path: "/v1/messages",
			status: "503", kv: []string{"content-type", "text/plain", "content-length", "19"},
			wantBody:   `{"type":"error","error":{"type":"api_error","message":"ccproxy: no upstream could take the request right now; retry shortly"},"request_id":"rid-1"}`,
			wantStatus: 503, wantRoute: dataplane.RoutePlan, wantMetric: "503", wantMetered: true},
		{name: "fallback route: the plan attempt's upstream processor failed (empty 500, not retried)", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 0}}, status: "500",
			wantBody:   `{"type":"error","error":{"type":"api_error","message":"ccproxy: the gateway failed while forwarding the request"},"request_id":"rid-1"}`,
			wantStatus: 500, wantRoute: "plan+bedrock-us-east-1", wantMetric: "500", wantMetered: true},
		{name: "fallback route: the bedrock attempt timed out after a plan 429", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 429}, {dataplane.BackendBedrock, 0}}, status: "504", kv: []string{"content-type", "text/plain; charset=utf-8"},
			wantBody:   `{"type":"error","error":{"type":"timeout_error","message":"ccproxy: the upstream did not answer in time"},"request_id":"rid-1"}`,
			wantStatus: 504, wantRoute: "plan+bedrock-us-east-1", wantReason: "plan_429", wantMetric: "504", wantMetered: true},
		{name: "count_tokens: retry buffer exceeded", key: "plan-only", path: "/v1/messages/count_tokens",
			status: "507", kv: []string{"content-type", "text/plain"},
			wantBody:   `{"type":"error","error":{"type":"api_error","message":"ccproxy: the request is too large for the gateway to forward"},"request_id":"rid-1"}`,
			wantStatus: 507, wantRoute: dataplane.RoutePlan, wantMetric: "507", wantMetered: true},
		{name: "plan's own JSON error passes unchanged", key: "plan-only", path: "/v1/messages",
			status: "529", kv: []string{"content-type", "application/json"}, wantStatus: 529, wantRoute: dataplane.RoutePlan, wantMetered: true},
		{name: "a text/plain success passes unchanged", key: "plan-only", path: "/v1/messages",
			status: "200", kv: []string{"content-type", "text/plain"}, wantStatus: 200, wantRoute: dataplane.RoutePlan, wantMetered: true},
		{name: "Claude Code's Bedrock mode reads AWS errors: unchanged", key: "bedrock", path: "/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
			status: "503", kv: []string{"content-type", "text/plain"}, wantStatus: 503, wantRoute: "bedrock-us-east-1", wantMetered: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, fallbackRuntime(t), nil)
			fb := &fakeBreaker{route: planbreaker.RouteClosed}
			h.r.bedrock.Breaker = fb
			p := h.r.NewProcessor()
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+tc.path, "x-api-key", "sk-client"))
			resp := mustProcess(t, p, reqBody(body))
			set := setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())
			if set[dataplane.RouteHeader] != tc.wantRoute {
				t.Fatalf("route %q, want %q (reply %v)", set[dataplane.RouteHeader], tc.wantRoute, resp)
			}
			if stored := h.requests.Get(set[dataplane.StateHeader]); stored != nil {
				for _, a := range tc.attempts {
					i := stored.Attempts.Start(a.backend)
					stored.Attempts.Respond(i, a.status)
				}
			} else if len(tc.attempts) > 0 {
				t.Fatal("no handoff stored")
			}

			resp = mustProcess(t, p, respHeaders(tc.status, tc.kv...))
			ir := resp.GetImmediateResponse()
			if tc.wantBody == "" {
				if ir != nil {
					t.Fatalf("answer replaced: %v", ir)
				}
			} else {
				if ir == nil {
					t.Fatalf("local reply not answered: %v", resp)
				}
				if int(ir.GetStatus().GetCode()) != tc.wantStatus || string(ir.GetBody()) != tc.wantBody {
					t.Fatalf("immediate response %d %s", ir.GetStatus().GetCode(), ir.GetBody())
				}
				if got := setHeaders(ir.GetHeaders()); len(got) != 1 || got["content-type"] != "application/json" {
					t.Fatalf("immediate response headers %v", got)
				}
				if err := ir.ValidateAll(); err != nil {
					t.Fatalf("immediate response fails Envoy's validation: %v", err)
				}
			}
			p.Close(context.Background())

			evs := h.sink.Events()
			if !tc.wantMetered {
				if len(evs) != 0 {
					t.Fatalf("%d usage events", len(evs))
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("%d usage events", len(evs))
			}
			ev := evs[0]
			if ev.Status != tc.wantStatus || ev.Route != tc.wantRoute || ev.FallbackReason != tc.wantReason || ev.Fallback != (tc.wantReason != "") {
				t.Fatalf("usage event status=%d route=%q fallback=%v reason=%q", ev.Status, ev.Route, ev.Fallback, ev.FallbackReason)
			}
			if tc.wantReason != "" && ev.Provider != usage.ProviderBedrock {
				t.Fatalf("provider %q for a fallback", ev.Provider)
			}
			if len(fb.failures) != 0 {
				t.Fatalf("breaker charged %d times for Envoy's own reply", len(fb.failures))
			}
			if tc.wantMetric != "" {
				if n := testutil.ToFloat64(h.metrics.localReplies.WithLabelValues(tc.wantMetric)); n != 1 {
					t.Fatalf("local replies{status=%q} = %v", tc.wantMetric, n)
				}
			}
		})
	}
}

func TestIsLocalReply(t *testing.T) {
	tests := []struct {
		status int
		ct     string
		want   bool
	}{
		{503, "", true},
		{504, "text/plain", true},
		{500, "TEXT/PLAIN; charset=utf-8", true},
		{429, "application/json", false},
		{502, "text/html", false},
		{200, "", false},
		{399, "text/plain", false},
	}
	for _, tt := range tests {
		if got := isLocalReply(tt.status, []byte(tt.ct)); got != tt.want {
			t.Errorf("isLocalReply(%d, %q) = %v, want %v", tt.status, tt.ct, got, tt.want)
		}
	}
}
