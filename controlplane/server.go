package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	extensionservice "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// NodeKey is the snapshot-cache key every data plane maps to: all Envoys (and envoysim) get
// the same configuration, so a bootstrap's node id is free-form.
const NodeKey = "ccproxy"

const (
	// shutdownGrace bounds GracefulStop; xDS streams end as soon as the server context is
	// cancelled, so this only covers in-flight unary calls (health checks).
	shutdownGrace = 5 * time.Second
	// Envoy's xDS cluster in envoy/bootstrap.yaml pings every 30 s; MinTime must be below that
	// or the server answers the pings with GOAWAY (too_many_pings).
	keepaliveMinTime = 10 * time.Second
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 5 * time.Second
)

// The oldest Envoy release the control plane configures. The resources rely on behaviour
// first released in 1.37.0 — local replies reach the router-level ext_proc (envoyproxy/envoy
// commit 37efb748cff8c7505e405e2ab94d50baaca30959, first in v1.37.0), the router resets every
// attempt on a local reply, and request_body_buffer_limit is applied at route match
// (changelogs/1.37.0.yaml) — and ccproxy is tested against 1.37–1.40 only. An older Envoy would
// accept the configuration and then fail requests in ways no test covers, so it gets none.
const (
	minEnvoyMajor = 1
	minEnvoyMinor = 37
	// MinEnvoyVersion is the oldest Envoy release the control plane serves, as Envoy reports
	// it in its node's user_agent_build_version.
	MinEnvoyVersion = "1.37.0"
)

// Reasons a node is refused, the reason label of ccproxy_controlplane_refused_nodes_total.
const (
	// refusedEnvoyVersion: the node reports a build version below MinEnvoyVersion.
	refusedEnvoyVersion = "envoy_version"
	// refusedNoVersion: the node reports no build version at all.
	refusedNoVersion = "no_version"
)

// ErrNodeRefused is wrapped by the error that ends the stream of a node the control plane
// will not configure; the data plane receives it as gRPC FAILED_PRECONDITION.
var ErrNodeRefused = errors.New("controlplane: node refused")

// nodeRefusal says why node must get no configuration: its reason label and the version it
// reported ("" when it reported none); reason is "" for a node to serve.
//
// Envoy always fills user_agent_build_version with its own build version unless the bootstrap
// sets one (Server::InstanceBase::initializeOrThrow; unchanged from v1.36 to main), and
// user_agent_name with "envoy":
// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/server/server.cc (user_agent_build_version)
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/core/v3/base.proto#envoy-v3-api-field-config-core-v3-node-user-agent-build-version
//
// A node without a build version is therefore not a stock Envoy, and is refused too: the
// control plane cannot tell whether it implements the configuration, and serving a client
// that half-implements it is exactly the failure this check exists to prevent. A refusal is
// loud (an error log line per stream, a metric, and a gRPC status the client logs), so a
// custom client learns at once to report its version. The one exception is extproc's runtime
// client (user agent dataplane.RuntimeClientAgent): ccproxy's own code, released with the
// control plane, and it only reads the runtime ExtensionConfig.
func nodeRefusal(node *corev3.Node) (reason, reported string) {
	if node.GetUserAgentName() == dataplane.RuntimeClientAgent {
		return "", ""
	}
	v := node.GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return refusedNoVersion, node.GetUserAgentVersion()
	}
	reported = fmt.Sprintf("%d.%d.%d", v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch())
	if v.GetMajorNumber() < minEnvoyMajor || (v.GetMajorNumber() == minEnvoyMajor && v.GetMinorNumber() < minEnvoyMinor) {
		return refusedEnvoyVersion, reported
	}
	return "", reported
}

// singleNode maps every node to NodeKey.
type singleNode struct{}

// ID implements cache.NodeHash.
func (singleNode) ID(*corev3.Node) string { return NodeKey }

// Server is the ADS server: a go-control-plane snapshot cache holding the configuration built
// from Options, served over gRPC together with the individual discovery services and gRPC
// health.
type Server struct {
	logger  *slog.Logger
	cache   cache.SnapshotCache
	metrics *metrics

	mu      sync.Mutex // serialises Update; guards version
	version string

	streamsMu sync.Mutex
	streams   map[int64]*streamInfo // by go-control-plane stream id
}

// streamInfo is what the logs need about an open xDS stream.
type streamInfo struct {
	typ      string // "ads" or the resource type URL
	protocol string // "sotw" or "delta"
	node     string // node id, from the first request that carries it
	// admitted is set once the stream's node has been checked (nodeRefusal) and found
	// supported; a refused stream ends with its first request.
	admitted bool
}

// NewServer builds the configuration for opts and returns a server holding it. Metrics are
// registered on reg when it is not nil.
func NewServer(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics()
	if reg != nil {
		if err := m.register(reg); err != nil {
			return nil, fmt.Errorf("controlplane: register metrics: %w", err)
		}
	}
	s := &Server{
		logger:  logger,
		cache:   cache.NewSnapshotCache(true, singleNode{}, gcpLogger(logger)),
		metrics: m,
		streams: make(map[int64]*streamInfo),
	}
	if err := s.Update(context.Background(), opts); err != nil {
		return nil, err
	}
	return s, nil
}

// Update rebuilds the configuration from opts and pushes it to every connected data plane.
// Resource types whose content did not change keep their version and are not re-sent.
func (s *Server) Update(ctx context.Context, opts Options) error {
	r, err := BuildResources(opts)
	if err != nil {
		return err
	}
	snap, err := r.snapshot()
	if err != nil {
		return err
	}
	version := SnapshotVersion(snap)
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == s.version {
		return nil
	}
	if err := s.cache.SetSnapshot(ctx, NodeKey, snap); err != nil {
		return fmt.Errorf("controlplane: set snapshot: %w", err)
	}
	s.version = version
	s.metrics.snapshotInfo.Reset()
	s.metrics.snapshotInfo.WithLabelValues(version).Set(1)
	s.metrics.snapshotUpdates.Inc()
	s.logger.LogAttrs(ctx, slog.LevelInfo, "xds snapshot updated",
		slog.String("version", version),
		slog.String("clusters_version", snap.GetVersion(resource.ClusterType)),
		slog.String("listeners_version", snap.GetVersion(resource.ListenerType)),
		slog.String("routes_version", snap.GetVersion(resource.RouteType)),
		slog.String("extension_configs_version", snap.GetVersion(resource.ExtensionConfigType)))
	// Once per configuration installed: an unchanged configuration returned above.
	for _, w := range r.Warnings {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "xds configuration incomplete",
			slog.String("version", version), slog.String("warning", w))
	}
	return nil
}

// Version returns the version of the snapshot currently served (see SnapshotVersion).
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Serve serves ADS, the individual discovery services (CDS, EDS, LDS, RDS, SDS, RTDS, ECDS)
// and gRPC health in plaintext, to any client, on lis until ctx is cancelled, then stops and
// returns nil. It closes lis. Production uses ServeTLS; plaintext is for development, where
// everything runs on loopback (ccproxy dev), and must be asked for explicitly.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.logger.LogAttrs(ctx, slog.LevelWarn, "xds served in plaintext without client authentication (development only)")
	return s.serve(ctx, lis, "plaintext")
}

// ServeTLS is Serve over TLS: every client must present a certificate that tlsConfig accepts
// (tlsfiles.ServerConfig: a client certificate chaining to the configured CA bundle), or its
// connection fails in the handshake, before any xDS request.
func (s *Server) ServeTLS(ctx context.Context, lis net.Listener, tlsConfig *tls.Config) error {
	if tlsConfig == nil {
		return errors.New("controlplane: ServeTLS without a TLS configuration")
	}
	return s.serve(ctx, lis, "mutual TLS", grpc.Creds(credentials.NewTLS(tlsConfig)))
}

func (s *Server) serve(ctx context.Context, lis net.Listener, security string, opts ...grpc.ServerOption) error {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}, opts...)...)
	// The xDS server's stream loops end when ctx is cancelled, which lets GracefulStop finish.
	xds := serverv3.NewServer(ctx, s.cache, s.callbacks(), sotw.WithLogger(gcpLogger(s.logger)))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, xds)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, xds)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, xds)
	runtimeservice.RegisterRuntimeDiscoveryServiceServer(gs, xds)
	extensionservice.RegisterExtensionConfigDiscoveryServiceServer(gs, xds)
	hs := health.NewServer()
	hs.SetServingStatus(discoveryv3.AggregatedDiscoveryService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)

	s.logger.LogAttrs(ctx, slog.LevelInfo, "xds server listening", slog.String("addr", lis.Addr().String()), slog.String("security", security))
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("controlplane: serve: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(shutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		gs.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("controlplane: serve: %w", err)
	}
	s.logger.LogAttrs(context.Background(), slog.LevelInfo, "xds server stopped")
	return nil
}

// callbacks logs stream lifecycles and NACKs and keeps the stream metrics.
func (s *Server) callbacks() serverv3.Callbacks {
	open := func(protocol string) func(context.Context, int64, string) error {
		return func(ctx context.Context, id int64, typeURL string) error {
			typ := typeURL
			if typ == resource.AnyType {
				typ = "ads"
			}
			s.streamsMu.Lock()
			s.streams[id] = &streamInfo{typ: typ, protocol: protocol}
			s.streamsMu.Unlock()
			s.metrics.streams.WithLabelValues(typ, protocol).Inc()
			s.logger.LogAttrs(ctx, slog.LevelInfo, "xds stream opened",
				slog.Int64("stream_id", id), slog.String("type", typ), slog.String("protocol", protocol))
			return nil
		}
	}
	closed := func(id int64, node *corev3.Node) {
		s.streamsMu.Lock()
		info := s.streams[id]
		delete(s.streams, id)
		s.streamsMu.Unlock()
		if info == nil {
			return
		}
		s.metrics.streams.WithLabelValues(info.typ, info.protocol).Dec()
		nodeID := info.node
		if node.GetId() != "" {
			nodeID = node.GetId()
		}
		s.logger.LogAttrs(context.Background(), slog.LevelInfo, "xds stream closed",
			slog.Int64("stream_id", id), slog.String("type", info.typ),
			slog.String("protocol", info.protocol), slog.String("node", nodeID))
	}
	return serverv3.CallbackFuncs{
		StreamOpenFunc:        open("sotw"),
		StreamClosedFunc:      closed,
		DeltaStreamOpenFunc:   open("delta"),
		DeltaStreamClosedFunc: closed,
		// Returning an error from a request callback ends the stream with that error before
		// go-control-plane opens a watch for the request, so a refused node never receives a
		// resource (sotw: StreamHandler's loop in pkg/server/sotw/v3/ads.go and xds.go, which
		// fill in the stream's node before the callback; delta: pkg/server/delta/v3/server.go,
		// which calls it before filling the node in, hence admit remembers its verdict).
		// https://github.com/envoyproxy/go-control-plane/blob/v0.14.0/pkg/server/sotw/v3/ads.go
		// https://github.com/envoyproxy/go-control-plane/blob/v0.14.0/pkg/server/delta/v3/server.go
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if err := s.admit(id, req.GetNode()); err != nil {
				return err
			}
			s.onRequest(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetCode(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if err := s.admit(id, req.GetNode()); err != nil {
				return err
			}
			s.onRequest(id, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetCode(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
	}
}

// admit checks the node of stream id on its first request (nodeRefusal) and returns the error
// that ends the stream when the node is refused. Later requests of an admitted stream pass.
// Envoy reconnects a refused stream with its xDS back-off (0.5 s doubling to 30 s), so the
// log line and the metric repeat at most that often per Envoy.
func (s *Server) admit(id int64, node *corev3.Node) error {
	s.streamsMu.Lock()
	info := s.streams[id]
	if info != nil && info.admitted {
		s.streamsMu.Unlock()
		return nil
	}
	reason, reported := nodeRefusal(node)
	if reason == "" {
		if info != nil {
			info.admitted = true
		}
		s.streamsMu.Unlock()
		return nil
	}
	s.streamsMu.Unlock()
	s.metrics.refusedNodes.WithLabelValues(reason).Inc()
	s.logger.LogAttrs(context.Background(), slog.LevelError, "xds node refused: unsupported Envoy version, no configuration served",
		slog.Int64("stream_id", id), slog.String("node", node.GetId()),
		slog.String("user_agent", node.GetUserAgentName()),
		slog.String("reported_version", reported), slog.String("min_version", MinEnvoyVersion),
		slog.String("reason", reason))
	if reported == "" {
		reported = "no user_agent_build_version"
	}
	return status.Errorf(codes.FailedPrecondition, "%v: %q reports Envoy %s; ccproxy requires Envoy %s or later and serves this node no configuration",
		ErrNodeRefused, node.GetId(), reported, MinEnvoyVersion)
}

// onRequest records the stream's node and logs ACKs (debug) and NACKs (error).
func (s *Server) onRequest(id int64, node *corev3.Node, typeURL, version, nonce string, code int32, detail string, nack bool) {
	s.streamsMu.Lock()
	info := s.streams[id]
	nodeID := ""
	if info != nil {
		if info.node == "" && node.GetId() != "" {
			info.node = node.GetId()
		}
		nodeID = info.node
	}
	s.streamsMu.Unlock()
	attrs := []slog.Attr{
		slog.Int64("stream_id", id), slog.String("node", nodeID), slog.String("type_url", typeURL),
		slog.String("version", version), slog.String("nonce", nonce),
	}
	switch {
	case nack:
		s.metrics.nacks.WithLabelValues(typeURL).Inc()
		attrs = append(attrs, slog.Int("code", int(code)), slog.String("error_detail", detail))
		s.logger.LogAttrs(context.Background(), slog.LevelError, "xds NACK", attrs...)
	case nonce != "":
		s.logger.LogAttrs(context.Background(), slog.LevelDebug, "xds ACK", attrs...)
	default:
		s.logger.LogAttrs(context.Background(), slog.LevelDebug, "xds request", attrs...)
	}
}

// gcpLogger routes go-control-plane's own logging to slog. Its info messages are per-request
// chatter, so they go to debug. Its lines are marked with the library they come from: l names
// the component already, and a second "component" attribute would not replace the first.
func gcpLogger(l *slog.Logger) log.Logger {
	logf := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			if l.Enabled(context.Background(), level) {
				l.LogAttrs(context.Background(), level, fmt.Sprintf(format, args...), slog.String("library", "go-control-plane"))
			}
		}
	}
	return log.LoggerFuncs{
		DebugFunc: logf(slog.LevelDebug),
		InfoFunc:  logf(slog.LevelDebug),
		WarnFunc:  logf(slog.LevelWarn),
		ErrorFunc: logf(slog.LevelError),
	}
}

// metrics are the control plane's Prometheus metrics.
type metrics struct {
	snapshotInfo    *prometheus.GaugeVec
	snapshotUpdates prometheus.Counter
	streams         *prometheus.GaugeVec
	nacks           *prometheus.CounterVec
	refusedNodes    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		snapshotInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ccproxy", Subsystem: "controlplane", Name: "snapshot_info",
			Help: "Always 1, labelled with the version of the xDS snapshot being served.",
		}, []string{"version"}),
		snapshotUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ccproxy", Subsystem: "controlplane", Name: "snapshot_updates_total",
			Help: "xDS snapshots installed (changed configurations only).",
		}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ccproxy", Subsystem: "controlplane", Name: "xds_streams",
			Help: "Open xDS streams by type (ads or a resource type URL) and protocol (sotw, delta).",
		}, []string{"type", "protocol"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccproxy", Subsystem: "controlplane", Name: "xds_nacks_total",
			Help: "xDS responses rejected by a data plane, by resource type URL.",
		}, []string{"type_url"}),
		refusedNodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccproxy", Subsystem: "controlplane", Name: "refused_nodes_total",
			Help: "xDS streams ended without configuration because the node is not a supported Envoy, by reason (envoy_version: older than " + MinEnvoyVersion + "; no_version: no user_agent_build_version).",
		}, []string{"reason"}),
	}
	// Both series exist from the start, so an alert on their increase works before the first.
	for _, r := range []string{refusedEnvoyVersion, refusedNoVersion} {
		m.refusedNodes.WithLabelValues(r)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.snapshotInfo, m.snapshotUpdates, m.streams, m.nacks, m.refusedNodes} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
