package controlplane

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func TestOptionsRejected(t *testing.T) {
	base := productionOptions
	with := func(f func(*Options)) Options {
		o := base
		f(&o)
		return o
	}
	tests := []struct {
		name string
		opts Options
		want string // substring of the error
	}{
		{"missing listen address", with(func(o *Options) { o.ListenAddress = "" }), `ListenAddress ""`},
		{"listen host name", with(func(o *Options) { o.ListenAddress = "localhost:8080" }), "host must be an IP address"},
		{"listen port zero", with(func(o *Options) { o.ListenAddress = "127.0.0.1:0" }), `bad port "0"`},
		{"listen port text", with(func(o *Options) { o.ListenAddress = "127.0.0.1:http" }), `bad port "http"`},
		{"missing ext_proc address", with(func(o *Options) { o.ExtProcAddress = "" }), "ExtProcAddress"},
		{"ext_proc relative socket", with(func(o *Options) { o.ExtProcAddress = "unix://run/x.sock" }), "want unix:///absolute/path"},
		{"ext_proc unclean socket", with(func(o *Options) { o.ExtProcAddress = "unix:///run/../x.sock" }), "want unix:///absolute/path"},
		{"ext_proc host name", with(func(o *Options) { o.ExtProcAddress = "extproc:9002" }), "specific IP address"},
		{"ext_proc unspecified", with(func(o *Options) { o.ExtProcAddress = "0.0.0.0:9002" }), "specific IP address"},
		{"ext_proc port", with(func(o *Options) { o.ExtProcAddress = "127.0.0.1:70000" }), `bad port "70000"`},
		{"anthropic scheme", with(func(o *Options) { o.AnthropicURL = "ftp://api.anthropic.com" }), "scheme must be http or https"},
		{"anthropic path", with(func(o *Options) { o.AnthropicURL = "https://proxy.example.com/anthropic" }), "without path"},
		{"anthropic query", with(func(o *Options) { o.AnthropicURL = "https://api.anthropic.com/?x=1" }), "without path"},
		{"anthropic credentials", with(func(o *Options) { o.AnthropicURL = "https://u:p@api.anthropic.com" }), "without path"},
		{"anthropic no host", with(func(o *Options) { o.AnthropicURL = "https://:443" }), "missing host"},
		{"anthropic bad port", with(func(o *Options) { o.AnthropicURL = "https://api.anthropic.com:0" }), `bad port "0"`},
		{"relative CA file", with(func(o *Options) { o.UpstreamCAFile = "ca.pem" }), "absolute path"},
		{"buffer below 32 MiB", with(func(o *Options) { o.MaxRequestBytes = 1 << 20 }), "below Anthropic's 32 MiB"},
		{"buffer overflow", with(func(o *Options) { o.MaxRequestBytes = ^uint32(0) }), "too large"},
		{"stream idle at client timeout", with(func(o *Options) { o.StreamIdleTimeout = 600 * time.Second }), "must exceed Claude Code's"},
		{"route idle below per-try", with(func(o *Options) { o.RouteIdleTimeout = time.Minute; o.PerTryTimeout = 2 * time.Minute }), "must exceed PerTryTimeout"},
		{"negative per-try", with(func(o *Options) { o.PerTryTimeout = -time.Second }), "must exceed PerTryTimeout"},
		{"max message below message", with(func(o *Options) { o.ExtProcMessageTimeout = time.Minute; o.ExtProcMaxMessageTimeout = time.Second }), "at least ExtProcMessageTimeout"},
		{"max message below the upstream message timeout", with(func(o *Options) { o.UpstreamExtProcMessageTimeout = 3 * time.Minute }), "at least UpstreamExtProcMessageTimeout"},
		{"negative upstream message timeout", with(func(o *Options) { o.UpstreamExtProcMessageTimeout = -time.Second }), "at least UpstreamExtProcMessageTimeout"},
		{"sub-millisecond upstream message timeout", with(func(o *Options) { o.UpstreamExtProcMessageTimeout = 1500 * time.Microsecond }), "millisecond resolution"},
		{"sub-millisecond timeout", with(func(o *Options) { o.ExtProcMessageTimeout = 1500 * time.Microsecond }), "millisecond resolution"},
		{"circuit breaker overflow", with(func(o *Options) { o.CircuitBreakers.MaxRequests = 1 << 31 }), "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildResources(tc.opts)
			if err == nil {
				t.Fatal("BuildResources succeeded")
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("error %v does not wrap ErrInvalidOptions", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if _, err := BuildSnapshot(tc.opts); !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("BuildSnapshot error = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestOptionsAccepted(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		listenHost string
		listenPort uint32
		extProc    endpointAddress
		plan       upstreamURL
	}{
		{
			name:       "defaults",
			opts:       productionOptions,
			listenHost: "0.0.0.0", listenPort: 8080,
			extProc: endpointAddress{pipe: "/run/ccproxy/extproc.sock"},
			plan:    upstreamURL{tls: true, host: "api.anthropic.com", port: 443},
		},
		{
			name:       "empty listen host, IPv6 ext_proc, http with trailing slash",
			opts:       Options{ListenAddress: ":9000", ExtProcAddress: "[::1]:9002", AnthropicURL: "http://fake.test/"},
			listenHost: "0.0.0.0", listenPort: 9000,
			extProc: endpointAddress{ip: "::1", port: 9002},
			plan:    upstreamURL{host: "fake.test", port: 80},
		},
		{
			name:       "IPv6 listener and upstream with port",
			opts:       Options{ListenAddress: "[::]:8443", ExtProcAddress: "unix:///tmp/e.sock", AnthropicURL: "https://[2001:db8::1]:8443"},
			listenHost: "::", listenPort: 8443,
			extProc: endpointAddress{pipe: "/tmp/e.sock"},
			plan:    upstreamURL{tls: true, host: "2001:db8::1", port: 8443},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.opts.resolve()
			if err != nil {
				t.Fatal(err)
			}
			if r.listenHost != tc.listenHost || r.listenPort != tc.listenPort {
				t.Errorf("listen = %s:%d, want %s:%d", r.listenHost, r.listenPort, tc.listenHost, tc.listenPort)
			}
			if r.extProc != tc.extProc {
				t.Errorf("ext_proc = %+v, want %+v", r.extProc, tc.extProc)
			}
			if r.plan != tc.plan {
				t.Errorf("plan = %+v, want %+v", r.plan, tc.plan)
			}
			if _, err := BuildResources(tc.opts); err != nil {
				t.Errorf("BuildResources: %v", err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	got := Options{ListenAddress: "a", ExtProcAddress: "b"}.WithDefaults()
	want := Options{
		ListenAddress:                 "a",
		ExtProcAddress:                "b",
		AnthropicURL:                  DefaultAnthropicURL,
		UpstreamCAFile:                DefaultUpstreamCAFile,
		BedrockURL:                    DefaultBedrockURL,
		MaxRequestBytes:               DefaultMaxRequestBytes,
		StreamIdleTimeout:             DefaultStreamIdleTimeout,
		RouteIdleTimeout:              DefaultRouteIdleTimeout,
		PerTryTimeout:                 DefaultPerTryTimeout,
		ExtProcMessageTimeout:         DefaultExtProcMessageTimeout,
		ExtProcMaxMessageTimeout:      DefaultExtProcMaxMessageTimeout,
		UpstreamExtProcMessageTimeout: DefaultUpstreamExtProcMessageTimeout,
		CircuitBreakers: CircuitBreakers{
			MaxConnections:     DefaultCircuitBreakerLimit,
			MaxPendingRequests: DefaultCircuitBreakerLimit,
			MaxRequests:        DefaultCircuitBreakerLimit,
			MaxRetries:         DefaultCircuitBreakerLimit,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WithDefaults() = %+v\nwant %+v", got, want)
	}
	set := Options{AnthropicURL: "http://x", MaxRequestBytes: 1, CircuitBreakers: CircuitBreakers{MaxRetries: 7}}.WithDefaults()
	if set.AnthropicURL != "http://x" || set.MaxRequestBytes != 1 || set.CircuitBreakers.MaxRetries != 7 || set.CircuitBreakers.MaxRequests != DefaultCircuitBreakerLimit {
		t.Errorf("WithDefaults overwrote set fields: %+v", set)
	}
}

func TestSnapshotVersions(t *testing.T) {
	build := func(o Options) map[string]string {
		t.Helper()
		snap, err := BuildSnapshot(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			t.Fatal(err)
		}
		v := map[string]string{"all": SnapshotVersion(snap)}
		for _, typ := range snapshotTypes {
			v[typ] = snap.GetVersion(typ)
			if len(snap.GetResources(typ)) == 0 {
				t.Errorf("snapshot has no %s", typ)
			}
		}
		return v
	}
	a := build(productionOptions)
	if b := build(productionOptions); a["all"] != b["all"] {
		t.Errorf("same options gave versions %s and %s", a["all"], b["all"])
	}
	moved := productionOptions
	moved.AnthropicURL = "https://anthropic.internal.example"
	c := build(moved)
	tests := []struct {
		typ     string
		changed bool
	}{
		{"all", true},
		{resource.ClusterType, true},
		{resource.ListenerType, false},
		{resource.RouteType, false},
	}
	for _, tc := range tests {
		if got := a[tc.typ] != c[tc.typ]; got != tc.changed {
			t.Errorf("%s version changed = %v, want %v", tc.typ, got, tc.changed)
		}
	}
}
