package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// budgetDef is the API's BudgetDefinition.
type budgetDef struct {
	ID         string            `json:"id"`
	Scope      string            `json:"scope"`
	SubjectID  string            `json:"subject_id"`
	Window     string            `json:"window"`
	Metric     string            `json:"metric"`
	AmountUSD  string            `json:"amount_usd"`
	Thresholds []int             `json:"thresholds"`
	Action     string            `json:"action"`
	Downgrade  map[string]string `json:"downgrade_map"`
	Current    *struct {
		SpendUSD string   `json:"spend_usd"`
		Percent  *float64 `json:"percent"`
	} `json:"current"`
}

func (a *app) budgetsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "budgets",
		Short: "Manage budgets that act: daily, weekly or monthly spend of a key, user or team, with thresholds and an action at 100 %",
	}
	g := addGlobals(cmd)
	cmd.AddCommand(a.budgetsList(g), a.budgetsCreate(g), a.budgetsUpdate(g), a.budgetsDelete(g))
	return cmd
}

// budgetRow is one budget as a table row.
func budgetRow(b budgetDef) []string {
	spend, pct := "-", "-"
	if b.Current != nil {
		spend = b.Current.SpendUSD
		if b.Current.Percent != nil {
			pct = strconv.FormatFloat(*b.Current.Percent, 'f', 2, 64) + "%"
		}
	}
	th := make([]string, len(b.Thresholds))
	for i, t := range b.Thresholds {
		th[i] = strconv.Itoa(t)
	}
	action := b.Action
	if len(b.Downgrade) > 0 {
		keys := make([]string, 0, len(b.Downgrade))
		for k := range b.Downgrade {
			keys = append(keys, k+"→"+b.Downgrade[k])
		}
		sort.Strings(keys)
		action += " (" + strings.Join(keys, ", ") + ")"
	}
	return []string{b.ID, b.Scope + " " + b.SubjectID, b.Window, b.Metric, b.AmountUSD, spend, pct, strings.Join(th, ","), action}
}

var budgetHeader = []string{"ID", "SUBJECT", "WINDOW", "METRIC", "AMOUNT", "SPENT", "PERCENT", "THRESHOLDS", "ACTION"}

func (a *app) printBudget(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var b budgetDef
	if err := decode(body, &b); err != nil {
		return err
	}
	return table(cmd.OutOrStdout(), [][]string{budgetHeader, budgetRow(b)})
}

func (a *app) budgetsList(g *globals) *cobra.Command {
	var scope, subject string
	cmd := &cobra.Command{
		Use:   "list [--scope key|user|team] [--subject ID]",
		Short: "List budgets with the current window's spend",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if scope != "" {
				q.Set("scope", scope)
			}
			if subject != "" {
				q.Set("subject_id", subject)
			}
			body, err := a.call(cmd.Context(), g, http.MethodGet, "/api/v1/budgets", q, nil)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), body)
			}
			var out struct{ Budgets []budgetDef }
			if err := decode(body, &out); err != nil {
				return err
			}
			rows := [][]string{budgetHeader}
			for _, b := range out.Budgets {
				rows = append(rows, budgetRow(b))
			}
			return table(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "only budgets of this scope (key, user or team)")
	cmd.Flags().StringVar(&subject, "subject", "", "only budgets of this key, user or team id")
	return cmd
}

// budgetFlags are the settable fields of a budget.
type budgetFlags struct {
	window, metric, amount, action string
	thresholds                     []int
	downgrade                      []string
}

func (f *budgetFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.window, "window", "", "daily, weekly or monthly (billing time zone; default monthly)")
	fl.StringVar(&f.metric, "metric", "", "bedrock, plan_list or all (default bedrock)")
	fl.StringVar(&f.amount, "amount", "", `amount in USD, like "25.00"`)
	fl.StringVar(&f.action, "action", "", "at 100 %: block, downgrade, plan_only or notify (default block)")
	fl.IntSliceVar(&f.thresholds, "thresholds", nil, "percentages that notify once per window (default 50,80,100)")
	fl.StringSliceVar(&f.downgrade, "downgrade", nil, "for action downgrade: FROM=TO model pairs, e.g. opus=claude-sonnet-4-5")
}

// body returns the JSON fields of the flags that were given.
func (f *budgetFlags) body(cmd *cobra.Command) (map[string]any, error) {
	fl := cmd.Flags()
	out := map[string]any{}
	for flag, v := range map[string]string{"window": f.window, "metric": f.metric, "amount": f.amount, "action": f.action} {
		if fl.Changed(flag) {
			name := flag
			if flag == "amount" {
				name = "amount_usd"
			}
			out[name] = v
		}
	}
	if fl.Changed("thresholds") {
		out["thresholds"] = f.thresholds
	}
	if fl.Changed("downgrade") {
		m := map[string]string{}
		for _, p := range f.downgrade {
			from, to, ok := strings.Cut(p, "=")
			if !ok || from == "" || to == "" {
				return nil, fmt.Errorf("--downgrade %q: want FROM=TO", p)
			}
			m[from] = to
		}
		out["downgrade_map"] = m
	}
	return out, nil
}

func (a *app) budgetsCreate(g *globals) *cobra.Command {
	var userID, keyID, teamID string
	var f budgetFlags
	cmd := &cobra.Command{
		Use:   "create (--user ID | --key ID | --team ID) --amount USD [--window W] [--metric M] [--action A] [--thresholds 50,80,100] [--downgrade FROM=TO]",
		Short: "Create a budget",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := f.body(cmd)
			if err != nil {
				return err
			}
			n := 0
			for scope, id := range map[string]string{"user": userID, "key": keyID, "team": teamID} {
				if id != "" {
					req["scope"], req["subject_id"] = scope, id
					n++
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --user, --key or --team")
			}
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/budgets", nil, req)
			if err != nil {
				return err
			}
			return a.printBudget(cmd, g, body)
		},
	}
	cmd.Flags().StringVar(&userID, "user", "", "a budget of this user (all the user's keys)")
	cmd.Flags().StringVar(&keyID, "key", "", "a budget of this access key")
	cmd.Flags().StringVar(&teamID, "team", "", "a budget of this team (all its members)")
	f.add(cmd)
	return cmd
}

func (a *app) budgetsUpdate(g *globals) *cobra.Command {
	var f budgetFlags
	cmd := &cobra.Command{
		Use:   "update BUDGET_ID [--amount USD] [--window W] [--metric M] [--action A] [--thresholds …] [--downgrade FROM=TO]",
		Short: "Change a budget (only the flags given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.body(cmd)
			if err != nil {
				return err
			}
			if len(req) == 0 {
				return errors.New("give at least one field to change")
			}
			body, err := a.call(cmd.Context(), g, http.MethodPatch, "/api/v1/budgets/"+pathID(args[0]), nil, req)
			if err != nil {
				return err
			}
			return a.printBudget(cmd, g, body)
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) budgetsDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete BUDGET_ID",
		Short: "Delete a budget",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, "/api/v1/budgets/"+pathID(args[0]), nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "Deleted budget %s.\n", args[0])
			return err
		},
	}
}
