package router

import (
	"context"
	"errors"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// fakeStream records what a processor sends on its stream.
type fakeStream struct {
	mu   sync.Mutex
	sent []*extprocv3.ProcessingResponse
	err  error
}

func (s *fakeStream) Send(r *extprocv3.ProcessingResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, r)
	return s.err
}

// TestAttemptFailed: when the upstream processor fails the request's
// attempt, the router-level processor answers the client at once on its
// own stream — under Envoy releases that stall such an attempt nothing
// else would answer before the per-try timeout — with the status Envoy
// would answer (504 late, 500 failed stream) in the client's format,
// meters the request with it, and charges the breaker for nothing. A
// response that already reached the processor (Envoy's own local reply
// included) is answered as such, and the failure then changes nothing.
func TestAttemptFailed(t *testing.T) {
	body := []byte(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	type attempt struct {
		backend string
		status  int
	}
	tests := []struct {
		name     string
		key      string
		path     string
		breaker  planbreaker.Route
		attempts []attempt // recorded before the failed one
		failed   string    // backend of the failed attempt
		failure  handoff.Failure
		// envoyFirst: Envoy's own local reply reaches the processor before
		// the failure is reported (Envoy 1.37+ winning the race).
		envoyFirst   bool
		streamGone   bool // the router stream's context ended first
		wantSent     string
		wantStatus   int
		wantProvider string
		wantReason   string
	}{
		{name: "bedrock attempt misses the message timeout after a plan 429", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 429}}, failed: dataplane.BackendBedrock, failure: handoff.FailureLate,
			wantSent:   `{"type":"error","error":{"type":"timeout_error","message":"ccproxy: the gateway did not prepare the request for its upstream in time; retry"},"request_id":"rid-1"}`,
			wantStatus: 504, wantProvider: usage.ProviderBedrock, wantReason: "plan_429"},
		{name: "bedrock attempt's stream fails after a plan 503", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 503}}, failed: dataplane.BackendBedrock, failure: handoff.FailureStream,
			wantSent:   `{"type":"error","error":{"type":"api_error","message":"ccproxy: the gateway failed while preparing the request for its upstream; retry"},"request_id":"rid-1"}`,
			wantStatus: 500, wantProvider: usage.ProviderBedrock, wantReason: "plan_503"},
		{name: "plan attempt misses the message timeout: no fallback, breaker not charged", key: "plan-first", path: "/v1/messages",
			failed: dataplane.BackendPlan, failure: handoff.FailureLate,
			wantSent:   `{"type":"error","error":{"type":"timeout_error","message":"ccproxy: the gateway did not prepare the request for its upstream in time; retry"},"request_id":"rid-1"}`,
			wantStatus: 504, wantProvider: usage.ProviderAnthropic},
		{name: "breaker open: the only (bedrock) attempt fails", key: "plan-first", path: "/v1/messages", breaker: planbreaker.RouteOpen,
			failed: dataplane.BackendBedrock, failure: handoff.FailureStream,
			wantSent:   `{"type":"error","error":{"type":"api_error","message":"ccproxy: the gateway failed while preparing the request for its upstream; retry"},"request_id":"rid-1"}`,
			wantStatus: 500, wantProvider: usage.ProviderBedrock, wantReason: ReasonBreakerOpen},
		{name: "bedrock_only count_tokens", key: "bedrock", path: "/v1/messages/count_tokens",
			failed: dataplane.BackendBedrock, failure: handoff.FailureLate,
			wantSent:   `{"type":"error","error":{"type":"timeout_error","message":"ccproxy: the gateway did not prepare the request for its upstream in time; retry"},"request_id":"rid-1"}`,
			wantStatus: 504, wantProvider: usage.ProviderBedrock},
		{name: "Claude Code's Bedrock mode gets an AWS error", key: "bedrock", path: "/bedrock/model/us.anthropic.claude-opus-5-5/invoke",
			failed: dataplane.BackendBedrock, failure: handoff.FailureStream,
			wantSent:   `{"message":"ccproxy: the gateway failed while preparing the request for its upstream; retry"}`,
			wantStatus: 500, wantProvider: usage.ProviderBedrock},
		{name: "Envoy's local reply came first: answered as such, the failure changes nothing", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 429}}, failed: dataplane.BackendBedrock, failure: handoff.FailureLate, envoyFirst: true,
			wantStatus: 504, wantProvider: usage.ProviderBedrock, wantReason: "plan_429"},
		{name: "the client is gone: nothing sent", key: "plan-first", path: "/v1/messages",
			attempts: []attempt{{dataplane.BackendPlan, 429}}, failed: dataplane.BackendBedrock, failure: handoff.FailureLate, streamGone: true,
			wantProvider: usage.ProviderBedrock, wantReason: "plan_429"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newBedrockHarness(t, fallbackRuntime(t), nil)
			fb := &fakeBreaker{route: tc.breaker}
			h.r.bedrock.Breaker = fb
			p := h.r.NewProcessor()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &fakeStream{}
			p.Attach(ctx, out)
			mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys[tc.key]+tc.path, "x-api-key", "sk-client"))
			resp := mustProcess(t, p, reqBody(body))
			set := setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())
			stored := h.requests.Get(set[dataplane.StateHeader])
			if stored == nil {
				t.Fatalf("no handoff stored (reply %v)", resp)
			}
			for _, a := range tc.attempts {
				i := stored.Attempts.Start(a.backend)
				stored.Attempts.Respond(i, a.status)
			}
			i := stored.Attempts.Start(tc.failed)
			if tc.envoyFirst {
				r := mustProcess(t, p, respHeaders("504"))
				if r.GetImmediateResponse() == nil {
					t.Fatalf("Envoy's local reply not answered: %v", r)
				}
			}
			if tc.streamGone {
				cancel()
			}
			stored.FailAttempt(i, tc.failure)

			if tc.wantSent == "" {
				if len(out.sent) != 0 {
					t.Fatalf("sent %v; want nothing", out.sent)
				}
			} else {
				if len(out.sent) != 1 {
					t.Fatalf("sent %d messages, want 1 immediate response", len(out.sent))
				}
				ir := out.sent[0].GetImmediateResponse()
				if int(ir.GetStatus().GetCode()) != tc.wantStatus || string(ir.GetBody()) != tc.wantSent {
					t.Fatalf("immediate response %d %s", ir.GetStatus().GetCode(), ir.GetBody())
				}
				if err := ir.ValidateAll(); err != nil {
					t.Fatalf("immediate response fails Envoy's validation: %v", err)
				}
				if n := testutil.ToFloat64(h.metrics.attemptFailures.WithLabelValues(tc.failed, tc.failure.String())); n != 1 {
					t.Fatalf("attempt failure replies = %v", n)
				}
				// Envoy took the answer: whatever it still sends gets no reply.
				if r, err := p.Process(ctx, respHeaders("504")); r != nil || err != nil {
					t.Fatalf("message after the answer: reply %v, %v", r, err)
				}
			}
			p.Close(context.Background())
			p.AttemptFailed(handoff.Attempt{Backend: tc.failed, Failure: handoff.FailureStream}) // after Close: nothing
			if len(out.sent) > 1 {
				t.Fatalf("sent %d messages", len(out.sent))
			}

			evs := h.sink.Events()
			if len(evs) != 1 {
				t.Fatalf("%d usage events", len(evs))
			}
			ev := evs[0]
			if ev.Status != tc.wantStatus || ev.Provider != tc.wantProvider || ev.FallbackReason != tc.wantReason || ev.Fallback != (tc.wantReason != "") {
				t.Fatalf("usage event status=%d provider=%q fallback=%v reason=%q", ev.Status, ev.Provider, ev.Fallback, ev.FallbackReason)
			}
			if tc.wantSent != "" && ev.Aborted {
				t.Fatal("usage event says aborted, but the client got an answer")
			}
			if len(fb.failures) != 0 {
				t.Fatalf("breaker charged %d times for the gateway's own failure", len(fb.failures))
			}
		})
	}
}

// TestAttemptFailedSendError: a stream that cannot take the answer any more
// is only logged; the request stays metered once.
func TestAttemptFailedSendError(t *testing.T) {
	h := newBedrockHarness(t, fallbackRuntime(t), nil)
	h.r.bedrock.Breaker = &fakeBreaker{}
	p := h.r.NewProcessor()
	out := &fakeStream{err: errors.New("stream closed")}
	p.Attach(context.Background(), out)
	mustProcess(t, p, reqHeaders("POST", "/ak/"+h.keys["plan-first"]+"/v1/messages", "x-api-key", "sk-client"))
	resp := mustProcess(t, p, reqBody([]byte(`{"model":"claude-opus-5-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)))
	stored := h.requests.Get(setHeaders(resp.GetRequestBody().GetResponse().GetHeaderMutation())[dataplane.StateHeader])
	stored.FailAttempt(stored.Attempts.Start(dataplane.BackendPlan), handoff.FailureStream)
	p.Close(context.Background())
	if len(out.sent) != 1 || len(h.sink.Events()) != 1 || h.sink.Events()[0].Status != 500 {
		t.Fatalf("sent %d, events %+v", len(out.sent), h.sink.Events())
	}
}
