package extprocdriver

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// replyFunc answers the n-th message (from 0) of a stream; a nil reply and
// nil error end the stream with OK.
type replyFunc func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error)

// recorded is one stream as the fake processor saw it.
type recorded struct {
	md   metadata.MD
	reqs []*extprocsvc.ProcessingRequest
}

// fakeProcessor is an ext_proc server whose answers the test chooses.
type fakeProcessor struct {
	extprocsvc.UnimplementedExternalProcessorServer
	// reply answers router streams; upstream answers streams whose metadata
	// names the upstream filter (nil: reply).
	reply, upstream replyFunc

	mu      sync.Mutex
	streams []*recorded
}

func (f *fakeProcessor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	rec := &recorded{md: md}
	f.mu.Lock()
	f.streams = append(f.streams, rec)
	f.mu.Unlock()
	reply := f.reply
	if f.upstream != nil && len(md.Get("x-filter")) > 0 {
		reply = f.upstream
	}
	for n := 0; ; n++ {
		req, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		f.mu.Lock()
		rec.reqs = append(rec.reqs, proto.CloneOf(req))
		f.mu.Unlock()
		resp, err := reply(n, req)
		if err != nil || resp == nil {
			return err
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

func (f *fakeProcessor) recorded() []*recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*recorded(nil), f.streams...)
}

// serve runs p on a Unix socket and returns a client of it.
func serve(t *testing.T, p *fakeProcessor) extprocsvc.ExternalProcessorClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "p.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return extprocsvc.NewExternalProcessorClient(cc)
}

// unchanged answers any message with the empty reply of its type, as a
// processor that changes nothing does.
func unchanged(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
	empty := &extprocsvc.CommonResponse{}
	switch req.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: empty}}}, nil
	case *extprocsvc.ProcessingRequest_RequestBody:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: empty}}}, nil
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: empty}}}, nil
	default:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{Response: empty}}}, nil
	}
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
}

func headersReply(req *extprocsvc.ProcessingRequest, cr *extprocsvc.CommonResponse, mo *extprocv3.ProcessingMode) *extprocsvc.ProcessingResponse {
	hr := &extprocsvc.HeadersResponse{Response: cr}
	if req.GetRequestHeaders() != nil {
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: hr}, ModeOverride: mo}
	}
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}, ModeOverride: mo}
}

func bodyReply(req *extprocsvc.ProcessingRequest, cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	br := &extprocsvc.BodyResponse{Response: cr}
	if req.GetRequestBody() != nil {
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

func newBody(b string) *extprocsvc.BodyMutation {
	return &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(b)}}
}

// mutating plays a processor that changes every phase: the path and a
// header on the request headers, the body (with its content-length) on the
// buffered request body, streaming on the response headers, and upper case
// on every response chunk.
func mutating(_ int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
	switch m := req.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		return headersReply(req, &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{
			SetHeaders: []*corev3.HeaderValueOption{setHeader(":path", "/v1/messages"), setHeader(":authority", "ignored.example")}, RemoveHeaders: []string{"x-secret"}}}, nil), nil
	case *extprocsvc.ProcessingRequest_RequestBody:
		return bodyReply(req, &extprocsvc.CommonResponse{
			HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-length", "9"), setHeader("x-route", "a")}},
			BodyMutation:   newBody(`{"new":1}`)}), nil
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		return headersReply(req, &extprocsvc.CommonResponse{}, &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}), nil
	default:
		return bodyReply(req, &extprocsvc.CommonResponse{BodyMutation: newBody(strings.ToUpper(string(m.(*extprocsvc.ProcessingRequest_ResponseBody).ResponseBody.GetBody())))}), nil
	}
}

// testSpec is a small exchange: a buffered-buffered router filter that
// allows mode overrides, a JSON request body, a three-chunk answer.
func testSpec() *Spec {
	return &Spec{
		Name: "test",
		Request: RequestSpec{
			Path: "/ak/key/v1/messages", Authority: "gw.example",
			Headers: map[string]string{"X-Secret": "s", "Content-Type": "application/json"},
			Body:    `{"model":"m","stream":true}`,
		},
		RouterFilter: FilterSpec{
			ProcessingMode:     []byte(`{"request_body_mode":"BUFFERED","response_body_mode":"BUFFERED","request_trailer_mode":"SKIP","response_trailer_mode":"SKIP"}`),
			AllowModeOverride:  true,
			ResponseAttributes: map[string]any{"upstream.request_attempt_count": 1},
		},
		Route:    &RouteSpec{RemoveHeaders: []string{"x-route"}, SetHeaders: map[string]string{"accept-encoding": "identity"}},
		Response: ResponseSpec{Headers: map[string]string{"content-type": "text/event-stream"}, Body: "event: one\n\nevent: two\n\n", Chunks: 3},
	}
}

func compile(t *testing.T, spec *Spec) *Scenario {
	t.Helper()
	s, err := Compile(spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func headerList(m Message) string {
	var b strings.Builder
	for k, v := range m.Headers.All() {
		if k == "x-request-id" {
			v = "<id>"
		}
		b.WriteString(k + ": " + v + "\n")
	}
	return b.String()
}

func TestExchange(t *testing.T) {
	upstreamSpec := testSpec()
	upstreamSpec.UpstreamFilter = &FilterSpec{
		ProcessingMode:      []byte(`{"request_body_mode":"NONE","response_body_mode":"NONE"}`),
		GRPCInitialMetadata: map[string]string{"x-filter": "upstream"},
		RequestAttributes:   map[string]any{"backend": "b"},
	}
	upstreamSpec.HostRewrite = "upstream.example"
	tests := []struct {
		name      string
		spec      *Spec
		reply     replyFunc
		upstream  replyFunc
		routed    string // headers after the router-level filter
		routedB   string
		upstreamH string // headers leaving Envoy
		upstreamB string
		downH     string
		downB     string
		messages  int
		streams   int
	}{
		{
			name:  "a processor that changes nothing",
			spec:  testSpec(),
			reply: unchanged,
			routed: ":authority: gw.example\n:path: /ak/key/v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\ncontent-length: 27\nx-request-id: <id>\n",
			routedB: `{"model":"m","stream":true}`,
			upstreamH: ":authority: gw.example\n:path: /ak/key/v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\ncontent-length: 27\nx-request-id: <id>\naccept-encoding: identity\n",
			upstreamB: `{"model":"m","stream":true}`,
			downH:     ":status: 200\ncontent-type: text/event-stream\n",
			downB:     "event: one\n\nevent: two\n\n",
			messages:  4, // request headers and body, response headers and (buffered) body
			streams:   1,
		},
		{
			name:  "mutations applied by Envoy's rules",
			spec:  testSpec(),
			reply: mutating,
			// :authority is a routing header: the default mutation rules ignore it.
			routed: ":authority: gw.example\n:path: /v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\ncontent-length: 9\nx-request-id: <id>\nx-route: a\n",
			routedB: `{"new":1}`,
			upstreamH: ":authority: gw.example\n:path: /v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\ncontent-length: 9\nx-request-id: <id>\naccept-encoding: identity\n",
			upstreamB: `{"new":1}`,
			downH:     ":status: 200\ncontent-type: text/event-stream\n",
			downB:     "EVENT: ONE\n\nEVENT: TWO\n\n",
			messages:  6, // the response body streamed in 3 chunks after the mode_override
			streams:   1,
		},
		{
			name: "CONTINUE_AND_REPLACE on the request headers",
			spec: testSpec(),
			reply: func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				if req.GetRequestHeaders() != nil {
					return headersReply(req, &extprocsvc.CommonResponse{Status: extprocsvc.CommonResponse_CONTINUE_AND_REPLACE, BodyMutation: newBody("replaced")}, nil), nil
				}
				return unchanged(n, req)
			},
			routed: ":authority: gw.example\n:path: /ak/key/v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\nx-request-id: <id>\n",
			routedB: "replaced",
			upstreamH: ":authority: gw.example\n:path: /ak/key/v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\nx-request-id: <id>\naccept-encoding: identity\n",
			upstreamB: "replaced",
			downH:     ":status: 200\ncontent-type: text/event-stream\n",
			downB:     "event: one\n\nevent: two\n\n",
			messages:  3, // no request body message
			streams:   1,
		},
		{
			name:  "an upstream filter between the route and the host rewrite",
			spec:  upstreamSpec,
			reply: unchanged,
			upstream: func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
				if req.GetRequestHeaders() != nil {
					return headersReply(req, &extprocsvc.CommonResponse{
						Status:         extprocsvc.CommonResponse_CONTINUE_AND_REPLACE,
						HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader(":path", "/model/x")}},
						BodyMutation:   newBody("translated"),
					}, nil), nil
				}
				return unchanged(n, req)
			},
			routed: ":authority: gw.example\n:path: /ak/key/v1/messages\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\ncontent-length: 27\nx-request-id: <id>\n",
			routedB: `{"model":"m","stream":true}`,
			upstreamH: ":authority: upstream.example\n:path: /model/x\n:method: POST\n:scheme: http\n" +
				"content-type: application/json\nx-secret: s\nx-request-id: <id>\naccept-encoding: identity\n",
			upstreamB: "translated",
			downH:     ":status: 200\ncontent-type: text/event-stream\n",
			downB:     "event: one\n\nevent: two\n\n",
			messages:  6, // 4 on the router stream, request and response headers on the upstream one
			streams:   2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakeProcessor{reply: tc.reply, upstream: tc.upstream}
			c := serve(t, p)
			s := compile(t, tc.spec)
			o, err := s.Exchange(t.Context(), c, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []struct {
				name          string
				got           Message
				headers, body string
			}{
				{"routed request", o.RoutedRequest, tc.routed, tc.routedB},
				{"upstream request", o.UpstreamRequest, tc.upstreamH, tc.upstreamB},
				{"downstream response", o.DownstreamResponse, tc.downH, tc.downB},
			} {
				if got := headerList(m.got); got != m.headers {
					t.Errorf("%s headers:\n%s\nwant\n%s", m.name, got, m.headers)
				}
				if string(m.got.Body) != m.body {
					t.Errorf("%s body = %q, want %q", m.name, m.got.Body, m.body)
				}
			}
			if o.Messages != tc.messages {
				t.Errorf("Messages = %d, want %d", o.Messages, tc.messages)
			}
			if got := len(p.recorded()); got != tc.streams {
				t.Errorf("%d streams, want %d", got, tc.streams)
			}
		})
	}
}

// TestExchangeMessages checks what the first messages of each direction
// carry: protocol_config on a stream's first, a direction's attributes on
// its first, the filter's gRPC metadata on the stream.
func TestExchangeMessages(t *testing.T) {
	spec := testSpec()
	spec.UpstreamFilter = &FilterSpec{
		ProcessingMode:      []byte(`{"response_header_mode":"SKIP"}`),
		GRPCInitialMetadata: map[string]string{"x-filter": "upstream"},
		RequestAttributes:   map[string]any{"backend": "b"},
	}
	p := &fakeProcessor{reply: unchanged}
	if _, err := compile(t, spec).Exchange(t.Context(), serve(t, p), nil); err != nil {
		t.Fatal(err)
	}
	streams := p.recorded()
	if len(streams) != 2 {
		t.Fatalf("%d streams, want 2", len(streams))
	}
	router, up := streams[0], streams[1]
	if len(router.md.Get("x-filter")) != 0 || !equal(up.md.Get("x-filter"), []string{"upstream"}) {
		t.Errorf("metadata: router %v, upstream %v", router.md, up.md)
	}
	wantConfig := &extprocsvc.ProtocolConfiguration{RequestBodyMode: extprocv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocv3.ProcessingMode_BUFFERED}
	attempts := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": must(structpb.NewStruct(map[string]any{"upstream.request_attempt_count": 1}))}
	backend := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": must(structpb.NewStruct(map[string]any{"backend": "b"}))}
	for i, tc := range []struct {
		got    *extprocsvc.ProcessingRequest
		config *extprocsvc.ProtocolConfiguration
		attrs  map[string]*structpb.Struct
	}{
		{router.reqs[0], wantConfig, nil},
		{router.reqs[1], nil, nil},
		{router.reqs[2], nil, attempts},
		{router.reqs[3], nil, nil},
		{up.reqs[0], &extprocsvc.ProtocolConfiguration{}, backend},
	} {
		if !proto.Equal(tc.got.GetProtocolConfig(), tc.config) {
			t.Errorf("message %d: protocol_config %v, want %v", i, tc.got.GetProtocolConfig(), tc.config)
		}
		if len(tc.got.GetAttributes()) != len(tc.attrs) || !proto.Equal(tc.got.GetAttributes()["envoy.filters.http.ext_proc"], tc.attrs["envoy.filters.http.ext_proc"]) {
			t.Errorf("message %d: attributes %v, want %v", i, tc.got.GetAttributes(), tc.attrs)
		}
	}
	if len(up.reqs) != 1 {
		t.Errorf("upstream stream got %d messages, want only the request headers (response headers SKIP)", len(up.reqs))
	}
}

func TestExchangeFailures(t *testing.T) {
	onRequestHeaders := func(resp *extprocsvc.ProcessingResponse, err error) replyFunc {
		return func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
			if req.GetRequestHeaders() != nil {
				return resp, err
			}
			return unchanged(n, req)
		}
	}
	onRequestBody := func(cr *extprocsvc.CommonResponse) replyFunc {
		return func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
			if req.GetRequestBody() != nil {
				return bodyReply(req, cr), nil
			}
			return unchanged(n, req)
		}
	}
	reqHeaders := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocsvc.HttpHeaders{}}}
	reqBody := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{RequestBody: &extprocsvc.HttpBody{}}}
	tests := []struct {
		name  string
		reply replyFunc
		want  string
	}{
		{
			name:  "a reply of the wrong type",
			reply: onRequestHeaders(bodyReply(reqBody, &extprocsvc.CommonResponse{}), nil),
			want:  "router stream, request_headers: spurious reply: a request_body reply to request_headers",
		},
		{
			name: "an ImmediateResponse",
			reply: onRequestHeaders(&extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: []byte("no")}}}, nil),
			want: `router stream, request_headers: ImmediateResponse 403 (details ""): "no"`,
		},
		{
			name:  "a gRPC error",
			reply: onRequestHeaders(nil, status.Error(codes.Internal, "boom")),
			want:  "router stream, request_headers: rpc error: code = Internal desc = boom",
		},
		{
			name:  "the stream ended without a reply",
			reply: onRequestHeaders(nil, nil),
			want:  "router stream, request_headers: the server ended the stream instead of replying",
		},
		{
			name: "an invalid header mutation",
			reply: onRequestHeaders(headersReply(reqHeaders, &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{setHeader("x-a", "a\nb")}}}, nil), nil),
			want: "router stream, request_headers: invalid character in set_headers mutation",
		},
		{
			name:  "a body mutation that contradicts content-length",
			reply: onRequestBody(&extprocsvc.CommonResponse{BodyMutation: newBody("short")}),
			want:  "router stream, request_body: mismatch between content length (27) and the length of the mutated body (5)",
		},
		{
			name:  "a mode_override the driver cannot play",
			reply: onRequestHeaders(headersReply(reqHeaders, &extprocsvc.CommonResponse{}, &extprocv3.ProcessingMode{RequestBodyMode: extprocv3.ProcessingMode_GRPC}), nil),
			want:  "router stream, request_headers: mode_override: body mode GRPC is not played by the driver",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := compile(t, testSpec()).Exchange(t.Context(), serve(t, &fakeProcessor{reply: tc.reply}), nil)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
			if o != nil {
				t.Errorf("an outcome came with the error: %+v", o)
			}
			var pe *PhaseError
			if !errors.As(err, &pe) {
				t.Errorf("err is a %T, want a *PhaseError", err)
			}
		})
	}
}

func TestVerifier(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"answer": "event: one\n\nevent: two\n\n", "other": "event: one\n\nevent: 2\n\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(point string, e MessageExpect) Expectations {
		switch point {
		case "routed_request":
			return Expectations{RoutedRequest: &e}
		case "upstream_request":
			return Expectations{UpstreamRequest: &e}
		default:
			return Expectations{DownstreamResponse: &e}
		}
	}
	tests := []struct {
		name   string
		expect Expectations
		want   string // "" passes
	}{
		{"all met", Expectations{
			RoutedRequest:      &MessageExpect{HeaderEquals: map[string]string{":path": "/ak/key/v1/messages"}, HeadersPresent: []string{"X-Request-Id"}, JSONKeysPresent: []string{"model"}},
			UpstreamRequest:    &MessageExpect{HeaderEquals: map[string]string{"accept-encoding": "identity"}, JSONKeysAbsent: []string{"x"}},
			DownstreamResponse: &MessageExpect{BodyEqualsFile: "answer", BodyContains: []string{"two"}, BodyNotContains: []string{"three"}},
		}, ""},
		{"header differs", expect("routed_request", MessageExpect{HeaderEquals: map[string]string{":path": "/v1/messages"}}),
			`routed_request: header :path = "/ak/key/v1/messages", want "/v1/messages"`},
		{"header missing", expect("upstream_request", MessageExpect{HeaderEquals: map[string]string{"x-api-key": "k"}}),
			`upstream_request: header x-api-key is missing, want "k"`},
		{"header present", expect("upstream_request", MessageExpect{HeadersAbsent: []string{"x-secret"}}),
			`upstream_request: header x-secret = "s", want it absent`},
		{"body differs", expect("downstream_response", MessageExpect{BodyEqualsFile: "other"}),
			"downstream_response: body (24 bytes) differs from other (22 bytes) at byte 19"},
		{"body lacks", expect("downstream_response", MessageExpect{BodyContains: []string{"three"}}),
			`downstream_response: body (24 bytes) lacks "three"`},
		{"body contains", expect("downstream_response", MessageExpect{BodyNotContains: []string{"one"}}),
			`downstream_response: body (24 bytes) contains "one"`},
		{"JSON key missing", expect("routed_request", MessageExpect{JSONKeysPresent: []string{"messages"}}),
			`routed_request: JSON body lacks the top-level key "messages"`},
		{"JSON key present", expect("routed_request", MessageExpect{JSONKeysAbsent: []string{"stream"}}),
			`routed_request: JSON body has the top-level key "stream", want it absent`},
		{"not JSON", expect("downstream_response", MessageExpect{JSONKeysPresent: []string{"a"}}),
			"downstream_response: body (24 bytes) is not a JSON object: invalid character 'e' looking for beginning of value"},
	}
	c := serve(t, &fakeProcessor{reply: unchanged})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec()
			spec.Expect = tc.expect
			s, err := Compile(spec, dir)
			if err != nil {
				t.Fatal(err)
			}
			o, err := s.Exchange(t.Context(), c, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = NewVerifier(s).Verify(o)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var ee *ExpectationError
			if !errors.As(err, &ee) || err.Error() != tc.want {
				t.Fatalf("Verify = %v (%T), want the *ExpectationError %s", err, err, tc.want)
			}
		})
	}
}

// TestVerifierRechecksChangedBodies: the body check is skipped only for a
// body identical to one that passed.
func TestVerifierRechecksChangedBodies(t *testing.T) {
	spec := testSpec()
	spec.Expect.DownstreamResponse = &MessageExpect{BodyNotContains: []string{"EVENT"}}
	s := compile(t, spec)
	v := NewVerifier(s)
	c := serve(t, &fakeProcessor{reply: unchanged})
	o, err := s.Exchange(t.Context(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(o); err != nil {
		t.Fatal(err)
	}
	o.DownstreamResponse.Body = []byte("EVENT: ONE")
	if err := v.Verify(o); err == nil || err.Error() != `downstream_response: body (10 bytes) contains "EVENT"` {
		t.Fatalf("Verify of a changed body = %v", err)
	}
}

func TestRun(t *testing.T) {
	spec := testSpec()
	spec.Expect.DownstreamResponse = &MessageExpect{HeaderEquals: map[string]string{":status": "200"}, BodyContains: []string{"TWO"}}
	s := compile(t, spec)
	c := serve(t, &fakeProcessor{reply: mutating})
	r, err := Run(t.Context(), s, []extprocsvc.ExternalProcessorClient{c}, LoadConfig{Concurrency: 4, Exchanges: 100, PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Exchanges != 100 || r.MessagesPerExchange != 6 {
		t.Errorf("%d exchanges of %v messages, want 100 of 6", r.Exchanges, r.MessagesPerExchange)
	}
	if !(0 < r.LatencyP50 && r.LatencyP50 <= r.LatencyP90 && r.LatencyP90 <= r.LatencyP99 && r.LatencyP99 <= r.LatencyMax) {
		t.Errorf("latencies not ordered: p50 %v p90 %v p99 %v max %v", r.LatencyP50, r.LatencyP90, r.LatencyP99, r.LatencyMax)
	}
	if r.ServerRSS <= 0 || r.ServerPeakRSS < r.ServerRSS || r.ServerCPU < 0 || r.Wall <= 0 {
		t.Errorf("server figures: CPU %v, RSS %d, peak %d, wall %v", r.ServerCPU, r.ServerRSS, r.ServerPeakRSS, r.Wall)
	}
}

// TestRunReportsWrongAnswers: one wrong reply among many fails the run,
// naming the exchange, instead of being counted.
func TestRunReportsWrongAnswers(t *testing.T) {
	spec := testSpec()
	spec.Expect.RoutedRequest = &MessageExpect{HeadersAbsent: []string{"x-secret"}}
	s := compile(t, spec)
	var mu sync.Mutex
	calls := 0
	reply := func(n int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestHeaders() == nil {
			return unchanged(n, req)
		}
		mu.Lock()
		calls++
		forget := calls == 30
		mu.Unlock()
		if forget {
			return unchanged(n, req)
		}
		return headersReply(req, &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{RemoveHeaders: []string{"x-secret"}}}, nil), nil
	}
	c := serve(t, &fakeProcessor{reply: reply})
	r, err := Run(t.Context(), s, []extprocsvc.ExternalProcessorClient{c}, LoadConfig{Concurrency: 4, Exchanges: 100})
	var ee *ExpectationError
	if !errors.As(err, &ee) || !strings.HasPrefix(err.Error(), "exchange ") || !strings.HasSuffix(err.Error(), `: routed_request: header x-secret = "s", want it absent`) {
		t.Fatalf("Run = %v, want the expectation error of one exchange", err)
	}
	if r != (Result{}) {
		t.Errorf("a failed run reported %+v", r)
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	s := compile(t, testSpec())
	c := serve(t, &fakeProcessor{reply: unchanged})
	r, err := Run(t.Context(), s, []extprocsvc.ExternalProcessorClient{c}, LoadConfig{Concurrency: 2, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Exchanges < 1 {
		t.Errorf("%d exchanges", r.Exchanges)
	}
}

func TestMedian(t *testing.T) {
	runs := []Result{{Exchanges: 10, ServerCPUPerReq: 300}, {Exchanges: 30, ServerCPUPerReq: 100}, {Exchanges: 20, ServerCPUPerReq: 200}}
	if m := Median(runs); m.Exchanges != 20 || m.ServerCPUPerReq != 200 {
		t.Errorf("odd count: %+v", m)
	}
	if m := Median(runs[:2]); m.Exchanges != 20 || m.ServerCPUPerReq != 200 {
		t.Errorf("even count: %+v", m)
	}
}

func equal(a, b []string) bool {
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

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
