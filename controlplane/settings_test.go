package controlplane

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ccproxy/ccproxy/internal/dataplane"
)

const fiftyMiB = 50 << 20

// decoded is a configuration with every typed config unpacked.
type decoded struct {
	listener      *listenerv3.Listener
	hcm           *hcmv3.HttpConnectionManager
	filterNames   []string
	extProc       *extprocv3.ExternalProcessor
	router        *routerv3.Router
	routes        *routev3.RouteConfiguration
	planRoute     *routev3.Route
	notFoundRoute *routev3.Route
	plan          *clusterv3.Cluster
	planTLS       *tlsv3.UpstreamTlsContext // nil for plaintext
	planProtocol  *upstreamhttpv3.HttpProtocolOptions
	extProcC      *clusterv3.Cluster
	extProcProto  *upstreamhttpv3.HttpProtocolOptions
}

func unpack[M proto.Message](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if a == nil {
		t.Fatalf("missing typed config for %T", m)
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("unpack %s into %T: %v", a.GetTypeUrl(), m, err)
	}
	return m
}

// isHTTPS reports whether the upstream URL setting u (def when empty) is https.
func isHTTPS(u, def string) bool {
	if u == "" {
		u = def
	}
	return strings.HasPrefix(u, "https://")
}

func decode(t *testing.T, opts Options) decoded {
	t.Helper()
	r, err := BuildResources(opts)
	if err != nil {
		t.Fatal(err)
	}
	var d decoded
	regions := len(slices.Compact(slices.Sorted(slices.Values(opts.BedrockRegions))))
	// Each region also gets a plan+bedrock-<region> cluster when Plan and Bedrock share a
	// scheme (one transport socket per cluster).
	fallbacks := 0
	if isHTTPS(opts.AnthropicURL, DefaultAnthropicURL) == isHTTPS(opts.BedrockURL, DefaultBedrockURL) {
		fallbacks = regions
	}
	if want := 2 + regions + fallbacks; len(r.Listeners) != 1 || len(r.Routes) != 1 || len(r.Clusters) != want {
		t.Fatalf("got %d listeners, %d route configs, %d clusters; want 1, 1, %d", len(r.Listeners), len(r.Routes), len(r.Clusters), want)
	}
	d.listener = r.Listeners[0]
	if n := len(d.listener.GetFilterChains()); n != 1 {
		t.Fatalf("listener has %d filter chains, want 1", n)
	}
	filters := d.listener.GetFilterChains()[0].GetFilters()
	if len(filters) != 1 || filters[0].GetName() != hcmFilterName {
		t.Fatalf("listener filters = %v, want only %s", filters, hcmFilterName)
	}
	d.hcm = unpack(t, filters[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	for _, f := range d.hcm.GetHttpFilters() {
		d.filterNames = append(d.filterNames, f.GetName())
		switch f.GetName() {
		case extProcFilterName:
			d.extProc = unpack(t, f.GetTypedConfig(), &extprocv3.ExternalProcessor{})
		case routerFilterName:
			d.router = unpack(t, f.GetTypedConfig(), &routerv3.Router{})
		}
	}
	d.routes = r.Routes[0]
	for _, vh := range d.routes.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			switch rt.GetName() {
			case PlanRouteName:
				d.planRoute = rt
			case NotFoundRouteName:
				d.notFoundRoute = rt
			}
		}
	}
	for _, c := range r.Clusters {
		switch c.GetName() {
		case PlanClusterName:
			d.plan = c
			if ts := c.GetTransportSocket(); ts != nil {
				d.planTLS = unpack(t, ts.GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
			}
			d.planProtocol = unpack(t, c.GetTypedExtensionProtocolOptions()[httpProtocolOptsName], &upstreamhttpv3.HttpProtocolOptions{})
		case ExtProcClusterName:
			d.extProcC = c
			d.extProcProto = unpack(t, c.GetTypedExtensionProtocolOptions()[httpProtocolOptsName], &upstreamhttpv3.HttpProtocolOptions{})
		}
	}
	if d.extProc == nil || d.router == nil || d.planRoute == nil || d.notFoundRoute == nil || d.plan == nil || d.extProcC == nil {
		t.Fatal("configuration is missing a filter, route or cluster")
	}
	return d
}

var productionOptions = Options{ListenAddress: "0.0.0.0:8080", ExtProcAddress: "unix:///run/ccproxy/extproc.sock"}

func wantDuration(t *testing.T, name string, got *durationpb.Duration, want time.Duration) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s unset (Envoy's default applies), want %s", name, want)
	}
	if got.AsDuration() != want {
		t.Errorf("%s = %s, want %s", name, got.AsDuration(), want)
	}
}

// TestProductionSettings asserts each item of docs/design.md's "Production settings" on the decoded
// configuration, one subtest per setting, so a regression names the setting it breaks.
func TestProductionSettings(t *testing.T) {
	d := decode(t, productionOptions)
	action := d.planRoute.GetRoute()

	t.Run("route timeout 0s (not the 15 s default)", func(t *testing.T) {
		wantDuration(t, "route.timeout", action.GetTimeout(), 0)
	})
	t.Run("route per_try_timeout bounds the wait for response headers", func(t *testing.T) {
		wantDuration(t, "retry_policy.per_try_timeout", action.GetRetryPolicy().GetPerTryTimeout(), DefaultPerTryTimeout)
		if DefaultPerTryTimeout < ClaudeCodeClientTimeout {
			t.Errorf("per_try_timeout %s would cut non-streaming answers Claude Code still waits for", DefaultPerTryTimeout)
		}
	})
	t.Run("route idle_timeout above per_try_timeout", func(t *testing.T) {
		wantDuration(t, "route.idle_timeout", action.GetIdleTimeout(), DefaultRouteIdleTimeout)
		if action.GetIdleTimeout().AsDuration() <= action.GetRetryPolicy().GetPerTryTimeout().AsDuration() {
			t.Error("idle_timeout must exceed per_try_timeout")
		}
	})
	t.Run("HCM stream_idle_timeout above Claude Code's 600 s", func(t *testing.T) {
		wantDuration(t, "stream_idle_timeout", d.hcm.GetStreamIdleTimeout(), DefaultStreamIdleTimeout)
		if d.hcm.GetStreamIdleTimeout().AsDuration() <= 600*time.Second {
			t.Error("stream_idle_timeout must exceed 600 s")
		}
	})
	t.Run("HCM request_timeout off", func(t *testing.T) {
		wantDuration(t, "request_timeout", d.hcm.GetRequestTimeout(), 0)
	})
	t.Run("listener per_connection_buffer_limit_bytes >= 50 MiB", func(t *testing.T) {
		if got := d.listener.GetPerConnectionBufferLimitBytes(); got.GetValue() < fiftyMiB {
			t.Errorf("per_connection_buffer_limit_bytes = %v, want >= %d", got, fiftyMiB)
		}
	})
	t.Run("route retry buffer request_body_buffer_limit >= 50 MiB", func(t *testing.T) {
		if got := d.planRoute.GetRequestBodyBufferLimit(); got.GetValue() < fiftyMiB {
			t.Errorf("request_body_buffer_limit = %v, want >= %d", got, fiftyMiB)
		}
		//lint:ignore SA1019 asserting that the deprecated field stays unset
		if d.planRoute.GetPerRequestBufferLimitBytes() != nil {
			t.Error("deprecated per_request_buffer_limit_bytes must not be set with request_body_buffer_limit")
		}
	})
	t.Run("ext_proc cluster per_connection_buffer_limit_bytes >= 50 MiB", func(t *testing.T) {
		if got := d.extProcC.GetPerConnectionBufferLimitBytes(); got.GetValue() < fiftyMiB {
			t.Errorf("per_connection_buffer_limit_bytes = %v, want >= %d", got, fiftyMiB)
		}
	})
	t.Run("ext_proc gRPC max_receive_message_length >= 50 MiB", func(t *testing.T) {
		got := d.extProc.GetGrpcService().GetEnvoyGrpc().GetMaxReceiveMessageLength()
		if got.GetValue() < fiftyMiB {
			t.Errorf("max_receive_message_length = %v, want >= %d", got, fiftyMiB)
		}
	})
	t.Run("plan circuit_breakers max_retries and max_requests sized for the fleet", func(t *testing.T) {
		th := d.plan.GetCircuitBreakers().GetThresholds()
		if len(th) != 1 || th[0].GetPriority() != corev3.RoutingPriority_DEFAULT {
			t.Fatalf("thresholds = %v, want one DEFAULT-priority entry", th)
		}
		for name, v := range map[string]uint32{
			"max_retries":          th[0].GetMaxRetries().GetValue(),
			"max_requests":         th[0].GetMaxRequests().GetValue(),
			"max_pending_requests": th[0].GetMaxPendingRequests().GetValue(),
			"max_connections":      th[0].GetMaxConnections().GetValue(),
		} {
			if v != DefaultCircuitBreakerLimit {
				t.Errorf("%s = %d, want %d", name, v, DefaultCircuitBreakerLimit)
			}
		}
	})
	t.Run("ext_proc cluster circuit_breakers admit two streams per request", func(t *testing.T) {
		th := d.extProcC.GetCircuitBreakers().GetThresholds()
		if len(th) != 1 || th[0].GetMaxRequests().GetValue() != 2*DefaultCircuitBreakerLimit || th[0].GetMaxPendingRequests().GetValue() != 2*DefaultCircuitBreakerLimit {
			t.Errorf("thresholds = %v, want max_requests = max_pending_requests = %d", th, 2*DefaultCircuitBreakerLimit)
		}
	})
	t.Run("upstream TLS: STRICT_DNS endpoint with hostname", func(t *testing.T) {
		if d.plan.GetType() != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("type = %v, want STRICT_DNS", d.plan.GetType())
		}
		lbs := d.plan.GetLoadAssignment().GetEndpoints()
		if len(lbs) != 1 || len(lbs[0].GetLbEndpoints()) != 1 {
			t.Fatalf("endpoints = %v, want exactly one", lbs)
		}
		ep := lbs[0].GetLbEndpoints()[0].GetEndpoint()
		if ep.GetHostname() != "api.anthropic.com" || ep.GetAddress().GetSocketAddress().GetAddress() != "api.anthropic.com" || ep.GetAddress().GetSocketAddress().GetPortValue() != 443 {
			t.Errorf("endpoint = %v, want api.anthropic.com:443 with hostname api.anthropic.com", ep)
		}
	})
	t.Run("upstream TLS: dns_lookup_family V4_PREFERRED", func(t *testing.T) {
		if got := d.plan.GetDnsLookupFamily(); got != clusterv3.Cluster_V4_PREFERRED {
			t.Errorf("dns_lookup_family = %v, want V4_PREFERRED", got)
		}
	})
	t.Run("upstream TLS: route auto_host_rewrite", func(t *testing.T) {
		if !action.GetAutoHostRewrite().GetValue() {
			t.Error("auto_host_rewrite is not true")
		}
	})
	t.Run("upstream TLS: auto_host_sni, auto_sni_san_validation, trusted_ca, no fixed sni", func(t *testing.T) {
		tc := d.planTLS
		if tc == nil {
			t.Fatal("plan cluster has no TLS transport socket")
		}
		if d.plan.GetTransportSocket().GetName() != tlsTransportSocket {
			t.Errorf("transport socket = %q, want %q", d.plan.GetTransportSocket().GetName(), tlsTransportSocket)
		}
		if !tc.GetAutoHostSni() || !tc.GetAutoSniSanValidation() {
			t.Errorf("auto_host_sni = %v, auto_sni_san_validation = %v; want both true", tc.GetAutoHostSni(), tc.GetAutoSniSanValidation())
		}
		if tc.GetSni() != "" {
			t.Errorf("sni = %q, want unset", tc.GetSni())
		}
		if got := tc.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename(); got != DefaultUpstreamCAFile {
			t.Errorf("trusted_ca = %q, want %q", got, DefaultUpstreamCAFile)
		}
		if up := d.planProtocol.GetUpstreamHttpProtocolOptions(); up.GetAutoSni() || up.GetAutoSanValidation() {
			t.Error("UpstreamHttpProtocolOptions auto_sni/auto_san_validation would use the pre-rewrite host")
		}
	})
	t.Run("upstream TLS: ALPN h2 and http/1.1 with auto_config", func(t *testing.T) {
		alpn := d.planTLS.GetCommonTlsContext().GetAlpnProtocols()
		if len(alpn) != 2 || alpn[0] != "h2" || alpn[1] != "http/1.1" {
			t.Errorf("alpn_protocols = %v, want [h2 http/1.1]", alpn)
		}
		ac := d.planProtocol.GetAutoConfig()
		if ac == nil || ac.GetHttp2ProtocolOptions() == nil || ac.GetHttpProtocolOptions() == nil {
			t.Errorf("protocol options = %v, want auto_config with HTTP/1.1 and HTTP/2", d.planProtocol)
		}
	})
	t.Run("HCM use_remote_address true, internal_address_config unset", func(t *testing.T) {
		if !d.hcm.GetUseRemoteAddress().GetValue() {
			t.Error("use_remote_address is not true")
		}
		// An empty internal_address_config trusts RFC1918 addresses (x-envoy-* headers kept);
		// unset trusts none since Envoy 1.36.
		if d.hcm.GetInternalAddressConfig() != nil {
			t.Error("internal_address_config is set")
		}
		if d.hcm.GetXffNumTrustedHops() != 0 {
			t.Errorf("xff_num_trusted_hops = %d, want 0", d.hcm.GetXffNumTrustedHops())
		}
	})
	t.Run("client x-envoy headers: router suppress_envoy_headers", func(t *testing.T) {
		if !d.router.GetSuppressEnvoyHeaders() {
			t.Error("suppress_envoy_headers is not true")
		}
		if d.router.GetRespectExpectedRqTimeout() {
			t.Error("respect_expected_rq_timeout would honour a client header")
		}
	})
	t.Run("ext_proc failure_mode_allow false", func(t *testing.T) {
		if d.extProc.GetFailureModeAllow() {
			t.Error("failure_mode_allow is true")
		}
	})
	t.Run("ext_proc message_timeout raised and max_message_timeout set", func(t *testing.T) {
		wantDuration(t, "message_timeout", d.extProc.GetMessageTimeout(), DefaultExtProcMessageTimeout)
		wantDuration(t, "max_message_timeout", d.extProc.GetMaxMessageTimeout(), DefaultExtProcMaxMessageTimeout)
	})
	t.Run("ext_proc allow_mode_override", func(t *testing.T) {
		if !d.extProc.GetAllowModeOverride() {
			t.Error("allow_mode_override is not true")
		}
	})
	t.Run("ext_proc processing mode per contract", func(t *testing.T) {
		want := &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			ResponseBodyMode:    extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		}
		if !proto.Equal(d.extProc.GetProcessingMode(), want) {
			t.Errorf("processing_mode = %v, want %v", d.extProc.GetProcessingMode(), want)
		}
		if got := d.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != ExtProcClusterName {
			t.Errorf("grpc cluster = %q, want %q", got, ExtProcClusterName)
		}
		if d.extProc.GetGrpcService().GetTimeout() != nil {
			t.Error("grpc_service.timeout would bound the whole ext_proc stream")
		}
	})
	t.Run("ext_proc metadata namespace ccproxy accepted", func(t *testing.T) {
		got := d.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()
		if len(got) != 1 || got[0] != dataplane.MetadataNamespace {
			t.Errorf("receiving_namespaces.untyped = %v, want [%s]", got, dataplane.MetadataNamespace)
		}
	})
	t.Run("upstream requests ask for identity encoding", func(t *testing.T) {
		var found bool
		for _, h := range d.planRoute.GetRequestHeadersToAdd() {
			if h.GetHeader().GetKey() == "accept-encoding" {
				found = true
				//lint:ignore SA1019 Envoy rejects append together with append_action; assert it is unset
				if h.GetHeader().GetValue() != "identity" || h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetAppend() != nil {
					t.Errorf("accept-encoding option = %v, want identity, OVERWRITE_IF_EXISTS_OR_ADD", h)
				}
			}
		}
		if !found {
			t.Error("no accept-encoding in request_headers_to_add")
		}
	})
	t.Run("routing header matched exactly, removed upstream, internal only", func(t *testing.T) {
		hs := d.planRoute.GetMatch().GetHeaders()
		if len(hs) != 1 || hs[0].GetName() != dataplane.RouteHeader || hs[0].GetStringMatch().GetExact() != dataplane.RoutePlan || hs[0].GetStringMatch().GetIgnoreCase() || hs[0].GetInvertMatch() {
			t.Errorf("headers = %v, want exact %s: %s", hs, dataplane.RouteHeader, dataplane.RoutePlan)
		}
		if action.GetCluster() != PlanClusterName {
			t.Errorf("cluster = %q, want %q", action.GetCluster(), PlanClusterName)
		}
		removed := map[string]bool{}
		for _, h := range d.planRoute.GetRequestHeadersToRemove() {
			removed[h] = true
		}
		if !removed[dataplane.RouteHeader] || !removed[dataplane.KeyHeader] {
			t.Errorf("request_headers_to_remove = %v, want %s and %s", d.planRoute.GetRequestHeadersToRemove(), dataplane.RouteHeader, dataplane.KeyHeader)
		}
		if got := d.routes.GetInternalOnlyHeaders(); len(got) != 1 || got[0] != dataplane.RouteHeader {
			t.Errorf("internal_only_headers = %v, want [%s]", got, dataplane.RouteHeader)
		}
	})
	t.Run("catch-all 404 with Anthropic error JSON", func(t *testing.T) {
		vh := d.routes.GetVirtualHosts()
		if len(vh) != 1 || len(vh[0].GetRoutes()) != 2 || vh[0].GetRoutes()[1] != d.notFoundRoute {
			t.Fatal("the catch-all must be the last route of the only virtual host")
		}
		if m := d.notFoundRoute.GetMatch(); m.GetPrefix() != "/" || len(m.GetHeaders()) != 0 {
			t.Errorf("match = %v, want prefix / without headers", m)
		}
		dr := d.notFoundRoute.GetDirectResponse()
		if dr.GetStatus() != 404 {
			t.Errorf("status = %d, want 404", dr.GetStatus())
		}
		var body struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(dr.GetBody().GetInlineString()), &body); err != nil {
			t.Fatalf("body is not JSON: %v", err)
		}
		if body.Type != "error" || body.Error.Type != "not_found_error" || body.Error.Message == "" {
			t.Errorf("body = %+v, want an Anthropic not_found_error", body)
		}
		hs := d.notFoundRoute.GetResponseHeadersToAdd()
		if len(hs) != 1 || hs[0].GetHeader().GetKey() != "content-type" || hs[0].GetHeader().GetValue() != "application/json" || hs[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("response_headers_to_add = %v, want content-type: application/json (overwrite)", hs)
		}
	})
	t.Run("plan endpoint metadata names the backend", func(t *testing.T) {
		md := d.plan.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()[dataplane.MetadataNamespace]
		if got := md.GetFields()[dataplane.BackendKey].GetStringValue(); got != dataplane.BackendPlan {
			t.Errorf("filter_metadata[%s][%s] = %q, want %q", dataplane.MetadataNamespace, dataplane.BackendKey, got, dataplane.BackendPlan)
		}
	})
	t.Run("listener: HCM codec AUTO, RDS via ADS, ext_proc then router", func(t *testing.T) {
		if d.listener.GetName() != ListenerName {
			t.Errorf("listener name = %q", d.listener.GetName())
		}
		if d.hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
			t.Errorf("codec_type = %v, want AUTO", d.hcm.GetCodecType())
		}
		rds := d.hcm.GetRds()
		if rds.GetRouteConfigName() != RouteConfigName || rds.GetConfigSource().GetAds() == nil || rds.GetConfigSource().GetResourceApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("rds = %v, want %s over ADS (V3)", rds, RouteConfigName)
		}
		if len(d.filterNames) != 2 || d.filterNames[0] != extProcFilterName || d.filterNames[1] != routerFilterName {
			t.Errorf("http_filters = %v, want [%s %s]", d.filterNames, extProcFilterName, routerFilterName)
		}
	})
	t.Run("ext_proc cluster: STATIC, HTTP/2, exactly one Unix socket endpoint", func(t *testing.T) {
		if d.extProcC.GetType() != clusterv3.Cluster_STATIC {
			t.Errorf("type = %v, want STATIC", d.extProcC.GetType())
		}
		if d.extProcProto.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("protocol options = %v, want explicit HTTP/2", d.extProcProto)
		}
		lbs := d.extProcC.GetLoadAssignment().GetEndpoints()
		if len(lbs) != 1 || len(lbs[0].GetLbEndpoints()) != 1 {
			t.Fatalf("endpoints = %v, want exactly one", lbs)
		}
		if got := lbs[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath(); got != "/run/ccproxy/extproc.sock" {
			t.Errorf("pipe path = %q", got)
		}
	})
	t.Run("plan route retries only what Anthropic cannot have seen", func(t *testing.T) {
		rp := action.GetRetryPolicy()
		if rp.GetRetryOn() != "connect-failure,reset-before-request" || rp.GetNumRetries().GetValue() != 1 || len(rp.GetRetriableStatusCodes()) != 0 {
			t.Errorf("retry_policy = %v, want connect-failure,reset-before-request once, no status codes", rp)
		}
	})
}

// TestPlaintextUpstream covers AnthropicURL=http://…: no TLS, HTTP/1.1, port from the URL.
func TestPlaintextUpstream(t *testing.T) {
	d := decode(t, Options{ListenAddress: "127.0.0.1:8080", ExtProcAddress: "127.0.0.1:9002", AnthropicURL: "http://localhost:18081"})
	if d.planTLS != nil || d.plan.GetTransportSocket() != nil {
		t.Error("plaintext upstream has a transport socket")
	}
	if d.planProtocol.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
		t.Errorf("protocol options = %v, want explicit HTTP/1.1", d.planProtocol)
	}
	ep := d.plan.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint()
	if sa := ep.GetAddress().GetSocketAddress(); sa.GetAddress() != "localhost" || sa.GetPortValue() != 18081 || ep.GetHostname() != "localhost" {
		t.Errorf("endpoint = %v, want localhost:18081", ep)
	}
	sa := d.extProcC.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 9002 {
		t.Errorf("ext_proc endpoint = %v, want 127.0.0.1:9002", sa)
	}
	if la := d.listener.GetAddress().GetSocketAddress(); la.GetAddress() != "127.0.0.1" || la.GetPortValue() != 8080 {
		t.Errorf("listener address = %v", la)
	}
}

// TestTunables checks that every Options tunable reaches the field it controls.
func TestTunables(t *testing.T) {
	opts := productionOptions
	opts.UpstreamCAFile = "/etc/ccproxy/ca.pem"
	opts.MaxRequestBytes = 64 << 20
	opts.StreamIdleTimeout = 20 * time.Minute
	opts.RouteIdleTimeout = 5 * time.Minute
	opts.PerTryTimeout = 90 * time.Second
	opts.ExtProcMessageTimeout = 10 * time.Second
	opts.ExtProcMaxMessageTimeout = 60 * time.Second
	opts.CircuitBreakers = CircuitBreakers{MaxConnections: 10, MaxPendingRequests: 20, MaxRequests: 30, MaxRetries: 40}
	d := decode(t, opts)
	th := d.plan.GetCircuitBreakers().GetThresholds()[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"trusted_ca", d.planTLS.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename(), "/etc/ccproxy/ca.pem"},
		{"listener buffer", d.listener.GetPerConnectionBufferLimitBytes().GetValue(), uint32(64 << 20)},
		{"route body buffer", d.planRoute.GetRequestBodyBufferLimit().GetValue(), uint64(64 << 20)},
		{"ext_proc cluster buffer", d.extProcC.GetPerConnectionBufferLimitBytes().GetValue(), uint32(65 << 20)},
		{"grpc max receive", d.extProc.GetGrpcService().GetEnvoyGrpc().GetMaxReceiveMessageLength().GetValue(), uint32(65 << 20)},
		{"stream_idle_timeout", d.hcm.GetStreamIdleTimeout().AsDuration(), 20 * time.Minute},
		{"route idle_timeout", d.planRoute.GetRoute().GetIdleTimeout().AsDuration(), 5 * time.Minute},
		{"per_try_timeout", d.planRoute.GetRoute().GetRetryPolicy().GetPerTryTimeout().AsDuration(), 90 * time.Second},
		{"message_timeout", d.extProc.GetMessageTimeout().AsDuration(), 10 * time.Second},
		{"max_message_timeout", d.extProc.GetMaxMessageTimeout().AsDuration(), 60 * time.Second},
		{"max_connections", th.GetMaxConnections().GetValue(), uint32(10)},
		{"max_pending_requests", th.GetMaxPendingRequests().GetValue(), uint32(20)},
		{"max_requests", th.GetMaxRequests().GetValue(), uint32(30)},
		{"max_retries", th.GetMaxRetries().GetValue(), uint32(40)},
		{"ext_proc max_requests", d.extProcC.GetCircuitBreakers().GetThresholds()[0].GetMaxRequests().GetValue(), uint32(60)},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}
