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
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/admin/ingest"
	adminks "github.com/ccproxy/ccproxy/admin/keyservice"
	"github.com/ccproxy/ccproxy/admin/maintenance"
	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/dashboard"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/observability/telemetry"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/usagestream"
)

func newAdminCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Run the admin service: REST API for admins and the internal KeyService for extproc",
		Long: `Runs the admin service: the admin dashboard at / and the REST API under /api/v1 (OpenAPI document at /api/v1/openapi.json) for
managing users, access keys, Bedrock credentials, model mappings, prices and reading usage, and the
internal KeyService that extproc uses to resolve access keys. Changes to keys and users are published
on Redis so that every extproc drops its cached copy within a second. It also ingests the usage events
extproc publishes on the Redis usage stream into Postgres (every replica takes a share).

When no admin account exists, one is created from CCPROXY_ADMIN_USERNAME / CCPROXY_ADMIN_PASSWORD.
An operator locked out of every admin account resets a password with "ccproxy admin reset-password".`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newAdminResetPasswordCommand(p))
	s := &adminSettings{}
	b := p.bind(cmd, s.groups()...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		st, err := store.Open(ctx, s.Postgres.URL)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CheckSchema(ctx); err != nil {
			return err
		}
		rdb, err := redisClient(s.Redis)
		if err != nil {
			return err
		}
		defer rdb.Close()
		if s.Service.Password == "" {
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
		var opened closers
		defer opened.closeAll()
		comps, _, err := adminComponents(ctx, s, log, st, rdb, reg, io.Discard, &opened)
		if err != nil {
			return err
		}
		opened.handOver()
		return runAll(ctx, log, append(comps, metricsComponent(s.Serving, log, reg, health))...)
	}
	return cmd
}

// adminSettings are the settings of `ccproxy admin`; `ccproxy dev` builds
// the same components from its own copy (devSettings.admin).
type adminSettings struct {
	Postgres    config.Postgres
	Redis       config.Redis
	Keys        config.AccessKeys
	Secrets     config.Secrets
	Billing     config.Billing
	Serving     config.Serving
	Service     adminServiceSettings
	Security    adminSecuritySettings
	UsageIngest usageIngestSettings
	// SSO is single sign-on for admins.
	SSO      ssoSettings
	Webhooks webhookSettings
	// KeyServiceTLS protects the KeyService: mutual TLS, or plaintext on
	// loopback only unless asked for.
	KeyServiceTLS channelTLS
	// Telemetry is the OpenTelemetry export (the per-request metrics).
	Telemetry config.Telemetry
}

func (s *adminSettings) groups() []config.Group {
	return []config.Group{
		s.Postgres.Group(), s.Redis.Group(), s.Keys.Group(), s.Secrets.Group(), s.Service.group(), s.Security.group(), s.SSO.group(),
		s.KeyServiceTLS.group(keyServiceServerNames()), s.Billing.Group(), s.UsageIngest.group(), s.Webhooks.group(), s.Serving.Group(), s.Telemetry.Group(),
	}
}

// adminServiceSettings are the admin service's own settings.
type adminServiceSettings struct {
	// Addr is where the admin REST API listens.
	Addr string
	// GRPCAddr is where the admin service's internal KeyService listens.
	GRPCAddr string
	// Username and Password create the first admin when none exists.
	Username string
	Password string
	// UsageRetentionMonths is how many whole months of raw usage events the
	// admin service keeps before the current month; 0 keeps them forever.
	UsageRetentionMonths int
	// CloudWatchEMF is where usage metrics are written in CloudWatch's
	// embedded metric format: "off" or "stdout".
	CloudWatchEMF string
	// CloudWatchNamespace is the namespace of those metrics.
	CloudWatchNamespace string
	// GatewayURL is the gateway's address as developers reach it (the
	// dashboard shows ANTHROPIC_BASE_URL lines with it).
	GatewayURL string
	// SeatPrices are the monthly seat prices for seat economics.
	SeatPrices map[store.SeatType]decimal.Decimal
}

// parseSeatPrices reads "pro=20,max_5x=100,max_20x=200": seat types and
// monthly USD prices; types not named keep admin.DefaultSeatPrices.
func parseSeatPrices(v string) (map[store.SeatType]decimal.Decimal, error) {
	out := map[store.SeatType]decimal.Decimal{}
	for _, part := range strings.Split(v, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		name, price, ok := strings.Cut(part, "=")
		st := store.SeatType(strings.TrimSpace(name))
		d, err := decimal.NewFromString(strings.TrimSpace(price))
		if !ok || !st.Valid() || err != nil || d.IsNegative() || !d.Equal(d.Round(2)) || d.GreaterThan(decimal.NewFromInt(1_000_000)) {
			return nil, errors.New("must be seat=price pairs such as pro=20,max_5x=100,max_20x=200,api=0 (seats pro, max_5x, max_20x, api; prices in USD)")
		}
		out[st] = d
	}
	return out, nil
}

func (s *adminServiceSettings) group() config.Group {
	return config.Group{Title: "Admin service", Settings: []config.Setting{{
		Flag: "gateway-url", Env: "CCPROXY_GATEWAY_URL",
		Usage: "the gateway's URL as developers reach it (e.g. https://gw.example.com), shown by the dashboard in the ANTHROPIC_BASE_URL line of a new key; ccproxy dev uses its own listener when empty",
		Set: func(v string) error {
			if v != "" {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
					return errors.New("must be an http or https URL such as https://gw.example.com")
				}
				v = strings.TrimSuffix(v, "/")
			}
			s.GatewayURL = v
			return nil
		},
	}, {
		Flag: "seat-prices", Env: "CCPROXY_SEAT_PRICES", Default: "pro=20,max_5x=100,max_20x=200,api=0",
		Usage: "monthly USD price of each seat type for seat economics (GET /api/v1/seats), as seat=price pairs; seats: pro, max_5x, max_20x, api",
		Set: func(v string) error {
			m, err := parseSeatPrices(v)
			if err != nil {
				return err
			}
			s.SeatPrices = m
			return nil
		},
	}, {
		Flag: "admin-addr", Env: "CCPROXY_ADMIN_ADDR", Default: "0.0.0.0:8081",
		Usage: "address (IP:port) of the admin REST API (/api/v1)",
		Set: func(v string) error {
			if err := config.CheckHostPort(v); err != nil {
				return err
			}
			s.Addr = v
			return nil
		},
	}, {
		Flag: "admin-grpc-addr", Env: "CCPROXY_ADMIN_GRPC_ADDR", Default: "127.0.0.1:9091",
		Usage: "address (IP:port) of the internal KeyService gRPC server that extproc calls; a non-loopback address needs the admin-grpc-tls files (mutual TLS) or --admin-grpc-insecure",
		Set: func(v string) error {
			if err := config.CheckHostPort(v); err != nil {
				return err
			}
			s.GRPCAddr = v
			return nil
		},
	}, {
		Flag: "admin-username", Env: "CCPROXY_ADMIN_USERNAME", Default: "admin",
		Usage: "username of the first admin, created when no admin exists",
		Set:   func(v string) error { s.Username = v; return nil },
	}, {
		Flag: "admin-password", Env: "CCPROXY_ADMIN_PASSWORD", Secret: true,
		Usage: "password of the first admin, created when no admin exists (ccproxy dev generates and prints one when empty)",
		Set: func(v string) error {
			if v != "" && len(v) < 12 {
				return errors.New("must be at least 12 characters")
			}
			s.Password = v
			return nil
		},
	}, {
		Flag: "usage-retention", Env: "CCPROXY_USAGE_RETENTION",
		Usage: "months of raw usage events (per-request rows) to keep before the current month, a whole number such as 13; " +
			"older monthly partitions are dropped by the hourly maintenance job. Hourly and daily rollups are always kept. Empty or 0 keeps everything",
		Set: func(v string) error {
			if v == "" {
				s.UsageRetentionMonths = 0
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1200 {
				return errors.New("must be a whole number of months from 0 to 1200 (e.g. 13); 0 or empty keeps usage events forever")
			}
			s.UsageRetentionMonths = n
			return nil
		},
	}, {
		Flag: "cloudwatch-emf", Env: "CCPROXY_CLOUDWATCH_EMF", Default: "off",
		Usage: "CloudWatch embedded metric format (EMF) output of the per-request metrics (proxy.requests, proxy.latency, proxy.ttft, proxy.tokens, proxy.cost, proxy.errors, proxy.fallbacks): " +
			"off, or stdout (JSON lines for the CloudWatch agent or an ECS/EKS log pipeline)",
		Set: func(v string) error {
			switch v {
			case "off", "stdout":
				s.CloudWatchEMF = v
				return nil
			}
			return errors.New("must be off or stdout")
		},
	}, {
		Flag: "cloudwatch-namespace", Env: "CCPROXY_CLOUDWATCH_NAMESPACE", Default: emf.DefaultNamespace,
		Usage: "CloudWatch namespace of the EMF metrics (the original proxy's by default, so that its dashboards and alarms keep working)",
		Set: func(v string) error {
			if v == "" || len(v) > 255 || strings.HasPrefix(v, "AWS/") || strings.ContainsAny(v, "\x00\n\r\t") {
				return errors.New("must be 1 to 255 characters, not starting with AWS/")
			}
			s.CloudWatchNamespace = v
			return nil
		},
	}}}
}

// usageIngestSettings tune the admin service's usage ingester.
type usageIngestSettings struct {
	// ClaimIdle is how long a usage stream entry may stay unacknowledged by
	// a consumer before another admin replica takes it over.
	ClaimIdle time.Duration
}

func (s *usageIngestSettings) group() config.Group {
	return config.Group{Title: "Usage ingest", Settings: []config.Setting{{
		Flag: "usage-claim-idle", Env: "CCPROXY_USAGE_CLAIM_IDLE", Default: "30s",
		Usage: "how long a usage event may stay unacknowledged by an admin replica (crashed, stuck) before another replica takes it over",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return errors.New("must be a duration of at least 1s, such as 30s")
			}
			s.ClaimIdle = d
			return nil
		},
	}}}
}

func redisClient(s config.Redis) (*redis.Client, error) {
	opts, err := redis.ParseURL(s.URL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url / REDIS_URL: %w", err)
	}
	return redis.NewClient(opts), nil
}

// adminComponents builds the admin REST API and the KeyService servers. It
// creates the first admin when none exists; when it had to generate the
// password (dev), it prints it once to announce. It returns the bound
// KeyService address.
func adminComponents(ctx context.Context, s *adminSettings, log *slog.Logger, st *store.Store, rdb redis.UniversalClient, reg prometheus.Registerer, announce io.Writer, opened *closers) ([]component, string, error) {
	sealer, err := secrets.New(ctx, secrets.Options{MasterKey: s.Secrets.MasterKey, KMSKeyID: s.Secrets.KMSKeyID, KMSEndpoint: s.Secrets.KMSEndpoint})
	if err != nil {
		return nil, "", fmt.Errorf("stored secrets (set CCPROXY_MASTER_KEY or CCPROXY_KMS_KEY_ID): %w", err)
	}
	hasher, err := keys.NewHasher(s.Keys.ServerSecret)
	if err != nil {
		return nil, "", err
	}
	svc := s.Service
	if svc.Password != "" {
		created, err := admin.EnsureFirstAdmin(ctx, st, svc.Username, svc.Password)
		if err != nil {
			return nil, "", err
		}
		if created {
			log.Info("created the first admin", "username", svc.Username)
		}
	} else if n, err := st.Admins().Count(ctx); err != nil {
		return nil, "", err
	} else if n == 0 {
		pw := make([]byte, 18)
		_, _ = rand.Read(pw)
		password := base64.RawURLEncoding.EncodeToString(pw)
		if _, err := admin.EnsureFirstAdmin(ctx, st, svc.Username, password); err != nil {
			return nil, "", err
		}
		fmt.Fprintf(announce, "Created admin %q with password %s (shown once; set CCPROXY_ADMIN_PASSWORD to choose one).\n\n", svc.Username, password)
	}

	// Webhook notifications: the outbox's dispatcher, in every replica.
	dispatcher, err := notifications.NewDispatcher(notifications.DispatcherOptions{
		Store: st, Sealer: sealer, Timeout: s.Webhooks.Timeout, AllowPrivateTargets: s.Webhooks.AllowPrivate,
		MaxAttempts: s.Webhooks.MaxAttempts, Logger: log.With("component", "webhooks"), Registerer: reg,
	})
	if err != nil {
		return nil, "", err
	}
	opts := admin.Options{
		Store: st, Sealer: sealer, Hasher: hasher, Logger: log.With("component", "admin"), Registerer: reg,
		Invalidator: publisher{keylookup.NewPublisher(rdb, s.Redis.Prefix)},
		Location:    s.Billing.Location, GatewayURL: s.Service.GatewayURL, UI: dashboard.Handler(),
		SeatPrices:           s.Service.SeatPrices,
		AllowPrivateWebhooks: s.Webhooks.AllowPrivate, OnNotify: dispatcher.Wake,
	}
	s.Security.options(&opts)
	if opts.OIDC, err = s.SSO.config(); err != nil {
		return nil, "", err
	}
	api, err := admin.New(opts)
	if err != nil {
		return nil, "", err
	}
	httpLn, err := net.Listen("tcp", svc.Addr)
	if err != nil {
		return nil, "", fmt.Errorf("admin api: listen on %s (--admin-addr / CCPROXY_ADMIN_ADDR): %w", svc.Addr, err)
	}
	opened.add(httpLn.Close)
	ksTLS, err := s.KeyServiceTLS.serverTLS(keyServiceServerNames(), svc.GRPCAddr, log)
	if err != nil {
		return nil, "", err
	}
	grpcLn, err := net.Listen("tcp", svc.GRPCAddr)
	if err != nil {
		return nil, "", fmt.Errorf("keyservice: listen on %s (--admin-grpc-addr / CCPROXY_ADMIN_GRPC_ADDR): %w", svc.GRPCAddr, err)
	}
	opened.add(grpcLn.Close)
	var gopts []grpc.ServerOption
	if ksTLS != nil {
		// LookupKey answers with users, budgets and credential ciphertext:
		// only clients with a certificate from the KeyService's CA get in.
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(ksTLS)))
	}
	gs := grpc.NewServer(gopts...)
	adminks.NewServer(st, adminks.Options{
		Logger: log.With("component", "keyservice"),
		// MonthlySpend rebuilds a missing spend counter from Postgres.
		Redis: rdb, RedisPrefix: s.Redis.Prefix, Location: s.Billing.Location,
	}).Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	srv := api.HTTPServer(s.Security.HTTP)

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
			sctx, cancel := context.WithTimeout(context.Background(), s.Serving.ShutdownTimeout)
			defer cancel()
			return srv.Shutdown(sctx)
		}},
		{"keyservice", func(ctx context.Context) error {
			log.Info("KeyService listening", "addr", grpcLn.Addr().String(), "mtls", ksTLS != nil)
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
			Store: st, Retention: svc.UsageRetentionMonths, Registerer: reg, Logger: log.With("component", "maintenance"),
			Invalidate: keylookup.NewPublisher(rdb, s.Redis.Prefix).PublishKeyChange,
		})
		if err != nil {
			return err
		}
		return job.Run(ctx)
	}})
	// Usage ingest: the Redis usage stream into Postgres, priced, with the
	// Bedrock spend counters kept exact (admin/ingest, internal/usagestream).
	emfOut, err := emf.New(svc.CloudWatchEMF, emf.Options{Namespace: svc.CloudWatchNamespace, PerUser: s.Telemetry.PerUser})
	if err != nil {
		return nil, "", err
	}
	// The same metric set over OTLP (internal/observability/telemetry).
	tel, err := telemetry.New(ctx, s.Telemetry, "ccproxy-admin", currentBuild().Version, telemetry.Signals{Metrics: true})
	if err != nil {
		return nil, "", err
	}
	otelMetrics, err := telemetry.NewRequestMetrics(tel.Meter(), s.Telemetry.PerUser)
	if err != nil {
		return nil, "", errors.Join(err, tel.Shutdown(ctx))
	}
	if tel != nil {
		comps = append(comps, component{"telemetry", func(ctx context.Context) error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return tel.Shutdown(sctx)
		}})
	}
	ingester, err := ingest.New(ingest.Options{
		Store: st, Redis: rdb, Prefix: s.Redis.Prefix, Location: s.Billing.Location, EMF: emfOut, OTel: otelMetrics, OnNotify: dispatcher.Wake,
		Logger: log.With("component", "usage-ingest"), Registerer: reg,
	})
	if err != nil {
		return nil, "", err
	}
	consumer, err := usagestream.NewConsumer(usagestream.ConsumerOptions{
		Redis: rdb, Prefix: s.Redis.Prefix, ClaimIdle: s.UsageIngest.ClaimIdle,
		Logger: log.With("component", "usage-ingest"), Registerer: reg,
	}, ingester.Handle)
	if err != nil {
		return nil, "", err
	}
	comps = append(comps, component{"usage-ingest", consumer.Run}, component{"webhooks", dispatcher.Run})
	if s.Webhooks.BreakerAfter > 0 {
		w := &notifications.BreakerWatcher{Store: st, Redis: rdb, Prefix: s.Redis.Prefix, Threshold: s.Webhooks.BreakerAfter,
			Logger: log.With("component", "webhooks"), OnEnqueue: dispatcher.Wake}
		comps = append(comps, component{"breaker-watch", w.Run})
	}
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
