package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// otlpSink is an OpenTelemetry Collector OTLP receiver (gRPC) started by
// the test, delivering to in-memory sinks.
type otlpSink struct {
	Addr    string
	traces  *consumertest.TracesSink
	metrics *consumertest.MetricsSink
}

func startOTLPReceiver(t *testing.T) *otlpSink {
	t.Helper()
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	grpc := cfg.Protocols.GRPC.GetOrInsertDefault()
	s := &otlpSink{Addr: freeAddrs(t, 1)[0], traces: new(consumertest.TracesSink), metrics: new(consumertest.MetricsSink)}
	grpc.NetAddr.Endpoint = s.Addr
	cfg.Protocols.HTTP = configoptional.None[otlpreceiver.HTTPConfig]()
	ctx := context.Background()
	set := receivertest.NewNopSettings(f.Type())
	tr, err := f.CreateTraces(ctx, set, cfg, s.traces)
	if err != nil {
		t.Fatal(err)
	}
	// The admin service exports the per-request metrics to the same
	// receiver (one shared instance for both signals).
	mr, err := f.CreateMetrics(ctx, set, cfg, s.metrics)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(ctx, componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	if err := mr.Start(ctx, componenttest.NewNopHost()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tr.Shutdown(context.Background())
		_ = mr.Shutdown(context.Background())
	})
	return s
}

// span is one received span, flattened.
type span struct {
	Name, TraceID, SpanID, Parent string
	Attrs                         map[string]string
}

func (s *otlpSink) spans() []span {
	var out []span
	for _, td := range s.traces.AllTraces() {
		for _, rs := range td.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					out = append(out, flatten(sp))
				}
			}
		}
	}
	return out
}

func flatten(sp ptrace.Span) span {
	s := span{Name: sp.Name(), TraceID: sp.TraceID().String(), SpanID: sp.SpanID().String(), Attrs: map[string]string{}}
	if !sp.ParentSpanID().IsEmpty() {
		s.Parent = sp.ParentSpanID().String()
	}
	sp.Attributes().Range(func(k string, v pcommon.Value) bool {
		s.Attrs[k] = v.AsString()
		return true
	})
	return s
}

// everyValue is every string in the received traces that could carry a
// secret: resource, scope, span, event and link attributes, names, status
// messages and trace state.
func (s *otlpSink) everyValue() []string {
	var out []string
	attrs := func(m pcommon.Map) {
		m.Range(func(k string, v pcommon.Value) bool {
			out = append(out, k, v.AsString())
			return true
		})
	}
	for _, td := range s.traces.AllTraces() {
		for _, rs := range td.ResourceSpans().All() {
			attrs(rs.Resource().Attributes())
			for _, ss := range rs.ScopeSpans().All() {
				attrs(ss.Scope().Attributes())
				for _, sp := range ss.Spans().All() {
					out = append(out, sp.Name(), sp.Status().Message(), sp.TraceState().AsRaw())
					attrs(sp.Attributes())
					for _, e := range sp.Events().All() {
						out = append(out, e.Name())
						attrs(e.Attributes())
					}
					for _, l := range sp.Links().All() {
						attrs(l.Attributes())
					}
				}
			}
		}
	}
	return out
}

// TestOpenTelemetryTraces runs real Claude Code through a gateway that
// exports traces over OTLP/gRPC to an OpenTelemetry Collector receiver:
// a Plan request, a plan_first request that Plan refuses with 429 and
// Bedrock answers, and a request that arrives with a W3C traceparent. Every
// metered request has exactly one trace with the expected spans, the
// traceparent's trace is joined, and no attribute anywhere carries the
// access key, the API key or a Bedrock credential.
func TestOpenTelemetryTraces(t *testing.T) {
	sink := startOTLPReceiver(t)
	fg := startFallbackGateway(t, func(fg *fallbackGateway) {
		fg.env = append(fg.env, "CCPROXY_OTEL_EXPORTER=grpc", "CCPROXY_OTEL_ENDPOINT="+sink.Addr, "CCPROXY_OTEL_INSECURE=true")
	})

	// A plan_first user with a Bedrock credential: Plan refuses, Bedrock
	// answers (translation, breaker, two upstream attempts).
	u := fg.admin.user("traced", "plan_first", eastCredential())
	marker := fg.scenario(t, func(fakeanthropic.Request) fakeanthropic.Reply { return planLimited("120") },
		func(r fakebedrock.Request) fakebedrock.Reply {
			return bedrockText("Bedrock answered the traced turn.")(r)
		})
	wantPrinted(t, fg.claude(u.Key).Prompt(t, "Traced turn "+marker), "Bedrock answered the traced turn.")

	// The demo user (no Bedrock credential): Plan pass-through.
	planMarker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		return planText(r, "Plan answered the traced turn.")
	}, nil)
	wantPrinted(t, fg.claude(fg.Key).Prompt(t, "Plan turn "+planMarker), "Plan answered the traced turn.")

	// A request carrying Envoy's (or any client's) trace context.
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	joinMarker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply { return planText(r, "joined") }, nil)
	req, _ := http.NewRequest(http.MethodPost, fg.Base+"/ak/"+fg.Key+"/v1/messages",
		strings.NewReader(`{"model":"claude-opus-5-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"join `+joinMarker+`"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("traceparent request: status %d", resp.StatusCode)
	}

	// Every metered request of the installation (the traced users', and the
	// route probes' of the gateway's start), from the usage rows.
	type row struct {
		id, user, provider string
		fallback           bool
		cost, price        string
	}
	waitUsageSettled(t, fg.gateway)
	rows, err := fg.DB.Query(context.Background(), `SELECT request_id, user_id::text, provider, fallback, cost_usd::text, coalesce(price_flag, '') FROM usage_events`)
	if err != nil {
		t.Fatal(err)
	}
	var metered []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.user, &r.provider, &r.fallback, &r.cost, &r.price); err != nil {
			t.Fatal(err)
		}
		metered = append(metered, r)
	}
	rows.Close()
	if len(metered) < 3 {
		t.Fatalf("%d usage rows, want at least 3", len(metered))
	}

	// The batch span processor exports every 5 s.
	byRequest := map[string][]span{} // request id → its request spans
	var spans []span
	deadline := time.Now().Add(45 * time.Second)
	for {
		spans = sink.spans()
		clear(byRequest)
		for _, s := range spans {
			if s.Name == "ccproxy.request" {
				byRequest[s.Attrs["ccproxy.request_id"]] = append(byRequest[s.Attrs["ccproxy.request_id"]], s)
			}
		}
		missing := 0
		for _, r := range metered {
			if len(byRequest[r.id]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d metered requests have no trace after 45s (%d spans received)", missing, len(metered), len(spans))
		}
		time.Sleep(500 * time.Millisecond)
	}
	byTrace := map[string][]span{}
	for _, s := range spans {
		byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
	}
	names := func(trace []span) map[string]int {
		n := map[string]int{}
		for _, s := range trace {
			key := s.Name
			if b := s.Attrs["ccproxy.backend"]; b != "" {
				key += "/" + b
			}
			n[key]++
		}
		return n
	}
	var sawFallback, sawPlan bool
	for _, r := range metered {
		reqSpans := byRequest[r.id]
		if len(reqSpans) != 1 {
			t.Errorf("request %s has %d request spans, want 1", r.id, len(reqSpans))
			continue
		}
		rs := reqSpans[0]
		trace := byTrace[rs.TraceID]
		for _, s := range trace {
			if s.Name == "ccproxy.request" && s.SpanID != rs.SpanID {
				t.Errorf("trace %s holds two requests (%s and %s)", rs.TraceID, rs.Attrs["ccproxy.request_id"], s.Attrs["ccproxy.request_id"])
			}
			if s.Name != "ccproxy.request" && s.Parent != rs.SpanID {
				t.Errorf("span %s of request %s is not a child of the request span", s.Name, r.id)
			}
		}
		if rs.Attrs["ccproxy.provider"] != r.provider || rs.Attrs["ccproxy.route"] == "" || rs.Attrs["ccproxy.model"] == "" ||
			rs.Attrs["ccproxy.tokens.input"] == "" || rs.Attrs["ccproxy.fallback"] != map[bool]string{true: "true", false: "false"}[r.fallback] {
			t.Errorf("request span of %s: %v", r.id, rs.Attrs)
		}
		// The span's cost is the usage row's: extproc prices the request
		// from the rate card the control plane serves, by the ingester's
		// rules.
		if spanCost, err := decimal.NewFromString(rs.Attrs["ccproxy.cost_usd"]); err != nil ||
			!spanCost.Round(6).Equal(decimal.RequireFromString(r.cost)) || rs.Attrs["ccproxy.price"] != r.price {
			t.Errorf("request span of %s: cost %q, price %q; the usage row has %s, %s",
				r.id, rs.Attrs["ccproxy.cost_usd"], rs.Attrs["ccproxy.price"], r.cost, r.price)
		}
		n := names(trace)
		if n["ccproxy.key_lookup"] != 1 {
			t.Errorf("request %s: spans %v, want one ccproxy.key_lookup", r.id, n)
		}
		switch {
		case r.fallback:
			if rs.Attrs["ccproxy.fallback_reason"] != "plan_429" {
				t.Errorf("fallback %s: reason %q", r.id, rs.Attrs["ccproxy.fallback_reason"])
			}
			if n["ccproxy.translate"] != 1 || n["ccproxy.breaker"] != 1 || n["ccproxy.upstream_attempt/plan"] != 1 || n["ccproxy.upstream_attempt/bedrock"] != 1 {
				t.Errorf("fallback %s: spans %v, want translate, breaker, a plan and a bedrock attempt", r.id, n)
			}
			sawFallback = true
		case r.provider == "anthropic" && r.user != u.ID:
			if n["ccproxy.upstream_attempt/plan"] != 1 || n["ccproxy.translate"] != 0 {
				t.Errorf("plan request %s: spans %v, want one plan attempt and no translation", r.id, n)
			}
			sawPlan = true
		}
	}
	if !sawFallback || !sawPlan {
		t.Errorf("saw a fallback trace: %v, a Plan trace: %v", sawFallback, sawPlan)
	}
	joined := byTrace[traceID]
	var joinedRequest bool
	for _, s := range joined {
		if s.Name == "ccproxy.request" && s.Parent == parentID {
			joinedRequest = true
		}
	}
	if !joinedRequest {
		t.Errorf("no request span in trace %s under parent %s (spans %v)", traceID, parentID, names(joined))
	}

	secrets := []string{fg.Key, u.Key, apiKey, bedrockAPIKey, awsSecretKey, awsAccessKeyID, "Bearer ", "x-api-key", "authorization"}
	for _, v := range sink.everyValue() {
		for _, s := range secrets {
			if strings.Contains(strings.ToLower(v), strings.ToLower(s)) {
				t.Errorf("a trace carries a secret or credential header (%q)", v)
			}
		}
	}
}
