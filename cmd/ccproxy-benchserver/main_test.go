package main

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/envoy/extprocdriver"
	"github.com/ccproxy/ccproxy/extproc"
)

const scenarios = "../../extproc/testdata/bench/"

// TestScenarios runs every bench scenario briefly against the bench server
// in this process: make bench must not start on a scenario the server
// fails or answers other than the scenario expects.
func TestScenarios(t *testing.T) {
	srv, err := newServer(config{planKey: defaultPlanKey, bedrockKey: defaultBedrockKey})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "extproc.sock")
	lis, err := extproc.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client := extprocsvc.NewExternalProcessorClient(cc)

	files, err := filepath.Glob(scenarios + "*.json")
	if err != nil || len(files) < 2 {
		t.Fatalf("scenarios %v, %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := extprocdriver.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := extprocdriver.Run(t.Context(), s, []extprocsvc.ExternalProcessorClient{client},
				extprocdriver.LoadConfig{Concurrency: 4, Exchanges: 100, PID: os.Getpid()})
			if err != nil {
				t.Fatal(err)
			}
			if r.Exchanges != 100 || r.MessagesPerExchange < 4 || r.ServerRSS <= 0 {
				t.Errorf("%d exchanges, %v messages each, RSS %d", r.Exchanges, r.MessagesPerExchange, r.ServerRSS)
			}
		})
	}
}

// TestScenariosMatchTheControlPlane keeps the scenarios true to the Envoy
// configuration the control plane serves: the filters' processing modes,
// mode override, gRPC metadata and attributes, the routes' header changes
// and the Bedrock endpoint's metadata. A change there must be made in the
// scenarios too, or the benchmark would measure an exchange Envoy no longer
// produces.
func TestScenariosMatchTheControlPlane(t *testing.T) {
	res, err := controlplane.BuildResources(controlplane.Options{
		ListenAddress: "0.0.0.0:8080", ExtProcAddress: "unix:///run/ccproxy/extproc.sock", BedrockRegions: []string{"us-east-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	router := routerExtProc(t, res.Listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalNew)
	bedrock := cluster(t, res.Clusters, controlplane.BedrockClusterName("us-east-1"))
	upstream := upstreamExtProc(t, bedrock)
	endpointMD := bedrock.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()["ccproxy"].AsMap()

	tests := []struct {
		file     string
		route    string
		upstream bool
	}{
		{"plan-passthrough-stream.json", controlplane.PlanClusterName, false},
		{"bedrock-stream.json", controlplane.BedrockClusterName("us-east-1"), true},
		{"bedrock-nonstream.json", controlplane.BedrockClusterName("us-east-1"), true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(scenarios + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			var spec extprocdriver.Spec
			if err := json.Unmarshal(raw, &spec); err != nil {
				t.Fatal(err)
			}
			checkFilter(t, "router_filter", &spec.RouterFilter, router, nil)
			r := route(t, res.Routes[0], tc.route)
			var wantSet []string
			for _, h := range r.GetRequestHeadersToAdd() {
				wantSet = append(wantSet, h.GetHeader().GetKey()+"="+h.GetHeader().GetValue())
			}
			var gotSet []string
			for k, v := range spec.Route.SetHeaders {
				gotSet = append(gotSet, k+"="+v)
			}
			if !sameSet(gotSet, wantSet) || !sameSet(spec.Route.RemoveHeaders, r.GetRequestHeadersToRemove()) {
				t.Errorf("route: set %v remove %v, the control plane's %s sets %v and removes %v",
					gotSet, spec.Route.RemoveHeaders, tc.route, wantSet, r.GetRequestHeadersToRemove())
			}
			if !tc.upstream {
				if spec.UpstreamFilter != nil {
					t.Error("the scenario has an upstream filter; the route's cluster has none")
				}
				return
			}
			if spec.UpstreamFilter == nil {
				t.Fatal("the scenario has no upstream filter; the route's cluster has one")
			}
			checkFilter(t, "upstream_filter", spec.UpstreamFilter, upstream, endpointMD)
		})
	}
}

// checkFilter compares a scenario's filter with the control plane's. With
// endpoint metadata, the request attribute values must be what Envoy
// evaluates its upstream_host_metadata expressions to.
func checkFilter(t *testing.T, name string, got *extprocdriver.FilterSpec, want *extprocv3.ExternalProcessor, endpointMD map[string]any) {
	t.Helper()
	var mode extprocv3.ProcessingMode
	if err := protojson.Unmarshal(got.ProcessingMode, &mode); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !proto.Equal(&mode, want.GetProcessingMode()) {
		t.Errorf("%s: processing_mode %v, the control plane's is %v", name, &mode, want.GetProcessingMode())
	}
	if got.AllowModeOverride != want.GetAllowModeOverride() {
		t.Errorf("%s: allow_mode_override %v, the control plane's is %v", name, got.AllowModeOverride, want.GetAllowModeOverride())
	}
	if want.GetMutationRules() != nil || len(got.MutationRules) > 0 {
		t.Errorf("%s: mutation rules: the scenario's %s, the control plane's %v", name, got.MutationRules, want.GetMutationRules())
	}
	wantMD := map[string]string{}
	for _, h := range want.GetGrpcService().GetInitialMetadata() {
		wantMD[h.GetKey()] = h.GetValue()
	}
	if !maps.Equal(got.GRPCInitialMetadata, wantMD) && len(got.GRPCInitialMetadata)+len(wantMD) > 0 {
		t.Errorf("%s: grpc_initial_metadata %v, the control plane's is %v", name, got.GRPCInitialMetadata, wantMD)
	}
	if !sameSet(slices.Collect(maps.Keys(got.RequestAttributes)), want.GetRequestAttributes()) {
		t.Errorf("%s: request attributes %v, the control plane's are %v", name, slices.Collect(maps.Keys(got.RequestAttributes)), want.GetRequestAttributes())
	}
	if !sameSet(slices.Collect(maps.Keys(got.ResponseAttributes)), want.GetResponseAttributes()) {
		t.Errorf("%s: response attributes %v, the control plane's are %v", name, slices.Collect(maps.Keys(got.ResponseAttributes)), want.GetResponseAttributes())
	}
	prefix := "xds.upstream_host_metadata.filter_metadata['ccproxy']['"
	for expr, v := range got.RequestAttributes {
		if endpointMD == nil {
			break
		}
		key := expr[len(prefix) : len(expr)-2]
		if expr[:min(len(prefix), len(expr))] != prefix || endpointMD[key] != v {
			t.Errorf("%s: attribute %s = %v, the endpoint's metadata has %v", name, expr, v, endpointMD)
		}
	}
}

func routerExtProc(t *testing.T, unmarshal func() (proto.Message, error)) *extprocv3.ExternalProcessor {
	t.Helper()
	m, err := unmarshal()
	if err != nil {
		t.Fatal(err)
	}
	hcm := m.(*hcmv3.HttpConnectionManager)
	for _, f := range hcm.GetHttpFilters() {
		if x, err := f.GetTypedConfig().UnmarshalNew(); err == nil {
			if ep, ok := x.(*extprocv3.ExternalProcessor); ok {
				return ep
			}
		}
	}
	t.Fatal("the listener has no ext_proc filter")
	return nil
}

func upstreamExtProc(t *testing.T, c *clusterv3.Cluster) *extprocv3.ExternalProcessor {
	t.Helper()
	for _, a := range c.GetTypedExtensionProtocolOptions() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		po, ok := m.(*upstreamhttpv3.HttpProtocolOptions)
		if !ok {
			continue
		}
		for _, f := range po.GetHttpFilters() {
			if x, err := f.GetTypedConfig().UnmarshalNew(); err == nil {
				if ep, ok := x.(*extprocv3.ExternalProcessor); ok {
					return ep
				}
			}
		}
	}
	t.Fatalf("cluster %s has no upstream ext_proc filter", c.GetName())
	return nil
}

func cluster(t *testing.T, clusters []*clusterv3.Cluster, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range clusters {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

// route is the route that sends to cluster.
func route(t *testing.T, rc *routev3.RouteConfiguration, cluster string) *routev3.Route {
	t.Helper()
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute().GetCluster() == cluster {
				return r
			}
		}
	}
	t.Fatalf("no route to %s", cluster)
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestAnchorScenariosLoad keeps the scenarios of scripts/bench-anchor.sh,
// which play Envoy AI Gateway's filter configuration against its ext_proc
// server, loadable with the files they name (the server itself is not
// built here).
func TestAnchorScenariosLoad(t *testing.T) {
	files, err := filepath.Glob(scenarios + "anchor/*.json")
	if err != nil || len(files) != 2 {
		t.Fatalf("anchor scenarios %v, %v", files, err)
	}
	for _, f := range files {
		if _, err := extprocdriver.Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
