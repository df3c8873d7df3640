package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// accessKey is the API's Key; issuedKey adds the key itself, which only
// the create and rotate answers hold.
type accessKey struct {
	ID              string     `json:"id"`
	UserID          string     `json:"user_id"`
	Name            string     `json:"name"`
	Prefix          string     `json:"prefix"`
	Status          string     `json:"status"`
	RoutingStrategy *string    `json:"routing_strategy"`
	GraceUntil      *time.Time `json:"grace_until"`
	RotatedTo       *string    `json:"rotated_to"`
	LastUsedAt      *time.Time `json:"last_used_at"`
	CreatedAt       time.Time  `json:"created_at"`
	RevokedAt       *time.Time `json:"revoked_at"`
}

type issuedKey struct {
	accessKey
	Key      string     `json:"key"`
	Previous *accessKey `json:"previous"`
}

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage access keys"}
	g := addGlobals(cmd)
	cmd.AddCommand(a.keysList(g), a.keysCreate(g), a.keysRotate(g), a.keysRevoke(g))
	return cmd
}

func (a *app) keysList(g *globals) *cobra.Command {
	var page paging
	cmd := &cobra.Command{
		Use:   "list USER_ID",
		Short: "List a user's access keys (never the keys themselves)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			page.set(q)
			return listPage(cmd, a, g, "/api/v1/users/"+pathID(args[0])+"/keys", q,
				[]string{"ID", "NAME", "PREFIX", "STATUS", "ROUTING", "GRACE_UNTIL", "LAST_USED", "CREATED"},
				func(k accessKey) []string {
					return []string{k.ID, dash(k.Name), k.Prefix, k.Status, str(k.RoutingStrategy),
						ts(k.GraceUntil), ts(k.LastUsedAt), ts(&k.CreatedAt)}
				})
		},
	}
	page.register(cmd)
	return cmd
}

func dash(s string) string { return str(&s) }

// printIssued shows a new key. The key goes to stdout (so scripts can
// capture it) and the warning to stderr.
func printIssued(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		if err := printJSON(cmd.OutOrStdout(), body); err != nil {
			return err
		}
	} else {
		var k issuedKey
		if err := decode(body, &k); err != nil {
			return err
		}
		pairs := [][2]string{
			{"ID", k.ID}, {"User", k.UserID}, {"Name", dash(k.Name)}, {"Prefix", k.Prefix}, {"Status", k.Status},
		}
		if k.Previous != nil {
			pairs = append(pairs, [2]string{"Replaces", k.Previous.ID},
				[2]string{"Old key valid until", ts(k.Previous.GraceUntil)})
		}
		pairs = append(pairs, [2]string{"Key", k.Key})
		if err := fields(cmd.OutOrStdout(), pairs); err != nil {
			return err
		}
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "Store the key now: it is shown only once.")
	return nil
}

func (a *app) keysCreate(g *globals) *cobra.Command {
	var name, strategy string
	cmd := &cobra.Command{
		Use:   "create USER_ID [--name NAME] [--routing-strategy S]",
		Short: "Issue an access key to a user and print it (the only time it is shown)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{}
			if cmd.Flags().Changed("name") {
				req["name"] = name
			}
			if cmd.Flags().Changed("routing-strategy") {
				req["routing_strategy"] = strategy
			}
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/users/"+pathID(args[0])+"/keys", nil, req)
			if err != nil {
				return err
			}
			return printIssued(cmd, g, body)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "a label for the key, e.g. the laptop it is for")
	cmd.Flags().StringVar(&strategy, "routing-strategy", "", "override the user's routing: plan_first, bedrock_only or plan_only")
	return cmd
}

func (a *app) keysRotate(g *globals) *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "rotate KEY_ID [--grace 24h]",
		Short: "Replace a key with a new one; the old key keeps working for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{}
			if cmd.Flags().Changed("grace") {
				if grace < 0 || grace%time.Second != 0 {
					return errors.New("--grace must be a non-negative whole number of seconds, e.g. 0s, 90m or 24h")
				}
				req["grace_period_seconds"] = int64(grace / time.Second)
			}
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/keys/"+pathID(args[0])+"/rotate", nil, req)
			if err != nil {
				return err
			}
			return printIssued(cmd, g, body)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 24*time.Hour, "how long the old key keeps working (0s ends it at once)")
	return cmd
}

func (a *app) keysRevoke(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke a key; it stops working within a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, "/api/v1/keys/"+pathID(args[0]), nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "Revoked key %s.\n", args[0])
			return err
		},
	}
}
