package observability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors. Each component registers its own metrics on it; there is no
// global registry, so tests can run components side by side.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Check reports whether one dependency is usable; nil means ready.
type Check func(ctx context.Context) error

// Health tracks named readiness checks. The zero value is not usable; use
// NewHealth.
type Health struct {
	mu     sync.RWMutex
	checks map[string]check
}

type check struct {
	run  Check
	soft bool
}

// NewHealth returns an empty set of checks (ready until one is added).
func NewHealth() *Health { return &Health{checks: map[string]check{}} }

// Add registers a hard readiness check under name, replacing any previous
// one: while it fails, /readyz answers 503.
func (h *Health) Add(name string, c Check) { h.add(name, check{run: c}) }

// AddSoft registers a soft check: a dependency the process serves without,
// worse. While it fails /readyz still answers 200, with status "degraded"
// and the failure, so that a load balancer keeps the replica and a person
// sees why.
func (h *Health) AddSoft(name string, c Check) { h.add(name, check{run: c, soft: true}) }

func (h *Health) add(name string, c check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// Ready runs every check with a short deadline and returns each hard
// failure by name.
func (h *Health) Ready(ctx context.Context) map[string]string {
	failed, _ := h.Status(ctx)
	return failed
}

// Status runs every check with a short deadline and returns the failures of
// hard checks and of soft ones, by name.
func (h *Health) Status(ctx context.Context) (failed, degraded map[string]string) {
	h.mu.RLock()
	checks := make(map[string]check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	failed, degraded = map[string]string{}, map[string]string{}
	for name, c := range checks {
		if err := c.run(ctx); err != nil {
			if c.soft {
				degraded[name] = err.Error()
			} else {
				failed[name] = err.Error()
			}
		}
	}
	return failed, degraded
}

// Handler serves /metrics from reg, /healthz (the process is alive) and
// /readyz (every hard check passes; 503 with the failures otherwise; 200
// with status "degraded" and the failures when only soft checks fail).
func Handler(reg prometheus.Gatherer, health *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		failed, degraded := health.Status(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if len(failed) > 0 {
			body := map[string]any{"status": "unavailable", "failed": failed}
			if len(degraded) > 0 {
				body["degraded"] = degraded
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(body)
			return
		}
		if len(degraded) > 0 {
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "degraded", "degraded": degraded})
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return mux
}

// ServeMetrics serves Handler on addr until ctx is done, then shuts down
// gracefully. An empty addr disables it and returns when ctx is done.
func ServeMetrics(ctx context.Context, log *slog.Logger, addr string, reg prometheus.Gatherer, health *Health) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s (--metrics-addr / CCPROXY_METRICS_ADDR): %w", addr, err)
	}
	srv := &http.Server{Handler: Handler(reg, health), ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving metrics and health", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}
