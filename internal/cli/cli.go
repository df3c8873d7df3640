// Package cli owns the administrator's command line: the login, logout,
// passwd, admins, users, keys, bedrock and usage commands of the ccproxy
// binary. They talk to the admin service's REST API (/api/v1) with the
// session token that login saves in a small per-user file, and print a
// table or, with "-o json", the API's own JSON. It also owns the one
// developer command, statusline, which asks the gateway (not the admin
// API) for the developer's own status with their access key, for Claude
// Code's status line.
//
// Secrets stay off argv: passwords and Bedrock API keys are read from stdin
// (or the environment, or a terminal prompt with echo off), because argv is
// visible to every user of the machine through ps and /proc. The only
// secret ever printed is a newly issued access key, which the API shows
// exactly once.
package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Environment variables the commands read.
const (
	// EnvServer overrides the saved server URL.
	EnvServer = "CCPROXY_SERVER"
	// EnvToken overrides the saved session token.
	EnvToken = "CCPROXY_TOKEN"
	// EnvConfig overrides the path of the saved-session file.
	EnvConfig = "CCPROXY_CLI_CONFIG"
	// EnvPassword is the login password when --password-stdin is not given.
	EnvPassword = "CCPROXY_ADMIN_PASSWORD"
	// EnvBedrockAPIKey is the Bedrock API key when --api-key-stdin is not
	// given; it is the variable the AWS SDKs read the same key from.
	EnvBedrockAPIKey = "AWS_BEARER_TOKEN_BEDROCK"
)

// requestTimeout bounds each API call so a hung server cannot hang a
// script.
const requestTimeout = 30 * time.Second

// Commands returns the top-level admin commands (login, logout, passwd,
// admins, users, keys, bedrock, usage) for the ccproxy root command. They read the
// process environment.
func Commands() []*cobra.Command {
	return newApp(os.Getenv, &http.Client{Timeout: requestTimeout}).commands()
}

// app holds what every command shares; it is built per call of Commands so
// that nothing is package-level state.
type app struct {
	getenv func(string) string
	hc     *http.Client
	// isTerminal reports whether r is an interactive terminal; a seam for
	// tests.
	isTerminal func(r io.Reader) bool
}

func newApp(getenv func(string) string, hc *http.Client) *app {
	return &app{getenv: getenv, hc: hc, isTerminal: isTerminal}
}

func (a *app) commands() []*cobra.Command {
	return []*cobra.Command{
		a.loginCommand(), a.logoutCommand(), a.passwdCommand(), a.adminsCommand(),
		a.usersCommand(), a.teamsCommand(), a.keysCommand(), a.bedrockCommand(), a.rateLimitsCommand(), a.budgetsCommand(), a.usageCommand(),
		a.statuslineCommand(),
	}
}

// globals are the flags every API command takes.
type globals struct {
	server string
	output string
}

// addGlobals registers --server and --output on cmd and its subcommands.
func addGlobals(cmd *cobra.Command) *globals {
	g := &globals{}
	cmd.PersistentFlags().StringVar(&g.server, "server", "", "admin API base URL (default: "+EnvServer+" or the server saved by login)")
	cmd.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	return g
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) check() error {
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("--output must be table or json, not %q", g.output)
	}
	return nil
}

// printJSON writes an API response body indented.
func printJSON(w io.Writer, body []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(body), "", "  "); err != nil {
		return fmt.Errorf("the server sent invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// table writes rows with aligned columns; the first row is the header.
func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields writes name/value pairs, one per line.
func fields(w io.Writer, pairs [][2]string) error {
	rows := make([][]string, len(pairs))
	for i, p := range pairs {
		rows[i] = []string{p[0] + ":", p[1]}
	}
	return table(w, rows)
}

// str shows an optional string, "-" when absent.
func str(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

// ts shows an optional time in UTC, "-" when absent.
func ts(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
