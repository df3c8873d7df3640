package runtimeconfig

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

const (
	testNode = "ccproxy-extproc-test"
	waitFor  = 15 * time.Second
)

// xdsServer is a real go-control-plane ADS server on loopback, recording
// every DiscoveryRequest it receives.
type xdsServer struct {
	cache  cache.SnapshotCache
	addr   string
	gs     *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	reqs []*discoveryv3.DiscoveryRequest
	at   []time.Time // when each of reqs arrived
}

// startXDS serves cache on addr ("127.0.0.1:0" for a fresh port).
func startXDS(t *testing.T, addr string, c cache.SnapshotCache) *xdsServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &xdsServer{cache: c, addr: lis.Addr().String(), gs: grpc.NewServer(), cancel: cancel, done: make(chan struct{})}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			s.reqs = append(s.reqs, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
			return nil
		},
	}
	xds := serverv3.NewServer(ctx, c, cb, sotw.WithLogger(log.LoggerFuncs{}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.gs, xds)
	go func() {
		defer close(s.done)
		_ = s.gs.Serve(lis)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop kills the server and its connections (idempotent).
func (s *xdsServer) stop() {
	s.cancel()
	s.gs.Stop()
	<-s.done
}

// waitRequest polls until the server has received a request matching ok.
func (s *xdsServer) waitRequest(t *testing.T, what string, ok func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var found *discoveryv3.DiscoveryRequest
	eventually(t, what, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, r := range s.reqs {
			if ok(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// matching returns the arrival times of the requests matching ok.
func (s *xdsServer) matching(ok func(*discoveryv3.DiscoveryRequest) bool) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var at []time.Time
	for i, r := range s.reqs {
		if ok(r) {
			at = append(at, s.at[i])
		}
	}
	return at
}

func (s *xdsServer) requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), s.reqs...)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newCache() cache.SnapshotCache {
	return cache.NewSnapshotCache(true, cache.IDHash{}, log.LoggerFuncs{})
}

// setConfig installs a snapshot whose ccproxy.bedrock resource wraps msg.
func setConfig(t *testing.T, c cache.SnapshotCache, version string, msg proto.Message) {
	t.Helper()
	a, err := anypb.New(msg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ExtensionConfigType: {&corev3.TypedExtensionConfig{Name: ResourceName, TypedConfig: a}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects the client's log output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

// runClient starts a client against addr and stops it at cleanup.
func runClient(t *testing.T, addr string) (*Client, *prometheus.Registry) {
	c, reg, _ := runClientLogs(t, addr)
	return c, reg
}

func runClientLogs(t *testing.T, addr string) (*Client, *prometheus.Registry, *logBuffer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	c, err := NewClient(ClientConfig{
		Addr: addr, NodeID: testNode, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.minBackoff, c.maxBackoff = 10*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
	})
	return c, reg, logs
}

func waitReady(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for the first config")
	}
}

func waitVersion(t *testing.T, c *Client, version string) *Config {
	t.Helper()
	eventually(t, "config version "+version, func() bool { return c.Current().Version() == version })
	return c.Current()
}

func isACK(version string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == version && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
	}
}

func isNACK(substr string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetErrorDetail() != nil && r.GetResponseNonce() != "" && strings.Contains(r.GetErrorDetail().GetMessage(), substr)
	}
}

func TestClient(t *testing.T) {
	c1 := newCache()
	v1 := &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{sonnetRow()}, Regions: []string{"us-east-1"}}
	setConfig(t, c1, "1", v1)
	srv := startXDS(t, "127.0.0.1:0", c1)
	client, reg := runClient(t, srv.addr)

	// The first config arrives, and is ACKed.
	waitReady(t, client)
	cfg := waitVersion(t, client, "1")
	if m, err := cfg.ResolveModel("claude-sonnet-4-5", "us-east-1"); err != nil || m.InvokeID != sonnetUS {
		t.Fatalf("v1 ResolveModel = %+v, %v", m, err)
	}
	if _, err := cfg.ResolveModel(opusID, "us-east-1"); !errors.Is(err, ErrUnmappable) {
		t.Fatalf("v1 knows %s: %v", opusID, err)
	}
	srv.waitRequest(t, "ACK of version 1", isACK("1"))
	first := srv.requests()[0]
	if first.GetNode().GetId() != testNode || first.GetNode().GetCluster() != NodeCluster ||
		first.GetTypeUrl() != resource.ExtensionConfigType ||
		len(first.GetResourceNames()) != 1 || first.GetResourceNames()[0] != ResourceName ||
		first.GetVersionInfo() != "" || first.GetResponseNonce() != "" {
		t.Fatalf("initial request = %v", first)
	}
	if got := testutil.ToFloat64(client.metrics.connected); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}

	// An update arrives.
	setConfig(t, c1, "2", testProto(true))
	cfg = waitVersion(t, client, "2")
	if m, err := cfg.ResolveModel(opusID, "eu-west-1"); err != nil || m.InvokeID != "global.anthropic.claude-opus-5-5" {
		t.Fatalf("v2 ResolveModel = %+v, %v", m, err)
	}
	srv.waitRequest(t, "ACK of version 2", isACK("2"))

	// An invalid config is NACKed, carrying the version still held, and
	// the previous config stays.
	bad := testProto(true)
	bad.Models[1].Aliases = []string{"claude-sonnet-4-5"}
	setConfig(t, c1, "3", bad)
	nack := srv.waitRequest(t, "NACK of version 3", isNACK(`name "claude-sonnet-4-5" is already used`))
	if nack.GetVersionInfo() != "2" {
		t.Errorf("NACK version_info = %q, want the held version 2", nack.GetVersionInfo())
	}
	if client.Current() != cfg {
		t.Fatalf("config changed after a NACK: version %q", client.Current().Version())
	}
	// The cache resends a NACKed version at once; the client holds its
	// repeated NACKs back (10 ms, then 20 ms, … in this test).
	var nacks []time.Time
	eventually(t, "three NACKs of version 3", func() bool {
		nacks = srv.matching(isNACK(`name "claude-sonnet-4-5" is already used`))
		return len(nacks) >= 3
	})
	if gap := nacks[2].Sub(nacks[1]); gap < 2*client.minBackoff {
		t.Errorf("second repeated NACK %v after the first, want at least %v", gap, 2*client.minBackoff)
	}

	// So is a typed_config of the wrong type.
	setConfig(t, c1, "4", &runtimev1.BetaTable{Version: "x"})
	srv.waitRequest(t, "NACK of version 4", isNACK("typed_config"))
	if client.Current() != cfg {
		t.Fatalf("config changed after a NACK: version %q", client.Current().Version())
	}
	if got := testutil.ToFloat64(client.metrics.rejected); got != 2 {
		t.Errorf("rejected = %v, want 2", got)
	}

	// The control plane restarts (fresh cache, new version): the client
	// reconnects, announcing the version it holds, and gets the config.
	srv.stop()
	eventually(t, "connected gauge to drop", func() bool { return testutil.ToFloat64(client.metrics.connected) == 0 })
	if client.Current() != cfg {
		t.Fatal("config lost while disconnected")
	}
	c2 := newCache()
	setConfig(t, c2, "5", testProto(false))
	srv2 := startXDS(t, srv.addr, c2)
	cfg = waitVersion(t, client, "5")
	if cfg.ProfileRuleFallback() {
		t.Error("v5 has the fallback on")
	}
	srv2.waitRequest(t, "ACK of version 5", isACK("5"))
	if first := srv2.requests()[0]; first.GetVersionInfo() != "2" || first.GetResponseNonce() != "" {
		t.Errorf("first request after reconnect: version %q nonce %q, want version 2 and no nonce",
			first.GetVersionInfo(), first.GetResponseNonce())
	}
	eventually(t, "connected gauge", func() bool { return testutil.ToFloat64(client.metrics.connected) == 1 })

	// Metrics: three accepted versions, the info gauge on the latest.
	if got := testutil.ToFloat64(client.metrics.updates); got != 3 {
		t.Errorf("updates = %v, want 3", got)
	}
	const wantInfo = `
# HELP ccproxy_extproc_runtime_config_info Always 1, labelled with the xDS version of the runtime config in force.
# TYPE ccproxy_extproc_runtime_config_info gauge
ccproxy_extproc_runtime_config_info{version="5"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantInfo), "ccproxy_extproc_runtime_config_info"); err != nil {
		t.Error(err)
	}
}

// TestClientFirstConfigInvalid: nothing is published until a good config
// arrives.
func TestClientFirstConfigInvalid(t *testing.T) {
	c := newCache()
	bad := testProto(false)
	bad.Regions = []string{"nowhere"}
	setConfig(t, c, "1", bad)
	srv := startXDS(t, "127.0.0.1:0", c)
	client, _ := runClient(t, srv.addr)

	nack := srv.waitRequest(t, "NACK of version 1", isNACK(`invalid region "nowhere"`))
	if nack.GetVersionInfo() != "" {
		t.Errorf("NACK version_info = %q, want empty (nothing accepted yet)", nack.GetVersionInfo())
	}
	select {
	case <-client.Ready():
		t.Fatal("Ready closed without a good config")
	default:
	}
	if client.Current() != nil {
		t.Fatal("Current() is not nil after a rejected first config")
	}

	setConfig(t, c, "2", testProto(false))
	waitReady(t, client)
	if v := client.Current().Version(); v != "2" {
		t.Fatalf("version = %q, want 2", v)
	}
}

// TestClientServerDownAtStart: the client keeps retrying until the control
// plane comes up.
func TestClientServerDownAtStart(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens yet

	client, _, logs := runClientLogs(t, addr)
	c := newCache()
	setConfig(t, c, "1", testProto(false))
	eventually(t, "three failed connection attempts", func() bool {
		return logs.count("control plane stream ended") >= 3
	})
	if client.Current() != nil || testutil.ToFloat64(client.metrics.connected) != 0 {
		t.Fatal("client has a config or a connection with no control plane")
	}
	// Only the first failure is logged above debug.
	if n := logs.count("level=WARN"); n != 1 {
		t.Errorf("%d warnings for one outage, want 1", n)
	}
	startXDS(t, addr, c)
	waitReady(t, client)
	if v := client.Current().Version(); v != "1" {
		t.Fatalf("version = %q, want 1", v)
	}
}

func TestNewClientErrors(t *testing.T) {
	if _, err := NewClient(ClientConfig{}); err == nil {
		t.Error("NewClient without an address succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewClient(ClientConfig{Addr: "127.0.0.1:1", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(ClientConfig{Addr: "127.0.0.1:1", Registerer: reg}); err == nil {
		t.Error("second client on the same registry succeeded")
	}
}

func TestRunTwice(t *testing.T) {
	c, err := NewClient(ClientConfig{Addr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
	if err := c.Run(ctx); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestDefaultNodeID(t *testing.T) {
	if id := DefaultNodeID(); !strings.HasPrefix(id, "ccproxy-extproc-") || len(id) == len("ccproxy-extproc-") {
		t.Fatalf("DefaultNodeID() = %q", id)
	}
}

func TestSources(t *testing.T) {
	cfg := mustConfig(t, testProto(false))
	var _ Source = (*Client)(nil)
	var s Source = StaticSource{Config: cfg}
	if s.Current() != cfg {
		t.Fatal("StaticSource.Current() is not its Config")
	}
}
