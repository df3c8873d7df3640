package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Environment variables of the statusline command (the ones Claude Code
// itself reads, and the command's own timeout).
const (
	// EnvBaseURL is the gateway URL with the access key, as Claude Code
	// reads it (…/ak/<key>).
	EnvBaseURL = "ANTHROPIC_BASE_URL"
	// EnvCustomHeaders are extra request headers, one "Name: Value" per
	// line, as Claude Code reads them (the x-ccproxy-key header carries
	// the access key when the URL does not).
	EnvCustomHeaders = "ANTHROPIC_CUSTOM_HEADERS"
	// EnvStatuslineTimeout bounds the whole command (a Go duration).
	EnvStatuslineTimeout = "CCPROXY_STATUSLINE_TIMEOUT"
)

// DefaultStatuslineTimeout is how long statusline waits for the gateway
// before printing its fallback line: Claude Code runs the command on every
// update of its status line, so it must never hold it up.
const DefaultStatuslineTimeout = 300 * time.Millisecond

// statuslineFallback is printed when the gateway does not answer in time
// or answers an error; short, so it fits the status line.
const statuslineFallback = "ccproxy: gateway unreachable"

// maxStatusBody bounds what statusline reads of the gateway's answer and of
// Claude Code's JSON on stdin.
const maxStatusBody = 64 << 10

// meStatus is the part of GET /ak/<key>/me the status line shows.
type meStatus struct {
	Spend struct {
		TotalUSD   string `json:"total_usd"`
		BedrockUSD string `json:"bedrock_usd"`
	} `json:"spend"`
	Budget struct {
		MonthlyBudgetUSD *string `json:"monthly_budget_usd"`
	} `json:"budget"`
	Plan *struct {
		Utilization5h *float64   `json:"utilization_5h"`
		Reset5h       *time.Time `json:"reset_5h"`
		Utilization7d *float64   `json:"utilization_7d"`
	} `json:"plan"`
	Route struct {
		Backend string     `json:"backend"`
		Reason  string     `json:"reason"`
		Until   *time.Time `json:"until"`
	} `json:"route"`
	Cache struct {
		HitRateToday *float64 `json:"hit_rate_today"`
	} `json:"cache"`
	Budgets []meBudget `json:"budgets"`
}

// meBudget is the part of one of /me's budgets the status line uses.
type meBudget struct {
	Window       string            `json:"window"`
	LimitUSD     string            `json:"limit_usd"`
	SpentUSD     string            `json:"spent_usd"`
	Action       string            `json:"action"`
	ResetsAt     *time.Time        `json:"resets_at"`
	DowngradeMap map[string]string `json:"downgrade_map"`
}

// claudeStatus is the part of the JSON Claude Code writes to a statusLine
// command's stdin that the line uses.
type claudeStatus struct {
	Model struct {
		DisplayName string `json:"display_name"`
	} `json:"model"`
}

func (a *app) statuslineCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "statusline",
		Short: "Print one status line for Claude Code: spend, budget, Plan headroom, route",
		Long: `statusline prints one short line about your own use of the gateway, for Claude Code's
statusLine setting: this month's spend, your Bedrock budget, your Plan 5-hour and 7-day
utilization, where your next request goes and today's prompt-cache hit rate. Of the budgets that
act (block, downgrade, plan_only), the one closest to its limit is shown, e.g. "day $4.20/$5.00 →
sonnet".

It reads the gateway URL with your access key from ANTHROPIC_BASE_URL (and extra headers from
ANTHROPIC_CUSTOM_HEADERS), as Claude Code does, and asks GET <ANTHROPIC_BASE_URL>/me. Your
Anthropic credential is never sent. When Claude Code passes its status JSON on stdin, the model
name starts the line. After --timeout (default 300ms, ` + EnvStatuslineTimeout + `) it prints
"` + statuslineFallback + `" instead, so it never holds Claude Code up.

In ~/.claude/settings.json:  {"statusLine": {"type": "command", "command": "ccproxy statusline"}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("timeout") {
				if v := a.getenv(EnvStatuslineTimeout); v != "" {
					d, err := time.ParseDuration(v)
					if err != nil || d <= 0 || d > time.Minute {
						return fmt.Errorf("%s must be a duration from 1ms to 1m, such as 300ms", EnvStatuslineTimeout)
					}
					timeout = d
				}
			}
			if timeout <= 0 || timeout > time.Minute {
				return errors.New("--timeout must be a duration from 1ms to 1m, such as 300ms")
			}
			parent := cmd.Context()
			if parent == nil {
				parent = context.Background()
			}
			ctx, cancel := context.WithTimeout(parent, timeout)
			defer cancel()
			_, err := fmt.Fprintln(cmd.OutOrStdout(), a.statusLine(ctx, cmd.InOrStdin(), time.Local))
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", DefaultStatuslineTimeout, "longest the command waits for the gateway before printing its fallback line (also "+EnvStatuslineTimeout+")")
	return cmd
}

// statusLine builds the line; it never fails: every problem gives the
// fallback text. Claude Code's JSON is read from stdin alongside the
// gateway call when stdin is not a terminal.
func (a *app) statusLine(ctx context.Context, stdin io.Reader, loc *time.Location) string {
	model := make(chan string, 1)
	if stdin != nil && !a.isTerminal(stdin) {
		go func() {
			var cs claudeStatus
			if b, err := io.ReadAll(io.LimitReader(stdin, maxStatusBody)); err == nil && json.Unmarshal(b, &cs) == nil {
				model <- cs.Model.DisplayName
				return
			}
			model <- ""
		}()
	} else {
		model <- ""
	}
	st, err := a.fetchStatus(ctx)
	name := ""
	select {
	case name = <-model:
	case <-ctx.Done():
	}
	line := statuslineFallback
	if err == nil {
		line = formatStatus(st, loc)
	}
	if name = strings.TrimSpace(name); name != "" && len(name) <= 64 {
		line = name + " · " + line
	}
	return line
}

func (a *app) fetchStatus(ctx context.Context) (meStatus, error) {
	base := strings.TrimRight(a.getenv(EnvBaseURL), "/")
	u, err := url.Parse(base)
	if base == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return meStatus{}, errors.New("ANTHROPIC_BASE_URL is not a gateway URL")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/me", nil)
	if err != nil {
		return meStatus{}, err
	}
	for _, line := range strings.Split(a.getenv(EnvCustomHeaders), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) != "" {
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return meStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return meStatus{}, fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	var st meStatus
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(resp.Body, maxStatusBody))).Decode(&st); err != nil {
		return meStatus{}, err
	}
	return st, nil
}

// formatStatus is the line, e.g.
// "$12.34 this month · Bedrock $3.20 of $50.00 · day $4.20/$5.00 → sonnet · 5h 42% (resets 14:05) · 7d 10% · → Plan · cache 83%".
// "no budget" stands for both budget parts when neither applies.
func formatStatus(st meStatus, loc *time.Location) string {
	parts := []string{money(st.Spend.TotalUSD) + " this month"}
	if b := st.Budget.MonthlyBudgetUSD; b != nil {
		parts = append(parts, "Bedrock "+money(st.Spend.BedrockUSD)+" of "+money(*b))
	}
	if b, ok := tightestBudget(st.Budgets); ok {
		parts = append(parts, formatBudget(b))
	}
	if len(parts) == 1 {
		parts = append(parts, "no budget")
	}
	if p := st.Plan; p != nil && p.Utilization5h != nil {
		h := "5h " + percent(*p.Utilization5h)
		if p.Reset5h != nil {
			h += " (resets " + p.Reset5h.In(loc).Format("15:04") + ")"
		}
		parts = append(parts, h)
		if p.Utilization7d != nil {
			parts = append(parts, "7d "+percent(*p.Utilization7d))
		}
	} else {
		parts = append(parts, "5h n/a")
	}
	route := "→ Plan"
	if st.Route.Backend == "bedrock" {
		route = "→ Bedrock"
		switch st.Route.Reason {
		case "preemptive", "breaker_open":
			route += " (" + strings.ReplaceAll(st.Route.Reason, "_", " ")
			if st.Route.Until != nil {
				route += " until " + st.Route.Until.In(loc).Format("15:04")
			}
			route += ")"
		}
	}
	parts = append(parts, route)
	if r := st.Cache.HitRateToday; r != nil {
		parts = append(parts, "cache "+percent(*r))
	}
	return strings.Join(parts, " · ")
}

// actionRank orders the acting budgets' actions as extproc does when
// several are used up (block > plan_only > downgrade); notify, which does
// not act, is 0.
func actionRank(action string) int {
	switch action {
	case "block":
		return 3
	case "plan_only":
		return 2
	case "downgrade":
		return 1
	}
	return 0
}

// budgetRatio is spent ÷ limit; a limit of 0 (or less) is used up at
// once, so it ranks above every finite ratio.
func budgetRatio(b meBudget) float64 {
	spent, _ := strconv.ParseFloat(b.SpentUSD, 64)
	limit, err := strconv.ParseFloat(b.LimitUSD, 64)
	if err != nil || limit <= 0 {
		return math.Inf(1)
	}
	return spent / limit
}

// tightestBudget is the most constraining acting budget: of those whose
// action is block, plan_only or downgrade, the highest spent ÷ limit;
// among equal ratios the stronger action, then the earlier reset, then
// the first listed. ok is false when no budget acts.
func tightestBudget(budgets []meBudget) (meBudget, bool) {
	var best meBudget
	var bestRatio float64
	found := false
	for _, b := range budgets {
		if actionRank(b.Action) == 0 {
			continue
		}
		r := budgetRatio(b)
		better := !found || r > bestRatio
		if found && r == bestRatio {
			switch rb, rc := actionRank(b.Action), actionRank(best.Action); {
			case rb != rc:
				better = rb > rc
			case b.ResetsAt != nil && best.ResetsAt != nil:
				better = b.ResetsAt.Before(*best.ResetsAt)
			}
		}
		if better {
			best, bestRatio, found = b, r, true
		}
	}
	return best, found
}

// windowLabel is a budget window's short name on the line.
func windowLabel(window string) string {
	switch window {
	case "daily":
		return "day"
	case "weekly":
		return "week"
	case "monthly":
		return "month"
	}
	return window
}

// formatBudget is one budget on the line: "<day|week|month>
// $spent/$limit <effect>", the effect "block", "plan only" or, for
// downgrade, "→ " and the model families it serves ("→ sonnet",
// "→ haiku/sonnet").
func formatBudget(b meBudget) string {
	out := windowLabel(b.Window) + " " + money(b.SpentUSD) + "/" + money(b.LimitUSD) + " "
	switch b.Action {
	case "block":
		return out + "block"
	case "plan_only":
		return out + "plan only"
	}
	var targets []string
	seen := map[string]bool{}
	for _, to := range b.DowngradeMap {
		if f := modelFamily(to); !seen[f] {
			seen[f] = true
			targets = append(targets, f)
		}
	}
	if len(targets) == 0 {
		return out + "downgrade"
	}
	sort.Strings(targets)
	return out + "→ " + strings.Join(targets, "/")
}

// modelFamily is the family of a Claude model id, the first word of
// letters after "claude-" (claude-sonnet-4-5 → sonnet, claude-3-5-haiku
// → haiku); other names are returned whole.
func modelFamily(model string) string {
	rest, ok := strings.CutPrefix(model, "claude-")
	if !ok {
		return model
	}
	for _, w := range strings.Split(rest, "-") {
		if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyz") == "" {
			return w
		}
	}
	return model
}

// money formats a decimal USD string with two decimals ("$12.34").
func money(v string) string {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return "$?"
	}
	return "$" + strconv.FormatFloat(f, 'f', 2, 64)
}

// percent formats a fraction as a whole percentage ("42%").
func percent(f float64) string {
	return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
}
