// Package envoysim is the Go data plane that stands in for Envoy in
// `ccproxy dev` and in end-to-end tests, where Envoy cannot be installed.
//
// It implements exactly the subset of Envoy 1.37–1.40 that ccproxy's own
// xDS configuration uses, driven by the same xDS resources the control plane
// serves to a real Envoy (over ADS, or handed over directly), and it behaves
// like Envoy where that matters for ccproxy, failure paths included: the
// ext_proc filter's protocol rules and failure replies, local replies and
// which processor sees them, HCM header sanitation, route matching, timeouts
// and buffer limits with Envoy's defaults, retries, priorities and circuit
// breakers, STRICT_DNS resolution, and upstream TLS. Where Envoy releases
// disagree on upstream filter failures, Options.UpstreamFailureRule selects
// the release line. Any configuration field it does not implement is an
// error, so a setting added to the control plane without an emulation here
// fails loudly. FIDELITY.md lists every emulated behaviour with the Envoy
// source it follows and the test that pins it.
//
// envoysim is for development and tests only; production traffic runs on
// Envoy.
package envoysim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// Options configures a Sim. Exactly one of XDSAddress and Resources is set.
type Options struct {
	// XDSAddress is the control plane's gRPC address (host:port) serving
	// ADS (envoy.service.discovery.v3.AggregatedDiscoveryService).
	XDSAddress string
	// XDSCredentials secures the connection to XDSAddress as the
	// bootstrap's xds cluster does (mutual TLS, with the server name its
	// certificate must carry); nil connects in plaintext.
	XDSCredentials credentials.TransportCredentials
	// NodeID identifies this data plane to the control plane.
	NodeID string
	// Logger receives envoysim's logs; nil means slog.Default(). The
	// caller names the component (ccproxy dev adds component=envoysim).
	Logger *slog.Logger
	// Resources is a static configuration (Listeners, RouteConfigurations
	// and Clusters) used instead of xDS.
	Resources []types.Resource
	// Dial makes upstream and ext_proc connections; nil means a net.Dialer.
	// Tests use it to map a host name such as api.anthropic.com:443 to a
	// local server while SNI and certificate checks keep the real name.
	Dial DialFunc
	// AccessLog receives the lines of the listeners' stdout access logs
	// (Envoy writes them to its stdout); nil writes none. The access log
	// configuration is checked either way.
	AccessLog io.Writer
	// Resolve resolves STRICT_DNS endpoint names before the load balancer
	// sees them, as Envoy's DNS resolver does. nil means: when Dial is set,
	// every name resolves (Dial stands in for DNS and decides where a name
	// connects); otherwise the system resolver. Tests and `ccproxy dev` use
	// it to make a name not resolve.
	Resolve ResolveFunc
	// UpstreamFailureRule selects the Envoy releases envoysim follows where
	// they disagree on failures of a cluster's upstream filter chain and on
	// local replies; the zero value is RuleLocalReply (Envoy 1.37–1.40).
	UpstreamFailureRule UpstreamFailureRule

	// localReplies, set by tests, receives every local reply's status and
	// response code details (%RESPONSE_CODE_DETAILS%) as it is sent.
	localReplies func(status int, details string)
}

// UpstreamFailureRule is how Envoy treats a local reply asked for by a
// cluster's upstream HTTP filter (an upstream ext_proc's ImmediateResponse,
// gRPC error or message timeout with failure_mode_allow false) and whether
// local replies pass the router-level ext_proc's response phases. Envoy
// changed both without a runtime guard or a changelog entry, so envoysim
// implements each release line; FIDELITY.md has the sources.
type UpstreamFailureRule int

const (
	// RuleLocalReply is Envoy 1.37 to 1.40, the default. An upstream
	// filter's local reply is sent downstream at once and is not retried
	// (the router resets its attempts): envoyproxy/envoy commit
	// c628f8a3999e3b45713a6fee6877a685dda7d748 ("ext_proc: allow immediate
	// response from upstream filter", envoyproxy/envoy#41231, first in
	// v1.36.0) removed the upstream check from
	// ext_proc.cc Filter::sendImmediateResponse, and
	// source/common/router/upstream_request.cc sends it through the
	// downstream filter manager. Every local reply that goes through the
	// downstream filter chain — the router's (no healthy upstream, upstream
	// request timeout, resets), an upstream filter's, the HCM's timeouts —
	// is offered to the router-level ext_proc filters' response phases,
	// except the filter that generated it or one whose processing is
	// complete: commit 37efb748cff8c7505e405e2ab94d50baaca30959
	// (envoyproxy/envoy#41769, first in v1.37.0) deleted the
	// skip_ext_proc_on_local_reply guard and ext_proc's onLocalReply.
	RuleLocalReply UpstreamFailureRule = iota
	// RuleStall is Envoy 1.35 and older (which the control plane refuses):
	// ext_proc.cc Filter::sendImmediateResponse ignores a local reply of an
	// upstream filter (counter send_immediate_resp_upstream_ignored), so
	// nothing continues the attempt and it stalls until per_try_timeout
	// (then a retry per policy) or the route timeout; local replies skip
	// the ext_proc response phases (runtime guard
	// skip_ext_proc_on_local_reply, default true, in
	// source/common/runtime/runtime_features.cc up to v1.36.0).
	RuleStall
)

// String returns the rule's flag value: "local-reply" or "stall".
func (r UpstreamFailureRule) String() string {
	switch r {
	case RuleLocalReply:
		return "local-reply"
	case RuleStall:
		return "stall"
	}
	return fmt.Sprintf("UpstreamFailureRule(%d)", int(r))
}

// ParseUpstreamFailureRule parses a flag value as returned by String.
func ParseUpstreamFailureRule(s string) (UpstreamFailureRule, error) {
	switch s {
	case "local-reply":
		return RuleLocalReply, nil
	case "stall":
		return RuleStall, nil
	}
	return 0, fmt.Errorf("envoysim: upstream failure rule %q: want local-reply (Envoy 1.37–1.40) or stall (Envoy 1.35 and older)", s)
}

// Sim is a running envoysim data plane.
type Sim struct {
	opts   Options
	log    *slog.Logger
	dial   DialFunc
	static *snapshot

	snap      atomic.Pointer[snapshot]
	mu        sync.Mutex
	listeners map[string]*runningListener
	firstAddr atomic.Value // string
	ready     chan struct{}
	readyOnce sync.Once

	grpcMu    sync.Mutex
	grpcConns map[string]*grpc.ClientConn

	accessLogMu sync.Mutex // one access log line per Write

	// sendImmediateRespUpstreamIgnored is the ext_proc counter
	// send_immediate_resp_upstream_ignored (RuleStall only), summed over
	// filters; its Envoy stat name depends on the upstream filter's scope,
	// so it is not in Stats.
	sendImmediateRespUpstreamIgnored atomic.Int64

	stats counters
}

type runningListener struct {
	cfg  *listenerConfig
	ln   net.Listener
	srv  *http.Server
	addr string
}

// New validates the options (and a static configuration) and returns a Sim
// that starts serving when Run is called.
func New(opts Options) (*Sim, error) {
	if (opts.XDSAddress == "") == (len(opts.Resources) == 0) {
		return nil, errors.New("envoysim: set exactly one of XDSAddress and Resources")
	}
	if _, err := ParseUpstreamFailureRule(opts.UpstreamFailureRule.String()); err != nil {
		return nil, err
	}
	s := &Sim{
		opts:      opts,
		log:       opts.Logger,
		dial:      opts.Dial,
		listeners: map[string]*runningListener{},
		ready:     make(chan struct{}),
		grpcConns: map[string]*grpc.ClientConn{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.dial == nil {
		d := &net.Dialer{}
		s.dial = d.DialContext
	}
	if len(opts.Resources) > 0 {
		snap, err := compile(opts.Resources)
		if err != nil {
			return nil, fmt.Errorf("envoysim: %w", err)
		}
		if len(snap.listeners) == 0 {
			return nil, errors.New("envoysim: the static configuration has no listener")
		}
		s.static = snap
	}
	return s, nil
}

// Ready is closed once the first listener is serving.
func (s *Sim) Ready() <-chan struct{} { return s.ready }

// Addr is the bound address of the first listener (by name), or "" before
// Ready.
func (s *Sim) Addr() string {
	v, _ := s.firstAddr.Load().(string)
	return v
}

// Run serves until ctx is cancelled. With XDSAddress it follows the control
// plane over ADS, reconnecting as needed.
func (s *Sim) Run(ctx context.Context) error {
	defer s.shutdown()
	if s.static != nil {
		if err := s.apply(s.static); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	return s.runXDS(ctx)
}

// apply installs a new snapshot: new requests use it; listeners are started,
// kept or stopped to match.
func (s *Sim) apply(snap *snapshot) error {
	snap.upstreams = map[string]*upstreamCluster{}
	prev := s.snap.Load()
	resolve := s.resolver()
	var wg sync.WaitGroup
	for name, c := range snap.clusters {
		uc := newUpstreamCluster(c, s.dial, s.log)
		snap.upstreams[name] = uc
		switch {
		case resolve == nil:
			uc.resolveAllAssumed()
		case prev != nil && prev.upstreams[name] != nil && proto.Equal(prev.upstreams[name].cfg.proto, c.proto):
			uc.inheritDNS(prev.upstreams[name])
		default:
			// A cluster warms before it takes traffic: its names are
			// resolved once first (Envoy marks it initialized after the
			// first resolution completes, success or not).
			wg.Add(1)
			go func() {
				defer wg.Done()
				uc.resolveDNS(context.Background(), resolve, func() { s.incCluster(name, statUpdateFailure) })
			}()
		}
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]*listenerConfig{}
	for _, l := range snap.listeners {
		want[l.name] = l
	}
	var started []*runningListener
	for _, l := range snap.listeners {
		if rl, ok := s.listeners[l.name]; ok && rl.cfg.network == l.network && rl.cfg.address == l.address && rl.cfg.hcm.codec == l.hcm.codec {
			rl.cfg = l
			continue
		}
		rl, err := s.startListener(l)
		if err != nil {
			for _, r := range started {
				r.close()
			}
			return fmt.Errorf("envoysim: listener %q: %w", l.name, err)
		}
		if old, ok := s.listeners[l.name]; ok {
			go old.drain()
		}
		s.listeners[l.name] = rl
		started = append(started, rl)
	}
	for name, rl := range s.listeners {
		if _, ok := want[name]; !ok {
			go rl.drain()
			delete(s.listeners, name)
		}
	}
	old := s.snap.Swap(snap)
	if resolve != nil {
		for name, uc := range snap.upstreams {
			go uc.refreshDNS(resolve, func() { s.incCluster(name, statUpdateFailure) })
		}
	}
	if old != nil {
		for _, uc := range old.upstreams {
			uc.stop()
			go uc.closeIdle()
		}
	}
	if len(snap.listeners) > 0 {
		if rl, ok := s.listeners[snap.listeners[0].name]; ok {
			s.firstAddr.Store(rl.addr)
		}
	}
	for _, rl := range started {
		go func() { _ = rl.srv.Serve(rl.ln) }()
	}
	if len(s.listeners) > 0 {
		s.readyOnce.Do(func() { close(s.ready) })
	}
	return nil
}

func (s *Sim) startListener(l *listenerConfig) (*runningListener, error) {
	if l.network == "unix" {
		_ = os.Remove(l.address)
	}
	ln, err := net.Listen(l.network, l.address)
	if err != nil {
		return nil, err
	}
	name := l.name
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveHTTP(name, w, r) }),
		IdleTimeout:       l.hcm.connIdleTimeout,
		ReadHeaderTimeout: time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	protos := new(http.Protocols)
	switch l.hcm.codec {
	case codecAuto:
		// codec_type AUTO on a plaintext listener: HTTP/1.1, or HTTP/2 with
		// prior knowledge (Envoy does not do the h2c Upgrade dance).
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
	case codecHTTP1:
		protos.SetHTTP1(true)
	case codecHTTP2:
		protos.SetUnencryptedHTTP2(true)
	}
	srv.Protocols = protos
	s.log.Info("listener serving", "listener", l.name, "address", ln.Addr().String())
	return &runningListener{cfg: l, ln: ln, srv: srv, addr: ln.Addr().String()}, nil
}

func (rl *runningListener) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rl.srv.Shutdown(ctx)
}

func (rl *runningListener) close() { _ = rl.srv.Close(); _ = rl.ln.Close() }

func (s *Sim) observeLocalReply(lr *localReply) {
	if s.opts.localReplies != nil {
		s.opts.localReplies(lr.status, lr.details)
	}
}

// resolver is the STRICT_DNS resolver in force; nil means every name
// resolves (Options.Dial maps names, Options.Resolve unset).
func (s *Sim) resolver() ResolveFunc {
	switch {
	case s.opts.Resolve != nil:
		return s.opts.Resolve
	case s.opts.Dial != nil:
		return nil
	}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
}

func (s *Sim) shutdown() {
	if snap := s.snap.Load(); snap != nil {
		for _, uc := range snap.upstreams {
			uc.stop()
		}
	}
	s.mu.Lock()
	for name, rl := range s.listeners {
		rl.close()
		delete(s.listeners, name)
	}
	s.mu.Unlock()
	s.grpcMu.Lock()
	for k, c := range s.grpcConns {
		_ = c.Close()
		delete(s.grpcConns, k)
	}
	s.grpcMu.Unlock()
}

func (s *Sim) serveHTTP(listener string, w http.ResponseWriter, r *http.Request) {
	snap := s.snap.Load()
	var lc *listenerConfig
	for _, l := range snap.listeners {
		if l.name == listener {
			lc = l
		}
	}
	if lc == nil {
		http.Error(w, "listener draining", http.StatusServiceUnavailable)
		return
	}
	main := newPhase(r.Context())
	ctx := main.ctx
	logState, w := newStreamLog(w, r)
	st := &stream{
		sim:     s,
		snap:    snap,
		lc:      lc,
		hcm:     lc.hcm,
		routes:  snap.routesFor(lc.hcm),
		w:       w,
		r:       r,
		ctx:     ctx,
		cancel:  main.cancel,
		log:     s.log,
		info:    &streamInfo{},
		main:    main,
		abortCh: main.abortCh,

		logState: logState,
	}
	st.reqH = requestHeaderMap(r, "http")
	for _, ep := range lc.hcm.extProcs {
		st.filters = append(st.filters, newExtProcFilter(ep, st))
	}
	go func() {
		// A downstream disconnect resets the stream.
		select {
		case <-r.Context().Done():
			st.requestReset(errors.New("downstream disconnected"))
		case <-ctx.Done():
		}
	}()
	st.serve()
}

func (s *Sim) cluster(snap *snapshot, name string) *upstreamCluster {
	return snap.upstreams[name]
}

// grpcConn returns the connection to an ext_proc cluster's single endpoint.
func (s *Sim) grpcConn(snap *snapshot, cfg *extProcConfig) (*grpc.ClientConn, error) {
	c := snap.clusters[cfg.clusterName]
	if c == nil || len(c.priorities) == 0 || len(c.priorities[0]) == 0 {
		return nil, fmt.Errorf("ext_proc cluster %q has no endpoint", cfg.clusterName)
	}
	h := c.priorities[0][0]
	key := h.network + "|" + h.address
	s.grpcMu.Lock()
	defer s.grpcMu.Unlock()
	if conn, ok := s.grpcConns[key]; ok {
		return conn, nil
	}
	dial := s.dial
	timeout := c.connectTimeout
	creds := insecure.NewCredentials()
	if tc := c.tls; tc != nil {
		// The cluster's UpstreamTlsContext: SNI sni, trusted_ca or the SDS CA, the SAN
		// matchers and the SDS client certificate; gRPC needs ALPN h2.
		roots := tc.roots
		cfg := &tls.Config{
			ServerName:         tc.sni,
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if roots == nil {
					return nil
				}
				return verifyPeer(cs, roots, "")
			},
			MinVersion: tls.VersionTLS12,
			NextProtos: append([]string(nil), tc.alpn...),
		}
		tc.applyTo(cfg)
		creds = envoyGRPCCreds{credentials.NewTLS(cfg)}
	}
	conn, err := grpc.NewClient("passthrough:///"+strings.ReplaceAll(h.address, "/", "_"),
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return dial(ctx, h.network, h.address)
		}),
	)
	if err != nil {
		return nil, err
	}
	s.grpcConns[key] = conn
	return conn, nil
}
