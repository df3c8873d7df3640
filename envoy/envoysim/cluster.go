package envoysim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// DialFunc dials an upstream connection; Options.Dial lets tests map a host
// name such as api.anthropic.com:443 to a local server while SNI and the
// certificate check still use the real name.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// ResolveFunc resolves the host name of a STRICT_DNS endpoint to its
// addresses, as Envoy's DNS resolver does before the load balancer sees the
// endpoint. An error that is (errors.As) a *net.DNSError with IsNotFound —
// NXDOMAIN, or no record — means the name has no address, so the endpoint
// has no host; any other error keeps the hosts the endpoint had (none before
// its first successful resolution). The addresses only decide whether the
// endpoint has a host for the cluster's dns_lookup_family; connections are
// still made through Options.Dial to the endpoint's name.
type ResolveFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// upstreamCluster is the runtime side of a cluster: round-robin state,
// circuit-breaker counters (Upstream::ResourceManagerImpl) and one HTTP
// transport per host and SNI.
type upstreamCluster struct {
	cfg  *clusterConfig
	dial DialFunc
	log  *slog.Logger

	rr         []atomic.Uint64
	requests   atomic.Int64
	pending    atomic.Int64
	retries    atomic.Int64
	mu         sync.Mutex
	transports map[transportKey]*http.Transport

	// hostSet is the priority set the load balancer sees: every configured
	// host of a STATIC cluster; for STRICT_DNS, the endpoints whose name
	// currently has an address.
	hostSet atomic.Pointer[[][]*hostConfig]
	// dnsHosts are the STRICT_DNS endpoints that resolve a name, and
	// resolved whether each has an address (guarded by dnsMu).
	dnsMu    sync.Mutex
	dnsHosts []*hostConfig
	resolved []bool
	stopDNS  chan struct{}
	stopOnce sync.Once
}

type transportKey struct {
	host       *hostConfig
	sni        string
	verifyName string
}

// newUpstreamCluster returns a cluster's runtime. A STRICT_DNS endpoint
// whose name must be resolved has no host until resolveDNS found an
// address for it (unless resolution is off: nil ResolveFunc).
func newUpstreamCluster(cfg *clusterConfig, dial DialFunc, log *slog.Logger) *upstreamCluster {
	c := &upstreamCluster{
		cfg:        cfg,
		dial:       dial,
		log:        log,
		rr:         make([]atomic.Uint64, len(cfg.priorities)),
		transports: map[transportKey]*http.Transport{},
		stopDNS:    make(chan struct{}),
	}
	for _, hosts := range cfg.priorities {
		for _, h := range hosts {
			if h.dnsName != "" {
				c.dnsHosts = append(c.dnsHosts, h)
			}
		}
	}
	c.resolved = make([]bool, len(c.dnsHosts))
	c.rebuildHostSetLocked()
	return c
}

// rebuildHostSetLocked publishes the priority set (dnsMu held or the
// cluster not yet shared).
func (c *upstreamCluster) rebuildHostSetLocked() {
	present := map[*hostConfig]bool{}
	for i, h := range c.dnsHosts {
		present[h] = c.resolved[i]
	}
	set := make([][]*hostConfig, len(c.cfg.priorities))
	for p, hosts := range c.cfg.priorities {
		for _, h := range hosts {
			if resolved, isDNS := present[h]; !isDNS || resolved {
				set[p] = append(set[p], h)
			}
		}
	}
	c.hostSet.Store(&set)
}

// resolveAllAssumed marks every STRICT_DNS endpoint as resolved: with
// Options.Dial and no Options.Resolve, Dial decides where a name connects.
func (c *upstreamCluster) resolveAllAssumed() {
	c.dnsMu.Lock()
	defer c.dnsMu.Unlock()
	for i := range c.resolved {
		c.resolved[i] = true
	}
	c.rebuildHostSetLocked()
}

// inheritDNS takes over the resolution state of the cluster it replaces
// when the configuration is unchanged: Envoy keeps a cluster whose CDS
// resource did not change, hosts and all.
func (c *upstreamCluster) inheritDNS(old *upstreamCluster) {
	old.dnsMu.Lock()
	prev := append([]bool(nil), old.resolved...)
	old.dnsMu.Unlock()
	c.dnsMu.Lock()
	defer c.dnsMu.Unlock()
	copy(c.resolved, prev)
	c.rebuildHostSetLocked()
}

// resolveDNS resolves every STRICT_DNS endpoint once, as
// StrictDnsClusterImpl::ResolveTarget::startResolve does (Envoy 1.37;
// DnsClusterImpl since 1.39, same rules): an answer with an address of the
// cluster's dns_lookup_family gives the endpoint its host; "no such name"
// (c-ares reports NXDOMAIN and NODATA as a completed, empty answer) removes
// it; any other failure counts cluster.<c>.update_failure and keeps what
// the endpoint had.
func (c *upstreamCluster) resolveDNS(ctx context.Context, resolve ResolveFunc, onFailure func()) {
	if len(c.dnsHosts) == 0 {
		return
	}
	type answer struct {
		present, keep bool
	}
	answers := make([]answer, len(c.dnsHosts))
	var wg sync.WaitGroup
	for i, h := range c.dnsHosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, dnsResolveTimeout)
			defer cancel()
			addrs, err := resolve(rctx, h.dnsName)
			var dnsErr *net.DNSError
			switch {
			case err == nil:
				answers[i].present = hasFamily(addrs, c.cfg.dnsFamily)
			case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			default:
				answers[i].keep = true
				c.log.Debug("STRICT_DNS resolution failed; keeping the endpoint's hosts", "cluster", c.cfg.name, "name", h.dnsName, "err", err)
				onFailure()
			}
		}()
	}
	wg.Wait()
	c.dnsMu.Lock()
	defer c.dnsMu.Unlock()
	for i, a := range answers {
		if !a.keep {
			if c.resolved[i] != a.present {
				c.log.Debug("STRICT_DNS hosts changed", "cluster", c.cfg.name, "name", c.dnsHosts[i].dnsName, "has_host", a.present)
			}
			c.resolved[i] = a.present
		}
	}
	c.rebuildHostSetLocked()
}

// refreshDNS re-resolves every dns_refresh_rate (default 5 s; after a
// failure the same fixed back-off, as dns_failure_refresh_rate is unset)
// until the cluster is replaced or envoysim stops.
func (c *upstreamCluster) refreshDNS(resolve ResolveFunc, onFailure func()) {
	if len(c.dnsHosts) == 0 {
		return
	}
	t := time.NewTicker(defaultDNSRefreshRate)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stopDNS
		cancel()
	}()
	for {
		select {
		case <-t.C:
			c.resolveDNS(ctx, resolve, onFailure)
		case <-c.stopDNS:
			return
		}
	}
}

func (c *upstreamCluster) stop() { c.stopOnce.Do(func() { close(c.stopDNS) }) }

const (
	// Cluster.dns_refresh_rate: "If this setting is not specified, the
	// value defaults to 5000ms" (cluster.proto).
	defaultDNSRefreshRate = 5 * time.Second
	// dnsResolveTimeout bounds one resolution (c-ares' default query
	// timeout is 5 s).
	dnsResolveTimeout = 5 * time.Second
)

// hasFamily reports whether addrs hold an address dns_lookup_family
// accepts: V4_ONLY asks for A records only, V6_ONLY for AAAA only; the
// others take either.
func hasFamily(addrs []netip.Addr, family clusterv3.Cluster_DnsLookupFamily) bool {
	for _, a := range addrs {
		a = a.Unmap()
		switch family {
		case clusterv3.Cluster_V4_ONLY:
			if a.Is4() {
				return true
			}
		case clusterv3.Cluster_V6_ONLY:
			if a.Is6() {
				return true
			}
		default:
			if a.IsValid() {
				return true
			}
		}
	}
	return false
}

// pickHost chooses a host from the current priority set: the lowest
// priority that has hosts gets all the load — every host is healthy
// without health checks, so a priority's health is 100% with the default
// overprovisioning factor 1.4, and an empty priority's is 0%, which sends
// even the first attempt to the next priority
// (LoadBalancerBase::recalculatePerPriorityState,
// source/extensions/load_balancing_policies/common/load_balancer_impl.cc)
// — then round robin inside it. nil when no priority has a host.
func (c *upstreamCluster) pickHost(load priorityLoad) *hostConfig {
	prios := *c.hostSet.Load()
	p := load.choose(prios)
	if p < 0 {
		return nil
	}
	hosts := prios[p]
	n := c.rr[p].Add(1) - 1
	return hosts[int(n%uint64(len(hosts)))]
}

// priorityLoad decides the priority for an attempt. The default gives every
// request to the lowest non-empty priority; a retry priority plugin
// (previous_priorities, a later issue) replaces it per attempt.
type priorityLoad interface {
	choose(priorities [][]*hostConfig) int
}

// previousPriorities is the envoy.retry_priorities.previous_priorities
// plugin (source/extensions/retry/priority/previous_priorities/
// previous_priorities.cc, Envoy 1.40): once update_frequency hosts were
// attempted, their priorities are excluded and the load goes to the lowest
// remaining priority with hosts; when every priority is excluded the
// exclusions are reset and the original load returns.
type previousPriorities struct {
	freq      int
	attempted []int
	excluded  map[int]bool
}

func newPreviousPriorities(freq int) *previousPriorities {
	return &previousPriorities{freq: freq, excluded: map[int]bool{}}
}

// onHostAttempted is RetryPriority::onHostAttempted (router
// onUpstreamHostSelected).
func (p *previousPriorities) onHostAttempted(h *hostConfig) {
	p.attempted = append(p.attempted, h.priority)
}

func (p *previousPriorities) choose(priorities [][]*hostConfig) int {
	if len(p.attempted) >= p.freq {
		for _, pr := range p.attempted {
			p.excluded[pr] = true
		}
		p.attempted = nil
	}
	for pr, hosts := range priorities {
		if len(hosts) > 0 && !p.excluded[pr] {
			return pr
		}
	}
	// adjustForAttemptedPriorities: no healthy load left -> reset.
	p.excluded = map[int]bool{}
	return defaultPriorityLoad{}.choose(priorities)
}

type defaultPriorityLoad struct{}

func (defaultPriorityLoad) choose(priorities [][]*hostConfig) int {
	for p, hosts := range priorities {
		if len(hosts) > 0 {
			return p
		}
	}
	return -1
}

// transport returns the HTTP transport for a host. serverName is the value
// auto_sni would use (the request's host before any rewrite).
func (c *upstreamCluster) transport(h *hostConfig, autoSNIHost string) *http.Transport {
	key := transportKey{host: h}
	if tc := c.cfg.tls; tc != nil {
		key.sni = tc.sni
		// SNI precedence (ssl_socket.cc): a router-provided override
		// (auto_sni) first, then the host name with auto_host_sni, then sni.
		switch {
		case c.cfg.autoSNI && autoSNIHost != "":
			key.sni = stripPort(autoSNIHost)
		case tc.autoHostSNI && h.hostname != "":
			key.sni = h.hostname
		}
		if tc.autoSNISANValidate || (c.cfg.autoSANValidate && c.cfg.autoSNI) {
			key.verifyName = key.sni
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[key]; ok {
		return t
	}
	t := c.newTransport(key)
	c.transports[key] = t
	return t
}

func (c *upstreamCluster) newTransport(key transportKey) *http.Transport {
	h := key.host
	dial := c.dial
	connectTimeout := c.cfg.connectTimeout
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			return dial(ctx, h.network, h.address)
		},
		MaxConnsPerHost:       int(c.cfg.thresholds.maxConnections),
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       time.Hour,
		TLSHandshakeTimeout:   connectTimeout,
		DisableCompression:    true,
		ResponseHeaderTimeout: 0,
	}
	protos := new(http.Protocols)
	tc := c.cfg.tls
	switch c.cfg.protocol {
	case protoHTTP1:
		protos.SetHTTP1(true)
	case protoHTTP2:
		if tc != nil {
			protos.SetHTTP2(true)
		} else {
			protos.SetUnencryptedHTTP2(true)
		}
	case protoAuto:
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	}
	t.Protocols = protos
	if tc != nil {
		roots := tc.roots
		verifyName := key.verifyName
		cfg := &tls.Config{
			ServerName: key.sni,
			// Envoy verifies the chain only against trusted_ca and the SAN
			// only when asked (auto_sni_san_validation); without trusted_ca it
			// verifies nothing (UpstreamTlsContext docs). Go's default
			// verification couples both, so it is replaced.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if roots == nil {
					return nil
				}
				return verifyPeer(cs, roots, verifyName)
			},
			MinVersion: tls.VersionTLS12,
		}
		if len(tc.alpn) > 0 {
			cfg.NextProtos = append([]string(nil), tc.alpn...)
		}
		tc.applyTo(cfg)
		t.TLSClientConfig = cfg
		if roots == nil {
			c.log.Warn("upstream TLS without trusted_ca: the server certificate is not verified (Envoy behaviour)",
				"cluster", c.cfg.name, "sni", key.sni)
		}
	}
	return t
}

func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("CERTIFICATE_VERIFY_FAILED: no peer certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("CERTIFICATE_VERIFY_FAILED: %w", err)
	}
	if name != "" {
		if err := cs.PeerCertificates[0].VerifyHostname(name); err != nil {
			return fmt.Errorf("CERTIFICATE_VERIFY_FAILED: SAN: %w", err)
		}
	}
	return nil
}

func (c *upstreamCluster) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
}

func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// resource is a circuit-breaker counter with a limit.
func tryAcquire(counter *atomic.Int64, limit int64) bool {
	for {
		cur := counter.Load()
		if cur >= limit {
			return false
		}
		if counter.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

type tlsConnState = tls.ConnectionState
