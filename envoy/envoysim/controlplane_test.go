package envoysim

import (
	"net"
	"testing"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestControlPlaneConfig runs the control plane's production resources
// (controlplane.BuildResources) through envoysim: every field it sets must be
// implemented, and a request flows through the router processor to Plan.
func TestControlPlaneConfig(t *testing.T) {
	t.Parallel()
	g := &goodProcessor{}
	p := startProcessor(t, g.handle)
	up := startUpstream(t, sse(2, 0))
	for _, url := range []string{"https://api.anthropic.com", "http://" + up.addr()} {
		r, err := controlplane.BuildResources(controlplane.Options{
			ListenAddress: freePort(t), ExtProcAddress: p.addr, AnthropicURL: url,
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
		if _, err := compile(res); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if url != "http://"+up.addr() {
			continue
		}
		base := startSim(t, res, nil)
		got := do(t, "POST", base+"/v1/messages?beta=true", `{"stream":true}`, map[string]string{
			"x-ccproxy-key": "ak_secret", "accept-encoding": "gzip",
		})
		if got.err != nil || got.status != 200 || got.body != sseBody(2) {
			t.Fatalf("got %d %q err=%v", got.status, got.body, got.err)
		}
		reqs := up.seen()
		if len(reqs) != 1 {
			t.Fatalf("upstream saw %d requests", len(reqs))
		}
		h := reqs[0].header
		for k, want := range map[string]string{
			"x-ccproxy-key": "", "x-ccproxy-route": "", "accept-encoding": "identity",
			"x-envoy-expected-rq-timeout-ms": "", // suppress_envoy_headers
		} {
			if h.Get(k) != want {
				t.Errorf("upstream header %s = %q, want %q", k, h.Get(k), want)
			}
		}
		if got.header.Get("x-envoy-upstream-service-time") != "" {
			t.Errorf("x-envoy-upstream-service-time set despite suppress_envoy_headers")
		}
	}
}
