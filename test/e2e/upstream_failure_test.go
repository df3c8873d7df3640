package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// The markers of the upstream processor's fault injection, compiled into
// the test build of ccproxy (extproc/upstream, faults_test_build.go): a
// Bedrock attempt whose body carries one, followed by a token, fails the
// first time that token is seen.
const (
	// faultStream ends the attempt's upstream ext_proc stream with a gRPC
	// error, as a crashed or broken processor stream would.
	faultStream = "ccproxy-fault-upstream-stream-"
	// faultLate makes the processor miss the upstream filter's
	// message_timeout (upstreamMessageTimeout here).
	faultLate = "ccproxy-fault-upstream-late-"
	// upstreamMessageTimeout is CCPROXY_UPSTREAM_MESSAGE_TIMEOUT in these
	// tests: short, so that a late processor costs the test little.
	upstreamMessageTimeout = "2s"
)

// TestUpstreamProcessorFailsMidFallback: Plan answers 503, Envoy retries on
// Bedrock, and the upstream processor of the Bedrock attempt fails — its
// stream breaks, or it misses its message timeout. Under either upstream
// failure rule — Envoy 1.37–1.40 (local-reply: an immediate empty 500/504,
// not retried) and Envoy 1.35 and older (stall: the attempt waits for its
// 600 s per-try timeout) — the client gets an Anthropic error at once (the
// raw request's one-minute client timeout, and Claude Code's two-minute
// run, are far below the per-try timeout), the request is metered with
// what happened, Claude Code's own retry gets Bedrock's answer, and the
// breaker is not charged for the gateway's failure.
//
// Plan answers 503 rather than 429 because a 429 opens the breaker by
// itself; each 503 counts one failure of the three that open it, so a
// request that also charged the processor's failure would open it within
// the two requests of a subtest.
func TestUpstreamProcessorFailsMidFallback(t *testing.T) {
	for _, rule := range []string{"local-reply", "stall"} {
		t.Run(rule, func(t *testing.T) {
			t.Parallel()
			fg := startFallbackGateway(t, func(fg *fallbackGateway) {
				fg.env = append(fg.env,
					"CCPROXY_ENVOYSIM_UPSTREAM_FAILURE="+rule,
					"CCPROXY_UPSTREAM_MESSAGE_TIMEOUT="+upstreamMessageTimeout)
			})
			t.Cleanup(func() {
				if t.Failed() {
					return
				}
				// Each fault fired exactly twice (one token per subtest), and
				// no breaker opened.
				for _, cause := range []string{"late", "stream_failed"} {
					if v := metricValue(t, fg.gateway, `ccproxy_extproc_upstream_abandoned_attempts_total{cause="`+cause+`"}`); v != 2 {
						t.Errorf("abandoned attempts{cause=%q} = %v, want 2", cause, v)
					}
				}
				if v := metricValue(t, fg.gateway, `ccproxy_extproc_breaker_transitions_total{store="redis",to="open"}`); v != 0 {
					t.Errorf("a breaker opened (%v) though Plan's own answers stayed below the threshold", v)
				}
			})
			for _, fault := range []struct {
				name, marker, errType string
				status                int
			}{
				{"stream fails", faultStream, "api_error", 500},
				{"message timeout", faultLate, "timeout_error", 504},
			} {
				// planOverloaded refuses main-model requests (so that they fall
				// back) and answers Claude Code's side requests.
				planOverloaded := func(r fakeanthropic.Request) fakeanthropic.Reply {
					if r.Model() != mainModel {
						return planText(r, "side answer")
					}
					return fakeanthropic.Reply{Status: 503, Body: []byte(`{"type":"error","error":{"type":"api_error","message":"Service unavailable"}}`)}
				}
				t.Run(fault.name+", raw request", func(t *testing.T) {
					t.Parallel()
					u := fg.admin.user("raw", "plan_first", eastCredential())
					marker := fg.scenario(t, planOverloaded, func(r fakebedrock.Request) fakebedrock.Reply {
						t.Errorf("Bedrock received the attempt whose processor failed: %s", r.RawPath)
						return fakebedrock.Error(500, "InternalServerException", "unexpected")
					})
					status, hdr, body := postJSON(t, fg.Base+"/ak/"+u.Key+"/v1/messages", streamBody(marker+" "+fault.marker+marker))
					var got struct {
						Type  string `json:"type"`
						Error struct {
							Type    string `json:"type"`
							Message string `json:"message"`
						} `json:"error"`
						RequestID string `json:"request_id"`
					}
					if err := json.Unmarshal(body, &got); err != nil || status != fault.status || got.Type != "error" || got.Error.Type != fault.errType ||
						!strings.HasPrefix(got.Error.Message, "ccproxy: ") || got.RequestID == "" || hdr.Get("Content-Type") != "application/json" {
						t.Fatalf("got %d %q %s; want %d, an Anthropic %s with a request id", status, hdr.Get("Content-Type"), body, fault.status, fault.errType)
					}
					rows := waitFallbackRows(t, fg.gateway, u.ID, 1)
					if want := (fallbackRow{"bedrock", true, "plan_503", fault.status}); rows[0] != want {
						t.Fatalf("usage row %+v, want %+v", rows[0], want)
					}
					if n := countLogLines(t, fg.gateway, map[string]string{"request_id": got.RequestID,
						"msg": "upstream processor failed the attempt; the router-level processor answers the client"}); n != 1 {
						t.Errorf("%d log lines name the failed attempt of request %s, want 1", n, got.RequestID)
					}
				})
				t.Run(fault.name+", Claude Code", func(t *testing.T) {
					t.Parallel()
					u := fg.admin.user("claude", "plan_first", eastCredential())
					const answer = "Bedrock answered the retry."
					marker := fg.scenario(t, planOverloaded, bedrockText(answer))
					res := fg.claude(u.Key).Prompt(t, "Fail once "+marker+" "+fault.marker+marker)
					wantPrinted(t, res, answer)
					rows := waitFallbackRows(t, fg.gateway, u.ID, 2)
					want := []fallbackRow{{"bedrock", true, "plan_503", fault.status}, bedrockRow("plan_503")}
					if !slices.Equal(rows, want) {
						t.Fatalf("usage rows %+v\nwant %+v", rows, want)
					}
					if n := len(fg.fb.Carrying(marker)); n != 1 {
						t.Fatalf("Bedrock received %d requests; want 1 (the retry)", n)
					}
				})
			}
		})
	}
}
