package envoysim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- fake ext_proc server ----

// procFunc handles one Process stream.
type procFunc func(srv extprocsvc.ExternalProcessor_ProcessServer) error

type fakeProcessor struct {
	extprocsvc.UnimplementedExternalProcessorServer
	handle procFunc
	addr   string
}

func (p *fakeProcessor) Process(srv extprocsvc.ExternalProcessor_ProcessServer) error {
	return p.handle(srv)
}

// startProcessor serves handle on a loopback gRPC server.
func startProcessor(t testing.TB, handle procFunc) *fakeProcessor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	p := &fakeProcessor{handle: handle, addr: ln.Addr().String()}
	extprocsvc.RegisterExternalProcessorServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return p
}

// routeHeaderMutation sets x-ccproxy-route: plan the way the router
// processor does (raw_value, append false).
func routeHeaderMutation() *extprocsvc.HeaderMutation {
	return &extprocsvc.HeaderMutation{
		RemoveHeaders: []string{"x-ccproxy-route"},
		SetHeaders: []*corev3.HeaderValueOption{{
			Header: &corev3.HeaderValue{Key: "x-ccproxy-route", RawValue: []byte("plan")},
			Append: wrapperspb.Bool(false),
		}},
	}
}

func common(hm *extprocsvc.HeaderMutation, clear bool) *extprocsvc.CommonResponse {
	return &extprocsvc.CommonResponse{HeaderMutation: hm, ClearRouteCache: clear}
}

func reqHeadersResp(cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
}

func reqBodyResp(cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: cr}}}
}

func respHeadersResp(cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
}

func respBodyResp(cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{Response: cr}}}
}

func headerValue(h *corev3.HeaderMap, key string) string {
	for _, e := range h.GetHeaders() {
		if e.GetKey() == key {
			return string(e.GetRawValue())
		}
	}
	return ""
}

// goodProcessor behaves like ccproxy's router processor: it routes on the
// last request phase, switches SSE responses to STREAMED and answers every
// message. Hooks let a test change one reply.
type goodProcessor struct {
	noRecord  bool
	mu        sync.Mutex
	requests  []*extprocsvc.ProcessingRequest
	onReqBody func(body []byte) *extprocsvc.CommonResponse
	onResp    func(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse
	// unsolicited, when set, carries messages each stream sends on its
	// own, whatever Envoy awaits (one stream should be open).
	unsolicited chan *extprocsvc.ProcessingResponse
}

func (g *goodProcessor) record(r *extprocsvc.ProcessingRequest) {
	if g.noRecord {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests = append(g.requests, r)
}

func (g *goodProcessor) seen() []*extprocsvc.ProcessingRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*extprocsvc.ProcessingRequest(nil), g.requests...)
}

func (g *goodProcessor) handle(srv extprocsvc.ExternalProcessor_ProcessServer) error {
	var sendMu sync.Mutex
	send := func(r *extprocsvc.ProcessingResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return srv.Send(r)
	}
	if g.unsolicited != nil {
		go func() {
			select {
			case r := <-g.unsolicited:
				_ = send(r)
			case <-srv.Context().Done():
			}
		}()
	}
	for {
		req, err := srv.Recv()
		if err != nil {
			return nil
		}
		g.record(req)
		var resp *extprocsvc.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocsvc.ProcessingRequest_RequestHeaders:
			if r.RequestHeaders.GetEndOfStream() {
				resp = reqHeadersResp(common(routeHeaderMutation(), true))
			} else {
				resp = reqHeadersResp(common(&extprocsvc.HeaderMutation{RemoveHeaders: []string{"x-ccproxy-route"}}, false))
			}
		case *extprocsvc.ProcessingRequest_RequestBody:
			cr := common(routeHeaderMutation(), true)
			if g.onReqBody != nil {
				cr = g.onReqBody(r.RequestBody.GetBody())
			}
			resp = reqBodyResp(cr)
		case *extprocsvc.ProcessingRequest_ResponseHeaders:
			resp = respHeadersResp(nil)
			if headerValue(r.ResponseHeaders.GetHeaders(), "content-type") == "text/event-stream" {
				resp.ModeOverride = &extprocv3.ProcessingMode{
					RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
					ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
					RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
					ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
					RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
					ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
				}
			}
		case *extprocsvc.ProcessingRequest_ResponseBody:
			resp = respBodyResp(nil)
		}
		if g.onResp != nil {
			if o := g.onResp(req); o != nil {
				resp = o
			}
		}
		if err := send(resp); err != nil {
			return nil
		}
	}
}

// ---- configuration ----

type cfg struct {
	procAddr       string
	backendAddr    string
	noExtProc      bool
	mode           *extprocv3.ProcessingMode
	messageTimeout *durationpb.Duration
	extProc        func(*extprocv3.ExternalProcessor)
	hcm            func(*hcmv3.HttpConnectionManager)
	listener       func(*listenerv3.Listener)
	planRoute      func(*routev3.Route)
	backend        func(*clusterv3.Cluster)
	extra          []types.Resource
}

func contractMode() *extprocv3.ProcessingMode {
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
		ResponseBodyMode:    extprocv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tcpAddress(t testing.TB, hostport string) *corev3.Address {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}

func staticCluster(t testing.TB, name, hostport string, http2 bool) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: tcpAddress(t, hostport)}},
			}}}},
		},
	}
	if http2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			httpProtocolOptionsKey: mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			}),
		}
	}
	return c
}

func (c cfg) resources(t testing.TB) []types.Resource {
	t.Helper()
	planRoute := &routev3.Route{
		Name: "plan",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{
				Name: "x-ccproxy-route",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "plan"},
				}},
			}},
		},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"},
		}},
		RequestHeadersToRemove: []string{"x-ccproxy-route"},
	}
	if c.noExtProc {
		planRoute.Match.Headers = nil
	}
	if c.planRoute != nil {
		c.planRoute(planRoute)
	}
	rc := &routev3.RouteConfiguration{
		Name: "routes",
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{planRoute, {
				Name:  "not_found",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
					Status: 404,
					Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "no route"}},
				}},
			}},
		}},
	}
	var filters []*hcmv3.HttpFilter
	if !c.noExtProc {
		mode := c.mode
		if mode == nil {
			mode = contractMode()
		}
		ep := &extprocv3.ExternalProcessor{
			GrpcService:       &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ccproxy_extproc"}}},
			ProcessingMode:    mode,
			AllowModeOverride: true,
			MessageTimeout:    c.messageTimeout,
		}
		if c.extProc != nil {
			c.extProc(ep)
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: filterExtProc, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}})
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: filterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:       "test",
		RouteSpecifier:   &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters:      filters,
		UseRemoteAddress: wrapperspb.Bool(true),
	}
	if c.hcm != nil {
		c.hcm(hcm)
	}
	l := &listenerv3.Listener{
		Name:    "ccproxy_http",
		Address: tcpAddress(t, "127.0.0.1:0"),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       filterHCM,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)},
		}}}},
	}
	if c.listener != nil {
		c.listener(l)
	}
	backendAddr := c.backendAddr
	if backendAddr == "" {
		backendAddr = "127.0.0.1:1"
	}
	backend := staticCluster(t, "backend", backendAddr, false)
	if c.backend != nil {
		c.backend(backend)
	}
	res := []types.Resource{l, backend}
	if !c.noExtProc {
		res = append(res, staticCluster(t, "ccproxy_extproc", c.procAddr, true))
	}
	return append(res, c.extra...)
}

// ---- running envoysim ----

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ENVOYSIM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startSim runs envoysim on resources and returns its base URL.
func startSim(t testing.TB, res []types.Resource, dial DialFunc) string {
	t.Helper()
	sim, err := New(Options{Resources: res, Logger: testLogger(t), Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-sim.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("envoysim not ready")
	}
	return "http://" + sim.Addr()
}

type result struct {
	status int
	header http.Header
	body   string
	err    error
}

func do(t testing.TB, method, url string, body string, hdr map[string]string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// upstream is a fake backend recording what it received.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
}

type recorded struct {
	method, host, path string
	header             http.Header
	body               string
}

func startUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.requests = append(u.requests, recorded{r.Method, r.Host, r.URL.RequestURI(), r.Header.Clone(), string(b)})
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) seen() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.requests...)
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

var errStop = errors.New("stop")

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}

// localReplyLog records the local replies envoysim sends
// (Options.localReplies).
type localReplyLog struct {
	mu  sync.Mutex
	got []string // "status details"
	det []string
}

func (l *localReplyLog) record(status int, details string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, fmt.Sprintf("%d %s", status, details))
	l.det = append(l.det, details)
}

// details returns the details of every local reply so far.
func (l *localReplyLog) details() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.det...)
}

// replies returns "status details" for every local reply so far.
func (l *localReplyLog) replies() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}
