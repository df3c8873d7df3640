package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// adminAccount is the API's Admin.
type adminAccount struct {
	ID          string     `json:"id"`
	Username    string     `json:"username"`
	Disabled    bool       `json:"disabled"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
	Role        string     `json:"role"`
	SSO         bool       `json:"sso"`
}

func (a *app) adminsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admins",
		Short: "Manage admin accounts (who may use the admin API)",
		Long: `Manage admin accounts. ADMIN is an admin's id or username. Passwords are read from stdin with
--password-stdin (one per line) or prompted for on the terminal, never taken from argv.

Roles: owner (everything, including managing admins: only owners may create, change, disable or
reset admins), admin (everything else), viewer (read only), team_admin (one team: its
developers, their keys and the team's usage; created with --team).

An operator locked out of every account resets a password with "ccproxy admin reset-password",
which talks to the database directly.`,
	}
	g := addGlobals(cmd)
	cmd.AddCommand(a.adminsList(g), a.adminsGet(g), a.adminsCreate(g), a.adminsSetRole(g), a.adminsSetDisabled(g, true), a.adminsSetDisabled(g, false),
		a.adminsResetPassword(g), a.adminsRevokeSessions(g))
	return cmd
}

func (a *app) adminsList(g *globals) *cobra.Command {
	var page paging
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List admins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			page.set(q)
			return listPage(cmd, a, g, "/api/v1/admins", q,
				[]string{"ID", "USERNAME", "ROLE", "SIGN_IN", "STATUS", "CREATED", "LAST_LOGIN"},
				func(ad adminAccount) []string {
					return []string{ad.ID, ad.Username, ad.Role, signIn(ad), adminStatus(ad), ts(&ad.CreatedAt), ts(ad.LastLoginAt)}
				})
		},
	}
	page.register(cmd)
	return cmd
}

// signIn says how an admin signs in.
func signIn(ad adminAccount) string {
	if ad.SSO {
		return "sso"
	}
	return "password"
}

func adminStatus(ad adminAccount) string {
	if ad.Disabled {
		return "disabled"
	}
	return "active"
}

func (a *app) printAdmin(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var ad adminAccount
	if err := decode(body, &ad); err != nil {
		return err
	}
	return fields(cmd.OutOrStdout(), [][2]string{
		{"ID", ad.ID}, {"Username", ad.Username}, {"Role", ad.Role}, {"Sign-in", signIn(ad)}, {"Status", adminStatus(ad)},
		{"Created", ts(&ad.CreatedAt)}, {"Last login", ts(ad.LastLoginAt)},
	})
}

// adminID resolves ADMIN, an id or a username, to an id.
func (a *app) adminID(ctx context.Context, g *globals, ref string) (string, error) {
	if _, err := uuid.Parse(ref); err == nil {
		return ref, nil
	}
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		body, err := a.call(ctx, g, http.MethodGet, "/api/v1/admins", q, nil)
		if err != nil {
			return "", err
		}
		var p struct {
			Items      []adminAccount `json:"items"`
			NextCursor *string        `json:"next_cursor"`
		}
		if err := decode(body, &p); err != nil {
			return "", err
		}
		for _, ad := range p.Items {
			if strings.EqualFold(ad.Username, ref) {
				return ad.ID, nil
			}
		}
		if p.NextCursor == nil || *p.NextCursor == "" {
			return "", fmt.Errorf("no admin has the id or username %q", ref)
		}
		cursor = *p.NextCursor
	}
}

func (a *app) adminsGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ADMIN",
		Short: "Show an admin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.adminID(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodGet, "/api/v1/admins/"+pathID(id), nil, nil)
			if err != nil {
				return err
			}
			return a.printAdmin(cmd, g, body)
		},
	}
}

func (a *app) adminsCreate(g *globals) *cobra.Command {
	var username, role, team string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "create --username NAME [--role owner|admin|viewer|team_admin] [--team TEAM_ID] [--password-stdin]",
		Short: "Create an admin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := a.secrets(cmd, fromStdin, newPassword("Password for "+username))
			if err != nil {
				return err
			}
			req := map[string]string{"username": username, "password": pw[0], "role": role}
			if team != "" {
				req["team_id"] = team
			}
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/admins", nil, req)
			if err != nil {
				return err
			}
			return a.printAdmin(cmd, g, body)
		},
	}
	cmd.Flags().StringVar(&username, "username", "", "the new admin's username")
	cmd.Flags().StringVar(&role, "role", "admin", "the new admin's role: owner, admin, viewer or team_admin")
	cmd.Flags().StringVar(&team, "team", "", "the team of a team_admin (a team id)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from stdin")
	_ = cmd.MarkFlagRequired("username")
	return cmd
}

func (a *app) adminsSetRole(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "set-role ADMIN ROLE",
		Short: "Change an admin's role (owner, admin or viewer); not your own",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.adminID(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodPatch, "/api/v1/admins/"+pathID(id), nil, map[string]string{"role": args[1]})
			if err != nil {
				return err
			}
			return a.printAdmin(cmd, g, body)
		},
	}
}

func (a *app) adminsSetDisabled(g *globals, disabled bool) *cobra.Command {
	use, short, done := "enable ADMIN", "Enable a disabled admin", "Enabled"
	if disabled {
		use, short, done = "disable ADMIN", "Disable an admin: its sessions end and it can no longer log in", "Disabled"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.adminID(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodPatch, "/api/v1/admins/"+pathID(id), nil, map[string]bool{"disabled": disabled})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), body)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s admin %s.\n", done, args[0])
			return err
		},
	}
}

func (a *app) adminsResetPassword(g *globals) *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "reset-password ADMIN [--password-stdin]",
		Short: "Set another admin's password; its sessions end (your own: ccproxy passwd)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.adminID(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			pw, err := a.secrets(cmd, fromStdin, newPassword("New password for "+args[0]))
			if err != nil {
				return err
			}
			if _, err := a.call(cmd.Context(), g, http.MethodPut, "/api/v1/admins/"+pathID(id)+"/password", nil,
				map[string]string{"password": pw[0]}); err != nil {
				return err
			}
			if g.json() {
				return nil // 204: the API has no JSON to show
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Reset the password of admin %s; its sessions have ended.\n", args[0])
			return err
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the new password from stdin")
	return cmd
}

func (a *app) adminsRevokeSessions(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-sessions ADMIN",
		Short: "End every session of an admin (yours too, if you name yourself)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.adminID(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodDelete, "/api/v1/admins/"+pathID(id)+"/sessions", nil, nil)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), body)
			}
			var out struct {
				Revoked int `json:"revoked"`
			}
			if err := decode(body, &out); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Ended %d session(s) of admin %s.\n", out.Revoked, args[0])
			return err
		},
	}
}

func (a *app) passwdCommand() *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "passwd [--password-stdin]",
		Short: "Change your own admin password; your other sessions end",
		Long: `Changes the password of the admin you are logged in as. The current password is required.
With --password-stdin the first line of stdin is the current password and the second the new one;
otherwise both are prompted for on the terminal. Your other sessions end; this one stays.`,
		Args: cobra.NoArgs,
	}
	g := addGlobals(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		pw, err := a.secrets(cmd, fromStdin, secretPrompt{label: "Current password"}, newPassword("New password"))
		if err != nil {
			return err
		}
		if _, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/auth/password", nil,
			map[string]string{"current_password": pw[0], "new_password": pw[1]}); err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), "Changed your password; your other sessions have ended.")
		return err
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the current and the new password from stdin, one per line")
	return cmd
}

// secretPrompt is one secret to read: a label, and whether the terminal
// asks for it twice (a new password, where a typo would lock one out).
type secretPrompt struct {
	label   string
	confirm bool
}

func newPassword(label string) secretPrompt { return secretPrompt{label: label, confirm: true} }

// secrets reads one secret per prompt: lines of stdin with fromStdin, else
// from the terminal with echo off.
func (a *app) secrets(cmd *cobra.Command, fromStdin bool, prompts ...secretPrompt) ([]string, error) {
	out := make([]string, len(prompts))
	if fromStdin {
		br := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), int64(len(prompts))*(maxSecretBytes+2)))
		for i, p := range prompts {
			line, err := br.ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("read %s from stdin: %w", strings.ToLower(p.label), err)
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				return nil, fmt.Errorf("no %s on stdin (line %d)", strings.ToLower(p.label), i+1)
			}
			out[i] = line
		}
		return out, nil
	}
	if !a.isTerminal(cmd.InOrStdin()) {
		return nil, errors.New("stdin is not a terminal: use --password-stdin")
	}
	for i, p := range prompts {
		v, err := a.prompt(cmd, p.label+": ")
		if err != nil {
			return nil, err
		}
		if p.confirm {
			again, err := a.prompt(cmd, "Repeat "+strings.ToLower(p.label[:1])+p.label[1:]+": ")
			if err != nil {
				return nil, err
			}
			if again != v {
				return nil, errors.New("the two passwords differ")
			}
		}
		out[i] = v
	}
	return out, nil
}

func (a *app) prompt(cmd *cobra.Command, label string) (string, error) {
	fmt.Fprint(cmd.ErrOrStderr(), label)
	v, err := readPassword(cmd.InOrStdin())
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if v == "" {
		return "", errors.New("empty password")
	}
	return v, nil
}
