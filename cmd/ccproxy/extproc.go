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

This release resolves keys and records usage through Postgres (DATABASE_URL).`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd, config.Database(), config.Keys(), config.ExtProc(), config.Serving())
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
		reg := observability.NewRegistry()
		health := observability.NewHealth()
		health.Add("postgres", func(ctx context.Context) error { return st.Pool().Ping(ctx) })
		ep, err := newExtProc(ctx, cfg, log, st, reg)
		if err != nil {
			return err
		}
		log.Info("extproc listening", "addr", cfg.ExtProcAddr)
		return runAll(ctx, log, append(ep.components(), metricsComponent(cfg, log, reg, health))...)
	}
	return cmd
}
