package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// team is the API's Team.
type team struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	MonthlyBudgetUSD   *string   `json:"monthly_budget_usd"`
	PlanBudgetUSD      *string   `json:"plan_budget_usd"`
	PlanBudgetEnforced bool      `json:"plan_budget_enforced"`
	RoutingStrategy    *string   `json:"routing_strategy"`
	AllowedModels      []string  `json:"allowed_models"`
	PreemptThreshold   *float64  `json:"preempt_threshold"`
	Members            int       `json:"members"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`
}

// models is a team's allow-list for display: "all" when there is none.
func (t team) models() string {
	if t.AllowedModels == nil {
		return "all"
	}
	return strings.Join(t.AllowedModels, ",")
}

func (t team) planBudget() string {
	if t.PlanBudgetUSD == nil {
		return "-"
	}
	if t.PlanBudgetEnforced {
		return *t.PlanBudgetUSD + " (enforced)"
	}
	return *t.PlanBudgetUSD + " (notify only)"
}

func (a *app) teamsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "teams", Short: "Manage teams (budgets, default routing strategy, model allow-list)"}
	g := addGlobals(cmd)
	cmd.AddCommand(a.teamsList(g), a.teamsCreate(g), a.teamsGet(g), a.teamsUpdate(g), a.teamsDelete(g))
	return cmd
}

func (a *app) teamsList(g *globals) *cobra.Command {
	var page paging
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List teams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			page.set(q)
			return listPage(cmd, a, g, "/api/v1/teams", q,
				[]string{"ID", "NAME", "MEMBERS", "BUDGET_USD", "PLAN_BUDGET_USD", "ROUTING", "MODELS"},
				func(t team) []string {
					return []string{t.ID, t.Name, strconv.Itoa(t.Members), str(t.MonthlyBudgetUSD), t.planBudget(), str(t.RoutingStrategy), t.models()}
				})
		},
	}
	page.register(cmd)
	return cmd
}

// teamFlagValues are the team fields of the command line.
type teamFlagValues struct {
	name, budget, planBudget, planEnforced, strategy, models, preempt string
}

func teamFlags(cmd *cobra.Command, v *teamFlagValues) {
	f := cmd.Flags()
	f.StringVar(&v.name, "name", "", "team name")
	f.StringVar(&v.budget, "monthly-budget-usd", "", `monthly Bedrock budget in USD, e.g. 500 ("none" for no budget)`)
	f.StringVar(&v.planBudget, "plan-budget-usd", "", `monthly budget on the Plan list-price equivalent in USD ("none" for no budget)`)
	f.StringVar(&v.planEnforced, "plan-budget-enforced", "", "true: the Plan budget refuses requests when reached; false: it only notifies")
	f.StringVar(&v.strategy, "routing-strategy", "", `strategy members take on joining: plan_first, bedrock_only or plan_only ("none": members keep their own)`)
	f.StringVar(&v.models, "allowed-models", "", `comma-separated model ids or aliases members may use ("all" for every model)`)
	f.StringVar(&v.preempt, "preempt-threshold", "", `pre-emptive failover threshold of members without one, 0 to 1 ("none": the gateway default)`)
}

// teamBody collects the flags given; only those are sent.
func teamBody(cmd *cobra.Command, v teamFlagValues) (map[string]any, error) {
	body := map[string]any{}
	f := cmd.Flags()
	if f.Changed("name") {
		body["name"] = v.name
	}
	if f.Changed("monthly-budget-usd") {
		body["monthly_budget_usd"] = nullIf(v.budget, "none")
	}
	if f.Changed("plan-budget-usd") {
		body["plan_budget_usd"] = nullIf(v.planBudget, "none")
	}
	if f.Changed("plan-budget-enforced") {
		b, err := strconv.ParseBool(v.planEnforced)
		if err != nil {
			return nil, fmt.Errorf("--plan-budget-enforced must be true or false, not %q", v.planEnforced)
		}
		body["plan_budget_enforced"] = b
	}
	if f.Changed("routing-strategy") {
		body["routing_strategy"] = nullIf(v.strategy, "none")
	}
	if f.Changed("allowed-models") {
		if v.models == "all" {
			body["allowed_models"] = nil
		} else {
			models := []string{}
			for m := range strings.SplitSeq(v.models, ",") {
				if m = strings.TrimSpace(m); m != "" {
					models = append(models, m)
				}
			}
			body["allowed_models"] = models
		}
	}
	if f.Changed("preempt-threshold") {
		if v.preempt == "none" {
			body["preempt_threshold"] = nil
		} else {
			th, err := strconv.ParseFloat(v.preempt, 64)
			if err != nil {
				return nil, fmt.Errorf("--preempt-threshold must be a number from 0 to 1 or none, not %q", v.preempt)
			}
			body["preempt_threshold"] = th
		}
	}
	return body, nil
}

func (a *app) printTeam(cmd *cobra.Command, g *globals, body []byte) error {
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var t team
	if err := decode(body, &t); err != nil {
		return err
	}
	preempt := "-"
	if t.PreemptThreshold != nil {
		preempt = strconv.FormatFloat(*t.PreemptThreshold, 'f', -1, 64)
	}
	return fields(cmd.OutOrStdout(), [][2]string{
		{"ID", t.ID}, {"Name", t.Name}, {"Members", strconv.Itoa(t.Members)},
		{"Monthly budget USD", str(t.MonthlyBudgetUSD)}, {"Plan budget USD", t.planBudget()},
		{"Routing strategy", str(t.RoutingStrategy)}, {"Allowed models", t.models()}, {"Preempt threshold", preempt},
		{"Created", ts(&t.CreatedAt)}, {"Updated", ts(&t.UpdatedAt)},
	})
}

func (a *app) teamsCreate(g *globals) *cobra.Command {
	var v teamFlagValues
	cmd := &cobra.Command{
		Use:   "create --name NAME [--monthly-budget-usd N] [--plan-budget-usd N] [--plan-budget-enforced B] [--routing-strategy S] [--allowed-models M,…] [--preempt-threshold F]",
		Short: "Create a team",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := teamBody(cmd, v)
			if err != nil {
				return err
			}
			body, err := a.call(cmd.Context(), g, http.MethodPost, "/api/v1/teams", nil, req)
			if err != nil {
				return err
			}
			return a.printTeam(cmd, g, body)
		},
	}
	teamFlags(cmd, &v)
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) teamsGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get TEAM_ID",
		Short: "Show a team",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.call(cmd.Context(), g, http.MethodGet, "/api/v1/teams/"+pathID(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return a.printTeam(cmd, g, body)
		},
	}
}

func (a *app) teamsUpdate(g *globals) *cobra.Command {
	var v teamFlagValues
	cmd := &cobra.Command{
		Use:   "update TEAM_ID [--name N] [--monthly-budget-usd N] [--plan-budget-usd N] [--plan-budget-enforced B] [--routing-strategy S] [--allowed-models M,…] [--preempt-threshold F]",
		Short: "Change a team; only the flags given are changed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := teamBody(cmd, v)
			if err != nil {
				return err
			}
			if len(patch) == 0 {
				return fmt.Errorf("nothing to change: give at least one of --name, --monthly-budget-usd, --plan-budget-usd, --plan-budget-enforced, --routing-strategy, --allowed-models, --preempt-threshold")
			}
			body, err := a.call(cmd.Context(), g, http.MethodPatch, "/api/v1/teams/"+pathID(args[0]), nil, patch)
			if err != nil {
				return err
			}
			return a.printTeam(cmd, g, body)
		},
	}
	teamFlags(cmd, &v)
	return cmd
}

func (a *app) teamsDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete TEAM_ID",
		Short: "Delete a team (refused while it has members or team admins)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.call(cmd.Context(), g, http.MethodDelete, "/api/v1/teams/"+pathID(args[0]), nil, nil); err != nil {
				return err
			}
			if g.json() {
				return nil
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "Deleted team %s.\n", args[0])
			return err
		},
	}
}
