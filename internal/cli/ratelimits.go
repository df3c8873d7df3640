package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"
)

// rateLimits is the API's RateLimits.
type rateLimits struct {
	RequestsPerMinute     *int64 `json:"requests_per_minute"`
	InputTokensPerMinute  *int64 `json:"input_tokens_per_minute"`
	OutputTokensPerMinute *int64 `json:"output_tokens_per_minute"`
}

// rateLimitTarget resolves --user or --key to the API path of the limits
// and a description for messages.
func rateLimitTarget(userID, keyID string) (path, what string, err error) {
	switch {
	case (userID == "") == (keyID == ""):
		return "", "", errors.New("give exactly one of --user USER_ID or --key KEY_ID")
	case userID != "":
		return "/api/v1/users/" + pathID(userID) + "/rate-limits", "user " + userID, nil
	default:
		return "/api/v1/keys/" + pathID(keyID) + "/rate-limits", "key " + keyID, nil
	}
}

func (a *app) rateLimitsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rate-limits",
		Short: "Manage per-minute request and token limits of a user (all its keys together) or of one key",
	}
	g := addGlobals(cmd)
	cmd.AddCommand(a.rateLimitsGet(g), a.rateLimitsSet(g), a.rateLimitsDelete(g))
	return cmd
}

func (a *app) printRateLimits(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var l rateLimits
	if err := decode(body, &l); err != nil {
		return err
	}
	v := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatInt(*p, 10)
	}
	return fields(cmd.OutOrStdout(), [][2]string{
		{"Requests per minute", v(l.RequestsPerMinute)},
		{"Input tokens per minute", v(l.InputTokensPerMinute)},
		{"Output tokens per minute", v(l.OutputTokensPerMinute)},
	})
}

func (a *app) rateLimitsGet(g *globals) *cobra.Command {
	var userID, keyID string
	cmd := &cobra.Command{
		Use:   "get (--user USER_ID | --key KEY_ID)",
		Short: "Show the rate limits (- means no limit)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _, err := rateLimitTarget(userID, keyID)
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			return a.printRateLimits(cmd, g, body)
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "the user whose limits to show")
	cmd.Flags().StringVar(&keyID, "key", "", "the access key whose limits to show")
	return cmd
}

func (a *app) rateLimitsSet(g *globals) *cobra.Command {
	var userID, keyID string
	var rpm, itpm, otpm int64
	cmd := &cobra.Command{
		Use:   "set (--user USER_ID | --key KEY_ID) [--requests-per-minute N] [--input-tokens-per-minute N] [--output-tokens-per-minute N]",
		Short: "Replace the rate limits: a limit not given is removed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, what, err := rateLimitTarget(userID, keyID)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			opt := func(flag string, v int64) *int64 {
				if !f.Changed(flag) {
					return nil
				}
				return &v
			}
			req := rateLimits{
				RequestsPerMinute:     opt("requests-per-minute", rpm),
				InputTokensPerMinute:  opt("input-tokens-per-minute", itpm),
				OutputTokensPerMinute: opt("output-tokens-per-minute", otpm),
			}
			if req == (rateLimits{}) {
				return errors.New("give at least one limit (or use rate-limits delete)")
			}
			body, err := a.call(cmd.Context(), g, http.MethodPut, path, nil, req)
			if err != nil {
				return err
			}
			if !g.json() {
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "Set the rate limits of %s.\n", what); err != nil {
					return err
				}
			}
			return a.printRateLimits(cmd, g, body)
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "the user whose limits to set (all the user's keys together)")
	cmd.Flags().StringVar(&keyID, "key", "", "the access key whose limits to set")
	cmd.Flags().Int64Var(&rpm, "requests-per-minute", 0, "Messages requests per minute")
	cmd.Flags().Int64Var(&itpm, "input-tokens-per-minute", 0, "input tokens per minute (input plus cache-creation tokens)")
	cmd.Flags().Int64Var(&otpm, "output-tokens-per-minute", 0, "output tokens per minute")
	return cmd
}

func (a *app) rateLimitsDelete(g *globals) *cobra.Command {
	var userID, keyID string
	cmd := &cobra.Command{
		Use:   "delete (--user USER_ID | --key KEY_ID)",
		Short: "Remove every rate limit of a user or key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, what, err := rateLimitTarget(userID, keyID)
			if err != nil {
				return err
			}
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Removed the rate limits of %s.\n", what)
			return err
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "the user whose limits to remove")
	cmd.Flags().StringVar(&keyID, "key", "", "the access key whose limits to remove")
	return cmd
}
