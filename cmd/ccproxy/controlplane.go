package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

func newControlPlaneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Envoy's configuration (listeners, routes, clusters) over xDS",
		Long: `Runs the xDS control plane: Envoy connects to it over ADS (see envoy/bootstrap.yaml) and receives
the gateway's listener, routes and clusters with the production settings ccproxy needs, and extproc
receives its Bedrock runtime configuration (model mappings, regions) from the same server.

The Bedrock part comes from Postgres: one cluster and route per region of the Bedrock credentials in
use, and the enabled model mappings. Changes are picked up as they are committed (LISTEN/NOTIFY).`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd, config.XDS(), config.DataPlane(), config.ExtProcAddress(), config.Database(), config.Serving())
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
		cpLog := log.With("component", "controlplane")
		base := controlPlaneOptions(cfg)
		// Start from the database's configuration: serving a snapshot without the Bedrock
		// clusters first would make every connected Envoy drop them on a restart.
		opts, err := controlplane.DatabaseOptions(ctx, st, base, cpLog)
		if err != nil {
			return err
		}
		reg := observability.NewRegistry()
		srv, err := controlplane.NewServer(opts, cpLog, reg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.XDSAddr)
		if err != nil {
			return fmt.Errorf("xds: listen on %s: %w", cfg.XDSAddr, err)
		}
		// No Postgres readiness check: while the database is away the last configuration is
		// still served, and Envoys must keep reaching this server.
		health := observability.NewHealth()
		log.Info("serving xDS", "addr", ln.Addr().String(), "version", srv.Version(), "bedrock_regions", opts.BedrockRegions)
		return runAll(ctx, log,
			component{"xds", func(ctx context.Context) error { return srv.Serve(ctx, ln) }},
			component{"database", func(ctx context.Context) error {
				return controlplane.WatchDatabase(ctx, st, base, srv, cpLog)
			}},
			metricsComponent(cfg, log, reg, health))
	}
	return cmd
}

// controlPlaneOptions is the part of the control plane's options that comes from settings;
// the Bedrock regions and model mappings come from the database (controlplane.DatabaseOptions).
func controlPlaneOptions(cfg *config.Config) controlplane.Options {
	return controlplane.Options{
		ListenAddress:  cfg.ListenAddr,
		ExtProcAddress: cfg.ExtProcAddr,
		AnthropicURL:   cfg.AnthropicURL,
		UpstreamCAFile: cfg.UpstreamCAFile,
		BedrockURL:     cfg.BedrockURL,
		Bedrock:        &runtimev1.BedrockConfig{ProfileRuleFallback: cfg.BedrockProfileRule},
	}.WithDefaults()
}
