package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// Defaults for Options. Each one is a production value for Claude Code traffic on Envoy 1.40;
// the reason for each is given where it is used in resources.go.
const (
	// DefaultAnthropicURL is Plan's public endpoint.
	DefaultAnthropicURL = "https://api.anthropic.com"
	// DefaultBedrockURL is the public Bedrock runtime endpoint of each region.
	// https://docs.aws.amazon.com/general/latest/gr/bedrock.html#br-rt
	DefaultBedrockURL = "https://bedrock-runtime." + RegionPlaceholder + ".amazonaws.com"
	// RegionPlaceholder is replaced by the AWS region in BedrockURL.
	RegionPlaceholder = "{region}"
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
	// DefaultUpstreamExtProcMessageTimeout is the upstream ext_proc filter's message timeout: the
	// upstream processor answers from memory, signs within its own 5 s bound
	// (upstream.DefaultSignTimeout) and hands over at most a 32 MB body over the local socket.
	// It is also the bound on how long a failed upstream processor can keep a client waiting
	// (docs/operations.md, "When the upstream processor fails"), so it is kept short.
	DefaultUpstreamExtProcMessageTimeout = 10 * time.Second
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
	// ExtProcTLS, when set, makes Envoy reach an ip:port ExtProcAddress over mutual TLS with
	// certificates from SDS files; nil is plaintext (a Unix socket, loopback).
	ExtProcTLS *ExtProcTLS
	// AnthropicURL is the Plan upstream, scheme://host[:port] with no path. https uses TLS
	// verified against UpstreamCAFile; http (tests, private endpoints) is plaintext HTTP/1.1.
	AnthropicURL string
	// UpstreamCAFile is the PEM bundle Envoy verifies upstream certificates against.
	UpstreamCAFile string

	// BedrockURL is the Bedrock runtime endpoint as a template, scheme://host[:port] with no
	// path, in which RegionPlaceholder (host only) is replaced by each region of
	// BedrockRegions. https is verified against UpstreamCAFile like AnthropicURL; http is for
	// tests (a fake Bedrock). Without the placeholder every region uses the same host.
	BedrockURL string
	// BedrockRegions are the AWS regions (us-east-1, …) that get a bedrock-<region> cluster
	// and route: the regions of the Bedrock credentials in use. Order and duplicates do not
	// matter; the resources list them sorted.
	BedrockRegions []string
	// Bedrock is the runtime configuration served to extproc as the ExtensionConfig
	// RuntimeBedrockName. It is never modified. nil is an empty configuration (no model
	// mappings); its Regions are always replaced by BedrockRegions, and empty Betas or
	// Fields by the built-in tables of extproc/translate/bedrock.
	Bedrock *runtimev1.BedrockConfig

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
	// ExtProcMaxMessageTimeout caps override_message_timeout; at least ExtProcMessageTimeout
	// and UpstreamExtProcMessageTimeout.
	ExtProcMaxMessageTimeout time.Duration
	// UpstreamExtProcMessageTimeout is the message timeout of the upstream ext_proc filter of
	// the Bedrock and fallback clusters: the longest an attempt waits for the upstream
	// processor, and so the bound on an upstream processor failure.
	UpstreamExtProcMessageTimeout time.Duration
	// CircuitBreakers sizes the plan cluster's thresholds for one Envoy replica.
	CircuitBreakers CircuitBreakers
}

// ExtProcTLS is how Envoy authenticates to extproc and extproc to Envoy over TCP: Envoy
// presents the client certificate of one SDS file and accepts only a server certificate that
// chains to the CA bundle of another and carries ServerName, like its ADS connection
// (envoy/bootstrap.yaml). Zero fields take the defaults below.
type ExtProcTLS struct {
	// CertificateSDSPath is the SDS file holding the Secret ExtProcCertificateSecret
	// (Envoy's client certificate and key); default DefaultExtProcCertificateSDS.
	CertificateSDSPath string
	// TrustedCASDSPath is the SDS file holding the Secret ExtProcTrustedCASecret (the CA
	// bundle of extproc's certificate); default DefaultExtProcTrustedCASDS.
	TrustedCASDSPath string
	// ServerName is the SNI Envoy sends and the DNS name extproc's certificate must carry;
	// default DefaultExtProcServerName.
	ServerName string
}

// Defaults of ExtProcTLS: the files of envoy/sds/, mounted at /etc/envoy/sds/.
const (
	DefaultExtProcCertificateSDS = "/etc/envoy/sds/extproc-client-certificate.yaml"
	DefaultExtProcTrustedCASDS   = "/etc/envoy/sds/extproc-trusted-ca.yaml"
	DefaultExtProcServerName     = "ccproxy-extproc"
	// ExtProcCertificateSecret and ExtProcTrustedCASecret name the Secrets in those files.
	ExtProcCertificateSecret = "extproc_client_certificate"
	ExtProcTrustedCASecret   = "extproc_trusted_ca"
)

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
	if o.BedrockURL == "" {
		o.BedrockURL = DefaultBedrockURL
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
	if o.UpstreamExtProcMessageTimeout == 0 {
		o.UpstreamExtProcMessageTimeout = DefaultUpstreamExtProcMessageTimeout
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
	// bedrock has one entry per region, sorted by region.
	bedrock []bedrockEndpoint
	// fallback are the entries of bedrock that get a plan+bedrock-<region>
	// cluster and route: those whose URL has the Plan URL's scheme.
	fallback []bedrockEndpoint
	// warnings explain what the configuration leaves out (Resources.Warnings).
	warnings []string
	// runtime is the BedrockConfig served to extproc, complete (see Options.Bedrock).
	runtime *runtimev1.BedrockConfig
}

// bedrockEndpoint is BedrockURL for one region.
type bedrockEndpoint struct {
	region string
	url    upstreamURL
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
	if t := r.ExtProcTLS; t != nil {
		if r.extProc.pipe != "" {
			return resolved{}, invalid("ExtProcTLS: a Unix socket (%s) takes no TLS; its file mode protects it", r.ExtProcAddress)
		}
		c := *t
		if c.CertificateSDSPath == "" {
			c.CertificateSDSPath = DefaultExtProcCertificateSDS
		}
		if c.TrustedCASDSPath == "" {
			c.TrustedCASDSPath = DefaultExtProcTrustedCASDS
		}
		if c.ServerName == "" {
			c.ServerName = DefaultExtProcServerName
		}
		if !path.IsAbs(c.CertificateSDSPath) || !path.IsAbs(c.TrustedCASDSPath) {
			return resolved{}, invalid("ExtProcTLS: the SDS paths must be absolute")
		}
		r.ExtProcTLS = &c
	}
	if r.plan, err = parseUpstreamURL(r.AnthropicURL, "AnthropicURL"); err != nil {
		return resolved{}, err
	}
	if r.bedrock, err = parseBedrock(r.BedrockURL, r.BedrockRegions); err != nil {
		return resolved{}, err
	}
	tls := r.plan.tls
	for _, b := range r.bedrock {
		tls = tls || b.url.tls
	}
	if tls && !path.IsAbs(r.UpstreamCAFile) {
		return resolved{}, invalid("UpstreamCAFile %q: must be an absolute path", r.UpstreamCAFile)
	}
	r.fallback, r.warnings = fallbackEndpoints(r.plan, r.bedrock)
	if r.runtime, err = resolveBedrockConfig(r.Bedrock, r.bedrock, r.fallback); err != nil {
		return resolved{}, err
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
	if r.UpstreamExtProcMessageTimeout < 0 || r.ExtProcMaxMessageTimeout < r.UpstreamExtProcMessageTimeout {
		return resolved{}, invalid("ExtProcMaxMessageTimeout %s must be at least UpstreamExtProcMessageTimeout %s (> 0)", r.ExtProcMaxMessageTimeout, r.UpstreamExtProcMessageTimeout)
	}
	for _, d := range []time.Duration{r.StreamIdleTimeout, r.RouteIdleTimeout, r.PerTryTimeout, r.ExtProcMessageTimeout, r.ExtProcMaxMessageTimeout, r.UpstreamExtProcMessageTimeout} {
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
// would need a route prefix_rewrite, which the upstream routes deliberately do not do. what
// names the option in errors.
func parseUpstreamURL(s, what string) (upstreamURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return upstreamURL{}, invalid("%s %q: %v", what, s, err)
	}
	var out upstreamURL
	switch u.Scheme {
	case "https":
		out.tls, out.port = true, 443
	case "http":
		out.port = 80
	default:
		return upstreamURL{}, invalid("%s %q: scheme must be http or https", what, s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return upstreamURL{}, invalid("%s %q: want scheme://host[:port] without path, query or credentials", what, s)
	}
	out.host = u.Hostname()
	if out.host == "" {
		return upstreamURL{}, invalid("%s %q: missing host", what, s)
	}
	if p := u.Port(); p != "" {
		if out.port, err = parsePort(p, what); err != nil {
			return upstreamURL{}, err
		}
	}
	return out, nil
}

// regionPattern is the shape of an AWS region name (us-east-1, us-gov-west-1, ap-southeast-4),
// the same check as the model_regions table's.
var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// maxRegionLen keeps bedrock-<region> a valid DNS label and a sane cluster name.
const maxRegionLen = 32

// CheckRegion reports whether region looks like an AWS region name. The control plane only
// builds clusters for such regions: the name becomes part of a host name, a cluster name and
// a routing header value.
func CheckRegion(region string) error {
	if len(region) > maxRegionLen || !regionPattern.MatchString(region) {
		return invalid("Bedrock region %q: not an AWS region name such as us-east-1", region)
	}
	return nil
}

// parseBedrock checks the BedrockURL template and expands it for each region (deduplicated,
// sorted). The template is checked even without regions, so a bad setting fails at start.
func parseBedrock(tmpl string, regions []string) ([]bedrockEndpoint, error) {
	_, rest, ok := strings.Cut(tmpl, "://")
	if !ok {
		return nil, invalid("BedrockURL %q: want scheme://host[:port]", tmpl)
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if strings.Count(tmpl, RegionPlaceholder) != strings.Count(authority, RegionPlaceholder) {
		return nil, invalid("BedrockURL %q: %s may only appear in the host", tmpl, RegionPlaceholder)
	}
	expand := func(region string) (upstreamURL, error) {
		s := strings.ReplaceAll(tmpl, RegionPlaceholder, region)
		if strings.ContainsAny(s, "{}") {
			return upstreamURL{}, invalid("BedrockURL %q: the only placeholder is %s", tmpl, RegionPlaceholder)
		}
		u, err := parseUpstreamURL(s, "BedrockURL")
		if err != nil {
			return upstreamURL{}, err
		}
		if !validHost(u.host) {
			return upstreamURL{}, invalid("BedrockURL %q: host %q is not a valid DNS name or IP address", tmpl, u.host)
		}
		return u, nil
	}
	if _, err := expand("us-east-1"); err != nil {
		return nil, err
	}
	sorted := slices.Clone(regions)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	out := make([]bedrockEndpoint, 0, len(sorted))
	for _, region := range sorted {
		if err := CheckRegion(region); err != nil {
			return nil, err
		}
		u, err := expand(region)
		if err != nil {
			return nil, err
		}
		out = append(out, bedrockEndpoint{region: region, url: u})
	}
	return out, nil
}

// fallbackEndpoints picks the Bedrock endpoints that get a plan+bedrock-<region> cluster,
// keeping bedrock's order, and explains each one left out. A cluster has exactly one
// transport socket (TLS or none) for all its endpoints, so Plan (priority 0) and the region's
// Bedrock (priority 1) can share a cluster only when both URLs are https or both http; a
// region left out keeps its bedrock-<region> route, and its Plan-first requests get no
// fallback (extproc learns which regions have one from BedrockConfig.fallback_regions).
// https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-transport-socket
func fallbackEndpoints(plan upstreamURL, bedrock []bedrockEndpoint) (fallback []bedrockEndpoint, warnings []string) {
	scheme := func(tls bool) string {
		if tls {
			return "https"
		}
		return "http"
	}
	for _, b := range bedrock {
		if b.url.tls != plan.tls {
			warnings = append(warnings, fmt.Sprintf(
				"no %s cluster or route: AnthropicURL is %s but BedrockURL for %s is %s (one cluster has one transport socket); requests for %s get no Bedrock fallback",
				FallbackClusterName(b.region), scheme(plan.tls), b.region, scheme(b.url.tls), b.region))
			continue
		}
		fallback = append(fallback, b)
	}
	return fallback, warnings
}

// validHost accepts an IP literal or a DNS name of letters, digits and hyphens (RFC 1123):
// the endpoint hostname becomes SNI, the certificate name checked and the SigV4-signed host.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
