package envoysim

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestStreamIdleTimeoutMidStream: once the response started, the idle
// timeout resets the stream (no local reply is possible any more).
func TestStreamIdleTimeoutMidStream(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		_, _ = io.WriteString(w, "event: a\n\n")
		w.(http.Flusher).Flush()
		// Silent for far longer than the bound below: only the idle
		// timeout can end the response in time.
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	})
	c := cfg{noExtProc: true, backendAddr: up.addr(), hcm: func(h *hcmv3.HttpConnectionManager) {
		h.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
	}}
	url := startSim(t, c.resources(t), nil)
	start := time.Now()
	got := do(t, "GET", url+"/", "", nil)
	if got.status != 200 || got.err == nil || got.body != "event: a\n\n" || time.Since(start) > 20*time.Second {
		t.Fatalf("got %d %q err=%v after %v, want a reset after the first event", got.status, got.body, got.err, time.Since(start))
	}
}

// TestH2CDownstream: codec AUTO serves HTTP/2 with prior knowledge.
func TestH2CDownstream(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, sse(2, 0))
	url := startSim(t, cfg{noExtProc: true, backendAddr: up.addr()}.resources(t), nil)
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: protos}, Timeout: 10 * time.Second}
	resp, err := client.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != sseBody(2) {
		t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, b)
	}
}

// TestExtProcOverUnixSocket: the production ext_proc cluster is a pipe.
func TestExtProcOverUnixSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "extproc.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := &goodProcessor{}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, &fakeProcessor{handle: g.handle})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	up := startUpstream(t, nil)
	c := cfg{procAddr: "127.0.0.1:9", backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second)}
	res := c.resources(t)
	for _, r := range res {
		if cl, ok := r.(*clusterv3.Cluster); ok && cl.GetName() == "ccproxy_extproc" {
			cl.LoadAssignment.Endpoints[0].LbEndpoints[0].HostIdentifier = &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: sock}}},
			}}
		}
	}
	url := startSim(t, res, nil)
	if got := do(t, "POST", url+"/", "{}", nil); got.status != 200 || got.body != `{"ok":true}` {
		t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
	}
}

// BenchmarkPassThrough measures envoysim's own cost per request: directly to
// a local upstream, and through the router ext_proc filter in the contract
// modes (BUFFERED request and response bodies).
func BenchmarkPassThrough(b *testing.B) {
	body := strings.Repeat("x", 48<<10)
	for _, withExtProc := range []bool{false, true} {
		name := "direct"
		if withExtProc {
			name = "ext_proc"
		}
		b.Run(name, func(b *testing.B) {
			up := startUpstream(b, nil)
			c := cfg{noExtProc: !withExtProc, backendAddr: up.addr(), messageTimeout: durationpb.New(10 * time.Second)}
			if withExtProc {
				g := &goodProcessor{noRecord: true}
				c.procAddr = startProcessor(b, g.handle).addr
			}
			url := startSim(b, c.resources(b), nil)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := client.Post(url+"/v1/messages", "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// TestStreamedRequestBody: STREAMED request chunks are mutated in order and
// content-length is removed (the body length may change).
func TestStreamedRequestBody(t *testing.T) {
	t.Parallel()
	mode := contractMode()
	mode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
	p := startProcessor(t, safe(func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
		for {
			req := recvOrStop(srv)
			switch r := req.GetRequest().(type) {
			case *extprocsvc.ProcessingRequest_RequestHeaders:
				_ = srv.Send(reqHeadersResp(common(routeHeaderMutation(), true)))
			case *extprocsvc.ProcessingRequest_RequestBody:
				b := append([]byte(strings.ToUpper(string(r.RequestBody.GetBody()))), '!')
				_ = srv.Send(reqBodyResp(&extprocsvc.CommonResponse{BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: b}}}))
			case *extprocsvc.ProcessingRequest_ResponseHeaders:
				_ = srv.Send(respHeadersResp(nil))
			case *extprocsvc.ProcessingRequest_ResponseBody:
				_ = srv.Send(respBodyResp(nil))
			}
		}
	}))
	up := startUpstream(t, nil)
	url := startSim(t, cfg{procAddr: p.addr, backendAddr: up.addr(), mode: mode, messageTimeout: durationpb.New(5 * time.Second)}.resources(t), nil)
	got := do(t, "POST", url+"/", "hello", nil)
	if got.status != 200 {
		t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
	}
	reqs := up.seen()
	if len(reqs) != 1 || !strings.HasPrefix(reqs[0].body, "HELLO!") || reqs[0].header.Get("content-length") != "" {
		t.Fatalf("upstream saw %+v", reqs)
	}
}

// TestBufferedResponseOverLimit: a BUFFERED response body over the buffer
// limit is a local 500.
func TestBufferedResponseOverLimit(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("y", 4096))
	})
	c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second),
		listener: func(l *listenerv3.Listener) { l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024) }}
	url := startSim(t, c.resources(t), nil)
	got := do(t, "POST", url+"/", "{}", nil)
	if got.status != 500 || got.body != "Internal Server Error" {
		t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
	}
}

// TestDynamicMetadata: only receiving namespaces are kept, and forwarding
// namespaces come back in metadata_context on later messages.
func TestDynamicMetadata(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	g.onResp = func(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() == nil {
			return nil
		}
		r := reqHeadersResp(nil)
		r.DynamicMetadata = must(structpb.NewStruct(map[string]any{
			"ccproxy": map[string]any{"user": "u1"},
			"other":   map[string]any{"x": "y"},
		}))
		return r
	}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, nil)
	c := cfg{procAddr: p.addr, backendAddr: up.addr(), messageTimeout: durationpb.New(5 * time.Second),
		extProc: func(e *extprocv3.ExternalProcessor) {
			e.MetadataOptions = &extprocv3.MetadataOptions{
				ReceivingNamespaces:  &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{"ccproxy"}},
				ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{"ccproxy", "other"}},
			}
		}}
	url := startSim(t, c.resources(t), nil)
	if got := do(t, "POST", url+"/", "{}", nil); got.status != 200 {
		t.Fatalf("got %d %q", got.status, got.body)
	}
	seen := g.seen()
	if len(seen) < 2 {
		t.Fatalf("processor saw %d messages", len(seen))
	}
	md := seen[1].GetMetadataContext().GetFilterMetadata()
	if len(md) != 1 || md["ccproxy"].GetFields()["user"].GetStringValue() != "u1" {
		t.Fatalf("metadata_context %v, want only ccproxy.user", md)
	}
}

// TestVirtualHostSelection: RouteMatcher::findVirtualHost — an exact domain,
// then the longest suffix wildcard, then the longest prefix wildcard, then
// "*"; the host header is lower-cased first.
func TestVirtualHostSelection(t *testing.T) {
	t.Parallel()
	rc := &routeConfig{vhosts: []*virtualHost{
		{name: "default", domains: []string{"*"}},
		{name: "suffix", domains: []string{"*.example.com"}},
		{name: "longer-suffix", domains: []string{"*.api.example.com"}},
		{name: "prefix", domains: []string{"gw.*"}},
		{name: "exact", domains: []string{"gw.api.example.com"}},
	}}
	for host, want := range map[string]string{
		"gw.api.example.com": "exact",
		"GW.API.EXAMPLE.COM": "exact",
		"x.api.example.com":  "longer-suffix",
		"x.example.com":      "suffix",
		"gw.other.net":       "prefix",
		"other.net":          "default",
		"example.com":        "default",
	} {
		if got := rc.findVirtualHost(strings.ToLower(host)); got == nil || got.name != want {
			t.Errorf("%s: virtual host %v, want %s", host, got, want)
		}
	}
}
