package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Defaults for Options. Each one is a production value for Claude Code traffic on Envoy 1.40;
// the reason for each is given where it is used in resources.go.
const (
	// DefaultAnthropicURL is Plan's public endpoint.
	DefaultAnthropicURL = "https://api.anthropic.com"
	// DefaultUpstreamCAFile is the Debian/Ubuntu/Alpine system CA bundle, present in the
	// official Envoy images.
	DefaultUpstreamCAFile = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultMaxRequestBytes (50 MiB) bounds a buffered request or response body. Anthropic
	// accepts request bodies up to 32 MB; Claude Code sends large images and long contexts.
	DefaultMaxRequestBytes uint32 = 50 << 20
	// DefaultStreamIdleTimeout is above Claude Code's 600 s client timeout (API_TIMEOUT_MS).
	DefaultStreamIdleTimeout = 15 * time.Minute
	// DefaultRouteIdleTimeout is above DefaultPerTryTimeout, so the idle timer never fires while
	// Envoy still legitimately waits for response headers.
	DefaultRouteIdleTimeout = 11 * time.Minute
	// DefaultPerTryTimeout equals Claude Code's 600 s client timeout: a non-streaming answer's
	// headers arrive only when the whole answer is generated, and the client waits that long.
	DefaultPerTryTimeout = 10 * time.Minute
	// DefaultExtProcMessageTimeout replaces ext_proc's 200 ms default; a 32 MB body crosses the
	// gRPC stream in one message.
	DefaultExtProcMessageTimeout = 30 * time.Second
	// DefaultExtProcMaxMessageTimeout is the ceiling for a processor's override_message_timeout.
	DefaultExtProcMaxMessageTimeout = 2 * time.Minute
	// DefaultCircuitBreakerLimit sizes every circuit-breaker threshold of the plan cluster for
	// one Envoy replica; Envoy's own defaults are 1024, and only 3 for max_retries.
	DefaultCircuitBreakerLimit uint32 = 4096

	// ClaudeCodeClientTimeout is Claude Code's default API timeout (API_TIMEOUT_MS=600000).
	ClaudeCodeClientTimeout = 600 * time.Second

	// minMaxRequestBytes is Anthropic's request size limit; a smaller buffer would refuse
	// requests that Plan accepts.
	minMaxRequestBytes uint32 = 32 << 20
	// grpcMessageHeadroom is added to MaxRequestBytes for the ext_proc gRPC message limit: a
	// body mutation carries the body plus headers and protobuf framing.
	grpcMessageHeadroom uint32 = 1 << 20
)

// Options is the input of BuildResources. The zero value of every field but ListenAddress and
// ExtProcAddress selects the default.
type Options struct {
	// ListenAddress is host:port of the Envoy listener; host must be an IP literal or empty
	// (all IPv4 interfaces). Dev: 127.0.0.1:8080.
	ListenAddress string
	// ExtProcAddress is the ext_proc sidecar: unix:///absolute/path or ip:port.
	ExtProcAddress string
	// AnthropicURL is the Plan upstream, scheme://host[:port] with no path. https uses TLS
	// verified against UpstreamCAFile; http (tests, private endpoints) is plaintext HTTP/1.1.
	AnthropicURL string
	// UpstreamCAFile is the PEM bundle Envoy verifies upstream certificates against.
	UpstreamCAFile string

	// MaxRequestBytes bounds buffered bodies: listener and ext_proc cluster buffers, the
	// route's retry buffer and (plus headroom) the ext_proc gRPC message size.
	MaxRequestBytes uint32
	// StreamIdleTimeout is the HCM stream idle timeout; must exceed ClaudeCodeClientTimeout.
	StreamIdleTimeout time.Duration
	// RouteIdleTimeout is the route idle timeout; must exceed PerTryTimeout.
	RouteIdleTimeout time.Duration
	// PerTryTimeout bounds the wait for an upstream attempt's response headers.
	PerTryTimeout time.Duration
	// ExtProcMessageTimeout is ext_proc's per-message timeout.
	ExtProcMessageTimeout time.Duration
	// ExtProcMaxMessageTimeout caps override_message_timeout; at least ExtProcMessageTimeout.
	ExtProcMaxMessageTimeout time.Duration
	// CircuitBreakers sizes the plan cluster's thresholds for one Envoy replica.
	CircuitBreakers CircuitBreakers
}

// CircuitBreakers are the DEFAULT-priority thresholds of an upstream cluster. Zero fields take
// DefaultCircuitBreakerLimit.
type CircuitBreakers struct {
	// MaxConnections bounds upstream connections (HTTP/1.1 needs one per concurrent request).
	MaxConnections uint32
	// MaxPendingRequests bounds requests waiting for a connection.
	MaxPendingRequests uint32
	// MaxRequests bounds concurrent requests (streams on HTTP/2).
	MaxRequests uint32
	// MaxRetries bounds concurrent retries; beyond it Envoy silently stops retrying, so it is
	// sized like MaxRequests.
	MaxRetries uint32
}

// WithDefaults returns o with every zero tunable replaced by its default.
func (o Options) WithDefaults() Options {
	if o.AnthropicURL == "" {
		o.AnthropicURL = DefaultAnthropicURL
	}
	if o.UpstreamCAFile == "" {
		o.UpstreamCAFile = DefaultUpstreamCAFile
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.StreamIdleTimeout == 0 {
		o.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if o.RouteIdleTimeout == 0 {
		o.RouteIdleTimeout = DefaultRouteIdleTimeout
	}
	if o.PerTryTimeout == 0 {
		o.PerTryTimeout = DefaultPerTryTimeout
	}
	if o.ExtProcMessageTimeout == 0 {
		o.ExtProcMessageTimeout = DefaultExtProcMessageTimeout
	}
	if o.ExtProcMaxMessageTimeout == 0 {
		o.ExtProcMaxMessageTimeout = DefaultExtProcMaxMessageTimeout
	}
	cb := &o.CircuitBreakers
	for _, f := range []*uint32{&cb.MaxConnections, &cb.MaxPendingRequests, &cb.MaxRequests, &cb.MaxRetries} {
		if *f == 0 {
			*f = DefaultCircuitBreakerLimit
		}
	}
	return o
}

// ErrInvalidOptions is wrapped by every error BuildResources returns for bad Options.
var ErrInvalidOptions = errors.New("controlplane: invalid options")

// resolved is Options after defaults, validation and parsing.
type resolved struct {
	Options
	listenHost string
	listenPort uint32
	extProc    endpointAddress
	plan       upstreamURL
}

// endpointAddress is either a Unix socket path or an IP and port.
type endpointAddress struct {
	pipe string
	ip   string
	port uint32
}

// upstreamURL is a parsed AnthropicURL.
type upstreamURL struct {
	tls  bool
	host string // DNS name or IP literal, no brackets
	port uint32
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
}

// resolve applies defaults and checks every field.
func (o Options) resolve() (resolved, error) {
	r := resolved{Options: o.WithDefaults()}
	var err error
	if r.listenHost, r.listenPort, err = parseListenAddress(r.ListenAddress); err != nil {
		return resolved{}, err
	}
	if r.extProc, err = parseExtProcAddress(r.ExtProcAddress); err != nil {
		return resolved{}, err
	}
	if r.plan, err = parseUpstreamURL(r.AnthropicURL); err != nil {
		return resolved{}, err
	}
	if r.plan.tls && !path.IsAbs(r.UpstreamCAFile) {
		return resolved{}, invalid("UpstreamCAFile %q: must be an absolute path", r.UpstreamCAFile)
	}
	if r.MaxRequestBytes < minMaxRequestBytes {
		return resolved{}, invalid("MaxRequestBytes %d: below Anthropic's 32 MiB request limit", r.MaxRequestBytes)
	}
	if r.MaxRequestBytes > ^uint32(0)-grpcMessageHeadroom {
		return resolved{}, invalid("MaxRequestBytes %d: too large", r.MaxRequestBytes)
	}
	if r.StreamIdleTimeout <= ClaudeCodeClientTimeout {
		return resolved{}, invalid("StreamIdleTimeout %s: must exceed Claude Code's %s client timeout", r.StreamIdleTimeout, ClaudeCodeClientTimeout)
	}
	if r.PerTryTimeout < 0 || r.RouteIdleTimeout <= r.PerTryTimeout {
		return resolved{}, invalid("RouteIdleTimeout %s must exceed PerTryTimeout %s (> 0)", r.RouteIdleTimeout, r.PerTryTimeout)
	}
	if r.ExtProcMessageTimeout < 0 || r.ExtProcMaxMessageTimeout < r.ExtProcMessageTimeout {
		return resolved{}, invalid("ExtProcMaxMessageTimeout %s must be at least ExtProcMessageTimeout %s (> 0)", r.ExtProcMaxMessageTimeout, r.ExtProcMessageTimeout)
	}
	for _, d := range []time.Duration{r.StreamIdleTimeout, r.RouteIdleTimeout, r.PerTryTimeout, r.ExtProcMessageTimeout, r.ExtProcMaxMessageTimeout} {
		if d%time.Millisecond != 0 {
			return resolved{}, invalid("timeout %s: Envoy timeouts have millisecond resolution", d)
		}
	}
	if r.CircuitBreakers.MaxRequests > ^uint32(0)/2 {
		return resolved{}, invalid("CircuitBreakers.MaxRequests %d: too large", r.CircuitBreakers.MaxRequests)
	}
	return r, nil
}

func parsePort(s, what string) (uint32, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, invalid("%s: bad port %q", what, s)
	}
	return uint32(p), nil
}

// parseListenAddress accepts ip:port or :port; Envoy listeners bind IP literals only.
func parseListenAddress(s string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, invalid("ListenAddress %q: %v", s, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", 0, invalid("ListenAddress %q: host must be an IP address", s)
	}
	p, err := parsePort(port, "ListenAddress")
	if err != nil {
		return "", 0, err
	}
	return host, p, nil
}

// parseExtProcAddress accepts unix:///abs/path or ip:port. The cluster is STATIC (exactly one
// local endpoint, never DNS-resolved), so a host name is refused.
func parseExtProcAddress(s string) (endpointAddress, error) {
	if rest, ok := strings.CutPrefix(s, "unix://"); ok {
		if !path.IsAbs(rest) || path.Clean(rest) != rest {
			return endpointAddress{}, invalid("ExtProcAddress %q: want unix:///absolute/path", s)
		}
		return endpointAddress{pipe: rest}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return endpointAddress{}, invalid("ExtProcAddress %q: want unix:///path or ip:port: %v", s, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.IsUnspecified() {
		return endpointAddress{}, invalid("ExtProcAddress %q: host must be a specific IP address", s)
	}
	p, err := parsePort(port, "ExtProcAddress")
	if err != nil {
		return endpointAddress{}, err
	}
	return endpointAddress{ip: addr.String(), port: p}, nil
}

// parseUpstreamURL accepts http(s)://host[:port] with an empty or "/" path. A path prefix
// would need a route prefix_rewrite, which the Plan route deliberately does not do.
func parseUpstreamURL(s string) (upstreamURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return upstreamURL{}, invalid("AnthropicURL %q: %v", s, err)
	}
	var out upstreamURL
	switch u.Scheme {
	case "https":
		out.tls, out.port = true, 443
	case "http":
		out.port = 80
	default:
		return upstreamURL{}, invalid("AnthropicURL %q: scheme must be http or https", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return upstreamURL{}, invalid("AnthropicURL %q: want scheme://host[:port] without path, query or credentials", s)
	}
	out.host = u.Hostname()
	if out.host == "" {
		return upstreamURL{}, invalid("AnthropicURL %q: missing host", s)
	}
	if p := u.Port(); p != "" {
		if out.port, err = parsePort(p, "AnthropicURL"); err != nil {
			return upstreamURL{}, err
		}
	}
	return out, nil
}
