package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/cli"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
)

// process is what the commands of one ccproxy process share.
type process struct {
	// redisLog is go-redis's logger for the whole process (see main); a
	// command points it at the logger it builds. Nil leaves go-redis's
	// logging alone (tests).
	redisLog *observability.RedisLogger
}

func newRootCommand(redisLog *observability.RedisLogger) *cobra.Command {
	p := &process{redisLog: redisLog}
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
	root.AddCommand(newVersionCommand(), newMigrateCommand(p), newExtProcCommand(p), newControlPlaneCommand(p), newAdminCommand(p), newDevCommand(p))
	root.AddCommand(cli.Commands()...)
	return root
}

// boundSettings are a command's settings bound to its flags, with the
// logging settings every command has.
type boundSettings struct {
	binding  *config.Binding
	logging  config.Logging
	redisLog *observability.RedisLogger
}

// bind binds the given setting groups (plus logging) to cmd's flags; the
// command calls load once the flags are parsed.
func (p *process) bind(cmd *cobra.Command, groups ...config.Group) *boundSettings {
	b := &boundSettings{redisLog: p.redisLog}
	b.binding = config.Bind(cmd.Flags(), append([]config.Group{b.logging.Group()}, groups...)...)
	return b
}

// load resolves the settings into the structs whose groups were bound and
// builds the logger that the command uses.
func (b *boundSettings) load(stderr io.Writer) (*slog.Logger, error) {
	if err := b.binding.Load(); err != nil {
		return nil, err
	}
	log, err := observability.NewLogger(stderr, b.logging.Format, b.logging.Level)
	if err != nil {
		return nil, err
	}
	if b.redisLog != nil {
		b.redisLog.Use(log)
	}
	return log, nil
}
