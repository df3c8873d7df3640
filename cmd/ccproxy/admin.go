package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/admin/ingest"
	adminks "github.com/ccproxy/ccproxy/admin/keyservice"
	"github.com/ccproxy/ccproxy/admin/maintenance"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/usagestream"
)

func newAdminCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Run the admin service: REST API for admins and the internal KeyService for extproc",
		Long: `Runs the admin service: the REST API under /api/v1 (OpenAPI document at /api/v1/openapi.json) for
managing users, access keys, Bedrock credentials, model mappings, prices and reading usage, and the
internal KeyService that extproc uses to resolve access keys. Changes to keys and users are published
on Redis so that every extproc drops its cached copy within a second. It also ingests the usage events
extproc publishes on the Redis usage stream into Postgres (every replica takes a share).

When no admin account exists, one is created from CCPROXY_ADMIN_USERNAME / CCPROXY_ADMIN_PASSWORD.`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd, config.Database(), config.Redis(), config.RedisNamespace(), config.Keys(), config.Secrets(), config.Admin(), config.Billing(), config.UsageIngest(), config.Serving())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := load(b, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		st, err := store.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CheckSchema(ctx); err != nil {
			return err
		}
		rdb, err := redisClient(cfg)
		if err != nil {
			return err
		}
		defer rdb.Close()
		if cfg.AdminPassword == "" {
			n, err := st.Admins().Count(ctx)
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("no admin account exists: set CCPROXY_ADMIN_PASSWORD (and CCPROXY_ADMIN_USERNAME) to create the first one")
			}
		}
		reg := observability.NewRegistry()
		health := observability.NewHealth()
		health.Add("postgres", func(ctx context.Context) error { return st.Pool().Ping(ctx) })
		health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
		comps, _, err := adminComponents(ctx, cfg, log, st, rdb, reg, io.Discard)
		if err != nil {
			return err
		}
		return runAll(ctx, log, append(comps, metricsComponent(cfg, log, reg, health))...)
	}
	return cmd
}

func redisClient(cfg *config.Config) (*redis.Client, error) {
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	return redis.NewClient(opts), nil
}

// adminComponents builds the admin REST API and the KeyService servers. It
// creates the first admin when none exists; when it had to generate the
// password (dev), it prints it once to announce. It returns the bound
// KeyService address.
func adminComponents(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Store, rdb redis.UniversalClient, reg prometheus.Registerer, announce io.Writer) ([]component, string, error) {
	sealer, err := secrets.New(ctx, secrets.Options{MasterKey: cfg.MasterKey, KMSKeyID: cfg.KMSKeyID, KMSEndpoint: cfg.KMSEndpoint})
	if err != nil {
		return nil, "", fmt.Errorf("stored secrets (set CCPROXY_MASTER_KEY or CCPROXY_KMS_KEY_ID): %w", err)
	}
	hasher, err := keys.NewHasher(cfg.ServerSecret)
	if err != nil {
		return nil, "", err
	}
	if cfg.AdminPassword != "" {
		created, err := admin.EnsureFirstAdmin(ctx, st, cfg.AdminUsername, cfg.AdminPassword)
		if err != nil {
			return nil, "", err
		}
		if created {
			log.Info("created the first admin", "username", cfg.AdminUsername)
		}
	} else if n, err := st.Admins().Count(ctx); err != nil {
		return nil, "", err
	} else if n == 0 {
		pw := make([]byte, 18)
		_, _ = rand.Read(pw)
		password := base64.RawURLEncoding.EncodeToString(pw)
		if _, err := admin.EnsureFirstAdmin(ctx, st, cfg.AdminUsername, password); err != nil {
			return nil, "", err
		}
		fmt.Fprintf(announce, "Created admin %q with password %s (shown once; set CCPROXY_ADMIN_PASSWORD to choose one).\n\n", cfg.AdminUsername, password)
	}

	api, err := admin.New(admin.Options{
		Store: st, Sealer: sealer, Hasher: hasher, Logger: log.With("component", "admin"), Registerer: reg,
		Invalidator: publisher{keylookup.NewPublisher(rdb, cfg.RedisPrefix)},
	})
	if err != nil {
		return nil, "", err
	}
	httpLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, "", fmt.Errorf("admin api: listen on %s: %w", cfg.AdminAddr, err)
	}
	grpcLn, err := net.Listen("tcp", cfg.AdminGRPCAddr)
	if err != nil {
		httpLn.Close()
		return nil, "", fmt.Errorf("keyservice: listen on %s: %w", cfg.AdminGRPCAddr, err)
	}
	gs := grpc.NewServer()
	adminks.NewServer(st, adminks.Options{
		Logger: log.With("component", "keyservice"),
		// MonthlySpend rebuilds a missing spend counter from Postgres.
		Redis: rdb, RedisPrefix: cfg.RedisPrefix, Location: cfg.BillingLocation,
	}).Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}

	comps := []component{
		{"admin-api", func(ctx context.Context) error {
			log.Info("admin API listening", "addr", httpLn.Addr().String())
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(httpLn) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			return srv.Shutdown(sctx)
		}},
		{"keyservice", func(ctx context.Context) error {
			log.Info("KeyService listening", "addr", grpcLn.Addr().String())
			errc := make(chan error, 1)
			go func() { errc <- gs.Serve(grpcLn) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			hs.Shutdown()
			gs.GracefulStop()
			return nil
		}},
	}
	// Partition maintenance, usage retention, session and rotated-key expiry
	// (admin/maintenance); one replica at a time, at start and hourly.
	comps = append(comps, component{"maintenance", func(ctx context.Context) error {
		job, err := maintenance.New(maintenance.Options{
			Store: st, Retention: cfg.UsageRetentionMonths, Registerer: reg, Logger: log.With("component", "maintenance"),
			Invalidate: keylookup.NewPublisher(rdb, cfg.RedisPrefix).PublishKeyChange,
		})
		if err != nil {
			return err
		}
		return job.Run(ctx)
	}})
	// Usage ingest: the Redis usage stream into Postgres, priced, with the
	// Bedrock spend counters kept exact (admin/ingest, internal/usagestream).
	emfOut, err := emf.New(cfg.CloudWatchEMF, emf.Options{})
	if err != nil {
		return nil, "", err
	}
	ingester, err := ingest.New(ingest.Options{
		Store: st, Redis: rdb, Prefix: cfg.RedisPrefix, Location: cfg.BillingLocation, EMF: emfOut,
		Logger: log.With("component", "usage-ingest"), Registerer: reg,
	})
	if err != nil {
		return nil, "", err
	}
	consumer, err := usagestream.NewConsumer(usagestream.ConsumerOptions{
		Redis: rdb, Prefix: cfg.RedisPrefix, ClaimIdle: cfg.UsageClaimIdle,
		Logger: log.With("component", "usage-ingest"), Registerer: reg,
	}, ingester.Handle)
	if err != nil {
		return nil, "", err
	}
	comps = append(comps, component{"usage-ingest", consumer.Run})
	return comps, grpcLn.Addr().String(), nil
}

// publisher tells every extproc, through Redis, that keys changed.
type publisher struct{ p *keylookup.Publisher }

func (p publisher) Invalidate(ctx context.Context, inv admin.Invalidation) error {
	if len(inv.KeyHashes) == 0 {
		return nil
	}
	return p.p.PublishKeyChange(ctx, inv.KeyHashes...)
}
