package envoysim

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previouspriorititesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
	"github.com/ccproxy/ccproxy/internal/xdsvalidate"
)

// Envoy defaults applied when a field is absent (Envoy 1.40).
const (
	// RouteAction.timeout: "If not specified, the default is 15s"
	// (api/envoy/config/route/v3/route_components.proto).
	defaultRouteTimeout = 15 * time.Second
	// HttpConnectionManager.stream_idle_timeout: "default is 5 minutes"
	// (api/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto).
	defaultStreamIdleTimeout = 5 * time.Minute
	// HttpProtocolOptions.idle_timeout (downstream connection idle): 1 hour.
	defaultConnIdleTimeout = time.Hour
	// Listener.per_connection_buffer_limit_bytes: "Defaults to 1MiB"
	// (api/envoy/config/listener/v3/listener.proto).
	defaultBufferLimit = 1 << 20
	// Cluster.connect_timeout: "If not set, a default value of 5s will be used"
	// (api/envoy/config/cluster/v3/cluster.proto).
	defaultConnectTimeout = 5 * time.Second
	// ExternalProcessor.message_timeout: "If not configured, default is 200
	// milliseconds" (api/envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto).
	defaultMessageTimeout = 200 * time.Millisecond
	// CircuitBreakers.Thresholds defaults (api/envoy/config/cluster/v3/circuit_breaker.proto):
	// max_connections, max_pending_requests, max_requests 1024; max_retries 3.
	defaultMaxConnections     = 1024
	defaultMaxPendingRequests = 1024
	defaultMaxRequests        = 1024
	defaultMaxRetries         = 3
	// RetryPolicy.retry_back_off: base 25ms, max 10x base (router/retry_state_impl.cc).
	defaultRetryBaseInterval = 25 * time.Millisecond
)

// Filter names ccproxy's config uses.
const (
	filterHCM     = "envoy.filters.network.http_connection_manager"
	filterExtProc = "envoy.filters.http.ext_proc"
	filterRouter  = "envoy.filters.http.router"
	socketTLS     = "envoy.transport_sockets.tls"
	// Retry priority plugin name.
	retryPreviousPriorities = "envoy.retry_priorities.previous_priorities"
	// Key of HttpProtocolOptions in Cluster.typed_extension_protocol_options.
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// snapshot is the compiled, immutable configuration served to new requests.
type snapshot struct {
	listeners    []*listenerConfig
	clusters     map[string]*clusterConfig
	routeConfigs map[string]*routeConfig
	upstreams    map[string]*upstreamCluster // runtime state, set by Sim.apply
}

type listenerConfig struct {
	name        string
	network     string // "tcp" or "unix"
	address     string
	bufferLimit int64
	hcm         *hcmConfig
	proto       *listenerv3.Listener
}

type codecType int

const (
	codecAuto codecType = iota
	codecHTTP1
	codecHTTP2
)

type hcmConfig struct {
	codec                     codecType
	rdsName                   string
	inlineRoutes              *routeConfig
	extProcs                  []*extProcConfig
	suppressEnvoyHeaders      bool
	streamIdleTimeout         time.Duration
	requestTimeout            time.Duration
	connIdleTimeout           time.Duration
	useRemoteAddress          bool
	skipXffAppend             bool
	generateRequestID         bool
	preserveExternalRequestID bool
	serverName                string
	serverHeaderTransform     hcmv3.HttpConnectionManager_ServerHeaderTransformation
	accessLogs                []*accessLog
	paths                     pathNormalization
}

// compile builds a snapshot from a complete set of resources. Every resource
// is validated (go-control-plane's Validate plus envoysim's allow-list) and
// every cross reference is resolved.
func compile(resources []types.Resource) (*snapshot, error) {
	snap := &snapshot{clusters: map[string]*clusterConfig{}, routeConfigs: map[string]*routeConfig{}}
	var listeners []*listenerv3.Listener
	for _, r := range resources {
		if err := validateResource(r); err != nil {
			return nil, err
		}
		switch v := r.(type) {
		case *clusterv3.Cluster:
			c, err := compileCluster(v)
			if err != nil {
				return nil, err
			}
			if _, dup := snap.clusters[c.name]; dup {
				return nil, fmt.Errorf("duplicate cluster %q", c.name)
			}
			snap.clusters[c.name] = c
		case *routev3.RouteConfiguration:
			rc, err := compileRouteConfig(v, false)
			if err != nil {
				return nil, err
			}
			if _, dup := snap.routeConfigs[rc.name]; dup {
				return nil, fmt.Errorf("duplicate route configuration %q", rc.name)
			}
			snap.routeConfigs[rc.name] = rc
		case *listenerv3.Listener:
			listeners = append(listeners, v)
		default:
			return nil, fmt.Errorf("envoysim does not implement resource type %T", r)
		}
	}
	sort.Slice(listeners, func(i, j int) bool { return listeners[i].GetName() < listeners[j].GetName() })
	for _, l := range listeners {
		lc, err := compileListener(l)
		if err != nil {
			return nil, err
		}
		snap.listeners = append(snap.listeners, lc)
	}
	if err := snap.link(); err != nil {
		return nil, err
	}
	return snap, nil
}

// link resolves references between resources.
func (s *snapshot) link() error {
	for _, l := range s.listeners {
		h := l.hcm
		if h.rdsName != "" {
			if _, ok := s.routeConfigs[h.rdsName]; !ok {
				return fmt.Errorf("listener %q: route configuration %q not found", l.name, h.rdsName)
			}
		}
		for _, ep := range h.extProcs {
			c, ok := s.clusters[ep.clusterName]
			if !ok {
				return fmt.Errorf("listener %q: ext_proc grpc cluster %q not found", l.name, ep.clusterName)
			}
			if c.protocol != protoHTTP2 {
				return fmt.Errorf("listener %q: ext_proc cluster %q must use HTTP/2 (explicit http2_protocol_options) for gRPC", l.name, c.name)
			}
		}
		if h.inlineRoutes != nil {
			// validate_clusters defaults to true for inline route configs
			// (route.proto RouteConfiguration.validate_clusters).
			if err := h.inlineRoutes.validateClusters(s, true); err != nil {
				return fmt.Errorf("listener %q: %w", l.name, err)
			}
		}
	}
	for _, c := range s.clusters {
		for _, uf := range c.upstreamFilters {
			if uf.extProc == nil {
				continue
			}
			gc, ok := s.clusters[uf.extProc.clusterName]
			if !ok {
				return fmt.Errorf("cluster %q: upstream ext_proc grpc cluster %q not found", c.name, uf.extProc.clusterName)
			}
			if gc.protocol != protoHTTP2 {
				return fmt.Errorf("cluster %q: ext_proc cluster %q must use HTTP/2 (explicit http2_protocol_options) for gRPC", c.name, gc.name)
			}
		}
	}
	for _, rc := range s.routeConfigs {
		if err := rc.validateClusters(s, false); err != nil {
			return err
		}
	}
	return nil
}

func (s *snapshot) routesFor(h *hcmConfig) *routeConfig {
	if h.inlineRoutes != nil {
		return h.inlineRoutes
	}
	return s.routeConfigs[h.rdsName]
}

// validateResource rejects what Envoy rejects on load: protoc-gen-validate
// violations anywhere in the resource, typed configs in Anys included (Envoy
// validates each extension's config when it instantiates it,
// source/common/protobuf/utility.h MessageUtil::validate), and then any field
// envoysim does not implement.
func validateResource(r types.Resource) error {
	if _, err := xdsvalidate.Deep(r); err != nil {
		return fmt.Errorf("invalid %T: %w", r, err)
	}
	if err := checkImplemented(r); err != nil {
		return err
	}
	return nil
}

func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func compileListener(l *listenerv3.Listener) (*listenerConfig, error) {
	lc := &listenerConfig{name: l.GetName(), bufferLimit: defaultBufferLimit, proto: l}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		lc.bufferLimit = int64(v.GetValue())
	}
	network, addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	lc.network, lc.address = network, addr
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		return nil, fmt.Errorf("listener %q: envoysim implements exactly one filter chain with one network filter", l.GetName())
	}
	f := l.GetFilterChains()[0].GetFilters()[0]
	hcmAny := f.GetTypedConfig()
	if hcmAny == nil {
		return nil, fmt.Errorf("listener %q: filter %q has no typed_config", l.GetName(), f.GetName())
	}
	msg, err := hcmAny.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	hcm, ok := msg.(*hcmv3.HttpConnectionManager)
	if !ok {
		return nil, fmt.Errorf("listener %q: envoysim implements only %s, got %T", l.GetName(), filterHCM, msg)
	}
	lc.hcm, err = compileHCM(hcm)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	return lc, nil
}

func socketAddress(a *corev3.Address) (network, addr string, err error) {
	if p := a.GetPipe(); p != nil {
		return "unix", p.GetPath(), nil
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", "", errors.New("address must be a socket_address or a pipe")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", "", fmt.Errorf("envoysim implements only TCP socket addresses, got %s", sa.GetProtocol())
	}
	return "tcp", net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

func compileHCM(h *hcmv3.HttpConnectionManager) (*hcmConfig, error) {
	c := &hcmConfig{
		streamIdleTimeout:         durationOr(h.GetStreamIdleTimeout(), defaultStreamIdleTimeout),
		requestTimeout:            durationOr(h.GetRequestTimeout(), 0),
		connIdleTimeout:           durationOr(h.GetCommonHttpProtocolOptions().GetIdleTimeout(), defaultConnIdleTimeout),
		useRemoteAddress:          h.GetUseRemoteAddress().GetValue(),
		skipXffAppend:             h.GetSkipXffAppend(),
		generateRequestID:         true,
		preserveExternalRequestID: h.GetPreserveExternalRequestId(),
		serverName:                "envoy",
		serverHeaderTransform:     h.GetServerHeaderTransformation(),
	}
	if v := h.GetGenerateRequestId(); v != nil {
		c.generateRequestID = v.GetValue()
	}
	c.paths = pathNormalization{
		normalize:      h.GetNormalizePath().GetValue(),
		mergeSlashes:   h.GetMergeSlashes(),
		escapedSlashes: h.GetPathWithEscapedSlashesAction(),
	}
	if c.paths.escapedSlashes == hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT {
		return nil, errors.New("envoysim does not implement path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT")
	}
	if h.GetServerName() != "" {
		c.serverName = h.GetServerName()
	}
	var err error
	if c.accessLogs, err = compileAccessLogs(h.GetAccessLog()); err != nil {
		return nil, err
	}
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		c.codec = codecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		c.codec = codecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		c.codec = codecHTTP2
	default:
		return nil, fmt.Errorf("envoysim does not implement codec_type %s", h.GetCodecType())
	}
	switch {
	case h.GetRds() != nil:
		rds := h.GetRds()
		if rds.GetConfigSource().GetAds() == nil {
			return nil, errors.New("rds.config_source must be ads (envoysim implements ADS only)")
		}
		c.rdsName = rds.GetRouteConfigName()
	case h.GetRouteConfig() != nil:
		rc, err := compileRouteConfig(h.GetRouteConfig(), true)
		if err != nil {
			return nil, err
		}
		c.inlineRoutes = rc
	default:
		return nil, errors.New("envoysim implements route_config or rds only")
	}
	filters := h.GetHttpFilters()
	if len(filters) == 0 || filters[len(filters)-1].GetName() != filterRouter {
		return nil, fmt.Errorf("http_filters must end with %s", filterRouter)
	}
	for i, f := range filters {
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
		}
		switch v := msg.(type) {
		case *extprocv3.ExternalProcessor:
			ep, err := compileExtProc(f.GetName(), v)
			if err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			if len(v.GetRequestAttributes()) > 0 {
				return nil, fmt.Errorf("http filter %q: envoysim implements request_attributes only in a cluster's upstream filter chain", f.GetName())
			}
			if ep.responseAttrs, err = compileResponseAttributes(v.GetResponseAttributes()); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			c.extProcs = append(c.extProcs, ep)
		case *routerv3.Router:
			if i != len(filters)-1 {
				return nil, errors.New("the router must be the last http filter")
			}
			c.suppressEnvoyHeaders = v.GetSuppressEnvoyHeaders()
		default:
			return nil, fmt.Errorf("envoysim does not implement http filter %q (%T)", f.GetName(), msg)
		}
	}
	return c, nil
}

// ---- routes ----

type routeConfig struct {
	name                string
	vhosts              []*virtualHost
	reqHeaders          headerMutations
	respHeaders         headerMutations
	internalOnlyHeaders []string
	validate            *bool
}

type virtualHost struct {
	name        string
	domains     []string
	routes      []*route
	reqHeaders  headerMutations
	respHeaders headerMutations
	retry       *retryPolicy
	// request_body_buffer_limit and the deprecated
	// per_request_buffer_limit_bytes; -1 = unset.
	bodyLimit, legacyLimit int64
}

type route struct {
	name        string
	match       routeMatch
	action      *routeAction
	direct      *directResponse
	reqHeaders  headerMutations
	respHeaders headerMutations
	// request_body_buffer_limit and the deprecated
	// per_request_buffer_limit_bytes; -1 = unset.
	bodyLimit, legacyLimit int64
}

type routeMatch struct {
	prefix        *string
	path          *string
	regex         *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
}

type headerMatcher struct {
	name    string
	present *bool
	str     *stringMatcher
	invert  bool
}

type stringMatcher struct {
	exact, prefix, suffix, contains *string
	regex                           *regexp.Regexp
	ignoreCase                      bool
}

type routeAction struct {
	cluster             string
	clusterHeader       string
	clusterNotFoundCode int
	timeout             time.Duration
	idleTimeout         *time.Duration
	retry               *retryPolicy
	autoHostRewrite     bool
	hostRewriteLiteral  string
}

type directResponse struct {
	status int
	body   []byte
}

type retryPolicy struct {
	on            retryOn
	numRetries    int
	perTryTimeout time.Duration
	statusCodes   map[int]bool
	baseInterval  time.Duration
	maxInterval   time.Duration
	// previous_priorities update_frequency; 0 = no retry priority plugin.
	previousPrioritiesFreq int
}

type retryOn struct {
	fiveXX, gatewayError, reset, resetBeforeRequest, connectFailure, retriable4xx, refusedStream, retriableStatusCodes bool
}

type headerMutations struct {
	add    []headerAdd
	remove []string
}

type headerAdd struct {
	key, value string
	action     corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty  bool
}

func compileRouteConfig(rc *routev3.RouteConfiguration, inline bool) (*routeConfig, error) {
	out := &routeConfig{name: rc.GetName(), internalOnlyHeaders: rc.GetInternalOnlyHeaders()}
	if v := rc.GetValidateClusters(); v != nil {
		b := v.GetValue()
		out.validate = &b
	}
	var err error
	if out.reqHeaders, err = compileHeaderMutations(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove()); err != nil {
		return nil, err
	}
	if out.respHeaders, err = compileHeaderMutations(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	for _, vh := range rc.GetVirtualHosts() {
		v := &virtualHost{name: vh.GetName(), domains: vh.GetDomains()}
		if v.reqHeaders, err = compileHeaderMutations(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove()); err != nil {
			return nil, err
		}
		if v.respHeaders, err = compileHeaderMutations(vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove()); err != nil {
			return nil, err
		}
		if vh.GetRetryPolicy() != nil {
			if v.retry, err = compileRetry(vh.GetRetryPolicy()); err != nil {
				return nil, err
			}
		}
		v.bodyLimit, v.legacyLimit = -1, -1
		if b := vh.GetRequestBodyBufferLimit(); b != nil {
			v.bodyLimit = int64(min(b.GetValue(), math.MaxInt64))
		}
		//lint:ignore SA1019 Envoy still honours the deprecated limit below request_body_buffer_limit.
		if b := vh.GetPerRequestBufferLimitBytes(); b != nil {
			v.legacyLimit = int64(b.GetValue())
		}
		for _, r := range vh.GetRoutes() {
			cr, err := compileRoute(r)
			if err != nil {
				return nil, fmt.Errorf("route configuration %q, virtual host %q: %w", rc.GetName(), vh.GetName(), err)
			}
			v.routes = append(v.routes, cr)
		}
		out.vhosts = append(out.vhosts, v)
	}
	return out, nil
}

func compileRoute(r *routev3.Route) (*route, error) {
	out := &route{name: r.GetName()}
	m := r.GetMatch()
	out.match.caseSensitive = true
	if cs := m.GetCaseSensitive(); cs != nil {
		out.match.caseSensitive = cs.GetValue()
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		p := ps.Prefix
		out.match.prefix = &p
	case *routev3.RouteMatch_Path:
		p := ps.Path
		out.match.path = &p
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex.GetRegex())
		if err != nil {
			return nil, err
		}
		out.match.regex = re
	default:
		return nil, fmt.Errorf("route %q: envoysim does not implement path specifier %T", r.GetName(), ps)
	}
	for _, hm := range m.GetHeaders() {
		cm := headerMatcher{name: strings.ToLower(hm.GetName()), invert: hm.GetInvertMatch()}
		switch spec := hm.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_PresentMatch:
			p := spec.PresentMatch
			cm.present = &p
		case *routev3.HeaderMatcher_StringMatch:
			sm, err := compileStringMatcher(spec.StringMatch)
			if err != nil {
				return nil, err
			}
			cm.str = sm
		default:
			return nil, fmt.Errorf("route %q: envoysim does not implement header match %T", r.GetName(), spec)
		}
		out.match.headers = append(out.match.headers, cm)
	}
	var err error
	if out.reqHeaders, err = compileHeaderMutations(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()); err != nil {
		return nil, err
	}
	if out.respHeaders, err = compileHeaderMutations(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	out.bodyLimit, out.legacyLimit = -1, -1
	if b := r.GetRequestBodyBufferLimit(); b != nil {
		out.bodyLimit = int64(min(b.GetValue(), math.MaxInt64))
	}
	//lint:ignore SA1019 Envoy still honours the deprecated limit below request_body_buffer_limit.
	if b := r.GetPerRequestBufferLimitBytes(); b != nil {
		out.legacyLimit = int64(b.GetValue())
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		ra, err := compileRouteAction(a.Route)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r.GetName(), err)
		}
		out.action = ra
	case *routev3.Route_DirectResponse:
		dr := &directResponse{status: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil {
			data, err := readDataSource(b)
			if err != nil {
				return nil, err
			}
			dr.body = data
		}
		out.direct = dr
	default:
		return nil, fmt.Errorf("route %q: envoysim does not implement action %T", r.GetName(), a)
	}
	return out, nil
}

func compileRouteAction(a *routev3.RouteAction) (*routeAction, error) {
	out := &routeAction{
		clusterNotFoundCode: 503,
		timeout:             durationOr(a.GetTimeout(), defaultRouteTimeout),
		autoHostRewrite:     a.GetAutoHostRewrite().GetValue(),
		hostRewriteLiteral:  a.GetHostRewriteLiteral(),
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.cluster = cs.Cluster
	case *routev3.RouteAction_ClusterHeader:
		out.clusterHeader = strings.ToLower(cs.ClusterHeader)
	default:
		return nil, fmt.Errorf("envoysim does not implement cluster specifier %T", cs)
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		out.clusterNotFoundCode = 503
	case routev3.RouteAction_NOT_FOUND:
		out.clusterNotFoundCode = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.clusterNotFoundCode = 500
	}
	if d := a.GetIdleTimeout(); d != nil {
		v := d.AsDuration()
		out.idleTimeout = &v
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		var err error
		if out.retry, err = compileRetry(rp); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compileRetry parses retry_on like RetryStateImpl::parseRetryOn
// (source/common/router/retry_state_impl.cc, Envoy 1.40); values envoysim
// does not emulate are errors.
func compileRetry(rp *routev3.RetryPolicy) (*retryPolicy, error) {
	out := &retryPolicy{numRetries: 1, statusCodes: map[int]bool{}, baseInterval: defaultRetryBaseInterval}
	if n := rp.GetNumRetries(); n != nil {
		out.numRetries = int(n.GetValue())
	}
	out.perTryTimeout = durationOr(rp.GetPerTryTimeout(), 0)
	for _, c := range rp.GetRetriableStatusCodes() {
		out.statusCodes[int(c)] = true
	}
	for _, tok := range strings.Split(rp.GetRetryOn(), ",") {
		switch strings.TrimSpace(tok) {
		case "":
		case "5xx":
			out.on.fiveXX = true
		case "gateway-error":
			out.on.gatewayError = true
		case "reset":
			out.on.reset = true
		case "reset-before-request":
			out.on.resetBeforeRequest = true
		case "connect-failure":
			out.on.connectFailure = true
		case "retriable-4xx":
			out.on.retriable4xx = true
		case "refused-stream":
			out.on.refusedStream = true
		case "retriable-status-codes":
			out.on.retriableStatusCodes = true
		default:
			return nil, fmt.Errorf("envoysim does not implement retry_on %q", tok)
		}
	}
	if pr := rp.GetRetryPriority(); pr != nil {
		if pr.GetName() != retryPreviousPriorities || pr.GetTypedConfig() == nil {
			return nil, fmt.Errorf("envoysim implements only the %s retry priority with typed_config", retryPreviousPriorities)
		}
		msg, err := pr.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, err
		}
		pp, ok := msg.(*previouspriorititesv3.PreviousPrioritiesConfig)
		if !ok {
			return nil, fmt.Errorf("retry_priority %s: typed_config must be PreviousPrioritiesConfig, got %T", retryPreviousPriorities, msg)
		}
		out.previousPrioritiesFreq = int(pp.GetUpdateFrequency())
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		out.baseInterval = bo.GetBaseInterval().AsDuration()
		if bo.GetMaxInterval() != nil {
			out.maxInterval = bo.GetMaxInterval().AsDuration()
		}
	}
	if out.maxInterval == 0 {
		out.maxInterval = 10 * out.baseInterval
	}
	return out, nil
}

func compileHeaderMutations(add []*corev3.HeaderValueOption, remove []string) (headerMutations, error) {
	var out headerMutations
	for _, r := range remove {
		out.remove = append(out.remove, strings.ToLower(r))
	}
	for _, h := range add {
		k := strings.ToLower(h.GetHeader().GetKey())
		v := h.GetHeader().GetValue()
		if len(h.GetHeader().GetRawValue()) > 0 {
			v = string(h.GetHeader().GetRawValue())
		}
		if strings.Contains(v, "%") {
			return out, fmt.Errorf("header %q: envoysim does not implement header value formatters (%%...%%)", k)
		}
		action := h.GetAppendAction()
		// The deprecated append field, when set, decides instead of
		// append_action (HeaderParser, source/common/router/header_parser.cc).
		//lint:ignore SA1019 HeaderParser still honours the deprecated append field when it is set.
		if a := h.GetAppend(); a != nil {
			if a.GetValue() {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			} else {
				action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		out.add = append(out.add, headerAdd{key: k, value: v, action: action, keepEmpty: h.GetKeepEmptyValue()})
	}
	return out, nil
}

// apply evaluates a HeaderParser: removals first, then additions
// (HeaderParser::evaluateHeaders, Envoy 1.40).
func (m headerMutations) apply(h *headerMap) {
	for _, k := range m.remove {
		h.Remove(k)
	}
	for _, a := range m.add {
		if a.value == "" && !a.keepEmpty {
			continue
		}
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(a.key, a.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !h.Has(a.key) {
				h.Add(a.key, a.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(a.key, a.value)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if h.Has(a.key) {
				h.Set(a.key, a.value)
			}
		}
	}
}

func compileStringMatcher(sm *matcherv3.StringMatcher) (*stringMatcher, error) {
	out := &stringMatcher{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.exact = &p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.prefix = &p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.suffix = &p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.contains = &p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return nil, err
		}
		out.regex = re
	default:
		return nil, fmt.Errorf("envoysim does not implement string matcher %T", p)
	}
	return out, nil
}

// compileRegex anchors the expression: Envoy's safe_regex is a full match
// (RE2 FullMatch).
func compileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("safe_regex %q: %w", expr, err)
	}
	return re, nil
}

func (rc *routeConfig) validateClusters(s *snapshot, inline bool) error {
	validate := inline
	if rc.validate != nil {
		validate = *rc.validate
	}
	if !validate {
		return nil
	}
	for _, vh := range rc.vhosts {
		for _, r := range vh.routes {
			if r.action != nil && r.action.cluster != "" {
				if _, ok := s.clusters[r.action.cluster]; !ok {
					return fmt.Errorf("route configuration %q: route %q refers to unknown cluster %q", rc.name, r.name, r.action.cluster)
				}
			}
		}
	}
	return nil
}

func readDataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	default:
		return nil, fmt.Errorf("envoysim does not implement data source %T", s)
	}
}

// ---- clusters ----

type clusterProtocol int

const (
	protoHTTP1 clusterProtocol = iota
	protoHTTP2
	protoAuto // ALPN
)

type clusterConfig struct {
	name            string
	proto           *clusterv3.Cluster
	strictDNS       bool
	connectTimeout  time.Duration
	dnsNetwork      string
	dnsFamily       clusterv3.Cluster_DnsLookupFamily
	priorities      [][]*hostConfig
	tls             *tlsConfig
	protocol        clusterProtocol
	autoSNI         bool
	autoSANValidate bool
	thresholds      thresholds
	upstreamFilters []upstreamFilterConfig // HttpProtocolOptions.http_filters without the codec
}

type thresholds struct {
	maxConnections, maxPending, maxRequests, maxRetries int64
}

type hostConfig struct {
	network  string // tcp or unix
	address  string
	hostname string
	metadata *corev3.Metadata
	priority int
	// dnsName is the name a STRICT_DNS endpoint resolves; "" when the
	// address is an IP literal or a pipe (no resolution).
	dnsName string
}

type tlsConfig struct {
	sni                string
	autoHostSNI        bool
	autoSNISANValidate bool
	roots              *x509.CertPool // nil: Envoy does not verify the server certificate
	alpn               []string
	minTLS13           bool     // tls_params.tls_minimum_protocol_version TLSv1_3
	certSDS            *sdsRef  // tls_certificate_sds_secret_configs (one)
	caSDS              *sdsRef  // combined_validation_context's validation_context_sds_secret_config
	sanExact           []string // match_typed_subject_alt_names: exact DNS names
}

func compileCluster(c *clusterv3.Cluster) (*clusterConfig, error) {
	out := &clusterConfig{
		name:           c.GetName(),
		proto:          c,
		connectTimeout: durationOr(c.GetConnectTimeout(), defaultConnectTimeout),
		dnsNetwork:     "tcp",
		dnsFamily:      c.GetDnsLookupFamily(),
		thresholds:     thresholds{defaultMaxConnections, defaultMaxPendingRequests, defaultMaxRequests, defaultMaxRetries},
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
	case clusterv3.Cluster_STRICT_DNS:
		out.strictDNS = true
	default:
		return nil, fmt.Errorf("cluster %q: envoysim implements STATIC and STRICT_DNS clusters, not %s", c.GetName(), c.GetType())
	}
	if _, ok := c.GetClusterDiscoveryType().(*clusterv3.Cluster_Type); !ok && c.GetClusterDiscoveryType() != nil {
		return nil, fmt.Errorf("cluster %q: envoysim does not implement cluster_type extensions", c.GetName())
	}
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, fmt.Errorf("cluster %q: envoysim implements lb_policy ROUND_ROBIN only", c.GetName())
	}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		out.dnsNetwork = "tcp4"
	case clusterv3.Cluster_V6_ONLY:
		out.dnsNetwork = "tcp6"
	}
	la := c.GetLoadAssignment()
	if la == nil || len(la.GetEndpoints()) == 0 {
		return nil, fmt.Errorf("cluster %q: envoysim needs endpoints inline in load_assignment", c.GetName())
	}
	for _, lle := range la.GetEndpoints() {
		p := int(lle.GetPriority())
		for len(out.priorities) <= p {
			out.priorities = append(out.priorities, nil)
		}
		for _, lbe := range lle.GetLbEndpoints() {
			h, err := compileHost(out, lbe, p)
			if err != nil {
				return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
			}
			out.priorities[p] = append(out.priorities[p], h)
		}
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if ts.GetName() != socketTLS {
			return nil, fmt.Errorf("cluster %q: envoysim implements only the %s transport socket", c.GetName(), socketTLS)
		}
		msg, err := ts.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, err
		}
		utc, ok := msg.(*tlsv3.UpstreamTlsContext)
		if !ok {
			return nil, fmt.Errorf("cluster %q: transport socket must be an UpstreamTlsContext", c.GetName())
		}
		if out.tls, err = compileTLS(utc); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
	}
	if opts, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		msg, err := opts.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		hpo, ok := msg.(*upstreamhttpv3.HttpProtocolOptions)
		if !ok {
			return nil, fmt.Errorf("cluster %q: %s must hold HttpProtocolOptions", c.GetName(), httpProtocolOptionsKey)
		}
		if err := compileHTTPProtocolOptions(out, hpo); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
	}
	for k := range c.GetTypedExtensionProtocolOptions() {
		if k != httpProtocolOptionsKey {
			return nil, fmt.Errorf("cluster %q: envoysim does not implement protocol options %q", c.GetName(), k)
		}
	}
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return nil, fmt.Errorf("cluster %q: envoysim implements DEFAULT priority circuit breakers only", c.GetName())
		}
		if v := t.GetMaxConnections(); v != nil {
			out.thresholds.maxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			out.thresholds.maxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			out.thresholds.maxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			out.thresholds.maxRetries = int64(v.GetValue())
		}
	}
	return out, nil
}

func compileHost(c *clusterConfig, lbe *endpointv3.LbEndpoint, priority int) (*hostConfig, error) {
	ep := lbe.GetEndpoint()
	if ep == nil {
		return nil, errors.New("envoysim implements lb_endpoints with an endpoint only")
	}
	network, addr, err := socketAddress(ep.GetAddress())
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		network = c.dnsNetwork
	}
	h := &hostConfig{network: network, address: addr, hostname: ep.GetHostname(), metadata: lbe.GetMetadata(), priority: priority}
	if c.strictDNS && network != "unix" {
		host, _, _ := net.SplitHostPort(addr)
		if h.hostname == "" {
			// A DNS cluster's host name is the resolved name (Envoy sets it
			// from the DNS target; HostDescriptionImpl hostname()).
			h.hostname = host
		}
		if _, err := netip.ParseAddr(host); err != nil {
			h.dnsName = host
		}
	}
	return h, nil
}

func compileTLS(utc *tlsv3.UpstreamTlsContext) (*tlsConfig, error) {
	out := &tlsConfig{
		sni:                utc.GetSni(),
		autoHostSNI:        utc.GetAutoHostSni(),
		autoSNISANValidate: utc.GetAutoSniSanValidation(),
		alpn:               utc.GetCommonTlsContext().GetAlpnProtocols(),
	}
	ctc := utc.GetCommonTlsContext()
	switch v := ctc.GetTlsParams().GetTlsMinimumProtocolVersion(); v {
	case tlsv3.TlsParameters_TLS_AUTO, tlsv3.TlsParameters_TLSv1_2:
	case tlsv3.TlsParameters_TLSv1_3:
		out.minTLS13 = true
	default:
		return nil, fmt.Errorf("envoysim does not implement tls_minimum_protocol_version %s", v)
	}
	switch sds := ctc.GetTlsCertificateSdsSecretConfigs(); len(sds) {
	case 0:
	case 1:
		ref, err := compileSDS(sds[0])
		if err != nil {
			return nil, fmt.Errorf("tls_certificate_sds_secret_configs: %w", err)
		}
		out.certSDS = ref
	default:
		return nil, errors.New("envoysim implements one tls_certificate_sds_secret_config")
	}
	vc := ctc.GetValidationContext()
	if cvc := ctc.GetCombinedValidationContext(); cvc != nil {
		vc = cvc.GetDefaultValidationContext()
		ref, err := compileSDS(cvc.GetValidationContextSdsSecretConfig())
		if err != nil {
			return nil, fmt.Errorf("validation_context_sds_secret_config: %w", err)
		}
		out.caSDS = ref
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		exact := m.GetMatcher().GetExact()
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || exact == "" || m.GetMatcher().GetIgnoreCase() {
			return nil, errors.New("envoysim implements match_typed_subject_alt_names with DNS exact matchers only")
		}
		out.sanExact = append(out.sanExact, exact)
	}
	if vc != nil && vc.GetTrustedCa() != nil {
		pem, err := readDataSource(vc.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			// envoy.reloadable_features.reject_empty_trusted_ca_file: a
			// trusted_ca without certificates is a config error.
			return nil, errors.New("trusted_ca contains no certificates")
		}
		out.roots = pool
	}
	return out, nil
}

func compileHTTPProtocolOptions(c *clusterConfig, o *upstreamhttpv3.HttpProtocolOptions) error {
	switch p := o.GetUpstreamProtocolOptions().(type) {
	case *upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		if p.ExplicitHttpConfig.GetHttp2ProtocolOptions() != nil {
			c.protocol = protoHTTP2
		} else if p.ExplicitHttpConfig.GetHttpProtocolOptions() != nil {
			c.protocol = protoHTTP1
		} else {
			return errors.New("envoysim implements explicit HTTP/1.1 or HTTP/2 only")
		}
	case *upstreamhttpv3.HttpProtocolOptions_AutoConfig:
		// auto_config needs ALPN, i.e. a TLS transport socket
		// (upstreams/http/config.cc: "ALPN configured for cluster ... which has
		// a non-ALPN transport socket").
		if c.tls == nil {
			return errors.New("auto_config requires a TLS transport socket (ALPN)")
		}
		c.protocol = protoAuto
	case nil:
	default:
		return fmt.Errorf("envoysim does not implement upstream protocol options %T", p)
	}
	var err error
	if c.upstreamFilters, err = compileUpstreamFilters(o.GetHttpFilters()); err != nil {
		return err
	}
	c.autoSNI = o.GetUpstreamHttpProtocolOptions().GetAutoSni()
	c.autoSANValidate = o.GetUpstreamHttpProtocolOptions().GetAutoSanValidation()
	return nil
}

// ---- ext_proc ----

type extProcConfig struct {
	name              string
	clusterName       string
	authority         string
	maxRecvMsgSize    int
	initialMetadata   []*corev3.HeaderValue
	failureModeAllow  bool
	mode              *extprocv3.ProcessingMode
	messageTimeout    time.Duration
	maxMessageTimeout time.Duration
	rules             extprocrules.MutationRules
	allowModeOverride bool
	forwardNamespaces []string
	receiveNamespaces []string
	statusOnError     int
	routeCacheAction  extprocv3.ExternalProcessor_RouteCacheAction
	upstream          bool       // in a cluster's upstream filter chain
	requestAttrs      []attrExpr // upstream only
	responseAttrs     []attrExpr // router level only
}

func compileExtProc(name string, e *extprocv3.ExternalProcessor) (*extProcConfig, error) {
	eg := e.GetGrpcService().GetEnvoyGrpc()
	if eg == nil {
		return nil, errors.New("envoysim implements grpc_service.envoy_grpc only")
	}
	out := &extProcConfig{
		name:              name,
		clusterName:       eg.GetClusterName(),
		authority:         eg.GetAuthority(),
		initialMetadata:   e.GetGrpcService().GetInitialMetadata(),
		failureModeAllow:  e.GetFailureModeAllow(),
		mode:              proto.Clone(e.GetProcessingMode()).(*extprocv3.ProcessingMode),
		messageTimeout:    durationOr(e.GetMessageTimeout(), defaultMessageTimeout),
		maxMessageTimeout: durationOr(e.GetMaxMessageTimeout(), 0),
		allowModeOverride: e.GetAllowModeOverride(),
		forwardNamespaces: e.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(),
		receiveNamespaces: e.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(),
		statusOnError:     500,
		routeCacheAction:  e.GetRouteCacheAction(),
	}
	if out.mode == nil {
		out.mode = &extprocv3.ProcessingMode{}
	}
	if out.authority == "" {
		out.authority = out.clusterName
	}
	// EnvoyGrpc.max_receive_message_length: "Defaults to 0, which means
	// unlimited" (api/envoy/config/core/v3/grpc_service.proto).
	out.maxRecvMsgSize = int(^uint32(0) >> 1)
	if v := eg.GetMaxReceiveMessageLength(); v != nil && v.GetValue() > 0 {
		out.maxRecvMsgSize = int(v.GetValue())
	}
	if s := e.GetStatusOnError(); s != nil && s.GetCode() != 0 {
		out.statusOnError = int(s.GetCode())
	}
	if e.GetDisableClearRouteCache() {
		out.routeCacheAction = extprocv3.ExternalProcessor_RETAIN
	}
	out.rules = extprocrules.NewMutationRules(e.GetMutationRules())
	if err := checkModeImplemented(out.mode); err != nil {
		return nil, err
	}
	return out, nil
}

func checkModeImplemented(m *extprocv3.ProcessingMode) error {
	for _, bm := range []extprocv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
		switch bm {
		case extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_BUFFERED, extprocv3.ProcessingMode_STREAMED:
		default:
			return fmt.Errorf("envoysim does not implement body mode %s", bm)
		}
	}
	for _, tm := range []extprocv3.ProcessingMode_HeaderSendMode{m.GetRequestTrailerMode(), m.GetResponseTrailerMode()} {
		if tm == extprocv3.ProcessingMode_SEND {
			return errors.New("envoysim does not implement trailer mode SEND")
		}
	}
	return nil
}
