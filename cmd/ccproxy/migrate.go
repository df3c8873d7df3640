package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
)

func newMigrateCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or list the Postgres schema migrations",
		Long: `Manages ccproxy's Postgres schema. Migrations are embedded in the binary and run under an
advisory lock, so several replicas may run "migrate up" at once.`,
	}
	cmd.AddCommand(newMigrateUpCommand(p), newMigrateDownCommand(p), newMigrateStatusCommand(p))
	return cmd
}

func newMigrateUpCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{Use: "up", Short: "Apply every pending migration", Args: cobra.NoArgs}
	var db config.Postgres
	b := p.bind(cmd, db.Group())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		log.Info("migrating up", "database", observability.RedactURL(db.URL))
		res, err := store.MigrateUp(cmd.Context(), db.URL)
		if err != nil {
			return err
		}
		return printResults(cmd.OutOrStdout(), res)
	}
	return cmd
}

func newMigrateDownCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Roll back the newest migration, or down to --to VERSION (0 = everything)",
		Args:  cobra.NoArgs,
	}
	to := cmd.Flags().Int64("to", -1, "roll back every migration newer than this version (0 removes the whole schema)")
	var db config.Postgres
	b := p.bind(cmd, db.Group())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		log.Info("migrating down", "database", observability.RedactURL(db.URL), "to", *to)
		var res []store.MigrationResult
		if cmd.Flags().Changed("to") {
			if *to < 0 {
				return fmt.Errorf("--to must be 0 or a migration version, got %d", *to)
			}
			res, err = store.MigrateDownTo(cmd.Context(), db.URL, *to)
		} else {
			res, err = store.MigrateDown(cmd.Context(), db.URL)
		}
		if err != nil {
			return err
		}
		return printResults(cmd.OutOrStdout(), res)
	}
	return cmd
}

func newMigrateStatusCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{Use: "status", Short: "List every migration and whether it is applied", Args: cobra.NoArgs}
	var db config.Postgres
	b := p.bind(cmd, db.Group())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		_, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		states, err := store.MigrationStatus(cmd.Context(), db.URL)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "VERSION\tNAME\tSTATE\tAPPLIED AT")
		for _, s := range states {
			state, at := "pending", ""
			if s.Applied {
				state, at = "applied", s.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
		}
		return w.Flush()
	}
	return cmd
}

func printResults(out io.Writer, res []store.MigrationResult) error {
	if len(res) == 0 {
		_, err := fmt.Fprintln(out, "nothing to do")
		return err
	}
	for _, r := range res {
		if _, err := fmt.Fprintf(out, "%-4s %s (%s)\n", r.Direction, r.Name, r.Duration.Round(time.Millisecond)); err != nil {
			return err
		}
	}
	return nil
}
