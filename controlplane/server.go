package controlplane

import (
	"context"
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
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
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
// and gRPC health on lis until ctx is cancelled, then stops and returns nil. It closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	)
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

	s.logger.LogAttrs(ctx, slog.LevelInfo, "xds server listening", slog.String("addr", lis.Addr().String()))
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
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			s.onRequest(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetCode(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			s.onRequest(id, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetCode(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
	}
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
}

func newMetrics() *metrics {
	return &metrics{
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
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.snapshotInfo, m.snapshotUpdates, m.streams, m.nacks} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
