package xdsvalidate

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDeprecated(t *testing.T) {
	grpcSource := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
		}},
		ResourceApiVersion: corev3.ApiVersion_V3,
	}
	tests := []struct {
		name string
		msg  func(t *testing.T) proto.Message
		want []string
	}{
		{
			name: "clean route",
			msg: func(*testing.T) proto.Message {
				return &routev3.Route{Name: "r", RequestBodyBufferLimit: wrapperspb.UInt64(1 << 20)}
			},
		},
		{
			name: "deprecated field (deprecated_at_minor_version 3.0)",
			msg: func(*testing.T) proto.Message {
				//lint:ignore SA1019 the deprecated field is what the walk must find.
				return &routev3.Route{Name: "r", PerRequestBufferLimitBytes: wrapperspb.UInt32(1 << 20)}
			},
			want: []string{"envoy.config.route.v3.Route.per_request_buffer_limit_bytes: deprecated field"},
		},
		{
			name: "deprecated field inside a list inside an Any",
			msg: func(t *testing.T) proto.Message {
				return mustAny(t, &hcmv3.HttpConnectionManager{
					StatPrefix: "x",
					RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
						RequestHeadersToAdd: []*corev3.HeaderValueOption{{
							Header: &corev3.HeaderValue{Key: "a", Value: "b"}, Append: wrapperspb.Bool(true),
						}},
					}},
				})
			},
			want: []string{"envoy.config.core.v3.HeaderValueOption.append: deprecated field"},
		},
		{
			name: "deprecated enum value set",
			msg: func(*testing.T) proto.Message {
				s := proto.Clone(grpcSource).(*corev3.ConfigSource)
				//lint:ignore SA1019 the deprecated value is what the walk must find.
				s.ResourceApiVersion = corev3.ApiVersion_V2
				return s
			},
			want: []string{"envoy.config.core.v3.ConfigSource.resource_api_version: deprecated enum value envoy.config.core.v3.V2"},
		},
		{
			name: "deprecated enum default of an unset field (Envoy: the default now-deprecated value)",
			msg: func(*testing.T) proto.Message {
				return &corev3.ApiConfigSource{TransportApiVersion: corev3.ApiVersion_V3}
			},
			want: []string{"envoy.config.core.v3.ApiConfigSource.api_type: deprecated enum default value envoy.config.core.v3.ApiConfigSource.DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE"},
		},
		{
			name: "explicit non-deprecated enum values",
			msg:  func(*testing.T) proto.Message { return grpcSource },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Deprecated(tc.msg(t))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Deprecated = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDeprecatedUnknownAny(t *testing.T) {
	_, err := Deprecated(&anypb.Any{TypeUrl: "type.googleapis.com/not.a.Type"})
	if err == nil || !strings.Contains(err.Error(), "not.a.Type") {
		t.Errorf("err = %v, want the unknown type named", err)
	}
}

func TestDeep(t *testing.T) {
	bad := mustAny(t, &hcmv3.HttpConnectionManager{}) // stat_prefix is required
	n, err := Deep(&corev3.TypedExtensionConfig{Name: "x", TypedConfig: bad})
	if err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Errorf("err = %v, want the HCM's missing stat_prefix", err)
	}
	if n != 2 {
		t.Errorf("checked %d messages, want 2 (the extension config and the HCM in its Any)", n)
	}
	if _, err := Deep(&corev3.TypedExtensionConfig{Name: "x", TypedConfig: mustAny(t, &hcmv3.HttpConnectionManager{
		StatPrefix: "s", RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
	})}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
