package envoysim

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	upstreamcodecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previouspriorititesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The contract's request attributes (docs/design.md, "The Bedrock contract").
const (
	attrBackend = "xds.upstream_host_metadata.filter_metadata['ccproxy']['backend']"
	attrRegion  = "xds.upstream_host_metadata.filter_metadata['ccproxy']['region']"
	attrHost    = "xds.upstream_host_metadata.filter_metadata['ccproxy']['host']"
)

// ---- the upstream processor ----

type upStream struct {
	md   metadata.MD
	reqs []*extprocsvc.ProcessingRequest
}

// upProc plays ccproxy's upstream processor: one record per Process stream;
// reply decides each answer (nil = no answer; error = end the stream with it).
type upProc struct {
	mu      sync.Mutex
	streams []*upStream
	reply   func(stream int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error)
}

func (u *upProc) handle(srv extprocsvc.ExternalProcessor_ProcessServer) error {
	md, _ := metadata.FromIncomingContext(srv.Context())
	u.mu.Lock()
	st := &upStream{md: md}
	n := len(u.streams)
	u.streams = append(u.streams, st)
	u.mu.Unlock()
	for {
		req, err := srv.Recv()
		if err != nil {
			return nil
		}
		u.mu.Lock()
		st.reqs = append(st.reqs, req)
		u.mu.Unlock()
		var resp *extprocsvc.ProcessingResponse
		if u.reply != nil {
			if resp, err = u.reply(n, req); err != nil {
				return err
			}
		} else {
			resp = continueResp(req)
		}
		if resp == nil {
			continue
		}
		if err := srv.Send(resp); err != nil {
			return nil
		}
	}
}

func (u *upProc) seen() []*upStream {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*upStream, len(u.streams))
	for i, s := range u.streams {
		c := *s
		c.reqs = append([]*extprocsvc.ProcessingRequest(nil), s.reqs...)
		out[i] = &c
	}
	return out
}

func continueResp(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
	if req.GetResponseHeaders() != nil {
		return respHeadersResp(nil)
	}
	return reqHeadersResp(nil)
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
		Append: wrapperspb.Bool(false),
	}
}

func kinds(reqs []*extprocsvc.ProcessingRequest) string {
	var out []string
	for _, r := range reqs {
		switch {
		case r.GetRequestHeaders() != nil:
			out = append(out, "request_headers")
		case r.GetResponseHeaders() != nil:
			out = append(out, "response_headers:"+headerValue(r.GetResponseHeaders().GetHeaders(), ":status"))
		default:
			out = append(out, fmt.Sprintf("%T", r.GetRequest()))
		}
	}
	return strings.Join(out, ",")
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ---- configuration ----

type bedrockEndpoint struct {
	addr, hostname string
	priority       uint32
	md             map[string]any
}

// upstreamExtProcFilter is the contract's upstream ext_proc.
func upstreamExtProcFilter(t testing.TB, mutate func(*extprocv3.ExternalProcessor)) *hcmv3.HttpFilter {
	ep := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ccproxy_extproc"}},
			InitialMetadata: []*corev3.HeaderValue{{Key: "x-ccproxy-filter", Value: "upstream"}},
		},
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		RequestAttributes: []string{attrBackend, attrRegion, attrHost},
		MessageTimeout:    durationpb.New(5 * time.Second),
		MaxMessageTimeout: durationpb.New(10 * time.Second),
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{"ccproxy"}},
		},
	}
	if mutate != nil {
		mutate(ep)
	}
	return &hcmv3.HttpFilter{Name: "ccproxy.upstream_ext_proc", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}}
}

// contentLengthFilter is the contract's header_mutation filter.
func contentLengthFilter(t testing.TB, value string) *hcmv3.HttpFilter {
	hm := &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
		RequestMutations: []*mutationrulesv3.HeaderMutation{{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: "content-length", Value: value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}}},
	}}
	return &hcmv3.HttpFilter{Name: "ccproxy.content_length", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, hm)}}
}

func codecFilter(t testing.TB) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: filterUpstreamCodec, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &upstreamcodecv3.UpstreamCodec{})}}
}

func contractFilters(t testing.TB) []*hcmv3.HttpFilter {
	return []*hcmv3.HttpFilter{upstreamExtProcFilter(t, nil), contentLengthFilter(t, "%DYNAMIC_METADATA(ccproxy:content_length)%"), codecFilter(t)}
}

// setBedrockBackend turns the test "backend" cluster into one with the given
// endpoints and upstream filter chain (HTTP/1.1).
func setBedrockBackend(t testing.TB, cl *clusterv3.Cluster, eps []bedrockEndpoint, filters []*hcmv3.HttpFilter) {
	var lles []*endpointv3.LocalityLbEndpoints
	for _, e := range eps {
		lbe := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: tcpAddress(t, e.addr), Hostname: e.hostname,
		}}}
		if e.md != nil {
			lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ccproxy": mustStruct(t, e.md)}}
		}
		lles = append(lles, &endpointv3.LocalityLbEndpoints{Priority: e.priority, LbEndpoints: []*endpointv3.LbEndpoint{lbe}})
	}
	cl.LoadAssignment.Endpoints = lles
	cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}},
		HttpFilters: filters,
	})}
}

// fallbackRoute: auto_host_rewrite, route timeout off, per-try timeout, one
// retry to the next priority (previous_priorities, update_frequency 1).
func fallbackRoute(t testing.TB, perTry time.Duration, retries uint32) func(*routev3.Route) {
	return func(r *routev3.Route) {
		ra := r.GetRoute()
		ra.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		ra.Timeout = durationpb.New(0)
		ra.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:       "5xx,reset,connect-failure",
			NumRetries:    wrapperspb.UInt32(retries),
			PerTryTimeout: durationpb.New(perTry),
			RetryPriority: &routev3.RetryPolicy_RetryPriority{
				Name:       retryPreviousPriorities,
				ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(t, &previouspriorititesv3.PreviousPrioritiesConfig{UpdateFrequency: 1})},
			},
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)},
		}
	}
}

// startSimOpts runs envoysim with opts (the test logger added) and returns
// it with its base URL.
func startSimOpts(t testing.TB, opts Options) (*Sim, string) {
	t.Helper()
	opts.Logger = testLogger(t)
	sim, err := New(opts)
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
	return sim, "http://" + sim.Addr()
}

// seenRequest is what a fake backend received.
type seenRequest struct {
	host, path, body string
	contentLength    int64
	header           http.Header
}

type backend struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seenRequest
}

func startBackend(t testing.TB, status int, body string) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, seenRequest{r.Host, r.URL.RequestURI(), string(data), r.ContentLength, r.Header.Clone()})
		b.mu.Unlock()
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) seen() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.reqs...)
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

// ---- tests ----

// TestUpstreamFilterChain runs the contract's upstream filter chain
// (ext_proc, header_mutation, upstream_codec) on a two-priority cluster.
func TestUpstreamFilterChain(t *testing.T) {
	t.Parallel()
	planMD := map[string]any{"backend": "plan", "host": "plan.example"}
	bedrockMD := map[string]any{"backend": "bedrock", "region": "us-east-1", "host": "bedrock.example"}
	replace := func(body string, md map[string]any) func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		return func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
			if req.GetRequestHeaders() == nil {
				return continueResp(req), nil
			}
			resp := reqHeadersResp(&extprocsvc.CommonResponse{
				Status: extprocsvc.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setHeader(":path", "/model/m/invoke"),
				}},
				BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(body)}},
			})
			if md != nil {
				resp.DynamicMetadata = mustStruct(t, md)
			}
			return resp, nil
		}
	}
	tests := []struct {
		name        string
		rule        UpstreamFailureRule
		planStatus  int
		method      string
		body        string
		perTry      time.Duration
		retries     uint32
		reply       func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error)
		extProc     func(*extprocv3.ExternalProcessor)
		wantStatus  int
		wantBody    string
		minElapsed  time.Duration
		wantIgnored int64
		// per processor stream: message kinds, attributes of the first
		// message, and request headers it was shown
		wantKinds []string
		wantAttrs []map[string]any
		wantShown []map[string]string
		// what each backend received
		wantPlan, wantBedrock []seenRequest
	}{
		{
			name: "attributes from the chosen priority endpoint", planStatus: 200, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			wantStatus: 200, wantBody: `{"from":"plan"}`,
			wantKinds: []string{"request_headers,response_headers:200"},
			// region is missing in Plan's metadata: omitted (evaluateAttributes skips errors).
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			// The first attempt's processor sees :authority before auto_host_rewrite (onPoolReady).
			wantShown: []map[string]string{{":authority": "gateway.example", ":path": "/v1/messages"}},
			wantPlan:  []seenRequest{{host: "plan.example", path: "/v1/messages", contentLength: 0}},
		},
		{
			name: "retry to priority 1 sees attempt 1's mutations", planStatus: 503, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			reply: func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				if req.GetRequestHeaders() == nil {
					return continueResp(req), nil
				}
				backend := req.GetAttributes()[extProcAttributesKey].GetFields()[attrBackend].GetStringValue()
				return reqHeadersResp(common(&extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setHeader("x-ccproxy-backend", backend),
				}}, false)), nil
			},
			wantStatus: 200, wantBody: `{"from":"bedrock"}`,
			wantKinds: []string{"request_headers,response_headers:503", "request_headers,response_headers:200"},
			wantAttrs: []map[string]any{
				{attrBackend: "plan", attrHost: "plan.example"},
				{attrBackend: "bedrock", attrRegion: "us-east-1", attrHost: "bedrock.example"},
			},
			wantShown: []map[string]string{
				{":authority": "gateway.example", "x-ccproxy-backend": ""},
				{":authority": "plan.example", "x-ccproxy-backend": "plan"},
			},
			wantPlan:    []seenRequest{{host: "plan.example", path: "/v1/messages", header: http.Header{"X-Ccproxy-Backend": {"plan"}}}},
			wantBedrock: []seenRequest{{host: "bedrock.example", path: "/v1/messages", header: http.Header{"X-Ccproxy-Backend": {"bedrock"}}}},
		},
		{
			name: "CONTINUE_AND_REPLACE body, content-length from dynamic metadata", planStatus: 200, method: "POST", body: `{"model":"claude"}`,
			perTry: 5 * time.Second, retries: 1,
			reply:      replace(`{"anthropic_version":"bedrock-2023-05-31"}`, map[string]any{"ccproxy": map[string]any{"content_length": "42"}}),
			wantStatus: 200, wantBody: `{"from":"plan"}`,
			wantKinds: []string{"request_headers,response_headers:200"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{"content-length": "18"}},
			wantPlan: []seenRequest{{host: "plan.example", path: "/model/m/invoke", body: `{"anthropic_version":"bedrock-2023-05-31"}`,
				contentLength: 42, header: http.Header{"Content-Length": {"42"}}}},
		},
		{
			name: "CONTINUE_AND_REPLACE without metadata: content-length gone, not added empty", planStatus: 200, method: "POST", body: `{"model":"claude"}`,
			perTry: 5 * time.Second, retries: 1,
			// metadata outside receiving_namespaces is dropped
			reply:      replace(`{"x":1}`, map[string]any{"other": map[string]any{"content_length": "7"}}),
			wantStatus: 200, wantBody: `{"from":"plan"}`,
			wantKinds: []string{"request_headers,response_headers:200"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{"content-length": "18"}},
			wantPlan:  []seenRequest{{host: "plan.example", path: "/model/m/invoke", body: `{"x":1}`, contentLength: -1, header: http.Header{"Content-Length": nil}}},
		},
		{
			name: "ImmediateResponse ignored: 504 after per_try_timeout (Envoy ≤1.35)", rule: RuleStall, planStatus: 200, method: "GET",
			perTry: 300 * time.Millisecond, retries: 0,
			reply: func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: []byte("denied"),
				}}}, nil
			},
			wantStatus: 504, wantBody: "upstream request timeout", minElapsed: 300 * time.Millisecond, wantIgnored: 1,
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{":authority": "gateway.example"}},
		},
		{
			name: "gRPC error ignored: 504 after per_try_timeout (Envoy ≤1.35)", rule: RuleStall, planStatus: 200, method: "GET",
			perTry: 300 * time.Millisecond, retries: 0,
			reply: func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			},
			wantStatus: 504, wantBody: "upstream request timeout", minElapsed: 300 * time.Millisecond, wantIgnored: 1,
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{}},
		},
		{
			name: "message timeout ignored: 504 after per_try_timeout (Envoy ≤1.35)", rule: RuleStall, planStatus: 200, method: "GET",
			perTry: 300 * time.Millisecond, retries: 0,
			reply: func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return nil, nil // never answers
			},
			extProc:    func(ep *extprocv3.ExternalProcessor) { ep.MessageTimeout = durationpb.New(50 * time.Millisecond) },
			wantStatus: 504, wantBody: "upstream request timeout", minElapsed: 300 * time.Millisecond, wantIgnored: 1,
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{}},
		},
		{
			name: "ImmediateResponse ignored: per-try timeout retried to priority 1 (Envoy ≤1.35)", rule: RuleStall, planStatus: 200, method: "GET",
			perTry: 300 * time.Millisecond, retries: 1,
			reply: func(stream int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				if stream == 0 {
					return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
						Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
					}}}, nil
				}
				return continueResp(req), nil
			},
			wantStatus: 200, wantBody: `{"from":"bedrock"}`, minElapsed: 300 * time.Millisecond, wantIgnored: 1,
			wantKinds: []string{"request_headers", "request_headers,response_headers:200"},
			wantAttrs: []map[string]any{
				{attrBackend: "plan", attrHost: "plan.example"},
				{attrBackend: "bedrock", attrRegion: "us-east-1", attrHost: "bedrock.example"},
			},
			// attempt 1 stalled before the pool was ready in envoysim's order,
			// so its rewrite never happened
			wantShown:   []map[string]string{{":authority": "gateway.example"}, {":authority": "gateway.example"}},
			wantBedrock: []seenRequest{{host: "bedrock.example", path: "/v1/messages"}},
		},
		// Envoy 1.36+ (c628f8a3, envoyproxy/envoy#41231): the same failures
		// are a local reply sent downstream at once and not retried, although
		// the policy retries 5xx and resets to priority 1.
		{
			name: "ImmediateResponse: local reply at once, not retried", planStatus: 200, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			reply: func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}, Body: []byte("denied"),
				}}}, nil
			},
			wantStatus: 503, wantBody: "denied",
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{":authority": "gateway.example"}},
		},
		{
			name: "gRPC error: local reply 500 at once, not retried", planStatus: 200, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			reply: func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			},
			wantStatus: 500, wantBody: "",
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{}},
		},
		{
			name: "message timeout: local reply 504 at once, not retried", planStatus: 200, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			reply: func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				return nil, nil // never answers
			},
			extProc:    func(ep *extprocv3.ExternalProcessor) { ep.MessageTimeout = durationpb.New(50 * time.Millisecond) },
			wantStatus: 504, wantBody: "",
			wantKinds: []string{"request_headers"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{}},
		},
		{
			name: "ImmediateResponse on the response headers: local reply, not retried", planStatus: 503, method: "GET",
			perTry: 5 * time.Second, retries: 1,
			reply: func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				if req.GetResponseHeaders() == nil {
					return continueResp(req), nil
				}
				return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}, Body: []byte("slow down"),
				}}}, nil
			},
			wantStatus: 429, wantBody: "slow down",
			wantKinds: []string{"request_headers,response_headers:503"},
			wantAttrs: []map[string]any{{attrBackend: "plan", attrHost: "plan.example"}},
			wantShown: []map[string]string{{":authority": "gateway.example"}},
			wantPlan:  []seenRequest{{host: "plan.example", path: "/v1/messages"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := &upProc{reply: tt.reply}
			p := startProcessor(t, up.handle)
			plan := startBackend(t, tt.planStatus, `{"from":"plan"}`)
			bedrock := startBackend(t, 200, `{"from":"bedrock"}`)
			c := cfg{noExtProc: true,
				planRoute: fallbackRoute(t, tt.perTry, tt.retries),
				backend: func(cl *clusterv3.Cluster) {
					setBedrockBackend(t, cl, []bedrockEndpoint{
						{addr: plan.addr(), hostname: "plan.example", priority: 0, md: planMD},
						{addr: bedrock.addr(), hostname: "bedrock.example", priority: 1, md: bedrockMD},
					}, []*hcmv3.HttpFilter{
						upstreamExtProcFilter(t, tt.extProc),
						contentLengthFilter(t, "%DYNAMIC_METADATA(ccproxy:content_length)%"),
						codecFilter(t),
					})
				},
				extra: []types.Resource{staticCluster(t, "ccproxy_extproc", p.addr, true)},
			}
			sim, url := startSimOpts(t, Options{Resources: c.resources(t), UpstreamFailureRule: tt.rule})
			start := time.Now()
			got := do(t, tt.method, url+"/v1/messages", tt.body, map[string]string{"host": "gateway.example"})
			elapsed := time.Since(start)
			if got.err != nil || got.status != tt.wantStatus || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, tt.wantStatus, tt.wantBody)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("answered after %v, want at least %v", elapsed, tt.minElapsed)
			}
			if n := sim.sendImmediateRespUpstreamIgnored.Load(); n != tt.wantIgnored {
				t.Errorf("send_immediate_resp_upstream_ignored = %d, want %d", n, tt.wantIgnored)
			}
			streams := up.seen()
			if len(streams) != len(tt.wantKinds) {
				t.Fatalf("processor saw %d streams, want %d", len(streams), len(tt.wantKinds))
			}
			for i, st := range streams {
				if got := st.md.Get("x-ccproxy-filter"); len(got) != 1 || got[0] != "upstream" {
					t.Errorf("stream %d: initial metadata x-ccproxy-filter = %v", i, got)
				}
				if k := kinds(st.reqs); k != tt.wantKinds[i] {
					t.Errorf("stream %d: messages %s, want %s", i, k, tt.wantKinds[i])
				}
				want := &structpb.Struct{Fields: map[string]*structpb.Value{}}
				if tt.wantAttrs[i] != nil {
					want = mustStruct(t, tt.wantAttrs[i])
				}
				attrs := st.reqs[0].GetAttributes()
				if len(attrs) != 1 || !proto.Equal(attrs[extProcAttributesKey], want) {
					t.Errorf("stream %d: attributes %v, want %v", i, attrs, want)
				}
				for j, r := range st.reqs[1:] {
					if len(r.GetAttributes()) != 0 {
						t.Errorf("stream %d message %d carries attributes", i, j+1)
					}
				}
				for k, v := range tt.wantShown[i] {
					if got := headerValue(st.reqs[0].GetRequestHeaders().GetHeaders(), k); got != v {
						t.Errorf("stream %d: processor shown %s = %q, want %q", i, k, got, v)
					}
				}
			}
			for _, b := range []struct {
				name string
				got  []seenRequest
				want []seenRequest
			}{{"plan", plan.seen(), tt.wantPlan}, {"bedrock", bedrock.seen(), tt.wantBedrock}} {
				if len(b.got) != len(b.want) {
					t.Fatalf("%s received %d requests, want %d", b.name, len(b.got), len(b.want))
				}
				for i, w := range b.want {
					g := b.got[i]
					if g.host != w.host || g.path != w.path || g.body != w.body || (w.contentLength != 0 && g.contentLength != w.contentLength) {
						t.Errorf("%s request %d: host=%q path=%q body=%q content-length=%d, want %q %q %q %d", b.name, i, g.host, g.path, g.body, g.contentLength, w.host, w.path, w.body, w.contentLength)
					}
					for k, v := range w.header {
						if gv := g.header.Values(k); strings.Join(gv, ",") != strings.Join(v, ",") {
							t.Errorf("%s request %d: header %s = %q, want %q", b.name, i, k, gv, v)
						}
					}
				}
			}
		})
	}
}

// TestUpstreamFilterConfig: what envoysim (like Envoy) refuses in a
// cluster's upstream filter chain.
func TestUpstreamFilterConfig(t *testing.T) {
	t.Parallel()
	routerFilter := &hcmv3.HttpFilter{Name: filterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}
	tests := []struct {
		name    string
		filters func(t testing.TB) []*hcmv3.HttpFilter
		hcm     func(*hcmv3.HttpConnectionManager)
		wantErr string
	}{
		{"contract chain accepted", contractFilters, nil, ""},
		{"codec only accepted", func(t testing.TB) []*hcmv3.HttpFilter { return []*hcmv3.HttpFilter{codecFilter(t)} }, nil, ""},
		{"codec not last", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{codecFilter(t), upstreamExtProcFilter(t, nil)}
		}, nil, "terminal filter named envoy.filters.http.upstream_codec of type envoy.filters.http.upstream_codec must be the last filter in a upstream http filter chain"},
		{"no codec", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{upstreamExtProcFilter(t, nil)}
		}, nil, "the codec filter is the only valid terminal upstream HTTP filter, use 'envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec'"},
		{"unknown upstream filter", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{routerFilter, codecFilter(t)}
		}, nil, "envoysim implements only envoy.filters.http.ext_proc, envoy.filters.http.header_mutation and envoy.filters.http.upstream_codec in an upstream filter chain, not *routerv3.Router"},
		{"unsupported CEL expression", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{upstreamExtProcFilter(t, func(ep *extprocv3.ExternalProcessor) {
				ep.RequestAttributes = []string{"request.path"}
			}), codecFilter(t)}
		}, nil, `envoysim evaluates only xds.upstream_host_metadata.filter_metadata['ns']['key'], not "request.path"`},
		{"unsupported formatter", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{contentLengthFilter(t, "%REQ(x-len)%"), codecFilter(t)}
		}, nil, "envoysim implements only the %DYNAMIC_METADATA(ns:key)% formatter, not %REQ(x-len)%"},
		{"body mode in the upstream chain", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{upstreamExtProcFilter(t, func(ep *extprocv3.ExternalProcessor) {
				ep.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_BUFFERED
			}), codecFilter(t)}
		}, nil, "envoysim implements body mode NONE only in an upstream filter chain, got BUFFERED"},
		{"request_attributes on the router-level filter", contractFilters, func(h *hcmv3.HttpConnectionManager) {
			ep := &extprocv3.ExternalProcessor{
				GrpcService:       &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ccproxy_extproc"}}},
				RequestAttributes: []string{attrBackend},
			}
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: filterExtProc, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}}}, h.HttpFilters...)
		}, "envoysim implements request_attributes only in a cluster's upstream filter chain"},
		{"response_attributes on the router-level filter accepted", contractFilters, func(h *hcmv3.HttpConnectionManager) {
			ep := &extprocv3.ExternalProcessor{
				GrpcService:        &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ccproxy_extproc"}}},
				ResponseAttributes: []string{attemptCountAttr, attemptCountAttr},
			}
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: filterExtProc, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}}}, h.HttpFilters...)
		}, ""},
		{"unsupported response attribute on the router-level filter", contractFilters, func(h *hcmv3.HttpConnectionManager) {
			ep := &extprocv3.ExternalProcessor{
				GrpcService:        &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ccproxy_extproc"}}},
				ResponseAttributes: []string{attemptCountAttr, "response.flags"},
			}
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: filterExtProc, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}}}, h.HttpFilters...)
		}, `response_attributes: envoysim evaluates only upstream.request_attempt_count, not "response.flags"`},
		{"response_attributes in the upstream chain", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{upstreamExtProcFilter(t, func(ep *extprocv3.ExternalProcessor) {
				ep.ResponseAttributes = []string{attemptCountAttr}
			}), codecFilter(t)}
		}, nil, "envoysim implements response_attributes only on the router-level ext_proc filter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cfg{noExtProc: true, hcm: tt.hcm,
				backend: func(cl *clusterv3.Cluster) {
					setBedrockBackend(t, cl, []bedrockEndpoint{{addr: "127.0.0.1:1", hostname: "plan.example"}}, tt.filters(t))
				},
				extra: []types.Resource{staticCluster(t, "ccproxy_extproc", "127.0.0.1:2", true)},
			}
			_, err := New(Options{Resources: c.resources(t), Logger: testLogger(t)})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestUpstreamFilterChainTLS: a STRICT_DNS Bedrock endpoint reached by host
// name through Options.Dial, with TLS (auto_host_sni, SAN validation) and the
// upstream filter chain; the processor learns the host from the endpoint
// metadata.
func TestUpstreamFilterChainTLS(t *testing.T) {
	t.Parallel()
	const host = "bedrock-runtime.us-east-1.amazonaws.com"
	ca := newCA(t, "test root")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s %s", r.TLS.ServerName, r.Host, r.URL.Path, r.Header.Get("content-length"), body)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, host)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == host+":443" {
			addr = srv.Listener.Addr().String()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	const newBody = `{"anthropic_version":"bedrock-2023-05-31"}`
	up := &upProc{reply: func(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestHeaders() == nil {
			return continueResp(req), nil
		}
		region := req.GetAttributes()[extProcAttributesKey].GetFields()[attrRegion].GetStringValue()
		resp := reqHeadersResp(&extprocsvc.CommonResponse{
			Status: extprocsvc.CommonResponse_CONTINUE_AND_REPLACE,
			HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				setHeader(":path", "/model/"+region+"/invoke"),
			}},
			BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(newBody)}},
		})
		resp.DynamicMetadata = mustStruct(t, map[string]any{"ccproxy": map[string]any{"content_length": fmt.Sprint(len(newBody))}})
		return resp, nil
	}}
	p := startProcessor(t, up.handle)
	utc := &tlsv3.UpstreamTlsContext{
		AutoHostSni:          true,
		AutoSniSanValidation: true,
		CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: ca.pem}},
		}}},
	}
	c := cfg{noExtProc: true,
		planRoute: fallbackRoute(t, 5*time.Second, 0),
		backend: func(cl *clusterv3.Cluster) {
			cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			setBedrockBackend(t, cl, []bedrockEndpoint{{addr: host + ":443", hostname: host,
				md: map[string]any{"backend": "bedrock", "region": "us-east-1", "host": host}}}, contractFilters(t))
			cl.TransportSocket = &corev3.TransportSocket{Name: socketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, utc)}}
		},
		extra: []types.Resource{staticCluster(t, "ccproxy_extproc", p.addr, true)},
	}
	url := startSim(t, c.resources(t), dial)
	got := do(t, "POST", url+"/v1/messages", `{"model":"claude"}`, map[string]string{"host": "gateway.example"})
	want := fmt.Sprintf("%s %s /model/us-east-1/invoke %d %s", host, host, len(newBody), newBody)
	if got.err != nil || got.status != 200 || got.body != want {
		t.Fatalf("got %d %q err=%v, want 200 %q", got.status, got.body, got.err, want)
	}
	streams := up.seen()
	if len(streams) != 1 {
		t.Fatalf("processor saw %d streams", len(streams))
	}
	wantAttrs := mustStruct(t, map[string]any{attrBackend: "bedrock", attrRegion: "us-east-1", attrHost: host})
	if a := streams[0].reqs[0].GetAttributes()[extProcAttributesKey]; !proto.Equal(a, wantAttrs) {
		t.Errorf("attributes %v, want %v", a, wantAttrs)
	}
}
