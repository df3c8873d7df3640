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
	// redactor masks the values of the running command's secret settings;
	// main passes the command's final error through it. Nil until the
	// command loads its settings.
	redactor *config.Redactor
}

// redact returns the text of err with the running command's secrets masked.
func (p *process) redact(err error) string {
	return p.redactor.Redact(err.Error())
}

func newRootCommand(redisLog *observability.RedisLogger) *cobra.Command {
	root, _ := newRoot(redisLog)
	return root
}

// newRoot returns the command tree and the state its commands share.
func newRoot(redisLog *observability.RedisLogger) (*cobra.Command, *process) {
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
	// A mistyped flag ends with where to look, for every command.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return flagError{err: err, command: cmd.CommandPath()}
	})
	return root, p
}

// flagError is a flag parsing error with the line that says where to look;
// the hint is a sentence of its own, so it ends with a full stop.
type flagError struct {
	err     error
	command string
}

func (e flagError) Error() string {
	return e.err.Error() + "\nRun '" + e.command + " --help' for usage."
}

func (e flagError) Unwrap() error { return e.err }

// boundSettings are a command's settings bound to its flags, with the
// logging settings every command has.
type boundSettings struct {
	binding  *config.Binding
	logging  config.Logging
	redisLog *observability.RedisLogger
	process  *process
}

// bind binds the given setting groups (plus logging) to cmd's flags; the
// command calls load once the flags are parsed.
func (p *process) bind(cmd *cobra.Command, groups ...config.Group) *boundSettings {
	b := &boundSettings{redisLog: p.redisLog, process: p}
	b.binding = config.Bind(cmd.Flags(), append([]config.Group{b.logging.Group()}, groups...)...)
	return b
}

// load resolves the settings into the structs whose groups were bound and
// builds the logger that the command uses.
func (b *boundSettings) load(stderr io.Writer) (*slog.Logger, error) {
	err := b.binding.Load()
	// Whatever Load made of them, the secret values given are masked from
	// here on: in every log line and in the error the command ends with.
	red := b.binding.Redactor()
	b.process.redactor = red
	if err != nil {
		return nil, err
	}
	log, err := observability.NewLogger(stderr, b.logging.Format, b.logging.Level)
	if err != nil {
		return nil, err
	}
	if !red.Empty() {
		log = slog.New(observability.RedactingHandler(log.Handler(), red.Redact))
	}
	if b.redisLog != nil {
		b.redisLog.Use(log)
	}
	return log, nil
}
