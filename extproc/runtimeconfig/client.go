package runtimeconfig

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ccproxy/ccproxy/internal/dataplane"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// ResourceName is the name of the TypedExtensionConfig holding the
// BedrockConfig in the control plane's snapshot.
const ResourceName = "ccproxy.bedrock"

// NodeCluster is the xDS node cluster and user agent extproc identifies
// itself with; the control plane recognises its own runtime client by it.
const NodeCluster = dataplane.RuntimeClientAgent

const (
	defaultMinBackoff = 200 * time.Millisecond
	defaultMaxBackoff = 5 * time.Second
	// Matches Envoy's bootstrap for the xds cluster: the ADS stream is
	// silent between pushes, pings detect a dead connection. The control
	// plane accepts pings every 10 s or more.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 5 * time.Second
)

// DefaultNodeID returns "ccproxy-extproc-<hostname>".
func DefaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return NodeCluster + "-" + host
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the control plane's ADS address, host:port. Required.
	Addr string
	// TLS authenticates the connection (mutual TLS, as Envoy's bootstrap
	// does: tlsfiles.ClientConfig); nil connects in plaintext, which the
	// control plane accepts only when it serves plaintext (development).
	TLS *tls.Config
	// NodeID identifies this extproc to the control plane; "" means
	// DefaultNodeID().
	NodeID string
	// Logger receives state transitions; nil discards them. The caller
	// names the component (cmd/ccproxy adds component=runtimeconfig).
	Logger *slog.Logger
	// Registerer receives the client's metrics; nil keeps them in a private
	// registry.
	Registerer prometheus.Registerer
}

// Client subscribes to the runtime configuration over ADS (state of the
// world) and keeps the last accepted Config. It implements Source.
type Client struct {
	logger  *slog.Logger
	node    *corev3.Node
	conn    *grpc.ClientConn
	metrics *clientMetrics

	minBackoff, maxBackoff time.Duration

	// Owned by the Run goroutine: the last version rejected and the delay
	// before NACKing it again.
	rejectedVersion string
	nackDelay       time.Duration

	current   atomic.Pointer[Config]
	ready     chan struct{}
	readyOnce sync.Once
	ran       atomic.Bool
}

// NewClient returns a Client for cfg. It does no I/O; Run connects.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Addr == "" {
		return nil, errors.New("runtimeconfig: empty control plane address")
	}
	if cfg.NodeID == "" {
		cfg.NodeID = DefaultNodeID()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m := newClientMetrics()
	if err := m.register(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("runtimeconfig: register metrics: %w", err)
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	conn, err := grpc.NewClient(cfg.Addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		// gRPC's default reconnect backoff grows to 120 s; the config must
		// come back within seconds of the control plane.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: defaultMinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: defaultMaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("runtimeconfig: control plane client for %q: %w", cfg.Addr, err)
	}
	return &Client{
		logger:     cfg.Logger,
		node:       &corev3.Node{Id: cfg.NodeID, Cluster: NodeCluster, UserAgentName: NodeCluster},
		conn:       conn,
		metrics:    m,
		minBackoff: defaultMinBackoff,
		maxBackoff: defaultMaxBackoff,
		ready:      make(chan struct{}),
	}, nil
}

// Current returns the last accepted Config, or nil before the first.
func (c *Client) Current() *Config { return c.current.Load() }

// Ready is closed when the first Config has been accepted.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Run keeps an ADS stream to the control plane open, reconnecting with
// exponential backoff, until ctx is done; then it closes the connection
// and returns nil. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("runtimeconfig: Client.Run called twice")
	}
	defer c.conn.Close()
	// Logging is by transition, so that a control plane down for hours
	// costs a few lines: the first attempt and the first response after
	// an outage at info, the end of a working stream and the first failed
	// attempt after it at warn, the retries in between at debug.
	c.logger.LogAttrs(ctx, slog.LevelInfo, "connecting to control plane", slog.String("node", c.node.GetId()))
	delay := c.minBackoff
	failures := 0 // consecutive streams that ended without a response
	for ctx.Err() == nil {
		got, err := c.stream(ctx, failures)
		c.metrics.connected.Set(0)
		if ctx.Err() != nil {
			break
		}
		if got {
			delay, failures = c.minBackoff, 0
		}
		failures++
		level := slog.LevelDebug
		if failures == 1 {
			level = slog.LevelWarn
		}
		c.logger.LogAttrs(ctx, level, "control plane stream ended; reconnecting",
			slog.String("error", err.Error()), slog.Duration("retry_in", delay), slog.Int("attempt", failures))
		t := time.NewTimer(jitter(delay))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		delay = min(2*delay, c.maxBackoff)
	}
	c.logger.LogAttrs(context.Background(), slog.LevelInfo, "runtime config client stopped")
	return nil
}

// jitter spreads d over [0.8d, 1.2d) so that a fleet does not reconnect in
// lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// stream runs one ADS stream until it fails. got reports whether the
// control plane answered at least once. failures is the number of streams
// that failed before this one without an answer.
func (c *Client) stream(ctx context.Context, failures int) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn)
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	// As Envoy does, the first request of a stream carries the version
	// already held, so the control plane need not resend an unchanged one.
	version := ""
	if cur := c.current.Load(); cur != nil {
		version = cur.version
	}
	if err := st.Send(c.request(version, "", nil)); err != nil {
		return false, fmt.Errorf("send ADS request: %w", err)
	}
	c.metrics.connected.Set(1)
	c.logger.LogAttrs(ctx, slog.LevelDebug, "control plane stream open", slog.String("held_version", version))
	for {
		resp, err := st.Recv()
		if err != nil {
			return got, fmt.Errorf("receive ADS response: %w", err)
		}
		if !got {
			got = true
			c.logger.LogAttrs(ctx, slog.LevelInfo, "control plane stream established",
				slog.String("held_version", version), slog.Int("failed_attempts", failures))
		}
		req, wait := c.handle(ctx, resp)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return got, ctx.Err()
			case <-t.C:
			}
		}
		if err := st.Send(req); err != nil {
			return got, fmt.Errorf("send ADS ACK/NACK: %w", err)
		}
	}
}

// request builds a DiscoveryRequest for the subscription.
func (c *Client) request(version, nonce string, nack *statuspb.Status) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          c.node,
		ResourceNames: []string{ResourceName},
		TypeUrl:       resource.ExtensionConfigType,
		ResponseNonce: nonce,
		ErrorDetail:   nack,
	}
}

// handle applies a response and returns the ACK or NACK to send, and how
// long to hold it back.
//
// go-control-plane's snapshot cache answers a NACK (which carries the last
// version accepted, not the rejected one) by resending the rejected version
// at once, until the snapshot changes. So a rejected version that comes
// back is NACKed after a growing delay (capped at the reconnect backoff),
// and logged and counted only the first time.
func (c *Client) handle(ctx context.Context, resp *discoveryv3.DiscoveryResponse) (*discoveryv3.DiscoveryRequest, time.Duration) {
	cfg, err := decode(resp)
	prev := c.current.Load()
	if err != nil {
		var wait time.Duration
		if resp.GetVersionInfo() == c.rejectedVersion {
			if c.nackDelay == 0 {
				c.nackDelay = c.minBackoff
			} else {
				c.nackDelay = min(2*c.nackDelay, c.maxBackoff)
			}
			wait = c.nackDelay
			c.logger.LogAttrs(ctx, slog.LevelDebug, "runtime config rejected again (NACK)",
				slog.String("version", resp.GetVersionInfo()), slog.Duration("nack_delay", wait))
		} else {
			c.rejectedVersion, c.nackDelay = resp.GetVersionInfo(), 0
			c.metrics.rejected.Inc()
			c.logger.LogAttrs(ctx, slog.LevelError, "runtime config rejected (NACK); keeping the previous one",
				slog.String("version", resp.GetVersionInfo()), slog.String("held_version", prev.Version()),
				slog.String("error", err.Error()))
		}
		// A NACK carries the last version accepted.
		return c.request(prev.Version(), resp.GetNonce(), &statuspb.Status{
			Code:    int32(codes.InvalidArgument),
			Message: err.Error(),
		}), wait
	}
	c.rejectedVersion, c.nackDelay = "", 0
	cfg.version = resp.GetVersionInfo()
	c.current.Store(cfg)
	c.readyOnce.Do(func() { close(c.ready) })
	if prev == nil || prev.version != cfg.version {
		c.metrics.updates.Inc()
		c.metrics.info.Reset()
		c.metrics.info.WithLabelValues(cfg.version).Set(1)
		beta, field := cfg.Translator.Versions()
		c.logger.LogAttrs(ctx, slog.LevelInfo, "runtime config accepted",
			slog.String("version", cfg.version), slog.String("previous_version", prev.Version()),
			slog.Int("models", len(cfg.models)), slog.Int("regions", len(cfg.regions)),
			slog.String("beta_table", beta), slog.String("field_table", field),
			slog.Bool("profile_rule_fallback", cfg.fallback), slog.Int("price_rows", cfg.prices.Len()))
	}
	return c.request(cfg.version, resp.GetNonce(), nil), 0
}

// decode finds ResourceName in resp and builds its Config.
func decode(resp *discoveryv3.DiscoveryResponse) (*Config, error) {
	if resp.GetTypeUrl() != resource.ExtensionConfigType {
		return nil, fmt.Errorf("unexpected type_url %q", resp.GetTypeUrl())
	}
	for _, res := range resp.GetResources() {
		tec, err := unwrap(res)
		if err != nil {
			return nil, err
		}
		if tec.GetName() != ResourceName {
			continue
		}
		var pb runtimev1.BedrockConfig
		if err := tec.GetTypedConfig().UnmarshalTo(&pb); err != nil {
			return nil, fmt.Errorf("%s: typed_config (%s): %w", ResourceName, tec.GetTypedConfig().GetTypeUrl(), err)
		}
		return FromProto(&pb)
	}
	return nil, fmt.Errorf("response holds no resource named %q", ResourceName)
}

const resourceWrapperType = resource.APITypePrefix + "envoy.service.discovery.v3.Resource"

// unwrap decodes one resource of a response: a TypedExtensionConfig, or one
// wrapped in a discovery Resource (as servers do for TTLs).
func unwrap(a *anypb.Any) (*corev3.TypedExtensionConfig, error) {
	if a.GetTypeUrl() == resourceWrapperType {
		var r discoveryv3.Resource
		if err := a.UnmarshalTo(&r); err != nil {
			return nil, fmt.Errorf("decode resource wrapper: %w", err)
		}
		a = r.GetResource()
	}
	var tec corev3.TypedExtensionConfig
	if err := a.UnmarshalTo(&tec); err != nil {
		return nil, fmt.Errorf("decode resource (%s): %w", a.GetTypeUrl(), err)
	}
	return &tec, nil
}

// clientMetrics are the client's Prometheus metrics.
type clientMetrics struct {
	info      *prometheus.GaugeVec
	updates   prometheus.Counter
	rejected  prometheus.Counter
	connected prometheus.Gauge
}

func newClientMetrics() *clientMetrics {
	return &clientMetrics{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ccproxy_extproc_runtime_config_info",
			Help: "Always 1, labelled with the xDS version of the runtime config in force.",
		}, []string{"version"}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_extproc_runtime_config_updates_total",
			Help: "Runtime config versions accepted from the control plane.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_extproc_runtime_config_rejected_total",
			Help: "Runtime config responses rejected (NACKed); the previous config stays in force.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccproxy_extproc_runtime_config_connected",
			Help: "1 while an ADS stream to the control plane is open.",
		}),
	}
}

func (m *clientMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.info, m.updates, m.rejected, m.connected} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
