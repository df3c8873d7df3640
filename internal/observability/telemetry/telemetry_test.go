package telemetry

import (
	"context"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability/emf"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// receiver starts the OpenTelemetry Collector's OTLP receiver on one
// protocol, with in-memory sinks.
func receiver(t *testing.T, protocol string) (addr string, traces *consumertest.TracesSink, metrics *consumertest.MetricsSink) {
	t.Helper()
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	// Both protocols listen (each on a port of its own); the exporter
	// under test uses one.
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg.Protocols.GRPC.GetOrInsertDefault().NetAddr.Endpoint = grpcAddr
	cfg.Protocols.HTTP.GetOrInsertDefault().ServerConfig.NetAddr.Endpoint = httpAddr
	addr = grpcAddr
	if protocol == "http" {
		addr = httpAddr
	}
	traces, metrics = new(consumertest.TracesSink), new(consumertest.MetricsSink)
	ctx := context.Background()
	set := receivertest.NewNopSettings(f.Type())
	tr, err := f.CreateTraces(ctx, set, cfg, traces)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := f.CreateMetrics(ctx, set, cfg, metrics)
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
	return addr, traces, metrics
}

// TestExportOverOTLP exports a span and the request metric set over each
// OTLP protocol to the Collector's own receiver and finds them there with
// the CloudWatch names and dimensions.
func TestExportOverOTLP(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			addr, traces, metrics := receiver(t, protocol)
			endpoint := addr
			if protocol == "http" {
				endpoint = "http://" + addr
			}
			ctx := context.Background()
			p, err := New(ctx, config.Telemetry{Exporter: protocol, Endpoint: endpoint, Insecure: true, SampleRatio: 1},
				"ccproxy-test", "v0", Signals{Traces: true, Metrics: true, MetricInterval: time.Hour})
			if err != nil || p == nil {
				t.Fatalf("New = %v, %v", p, err)
			}
			_, span := p.Tracer().Start(ctx, "request")
			span.End()
			rm, err := NewRequestMetrics(p.Meter(), true)
			if err != nil {
				t.Fatal(err)
			}
			rm.Record(ctx, emf.Request{Provider: "bedrock", Model: "claude-opus-5-5", Status: 200, Stream: true,
				Latency: 1500 * time.Millisecond, TTFT: 300 * time.Millisecond, HasTTFT: true,
				Input: 10, Output: 15, CacheWrite1h: 7, CostUSD: decimal.RequireFromString("0.25"),
				FallbackReason: "plan_429", UserID: "u-1"})
			// Shutdown flushes both providers.
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if n := traces.SpanCount(); n != 1 {
				t.Errorf("spans received = %d, want 1", n)
			}
			got := map[string]string{} // metric name → unit
			var tokenTypes []string
			for _, md := range metrics.AllMetrics() {
				rms := md.ResourceMetrics()
				for i := 0; i < rms.Len(); i++ {
					if v, _ := rms.At(i).Resource().Attributes().Get("service.name"); v.Str() != "ccproxy-test" {
						t.Errorf("service.name = %q", v.Str())
					}
					sms := rms.At(i).ScopeMetrics()
					for j := 0; j < sms.Len(); j++ {
						ms := sms.At(j).Metrics()
						for k := 0; k < ms.Len(); k++ {
							m := ms.At(k)
							got[m.Name()] = m.Unit()
							if m.Name() == emf.MetricTokens && m.Type() == pmetric.MetricTypeSum {
								dps := m.Sum().DataPoints()
								for d := 0; d < dps.Len(); d++ {
									v, _ := dps.At(d).Attributes().Get("token_type")
									tokenTypes = append(tokenTypes, v.Str())
								}
							}
						}
					}
				}
			}
			want := map[string]string{
				emf.MetricRequests: "{request}", emf.MetricLatency: "ms", emf.MetricTTFT: "ms",
				emf.MetricTokens: "{token}", emf.MetricCost: "USD", emf.MetricFallbacks: "{request}",
				emf.MetricUserRequests: "{request}", emf.MetricUserTokens: "{token}", emf.MetricUserCost: "USD",
			}
			for name, unit := range want {
				if got[name] != unit {
					t.Errorf("metric %s: unit %q received, want %q (all: %v)", name, got[name], unit, got)
				}
			}
			sort.Strings(tokenTypes)
			if w := []string{"cache_write", "cache_write_1h", "input", "output"}; len(tokenTypes) != len(w) || tokenTypes[0] != w[0] || tokenTypes[1] != w[1] || tokenTypes[2] != w[2] || tokenTypes[3] != w[3] {
				t.Errorf("token types %v, want %v", tokenTypes, w)
			}
		})
	}
}

func TestOffBuildsNothing(t *testing.T) {
	for _, exp := range []string{"", "off"} {
		p, err := New(context.Background(), config.Telemetry{Exporter: exp}, "s", "v", Signals{Traces: true, Metrics: true})
		if p != nil || err != nil {
			t.Errorf("exporter %q: New = %v, %v; want nil, nil", exp, p, err)
		}
		if p.Tracer() != nil || p.Meter() != nil || p.Shutdown(context.Background()) != nil {
			t.Errorf("exporter %q: a nil provider must give nil tracer and meter", exp)
		}
	}
	if _, err := New(context.Background(), config.Telemetry{Exporter: "zipkin"}, "s", "v", Signals{Traces: true}); err == nil {
		t.Error("unknown exporter: no error")
	}
}
