package envoysim

import (
	"context"
	"fmt"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

func statusCode(code int) *typev3.HttpStatus {
	return &typev3.HttpStatus{Code: typev3.StatusCode(code)}
}

// adsState is what the xDS client has accepted so far (state of the world:
// each response carries every resource of its type).
type adsState struct {
	clusters  []*clusterv3.Cluster
	listeners []*listenerv3.Listener
	routes    []*routev3.RouteConfiguration
	versions  map[string]string
	rdsNames  []string
	ldsSent   bool
	rdsSent   bool
}

// runXDS follows the control plane over ADS like Envoy's GrpcMuxImpl:
// Clusters first, Listeners once Clusters are in, RouteConfigurations for the
// names the listeners reference; every response is ACKed, or NACKed with
// error_detail when a resource is invalid or uses a field envoysim does not
// implement. Reconnects back off from 500 ms to 30 s.
func (s *Sim) runXDS(ctx context.Context) error {
	creds := s.opts.XDSCredentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(s.opts.XDSAddress, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("envoysim: xds client: %w", err)
	}
	defer conn.Close()
	st := &adsState{versions: map[string]string{}}
	backoff := 500 * time.Millisecond
	for {
		err := s.adsStream(ctx, conn, st)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("ADS stream ended; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (s *Sim) adsStream(ctx context.Context, conn *grpc.ClientConn, st *adsState) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// Envoy reports its build version in every node (server.cc); envoysim reports the release
	// it emulates, which the control plane checks like a real Envoy's.
	// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/server/server.cc (user_agent_build_version)
	node := &corev3.Node{Id: s.opts.NodeID, Cluster: "envoysim", UserAgentName: "envoysim",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 40, Patch: 0},
		}}}
	send := func(typeURL string, names []string, version, nonce string, detail error) error {
		req := &discoveryv3.DiscoveryRequest{
			Node:          node,
			TypeUrl:       typeURL,
			ResourceNames: names,
			VersionInfo:   version,
			ResponseNonce: nonce,
		}
		if detail != nil {
			req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
		}
		return stream.Send(req)
	}
	// On (re)connect, subscribe again with the versions already accepted.
	st.ldsSent, st.rdsSent = false, false
	if err := send(resourcev3.ClusterType, nil, st.versions[resourcev3.ClusterType], "", nil); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		names := []string(nil)
		if resp.GetTypeUrl() == resourcev3.RouteType {
			names = st.rdsNames
		}
		if err := s.acceptResponse(st, resp); err != nil {
			s.log.Error("xDS update rejected (NACK)", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "err", err)
			if serr := send(resp.GetTypeUrl(), names, st.versions[resp.GetTypeUrl()], resp.GetNonce(), err); serr != nil {
				return serr
			}
		} else {
			st.versions[resp.GetTypeUrl()] = resp.GetVersionInfo()
			if serr := send(resp.GetTypeUrl(), names, resp.GetVersionInfo(), resp.GetNonce(), nil); serr != nil {
				return serr
			}
		}
		if !st.ldsSent && st.versions[resourcev3.ClusterType] != "" {
			st.ldsSent = true
			if err := send(resourcev3.ListenerType, nil, st.versions[resourcev3.ListenerType], "", nil); err != nil {
				return err
			}
		}
		want := rdsNames(st.listeners)
		if len(want) > 0 && (!st.rdsSent || !equalStrings(want, st.rdsNames)) {
			st.rdsNames = want
			st.rdsSent = true
			if err := send(resourcev3.RouteType, want, st.versions[resourcev3.RouteType], "", nil); err != nil {
				return err
			}
		}
	}
}

// acceptResponse validates a response and, when the configuration is
// complete, applies it. On error nothing changes.
func (s *Sim) acceptResponse(st *adsState, resp *discoveryv3.DiscoveryResponse) error {
	next := *st
	switch resp.GetTypeUrl() {
	case resourcev3.ClusterType:
		next.clusters = nil
	case resourcev3.ListenerType:
		next.listeners = nil
	case resourcev3.RouteType:
		next.routes = nil
	default:
		return fmt.Errorf("envoysim does not implement resource type %q", resp.GetTypeUrl())
	}
	for _, a := range resp.GetResources() {
		msg, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
		}
		if err := validateResource(msg); err != nil {
			return err
		}
		switch v := msg.(type) {
		case *clusterv3.Cluster:
			if _, err := compileCluster(v); err != nil {
				return err
			}
			next.clusters = append(next.clusters, v)
		case *listenerv3.Listener:
			if _, err := compileListener(v); err != nil {
				return err
			}
			next.listeners = append(next.listeners, v)
		case *routev3.RouteConfiguration:
			if _, err := compileRouteConfig(v, false); err != nil {
				return err
			}
			next.routes = append(next.routes, v)
		default:
			return fmt.Errorf("unexpected %T in a %s response", msg, resp.GetTypeUrl())
		}
	}
	// Listener warming: a listener waits for its route configuration.
	have := map[string]bool{}
	for _, r := range next.routes {
		have[r.GetName()] = true
	}
	for _, n := range rdsNames(next.listeners) {
		if !have[n] {
			*st = next
			return nil
		}
	}
	if len(next.listeners) > 0 {
		var res []types.Resource
		for _, c := range next.clusters {
			res = append(res, c)
		}
		for _, r := range next.routes {
			if contains(rdsNames(next.listeners), r.GetName()) {
				res = append(res, r)
			}
		}
		for _, l := range next.listeners {
			res = append(res, l)
		}
		snap, err := compile(res)
		if err != nil {
			return err
		}
		if err := s.apply(snap); err != nil {
			return err
		}
		s.log.Info("xDS configuration applied", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo())
	}
	*st = next
	return nil
}

func rdsNames(listeners []*listenerv3.Listener) []string {
	var out []string
	for _, l := range listeners {
		lc, err := compileListener(l)
		if err != nil || lc.hcm.rdsName == "" {
			continue
		}
		if !contains(out, lc.hcm.rdsName) {
			out = append(out, lc.hcm.rdsName)
		}
	}
	sort.Strings(out)
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
