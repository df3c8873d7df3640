package envoysim

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// sse streams n events with a pause between them.
func sse(n int, pause time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		w.WriteHeader(200)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "event: ping\ndata: {\"i\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(pause)
		}
	}
}

func sseBody(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "event: ping\ndata: {\"i\":%d}\n\n", i)
	}
	return b.String()
}

func TestWellBehavedProcessor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		method     string
		body       string
		upstream   http.HandlerFunc
		wantStatus int
		wantBody   string
		// message kinds the processor must have seen, in order
		wantSeen []string
	}{
		{
			name: "buffered JSON", method: "POST", body: `{"model":"claude","stream":false}`,
			wantStatus: 200, wantBody: `{"ok":true}`,
			wantSeen: []string{"request_headers", "request_body", "response_headers", "response_body"},
		},
		{
			name: "no body", method: "GET",
			wantStatus: 200, wantBody: `{"ok":true}`,
			wantSeen: []string{"request_headers", "response_headers", "response_body"},
		},
		{
			name: "SSE switched to STREAMED", method: "POST", body: `{"stream":true}`,
			upstream:   sse(3, 50*time.Millisecond),
			wantStatus: 200, wantBody: sseBody(3),
			wantSeen: []string{"request_headers", "request_body", "response_headers", "response_body", "response_body", "response_body", "response_body"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := &goodProcessor{}
			p := startProcessor(t, g.handle)
			up := startUpstream(t, tt.upstream)
			url := startSim(t, cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second)}.resources(t), nil)
			got := do(t, tt.method, url+"/v1/messages?beta=true", tt.body, map[string]string{
				"x-api-key": "sk-test", "x-ccproxy-route": "forged", "x-request-id": "client-id",
				"x-envoy-retry-on": "5xx", "x-envoy-custom": "kept",
			})
			if got.err != nil || got.status != tt.wantStatus || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, tt.wantStatus, tt.wantBody)
			}
			if got.header.Get("server") != "envoy" {
				t.Errorf("server header %q, want envoy", got.header.Get("server"))
			}
			reqs := up.seen()
			if len(reqs) != 1 {
				t.Fatalf("upstream saw %d requests", len(reqs))
			}
			r := reqs[0]
			if r.body != tt.body || r.path != "/v1/messages?beta=true" || r.header.Get("x-api-key") != "sk-test" {
				t.Errorf("upstream got %s %q %q", r.path, r.body, r.header.Get("x-api-key"))
			}
			for k, want := range map[string]string{
				"x-ccproxy-route": "", "x-envoy-retry-on": "", "x-envoy-custom": "kept",
				"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "x-envoy-external-address": "127.0.0.1",
				"x-envoy-expected-rq-timeout-ms": "15000",
			} {
				if v := r.header.Get(k); v != want {
					t.Errorf("upstream header %s = %q, want %q", k, v, want)
				}
			}
			if id := r.header.Get("x-request-id"); id == "client-id" || len(id) != 36 {
				t.Errorf("x-request-id %q: an edge request's id must be replaced by a UUID", id)
			}
			var kinds []string
			for _, m := range g.seen() {
				switch m.GetRequest().(type) {
				case *extprocsvc.ProcessingRequest_RequestHeaders:
					kinds = append(kinds, "request_headers")
					if m.GetProtocolConfig().GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED {
						t.Errorf("protocol_config missing on the first message: %v", m.GetProtocolConfig())
					}
					if headerValue(m.GetRequestHeaders().GetHeaders(), ":path") != "/v1/messages?beta=true" {
						t.Errorf(":path not sent as raw_value")
					}
				case *extprocsvc.ProcessingRequest_RequestBody:
					kinds = append(kinds, "request_body")
					if !m.GetRequestBody().GetEndOfStream() || string(m.GetRequestBody().GetBody()) != tt.body {
						t.Errorf("buffered request body %q eos=%v", m.GetRequestBody().GetBody(), m.GetRequestBody().GetEndOfStream())
					}
				case *extprocsvc.ProcessingRequest_ResponseHeaders:
					kinds = append(kinds, "response_headers")
				case *extprocsvc.ProcessingRequest_ResponseBody:
					kinds = append(kinds, "response_body")
				}
			}
			// Chunking of a stream depends on timing; compare the prefix and
			// require at least the expected number of messages.
			if len(kinds) < len(tt.wantSeen) || strings.Join(kinds[:3], ",") != strings.Join(tt.wantSeen[:3], ",") {
				t.Errorf("processor saw %v, want %v", kinds, tt.wantSeen)
			}
		})
	}
}

func recvOrStop(srv extprocsvc.ExternalProcessor_ProcessServer) *extprocsvc.ProcessingRequest {
	req, err := srv.Recv()
	if err != nil {
		panic(errStop)
	}
	return req
}

// safe turns errStop panics into a clean stream end.
func safe(fn func(srv extprocsvc.ExternalProcessor_ProcessServer) error) procFunc {
	return func(srv extprocsvc.ExternalProcessor_ProcessServer) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r != errStop {
					panic(r)
				}
				err = nil
			}
		}()
		return fn(srv)
	}
}

func TestProcessorRules(t *testing.T) {
	t.Parallel()
	body := `{"model":"claude"}`
	okHeaders := reqHeadersResp(nil)
	tests := []struct {
		name       string
		proc       procFunc
		conf       func(*cfg)
		upstream   http.HandlerFunc
		wantStatus int
		wantBody   string
		wantHeader map[string]string
		// wantUpstreamBody is checked when set
		wantUpstreamBody *string
	}{
		{
			name: "body reply to a headers message is spurious",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(nil))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			// Since envoyproxy/envoy 8a214e8a71 (2024, "Remove runtime flag
			// envoy_reloadable_features_send_header_raw_value") only raw_value
			// is read; value is ignored, even when both are set.
			name: "value and raw_value both set: value ignored",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				hm := routeHeaderMutation()
				hm.SetHeaders = append(hm.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-custom", Value: "ignored", RawValue: []byte("kept")}})
				_ = srv.Send(reqBodyResp(common(hm, true)))
				recvOrStop(srv)
				_ = srv.Send(respHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				return nil
			}),
			upstream: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, r.Header.Get("x-custom"))
			},
			wantStatus: 200, wantBody: "kept",
		},
		{
			name: "invalid header value characters",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(reqHeadersResp(common(&extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
					Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("a\r\nb")},
				}}}, false)))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			name: "invalid header name characters",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(reqHeadersResp(common(&extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
					Header: &corev3.HeaderValue{Key: "x a", RawValue: []byte("b")},
				}}}, false)))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			name: "reply slower than message_timeout",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				time.Sleep(400 * time.Millisecond)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				return nil
			}),
			conf:       func(c *cfg) { c.messageTimeout = durationpb.New(100 * time.Millisecond) },
			wantStatus: 504, wantBody: "",
		},
		{
			name: "message_timeout with failure_mode_allow continues without the processor",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				time.Sleep(400 * time.Millisecond)
				recvOrStop(srv)
				return nil
			}),
			conf: func(c *cfg) {
				c.messageTimeout = durationpb.New(100 * time.Millisecond)
				c.extProc = func(e *extprocv3.ExternalProcessor) { e.FailureModeAllow = true }
			},
			// The routing header was never set: the catch-all answers.
			wantStatus: 404, wantBody: "no route",
		},
		{
			name: "override_message_timeout within max_message_timeout extends the wait",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(&extprocsvc.ProcessingResponse{OverrideMessageTimeout: durationpb.New(2 * time.Second)})
				time.Sleep(400 * time.Millisecond)
				_ = srv.Send(reqHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), true)))
				recvOrStop(srv)
				_ = srv.Send(respHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				return nil
			}),
			conf: func(c *cfg) {
				c.messageTimeout = durationpb.New(100 * time.Millisecond)
				c.extProc = func(e *extprocv3.ExternalProcessor) { e.MaxMessageTimeout = durationpb.New(5 * time.Second) }
			},
			wantStatus: 200, wantBody: `{"ok":true}`,
		},
		{
			name: "override_message_timeout ignored without max_message_timeout",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(&extprocsvc.ProcessingResponse{OverrideMessageTimeout: durationpb.New(2 * time.Second)})
				time.Sleep(400 * time.Millisecond)
				_ = srv.Send(reqHeadersResp(nil))
				recvOrStop(srv)
				return nil
			}),
			conf:       func(c *cfg) { c.messageTimeout = durationpb.New(100 * time.Millisecond) },
			wantStatus: 504, wantBody: "",
		},
		{
			name: "ImmediateResponse",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(&extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
					Body:   []byte(`{"type":"error"}`),
					Headers: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
						Header: &corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")},
					}}},
				}}})
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 401, wantBody: `{"type":"error"}`,
			wantHeader: map[string]string{"content-type": "application/json", "content-length": "16"},
		},
		{
			name: "ImmediateResponse status below 200 becomes 200",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(&extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_Continue},
					Body:   []byte("hi"),
				}}})
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 200, wantBody: "hi",
			wantHeader: map[string]string{"content-type": "text/plain"},
		},
		{
			name: "clear_route_cache without a header mutation is ignored",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(reqHeadersResp(common(routeHeaderMutation(), false)))
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(nil, true)))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 404, wantBody: "no route",
		},
		{
			name: "header mutation without clear_route_cache keeps the cached route",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), false)))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 404, wantBody: "no route",
		},
		{
			name: "buffered body mutation with a mismatching content-length",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				cr := common(routeHeaderMutation(), true)
				cr.BodyMutation = &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(`{"x":1}`)}}
				_ = srv.Send(reqBodyResp(cr))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			name: "buffered body mutation with content-length set in the same reply",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				hm := routeHeaderMutation()
				hm.SetHeaders = append(hm.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "content-length", RawValue: []byte("7")}})
				cr := common(hm, true)
				cr.BodyMutation = &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(`{"x":1}`)}}
				_ = srv.Send(reqBodyResp(cr))
				recvOrStop(srv)
				_ = srv.Send(respHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				return nil
			}),
			wantStatus: 200, wantBody: `{"ok":true}`, wantUpstreamBody: ptr(`{"x":1}`),
		},
		{
			name: "gRPC error",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				return status.Error(codes.Internal, "boom")
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			name: "gRPC error with status_on_error",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				return status.Error(codes.Unavailable, "down")
			}),
			conf: func(c *cfg) {
				c.extProc = func(e *extprocv3.ExternalProcessor) {
					e.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
				}
			},
			wantStatus: 503, wantBody: "",
		},
		{
			name: "gRPC error with failure_mode_allow continues without the processor",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				return status.Error(codes.Internal, "boom")
			}),
			conf:       func(c *cfg) { c.extProc = func(e *extprocv3.ExternalProcessor) { e.FailureModeAllow = true } },
			wantStatus: 404, wantBody: "no route",
		},
		{
			name: "stream closed with OK: the request continues without the processor",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), true)))
				return nil // response phases are not processed
			}),
			wantStatus: 200, wantBody: `{"ok":true}`,
		},
		{
			name: "two replies to one buffered body",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), true)))
				_ = srv.Send(reqBodyResp(nil))
				recvOrStop(srv)
				return nil
			}),
			upstream: func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(300 * time.Millisecond)
				_, _ = w.Write([]byte("late"))
			},
			wantStatus: 500, wantBody: "",
		},
		{
			name: "response body reply while response headers are awaited",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), true)))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
		{
			name: "default mutation rules ignore routing and x-envoy headers",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				_ = srv.Send(okHeaders)
				recvOrStop(srv)
				hm := routeHeaderMutation()
				for _, k := range []string{":authority", "host", ":method", ":scheme", "x-envoy-foo", "x-custom"} {
					hm.SetHeaders = append(hm.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte("evil")}})
				}
				_ = srv.Send(reqBodyResp(common(hm, true)))
				recvOrStop(srv)
				_ = srv.Send(respHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				return nil
			}),
			upstream: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s %s %s %q %q", r.Method, r.Host, r.URL.Path, r.Header.Get("x-envoy-foo"), r.Header.Get("x-custom"))
			},
			wantStatus: 200, wantBody: `POST HOST /v1/messages "" "evil"`,
		},
		{
			name: "CONTINUE_AND_REPLACE on request headers replaces the body",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				cr := common(routeHeaderMutation(), true)
				cr.Status = extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
				cr.BodyMutation = &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("replaced")}}
				_ = srv.Send(reqHeadersResp(cr))
				recvOrStop(srv)
				_ = srv.Send(respHeadersResp(nil))
				recvOrStop(srv)
				_ = srv.Send(respBodyResp(nil))
				return nil
			}),
			wantStatus: 200, wantBody: `{"ok":true}`, wantUpstreamBody: ptr("replaced"),
		},
		{
			name: "mode_override to an unimplemented mode fails loudly",
			proc: safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				recvOrStop(srv)
				r := reqHeadersResp(nil)
				r.ModeOverride = &extprocv3.ProcessingMode{RequestBodyMode: extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED}
				_ = srv.Send(r)
				recvOrStop(srv)
				return nil
			}),
			wantStatus: 500, wantBody: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProcessor(t, tt.proc)
			up := startUpstream(t, tt.upstream)
			c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second)}
			if tt.conf != nil {
				tt.conf(&c)
			}
			url := startSim(t, c.resources(t), nil)
			got := do(t, "POST", url+"/v1/messages", body, map[string]string{"host": "HOST"})
			if got.err != nil || got.status != tt.wantStatus || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got.header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, got.header.Get(k), v)
				}
			}
			if tt.wantUpstreamBody != nil {
				reqs := up.seen()
				if len(reqs) != 1 || reqs[0].body != *tt.wantUpstreamBody {
					t.Errorf("upstream saw %+v, want body %q", reqs, *tt.wantUpstreamBody)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestStreamedResponseRules drives STREAMED response bodies.
func TestStreamedResponseRules(t *testing.T) {
	t.Parallel()
	streamed := contractMode()
	streamed.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
	tests := []struct {
		name      string
		onChunk   func(srv extprocsvc.ExternalProcessor_ProcessServer, req *extprocsvc.ProcessingRequest, n int)
		conf      func(*cfg)
		wantBody  string
		wantReset bool
	}{
		{
			name: "one reply per chunk with mutation",
			onChunk: func(srv extprocsvc.ExternalProcessor_ProcessServer, req *extprocsvc.ProcessingRequest, n int) {
				b := bytes.ToUpper(req.GetResponseBody().GetBody())
				_ = srv.Send(respBodyResp(&extprocsvc.CommonResponse{BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: b}}}))
			},
			wantBody: strings.ToUpper(sseBody(3)),
		},
		{
			name: "two replies to one chunk reset the stream",
			onChunk: func(srv extprocsvc.ExternalProcessor_ProcessServer, req *extprocsvc.ProcessingRequest, n int) {
				_ = srv.Send(respBodyResp(nil))
				if n == 0 {
					_ = srv.Send(respBodyResp(nil))
				}
			},
			wantReset: true,
		},
		{
			// A reply to a later chunk is matched to the oldest pending one;
			// after any reply Envoy stops the message timer even with chunks
			// pending (onFinishProcessorCall), so a missing reply stalls the
			// response until the stream idle timeout resets it.
			name: "a missing reply stalls until the stream idle timeout",
			onChunk: func(srv extprocsvc.ExternalProcessor_ProcessServer, req *extprocsvc.ProcessingRequest, n int) {
				if n != 1 {
					_ = srv.Send(respBodyResp(nil))
				}
			},
			conf: func(c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(time.Second) }
			},
			wantReset: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProcessor(t, safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
				n := 0
				for {
					req := recvOrStop(srv)
					switch req.GetRequest().(type) {
					case *extprocsvc.ProcessingRequest_RequestHeaders:
						_ = srv.Send(reqHeadersResp(nil))
					case *extprocsvc.ProcessingRequest_RequestBody:
						_ = srv.Send(reqBodyResp(common(routeHeaderMutation(), true)))
					case *extprocsvc.ProcessingRequest_ResponseHeaders:
						_ = srv.Send(respHeadersResp(nil))
					case *extprocsvc.ProcessingRequest_ResponseBody:
						tt.onChunk(srv, req, n)
						n++
					}
				}
			}))
			up := startUpstream(t, sse(3, 100*time.Millisecond))
			c := cfg{procAddr: p.addr, backendAddr: up.addr(), mode: streamed, messageTimeout: durationpb.New(300 * time.Millisecond)}
			if tt.conf != nil {
				tt.conf(&c)
			}
			url := startSim(t, c.resources(t), nil)
			got := do(t, "POST", url+"/v1/messages", "{}", nil)
			if tt.wantReset {
				if got.err == nil {
					t.Fatalf("want a reset stream, got %d %q", got.status, got.body)
				}
				return
			}
			if got.err != nil || got.status != 200 || got.body != tt.wantBody {
				t.Fatalf("got %d %q err=%v, want %q", got.status, got.body, got.err, tt.wantBody)
			}
		})
	}
}

func TestModeOverrideNeedsAllowModeOverride(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, sse(3, 30*time.Millisecond))
	c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second),
		extProc: func(e *extprocv3.ExternalProcessor) { e.AllowModeOverride = false }}
	url := startSim(t, c.resources(t), nil)
	got := do(t, "POST", url+"/", "{}", nil)
	if got.status != 200 || got.body != sseBody(3) {
		t.Fatalf("got %d %q", got.status, got.body)
	}
	var bodies []*extprocsvc.HttpBody
	for _, m := range g.seen() {
		if b := m.GetResponseBody(); b != nil {
			bodies = append(bodies, b)
		}
	}
	// Still BUFFERED: the whole response in one message.
	if len(bodies) != 1 || string(bodies[0].GetBody()) != sseBody(3) || !bodies[0].GetEndOfStream() {
		t.Fatalf("response bodies %v", bodies)
	}
}

// TestModeOverrideSkipsRequestBody: a request headers reply whose
// mode_override sets the request body mode to NONE ends the request's
// processing. The body, held while the headers were processed, goes upstream
// unchanged and never to the processor (ProcessorState::handleHeaderContinue
// at v1.37.0 6d9bb7d9 and v1.38.0 f1dd21b1: body mode NONE falls through to
// handleTrailersAndCleanup, which continues the held data); the response is
// processed as the override's response modes say.
func TestModeOverrideSkipsRequestBody(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	g.onResp = func(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() == nil {
			return nil
		}
		resp := reqHeadersResp(common(routeHeaderMutation(), true))
		resp.ModeOverride = &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		}
		return resp
	}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, sse(3, 10*time.Millisecond))
	c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second)}
	url := startSim(t, c.resources(t), nil)
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 100_000) + `"}]}`
	got := do(t, "POST", url+"/v1/messages", body, nil)
	if got.err != nil || got.status != 200 || got.body != sseBody(3) {
		t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
	}
	if reqs := up.seen(); len(reqs) != 1 || reqs[0].body != body {
		t.Fatalf("upstream saw %d requests; want 1 with the body unchanged", len(reqs))
	}
	var kinds []string
	for _, m := range g.seen() {
		switch {
		case m.GetRequestHeaders() != nil:
			kinds = append(kinds, "request_headers")
		case m.GetRequestBody() != nil:
			kinds = append(kinds, "request_body")
		case m.GetResponseHeaders() != nil:
			kinds = append(kinds, "response_headers")
		case m.GetResponseBody() != nil:
			kinds = append(kinds, "response_body")
		}
	}
	// Then the response body, STREAMED by the processor's own override at
	// the response headers.
	if len(kinds) < 3 || kinds[0] != "request_headers" || kinds[1] != "response_headers" || slices.Contains(kinds, "request_body") {
		t.Fatalf("the processor saw %v; want request_headers, response_headers, then the response body, and no request body", kinds)
	}
}
