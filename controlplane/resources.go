// Package controlplane owns ccproxy's Envoy configuration: it builds the xDS resources (listener,
// routes, clusters) that a real Envoy 1.40 runs in production — and that envoysim decodes in
// development and tests — and serves them to every data plane over ADS with go-control-plane.
//
// Every value that differs from Envoy's default is a production setting from docs/design.md
// ("Production settings the control plane generates"); each is commented with the Envoy
// documentation or source it follows, listed in FIELDS.md, and asserted by the tests.
package controlplane

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	upstreamcodecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// Names shared with extproc and envoysim (the data-path contract).
const (
	// ListenerName is the downstream HTTP listener.
	ListenerName = "ccproxy_http"
	// RouteConfigName is the RouteConfiguration the listener loads over RDS (via ADS).
	RouteConfigName = "ccproxy_routes"
	// VirtualHostName is the single virtual host of RouteConfigName.
	VirtualHostName = "ccproxy"
	// PlanClusterName is the Anthropic (Plan) upstream cluster.
	PlanClusterName = "plan"
	// ExtProcClusterName is the ext_proc sidecar cluster: exactly one local endpoint.
	ExtProcClusterName = "ccproxy_extproc"

	// UpstreamExtProcName and ContentLengthFilterName name the filters of the Bedrock and
	// fallback clusters' upstream filter chain.
	UpstreamExtProcName     = "ccproxy.upstream_ext_proc"
	ContentLengthFilterName = "ccproxy.content_length"

	// PlanRouteName and NotFoundRouteName name the routes of VirtualHostName.
	PlanRouteName     = "plan"
	NotFoundRouteName = "not_found"
)

// Envoy extension names and type keys.
const (
	hcmFilterName          = "envoy.filters.network.http_connection_manager"
	extProcFilterName      = "envoy.filters.http.ext_proc"
	routerFilterName       = "envoy.filters.http.router"
	upstreamCodecName      = "envoy.filters.http.upstream_codec"
	tlsTransportSocket     = "envoy.transport_sockets.tls"
	previousPrioritiesName = "envoy.retry_priorities.previous_priorities"
	httpProtocolOptsName   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	stdoutAccessLogName    = "envoy.access_loggers.stdout"
)

// Fixed settings that are not worth an Options knob.
const (
	// planConnectTimeout is Envoy's default, stated so the connect-failure retry is predictable.
	planConnectTimeout = 5 * time.Second
	// extProcConnectTimeout is short: the sidecar is local, and every request waits for it.
	extProcConnectTimeout = 2 * time.Second
	// planRetryOn retries only failures where Anthropic cannot have seen the request — a
	// connect failure, or a reset before any byte went upstream (typically a pooled
	// connection the server had just closed) — so a user's Plan request is never sent twice;
	// 429, 5xx and per-try timeouts are never retried on this route.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/http/http_filters/router_filter#x-envoy-retry-on
	// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/router/retry_state_impl.cc (wouldRetryFromReset)
	planRetryOn = "connect-failure,reset-before-request"
	// fallbackRetryOn retries what the plan_first strategy falls back on (docs/design.md,
	// "Fallback is Envoy's retry"): the status codes below; `reset`, which covers every reset
	// before response headers including the per-try timeout (Router::Filter::onPerTryTimeout
	// resets the attempt and asks RetryStateImpl::wouldRetryFromReset, which retries any reset
	// but overflow under `reset`); and connect failures.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/http/http_filters/router_filter#x-envoy-retry-on
	// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/router/retry_state_impl.cc (wouldRetryFromReset)
	// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/router/router.cc (onPerTryTimeoutCommon)
	fallbackRetryOn = "retriable-status-codes,reset,connect-failure"
)

// fallbackStatusCodes are the Plan answers a fallback route retries on Bedrock: rate limited
// (429), overloaded (529, Anthropic's own code) and the server errors 500, 502, 503 and 504.
// Never other 4xx: those are the client's problem and pass through unchanged (docs/design.md,
// "Fallback is Envoy's retry").
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-retrypolicy-retriable-status-codes
var fallbackStatusCodes = []uint32{429, 500, 502, 503, 504, 529}

// BedrockClusterName is the name of region's Bedrock cluster, which is also the name of its
// route and the dataplane.RouteHeader value that selects it.
func BedrockClusterName(region string) string { return dataplane.BedrockRoute(region) }

// FallbackClusterName is the name of region's Plan-first cluster (Plan at priority 0, the
// region's Bedrock at priority 1), which is also the name of its route and the dataplane.RouteHeader
// value that selects it.
func FallbackClusterName(region string) string { return dataplane.FallbackRoute(region) }

// Resources is the complete xDS configuration for one data plane.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	// ExtensionConfigs holds one TypedExtensionConfig, RuntimeBedrockName: extproc's
	// runtime configuration (resource.ExtensionConfigType).
	ExtensionConfigs []*corev3.TypedExtensionConfig
	// Warnings explain what the Options asked for that the configuration leaves out (a
	// Bedrock region without a plan+bedrock-<region> cluster because its URL scheme differs
	// from Plan's). They are not errors: the rest of the configuration is complete. The
	// server logs them once per configuration it installs.
	Warnings []string
}

// BuildResources builds and validates the production configuration described by opts. It is a
// pure function: the same Options always give byte-identical resources.
func BuildResources(opts Options) (*Resources, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	l, err := buildListener(o)
	if err != nil {
		return nil, err
	}
	rc, err := buildRoutes(o)
	if err != nil {
		return nil, err
	}
	plan, err := buildPlanCluster(o)
	if err != nil {
		return nil, err
	}
	extProc, err := buildExtProcCluster(o)
	if err != nil {
		return nil, err
	}
	clusters := []*clusterv3.Cluster{plan, extProc}
	for _, b := range o.bedrock {
		c, err := buildBedrockCluster(o, b)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	for _, b := range o.fallback {
		c, err := buildFallbackCluster(o, b)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	rt, err := buildRuntimeConfig(o)
	if err != nil {
		return nil, err
	}
	r := &Resources{
		Listeners:        []*listenerv3.Listener{l},
		Routes:           []*routev3.RouteConfiguration{rc},
		Clusters:         clusters,
		ExtensionConfigs: []*corev3.TypedExtensionConfig{rt},
		Warnings:         slices.Clone(o.warnings),
	}
	for _, m := range r.all() {
		if err := validate(m); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// all lists every top-level resource, clusters first (the order Envoy applies them in).
func (r *Resources) all() []proto.Message {
	var out []proto.Message
	for _, c := range r.Clusters {
		out = append(out, c)
	}
	for _, l := range r.Listeners {
		out = append(out, l)
	}
	for _, rc := range r.Routes {
		out = append(out, rc)
	}
	for _, e := range r.ExtensionConfigs {
		out = append(out, e)
	}
	return out
}

// BuildSnapshot builds the resources for opts into a snapshot for go-control-plane's cache.
// Each resource type is versioned by a hash of its content, so pushing an unchanged
// configuration is a no-op for Envoy and a changed cluster does not re-push the listener.
func BuildSnapshot(opts Options) (*cache.Snapshot, error) {
	r, err := BuildResources(opts)
	if err != nil {
		return nil, err
	}
	return r.snapshot()
}

// snapshot puts r into a snapshot for go-control-plane's cache (see BuildSnapshot).
func (r *Resources) snapshot() (*cache.Snapshot, error) {
	snap := &cache.Snapshot{}
	set := func(typ resource.Type, items []types.Resource) error {
		v, err := contentVersion(items)
		if err != nil {
			return err
		}
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(v, items)
		return nil
	}
	if err := set(resource.ClusterType, toResources(r.Clusters)); err != nil {
		return nil, err
	}
	if err := set(resource.ListenerType, toResources(r.Listeners)); err != nil {
		return nil, err
	}
	if err := set(resource.RouteType, toResources(r.Routes)); err != nil {
		return nil, err
	}
	if err := set(resource.ExtensionConfigType, toResources(r.ExtensionConfigs)); err != nil {
		return nil, err
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("controlplane: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

// snapshotTypes are the resource types BuildSnapshot fills, in Envoy's apply order.
var snapshotTypes = []resource.Type{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.ExtensionConfigType}

// SnapshotVersion summarises the per-type versions of a snapshot built by BuildSnapshot in one
// string, for logs and metrics.
func SnapshotVersion(snap *cache.Snapshot) string {
	h := sha256.New()
	for _, typ := range snapshotTypes {
		fmt.Fprintf(h, "%s=%s\n", typ, snap.GetVersion(typ))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func toResources[M types.Resource](ms []M) []types.Resource {
	out := make([]types.Resource, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// contentVersion hashes the deterministic wire encoding of items.
func contentVersion(items []types.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, it := range items {
		b, err := opts.Marshal(it)
		if err != nil {
			return "", fmt.Errorf("controlplane: marshal %T: %w", it, err)
		}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// validator is implemented by every go-control-plane message (protoc-gen-validate).
type validator interface {
	proto.Message
	ValidateAll() error
}

func validate(m proto.Message) error {
	v, ok := m.(validator)
	if !ok {
		return fmt.Errorf("controlplane: %T has no validation rules", m)
	}
	if err := v.ValidateAll(); err != nil {
		return fmt.Errorf("controlplane: invalid %T: %w", m, err)
	}
	return nil
}

// pack validates m and wraps it in an Any with a deterministic encoding. Validate() on the
// outer resource does not look inside an Any, so every typed config is checked here.
func pack(m validator) (*anypb.Any, error) {
	if err := validate(m); err != nil {
		return nil, err
	}
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("controlplane: pack %T: %w", m, err)
	}
	return a, nil
}

func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// buildListener builds ListenerName: HCM with the router-level ext_proc filter, then the router.
func buildListener(o resolved) (*listenerv3.Listener, error) {
	extProc, err := pack(buildRouterExtProc(o))
	if err != nil {
		return nil, err
	}
	router, err := pack(&routerv3.Router{
		// Keeps the router from adding x-envoy-upstream-service-time, x-envoy-attempt-count,
		// x-envoy-expected-rq-timeout-ms, … to upstream requests and client responses.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/router/v3/router.proto#envoy-v3-api-field-extensions-filters-http-router-v3-router-suppress-envoy-headers
		SuppressEnvoyHeaders: true,
	})
	if err != nil {
		return nil, err
	}
	accessLog, err := buildAccessLog()
	if err != nil {
		return nil, err
	}
	hcm, err := pack(&hcmv3.HttpConnectionManager{
		StatPrefix: ListenerName,
		// HTTP/1.1 and h2c (prior knowledge) on the same port.
		CodecType: hcmv3.HttpConnectionManager_AUTO,
		// RDS over ADS: route changes (new Bedrock regions) do not drain the listener.
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: RouteConfigName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: extProcFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: extProc}},
			{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
		// The client's address is the connection's peer, never a client-supplied
		// x-forwarded-for; every request is then "external" and Envoy strips the x-envoy-*
		// control headers (retry-on, max-retries, upstream-rq-timeout-ms, …) clients could
		// set (ConnectionManagerUtility::cleanInternalHeaders) and replaces a client
		// x-request-id. internal_address_config stays UNSET on purpose: since Envoy 1.36 an
		// unset config trusts no address, while an empty one trusts all RFC1918 addresses.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-use-remote-address
		// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/http/conn_manager_utility.cc
		UseRemoteAddress: wrapperspb.Bool(true),
		// Path normalisation, so that extproc classifies (and meters) the path that goes
		// upstream, in its one canonical spelling. Envoy applies it before any filter runs
		// (ConnectionManagerUtility::maybeNormalizePath, called from ActiveStream::decodeHeaders
		// in source/common/http/conn_manager_impl.cc), in this order:
		//   1. path_with_escaped_slashes_action UNESCAPE_AND_FORWARD: %2F, %2f, %5C, %5c are
		//      decoded (PathUtil::unescapeSlashes) and the request goes on. extproc then sees,
		//      and Envoy forwards, the same decoded path, so no one downstream of Envoy reads
		//      the path differently from extproc (the path confusion the proto warns about
		//      needs an intermediary that decides on the escaped form; here there is none);
		//   2. normalize_path: RFC 3986 normalisation with Chromium's URL canonicaliser
		//      (PathUtil::canonicalPath in source/common/http/path_utility.cc): "." and ".."
		//      segments (also spelled %2e) are resolved, percent-encoded unreserved characters
		//      decoded (/v1/%6dessages is /v1/messages), a path that cannot be canonicalised is
		//      answered 400 by Envoy itself;
		//   3. merge_slashes: runs of slashes become one (PathTransformer::mergeSlashes), so
		//      //v1/messages is /v1/messages.
		// What stays non-canonical — a trailing slash, an encoded "?" (/v1/messages%3Fx) — is
		// refused by extproc with an Anthropic-format 404 (extproc/router, pathNotCanonical).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-normalize-path
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-path-with-escaped-slashes-action
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD,
		// Envoy's default is 5 min; Claude Code waits up to 600 s and a non-streaming answer
		// sends nothing until it is complete. Routes override it with RouteIdleTimeout.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-stream-idle-timeout
		StreamIdleTimeout: durationpb.New(o.StreamIdleTimeout),
		// Off (0): a request's whole lifetime includes a long streamed answer.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-request-timeout
		RequestTimeout: durationpb.New(0),
		// One JSON line per request on Envoy's stdout, written when the stream ends.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto#envoy-v3-api-field-extensions-filters-network-http-connection-manager-v3-httpconnectionmanager-access-log
		AccessLog: accessLog,
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    ListenerName,
		Address: socketAddress(o.listenHost, o.listenPort),
		// Envoy's default is 1 MiB; a BUFFERED ext_proc body above it is refused with 413.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/listener/v3/listener.proto#envoy-v3-api-field-config-listener-v3-listener-per-connection-buffer-limit-bytes
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(o.MaxRequestBytes),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
		}},
	}, nil
}

// AccessLogFields is the listener's JSON access log line: field name → Envoy command operator.
// Every operator is one that can never carry the access key, which clients send in the path
// (/ak/<key>/…) or in the x-ccproxy-key header:
//
//   - no :path in any form. %REQ(:PATH)% renders the HCM's request headers when the stream ends
//     (ActiveStream::log), which filters mutate in place: it shows the router processor's
//     rewritten path only when the processor rewrote it, and the client's path, key included,
//     whenever it did not — a refused key (the processor's ImmediateResponse leaves :path alone),
//     the catch-all 404, a 413, an ext_proc failure or timeout before the rewrite, an overload
//     503. %PATH%, %REQ_WITHOUT_QUERY(:PATH)% and Envoy's default format
//     (%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%) have the same source. x-envoy-original-path is set
//     by route rewrites and redirects only, never by an ext_proc :path mutation, and the HCM
//     strips it from edge requests — it is not logged either. %ROUTE_NAME% says which backend a
//     request went to, and the request id joins the line to extproc's log lines and to the
//     request's usage row;
//   - headers only by name, and only x-request-id (replaced by Envoy on every external
//     request), :method and user-agent (truncated);
//   - dynamic metadata only by key, and only what ccproxy's processors publish for logging.
//
// %RESPONSE_CODE_DETAILS% carries fixed strings: Envoy's, the details of the processors'
// ImmediateResponses and ext_proc's gRPC status messages, all of them constants in ccproxy.
// TestAccessLogCannotCarryTheKey keeps every operator in this vetted set.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/observability/access_log/usage
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/advanced/substitution_formatter
// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/common/http/conn_manager_impl.cc (ActiveStream::log)
// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/common/http/conn_manager_utility.cc (removeEnvoyOriginalPath)
func AccessLogFields() map[string]string {
	return map[string]string{
		"start_time":       "%START_TIME%",
		"request_id":       "%REQ(X-REQUEST-ID)%",
		"method":           "%REQ(:METHOD)%",
		"protocol":         "%PROTOCOL%",
		"route":            "%ROUTE_NAME%",
		"status":           "%RESPONSE_CODE%",
		"details":          "%RESPONSE_CODE_DETAILS%",
		"flags":            "%RESPONSE_FLAGS%",
		"attempts":         "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
		"upstream_cluster": "%UPSTREAM_CLUSTER%",
		"upstream_host":    "%UPSTREAM_HOST%",
		"upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
		"bytes_received":   "%BYTES_RECEIVED%",
		"bytes_sent":       "%BYTES_SENT%",
		"duration_ms":      "%DURATION%",
		"response_ms":      "%RESPONSE_DURATION%",
		"client":           "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
		"user_agent":       "%REQ(USER-AGENT):128%",
		// The length of the translated body the upstream processor sent to Bedrock.
		"upstream_request_bytes": "%DYNAMIC_METADATA(" + dataplane.MetadataNamespace + ":" + dataplane.ContentLengthKey + ")%",
	}
}

// buildAccessLog is the listener's access log: AccessLogFields as JSON lines on stdout. The
// json_format renders numbers as numbers and an absent value as null.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/access_loggers/stream/v3/stream.proto
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/core/v3/substitution_format_string.proto#envoy-v3-api-field-config-core-v3-substitutionformatstring-json-format
func buildAccessLog() ([]*accesslogv3.AccessLog, error) {
	fields := map[string]any{}
	for k, v := range AccessLogFields() {
		fields[k] = v
	}
	format, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("controlplane: access log format: %w", err)
	}
	stdout, err := pack(&streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: format}},
	}})
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{
		Name:       stdoutAccessLogName,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout},
	}}, nil
}

// buildRouterExtProc is the router-level ext_proc filter (data-path contract).
func buildRouterExtProc(o resolved) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService: extProcGrpcService(o),
		// false (the default, stated): a broken processor fails the request (500/504) instead
		// of letting it through unauthenticated.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-failure-mode-allow
		FailureModeAllow: false,
		// Every field explicit (data-path contract); the processor switches the response body
		// to STREAMED for text/event-stream 200 responses with mode_override.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/processing_mode.proto
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			ResponseBodyMode:    extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		// The 200 ms default expires while a 32 MB body crosses the stream (local 504).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-message-timeout
		MessageTimeout: durationpb.New(o.ExtProcMessageTimeout),
		// Upper bound for override_message_timeout; the default 0 disables that API.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-max-message-timeout
		MaxMessageTimeout: durationpb.New(o.ExtProcMaxMessageTimeout),
		// Without it Envoy ignores mode_override and a streamed answer would be buffered whole.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-allow-mode-override
		AllowModeOverride: true,
		// Dynamic metadata the processor emits is dropped unless its namespace is listed.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-metadataoptions-receiving-namespaces
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{dataplane.MetadataNamespace}},
		},
		// The number of upstream attempts, sent with the response headers: on a
		// plan+bedrock-<region> route 2 means the answer is Bedrock's (the retry went to
		// priority 1), which the router processor needs to translate and account it. The
		// attempt's own status is known only to the upstream filter; connect failures, resets
		// and per-try timeouts produce no response headers there, so this is how the router
		// processor learns a fallback happened. Envoy sends response attributes on the first
		// message of the response direction (Filter::addAttributes in buildHeaderRequest).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-response-attributes
		// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/extensions/filters/http/ext_proc/ext_proc.cc (addAttributes)
		ResponseAttributes: []string{dataplane.AttemptCount},
	}
}

// extProcGrpcService is the ext_proc sidecar as both ext_proc filters reach it.
func extProcGrpcService(o resolved) *corev3.GrpcService {
	return &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: ExtProcClusterName,
			// Bounds a processor reply (a body mutation carries up to MaxRequestBytes).
			// Envoy's default is unlimited; the gRPC server sets its own limit.
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/core/v3/grpc_service.proto#envoy-v3-api-field-config-core-v3-grpcservice-envoygrpc-max-receive-message-length
			MaxReceiveMessageLength: wrapperspb.UInt32(o.MaxRequestBytes + grpcMessageHeadroom),
		}},
		// No GrpcService.timeout: it would bound the whole ext_proc stream, which lives as
		// long as the streamed answer.
	}
}

// buildUpstreamExtProc is the upstream ext_proc filter of the Bedrock and fallback clusters
// (data-path contract): it runs once per attempt, after the host is chosen, and rewrites the
// request for that host from the request the router-level processor stored.
func buildUpstreamExtProc(o resolved) *extprocv3.ExternalProcessor {
	gs := extProcGrpcService(o)
	// Sent as gRPC metadata on every stream: one extproc server serves both filters and
	// tells them apart by it.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/core/v3/grpc_service.proto#envoy-v3-api-field-config-core-v3-grpcservice-initial-metadata
	gs.InitialMetadata = []*corev3.HeaderValue{{Key: dataplane.FilterHeader, Value: dataplane.FilterUpstream}}
	return &extprocv3.ExternalProcessor{
		GrpcService: gs,
		// false (the default, stated): a broken processor fails the attempt rather than
		// sending an untranslated, unsigned request to Bedrock.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-failure-mode-allow
		FailureModeAllow: false,
		// Headers only: the stored request supplies the body, which the processor replaces
		// with CONTINUE_AND_REPLACE on the request headers; response headers feed the
		// per-attempt status (circuit breaker). Bodies stay with the router-level filter.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/processing_mode.proto
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		// The chosen host's backend, region and host name, sent with the request headers.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-request-attributes
		RequestAttributes: dataplane.UpstreamAttributes(),
		// Shorter than the router filter's: the processor answers from memory and its own calls
		// are bounded below it, and this is how long a failed upstream processor can hold an
		// attempt before Envoy answers 504 (1.36+) or the router-level processor answers for it.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-message-timeout
		MessageTimeout:    durationpb.New(o.UpstreamExtProcMessageTimeout),
		MaxMessageTimeout: durationpb.New(o.ExtProcMaxMessageTimeout),
		// The processor publishes the new content length here for the header_mutation filter;
		// other namespaces are dropped.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-metadataoptions-receiving-namespaces
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{dataplane.MetadataNamespace}},
		},
		// false (the default, stated): the modes above are the whole contract of this filter.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/ext_proc/v3/ext_proc.proto#envoy-v3-api-field-extensions-filters-http-ext-proc-v3-externalprocessor-allow-mode-override
		AllowModeOverride: false,
	}
}

// contentLengthValue formats the length the upstream processor publishes as dynamic
// metadata. When the key is absent the header formatter yields an empty value, and the
// mutation skips an empty value unless keep_empty_value (AppendMutation::evaluateHeaders), so
// a request whose body was not replaced keeps its own content-length.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/observability/access_log/usage#config-access-log-format-dynamic-metadata
// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/http/header_mutation.cc
const contentLengthValue = "%DYNAMIC_METADATA(" + dataplane.MetadataNamespace + ":" + dataplane.ContentLengthKey + ")%"

// buildUpstreamFilters is the upstream HTTP filter chain of a Bedrock or fallback cluster.
func buildUpstreamFilters(o resolved) ([]*hcmv3.HttpFilter, error) {
	extProc, err := pack(buildUpstreamExtProc(o))
	if err != nil {
		return nil, err
	}
	// Envoy removes content-length when a processor replaces the body with
	// CONTINUE_AND_REPLACE (docs/envoy.md, "Rules a server must respect"), and the request would
	// go to Bedrock chunked; this filter, after the processor in the chain, writes the length
	// back from the processor's dynamic metadata.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/service/ext_proc/v3/external_processor.proto#enum-service-ext-proc-v3-commonresponse-responsestatus
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/header_mutation/v3/header_mutation.proto
	mutation, err := pack(&headermutationv3.HeaderMutation{
		Mutations: &headermutationv3.Mutations{
			RequestMutations: []*mutationrulesv3.HeaderMutation{{
				Action: &mutationrulesv3.HeaderMutation_Append{Append: overwriteHeader("content-length", contentLengthValue)},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	// The terminal upstream filter: it hands the request to the codec, so it must be last.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/filters/http/upstream_codec/v3/upstream_codec.proto
	codec, err := pack(&upstreamcodecv3.UpstreamCodec{})
	if err != nil {
		return nil, err
	}
	return []*hcmv3.HttpFilter{
		{Name: UpstreamExtProcName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: extProc}},
		{Name: ContentLengthFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mutation}},
		{Name: upstreamCodecName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: codec}},
	}, nil
}

// notFoundBody is the catch-all route's Anthropic error JSON.
const notFoundBody = `{"type":"error","error":{"type":"not_found_error","message":"Not found: no route for this request."}}`

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}

func overwriteHeader(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// buildRoutes builds RouteConfigName: the Plan route, one route per Bedrock region, one
// Plan-first route per fallback region, each selected only by the exact routing header the
// processor sets, and a catch-all 404.
func buildRoutes(o resolved) (*routev3.RouteConfiguration, error) {
	routes := []*routev3.Route{upstreamRoute(o, PlanRouteName, dataplane.RoutePlan, PlanClusterName, planRetryPolicy(o))}
	for _, b := range o.bedrock {
		// The same settings as Plan: a Bedrock answer streams as long and is as large. Its
		// retry policy is Plan's too (no retry on 429: Claude Code retries 429 itself).
		name := BedrockClusterName(b.region)
		routes = append(routes, upstreamRoute(o, name, name, name, planRetryPolicy(o)))
	}
	for _, b := range o.fallback {
		// Plan's settings, but the retry is the fallback: one retry, to Bedrock.
		retry, err := fallbackRetryPolicy(o)
		if err != nil {
			return nil, err
		}
		name := FallbackClusterName(b.region)
		routes = append(routes, upstreamRoute(o, name, name, name, retry))
	}
	notFound := &routev3.Route{
		Name:  NotFoundRouteName,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		// Defence in depth: a request without a valid routing header never reaches an upstream.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-route-direct-response
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 404,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: notFoundBody}},
		}},
		// A local reply's body is text/plain unless the route says otherwise.
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{overwriteHeader("content-type", "application/json")},
	}
	return &routev3.RouteConfiguration{
		Name: RouteConfigName,
		// Removed by the HCM from every external request before any filter runs, so only the
		// processor can set the routing header.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route.proto#envoy-v3-api-field-config-route-v3-routeconfiguration-internal-only-headers
		InternalOnlyHeaders: []string{dataplane.RouteHeader},
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    VirtualHostName,
			Domains: []string{"*"},
			Routes:  append(routes, notFound),
		}},
	}, nil
}

// planRetryPolicy is the retry policy of the plan and bedrock-<region> routes: only where
// the upstream cannot have seen the request (planRetryOn), never on an answer.
func planRetryPolicy(o resolved) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    planRetryOn,
		NumRetries: wrapperspb.UInt32(1),
		// Bounds the wait for response headers only: once the response has started
		// downstream, Envoy ignores the per-try timer (UpstreamRequest::onPerTryTimeout).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-retrypolicy-per-try-timeout
		// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/common/router/upstream_request.cc
		PerTryTimeout: durationpb.New(o.PerTryTimeout),
	}
}

// fallbackRetryPolicy is the retry policy of a plan+bedrock-<region> route: Plan's failure
// answers, resets (per-try timeout included) and connect failures are retried once, and the
// retry goes to the cluster's priority 1, Bedrock. Envoy decides on the response headers,
// before anything goes downstream, so a streamed request falls back too; the retried
// answer's body is discarded.
func fallbackRetryPolicy(o resolved) (*routev3.RetryPolicy, error) {
	// previous_priorities with update_frequency 1: once one host has been attempted its
	// priority is excluded, so with a healthy priority 0 the first attempt goes to Plan
	// (priority 1 gets no first attempts) and the retry gets 100 % of the load on priority
	// 1. Once every priority has been attempted the exclusions reset and the original load
	// returns, so a third attempt would go back to Plan: hence exactly one retry.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto
	// https://github.com/envoyproxy/envoy/blob/v1.40.0/source/extensions/retry/priority/previous_priorities/previous_priorities.cc (determinePriorityLoad, adjustForAttemptedPriorities)
	pp, err := pack(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 1})
	if err != nil {
		return nil, err
	}
	return &routev3.RetryPolicy{
		RetryOn: fallbackRetryOn,
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-retrypolicy-retriable-status-codes
		RetriableStatusCodes: slices.Clone(fallbackStatusCodes),
		NumRetries:           wrapperspb.UInt32(1),
		// As planRetryPolicy: bounds the wait for Plan's response headers; when it fires the
		// attempt is reset and retried on Bedrock (fallbackRetryOn's `reset`).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-retrypolicy-per-try-timeout
		PerTryTimeout: durationpb.New(o.PerTryTimeout),
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-retrypolicy-retry-priority
		RetryPriority: &routev3.RetryPolicy_RetryPriority{
			Name:       previousPrioritiesName,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: pp},
		},
	}, nil
}

// upstreamRoute is the route named name that sends requests whose dataplane.RouteHeader is exactly
// value to cluster, retrying as retry says.
func upstreamRoute(o resolved, name, value, cluster string, retry *routev3.RetryPolicy) *routev3.Route {
	return &routev3.Route{
		Name: name,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers:       []*routev3.HeaderMatcher{exactHeader(dataplane.RouteHeader, value)},
		},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			// 0 disables the route timeout; its 15 s default covers the whole streamed answer.
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-timeout
			Timeout: durationpb.New(0),
			// Replaces the HCM stream_idle_timeout for this route; above PerTryTimeout because the
			// idle timer also runs while Envoy waits for response headers.
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-idle-timeout
			IdleTimeout: durationpb.New(o.RouteIdleTimeout),
			// Host becomes the endpoint's hostname (api.anthropic.com,
			// bedrock-runtime.<region>.amazonaws.com), not the gateway's name.
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-auto-host-rewrite
			HostRewriteSpecifier: &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)},
			RetryPolicy:          retry,
		}},
		// Identity encoding from upstream, overwriting the client's accept-encoding, so usage
		// extraction and error translation see plain bytes.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-route-request-headers-to-add
		RequestHeadersToAdd: []*corev3.HeaderValueOption{overwriteHeader("accept-encoding", "identity")},
		// The routing header is internal; the access key header must never reach an upstream.
		// Route header changes apply before the upstream filters run, so the upstream
		// processor never sees either.
		RequestHeadersToRemove: []string{dataplane.RouteHeader, dataplane.KeyHeader},
		// The retry buffer: a body above it cannot be retried. Envoy 1.40 field (replaces the
		// deprecated per_request_buffer_limit_bytes, which was capped by the connection limit).
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-route-request-body-buffer-limit
		RequestBodyBufferLimit: wrapperspb.UInt64(uint64(o.MaxRequestBytes)),
	}
}

// clusterEndpoint is one endpoint of an upstream cluster: a DNS name (or IP) and port, and
// its endpoint metadata in dataplane.MetadataNamespace.
type clusterEndpoint struct {
	url upstreamURL
	md  map[string]any
}

// buildPlanCluster builds the Anthropic cluster.
func buildPlanCluster(o resolved) (*clusterv3.Cluster, error) {
	return buildUpstreamCluster(o, PlanClusterName, []clusterEndpoint{{o.plan, map[string]any{dataplane.BackendKey: dataplane.BackendPlan}}}, nil)
}

// buildBedrockCluster builds region's Bedrock cluster: Plan's settings, plus endpoint
// metadata naming the region and host for the upstream processor (which signs for them),
// and the upstream filter chain that rewrites each attempt for Bedrock.
func buildBedrockCluster(o resolved, b bedrockEndpoint) (*clusterv3.Cluster, error) {
	filters, err := buildUpstreamFilters(o)
	if err != nil {
		return nil, err
	}
	return buildUpstreamCluster(o, BedrockClusterName(b.region), []clusterEndpoint{bedrockClusterEndpoint(b)}, filters)
}

// bedrockClusterEndpoint is region b's Bedrock endpoint, with the metadata the upstream
// processor signs from.
func bedrockClusterEndpoint(b bedrockEndpoint) clusterEndpoint {
	return clusterEndpoint{b.url, map[string]any{
		dataplane.BackendKey: dataplane.BackendBedrock,
		dataplane.RegionKey:  b.region,
		// auto_host_rewrite writes the endpoint hostname, without the port, to :authority.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-auto-host-rewrite
		dataplane.HostKey: b.url.host,
	}}
}

// buildFallbackCluster builds region b's Plan-first cluster: the Plan endpoint at priority 0
// and b's Bedrock endpoint at priority 1 (the fallback route's single retry goes to priority
// 1, see fallbackRetryPolicy), with the Bedrock clusters' upstream filter chain — the upstream
// processor must see the Plan attempts too: their response headers feed the circuit breaker,
// and it learns from the host metadata which backend each attempt goes to. Only built when
// both URLs have the same scheme (fallbackEndpoints): a cluster has one transport socket.
//
// No health_checks and no outlier_detection, deliberately: Plan's hosts are shared by every
// user, so active checks or ejections driven by one user's 429s and errors would move every
// user to Bedrock (priority spill-over), and an ejected Plan host would also fail plan-only
// users. Without health checking every host stays healthy and priority 0 gets all first
// attempts; the per-user circuit breaker in extproc decides who skips Plan.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/intro/arch_overview/upstream/load_balancing/priority
// https://www.envoyproxy.io/docs/envoy/v1.40.0/intro/arch_overview/upstream/outlier
func buildFallbackCluster(o resolved, b bedrockEndpoint) (*clusterv3.Cluster, error) {
	filters, err := buildUpstreamFilters(o)
	if err != nil {
		return nil, err
	}
	plan := clusterEndpoint{o.plan, map[string]any{
		dataplane.BackendKey: dataplane.BackendPlan,
		// The :authority auto_host_rewrite writes for a Plan attempt: a retry's upstream
		// processor sees the shared header map with the previous attempt's rewrite, so it
		// takes the host of the attempt from here.
		dataplane.HostKey: o.plan.host,
	}}
	return buildUpstreamCluster(o, FallbackClusterName(b.region), []clusterEndpoint{plan, bedrockClusterEndpoint(b)}, filters)
}

// buildUpstreamCluster builds a cluster with one DNS endpoint per entry of eps, the i-th at
// priority i, and with the upstream HTTP filters given (none: Envoy's default chain, the codec
// alone). Every endpoint must have the scheme of eps[0]: one transport socket serves them all.
func buildUpstreamCluster(o resolved, name string, eps []clusterEndpoint, filters []*hcmv3.HttpFilter) (*clusterv3.Cluster, error) {
	u := eps[0].url
	localities := make([]*endpointv3.LocalityLbEndpoints, len(eps))
	for i, ep := range eps {
		if ep.url.tls != u.tls {
			return nil, fmt.Errorf("controlplane: cluster %s mixes http and https endpoints", name)
		}
		mds, err := structpb.NewStruct(ep.md)
		if err != nil {
			return nil, fmt.Errorf("controlplane: endpoint metadata: %w", err)
		}
		localities[i] = &endpointv3.LocalityLbEndpoints{
			// With one endpoint per priority, all the load goes to the lowest priority
			// (every host is healthy without health checks) and a retry with
			// previous_priorities moves to the next.
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/endpoint/v3/endpoint_components.proto#envoy-v3-api-field-config-endpoint-v3-localitylbendpoints-priority
			Priority: uint32(i),
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(ep.url.host, ep.url.port),
					// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/endpoint/v3/endpoint_components.proto#envoy-v3-api-field-config-endpoint-v3-endpoint-hostname
					Hostname: ep.url.host,
				}},
				// The upstream ext_proc learns the backend of each attempt from here;
				// cluster metadata cannot tell priority-0 Plan from priority-1 Bedrock.
				Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{dataplane.MetadataNamespace: mds}},
			}},
		}
	}
	c := &clusterv3.Cluster{
		Name: name,
		// STRICT_DNS with an endpoint hostname: auto_host_rewrite and auto_host_sni take the
		// host name from the endpoint, which works when Bedrock endpoints share the cluster.
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(planConnectTimeout),
		// With the AUTO default Envoy uses only the IPv6 addresses of a dual-stack name and
		// fails on IPv4-only Kubernetes nodes; V4_PREFERRED falls back to IPv6 only when there
		// is no A record. (The docs point new configs at the
		// envoy.cluster.dns extension; this field is not proto-deprecated and 1.40 honours it
		// for type STRICT_DNS, which the data-path contract and envoysim use.)
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-dns-lookup-family
		DnsLookupFamily: clusterv3.Cluster_V4_PREFERRED,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   localities,
		},
		// Envoy's defaults are 1024 and only 3 parallel retries per cluster, beyond which
		// retries silently stop: on a fallback cluster the 4th concurrent Plan 429 would go
		// back to the client instead of to Bedrock.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/intro/arch_overview/upstream/circuit_breaking
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     wrapperspb.UInt32(o.CircuitBreakers.MaxConnections),
			MaxPendingRequests: wrapperspb.UInt32(o.CircuitBreakers.MaxPendingRequests),
			MaxRequests:        wrapperspb.UInt32(o.CircuitBreakers.MaxRequests),
			MaxRetries:         wrapperspb.UInt32(o.CircuitBreakers.MaxRetries),
		}}},
	}
	var protocol *upstreamhttpv3.HttpProtocolOptions
	if u.tls {
		tlsCtx, err := pack(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{
				// ALPN offers both; auto_config below uses whichever the server picks.
				AlpnProtocols: []string{"h2", "http/1.1"},
				// Without trusted_ca Envoy does not verify the upstream certificate at all.
				// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/transport_sockets/tls/v3/common.proto#envoy-v3-api-field-extensions-transport-sockets-tls-v3-certificatevalidationcontext-trusted-ca
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.UpstreamCAFile}},
				}},
			},
			// SNI from the chosen endpoint's hostname, and the certificate's DNS SAN checked
			// against it. Not `sni` (fixed per cluster) and not UpstreamHttpProtocolOptions
			// auto_sni (takes the host header before auto_host_rewrite: the gateway's name).
			// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/transport_sockets/tls/v3/tls.proto#envoy-v3-api-field-extensions-transport-sockets-tls-v3-upstreamtlscontext-auto-host-sni
			AutoHostSni:          true,
			AutoSniSanValidation: true,
		})
		if err != nil {
			return nil, err
		}
		c.TransportSocket = &corev3.TransportSocket{
			Name:       tlsTransportSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
		}
		// HTTP/2 or HTTP/1.1 as negotiated by ALPN.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/upstreams/http/v3/http_protocol_options.proto#envoy-v3-api-field-extensions-upstreams-http-v3-httpprotocoloptions-auto-config
		protocol = &upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &upstreamhttpv3.HttpProtocolOptions_AutoHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			}},
		}
	} else {
		// Plaintext upstreams (tests, private endpoints) get HTTP/1.1: without TLS there is
		// no ALPN to negotiate h2.
		protocol = &upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			}},
		}
	}
	// The upstream filter chain (Bedrock and fallback clusters); upstream_codec must be last.
	// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/upstreams/http/v3/http_protocol_options.proto#envoy-v3-api-field-extensions-upstreams-http-v3-httpprotocoloptions-http-filters
	protocol.HttpFilters = filters
	po, err := pack(protocol)
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptsName: po}
	return c, nil
}

// buildExtProcCluster builds the ext_proc sidecar cluster: STATIC, HTTP/2, one local endpoint.
func buildExtProcCluster(o resolved) (*clusterv3.Cluster, error) {
	var addr *corev3.Address
	if o.extProc.pipe != "" {
		addr = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: o.extProc.pipe}}}
	} else {
		addr = socketAddress(o.extProc.ip, o.extProc.port)
	}
	po, err := pack(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	// Each downstream request holds one ext_proc stream (two once the upstream filter
	// exists); at Envoy's default max_requests of 1024 new streams fail and, with
	// failure_mode_allow false, so do the requests.
	streams := 2 * o.CircuitBreakers.MaxRequests
	c := &clusterv3.Cluster{
		Name:                 ExtProcClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(extProcConnectTimeout),
		// Whole bodies cross this connection in one gRPC message; at the 1 MiB default Envoy
		// pauses the side stream on the watermark for every large request.
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-per-connection-buffer-limit-bytes
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(o.MaxRequestBytes + grpcMessageHeadroom),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ExtProcClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
				}},
			}},
		},
		// https://www.envoyproxy.io/docs/envoy/v1.40.0/intro/arch_overview/upstream/circuit_breaking
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxPendingRequests: wrapperspb.UInt32(streams),
			MaxRequests:        wrapperspb.UInt32(streams),
		}}},
		// gRPC needs HTTP/2.
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptsName: po},
	}
	if t := o.ExtProcTLS; t != nil {
		ts, err := extProcTransportSocket(t)
		if err != nil {
			return nil, err
		}
		c.TransportSocket = ts
	}
	return c, nil
}

// extProcTransportSocket is mutual TLS to extproc with certificates from SDS files on disk,
// the pattern of the bootstrap's xds cluster: Envoy watches the files' directory and re-reads
// certificate and key together when the kubelet swaps a mounted Secret.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/security/secret#key-rotation
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/extensions/transport_sockets/tls/v3/tls.proto#envoy-v3-api-msg-extensions-transport-sockets-tls-v3-upstreamtlscontext
func extProcTransportSocket(t *ExtProcTLS) (*corev3.TransportSocket, error) {
	sds := func(file string) *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
				Path:             file,
				WatchedDirectory: &corev3.WatchedDirectory{Path: path.Dir(file)},
			}},
			ResourceApiVersion: corev3.ApiVersion_V3,
		}
	}
	tlsCtx, err := pack(&tlsv3.UpstreamTlsContext{
		Sni: t.ServerName,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			// gRPC servers require ALPN h2 on TLS connections.
			AlpnProtocols: []string{"h2"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
				Name: ExtProcCertificateSecret, SdsConfig: sds(t.CertificateSDSPath),
			}},
			// The name extproc's certificate must carry is checked here: without it any
			// certificate from the CA would be accepted as extproc's.
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_DNS,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerName}},
					}},
				},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{
					Name: ExtProcTrustedCASecret, SdsConfig: sds(t.TrustedCASDSPath),
				},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}, nil
}
