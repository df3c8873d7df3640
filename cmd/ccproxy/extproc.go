package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
)

func newExtProcCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "extproc",
		Short: "Run the ext_proc sidecar that Envoy calls for every request",
		Long: `Runs the Envoy external processor: it authenticates access keys, chooses each request's
route, passes Plan traffic through untouched and meters usage. Run it beside every Envoy, on a Unix
socket shared with Envoy (--extproc-addr unix:///run/ccproxy/extproc.sock) or on loopback.

Access keys are resolved through an in-process cache, Redis and the admin service's KeyService
(--keyservice-addr); revocations arrive over Redis pub/sub. No database credentials are needed for
that. Until the Redis usage stream lands, usage rows are written to Postgres only when DATABASE_URL
is set (otherwise usage is logged at debug level and counted in metrics).`,
		Args: cobra.NoArgs,
	}
	// DATABASE_URL is optional here: see the command's description.
	b := settings(cmd, config.WithDefault(config.Database(), "database-url", ""), config.Redis(), config.RedisNamespace(),
		config.Keys(), config.Secrets(), config.ExtProc(), config.ControlPlane(), config.KeyService(), config.Serving())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := load(b, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		reg := observability.NewRegistry()
		health := observability.NewHealth()
		rdb, err := redisClient(cfg)
		if err != nil {
			return err
		}
		defer rdb.Close()
		health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })

		var st *store.Store
		if cfg.DatabaseURL != "" {
			if st, err = store.Open(ctx, cfg.DatabaseURL); err != nil {
				return err
			}
			defer st.Close()
			if err := st.CheckSchema(ctx); err != nil {
				return err
			}
		}
		ep, err := newExtProc(ctx, cfg, log, st, rdb, cfg.KeyServiceAddr, reg)
		if err != nil {
			return err
		}
		log.Info("extproc listening", "addr", cfg.ExtProcAddr, "keyservice", cfg.KeyServiceAddr)
		return runAll(ctx, log, append(ep.components(), metricsComponent(cfg, log, reg, health))...)
	}
	return cmd
}
