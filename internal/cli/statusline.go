package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/statusline"
)

// statuslineCommand is ccproxy statusline: the line of internal/statusline,
// which cmd/ccproxy-statusline prints too, from a program that starts
// faster.
func (a *app) statuslineCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "statusline",
		Short: "Print one status line for Claude Code: spend, budget, Plan headroom, route",
		Long: `statusline prints one short line about your own use of the gateway, for Claude Code's
statusLine setting: this month's spend, your Bedrock budget, your Plan 5-hour and 7-day
utilization, where your next request goes and today's prompt-cache hit rate. Of the budgets that
act (block, downgrade, plan_only), the one closest to its limit is shown, e.g. "day $4.20/$5.00 →
sonnet".

It reads the gateway URL with your access key from ANTHROPIC_BASE_URL (and extra headers from
ANTHROPIC_CUSTOM_HEADERS), as Claude Code does, and asks GET <ANTHROPIC_BASE_URL>/me. Your
Anthropic credential is never sent. When Claude Code passes its status JSON on stdin, the model
name starts the line. After --timeout (default 300ms, ` + statusline.EnvTimeout + `) it prints
"` + statusline.Fallback + `" instead, so it never holds Claude Code up.

In ~/.claude/settings.json:  {"statusLine": {"type": "command", "command": "ccproxy statusline"}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("timeout") {
				d, err := statusline.Timeout(a.getenv)
				if err != nil {
					return err
				}
				timeout = d
			}
			if err := statusline.CheckTimeout(timeout); err != nil {
				return err
			}
			parent := cmd.Context()
			if parent == nil {
				parent = context.Background()
			}
			ctx, cancel := context.WithTimeout(parent, timeout)
			defer cancel()
			var stdin io.Reader
			if in := cmd.InOrStdin(); in != nil && !a.isTerminal(in) {
				stdin = in
			}
			line := statusline.Line(ctx, statusline.Options{Getenv: a.getenv, Client: a.hc, Stdin: stdin, Location: time.Local})
			_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", statusline.DefaultTimeout, "longest the command waits for the gateway before printing its fallback line (also "+statusline.EnvTimeout+")")
	return cmd
}
