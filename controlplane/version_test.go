package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// envoyNode is the node a stock Envoy of version major.minor.patch sends (server.cc fills
// user_agent_name and user_agent_build_version).
func envoyNode(id string, major, minor, patch uint32) *corev3.Node {
	return &corev3.Node{
		Id: id, Cluster: "ccproxy-gateway", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor, Patch: patch},
		}},
	}
}

// logLines decodes the JSON log lines whose msg is msg.
func logLines(t *testing.T, logs string, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

const refusedMsg = "xds node refused: unsupported Envoy version, no configuration served"

// TestNodeVersion: an Envoy older than 1.37 (or a node reporting no version) gets no
// configuration at all — its stream ends with FAILED_PRECONDITION before any response — with
// one error log line naming the node, the version it reported and the minimum, and one
// increment of ccproxy_controlplane_refused_nodes_total{reason}; supported Envoys and
// extproc's runtime client are served.
func TestNodeVersion(t *testing.T) {
	noVersion := &corev3.Node{Id: "custom-1", UserAgentName: "envoy"}
	legacyString := &corev3.Node{Id: "custom-2", UserAgentName: "my-proxy", UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "1.40.0"}}
	tests := []struct {
		name     string
		node     *corev3.Node
		delta    bool
		reason   string // "" = served
		reported string // in the log line
	}{
		{"1.36.9 refused", envoyNode("envoy-old", 1, 36, 9), false, "envoy_version", "1.36.9"},
		{"0.99.0 refused", envoyNode("envoy-ancient", 0, 99, 0), false, "envoy_version", "0.99.0"},
		{"1.36.0 refused on a delta stream", envoyNode("envoy-old-delta", 1, 36, 0), true, "envoy_version", "1.36.0"},
		{"no build version refused", noVersion, false, "no_version", ""},
		{"only the deprecated version string refused", legacyString, false, "no_version", "1.40.0"},
		{"no node refused", nil, false, "no_version", ""},
		{"1.37.0 served", envoyNode("envoy-137", 1, 37, 0), false, "", ""},
		{"1.40.0 served", envoyNode("envoy-140", 1, 40, 0), false, "", ""},
		{"1.40.0 served on a delta stream", envoyNode("envoy-140-delta", 1, 40, 0), true, "", ""},
		{"2.0.0 served", envoyNode("envoy-2", 2, 0, 0), false, "", ""},
		{"extproc's runtime client served", &corev3.Node{Id: "extproc-1", Cluster: dataplane.RuntimeClientAgent, UserAgentName: dataplane.RuntimeClientAgent}, false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			logs := &syncBuffer{}
			srv, conn := startServer(t, productionOptions, logs, reg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := firstClusters(ctx, conn, tc.node, tc.delta)
			refused := logLines(t, logs.String(), refusedMsg)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("supported node: %v", err)
				}
				if len(resp) != 2 {
					t.Errorf("got %d clusters, want the production configuration's 2", len(resp))
				}
				if len(refused) != 0 {
					t.Errorf("refusal logged for a supported node: %v", refused)
				}
				for _, r := range []string{"envoy_version", "no_version"} {
					if got := metricValue(t, srv.metrics.refusedNodes.WithLabelValues(r)); got != 0 {
						t.Errorf("refused_nodes_total{reason=%s} = %v, want 0", r, got)
					}
				}
				return
			}
			if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition {
				t.Fatalf("refused node: err = %v (%d resources), want FailedPrecondition", err, len(resp))
			}
			if !strings.Contains(err.Error(), "requires Envoy 1.37.0 or later") {
				t.Errorf("error %q does not name the minimum version", err)
			}
			if got := metricValue(t, srv.metrics.refusedNodes.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("refused_nodes_total{reason=%s} = %v, want 1", tc.reason, got)
			}
			if n := seriesCount(srv.metrics.refusedNodes); n != 2 {
				t.Errorf("refused_nodes_total has %d series, want 2 (bounded reasons)", n)
			}
			if len(refused) != 1 {
				t.Fatalf("%d refusal log lines, want 1:\n%s", len(refused), logs.String())
			}
			want := map[string]any{
				"level": "ERROR", "node": tc.node.GetId(), "user_agent": tc.node.GetUserAgentName(),
				"reported_version": tc.reported, "min_version": "1.37.0", "reason": tc.reason,
			}
			for k, v := range want {
				if refused[0][k] != v {
					t.Errorf("log %s = %v, want %v", k, refused[0][k], v)
				}
			}
		})
	}
}

// firstClusters opens an ADS stream (SotW or delta) as node and returns the clusters of the
// first response, or the error that ended the stream.
func firstClusters(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, delta bool) ([]*clusterv3.Cluster, error) {
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	decode := func(raw [][]byte) ([]*clusterv3.Cluster, error) {
		var out []*clusterv3.Cluster
		for _, b := range raw {
			c := &clusterv3.Cluster{}
			if err := proto.Unmarshal(b, c); err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
	if delta {
		st, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
			return nil, err
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		var raw [][]byte
		for _, r := range resp.GetResources() {
			raw = append(raw, r.GetResource().GetValue())
		}
		return decode(raw)
	}
	st, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	var raw [][]byte
	for _, r := range resp.GetResources() {
		raw = append(raw, r.GetValue())
	}
	return decode(raw)
}

func TestNodeRefusal(t *testing.T) {
	tests := []struct {
		node             *corev3.Node
		reason, reported string
	}{
		{envoyNode("a", 1, 36, 99), refusedEnvoyVersion, "1.36.99"},
		{envoyNode("a", 1, 37, 0), "", "1.37.0"},
		{envoyNode("a", 1, 38, 2), "", "1.38.2"},
		{envoyNode("a", 2, 1, 0), "", "2.1.0"},
		{&corev3.Node{UserAgentName: "envoy"}, refusedNoVersion, ""},
		{&corev3.Node{UserAgentName: dataplane.RuntimeClientAgent}, "", ""},
		{nil, refusedNoVersion, ""},
	}
	for _, tc := range tests {
		reason, reported := nodeRefusal(tc.node)
		if reason != tc.reason || reported != tc.reported {
			t.Errorf("nodeRefusal(%v) = %q, %q; want %q, %q", tc.node, reason, reported, tc.reason, tc.reported)
		}
	}
	if want := fmt.Sprintf("%d.%d.0", minEnvoyMajor, minEnvoyMinor); MinEnvoyVersion != want {
		t.Errorf("MinEnvoyVersion = %s, want %s", MinEnvoyVersion, want)
	}
}
