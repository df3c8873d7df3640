package envoysim

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestControlPlaneConfig runs the control plane's production resources
// (controlplane.BuildResources) through envoysim: every field it sets must be
// implemented, and a request flows through the router processor to Plan.
func TestControlPlaneConfig(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, sse(2, 0))
	for _, url := range []string{"https://api.anthropic.com", "http://" + up.addr()} {
		r, err := controlplane.BuildResources(controlplane.Options{
			ListenAddress: freePort(t), ExtProcAddress: p.addr, AnthropicURL: url,
		}.WithDefaults())
		if err != nil {
			t.Fatal(err)
		}
		var res []types.Resource
		for _, c := range r.Clusters {
			res = append(res, c)
		}
		for _, c := range r.Routes {
			res = append(res, c)
		}
		for _, l := range r.Listeners {
			res = append(res, l)
		}
		if _, err := compile(res); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if url != "http://"+up.addr() {
			continue
		}
		base := startSim(t, res, nil)
		got := do(t, "POST", base+"/v1/messages?beta=true", `{"stream":true}`, map[string]string{
			"x-ccproxy-key": "ak_secret", "accept-encoding": "gzip",
		})
		if got.err != nil || got.status != 200 || got.body != sseBody(2) {
			t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
		}
		reqs := up.seen()
		if len(reqs) != 1 {
			t.Fatalf("upstream saw %d requests", len(reqs))
		}
		h := reqs[0].header
		for k, want := range map[string]string{
			"x-ccproxy-key": "", "x-ccproxy-route": "", "accept-encoding": "identity",
			"x-envoy-expected-rq-timeout-ms": "", // suppress_envoy_headers
		} {
			if h.Get(k) != want {
				t.Errorf("upstream header %s = %q, want %q", k, h.Get(k), want)
			}
		}
		if got.header.Get("x-envoy-upstream-service-time") != "" {
			t.Errorf("x-envoy-upstream-service-time set despite suppress_envoy_headers")
		}
	}
}

// TestControlPlaneFallback runs the control plane's plan+bedrock-<region>
// cluster and route through envoysim: a Plan 429 is retried once,
// to the priority-1 Bedrock host; the upstream processor sees one stream per
// attempt (backend plan, then bedrock); and the router-level processor gets
// upstream.request_attempt_count with the response headers — a number, as
// Envoy's ExpressionManager::evaluateAttributes sends a CEL uint.
func TestControlPlaneFallback(t *testing.T) {
	t.Parallel()
	region := "us-east-1"
	route := controlplane.FallbackClusterName(region)
	for _, tc := range []struct {
		name       string
		planStatus int
		wantBody   string
		// upstream processor streams: backend attribute and message kinds
		wantBackends []string
		wantKinds    []string
		wantAttempts float64
	}{
		{
			name: "429 falls back to Bedrock", planStatus: 429, wantBody: `{"from":"bedrock"}`,
			wantBackends: []string{"plan", "bedrock"},
			wantKinds:    []string{"request_headers,response_headers:429", "request_headers,response_headers:200"},
			wantAttempts: 2,
		},
		{
			name: "529 falls back to Bedrock", planStatus: 529, wantBody: `{"from":"bedrock"}`,
			wantBackends: []string{"plan", "bedrock"},
			wantKinds:    []string{"request_headers,response_headers:529", "request_headers,response_headers:200"},
			wantAttempts: 2,
		},
		{
			name: "Plan answer passes through", planStatus: 200, wantBody: `{"from":"plan"}`,
			wantBackends: []string{"plan"},
			wantKinds:    []string{"request_headers,response_headers:200"},
			wantAttempts: 1,
		},
		{
			name: "other 4xx is never retried", planStatus: 400, wantBody: `{"from":"plan"}`,
			wantBackends: []string{"plan"},
			wantKinds:    []string{"request_headers,response_headers:400"},
			wantAttempts: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			plan := startBackend(t, tc.planStatus, `{"from":"plan"}`)
			bedrock := startBackend(t, 200, `{"from":"bedrock"}`)
			router := &goodProcessor{onReqBody: func([]byte) *extprocsvc.CommonResponse {
				return common(&extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader(dataplane.RouteHeader, route)}}, true)
			}}
			up := &upProc{}
			// One sidecar serves both filters and tells them apart by the
			// upstream filter's initial metadata.
			p := startProcessor(t, func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				md, _ := metadata.FromIncomingContext(srv.Context())
				if v := md.Get(dataplane.FilterHeader); len(v) == 1 && v[0] == dataplane.FilterUpstream {
					return up.handle(srv)
				}
				return router.handle(srv)
			})
			r, err := controlplane.BuildResources(controlplane.Options{
				ListenAddress: freePort(t), ExtProcAddress: p.addr,
				AnthropicURL: "http://" + plan.addr(), BedrockURL: "http://" + bedrock.addr(), BedrockRegions: []string{region},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Warnings) != 0 {
				t.Fatalf("warnings: %q", r.Warnings)
			}
			var res []types.Resource
			for _, c := range r.Clusters {
				res = append(res, c)
			}
			for _, c := range r.Routes {
				res = append(res, c)
			}
			for _, l := range r.Listeners {
				res = append(res, l)
			}
			base := startSim(t, res, nil)
			got := do(t, "POST", base+"/v1/messages", `{"model":"claude"}`, map[string]string{"content-type": "application/json"})
			wantStatus := tc.planStatus
			if len(tc.wantBackends) == 2 {
				wantStatus = 200 // Bedrock's answer
			}
			if got.err != nil || got.status != wantStatus || got.body != tc.wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, wantStatus, tc.wantBody)
			}
			if n := len(plan.seen()); n != 1 {
				t.Errorf("Plan saw %d requests, want 1", n)
			}
			if n, want := len(bedrock.seen()), len(tc.wantBackends)-1; n != want {
				t.Errorf("Bedrock saw %d requests, want %d", n, want)
			}
			streams := up.seen()
			if len(streams) != len(tc.wantBackends) {
				t.Fatalf("upstream processor streams = %d, want %d", len(streams), len(tc.wantBackends))
			}
			for i, s := range streams {
				if k := kinds(s.reqs); k != tc.wantKinds[i] {
					t.Errorf("stream %d kinds = %s, want %s", i, k, tc.wantKinds[i])
				}
				attrs := s.reqs[0].GetAttributes()[extProcAttributesKey].GetFields()
				if b := attrs[attrBackend].GetStringValue(); b != tc.wantBackends[i] {
					t.Errorf("stream %d backend = %q, want %q", i, b, tc.wantBackends[i])
				}
			}
			var respHeaders *extprocsvc.ProcessingRequest
			for _, req := range router.seen() {
				if req.GetResponseHeaders() != nil {
					respHeaders = req
					continue
				}
				if len(req.GetAttributes()) != 0 {
					t.Errorf("router processor: %T carries attributes %v; only the response direction's first message does", req.GetRequest(), req.GetAttributes())
				}
			}
			if respHeaders == nil {
				t.Fatal("router processor saw no response headers")
			}
			want := &structpb.Struct{Fields: map[string]*structpb.Value{
				dataplane.AttemptCount: structpb.NewNumberValue(tc.wantAttempts),
			}}
			if got := respHeaders.GetAttributes()[extProcAttributesKey]; !proto.Equal(got, want) || len(respHeaders.GetAttributes()) != 1 {
				t.Errorf("response headers attributes = %v, want {%s: %v}", respHeaders.GetAttributes(), extProcAttributesKey, want)
			}
		})
	}
}

// TestControlPlaneServesEnvoysim connects envoysim to the control plane's own ADS server: the
// server configures only nodes reporting Envoy 1.37 or later, so envoysim's node must report
// the release it emulates, and then gets the listener it serves.
func TestControlPlaneServesEnvoysim(t *testing.T) {
	t.Parallel()
	srv, err := controlplane.NewServer(controlplane.Options{
		ListenAddress: freePort(t), ExtProcAddress: "127.0.0.1:1", AnthropicURL: "http://127.0.0.1:1",
	}.WithDefaults(), testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	sim, err := New(Options{XDSAddress: ln.Addr().String(), NodeID: "envoysim-1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- sim.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	select {
	case <-sim.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("envoysim got no configuration from the control plane")
	}
}
