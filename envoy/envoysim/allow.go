package envoysim

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// implemented is the allow-list of every protobuf field envoysim implements,
// keyed by message full name. A resource that sets any other field is
// rejected (NACKed over xDS, an error from New), so a setting added to the
// control plane without an emulation here fails loudly instead of being
// silently ignored. Enum values and oneof choices that are not implemented
// are rejected when the resource is compiled (config.go).
var implemented = map[protoreflect.FullName][]string{
	// Listener.
	"envoy.config.listener.v3.Listener":    {"name", "address", "filter_chains", "per_connection_buffer_limit_bytes"},
	"envoy.config.listener.v3.FilterChain": {"name", "filters"},
	"envoy.config.listener.v3.Filter":      {"name", "typed_config"},
	"envoy.config.core.v3.Address":         {"socket_address", "pipe"},
	"envoy.config.core.v3.SocketAddress":   {"address", "port_value", "protocol"},
	"envoy.config.core.v3.Pipe":            {"path"},

	// HTTP connection manager.
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {
		"codec_type", "stat_prefix", "route_config", "rds", "http_filters",
		"stream_idle_timeout", "request_timeout", "use_remote_address", "skip_xff_append",
		"generate_request_id", "preserve_external_request_id", "server_name",
		"server_header_transformation", "common_http_protocol_options", "access_log",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action",
	},
	// Access logs (accesslog.go): the stdout logger with a json_format.
	"envoy.config.accesslog.v3.AccessLog":                                    {"name", "typed_config"},
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog":              {"log_format"},
	"envoy.config.core.v3.SubstitutionFormatString":                          {"json_format"},
	"envoy.extensions.filters.network.http_connection_manager.v3.Rds":        {"config_source", "route_config_name"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {"name", "typed_config"},
	"envoy.config.core.v3.ConfigSource":                                      {"ads", "resource_api_version", "initial_fetch_timeout", "path_config_source"},
	"envoy.config.core.v3.AggregatedConfigSource":                            {},
	"envoy.config.core.v3.HttpProtocolOptions":                               {"idle_timeout"},
	"envoy.extensions.filters.http.router.v3.Router":                         {"suppress_envoy_headers"},

	// Routes.
	"envoy.config.route.v3.RouteConfiguration": {
		"name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "validate_clusters", "internal_only_headers",
	},
	"envoy.config.route.v3.VirtualHost": {
		"name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "retry_policy", "request_body_buffer_limit",
		"per_request_buffer_limit_bytes",
	},
	"envoy.config.route.v3.Route": {
		"name", "match", "route", "direct_response", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "request_body_buffer_limit",
		"per_request_buffer_limit_bytes",
	},
	"envoy.config.route.v3.RouteMatch":           {"prefix", "path", "safe_regex", "case_sensitive", "headers"},
	"envoy.config.route.v3.HeaderMatcher":        {"name", "string_match", "present_match", "invert_match"},
	"envoy.type.matcher.v3.StringMatcher":        {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"},
	"envoy.type.matcher.v3.RegexMatcher":         {"regex"},
	"envoy.config.route.v3.DirectResponseAction": {"status", "body"},
	"envoy.config.route.v3.RouteAction": {
		"cluster", "cluster_header", "cluster_not_found_response_code", "timeout", "idle_timeout",
		"retry_policy", "auto_host_rewrite", "host_rewrite_literal",
	},
	"envoy.config.route.v3.RetryPolicy":                                               {"retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off", "retry_priority"},
	"envoy.config.route.v3.RetryPolicy.RetryPriority":                                 {"name", "typed_config"},
	"envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig": {"update_frequency"},
	"envoy.config.route.v3.RetryPolicy.RetryBackOff":                                  {"base_interval", "max_interval"},
	"envoy.config.core.v3.HeaderValueOption":                                          {"header", "append_action", "append", "keep_empty_value"},
	"envoy.config.core.v3.HeaderValue":                                                {"key", "value", "raw_value"},
	"envoy.config.core.v3.DataSource":                                                 {"filename", "inline_bytes", "inline_string"},

	// Clusters.
	"envoy.config.cluster.v3.Cluster": {
		"name", "type", "connect_timeout", "load_assignment", "transport_socket",
		"typed_extension_protocol_options", "circuit_breakers", "lb_policy", "dns_lookup_family",
		"per_connection_buffer_limit_bytes",
	},
	"envoy.config.endpoint.v3.ClusterLoadAssignment":               {"cluster_name", "endpoints"},
	"envoy.config.endpoint.v3.LocalityLbEndpoints":                 {"lb_endpoints", "priority"},
	"envoy.config.endpoint.v3.LbEndpoint":                          {"endpoint", "metadata"},
	"envoy.config.endpoint.v3.Endpoint":                            {"address", "hostname"},
	"envoy.config.core.v3.Metadata":                                {"filter_metadata"},
	"envoy.config.core.v3.TransportSocket":                         {"name", "typed_config"},
	"envoy.config.cluster.v3.CircuitBreakers":                      {"thresholds"},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds":           {"priority", "max_connections", "max_pending_requests", "max_requests", "max_retries"},
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": {"common_tls_context", "sni", "auto_host_sni", "auto_sni_san_validation"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": {
		"validation_context", "alpn_protocols", "tls_params", "tls_certificate_sds_secret_configs", "combined_validation_context",
	},
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":                          {"trusted_ca", "match_typed_subject_alt_names"},
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters":                                         {"tls_minimum_protocol_version"},
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig":                                       {"name", "sds_config"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": {"default_validation_context", "validation_context_sds_secret_config"},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher":                                 {"san_type", "matcher"},
	"envoy.config.core.v3.PathConfigSource":                                                           {"path", "watched_directory"},
	"envoy.config.core.v3.WatchedDirectory":                                                           {"path"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
		"explicit_http_config", "auto_config", "common_http_protocol_options", "upstream_http_protocol_options",
		"http_filters",
	},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": {"http_protocol_options", "http2_protocol_options"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig":     {"http_protocol_options", "http2_protocol_options"},
	"envoy.config.core.v3.Http1ProtocolOptions":                                 {},
	"envoy.config.core.v3.Http2ProtocolOptions":                                 {},
	"envoy.config.core.v3.UpstreamHttpProtocolOptions":                          {"auto_sni", "auto_san_validation"},

	// ext_proc.
	"envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor": {
		"grpc_service", "failure_mode_allow", "processing_mode", "message_timeout", "max_message_timeout", "stat_prefix",
		"mutation_rules", "allow_mode_override", "metadata_options", "status_on_error",
		"route_cache_action", "disable_clear_route_cache", "request_attributes", "response_attributes",
	},
	"envoy.extensions.filters.http.ext_proc.v3.ProcessingMode": {
		"request_header_mode", "response_header_mode", "request_body_mode", "response_body_mode",
		"request_trailer_mode", "response_trailer_mode",
	},
	"envoy.extensions.filters.http.ext_proc.v3.MetadataOptions":                    {"forwarding_namespaces", "receiving_namespaces"},
	"envoy.extensions.filters.http.ext_proc.v3.MetadataOptions.MetadataNamespaces": {"untyped"},
	"envoy.config.core.v3.GrpcService":                                             {"envoy_grpc", "initial_metadata"},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc":                                   {"cluster_name", "authority", "max_receive_message_length"},
	"envoy.config.common.mutation_rules.v3.HeaderMutationRules":                    {"allow_all_routing", "allow_envoy", "disallow_all", "disallow_is_error"},
	"envoy.type.v3.HttpStatus":                                                     {"code"},

	// Upstream HTTP filters (HttpProtocolOptions.http_filters).
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation": {"mutations"},
	"envoy.extensions.filters.http.header_mutation.v3.Mutations":      {"request_mutations"},
	"envoy.config.common.mutation_rules.v3.HeaderMutation":            {"append", "remove"},
	"envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec":   {},
}

// opaque messages are accepted whole: well-known value types and free-form
// metadata.
var opaque = map[protoreflect.FullName]bool{
	"google.protobuf.Duration":    true,
	"google.protobuf.BoolValue":   true,
	"google.protobuf.UInt32Value": true,
	"google.protobuf.UInt64Value": true,
	"google.protobuf.Struct":      true,
	"google.protobuf.Value":       true,
	"google.protobuf.ListValue":   true,
}

// checkImplemented walks m and returns an error naming the first field that
// is set but not in the allow-list. google.protobuf.Any values are unpacked
// (their type must be linked into the binary) and walked too.
func checkImplemented(m proto.Message) error {
	return walkImplemented(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()))
}

func walkImplemented(m protoreflect.Message, path string) error {
	desc := m.Descriptor()
	name := desc.FullName()
	if opaque[name] {
		return nil
	}
	if name == "google.protobuf.Any" {
		a := m.Interface().(*anypb.Any)
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: envoysim cannot decode typed config %q: %w", path, a.GetTypeUrl(), err)
		}
		return walkImplemented(inner.ProtoReflect(), path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
	}
	allowed, ok := implemented[name]
	if !ok {
		return fmt.Errorf("%s: envoysim does not implement message %s", path, name)
	}
	if len(m.GetUnknown()) > 0 {
		return fmt.Errorf("%s: unknown fields in %s", path, name)
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fpath := path + "." + string(fd.Name())
		if !contains(allowed, string(fd.Name())) {
			err = fmt.Errorf("%s: envoysim does not implement field %s.%s", fpath, name, fd.Name())
			return false
		}
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = walkImplemented(l.Get(i).Message(), fmt.Sprintf("%s[%d]", fpath, i))
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					err = walkImplemented(mv.Message(), fmt.Sprintf("%s[%q]", fpath, k.String()))
					return err == nil
				})
			}
		default:
			err = walkImplemented(v.Message(), fpath)
		}
		return err == nil
	})
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
