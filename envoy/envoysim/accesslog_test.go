package envoysim

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ccproxy/ccproxy/controlplane"
)

// lockedBuffer is a goroutine-safe access log sink.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// keyProcessor answers the router-level ext_proc stream as the x-test-mode request header says:
// refuse (ImmediateResponse 401, :path untouched), rewrite (:path without /ak/<key>, routed to
// plan), fail (the gRPC stream fails) or noroute (no routing header: the catch-all 404).
func keyProcessor(srv extprocsvc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := srv.Recv()
		if err != nil {
			return nil
		}
		var resp *extprocsvc.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocsvc.ProcessingRequest_RequestHeaders:
			h := r.RequestHeaders.GetHeaders()
			switch headerValue(h, "x-test-mode") {
			case "refuse":
				resp = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, Details: "ccproxy_auth_unknown_key",
				}}}
			case "fail":
				return status.Error(codes.Unavailable, "processor going away")
			case "noroute":
				resp = reqHeadersResp(common(nil, false))
			default:
				path := headerValue(h, ":path")
				if i := strings.Index(path, "/v1/"); i >= 0 {
					path = path[i:]
				}
				hm := routeHeaderMutation()
				hm.SetHeaders = append(hm.SetHeaders, &corev3.HeaderValueOption{
					Header: &corev3.HeaderValue{Key: ":path", RawValue: []byte(path)},
					//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
					Append: wrapperspb.Bool(false),
				})
				hm.RemoveHeaders = append(hm.RemoveHeaders, "x-ccproxy-key")
				resp = reqHeadersResp(common(hm, true))
			}
		case *extprocsvc.ProcessingRequest_RequestBody:
			resp = reqBodyResp(nil)
		case *extprocsvc.ProcessingRequest_ResponseHeaders:
			resp = respHeadersResp(nil)
		case *extprocsvc.ProcessingRequest_ResponseBody:
			resp = respBodyResp(nil)
		}
		if err := srv.Send(resp); err != nil {
			return nil
		}
	}
}

// TestAccessLogNeverContainsTheKey runs the control plane's listener, with its production
// access log, through envoysim and sends requests carrying an access key in the path and in
// x-ccproxy-key down every path ccproxy's processor can take — refused before any rewrite,
// rewritten and proxied, processor failure, no route — and checks each line's fields and that
// no line holds the key.
func TestAccessLogNeverContainsTheKey(t *testing.T) {
	t.Parallel()
	const key = "ak_S3cr3tAccessKeyThatMustNeverBeLogged0123456789"
	p := startProcessor(t, keyProcessor)
	up := startUpstream(t, nil)
	r, err := controlplane.BuildResources(controlplane.Options{
		ListenAddress: freePort(t), ExtProcAddress: p.addr, AnthropicURL: "http://" + up.addr(),
	}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	var res []types.Resource
	for _, c := range r.Clusters {
		res = append(res, c)
	}
	for _, c := range r.Routes {
		res = append(res, c)
	}
	for _, l := range r.Listeners {
		res = append(res, l)
	}
	logs := &lockedBuffer{}
	sim, err := New(Options{Resources: res, Logger: testLogger(t), AccessLog: logs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-sim.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("envoysim not ready")
	}
	base := "http://" + sim.Addr()

	tests := []struct {
		name, mode, path string
		header           bool // key in x-ccproxy-key instead of the path
		status           int
		want             map[string]any
	}{
		{"refused before the rewrite", "refuse", "/ak/" + key + "/v1/messages?beta=true", false, 401, map[string]any{
			"route": "not_found", "details": "ccproxy_auth_unknown_key", "flags": "-", "attempts": 0.0,
			"upstream_cluster": nil, "upstream_host": nil, "response_ms": nil,
		}},
		{"rewritten and proxied", "rewrite", "/ak/" + key + "/v1/models", false, 200, map[string]any{
			"route": "plan", "details": "via_upstream", "flags": "-", "attempts": 1.0,
			"upstream_cluster": "plan", "upstream_host": up.addr(), "bytes_sent": float64(len(`{"ok":true}`)),
		}},
		{"key in the header, proxied", "rewrite", "/v1/models", true, 200, map[string]any{
			"route": "plan", "details": "via_upstream", "attempts": 1.0, "upstream_cluster": "plan",
		}},
		{"key in the header, refused", "refuse", "/v1/models", true, 401, map[string]any{
			"route": "not_found", "details": "ccproxy_auth_unknown_key",
		}},
		{"processor failure", "fail", "/ak/" + key + "/v1/messages", false, 500, map[string]any{
			"route": "not_found", "attempts": 0.0, "upstream_cluster": nil,
		}},
		{"no route: the catch-all 404", "noroute", "/ak/" + key + "/v1/messages", false, 404, map[string]any{
			"route": "not_found", "details": "direct_response", "flags": "-", "attempts": 0.0,
		}},
	}
	for i, tc := range tests {
		hdr := map[string]string{"x-test-mode": tc.mode, "user-agent": "claude-cli/2.1.332 (external, cli)"}
		if tc.header {
			hdr["x-ccproxy-key"] = key
		}
		got := do(t, "GET", base+tc.path, "", hdr)
		if got.err != nil || got.status != tc.status {
			t.Fatalf("%s: got %d err=%v, want %d", tc.name, got.status, got.err, tc.status)
		}
		waitFor(t, func() bool { return len(logs.lines()) == i+1 })
		line := logs.lines()[i]
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: access log line %q: %v", tc.name, line, err)
		}
		common := map[string]any{
			"status": float64(tc.status), "method": "GET", "protocol": "HTTP/1.1", "client": "127.0.0.1",
			"user_agent": "claude-cli/2.1.332 (external, cli)", "upstream_failure": nil, "upstream_request_bytes": nil,
			"bytes_received": 0.0,
		}
		for k, v := range tc.want {
			common[k] = v
		}
		for k, v := range common {
			if m[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", tc.name, k, m[k], v)
			}
		}
		if len(m) != len(controlplane.AccessLogFields()) {
			t.Errorf("%s: %d fields, want %d: %s", tc.name, len(m), len(controlplane.AccessLogFields()), line)
		}
		if id, _ := m["request_id"].(string); len(id) != 36 {
			t.Errorf("%s: request_id = %v, want Envoy's generated UUID", tc.name, m["request_id"])
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", m["start_time"].(string)); err != nil {
			t.Errorf("%s: start_time %v: %v", tc.name, m["start_time"], err)
		}
		if d, ok := m["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("%s: duration_ms = %v", tc.name, m["duration_ms"])
		}
	}
	all := strings.Join(logs.lines(), "\n")
	if strings.Contains(all, key) || strings.Contains(all, "/ak/") {
		t.Errorf("the access log holds the key or a key path:\n%s", all)
	}
}
