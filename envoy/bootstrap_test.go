package envoy

import (
	"github.com/ccproxy/ccproxy/internal/xdsvalidate"

	"os"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/controlplane"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	// Types named by "@type" in bootstrap.yaml and the SDS files; protojson resolves them from
	// the global registry, which these imports fill.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// loadBootstrap decodes bootstrap.yaml strictly: unknown fields and unknown "@type"s fail.
func loadBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	b := &bootstrapv3.Bootstrap{}
	decodeYAML(t, "bootstrap.yaml", BootstrapYAML(), b)
	return b
}

// sdsFiles are the SDS files bootstrap.yaml reads, by the path it reads them from.
var sdsFiles = map[string]string{
	"/etc/envoy/sds/xds-client-certificate.yaml": "sds/xds-client-certificate.yaml",
	"/etc/envoy/sds/xds-trusted-ca.yaml":         "sds/xds-trusted-ca.yaml",
}

// loadSDS decodes an SDS file the way Envoy's filesystem subscription does: as a
// DiscoveryResponse (FilesystemSubscriptionImpl::refresh), strictly.
func loadSDS(t *testing.T, file string) *discoveryv3.DiscoveryResponse {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := &discoveryv3.DiscoveryResponse{}
	decodeYAML(t, file, raw, r)
	return r
}

func decodeYAML(t *testing.T, name string, raw []byte, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("%s is not YAML: %v", name, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		t.Fatalf("%s does not decode as %s: %v", name, m.ProtoReflect().Descriptor().FullName(), err)
	}
}

func TestBootstrapEmbedsFile(t *testing.T) {
	onDisk, err := os.ReadFile("bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(BootstrapYAML()) {
		t.Error("BootstrapYAML differs from bootstrap.yaml")
	}
}

func TestBootstrapValidates(t *testing.T) {
	b := loadBootstrap(t)
	if n := validateDeep(t, b.ProtoReflect()); n < 10 {
		t.Errorf("validated only %d messages", n)
	}
	for _, file := range sdsFiles {
		if n := validateDeep(t, loadSDS(t, file).ProtoReflect()); n < 3 {
			t.Errorf("%s: validated only %d messages", file, n)
		}
	}
}

// validateDeep validates msg and everything below it (xdsvalidate.Deep),
// reporting violations on t, and returns how many messages had rules.
func validateDeep(t *testing.T, msg protoreflect.Message) int {
	t.Helper()
	n, err := xdsvalidate.Deep(msg.Interface())
	if err != nil {
		t.Error(err)
	}
	return n
}

func TestBootstrapSettings(t *testing.T) {
	b := loadBootstrap(t)
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
		// Envoy stays unready until the control plane configured it.
		InitialFetchTimeout: durationpb.New(0),
	}
	var xds *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "xds" {
			xds = c
		}
	}

	t.Run("node id and cluster", func(t *testing.T) {
		if b.GetNode().GetId() == "" || b.GetNode().GetCluster() == "" {
			t.Errorf("node = %v, want id and cluster", b.GetNode())
		}
	})
	t.Run("admin on loopback 9901 only", func(t *testing.T) {
		sa := b.GetAdmin().GetAddress().GetSocketAddress()
		if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 9901 {
			t.Errorf("admin = %v, want 127.0.0.1:9901", sa)
		}
	})
	t.Run("ADS over gRPC to cluster xds, V3", func(t *testing.T) {
		ac := b.GetDynamicResources().GetAdsConfig()
		if ac.GetApiType() != corev3.ApiConfigSource_GRPC || ac.GetTransportApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("ads_config = %v, want GRPC, V3", ac)
		}
		gs := ac.GetGrpcServices()
		if len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() != "xds" {
			t.Errorf("grpc_services = %v, want one envoy_grpc to xds", gs)
		}
	})
	t.Run("LDS and CDS over ADS, V3", func(t *testing.T) {
		dr := b.GetDynamicResources()
		if !proto.Equal(dr.GetLdsConfig(), ads) || !proto.Equal(dr.GetCdsConfig(), ads) {
			t.Errorf("lds_config = %v, cds_config = %v, want {ads: {}, resource_api_version: V3, initial_fetch_timeout: 0s}", dr.GetLdsConfig(), dr.GetCdsConfig())
		}
		// Traffic listeners come from the control plane; the only static one is the stats
		// listener, which serves no traffic.
		ls := b.GetStaticResources().GetListeners()
		if len(ls) != 1 || ls[0].GetName() != "stats" {
			t.Errorf("static listeners = %d, want only the stats listener", len(ls))
		}
	})
	t.Run("static cluster xds: STRICT_DNS, HTTP/2, control plane service", func(t *testing.T) {
		if xds == nil {
			t.Fatal("no static cluster xds")
		}
		if xds.GetType() != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("type = %v, want STRICT_DNS", xds.GetType())
		}
		po := &upstreamhttpv3.HttpProtocolOptions{}
		if err := xds.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(po); err != nil {
			t.Fatal(err)
		}
		h2 := po.GetExplicitHttpConfig().GetHttp2ProtocolOptions()
		if h2 == nil {
			t.Fatal("xds cluster is not HTTP/2 (gRPC needs it)")
		}
		if ka := h2.GetConnectionKeepalive(); ka.GetInterval().AsDuration().Seconds() < 10 {
			t.Errorf("keepalive interval %v is below the control plane's 10 s minimum ping interval", ka.GetInterval())
		}
		eps := xds.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			t.Fatalf("endpoints = %v, want one", eps)
		}
		sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != "ccproxy-controlplane" || sa.GetPortValue() != 18000 {
			t.Errorf("xds endpoint = %v, want ccproxy-controlplane:18000", sa)
		}
	})
	t.Run("overload manager: heap and downstream connection limits", func(t *testing.T) {
		om := b.GetOverloadManager()
		monitors := map[string]bool{}
		for _, m := range om.GetResourceMonitors() {
			monitors[m.GetName()] = true
		}
		for _, name := range []string{"envoy.resource_monitors.fixed_heap", "envoy.resource_monitors.global_downstream_max_connections"} {
			if !monitors[name] {
				t.Errorf("no resource monitor %s", name)
			}
		}
		actions := map[string]bool{}
		for _, a := range om.GetActions() {
			actions[a.GetName()] = true
			for _, tr := range a.GetTriggers() {
				if !monitors[tr.GetName()] {
					t.Errorf("action %s triggers on unknown monitor %s", a.GetName(), tr.GetName())
				}
			}
		}
		if !actions["envoy.overload_actions.stop_accepting_requests"] {
			t.Error("no stop_accepting_requests action")
		}
		for _, lp := range om.GetLoadshedPoints() {
			for _, tr := range lp.GetTriggers() {
				if !monitors[tr.GetName()] {
					t.Errorf("load shed point %s triggers on unknown monitor %s", lp.GetName(), tr.GetName())
				}
			}
		}
	})
	t.Run("layered runtime: listener connection limit and admin layer", func(t *testing.T) {
		layers := b.GetLayeredRuntime().GetLayers()
		var admin bool
		var limit float64
		for _, l := range layers {
			if l.GetAdminLayer() != nil {
				admin = true
			}
			if s := l.GetStaticLayer(); s != nil {
				limit = s.GetFields()["envoy"].GetStructValue().GetFields()["resource_limits"].GetStructValue().
					GetFields()["listener"].GetStructValue().GetFields()[controlplane.ListenerName].GetStructValue().
					GetFields()["connection_limit"].GetNumberValue()
			}
		}
		if !admin {
			t.Error("no admin layer")
		}
		if limit <= 0 {
			t.Errorf("no connection_limit for listener %s", controlplane.ListenerName)
		}
	})
	t.Run("header names what operators edit", func(t *testing.T) {
		src := string(BootstrapYAML())
		for _, s := range []string{"Settings an operator edits", "node.id", "max_heap_size_bytes", "max_active_downstream_connections", "ccproxy-controlplane", "/etc/envoy/xds-tls", "--drain-time-s", "9902"} {
			if !strings.Contains(src, s) {
				t.Errorf("bootstrap.yaml header does not mention %q", s)
			}
		}
	})
}

// TestBootstrapRejectsUnknownFields proves the strict decoding the other tests rely on.
func TestBootstrapRejectsUnknownFields(t *testing.T) {
	tests := []struct {
		name string
		yaml string
	}{
		{"unknown field", "node: {id: x, clusterr: y}"},
		{"unknown @type", "overload_manager: {resource_monitors: [{name: m, typed_config: {\"@type\": type.googleapis.com/not.a.Type}}]}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, err := yaml.YAMLToJSON([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &bootstrapv3.Bootstrap{}); err == nil {
				t.Error("decoded without error")
			}
		})
	}
}

// TestBootstrapNoDeprecatedFields: bootstrap.yaml uses no deprecated field or enum value
// (xdsvalidate.Deprecated, Envoy's own check at load).
func TestBootstrapNoDeprecatedFields(t *testing.T) {
	got, err := xdsvalidate.Deprecated(loadBootstrap(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got {
		t.Errorf("bootstrap.yaml uses %s", d)
	}
}
