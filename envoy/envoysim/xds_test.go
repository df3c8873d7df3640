package envoysim

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
)

// xdsResources is the test config served over ADS with routes over RDS.
func xdsResources(t *testing.T, backend string, mutateRoutes func(*routev3.RouteConfiguration)) map[resourcev3.Type][]types.Resource {
	t.Helper()
	var routes *routev3.RouteConfiguration
	c := cfg{noExtProc: true, backendAddr: backend, hcm: func(h *hcmv3.HttpConnectionManager) {
		routes = h.GetRouteConfig()
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routes.GetName(),
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}}
	}}
	res := c.resources(t)
	if mutateRoutes != nil {
		mutateRoutes(routes)
	}
	out := map[resourcev3.Type][]types.Resource{resourcev3.RouteType: {routes}}
	for _, r := range res {
		switch r.(type) {
		case *listenerv3.Listener:
			out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], r)
		default:
			out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], r)
		}
	}
	return out
}

func TestXDS(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	var mu sync.Mutex
	var nacks []string
	acks := map[string]string{}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if req.GetErrorDetail() != nil {
			nacks = append(nacks, req.GetErrorDetail().GetMessage())
		} else if req.GetResponseNonce() != "" {
			acks[req.GetTypeUrl()] = req.GetVersionInfo()
		}
		return nil
	}}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, cache, cb))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	set := func(version string, res map[resourcev3.Type][]types.Resource) {
		t.Helper()
		snap, err := cachev3.NewSnapshot(version, res)
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.SetSnapshot(ctx, "node-1", snap); err != nil {
			t.Fatal(err)
		}
	}
	set("1", xdsResources(t, up.addr(), nil))

	sim, err := New(Options{XDSAddress: ln.Addr().String(), NodeID: "node-1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, simCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sim.Run(simCtx) }()
	defer func() { simCancel(); <-done }()
	select {
	case <-sim.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	url := "http://" + sim.Addr()
	if got := do(t, "GET", url+"/", "", nil); got.status != 200 || got.body != `{"ok":true}` {
		t.Fatalf("v1: got %d %q", got.status, got.body)
	}

	// A route update applies to new requests.
	set("2", xdsResources(t, up.addr(), func(rc *routev3.RouteConfiguration) {
		rc.VirtualHosts[0].Routes = rc.VirtualHosts[0].Routes[1:]
	}))
	waitFor(t, func() bool { return do(t, "GET", url+"/", "", nil).status == 404 })

	// A route using a field envoysim does not implement is NACKed and the
	// previous configuration keeps serving.
	set("3", xdsResources(t, up.addr(), func(rc *routev3.RouteConfiguration) {
		rc.VirtualHosts[0].Routes[0].GetRoute().PrefixRewrite = "/other"
	}))
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(nacks) > 0
	})
	mu.Lock()
	if !strings.Contains(nacks[0], "RouteAction.prefix_rewrite") {
		t.Errorf("NACK detail %q", nacks[0])
	}
	if acks[resourcev3.RouteType] != "2" || acks[resourcev3.ClusterType] != "3" {
		t.Errorf("acks %v, want routes at 2 and clusters at 3", acks)
	}
	mu.Unlock()
	if got := do(t, "GET", url+"/", "", nil); got.status != 404 || got.body != "no route" {
		t.Fatalf("after NACK: got %d %q", got.status, got.body)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
