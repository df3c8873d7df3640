package envoysim

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRouteTimeoutDefault shows why the control plane must set route
// timeout 0s: Envoy's 15 s default covers the whole streamed answer.
// The compiled default is checked exactly; the running cut is checked to
// come no earlier than 15 s and within a generous bound (a loaded machine
// may deliver it late, never early), against a stream that would otherwise
// never end.
func TestRouteTimeoutDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		timeout     *durationpb.Duration
		wantTimeout time.Duration
	}{
		{"absent: 15 s", nil, 15 * time.Second},
		{"0s: none", durationpb.New(0), 0},
	}
	for _, tt := range tests {
		t.Run("compiled "+tt.name, func(t *testing.T) {
			c := cfg{noExtProc: true, backendAddr: "127.0.0.1:1", planRoute: func(r *routev3.Route) {
				r.GetRoute().Timeout = tt.timeout
			}}
			snap, err := compile(c.resources(t))
			if err != nil {
				t.Fatal(err)
			}
			var got []time.Duration
			for _, l := range snap.listeners {
				rc := snap.routesFor(l.hcm)
				for _, vh := range rc.vhosts {
					for _, r := range vh.routes {
						if r.action != nil {
							got = append(got, r.action.timeout)
						}
					}
				}
			}
			if len(got) == 0 {
				t.Fatal("no route with an action")
			}
			for _, d := range got {
				if d != tt.wantTimeout {
					t.Fatalf("compiled route timeouts %v, want %v", got, tt.wantTimeout)
				}
			}
		})
	}
	if testing.Short() {
		t.Skip("streams for 17 s")
	}
	t.Run("absent: an endless stream is cut at 15 s", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, endlessSSE(250*time.Millisecond))
		url := startSim(t, cfg{noExtProc: true, backendAddr: up.addr()}.resources(t), nil)
		start := time.Now()
		got := do(t, "GET", url+"/", "", nil)
		elapsed := time.Since(start)
		if got.status != 200 || got.err == nil || elapsed < 15*time.Second || elapsed > 45*time.Second {
			t.Fatalf("want a 200 reset at 15 s, got %d err=%v after %v", got.status, got.err, elapsed)
		}
		if !strings.HasPrefix(got.body, "event: ping\n") || !strings.HasPrefix(sseBody(strings.Count(got.body, "event: ")), got.body) {
			t.Fatalf("body %q is not a truncated stream", got.body)
		}
	})
	t.Run("0s: a 17 s stream arrives whole", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t, sse(17, time.Second))
		c := cfg{noExtProc: true, backendAddr: up.addr(), planRoute: func(r *routev3.Route) {
			r.GetRoute().Timeout = durationpb.New(0)
		}}
		url := startSim(t, c.resources(t), nil)
		got := do(t, "GET", url+"/", "", nil)
		if got.err != nil || got.body != sseBody(17) {
			t.Fatalf("got %q err=%v", got.body, got.err)
		}
	})
}

// endlessSSE streams ping events every pause until the client goes away.
func endlessSSE(pause time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		w.WriteHeader(200)
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "event: ping\ndata: {\"i\":%d}\n\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pause):
			}
		}
	}
}

// TestBufferLimitDefault: without per_connection_buffer_limit_bytes a
// BUFFERED request body over 1 MiB is a 413.
func TestBufferLimitDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		limit      *wrapperspb.UInt32Value
		size       int
		wantStatus int
		wantBody   string
	}{
		{"absent, 1 MiB passes", nil, 1 << 20, 200, `{"ok":true}`},
		{"absent, 1 MiB + 1 is 413", nil, 1<<20 + 1, 413, "Payload Too Large"},
		{"50 MiB, 5 MB passes", wrapperspb.UInt32(50 << 20), 5_000_000, 200, `{"ok":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := &goodProcessor{}
			p := startProcessor(t, g.handle)
			up := startUpstream(t, nil)
			c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(10 * time.Second),
				listener: func(l *listenerv3.Listener) { l.PerConnectionBufferLimitBytes = tt.limit }}
			url := startSim(t, c.resources(t), nil)
			body := strings.Repeat("x", tt.size)
			got := do(t, "POST", url+"/", body, nil)
			if got.status != tt.wantStatus || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
			}
			if tt.wantStatus == 200 {
				if reqs := up.seen(); len(reqs) != 1 || reqs[0].body != body {
					t.Fatalf("upstream did not get the body intact")
				}
			}
		})
	}
}

// TestMessageTimeoutDefault: without message_timeout a processor that needs
// 300 ms gets a 504.
func TestMessageTimeoutDefault(t *testing.T) {
	t.Parallel()
	p := startProcessor(t, safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
		recvOrStop(srv)
		time.Sleep(300 * time.Millisecond)
		_ = srv.Send(reqHeadersResp(nil))
		recvOrStop(srv)
		return nil
	}))
	url := startSim(t, cfg{procAddr: p.addr}.resources(t), nil)
	got := do(t, "POST", url+"/", "{}", nil)
	if got.status != 504 || got.body != "" {
		t.Fatalf("got %d %q err=%v, want 504", got.status, got.body, got.err)
	}
}

// TestMaxRetriesDefault: circuit_breakers max_retries defaults to 3 parallel
// retries per cluster; a fourth concurrent retry silently does not happen.
func TestMaxRetriesDefault(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var attempts atomic.Int32
	var mu sync.Mutex
	seen := map[string]bool{}
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		id := r.Header.Get("x-request-id")
		mu.Lock()
		first := !seen[id]
		seen[id] = true
		mu.Unlock()
		if first {
			w.WriteHeader(503)
			return
		}
		<-release
		_, _ = w.Write([]byte("retried"))
	})
	c := cfg{noExtProc: true, backendAddr: up.addr(), planRoute: func(r *routev3.Route) {
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
	}}
	url := startSim(t, c.resources(t), nil)
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		go func() { results <- do(t, "GET", url+"/", "", nil) }()
	}
	// Exactly one request cannot retry and returns its 503 at once.
	first := <-results
	if first.status != 503 || first.body != "" {
		t.Fatalf("first result %d %q, want the unretried 503", first.status, first.body)
	}
	// The three retries (after a jittered back-off) reach the upstream,
	// which holds them.
	deadline := time.Now().Add(30 * time.Second)
	for attempts.Load() < 7 {
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw %d attempts after 30 s, want 4 + 3 retries", attempts.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	for i := 0; i < 3; i++ {
		r := <-results
		if r.status != 200 || r.body != "retried" {
			t.Errorf("retried request got %d %q", r.status, r.body)
		}
	}
	// Every request has ended, so the count is final: no fourth retry.
	if got := attempts.Load(); got != 7 {
		t.Fatalf("upstream saw %d attempts, want 4 + 3 retries", got)
	}
}

func TestRouterOutcomes(t *testing.T) {
	t.Parallel()
	// Since 1.39 the transport failure reason ("delayed connect error:
	// Connection refused") is only in the details (TestEnvoyConformance).
	refused := "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
	tests := []struct {
		name       string
		upstream   http.HandlerFunc
		refuse     bool
		conf       func(*cfg)
		wantStatus int
		wantBody   string
		wantTries  int32
	}{
		{
			name: "retry on 5xx", wantStatus: 200, wantBody: "second", wantTries: 2,
			upstream: failFirst(503),
			conf:     withRetry(&routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}),
		},
		{
			name: "429 passes without retriable-status-codes", wantStatus: 429, wantBody: "", wantTries: 1,
			upstream: failFirst(429),
			conf:     withRetry(&routev3.RetryPolicy{RetryOn: "connect-failure,reset-before-request", NumRetries: wrapperspb.UInt32(1)}),
		},
		{
			name: "retriable-status-codes 429", wantStatus: 200, wantBody: "second", wantTries: 2,
			upstream: failFirst(429),
			conf:     withRetry(&routev3.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{429}, NumRetries: wrapperspb.UInt32(1)}),
		},
		{
			name: "connection refused", refuse: true, wantStatus: 503, wantBody: refused,
		},
		{
			name: "connection refused after a retry", refuse: true, wantStatus: 503,
			wantBody: strings.Replace(refused, "reset reason", "retried and the latest reset reason", 1),
			conf:     withRetry(&routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1)}),
		},
		{
			name: "per_try_timeout without retry", wantStatus: 504, wantBody: "upstream request timeout", wantTries: 1,
			upstream: func(w http.ResponseWriter, r *http.Request) { time.Sleep(time.Second) },
			conf:     withRetry(&routev3.RetryPolicy{RetryOn: "connect-failure", PerTryTimeout: durationpb.New(200 * time.Millisecond)}),
		},
		{
			name: "per_try_timeout retried on reset", wantStatus: 200, wantBody: "second", wantTries: 2,
			upstream: func() http.HandlerFunc {
				var n atomic.Int32
				return func(w http.ResponseWriter, r *http.Request) {
					if n.Add(1) == 1 {
						time.Sleep(time.Second)
					}
					_, _ = w.Write([]byte("second"))
				}
			}(),
			conf: withRetry(&routev3.RetryPolicy{RetryOn: "reset", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: durationpb.New(200 * time.Millisecond)}),
		},
		{
			// The request was received in full, so 504, not 408
			// (Utility::maybeRequestTimeoutCode); the 408 case is in
			// TestEnvoyConformance.
			name: "stream idle timeout before response headers", wantStatus: 504, wantBody: "stream timeout", wantTries: 1,
			upstream: func(w http.ResponseWriter, r *http.Request) { time.Sleep(time.Second) },
			conf: func(c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(200 * time.Millisecond) }
			},
		},
		{
			name: "max_requests overflow", wantStatus: 503, wantTries: 0,
			wantBody: "upstream connect error or disconnect/reset before headers. reset reason: overflow",
			conf: func(c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) {
					cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(0)}}}
				}
			},
		},
		{
			name: "unknown cluster from cluster_header", wantStatus: 503, wantBody: "", wantTries: 0,
			conf: func(c *cfg) {
				c.planRoute = func(r *routev3.Route) {
					r.GetRoute().ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tries atomic.Int32
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				tries.Add(1)
				if tt.upstream != nil {
					tt.upstream(w, r)
				}
			})
			c := cfg{noExtProc: true, backendAddr: up.addr()}
			if tt.refuse {
				c.backendAddr = "127.0.0.1:1"
			}
			if tt.conf != nil {
				tt.conf(&c)
			}
			url := startSim(t, c.resources(t), nil)
			got := do(t, "GET", url+"/", "", map[string]string{"x-cluster": "nope"})
			if got.err != nil || got.status != tt.wantStatus || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, tt.wantStatus, tt.wantBody)
			}
			if !tt.refuse && tries.Load() != tt.wantTries {
				t.Errorf("upstream saw %d tries, want %d", tries.Load(), tt.wantTries)
			}
		})
	}
}

func withRetry(p *routev3.RetryPolicy) func(*cfg) {
	return func(c *cfg) {
		c.planRoute = func(r *routev3.Route) { r.GetRoute().RetryPolicy = p }
	}
}

// failFirst answers status on the first request and "second" afterwards.
func failFirst(status int) http.HandlerFunc {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(status)
			return
		}
		fmt.Fprint(w, "second")
	}
}

// TestCompiledDefaults: the value each absent field compiles to, for the
// defaults that no end-to-end test can wait for (FIDELITY.md, "Defaults
// applied when a field is absent").
func TestCompiledDefaults(t *testing.T) {
	t.Parallel()
	c := cfg{procAddr: "127.0.0.1:9", backendAddr: "127.0.0.1:9",
		planRoute: func(r *routev3.Route) { r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"} }}
	snap, err := compile(c.resources(t))
	if err != nil {
		t.Fatal(err)
	}
	l := snap.listeners[0]
	rt := l.hcm.inlineRoutes.vhosts[0].routes[0]
	backend := snap.clusters["backend"]
	ep := l.hcm.extProcs[0]
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"Listener.per_connection_buffer_limit_bytes", l.bufferLimit, int64(1 << 20)},
		{"HttpConnectionManager.stream_idle_timeout", l.hcm.streamIdleTimeout, 5 * time.Minute},
		{"HttpConnectionManager.request_timeout", l.hcm.requestTimeout, time.Duration(0)},
		{"HttpProtocolOptions.idle_timeout (downstream)", l.hcm.connIdleTimeout, time.Hour},
		{"HttpConnectionManager.generate_request_id", l.hcm.generateRequestID, true},
		{"HttpConnectionManager.server_name", l.hcm.serverName, "envoy"},
		{"RouteAction.timeout", rt.action.timeout, 15 * time.Second},
		{"RetryPolicy.num_retries", rt.action.retry.numRetries, 1},
		{"RetryBackOff.base_interval", rt.action.retry.baseInterval, 25 * time.Millisecond},
		{"RetryBackOff.max_interval", rt.action.retry.maxInterval, 250 * time.Millisecond},
		{"Cluster.connect_timeout", backend.connectTimeout, 5 * time.Second},
		{"CircuitBreakers max_connections/pending/requests/retries", backend.thresholds, thresholds{1024, 1024, 1024, 3}},
		{"ExternalProcessor.message_timeout", ep.messageTimeout, 200 * time.Millisecond},
		{"ExternalProcessor.max_message_timeout", ep.maxMessageTimeout, time.Duration(0)},
		{"ExternalProcessor.failure_mode_allow", ep.failureModeAllow, false},
		{"ExternalProcessor.status_on_error", ep.statusOnError, 500},
		{"EnvoyGrpc.max_receive_message_length (unlimited)", ep.maxRecvMsgSize, int(^uint32(0) >> 1)},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
