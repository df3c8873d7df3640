package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
)

func newControlPlaneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Envoy's configuration (listeners, routes, clusters) over xDS",
		Long: `Runs the xDS control plane: Envoy connects to it over ADS (see envoy/bootstrap.yaml) and receives
the gateway's listener, routes and clusters with the production settings ccproxy needs.`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd, config.XDS(), config.DataPlane(), config.ExtProcAddress(), config.Serving())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := load(b, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		reg := observability.NewRegistry()
		srv, err := controlplane.NewServer(controlPlaneOptions(cfg), log.With("component", "controlplane"), reg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.XDSAddr)
		if err != nil {
			return fmt.Errorf("xds: listen on %s: %w", cfg.XDSAddr, err)
		}
		log.Info("serving xDS", "addr", ln.Addr().String(), "version", srv.Version())
		return runAll(cmd.Context(), log,
			component{"xds", func(ctx context.Context) error { return srv.Serve(ctx, ln) }},
			metricsComponent(cfg, log, reg, observability.NewHealth()))
	}
	return cmd
}

func controlPlaneOptions(cfg *config.Config) controlplane.Options {
	return controlplane.Options{
		ListenAddress:  cfg.ListenAddr,
		ExtProcAddress: cfg.ExtProcAddr,
		AnthropicURL:   cfg.AnthropicURL,
		UpstreamCAFile: cfg.UpstreamCAFile,
	}.WithDefaults()
}
