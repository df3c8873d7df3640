package controlplane

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	upstreamcodecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// bedrockOptions is productionOptions with two Bedrock regions.
var bedrockOptions = func() Options {
	o := productionOptions
	o.BedrockRegions = []string{"us-west-2", "us-east-1"}
	return o
}()

// decodedBedrock is one region's Bedrock cluster and route with every typed config unpacked.
type decodedBedrock struct {
	all          *Resources
	cluster      *clusterv3.Cluster
	tls          *tlsv3.UpstreamTlsContext
	protocol     *upstreamhttpv3.HttpProtocolOptions
	filterNames  []string
	extProc      *extprocv3.ExternalProcessor
	mutation     *headermutationv3.HeaderMutation
	codec        *upstreamcodecv3.UpstreamCodec
	route        *routev3.Route
	routeNames   []string
	runtime      *runtimev1.BedrockConfig
	runtimeName  string
	planCluster  *clusterv3.Cluster
	planRoute    *routev3.Route
	routerFilter *extprocv3.ExternalProcessor
}

func decodeBedrock(t *testing.T, opts Options, region string) decodedBedrock {
	t.Helper()
	d0 := decode(t, opts)
	r, err := BuildResources(opts)
	if err != nil {
		t.Fatal(err)
	}
	d := decodedBedrock{all: r, planCluster: d0.plan, planRoute: d0.planRoute, routerFilter: d0.extProc}
	name := BedrockClusterName(region)
	for _, c := range r.Clusters {
		if c.GetName() != name {
			continue
		}
		d.cluster = c
		if ts := c.GetTransportSocket(); ts != nil {
			d.tls = unpack(t, ts.GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
		}
		d.protocol = unpack(t, c.GetTypedExtensionProtocolOptions()[httpProtocolOptsName], &upstreamhttpv3.HttpProtocolOptions{})
		for _, f := range d.protocol.GetHttpFilters() {
			d.filterNames = append(d.filterNames, f.GetName())
			switch f.GetName() {
			case UpstreamExtProcName:
				d.extProc = unpack(t, f.GetTypedConfig(), &extprocv3.ExternalProcessor{})
			case ContentLengthFilterName:
				d.mutation = unpack(t, f.GetTypedConfig(), &headermutationv3.HeaderMutation{})
			case upstreamCodecName:
				d.codec = unpack(t, f.GetTypedConfig(), &upstreamcodecv3.UpstreamCodec{})
			}
		}
	}
	for _, rt := range r.Routes[0].GetVirtualHosts()[0].GetRoutes() {
		d.routeNames = append(d.routeNames, rt.GetName())
		if rt.GetName() == name {
			d.route = rt
		}
	}
	if len(r.ExtensionConfigs) != 1 {
		t.Fatalf("%d extension configs, want 1", len(r.ExtensionConfigs))
	}
	d.runtimeName = r.ExtensionConfigs[0].GetName()
	d.runtime = unpack(t, r.ExtensionConfigs[0].GetTypedConfig(), &runtimev1.BedrockConfig{})
	if d.cluster == nil || d.route == nil || d.extProc == nil || d.mutation == nil || d.codec == nil {
		t.Fatalf("configuration lacks the %s cluster, its route or an upstream filter (filters %v)", name, d.filterNames)
	}
	return d
}

// TestBedrockProductionSettings asserts each contract item of the Bedrock cluster, route and
// upstream filter chain, one subtest per setting.
func TestBedrockProductionSettings(t *testing.T) {
	d := decodeBedrock(t, bedrockOptions, "us-east-1")
	action := d.route.GetRoute()
	planAction := d.planRoute.GetRoute()

	t.Run("one cluster and route per region, sorted, between plan and the catch-all", func(t *testing.T) {
		var clusters []string
		for _, c := range d.all.Clusters {
			clusters = append(clusters, c.GetName())
		}
		if want := []string{PlanClusterName, ExtProcClusterName, "bedrock-us-east-1", "bedrock-us-west-2", "plan+bedrock-us-east-1", "plan+bedrock-us-west-2"}; !slices.Equal(clusters, want) {
			t.Errorf("clusters = %v, want %v", clusters, want)
		}
		if want := []string{PlanRouteName, "bedrock-us-east-1", "bedrock-us-west-2", "plan+bedrock-us-east-1", "plan+bedrock-us-west-2", NotFoundRouteName}; !slices.Equal(d.routeNames, want) {
			t.Errorf("routes = %v, want %v", d.routeNames, want)
		}
	})
	t.Run("route matches the routing header exactly and targets the cluster", func(t *testing.T) {
		hs := d.route.GetMatch().GetHeaders()
		if len(hs) != 1 || hs[0].GetName() != dataplane.RouteHeader || hs[0].GetStringMatch().GetExact() != "bedrock-us-east-1" || hs[0].GetStringMatch().GetIgnoreCase() || hs[0].GetInvertMatch() {
			t.Errorf("headers = %v, want exact %s: bedrock-us-east-1", hs, dataplane.RouteHeader)
		}
		if d.route.GetMatch().GetPrefix() != "/" {
			t.Errorf("match = %v, want prefix /", d.route.GetMatch())
		}
		if action.GetCluster() != "bedrock-us-east-1" {
			t.Errorf("cluster = %q", action.GetCluster())
		}
	})
	t.Run("route timeout 0s, per_try_timeout and idle_timeout as the plan route", func(t *testing.T) {
		wantDuration(t, "route.timeout", action.GetTimeout(), 0)
		wantDuration(t, "per_try_timeout", action.GetRetryPolicy().GetPerTryTimeout(), DefaultPerTryTimeout)
		wantDuration(t, "idle_timeout", action.GetIdleTimeout(), DefaultRouteIdleTimeout)
	})
	t.Run("route retry policy as the plan route: never on 429", func(t *testing.T) {
		if !proto.Equal(action.GetRetryPolicy(), planAction.GetRetryPolicy()) {
			t.Errorf("retry_policy = %v, want the plan route's %v", action.GetRetryPolicy(), planAction.GetRetryPolicy())
		}
		rp := action.GetRetryPolicy()
		if strings.Contains(rp.GetRetryOn(), "4xx") || strings.Contains(rp.GetRetryOn(), "retriable-status-codes") || slices.Contains(rp.GetRetriableStatusCodes(), 429) {
			t.Errorf("retry_policy retries 429: %v", rp)
		}
	})
	t.Run("route auto_host_rewrite", func(t *testing.T) {
		if !action.GetAutoHostRewrite().GetValue() {
			t.Error("auto_host_rewrite is not true")
		}
	})
	t.Run("route removes the routing and access key headers", func(t *testing.T) {
		if got := d.route.GetRequestHeadersToRemove(); !slices.Equal(got, []string{dataplane.RouteHeader, dataplane.KeyHeader}) {
			t.Errorf("request_headers_to_remove = %v", got)
		}
	})
	t.Run("route retry buffer as the plan route (>= 50 MiB)", func(t *testing.T) {
		if got := d.route.GetRequestBodyBufferLimit().GetValue(); got != d.planRoute.GetRequestBodyBufferLimit().GetValue() || got < fiftyMiB {
			t.Errorf("request_body_buffer_limit = %d", got)
		}
	})
	t.Run("route asks for identity encoding", func(t *testing.T) {
		if !proto.Equal(&routev3.Route{RequestHeadersToAdd: d.route.GetRequestHeadersToAdd()}, &routev3.Route{RequestHeadersToAdd: d.planRoute.GetRequestHeadersToAdd()}) {
			t.Errorf("request_headers_to_add = %v, want the plan route's", d.route.GetRequestHeadersToAdd())
		}
	})
	t.Run("STRICT_DNS endpoint with hostname, V4_PREFERRED", func(t *testing.T) {
		if d.cluster.GetType() != clusterv3.Cluster_STRICT_DNS || d.cluster.GetDnsLookupFamily() != clusterv3.Cluster_V4_PREFERRED {
			t.Errorf("type = %v, dns_lookup_family = %v", d.cluster.GetType(), d.cluster.GetDnsLookupFamily())
		}
		lbs := d.cluster.GetLoadAssignment().GetEndpoints()
		if len(lbs) != 1 || len(lbs[0].GetLbEndpoints()) != 1 || d.cluster.GetLoadAssignment().GetClusterName() != "bedrock-us-east-1" {
			t.Fatalf("load_assignment = %v, want exactly one endpoint", d.cluster.GetLoadAssignment())
		}
		ep := lbs[0].GetLbEndpoints()[0].GetEndpoint()
		const host = "bedrock-runtime.us-east-1.amazonaws.com"
		if sa := ep.GetAddress().GetSocketAddress(); sa.GetAddress() != host || sa.GetPortValue() != 443 || ep.GetHostname() != host {
			t.Errorf("endpoint = %v, want %s:443 with that hostname", ep, host)
		}
	})
	t.Run("endpoint metadata: backend, region, host", func(t *testing.T) {
		md := d.cluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()
		if len(md) != 1 {
			t.Errorf("filter_metadata namespaces = %v, want only %s", md, dataplane.MetadataNamespace)
		}
		f := md[dataplane.MetadataNamespace].GetFields()
		want := map[string]string{dataplane.BackendKey: dataplane.BackendBedrock, dataplane.RegionKey: "us-east-1", dataplane.HostKey: "bedrock-runtime.us-east-1.amazonaws.com"}
		if len(f) != len(want) {
			t.Errorf("metadata = %v, want %v", f, want)
		}
		for k, v := range want {
			if f[k].GetStringValue() != v {
				t.Errorf("metadata[%s] = %v, want %q", k, f[k], v)
			}
		}
	})
	t.Run("TLS as the plan cluster: auto_host_sni, auto_sni_san_validation, trusted_ca", func(t *testing.T) {
		if d.tls == nil {
			t.Fatal("no TLS transport socket")
		}
		planTLS := unpack(t, d.planCluster.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
		if !proto.Equal(d.tls, planTLS) || d.cluster.GetTransportSocket().GetName() != tlsTransportSocket {
			t.Errorf("tls = %v, want the plan cluster's %v", d.tls, planTLS)
		}
		if !d.tls.GetAutoHostSni() || !d.tls.GetAutoSniSanValidation() || d.tls.GetSni() != "" || d.tls.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != DefaultUpstreamCAFile {
			t.Errorf("tls = %v", d.tls)
		}
	})
	t.Run("protocol options as the plan cluster", func(t *testing.T) {
		planProto := unpack(t, d.planCluster.GetTypedExtensionProtocolOptions()[httpProtocolOptsName], &upstreamhttpv3.HttpProtocolOptions{})
		got := proto.Clone(d.protocol).(*upstreamhttpv3.HttpProtocolOptions)
		got.HttpFilters = nil
		if !proto.Equal(got, planProto) {
			t.Errorf("protocol options = %v, want the plan cluster's %v", got, planProto)
		}
	})
	t.Run("circuit breakers and connect timeout as the plan cluster", func(t *testing.T) {
		if !proto.Equal(d.cluster.GetCircuitBreakers(), d.planCluster.GetCircuitBreakers()) {
			t.Errorf("circuit_breakers = %v", d.cluster.GetCircuitBreakers())
		}
		if th := d.cluster.GetCircuitBreakers().GetThresholds(); len(th) != 1 || th[0].GetMaxRetries().GetValue() != DefaultCircuitBreakerLimit {
			t.Errorf("thresholds = %v", th)
		}
		wantDuration(t, "connect_timeout", d.cluster.GetConnectTimeout(), planConnectTimeout)
	})
	t.Run("upstream filters: ext_proc, header_mutation, upstream_codec last", func(t *testing.T) {
		if want := []string{UpstreamExtProcName, ContentLengthFilterName, upstreamCodecName}; !slices.Equal(d.filterNames, want) {
			t.Errorf("http_filters = %v, want %v", d.filterNames, want)
		}
		types := []string{}
		for _, f := range d.protocol.GetHttpFilters() {
			types = append(types, f.GetTypedConfig().GetTypeUrl())
		}
		want := []string{
			"type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
			"type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
			"type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
		}
		if !slices.Equal(types, want) {
			t.Errorf("filter types = %v, want %v", types, want)
		}
	})
	t.Run("upstream ext_proc: initial metadata x-ccproxy-filter: upstream", func(t *testing.T) {
		md := d.extProc.GetGrpcService().GetInitialMetadata()
		if len(md) != 1 || md[0].GetKey() != dataplane.FilterHeader || md[0].GetValue() != dataplane.FilterUpstream || md[0].GetRawValue() != nil {
			t.Errorf("initial_metadata = %v, want [%s: %s]", md, dataplane.FilterHeader, dataplane.FilterUpstream)
		}
		if got := d.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != ExtProcClusterName {
			t.Errorf("grpc cluster = %q", got)
		}
		if d.extProc.GetGrpcService().GetTimeout() != nil {
			t.Error("grpc_service.timeout would bound the whole stream")
		}
		if len(d.routerFilter.GetGrpcService().GetInitialMetadata()) != 0 {
			t.Error("the router-level filter must not send the upstream marker")
		}
	})
	t.Run("upstream ext_proc: processing mode headers only", func(t *testing.T) {
		want := &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		}
		if !proto.Equal(d.extProc.GetProcessingMode(), want) {
			t.Errorf("processing_mode = %v, want %v", d.extProc.GetProcessingMode(), want)
		}
	})
	t.Run("upstream ext_proc: exactly the three host attributes, in order", func(t *testing.T) {
		want := []string{
			"xds.upstream_host_metadata.filter_metadata['ccproxy']['backend']",
			"xds.upstream_host_metadata.filter_metadata['ccproxy']['region']",
			"xds.upstream_host_metadata.filter_metadata['ccproxy']['host']",
		}
		if got := d.extProc.GetRequestAttributes(); !slices.Equal(got, want) {
			t.Errorf("request_attributes = %v, want %v", got, want)
		}
		if len(d.extProc.GetResponseAttributes()) != 0 {
			t.Errorf("response_attributes = %v, want none", d.extProc.GetResponseAttributes())
		}
	})
	t.Run("upstream ext_proc: failure_mode_allow and allow_mode_override false", func(t *testing.T) {
		if d.extProc.GetFailureModeAllow() || d.extProc.GetAllowModeOverride() {
			t.Errorf("failure_mode_allow = %v, allow_mode_override = %v; want both false", d.extProc.GetFailureModeAllow(), d.extProc.GetAllowModeOverride())
		}
	})
	t.Run("upstream ext_proc: its own short message timeout, the router-level filter's ceiling and gRPC message size", func(t *testing.T) {
		// The upstream processor's failure bound (docs/operations.md).
		wantDuration(t, "message_timeout", d.extProc.GetMessageTimeout(), DefaultUpstreamExtProcMessageTimeout)
		wantDuration(t, "max_message_timeout", d.extProc.GetMaxMessageTimeout(), DefaultExtProcMaxMessageTimeout)
		got := d.extProc.GetGrpcService().GetEnvoyGrpc().GetMaxReceiveMessageLength().GetValue()
		if got != d.routerFilter.GetGrpcService().GetEnvoyGrpc().GetMaxReceiveMessageLength().GetValue() || got < fiftyMiB {
			t.Errorf("max_receive_message_length = %d", got)
		}
	})
	t.Run("upstream ext_proc: metadata namespace ccproxy accepted", func(t *testing.T) {
		if got := d.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{dataplane.MetadataNamespace}) {
			t.Errorf("receiving_namespaces.untyped = %v", got)
		}
	})
	t.Run("content-length restored from the processor's dynamic metadata", func(t *testing.T) {
		m := d.mutation.GetMutations()
		if len(m.GetResponseMutations()) != 0 || len(m.GetRequestTrailersMutations()) != 0 || len(m.GetQueryParameterMutations()) != 0 {
			t.Errorf("mutations = %v, want request mutations only", m)
		}
		rm := m.GetRequestMutations()
		if len(rm) != 1 {
			t.Fatalf("request_mutations = %v, want one", rm)
		}
		a := rm[0].GetAppend()
		//lint:ignore SA1019 asserting that the deprecated append field stays unset
		if a.GetHeader().GetKey() != "content-length" || a.GetHeader().GetValue() != "%DYNAMIC_METADATA(ccproxy:content_length)%" || a.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || a.GetAppend() != nil || a.GetKeepEmptyValue() {
			t.Errorf("request mutation = %v", a)
		}
	})
	t.Run("runtime config ccproxy.bedrock: regions and default tables", func(t *testing.T) {
		if d.runtimeName != RuntimeBedrockName {
			t.Errorf("name = %q", d.runtimeName)
		}
		want := &runtimev1.BedrockConfig{
			Regions:         []string{"us-east-1", "us-west-2"},
			FallbackRegions: []string{"us-east-1", "us-west-2"},
			Betas:           BetaTableProto(bedrockpolicy.DefaultBetaTable()),
			Fields:          FieldTableProto(bedrockpolicy.DefaultFieldTable()),
		}
		if !proto.Equal(d.runtime, want) {
			t.Errorf("runtime = %v, want %v", d.runtime, want)
		}
	})
}

// TestBedrockPlaintext covers a fake Bedrock over http without the region placeholder.
func TestBedrockPlaintext(t *testing.T) {
	opts := bedrockOptions
	opts.AnthropicURL = "http://127.0.0.1:18081"
	opts.BedrockURL = "http://127.0.0.1:18082"
	for _, region := range opts.BedrockRegions {
		d := decodeBedrock(t, opts, region)
		if d.tls != nil {
			t.Errorf("%s: plaintext Bedrock has a transport socket", region)
		}
		if d.protocol.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
			t.Errorf("%s: protocol options = %v, want explicit HTTP/1.1", region, d.protocol)
		}
		ep := d.cluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0]
		if sa := ep.GetEndpoint().GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 18082 || ep.GetEndpoint().GetHostname() != "127.0.0.1" {
			t.Errorf("%s: endpoint = %v", region, ep)
		}
		if got := ep.GetMetadata().GetFilterMetadata()[dataplane.MetadataNamespace].GetFields()[dataplane.RegionKey].GetStringValue(); got != region {
			t.Errorf("region metadata = %q, want %q", got, region)
		}
	}
}

func TestBedrockURLs(t *testing.T) {
	tests := []struct {
		url, region string
		want        upstreamURL
	}{
		{"", "eu-west-1", upstreamURL{tls: true, host: "bedrock-runtime.eu-west-1.amazonaws.com", port: 443}},
		{"https://bedrock-runtime-fips.{region}.amazonaws.com/", "us-gov-west-1", upstreamURL{tls: true, host: "bedrock-runtime-fips.us-gov-west-1.amazonaws.com", port: 443}},
		{"https://vpce-1.bedrock-runtime.{region}.vpce.amazonaws.com:8443", "ap-southeast-2", upstreamURL{tls: true, host: "vpce-1.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com", port: 8443}},
		{"http://{region}.bedrock.test", "us-east-1", upstreamURL{host: "us-east-1.bedrock.test", port: 80}},
		{"http://[::1]:9000", "us-east-1", upstreamURL{host: "::1", port: 9000}},
	}
	for _, tc := range tests {
		opts := productionOptions
		opts.BedrockURL, opts.BedrockRegions = tc.url, []string{tc.region}
		r, err := opts.resolve()
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if len(r.bedrock) != 1 || r.bedrock[0] != (bedrockEndpoint{region: tc.region, url: tc.want}) {
			t.Errorf("%s: endpoints = %+v, want %+v", tc.url, r.bedrock, tc.want)
		}
	}
}

func TestBedrockOptionsRejected(t *testing.T) {
	with := func(f func(*Options)) Options {
		o := bedrockOptions
		f(&o)
		return o
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"scheme", with(func(o *Options) { o.BedrockURL = "ftp://bedrock-runtime.{region}.amazonaws.com" }), "scheme must be http or https"},
		{"no scheme", with(func(o *Options) { o.BedrockURL = "bedrock-runtime.{region}.amazonaws.com" }), "want scheme://host"},
		{"path", with(func(o *Options) { o.BedrockURL = "https://bedrock-runtime.{region}.amazonaws.com/model" }), "without path"},
		{"placeholder in path", with(func(o *Options) { o.BedrockURL = "https://bedrock.example.com/{region}" }), "may only appear in the host"},
		{"placeholder in scheme", with(func(o *Options) { o.BedrockURL = "{region}://bedrock.example.com" }), "may only appear in the host"},
		{"query", with(func(o *Options) { o.BedrockURL = "https://bedrock-runtime.{region}.amazonaws.com?x=1" }), "without path"},
		{"userinfo", with(func(o *Options) { o.BedrockURL = "https://u:p@bedrock-runtime.{region}.amazonaws.com" }), "without path"},
		{"placeholder as port", with(func(o *Options) { o.BedrockURL = "https://bedrock.example.com:{region}" }), "BedrockURL"},
		{"other placeholder", with(func(o *Options) { o.BedrockURL = "https://bedrock-runtime.{zone}.amazonaws.com" }), "only placeholder"},
		{"bad port", with(func(o *Options) { o.BedrockURL = "https://bedrock.example.com:0" }), `bad port "0"`},
		{"bad host", with(func(o *Options) { o.BedrockURL = "https://bedrock_{region}.example.com" }), "not a valid DNS name"},
		{"empty label", with(func(o *Options) { o.BedrockURL = "https://bedrock..{region}.example.com" }), "not a valid DNS name"},
		{"bad URL without regions", with(func(o *Options) { o.BedrockRegions = nil; o.BedrockURL = "https://x.example.com/path" }), "without path"},
		{"region case", with(func(o *Options) { o.BedrockRegions = []string{"US-EAST-1"} }), "not an AWS region name"},
		{"region shape", with(func(o *Options) { o.BedrockRegions = []string{"useast1"} }), "not an AWS region name"},
		{"region empty", with(func(o *Options) { o.BedrockRegions = []string{""} }), "not an AWS region name"},
		{"region injection", with(func(o *Options) { o.BedrockRegions = []string{"us-east-1.evil.com/x-1"} }), "not an AWS region name"},
		{"region too long", with(func(o *Options) { o.BedrockRegions = []string{"us-" + strings.Repeat("x", 40) + "-1"} }), "not an AWS region name"},
		{"relative CA with https Bedrock only", with(func(o *Options) { o.AnthropicURL = "http://127.0.0.1:1"; o.UpstreamCAFile = "ca.pem" }), "absolute path"},
		{"model without Bedrock id", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{{AnthropicModelId: "claude-x"}}}
		}), "needs an Anthropic and a Bedrock model id"},
		{"model name twice", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{
				{AnthropicModelId: "claude-x", BedrockModelId: "a.x"},
				{AnthropicModelId: "claude-y", Aliases: []string{"claude-x"}, BedrockModelId: "a.y"},
			}}
		}), `"claude-x" used by both`},
		{"model region", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{{AnthropicModelId: "claude-x", BedrockModelId: "a.x", RegionModelIds: map[string]string{"mars": "a.x"}}}}
		}), "not an AWS region name"},
		{"model empty profile", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{{AnthropicModelId: "claude-x", BedrockModelId: "a.x", RegionModelIds: map[string]string{"": ""}}}}
		}), "empty model id"},
		{"rename without name", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Betas: &runtimev1.BetaTable{Version: "v", Rules: []*runtimev1.BetaRule{{Anthropic: "x", Action: runtimev1.BetaRule_ACTION_RENAME}}}}
		}), "ACTION_RENAME only"},
		{"keep with a name", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Betas: &runtimev1.BetaTable{Version: "v", Rules: []*runtimev1.BetaRule{{Anthropic: "x", Action: runtimev1.BetaRule_ACTION_KEEP, Bedrock: "y"}}}}
		}), "ACTION_RENAME only"},
		{"duplicate beta", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Betas: &runtimev1.BetaTable{Version: "v", Rules: []*runtimev1.BetaRule{{Anthropic: "x"}, {Anthropic: "x"}}}}
		}), "empty or duplicate flag"},
		{"unknown action", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Betas: &runtimev1.BetaTable{Version: "v", Rules: []*runtimev1.BetaRule{{Anthropic: "x", Action: 7}}}}
		}), "unknown action"},
		{"unversioned table", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Fields: &runtimev1.FieldTable{TopLevel: []string{"messages"}}}
		}), "need a version"},
		{"empty field", with(func(o *Options) {
			o.Bedrock = &runtimev1.BedrockConfig{Fields: &runtimev1.FieldTable{Version: "v", TopLevel: []string{"messages", ""}}}
		}), "empty member name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildResources(tc.opts)
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("err = %v, want ErrInvalidOptions", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestRuntimeConfig(t *testing.T) {
	t.Run("nil is empty with the default tables and no regions", func(t *testing.T) {
		r, err := BuildResources(productionOptions)
		if err != nil {
			t.Fatal(err)
		}
		got := unpack(t, r.ExtensionConfigs[0].GetTypedConfig(), &runtimev1.BedrockConfig{})
		want := &runtimev1.BedrockConfig{Betas: BetaTableProto(bedrockpolicy.DefaultBetaTable()), Fields: FieldTableProto(bedrockpolicy.DefaultFieldTable())}
		if !proto.Equal(got, want) {
			t.Errorf("runtime = %v, want %v", got, want)
		}
	})
	t.Run("caller's tables, models and flags kept; regions replaced; input untouched", func(t *testing.T) {
		in := &runtimev1.BedrockConfig{
			Models:              []*runtimev1.ModelMapping{{AnthropicModelId: "claude-x", BedrockModelId: "anthropic.claude-x-v1:0", RegionModelIds: map[string]string{"us-east-1": "us.anthropic.claude-x-v1:0"}}},
			Regions:             []string{"ignored-1"},
			Betas:               &runtimev1.BetaTable{Version: "b1", Rules: []*runtimev1.BetaRule{{Anthropic: "a-1", Action: runtimev1.BetaRule_ACTION_RENAME, Bedrock: "b-1"}}},
			Fields:              &runtimev1.FieldTable{Version: "f1", TopLevel: []string{"messages"}},
			ProfileRuleFallback: true,
		}
		before := proto.Clone(in)
		opts := bedrockOptions
		opts.Bedrock = in
		d := decodeBedrock(t, opts, "us-west-2")
		want := proto.Clone(in).(*runtimev1.BedrockConfig)
		want.Regions = []string{"us-east-1", "us-west-2"}
		want.FallbackRegions = []string{"us-east-1", "us-west-2"}
		if !proto.Equal(d.runtime, want) {
			t.Errorf("runtime = %v, want %v", d.runtime, want)
		}
		if !proto.Equal(in, before) {
			t.Error("BuildResources modified Options.Bedrock")
		}
	})
	t.Run("beta table conversion keeps order and every action", func(t *testing.T) {
		got := BetaTableProto(bedrockpolicy.BetaTable{Version: "v", Rules: []bedrockpolicy.BetaRule{
			{Anthropic: "d", Action: bedrockpolicy.BetaDrop},
			{Anthropic: "k", Action: bedrockpolicy.BetaKeep},
			{Anthropic: "r", Action: bedrockpolicy.BetaRename, Bedrock: "s"},
		}})
		want := &runtimev1.BetaTable{Version: "v", Rules: []*runtimev1.BetaRule{
			{Anthropic: "d", Action: runtimev1.BetaRule_ACTION_DROP},
			{Anthropic: "k", Action: runtimev1.BetaRule_ACTION_KEEP},
			{Anthropic: "r", Action: runtimev1.BetaRule_ACTION_RENAME, Bedrock: "s"},
		}}
		if !proto.Equal(got, want) {
			t.Errorf("BetaTableProto = %v, want %v", got, want)
		}
		// The built-in table converts to a valid configuration.
		if err := checkBedrockConfig(&runtimev1.BedrockConfig{Betas: BetaTableProto(bedrockpolicy.DefaultBetaTable()), Fields: FieldTableProto(bedrockpolicy.DefaultFieldTable())}); err != nil {
			t.Error(err)
		}
	})
}

// TestSnapshotBedrockVersions checks which resource types a region change re-versions.
func TestSnapshotBedrockVersions(t *testing.T) {
	a, err := BuildSnapshot(productionOptions)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildSnapshot(bedrockOptions)
	if err != nil {
		t.Fatal(err)
	}
	for typ, changed := range map[string]bool{
		resource.ClusterType: true, resource.RouteType: true, resource.ExtensionConfigType: true, resource.ListenerType: false,
	} {
		if got := a.GetVersion(typ) != b.GetVersion(typ); got != changed {
			t.Errorf("%s version changed = %v, want %v", typ, got, changed)
		}
	}
	// plan, extproc, and per region bedrock-<region> and plan+bedrock-<region>.
	if len(b.GetResources(resource.ClusterType)) != 6 {
		t.Errorf("clusters = %d, want 6", len(b.GetResources(resource.ClusterType)))
	}
}

// TestADSRuntimeConfig subscribes to the runtime config over ADS the way extproc does.
func TestADSRuntimeConfig(t *testing.T) {
	srv, conn := startServer(t, bedrockOptions, &syncBuffer{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "extproc-1", UserAgentName: dataplane.RuntimeClientAgent}, TypeUrl: resource.ExtensionConfigType, ResourceNames: []string{RuntimeBedrockName}}
	if err := ads.Send(req); err != nil {
		t.Fatal(err)
	}
	recv := func() *runtimev1.BedrockConfig {
		t.Helper()
		resp, err := ads.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != resource.ExtensionConfigType || len(resp.GetResources()) != 1 {
			t.Fatalf("response %s with %d resources", resp.GetTypeUrl(), len(resp.GetResources()))
		}
		ext := &corev3.TypedExtensionConfig{}
		if err := resp.GetResources()[0].UnmarshalTo(ext); err != nil {
			t.Fatal(err)
		}
		if ext.GetName() != RuntimeBedrockName {
			t.Fatalf("name = %q", ext.GetName())
		}
		cfg := &runtimev1.BedrockConfig{}
		if err := ext.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		if err := ads.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: []string{RuntimeBedrockName}}); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if got := recv().GetRegions(); !slices.Equal(got, []string{"us-east-1", "us-west-2"}) {
		t.Errorf("regions = %v", got)
	}
	more := bedrockOptions
	more.BedrockRegions = append(slices.Clone(more.BedrockRegions), "eu-west-1")
	if err := srv.Update(ctx, more); err != nil {
		t.Fatal(err)
	}
	if got := recv().GetRegions(); !slices.Equal(got, []string{"eu-west-1", "us-east-1", "us-west-2"}) {
		t.Errorf("pushed regions = %v", got)
	}
}
