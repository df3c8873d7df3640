package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
)

func newExtProcCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "extproc",
		Short: "Run the ext_proc sidecar that Envoy calls for every request",
		Long: `Runs the Envoy external processor: it authenticates access keys, chooses each request's
route, passes Plan traffic through untouched and meters usage. Run it beside every Envoy, on a Unix
socket shared with Envoy (--extproc-addr unix:///run/ccproxy/extproc.sock) or on loopback.

Access keys are resolved through an in-process cache, Redis and the admin service's KeyService
(--keyservice-addr); revocations arrive over Redis pub/sub. Usage events are published to a Redis
stream that the admin service ingests into Postgres; while Redis is unreachable they wait in memory
(--usage-buffer). The model list and Bedrock configuration come from the control plane. extproc
holds no database credentials.`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd, config.Redis(), config.RedisNamespace(), config.Keys(), config.Secrets(), config.ExtProc(),
		config.ControlPlane(), config.KeyService(), config.Billing(), config.Serving())
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

		ep, err := newExtProc(ctx, cfg, log, rdb, cfg.KeyServiceAddr, reg)
		if err != nil {
			return err
		}
		log.Info("extproc listening", "addr", cfg.ExtProcAddr, "keyservice", cfg.KeyServiceAddr)
		health.Add("key-invalidation", ep.invalidationReady)
		return runAll(ctx, log, append(ep.components(), metricsComponent(cfg, log, reg, health))...)
	}
	return cmd
}
