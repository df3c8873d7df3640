package envoy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/internal/xdsvalidate"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current files")

func staticCluster(t *testing.T, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range loadBootstrap(t).GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no static cluster %s", name)
	return nil
}

// TestBootstrapGolden pins the decoded bootstrap and SDS files (every default made explicit by
// the decoder, every "@type" resolved) in testdata/bootstrap.golden.json, like the control
// plane's golden files: a change to what Envoy is told shows up as a reviewed diff.
func TestBootstrapGolden(t *testing.T) {
	render := func(m proto.Message) any {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	doc := map[string]any{"bootstrap": render(loadBootstrap(t))}
	for at, file := range sdsFiles {
		doc[at] = render(loadSDS(t, file))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "bootstrap.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./envoy -run TestBootstrapGolden -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs from bootstrap.yaml and sds/; if the change is intended, run go test ./envoy -run TestBootstrapGolden -update and review the diff.\ngot:\n%s", golden, buf.Bytes())
	}
}

// TestStatsListener: the static stats listener forwards exactly GET /stats/prometheus and
// GET /ready to the admin interface on loopback and answers everything else 404 itself.
func TestStatsListener(t *testing.T) {
	b := loadBootstrap(t)
	var stats *listenerv3.Listener
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == "stats" {
			stats = l
		}
	}
	if stats == nil {
		t.Fatal("no stats listener")
	}
	sa := stats.GetAddress().GetSocketAddress()
	if sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 9902 {
		t.Errorf("stats listener on %s:%d, want 0.0.0.0:9902 (the pod's address, for Prometheus and the kubelet)", sa.GetAddress(), sa.GetPortValue())
	}
	if !stats.GetIgnoreGlobalConnLimit() {
		t.Error("stats listener counts against the global connection limit: scrapes would fail when the gateway is full")
	}
	if len(stats.GetFilterChains()) != 1 || len(stats.GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("filter chains = %v, want one HCM", stats.GetFilterChains())
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := stats.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if fs := hcm.GetHttpFilters(); len(fs) != 1 || fs[0].GetName() != "envoy.filters.http.router" || !fs[0].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		t.Errorf("http_filters = %v, want the router alone", fs)
	}
	if len(hcm.GetAccessLog()) != 0 {
		t.Error("the stats listener logs scrapes")
	}
	vhs := hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhs) != 1 {
		t.Fatalf("virtual hosts = %d, want 1", len(vhs))
	}
	getOnly := []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}},
	}}}
	forward := func(name, p string) *routev3.Route {
		return &routev3.Route{
			Name:   name,
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}, Headers: getOnly},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "admin"}}},
		}
	}
	want := []*routev3.Route{
		forward("prometheus", "/stats/prometheus"),
		forward("ready", "/ready"),
		{
			Name:   "not_found",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
		},
	}
	got := vhs[0].GetRoutes()
	if len(got) != len(want) {
		t.Fatalf("%d routes, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("route %d = %v, want %v", i, got[i], want[i])
		}
	}

	admin := staticCluster(t, "admin")
	if admin.GetType() != clusterv3.Cluster_STATIC {
		t.Errorf("admin cluster type = %v, want STATIC", admin.GetType())
	}
	eps := admin.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("admin endpoints = %v", eps)
	}
	if got, want := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress(), b.GetAdmin().GetAddress(); !proto.Equal(got, want) {
		t.Errorf("admin cluster endpoint %v is not the admin address %v", got, want)
	}
}

// TestXDSMutualTLS: Envoy reaches the control plane over TLS 1.3 with ALPN h2, verifies the
// control plane's certificate against an SDS-delivered CA bundle and its DNS name, and presents
// a client certificate from an SDS file; both SDS files exist in sds/ and name files of the
// mounted Secret, watched for the kubelet's atomic updates.
func TestXDSMutualTLS(t *testing.T) {
	xds := staticCluster(t, "xds")
	ts := xds.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("xds transport socket = %q, want envoy.transport_sockets.tls (plaintext ADS)", ts.GetName())
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.GetSni() != "ccproxy-controlplane" {
		t.Errorf("sni = %q", ctx.GetSni())
	}
	c := ctx.GetCommonTlsContext()
	if c.GetTlsParams().GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 {
		t.Errorf("tls_minimum_protocol_version = %v, want TLSv1_3", c.GetTlsParams().GetTlsMinimumProtocolVersion())
	}
	if len(c.GetAlpnProtocols()) != 1 || c.GetAlpnProtocols()[0] != "h2" {
		t.Errorf("alpn_protocols = %v, want [h2]", c.GetAlpnProtocols())
	}
	if len(c.GetTlsCertificates()) != 0 || c.GetValidationContext() != nil {
		t.Error("inline certificates are never reloaded; the bootstrap must use SDS files")
	}
	sdsPath := func(sc *tlsv3.SdsSecretConfig) string {
		t.Helper()
		pcs := sc.GetSdsConfig().GetPathConfigSource()
		if pcs == nil {
			t.Fatalf("%s: not an SDS file (path_config_source)", sc.GetName())
		}
		if pcs.GetWatchedDirectory().GetPath() != path.Dir(pcs.GetPath()) {
			t.Errorf("%s: watched_directory %q, want the file's directory (a ConfigMap mount)", sc.GetName(), pcs.GetWatchedDirectory().GetPath())
		}
		if sc.GetSdsConfig().GetResourceApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("%s: resource_api_version = %v", sc.GetName(), sc.GetSdsConfig().GetResourceApiVersion())
		}
		return pcs.GetPath()
	}
	certs := c.GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 {
		t.Fatalf("tls_certificate_sds_secret_configs = %d, want 1", len(certs))
	}
	cv := c.GetCombinedValidationContext()
	if cv == nil {
		t.Fatal("no combined_validation_context")
	}
	sans := cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || sans[0].GetMatcher().GetExact() != "ccproxy-controlplane" {
		t.Errorf("match_typed_subject_alt_names = %v, want DNS exact ccproxy-controlplane", sans)
	}
	for _, sc := range []*tlsv3.SdsSecretConfig{certs[0], cv.GetValidationContextSdsSecretConfig()} {
		at := sdsPath(sc)
		file, ok := sdsFiles[at]
		if !ok {
			t.Errorf("%s: bootstrap reads %s, which is not shipped in sds/", sc.GetName(), at)
			continue
		}
		resp := loadSDS(t, file)
		if len(resp.GetResources()) != 1 {
			t.Fatalf("%s: %d resources, want 1", file, len(resp.GetResources()))
		}
		secret := &tlsv3.Secret{}
		if err := resp.GetResources()[0].UnmarshalTo(secret); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if secret.GetName() != sc.GetName() {
			t.Errorf("%s holds secret %q, bootstrap asks for %q", file, secret.GetName(), sc.GetName())
		}
		const dir = "/etc/envoy/xds-tls"
		var files []string
		var watched string
		switch {
		case secret.GetTlsCertificate() != nil:
			tc := secret.GetTlsCertificate()
			files = []string{tc.GetCertificateChain().GetFilename(), tc.GetPrivateKey().GetFilename()}
			watched = tc.GetWatchedDirectory().GetPath()
		case secret.GetValidationContext() != nil:
			vc := secret.GetValidationContext()
			files = []string{vc.GetTrustedCa().GetFilename()}
			watched = vc.GetWatchedDirectory().GetPath()
		default:
			t.Fatalf("%s: secret %q is neither a certificate nor a validation context", file, secret.GetName())
		}
		for _, f := range files {
			if path.Dir(f) != dir {
				t.Errorf("%s: %q is not in the Secret mount %s", file, f, dir)
			}
		}
		if watched != dir {
			t.Errorf("%s: watched_directory = %q, want %s (where the kubelet swaps ..data)", file, watched, dir)
		}
	}
	if certs[0].GetName() != "xds_client_certificate" || cv.GetValidationContextSdsSecretConfig().GetName() != "xds_trusted_ca" {
		t.Errorf("secret names = %q, %q", certs[0].GetName(), cv.GetValidationContextSdsSecretConfig().GetName())
	}
}

// TestOverloadManager: the heap monitor drives reset_high_memory_stream (with the buffer
// accounting it requires), shrink_heap, disable_http_keepalive and stop_accepting_requests at
// the documented thresholds; no load shed point that leaks the global connection limit on 1.37.
func TestOverloadManager(t *testing.T) {
	om := loadBootstrap(t).GetOverloadManager()
	if got := om.GetBufferFactoryConfig().GetMinimumAccountToTrackPowerOfTwo(); got != 20 {
		t.Errorf("minimum_account_to_track_power_of_two = %d, want 20 (track streams >= 1 MiB)", got)
	}
	heap := &fixedheapv3.FixedHeapConfig{}
	limitMonitor := false
	for _, m := range om.GetResourceMonitors() {
		switch m.GetName() {
		case "envoy.resource_monitors.fixed_heap":
			if err := m.GetTypedConfig().UnmarshalTo(heap); err != nil {
				t.Fatal(err)
			}
		case "envoy.resource_monitors.global_downstream_max_connections":
			limitMonitor = true
		}
	}
	if heap.GetMaxHeapSizeBytes() != 1536<<20 {
		t.Errorf("max_heap_size_bytes = %d, want 1.5 GiB", heap.GetMaxHeapSizeBytes())
	}
	// max_heap_size_bytes_runtime is an Envoy 1.39 field: 1.37 and 1.38 would refuse the file.
	if heap.GetMaxHeapSizeBytesRuntime() != nil {
		t.Error("max_heap_size_bytes_runtime needs Envoy 1.39")
	}
	threshold := func(v float64) *overloadv3.Trigger {
		return &overloadv3.Trigger{Name: "envoy.resource_monitors.fixed_heap", TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: v}}}
	}
	want := []*overloadv3.OverloadAction{
		{Name: "envoy.overload_actions.reset_high_memory_stream", Triggers: []*overloadv3.Trigger{{
			Name:         "envoy.resource_monitors.fixed_heap",
			TriggerOneof: &overloadv3.Trigger_Scaled{Scaled: &overloadv3.ScaledTrigger{ScalingThreshold: 0.85, SaturationThreshold: 0.95}},
		}}},
		{Name: "envoy.overload_actions.shrink_heap", Triggers: []*overloadv3.Trigger{threshold(0.90)}},
		{Name: "envoy.overload_actions.disable_http_keepalive", Triggers: []*overloadv3.Trigger{threshold(0.92)}},
		{Name: "envoy.overload_actions.stop_accepting_requests", Triggers: []*overloadv3.Trigger{threshold(0.95)}},
	}
	got := om.GetActions()
	if len(got) != len(want) {
		t.Fatalf("%d overload actions, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("action %d = %v, want %v", i, got[i], want[i])
		}
	}
	for _, lp := range om.GetLoadshedPoints() {
		if lp.GetName() == "envoy.load_shed_points.tcp_listener_accept" && limitMonitor {
			t.Error("tcp_listener_accept with global_downstream_max_connections leaks the connection limit before Envoy 1.38")
		}
	}
}

// TestSDSFilesNoDeprecatedFields extends TestBootstrapNoDeprecatedFields to the SDS files.
func TestSDSFilesNoDeprecatedFields(t *testing.T) {
	for _, file := range sdsFiles {
		got, err := xdsvalidate.Deprecated(loadSDS(t, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range got {
			t.Errorf("%s uses %s", file, d)
		}
	}
}
