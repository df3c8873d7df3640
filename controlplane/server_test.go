package controlplane

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// metricValue reads a gauge or counter.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetGauge().GetValue() + out.GetCounter().GetValue()
}

// seriesCount counts the series a collector exports.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	n := 0
	for range ch {
		n++
	}
	return n
}

// eventually waits for cond, which depends on the server's own goroutines (stream callbacks).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startServer runs a Server on a loopback port and returns a client connection to it.
func startServer(t *testing.T, opts Options, logs *syncBuffer, reg prometheus.Registerer) (*Server, *grpc.ClientConn) {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(opts, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	})
	return srv, conn
}

func TestADS(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	srv, conn := startServer(t, productionOptions, logs, reg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("health", func(t *testing.T) {
		for _, svc := range []string{"", discoveryv3.AggregatedDiscoveryService_ServiceDesc.ServiceName} {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("health %q: %v", svc, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health %q = %v, want SERVING", svc, resp.GetStatus())
			}
		}
	})

	streamCtx, closeStream := context.WithCancel(ctx)
	defer closeStream()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(streamCtx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode("envoy-test-1", 1, 40, 0)
	first := true
	send := func(req *discoveryv3.DiscoveryRequest) {
		t.Helper()
		if first {
			req.Node = node // like Envoy with set_node_on_first_message_only
			first = false
		}
		if err := ads.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(typeURL string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp, err := ads.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != typeURL {
			t.Fatalf("response type = %s, want %s", resp.GetTypeUrl(), typeURL)
		}
		return resp
	}
	ack := func(resp *discoveryv3.DiscoveryResponse, names ...string) {
		t.Helper()
		send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names})
	}
	want, err := BuildResources(productionOptions)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's order: CDS, then LDS, then RDS for the name the listener references.
	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := recv(resource.ClusterType)
	ack(cds)
	checkResources(t, cds, toMessages(want.Clusters), func() proto.Message { return &clusterv3.Cluster{} })

	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := recv(resource.ListenerType)
	ack(lds)
	checkResources(t, lds, toMessages(want.Listeners), func() proto.Message { return &listenerv3.Listener{} })

	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{RouteConfigName}})
	rds := recv(resource.RouteType)
	ack(rds, RouteConfigName)
	checkResources(t, rds, toMessages(want.Routes), func() proto.Message { return &routev3.RouteConfiguration{} })

	if got := metricValue(t, srv.metrics.streams.WithLabelValues("ads", "sotw")); got != 1 {
		t.Errorf("xds_streams{ads,sotw} = %v, want 1", got)
	}

	t.Run("Update pushes the changed cluster", func(t *testing.T) {
		before := srv.Version()
		moved := productionOptions
		moved.AnthropicURL = "http://127.0.0.1:18081"
		if err := srv.Update(ctx, moved); err != nil {
			t.Fatal(err)
		}
		if srv.Version() == before {
			t.Fatal("version did not change")
		}
		pushed := recv(resource.ClusterType)
		if pushed.GetVersionInfo() == cds.GetVersionInfo() {
			t.Errorf("pushed version %s equals the previous one", pushed.GetVersionInfo())
		}
		ack(pushed)
		wantMoved, err := BuildResources(moved)
		if err != nil {
			t.Fatal(err)
		}
		checkResources(t, pushed, toMessages(wantMoved.Clusters), func() proto.Message { return &clusterv3.Cluster{} })
		cds = pushed

		// Same options again: nothing to push, no new version.
		if err := srv.Update(ctx, moved); err != nil {
			t.Fatal(err)
		}
		if got := metricValue(t, srv.metrics.snapshotUpdates); got != 2 {
			t.Errorf("snapshot_updates_total = %v, want 2", got)
		}
		if got := metricValue(t, srv.metrics.snapshotInfo.WithLabelValues(srv.Version())); got != 1 {
			t.Errorf("snapshot_info{version=%s} = %v, want 1", srv.Version(), got)
		}
		if n := seriesCount(srv.metrics.snapshotInfo); n != 1 {
			t.Errorf("snapshot_info has %d series, want 1", n)
		}
	})

	t.Run("NACK is counted and logged with its error detail", func(t *testing.T) {
		send(&discoveryv3.DiscoveryRequest{
			TypeUrl:       resource.ClusterType,
			VersionInfo:   "previous",
			ResponseNonce: cds.GetNonce(),
			ErrorDetail:   &status.Status{Code: 3, Message: "cluster plan: test rejection"},
		})
		eventually(t, "the NACK metric", func() bool {
			return metricValue(t, srv.metrics.nacks.WithLabelValues(resource.ClusterType)) == 1
		})
		out := logs.String()
		for _, s := range []string{`"msg":"xds NACK"`, `"level":"ERROR"`, `"error_detail":"cluster plan: test rejection"`, `"node":"envoy-test-1"`} {
			if !strings.Contains(out, s) {
				t.Errorf("log lacks %s:\n%s", s, out)
			}
		}
	})

	t.Run("individual CDS service", func(t *testing.T) {
		cdsStream, err := clusterservice.NewClusterDiscoveryServiceClient(conn).StreamClusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := cdsStream.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("other-node", 1, 37, 0), TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
		resp, err := cdsStream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		// Every node shares the one snapshot.
		if resp.GetVersionInfo() != cds.GetVersionInfo() {
			t.Errorf("other node got version %s, want %s", resp.GetVersionInfo(), cds.GetVersionInfo())
		}
		if err := cdsStream.CloseSend(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("stream close is logged and uncounted", func(t *testing.T) {
		closeStream()
		eventually(t, "the ADS stream to close", func() bool {
			return metricValue(t, srv.metrics.streams.WithLabelValues("ads", "sotw")) == 0
		})
		out := logs.String()
		if !strings.Contains(out, `"msg":"xds stream closed"`) || !strings.Contains(out, `"type":"ads"`) {
			t.Errorf("log lacks the ADS stream close:\n%s", out)
		}
	})
}

// checkResources decodes resp's resources and compares them with want, in any order.
func checkResources(t *testing.T, resp *discoveryv3.DiscoveryResponse, want []proto.Message, newMsg func() proto.Message) {
	t.Helper()
	if len(resp.GetResources()) != len(want) {
		t.Fatalf("%s: got %d resources, want %d", resp.GetTypeUrl(), len(resp.GetResources()), len(want))
	}
	for _, a := range resp.GetResources() {
		m := newMsg()
		if err := a.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, w := range want {
			if proto.Equal(m, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: unexpected resource %v", resp.GetTypeUrl(), m)
		}
	}
}

func TestNewServerErrors(t *testing.T) {
	if _, err := NewServer(Options{}, nil, nil); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("invalid options: err = %v, want ErrInvalidOptions", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := NewServer(productionOptions, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(productionOptions, nil, reg); err == nil {
		t.Error("registering the metrics twice on one registry succeeded")
	}
	srv, err := NewServer(productionOptions, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := srv.Version()
	if err := srv.Update(context.Background(), Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Update with invalid options: err = %v", err)
	}
	if srv.Version() != v {
		t.Error("a failed Update changed the served version")
	}
}

func TestServeListenerError(t *testing.T) {
	srv, err := NewServer(productionOptions, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
	if err := srv.Serve(context.Background(), lis); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}
