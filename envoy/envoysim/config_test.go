package envoysim

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRejectsUnimplementedConfig: anything envoysim does not emulate is an
// error, never silently ignored.
func TestRejectsUnimplementedConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(t *testing.T, c *cfg)
		wantErr string
	}{
		{
			name: "listener field",
			mutate: func(t *testing.T, c *cfg) {
				c.listener = func(l *listenerv3.Listener) { l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "x"}} }
			},
			wantErr: "envoysim does not implement field envoy.config.listener.v3.Listener.listener_filters",
		},
		{
			name: "HCM xff_num_trusted_hops",
			mutate: func(t *testing.T, c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { h.XffNumTrustedHops = 1 }
			},
			wantErr: "HttpConnectionManager.xff_num_trusted_hops",
		},
		{
			name: "HCM internal_address_config",
			mutate: func(t *testing.T, c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) {
					h.InternalAddressConfig = &hcmv3.HttpConnectionManager_InternalAddressConfig{}
				}
			},
			wantErr: "internal_address_config",
		},
		{
			name: "router-level ext_proc request_attributes",
			mutate: func(t *testing.T, c *cfg) {
				c.extProc = func(e *extprocv3.ExternalProcessor) { e.RequestAttributes = []string{"request.path"} }
			},
			wantErr: "request_attributes only in a cluster's upstream filter chain",
		},
		{
			name: "ext_proc BUFFERED_PARTIAL",
			mutate: func(t *testing.T, c *cfg) {
				c.mode = contractMode()
				c.mode.RequestBodyMode = extprocv3.ProcessingMode_BUFFERED_PARTIAL
			},
			wantErr: "does not implement body mode BUFFERED_PARTIAL",
		},
		{
			name: "ext_proc trailer SEND",
			mutate: func(t *testing.T, c *cfg) {
				c.mode = contractMode()
				c.mode.ResponseTrailerMode = extprocv3.ProcessingMode_SEND
			},
			wantErr: "trailer mode SEND",
		},
		{
			name: "EDS cluster",
			mutate: func(t *testing.T, c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) {
					cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
				}
			},
			wantErr: "STATIC and STRICT_DNS",
		},
		{
			name: "retry_on value",
			mutate: func(t *testing.T, c *cfg) {
				c.planRoute = func(r *routev3.Route) {
					r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "retriable-headers"}
				}
			},
			wantErr: `retry_on "retriable-headers"`,
		},
		{
			name: "route prefix_rewrite",
			mutate: func(t *testing.T, c *cfg) {
				c.planRoute = func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "/x" }
			},
			wantErr: "RouteAction.prefix_rewrite",
		},
		{
			name: "system_root_certs (not implemented by Envoy either)",
			mutate: func(t *testing.T, c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) {
					cl.TransportSocket = &corev3.TransportSocket{Name: socketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
						CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
							SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
						}}},
					})}}
				}
			},
			wantErr: "CertificateValidationContext.system_root_certs",
		},
		{
			name: "unknown http filter",
			mutate: func(t *testing.T, c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) {
					h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})}}}, h.HttpFilters...)
				}
			},
			wantErr: "does not implement message envoy.extensions.filters.http.cors.v3.Cors",
		},
		{
			name: "header value formatter",
			mutate: func(t *testing.T, c *cfg) {
				c.planRoute = func(r *routev3.Route) {
					r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "%REQ(y)%"}}}
				}
			},
			wantErr: "header value formatters",
		},
		{
			name: "fails Validate",
			mutate: func(t *testing.T, c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) { cl.Name = "" }
			},
			wantErr: "invalid *clusterv3.Cluster",
		},
		{
			name: "ext_proc cluster without HTTP/2",
			mutate: func(t *testing.T, c *cfg) {
				c.extra = nil
				c.extProc = func(e *extprocv3.ExternalProcessor) {
					e.GrpcService.GetEnvoyGrpc().ClusterName = "backend"
				}
			},
			wantErr: `ext_proc cluster "backend" must use HTTP/2`,
		},
		{
			name: "unknown typed config",
			mutate: func(t *testing.T, c *cfg) {
				c.listener = func(l *listenerv3.Listener) {
					l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/x.Y"}}
				}
			},
			wantErr: "unpack type.googleapis.com/x.Y",
		},
		{
			name: "circuit breaker retry budget",
			mutate: func(t *testing.T, c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) {
					cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
						RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: wrapperspb.UInt32(1)},
					}}}
				}
			},
			wantErr: "Thresholds.retry_budget",
		},
		{
			// reject_empty_trusted_ca_file: a runtime guard in 1.37–1.39,
			// unconditional since 1.40.
			name: "trusted_ca without a certificate",
			mutate: func(t *testing.T, c *cfg) {
				c.backend = func(cl *clusterv3.Cluster) {
					utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
						TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "not a certificate"}},
					}}}}
					cl.TransportSocket = &corev3.TransportSocket{Name: socketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, utc)}}
				}
			},
			wantErr: "trusted_ca contains no certificates",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cfg{procAddr: "127.0.0.1:9", backendAddr: "127.0.0.1:9"}
			tt.mutate(t, &c)
			_, err := New(Options{Resources: c.resources(t)})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"neither", Options{}},
		{"both", Options{XDSAddress: "127.0.0.1:1", Resources: cfg{noExtProc: true}.resources(t)}},
		{"unknown upstream failure rule", Options{Resources: cfg{noExtProc: true}.resources(t), UpstreamFailureRule: UpstreamFailureRule(7)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}
