package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/keyservice"
	"github.com/ccproxy/ccproxy/extproc/router"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/usage"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/storebridge"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
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

// extprocParts is the ext_proc server with its dependencies.
type extprocParts struct {
	server *extproc.Server
	ln     net.Listener
	comps  []component
}

// newExtProc builds the ext_proc server. Access keys are resolved the
// production way — in-process cache, then Redis, then the admin service's
// KeyService at ksAddr — and invalidated through Redis pub/sub, so extproc
// needs no database for them. st is optional: with it, usage rows are
// written to Postgres and /v1/models lists the model mappings; without it,
// usage is only logged (the Redis usage stream replaces this in a later
// release).
func newExtProc(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Store, rdb redis.UniversalClient, ksAddr string, reg prometheus.Registerer) (*extprocParts, error) {
	hasher, err := keys.NewHasher(cfg.ServerSecret)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(ksAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("keyservice client: %w", err)
	}
	klog := log.With("component", "keylookup")
	ks := keyservice.New(keyservice.Config{
		Client: keyservicev1.NewKeyServiceClient(conn), Redis: rdb, Prefix: cfg.RedisPrefix,
		FreshTTL: cfg.KeyCacheTTL, Logger: klog,
	})
	resolver := keyservice.NewResolver(ks, hasher, auth.CacheConfig{
		TTL:           cfg.KeyCacheTTL,
		NegativeTTL:   min(cfg.KeyCacheTTL, 5*time.Second),
		MaxEntries:    100_000,
		LookupTimeout: 5 * time.Second,
	})
	sub := keyservice.NewSubscriber(rdb, cfg.RedisPrefix, keyservice.SubscriberOptions{Logger: klog}, resolver, ks)

	logSink := usage.LogSink{Logger: log.With("component", "usage"), Level: slog.LevelDebug}
	var sink usage.Sink = logSink
	var models []router.Model
	comps := []component{{"key-invalidation", sub.Run}}
	if st != nil {
		if models, err = modelList(ctx, st); err != nil {
			conn.Close()
			return nil, err
		}
		w := storebridge.NewUsageSink(st, storebridge.UsageSinkOptions{Logger: log.With("component", "usage")})
		sink = usage.FanOut{w, logSink}
		comps = append(comps, component{"usage-writer", w.Run})
	}
	bedrockOpts, bedrockComps, err := newBedrock(ctx, cfg, log, reg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	comps = append(comps, bedrockComps...)
	srv, err := extproc.NewServer(extproc.Options{
		Logger:     log.With("component", "extproc"),
		Keys:       resolver,
		Usage:      sink,
		Registerer: reg,
		Models:     models,
		Bedrock:    bedrockOpts,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	ln, err := extproc.Listen(cfg.ExtProcAddr)
	if err != nil {
		conn.Close()
		return nil, err
	}
	comps = append(comps, component{"extproc", func(ctx context.Context) error {
		defer conn.Close()
		return srv.Serve(ctx, ln)
	}})
	return &extprocParts{server: srv, ln: ln, comps: comps}, nil
}

func (p *extprocParts) components() []component { return p.comps }

// newBedrock builds what extproc needs to serve Bedrock: the runtime
// configuration client (model mappings, allow-lists and regions, from the
// control plane over xDS) and the credential signer. Bedrock API keys are
// decrypted by extproc itself with the master key or KMS; without either,
// only aws_default_chain credentials can be used, and requests of users
// with an API key are refused with a message naming the gateway's
// configuration.
func newBedrock(ctx context.Context, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*extproc.BedrockOptions, []component, error) {
	var sealer secrets.Sealer
	if len(cfg.MasterKey) > 0 || cfg.KMSKeyID != "" {
		var err error
		sealer, err = secrets.New(ctx, secrets.Options{MasterKey: cfg.MasterKey, KMSKeyID: cfg.KMSKeyID, KMSEndpoint: cfg.KMSEndpoint})
		if err != nil {
			return nil, nil, err
		}
	} else {
		log.Warn("no master key or KMS key configured: Bedrock API-key credentials cannot be decrypted, only aws_default_chain credentials work")
	}
	rc, err := runtimeconfig.NewClient(runtimeconfig.ClientConfig{
		Addr:       cfg.ControlPlaneAddr,
		Logger:     log.With("component", "runtimeconfig"),
		Registerer: reg,
	})
	if err != nil {
		return nil, nil, err
	}
	opts := &extproc.BedrockOptions{
		Runtime: rc,
		Signer:  bedrockauth.New(bedrockauth.Config{Sealer: sealer}),
	}
	return opts, []component{{"runtime-config", rc.Run}}, nil
}

// modelList is the GET /v1/models answer: the enabled model mappings.
func modelList(ctx context.Context, st *store.Store) ([]router.Model, error) {
	mappings, err := st.Models().ListEnabled(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model list: %w", err)
	}
	out := make([]router.Model, 0, len(mappings))
	for _, m := range mappings {
		out = append(out, router.Model{ID: m.AnthropicModelID, DisplayName: displayName(m.AnthropicModelID), CreatedAt: m.CreatedAt})
	}
	return out, nil
}

// displayName turns claude-sonnet-4-5-20250929 into "Claude Sonnet 4.5":
// words capitalised, adjacent version numbers joined with dots, the date
// suffix dropped.
func displayName(id string) string {
	parts := strings.Split(id, "-")
	if n := len(parts); n > 1 && len(parts[n-1]) == 8 && isDigits(parts[n-1]) {
		parts = parts[:n-1]
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case i == 0:
		case isDigits(p) && isDigits(parts[i-1]):
			b.WriteByte('.')
		default:
			b.WriteByte(' ')
		}
		if p != "" && p[0] >= 'a' && p[0] <= 'z' {
			p = string(p[0]-'a'+'A') + p[1:]
		}
		b.WriteString(p)
	}
	return b.String()
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// metricsComponent serves /metrics and the health probes.
func metricsComponent(cfg *config.Config, log *slog.Logger, reg *prometheus.Registry, health *observability.Health) component {
	return component{"metrics", func(ctx context.Context) error {
		return observability.ServeMetrics(ctx, log, cfg.MetricsAddr, reg, health)
	}}
}
