package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/store"
)

// newAdminResetPasswordCommand is the operator's way back in: it sets an
// admin's password straight in Postgres, so it works when no admin can log
// in (forgotten password, throttled, disabled).
func newAdminResetPasswordCommand(p *process) *cobra.Command {
	var username string
	var fromStdin, enable bool
	cmd := &cobra.Command{
		Use:   "reset-password --username NAME",
		Short: "Set an admin's password directly in the database (for the operator)",
		Long: `Sets the password of an admin account directly in Postgres (DATABASE_URL), for an operator
who cannot log in to the admin API. The admin's sessions end and its failed logins are forgotten;
with --enable a disabled admin is enabled again. The reset is audited as "operator".

The new password is read from the first line of stdin with --password-stdin (never from argv);
without it a random password is generated and printed once.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&username, "username", "", "the admin's username (case-insensitive)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the new password from stdin instead of generating one")
	cmd.Flags().BoolVar(&enable, "enable", false, "also enable the admin if it is disabled")
	var db config.Postgres
	b := p.bind(cmd, db.Group())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if username == "" {
			return errors.New("--username is required")
		}
		if _, err := b.load(cmd.ErrOrStderr()); err != nil {
			return err
		}
		var err error
		password, generated := "", false
		if fromStdin {
			if password, err = readLine(cmd.InOrStdin()); err != nil {
				return err
			}
		} else {
			raw := make([]byte, 18)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			password, generated = base64.RawURLEncoding.EncodeToString(raw), true
		}
		ctx := cmd.Context()
		st, err := store.Open(ctx, db.URL)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CheckSchema(ctx); err != nil {
			return err
		}
		a, err := admin.ResetPassword(ctx, st, username, password, enable)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no admin is named %q", username)
		}
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		state := "enabled"
		if a.Disabled {
			state = "disabled (use --enable to enable it)"
		}
		fmt.Fprintf(out, "Reset the password of admin %q (%s); its sessions have ended.\n", a.Username, state)
		if generated {
			fmt.Fprintf(out, "New password (shown once): %s\n", password)
		}
		return nil
	}
	return cmd
}

// readLine reads the first line of r (at most 4 KiB), without its line
// ending.
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4097)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from stdin: %w", err)
	}
	if len(line) > 4096 {
		return "", errors.New("the password on stdin is longer than 4096 bytes")
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on stdin")
	}
	return line, nil
}
