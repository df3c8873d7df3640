// Package telemetry owns ccproxy's OpenTelemetry export: the tracer and
// meter providers built from the OpenTelemetry settings (OTLP over gRPC or
// HTTP), the W3C trace-context propagation used to join Envoy's traces, and
// the OpenTelemetry form of the per-request metric set (RequestMetrics),
// which carries the same names as the CloudWatch metrics (internal/
// observability/emf).
//
// Everything is off by default: New returns a nil *Provider, whose Tracer
// is nil, and the components skip every tracing call on a nil tracer, so
// that a gateway without OpenTelemetry does no per-request work for it.
//
// No attribute ccproxy sets carries a credential: spans are given the
// request id, route, provider, model, fallback, status and token counts
// only, never a header value, a path (which can hold an access key) or a
// body.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/ccproxy/ccproxy/internal/config"
)

// ScopeName is the instrumentation scope of ccproxy's spans and metrics.
const ScopeName = "github.com/ccproxy/ccproxy"

// Signals chooses what a process exports.
type Signals struct {
	Traces  bool
	Metrics bool
	// MetricInterval is how often metrics are exported; 60s when zero.
	MetricInterval time.Duration
}

// Provider holds a process's tracer and meter providers.
type Provider struct {
	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

// New builds the providers cfg and sig ask for, exporting over OTLP. It
// returns nil when cfg.Exporter is "off" (or empty). Exporters connect
// lazily: an unreachable collector costs dropped batches (logged by the
// SDK), never a failed start or a slow request.
func New(ctx context.Context, cfg config.Telemetry, service, version string, sig Signals) (*Provider, error) {
	if cfg.Exporter == "" || cfg.Exporter == "off" || (!sig.Traces && !sig.Metrics) {
		return nil, nil
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.version", version),
	)
	p := &Provider{}
	if sig.Traces {
		exp, err := traceExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		p.tp = sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(exp),
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		)
	}
	if sig.Metrics {
		exp, err := metricExporter(ctx, cfg)
		if err != nil {
			return nil, errors.Join(err, p.Shutdown(ctx))
		}
		interval := sig.MetricInterval
		if interval <= 0 {
			interval = time.Minute
		}
		p.mp = sdkmetric.NewMeterProvider(
			sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(interval))),
			sdkmetric.WithResource(res),
		)
	}
	return p, nil
}

// httpEndpoint splits an OTLP/HTTP endpoint setting into the exporter's
// options: a URL sets scheme and host (its path, if any, replaces the
// signal's default path), host:port uses TLS unless insecure.
func httpEndpoint(cfg config.Telemetry, defaultPath string) (host, path string, insecure bool) {
	v := cfg.Endpoint
	if v == "" {
		return "localhost:4318", defaultPath, cfg.Insecure
	}
	insecure = cfg.Insecure
	if rest, ok := strings.CutPrefix(v, "http://"); ok {
		v, insecure = rest, true
	} else {
		v = strings.TrimPrefix(v, "https://")
	}
	host, p, found := strings.Cut(v, "/")
	if !found || p == "" {
		return host, defaultPath, insecure
	}
	return host, "/" + p, insecure
}

func traceExporter(ctx context.Context, cfg config.Telemetry) (sdktrace.SpanExporter, error) {
	switch cfg.Exporter {
	case "grpc":
		opts := []otlptracegrpc.Option{}
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/gRPC trace exporter: %w", err)
		}
		return exp, nil
	case "http":
		host, path, insecure := httpEndpoint(cfg, "/v1/traces")
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(host), otlptracehttp.WithURLPath(path)}
		if insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/HTTP trace exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("telemetry: unknown exporter %q", cfg.Exporter)
}

func metricExporter(ctx context.Context, cfg config.Telemetry) (sdkmetric.Exporter, error) {
	switch cfg.Exporter {
	case "grpc":
		opts := []otlpmetricgrpc.Option{}
		if cfg.Endpoint != "" {
			opts = append(opts, otlpmetricgrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		}
		exp, err := otlpmetricgrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/gRPC metric exporter: %w", err)
		}
		return exp, nil
	case "http":
		host, path, insecure := httpEndpoint(cfg, "/v1/metrics")
		opts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpoint(host), otlpmetrichttp.WithURLPath(path)}
		if insecure {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		}
		exp, err := otlpmetrichttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/HTTP metric exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("telemetry: unknown exporter %q", cfg.Exporter)
}

// Tracer returns ccproxy's tracer, or nil when traces are not exported
// (p nil or built without Signals.Traces).
func (p *Provider) Tracer() trace.Tracer {
	if p == nil || p.tp == nil {
		return nil
	}
	return p.tp.Tracer(ScopeName)
}

// Meter returns ccproxy's meter, or nil when metrics are not exported.
func (p *Provider) Meter() metric.Meter {
	if p == nil || p.mp == nil {
		return nil
	}
	return p.mp.Meter(ScopeName)
}

// Shutdown flushes what is buffered and stops the exporters.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	var errs []error
	if p.tp != nil {
		errs = append(errs, p.tp.Shutdown(ctx))
	}
	if p.mp != nil {
		errs = append(errs, p.mp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
