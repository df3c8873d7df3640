package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// maxSecretBytes bounds a secret read from stdin.
const maxSecretBytes = 64 << 10

func (a *app) loginCommand() *cobra.Command {
	var server, username string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login --server URL --username NAME",
		Short: "Log in to the admin API and save the session",
		Long: `Log in to the admin API and save the session token (mode 0600) in
$` + EnvConfig + `, $XDG_CONFIG_HOME/ccproxy/cli.json or ~/.config/ccproxy/cli.json.

The password is read from stdin with --password-stdin, else from $` + EnvPassword + `,
else prompted for on the terminal. It is never taken from argv.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server = firstNonEmpty(server, a.getenv(EnvServer))
			if server == "" {
				return errors.New("--server is required (or set " + EnvServer + ")")
			}
			base, err := normalizeServer(server)
			if err != nil {
				return err
			}
			if username == "" {
				return errors.New("--username is required")
			}
			password, err := a.password(cmd, passwordStdin)
			if err != nil {
				return err
			}
			_, path, err := a.loadSession()
			if err != nil && path == "" {
				return err
			}
			c := &client{base: base, hc: a.hc}
			body, err := c.do(cmd.Context(), http.MethodPost, "/api/v1/auth/login", nil,
				map[string]string{"username": username, "password": password})
			if err != nil {
				return err
			}
			var resp struct {
				Token     string    `json:"token"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			if err := decode(body, &resp); err != nil {
				return err
			}
			if resp.Token == "" {
				return errors.New("the server sent no session token")
			}
			if err := saveSession(path, savedSession{Server: base, Token: resp.Token, ExpiresAt: resp.ExpiresAt}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s; the session expires at %s.\n",
				base, username, resp.ExpiresAt.UTC().Format(time.RFC3339))
			return err
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "admin API base URL, e.g. https://ccproxy-admin.example.com (default $"+EnvServer+")")
	cmd.Flags().StringVar(&username, "username", "", "admin username")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

// password reads the login password from stdin, the environment or the
// terminal, in that order.
func (a *app) password(cmd *cobra.Command, fromStdin bool) (string, error) {
	switch {
	case fromStdin:
		return readSecret(cmd.InOrStdin(), "password")
	case a.getenv(EnvPassword) != "":
		return a.getenv(EnvPassword), nil
	case a.isTerminal(cmd.InOrStdin()):
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		p, err := readPassword(cmd.InOrStdin())
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if p == "" {
			return "", errors.New("empty password")
		}
		return p, nil
	default:
		return "", errors.New("no password: use --password-stdin or set " + EnvPassword)
	}
}

// readSecret reads the first line of r (at most maxSecretBytes), without
// its line ending.
func readSecret(r io.Reader, what string) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, maxSecretBytes+1))
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s from stdin: %w", what, err)
	}
	if len(line) > maxSecretBytes {
		return "", fmt.Errorf("the %s on stdin is longer than %d bytes", what, maxSecretBytes)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("no %s on stdin", what)
	}
	return line, nil
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the saved session and delete it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			saved, path, err := a.loadSession()
			if err != nil {
				return err
			}
			if saved.Token == "" {
				return ErrNotLoggedIn
			}
			var revokeErr error
			if saved.ExpiresAt.IsZero() || time.Now().Before(saved.ExpiresAt) {
				c := &client{base: saved.Server, token: saved.Token, hc: a.hc}
				_, revokeErr = c.do(cmd.Context(), http.MethodPost, "/api/v1/auth/logout", nil, nil)
				if isStatus(revokeErr, http.StatusUnauthorized) {
					revokeErr = nil // already expired or revoked
				}
			}
			// The local copy goes even when the server is unreachable: the
			// user asked for this machine to hold no session.
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("delete %s: %w", path, err)
			}
			if revokeErr != nil {
				return fmt.Errorf("deleted the local session, but the server did not revoke it: %w", revokeErr)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Logged out of %s.\n", saved.Server)
			return err
		},
	}
}
