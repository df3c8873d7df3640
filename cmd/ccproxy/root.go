package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/cli"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ccproxy",
		Short: "Gateway for Claude Code: access keys, Plan-first routing with Bedrock fallback, metering and budgets",
		Long: `ccproxy runs Claude Code for a whole company through one gateway.

Developers point Claude Code at the gateway with a personal access key; the gateway sends each
request to Anthropic with the developer's own credential, falls back to AWS Bedrock when Anthropic
is rate-limited, meters every token and enforces monthly budgets.

Every command takes its settings from flags or environment variables; see docs/configuration.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(), newMigrateCommand(), newExtProcCommand(), newControlPlaneCommand(), newAdminCommand(), newDevCommand())
	root.AddCommand(cli.Commands()...)
	return root
}

// settings binds the given setting groups (plus logging) to cmd's flags and
// returns a loader to call once the flags are parsed.
func settings(cmd *cobra.Command, groups ...[]config.Setting) *config.Binding {
	return config.Bind(cmd.Flags(), append([][]config.Setting{config.Logging()}, groups...)...)
}

// load resolves the settings and builds the logger that the command uses.
func load(b *config.Binding, stderr io.Writer) (*config.Config, *slog.Logger, error) {
	cfg, err := b.Load()
	if err != nil {
		return nil, nil, err
	}
	return cfg, observability.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel), nil
}
