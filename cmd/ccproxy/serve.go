package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/extproc/ratelimit"
	"github.com/ccproxy/ccproxy/extproc/router"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/observability/telemetry"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/usage"
	"github.com/ccproxy/ccproxy/internal/usagestream"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// component is one long-running part of a command; it returns when ctx is
// done (nil) or when it fails.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// runAll runs every component until ctx is done or one of them fails; a
// failure stops the others.
func runAll(ctx context.Context, log *slog.Logger, comps ...component) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range comps {
		g.Go(func() error {
			err := c.run(ctx)
			if err != nil {
				log.Error("component failed", "component", c.name, "err", err)
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// closers holds what a command opens while it builds its components
// (listeners, client connections), to close, newest first, when building
// fails. Once runAll runs the components, each closes what it serves on or
// with, and the command hands them over instead of closing them.
type closers []func() error

// add registers the closing of something just opened.
func (c *closers) add(close func() error) { *c = append(*c, close) }

// closeAll closes everything not handed over; commands defer it.
func (c *closers) closeAll() {
	for i := len(*c) - 1; i >= 0; i-- {
		_ = (*c)[i]()
	}
	*c = nil
}

// handOver leaves everything to the components that now own it.
func (c *closers) handOver() { *c = nil }

// extprocParts is the ext_proc server and its dependencies, as the
// components a command runs.
type extprocParts struct {
	comps []component
	// subscribed is closed once the key invalidation feed is live: before
	// that, its first subscription purges every key resolved so far (it
	// cannot know what it missed), so requests would race that purge.
	subscribed chan struct{}
	// runtimeReady is closed once the first runtime configuration from the
	// control plane was accepted.
	runtimeReady <-chan struct{}
	// keyService is the connection to the admin service's KeyService.
	keyService *grpc.ClientConn
}

// addHealth registers extproc's readiness checks. Hard (the replica is not
// ready): Redis, the key invalidation feed (else a revoked key could keep
// working) and the first runtime configuration from the control plane (else
// no model list, no Bedrock route and no fallback). Soft (ready, reported
// as degraded): the KeyService, because keys already resolved keep working
// from the caches while the admin service restarts, and taking every
// replica out of the load balancer for it would refuse them too. A control
// plane lost after the first configuration is soft as well: the held
// configuration keeps serving (ccproxy_extproc_runtime_config_connected).
func (p *extprocParts) addHealth(health *observability.Health, rdb redis.UniversalClient) {
	health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	health.Add("key-invalidation", p.invalidationReady)
	health.Add("runtime-config", func(context.Context) error {
		select {
		case <-p.runtimeReady:
			return nil
		default:
			return errors.New("no runtime configuration received from the control plane yet")
		}
	})
	health.AddSoft("keyservice", func(context.Context) error {
		switch st := p.keyService.GetState(); st {
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("KeyService connection %s: keys not cached yet cannot be resolved", strings.ToLower(st.String()))
		case connectivity.Idle:
			p.keyService.Connect() // an idle channel does not dial until asked
		}
		return nil
	})
}

// invalidationReady is a health check that fails until the key
// invalidation feed is live: until then a revocation could go unnoticed.
func (p *extprocParts) invalidationReady(context.Context) error {
	select {
	case <-p.subscribed:
		return nil
	default:
		return errors.New("key invalidation feed not subscribed yet")
	}
}

// newExtProc builds the ext_proc server. It holds no database
// credentials: access keys are resolved the production way — in-process
// cache, then Redis, then the admin service's KeyService at
// s.KeyServiceAddr — and invalidated through Redis pub/sub; usage events are
// published to the Redis usage stream (internal/usagestream) that the admin
// service ingests; GET /v1/models lists the model mappings of the runtime
// configuration the control plane sends.
func newExtProc(ctx context.Context, s *extprocSettings, log *slog.Logger, rdb redis.UniversalClient, reg prometheus.Registerer, opened *closers) (*extprocParts, error) {
	hasher, err := keys.NewHasher(s.Keys.ServerSecret)
	if err != nil {
		return nil, err
	}
	producer, err := usagestream.NewProducer(usagestream.ProducerOptions{
		Redis: rdb, Prefix: s.Redis.Prefix, Buffer: s.Sidecar.UsageBuffer,
		// The event is in Redis before the end of the response reaches the
		// client; the buffer (and the spool) only while Redis fails.
		SyncTimeout: usagestream.DefaultSyncTimeout, SpoolDir: s.Sidecar.UsageSpoolDir,
		Logger: log.With("component", "usage-stream"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	ksTLS, err := s.KeyServiceTLS.clientTLS(keyServiceClientNames(), s.KeyServiceAddr, log)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if ksTLS != nil {
		creds = credentials.NewTLS(ksTLS)
	}
	conn, err := grpc.NewClient(s.KeyServiceAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("keyservice client: %w", err)
	}
	opened.add(conn.Close)
	ksClient := keyservicev1.NewKeyServiceClient(conn)
	klog := log.With("component", "keylookup")
	// While the invalidation subscription is down, no cached key is
	// trusted: every lookup is confirmed by the KeyService.
	feed := new(keylookup.Feed)
	ks, err := keylookup.New(keylookup.Config{
		Client: ksClient, Redis: rdb, Prefix: s.Redis.Prefix,
		MACKey: hasher.Derive(keylookup.CacheMACPurpose), FreshTTL: s.Sidecar.KeyCacheTTL, Logger: klog,
		Feed: feed,
	})
	if err != nil {
		return nil, err
	}
	resolver := keylookup.NewResolver(ks, hasher, accesskey.CacheConfig{
		TTL:           s.Sidecar.KeyCacheTTL,
		NegativeTTL:   min(s.Sidecar.KeyCacheTTL, 5*time.Second),
		MaxEntries:    100_000,
		LookupTimeout: 5 * time.Second,
		Trusted:       feed.Live,
	})
	subscribed := make(chan struct{})
	var subscribedOnce sync.Once
	sub := keylookup.NewSubscriber(rdb, s.Redis.Prefix, keylookup.SubscriberOptions{
		Logger:      klog,
		Feed:        feed,
		OnSubscribe: func() { subscribedOnce.Do(func() { close(subscribed) }) },
	}, resolver, ks)

	logSink := usage.LogSink{Logger: log.With("component", "usage"), Level: slog.LevelDebug}
	comps := []component{{"key-invalidation", sub.Run}}
	bedrockOpts, bedrockComps, runtimeReady, err := newBedrock(ctx, s, log, reg)
	if err != nil {
		return nil, err
	}
	// Budgets read the spend counters the admin's ingester keeps in Redis,
	// and ask the KeyService to rebuild a missing one from Postgres.
	budgets, err := budget.New(budget.Config{
		Redis: rdb, Prefix: s.Redis.Prefix, KeyService: ksClient,
		Location: s.Billing.Location, Logger: log.With("component", "budget"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	bedrockOpts.Budgets = budgets
	// The per-access-key Plan circuit breaker lives in Redis so that every
	// replica, and both filters' streams of one request, agree.
	brk, err := planbreaker.New(planbreaker.Config{
		Redis: rdb, Prefix: s.Redis.Prefix,
		DefaultOpen: s.Breaker.DefaultOpen, MaxOpen: s.Breaker.MaxOpen,
		FailureThreshold: s.Breaker.FailureThreshold, FailureWindow: s.Breaker.FailureWindow,
		ProbeLease: s.Breaker.ProbeLease,
		Logger:     log.With("component", "breaker"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	bedrockOpts.Breaker = brk
	bedrockOpts.PreemptThreshold = s.Breaker.PreemptThreshold
	comps = append(comps, bedrockComps...)
	// Per-minute rate limits: shared buckets in Redis; tokens are counted
	// by the limiter's own goroutine once each response's usage is known.
	limiter, err := ratelimit.New(ratelimit.Config{
		Redis: rdb, Prefix: s.Redis.Prefix,
		Logger: log.With("component", "ratelimit"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	tcpAddr := "" // the address plaintext is checked against; "" for a Unix socket
	if !strings.HasPrefix(s.Sidecar.Addr, "unix:") {
		tcpAddr = strings.TrimPrefix(s.Sidecar.Addr, "tcp://")
	}
	epTLS, err := s.ExtProcTLS.serverTLS(extProcServerNames(), tcpAddr, log)
	if err != nil {
		return nil, err
	}
	// Traces (internal/observability/telemetry); nil, and no tracing work
	// per request, unless CCPROXY_OTEL_EXPORTER is set.
	tel, err := telemetry.New(ctx, s.Telemetry, "ccproxy-extproc", currentBuild().Version, telemetry.Signals{Traces: true})
	if err != nil {
		return nil, err
	}
	srv, err := extproc.NewServer(extproc.Options{
		Tracer:     tel.Tracer(),
		TLS:        epTLS,
		Limits:     router.Limits{MaxConcurrentPerKey: s.Sidecar.KeyMaxConcurrent, MaxRequestBodyBytes: s.Sidecar.MaxRequestBody},
		RateLimits: limiter,

		SkipPlanRequestBodies: s.Sidecar.SkipPlanRequestBodies,
		Logger:                log.With("component", "extproc"),
		Keys:                  resolver,
		Usage:                 usage.FanOut{producer, logSink},
		Registerer:            reg,
		ModelsFunc:            router.RuntimeModels(bedrockOpts.Runtime),
		Bedrock:               bedrockOpts,
		// GET /ak/<key>/me asks the KeyService for the developer's status.
		SelfService: ksClient,
	})
	if err != nil {
		return nil, err
	}
	ln, err := extproc.ListenWith(s.Sidecar.Addr, extproc.ListenOptions{
		SocketMode: s.Sidecar.SocketMode, SocketGroup: s.Sidecar.SocketGroup,
		Warn: func(msg string) { log.Warn(msg) },
	})
	if err != nil {
		return nil, err
	}
	opened.add(ln.Close)
	comps = append(comps, component{"extproc", func(ctx context.Context) error {
		defer conn.Close()
		// The producer outlives the server: streams still draining after
		// ctx ends record their events, which must still be published. It
		// stops (with its bounded final flush) once Serve has returned.
		pctx, stopProducer := context.WithCancel(context.WithoutCancel(ctx))
		produced := make(chan error, 1)
		go func() { produced <- producer.Run(pctx) }()
		// So does the rate limiter's charger: draining streams charge
		// their tokens.
		charged := make(chan error, 1)
		go func() { charged <- limiter.Run(pctx) }()
		err := srv.Serve(ctx, ln)
		stopProducer()
		// The spans of the streams that drained are flushed last.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return errors.Join(err, <-produced, <-charged, tel.Shutdown(tctx))
	}})
	return &extprocParts{comps: comps, subscribed: subscribed, runtimeReady: runtimeReady, keyService: conn}, nil
}

// newBedrock builds what extproc needs to serve Bedrock: the runtime
// configuration client (model mappings, allow-lists and regions, from the
// control plane over xDS) and the credential signer. Bedrock API keys are
// decrypted by extproc itself with the master key or KMS; without either,
// only aws_default_chain credentials can be used, and requests of users
// with an API key are refused with a message naming the gateway's
// configuration.
func newBedrock(ctx context.Context, s *extprocSettings, log *slog.Logger, reg prometheus.Registerer) (*extproc.BedrockOptions, []component, <-chan struct{}, error) {
	var sealer secrets.Sealer
	if sec := s.Secrets; len(sec.MasterKey) > 0 || sec.KMSKeyID != "" {
		var err error
		sealer, err = secrets.New(ctx, secrets.Options{MasterKey: sec.MasterKey, KMSKeyID: sec.KMSKeyID, KMSEndpoint: sec.KMSEndpoint})
		if err != nil {
			return nil, nil, nil, err
		}
	} else {
		log.Warn("no master key or KMS key configured: Bedrock API-key credentials cannot be decrypted, only aws_default_chain credentials work")
	}
	cpTLS, err := s.ControlPlaneTLS.clientTLS(s.ControlPlaneAddr, log)
	if err != nil {
		return nil, nil, nil, err
	}
	rc, err := runtimeconfig.NewClient(runtimeconfig.ClientConfig{
		Addr:       s.ControlPlaneAddr,
		TLS:        cpTLS,
		Logger:     log.With("component", "runtimeconfig"),
		Registerer: reg,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	opts := &extproc.BedrockOptions{
		Runtime: rc,
		Signer:  bedrockauth.New(bedrockauth.Config{Sealer: sealer}),
	}
	return opts, []component{{"runtime-config", rc.Run}}, rc.Ready(), nil
}

// metricsComponent serves /metrics and the health probes.
func metricsComponent(s config.Serving, log *slog.Logger, reg *prometheus.Registry, health *observability.Health) component {
	return component{"metrics", func(ctx context.Context) error {
		return observability.ServeMetrics(ctx, log, s.MetricsAddr, reg, health)
	}}
}
