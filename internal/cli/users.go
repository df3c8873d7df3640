package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// call runs one authenticated API request.
func (a *app) call(ctx context.Context, g *globals, method, path string, query url.Values, body any) ([]byte, error) {
	c, err := a.client(g, time.Now())
	if err != nil {
		return nil, err
	}
	out, err := c.do(ctx, method, path, query, body)
	if isStatus(err, http.StatusUnauthorized) {
		return nil, fmt.Errorf("%w\n(run \"ccproxy login\" to start a new session)", err)
	}
	return out, err
}

// user is the API's User.
type user struct {
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	Email            *string    `json:"email"`
	RoutingStrategy  string     `json:"routing_strategy"`
	MonthlyBudgetUSD *string    `json:"monthly_budget_usd"`
	TeamID           *string    `json:"team_id"`
	Status           string     `json:"status"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
	DeletedAt        *time.Time `json:"deleted_at"`
}

func (a *app) usersCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage users (developers who hold access keys)"}
	g := addGlobals(cmd)
	cmd.AddCommand(a.usersList(g), a.usersCreate(g), a.usersGet(g), a.usersUpdate(g), a.usersDelete(g))
	return cmd
}

func (a *app) usersList(g *globals) *cobra.Command {
	var page paging
	var status, team string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			page.set(q)
			if status != "" {
				q.Set("status", status)
			}
			if team != "" {
				q.Set("team_id", team)
			}
			return listPage(cmd, a, g, "/api/v1/users", q,
				[]string{"ID", "NAME", "EMAIL", "ROUTING", "BUDGET_USD", "STATUS", "CREATED"},
				func(u user) []string {
					return []string{u.ID, u.Name, str(u.Email), u.RoutingStrategy, str(u.MonthlyBudgetUSD), u.Status, ts(&u.CreatedAt)}
				})
		},
	}
	page.register(cmd)
	cmd.Flags().StringVar(&status, "status", "", "only users with this status (active or disabled)")
	cmd.Flags().StringVar(&team, "team", "", "only the team's users (a team id)")
	return cmd
}

// userBody collects the user fields set on the command line; only flags
// the user gave are sent, so an update leaves the others alone.
func userBody(cmd *cobra.Command, name, email, strategy, budget, status string) map[string]any {
	body := map[string]any{}
	f := cmd.Flags()
	if f.Changed("name") {
		body["name"] = name
	}
	if f.Changed("email") {
		body["email"] = nullIf(email, "")
	}
	if f.Changed("routing-strategy") {
		body["routing_strategy"] = strategy
	}
	if f.Changed("monthly-budget-usd") {
		body["monthly_budget_usd"] = nullIf(budget, "none")
	}
	if f.Changed("status") {
		body["status"] = status
	}
	if f.Changed("team") {
		team, _ := f.GetString("team")
		body["team_id"] = nullIf(team, "none")
	}
	return body
}

// nullIf maps the sentinel value to JSON null.
func nullIf(v, null string) any {
	if v == null {
		return nil
	}
	return v
}

func userFlags(cmd *cobra.Command, name, email, strategy, budget *string) {
	cmd.Flags().StringVar(name, "name", "", "display name")
	cmd.Flags().StringVar(email, "email", "", `email address ("" for none)`)
	cmd.Flags().StringVar(strategy, "routing-strategy", "", "plan_first, bedrock_only or plan_only")
	cmd.Flags().StringVar(budget, "monthly-budget-usd", "", `monthly budget in USD, e.g. 12.50 ("none" for no budget)`)
	cmd.Flags().String("team", "", `team id ("none" to leave the team); joining without --routing-strategy takes the team's strategy`)
}

func (a *app) printUser(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var u user
	if err := decode(body, &u); err != nil {
		return err
	}
	pairs := [][2]string{
		{"ID", u.ID}, {"Name", u.Name}, {"Email", str(u.Email)}, {"Routing strategy", u.RoutingStrategy},
		{"Monthly budget USD", str(u.MonthlyBudgetUSD)}, {"Team", str(u.TeamID)}, {"Status", u.Status},
		{"Created", ts(&u.CreatedAt)}, {"Updated", ts(&u.UpdatedAt)},
	}
	if u.DeletedAt != nil {
		pairs = append(pairs, [2]string{"Deleted", ts(u.DeletedAt)})
	}
	return fields(cmd.OutOrStdout(), pairs)
}

func (a *app) usersCreate(g *globals) *cobra.Command {
	var name, email, strategy, budget string
	cmd := &cobra.Command{
		Use:   "create --name NAME [--email E] [--routing-strategy S] [--monthly-budget-usd N] [--team T]",
		Short: "Create a user",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/users", nil, userBody(cmd, name, email, strategy, budget, ""))
			if err != nil {
				return err
			}
			return a.printUser(cmd, g, body)
		},
	}
	userFlags(cmd, &name, &email, &strategy, &budget)
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) usersGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get USER_ID",
		Short: "Show a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.call(cmd.Context(), g, http.MethodGet, "/api/v1/users/"+pathID(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return a.printUser(cmd, g, body)
		},
	}
}

func (a *app) usersUpdate(g *globals) *cobra.Command {
	var name, email, strategy, budget, status string
	cmd := &cobra.Command{
		Use:   "update USER_ID [--name N] [--email E] [--routing-strategy S] [--monthly-budget-usd N] [--team T] [--status S]",
		Short: "Change a user; only the flags given are changed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch := userBody(cmd, name, email, strategy, budget, status)
			if len(patch) == 0 {
				return fmt.Errorf("nothing to change: give at least one of --name, --email, --routing-strategy, --monthly-budget-usd, --team, --status")
			}
			body, err := a.call(cmd.Context(), g, http.MethodPatch, "/api/v1/users/"+pathID(args[0]), nil, patch)
			if err != nil {
				return err
			}
			return a.printUser(cmd, g, body)
		},
	}
	userFlags(cmd, &name, &email, &strategy, &budget)
	cmd.Flags().StringVar(&status, "status", "", "active or disabled (a disabled user's keys stop working)")
	return cmd
}

func (a *app) usersDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete USER_ID",
		Short: "Delete a user; their keys stop working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, "/api/v1/users/"+pathID(args[0]), nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil // 204: the API has no JSON to show
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "Deleted user %s.\n", args[0])
			return err
		},
	}
}
