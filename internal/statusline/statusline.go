// Package statusline owns the developer's status line for Claude Code: it
// asks the gateway's GET <ANTHROPIC_BASE_URL>/me (the developer's spend,
// budgets, Plan headroom, route and cache hit rate) and prints one short
// line, or a fallback text when the gateway does not answer in time.
//
// Claude Code runs the status line command on every update, so the
// command must start fast: this package uses the standard library only,
// and cmd/ccproxy-statusline, a program of this package alone, starts in a
// few milliseconds where the whole ccproxy binary takes tens (its
// dependencies' package initialisation). ccproxy statusline prints the
// same line.
package statusline

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
)

// Environment variables of the status line (the ones Claude Code itself
// reads, and the line's own timeout).
const (
	// EnvBaseURL is the gateway URL with the access key, as Claude Code
	// reads it (…/ak/<key>).
	EnvBaseURL = "ANTHROPIC_BASE_URL"
	// EnvCustomHeaders are extra request headers, one "Name: Value" per
	// line, as Claude Code reads them (the x-ccproxy-key header carries
	// the access key when the URL does not).
	EnvCustomHeaders = "ANTHROPIC_CUSTOM_HEADERS"
	// EnvTimeout bounds the whole command (a Go duration).
	EnvTimeout = "CCPROXY_STATUSLINE_TIMEOUT"
)

// DefaultTimeout is how long the status line waits for the gateway
// before printing its fallback line: Claude Code runs the command on every
// update of its status line, so it must never hold it up.
const DefaultTimeout = 300 * time.Millisecond

// Fallback is printed when the gateway does not answer in time
// or answers an error; short, so it fits the status line.
const Fallback = "ccproxy: gateway unreachable"

// maxStatusBody bounds what the status line reads of the gateway's answer and of
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

// Options are what Line reads besides the gateway.
type Options struct {
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
	// Client calls the gateway; nil is http.DefaultClient.
	Client *http.Client
	// Stdin is Claude Code's status JSON; nil when there is none (a
	// terminal).
	Stdin io.Reader
	// Location is the time zone of the reset times shown.
	Location *time.Location
}

// Timeout is the timeout the environment sets (EnvTimeout), or
// DefaultTimeout; a value that is not a duration from 1 ms to 1 minute is
// an error.
func Timeout(getenv func(string) string) (time.Duration, error) {
	v := getenv(EnvTimeout)
	if v == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > time.Minute {
		return 0, fmt.Errorf("%s must be a duration from 1ms to 1m, such as 300ms", EnvTimeout)
	}
	return d, nil
}

// CheckTimeout refuses a timeout outside 1 ms to 1 minute.
func CheckTimeout(d time.Duration) error {
	if d <= 0 || d > time.Minute {
		return errors.New("--timeout must be a duration from 1ms to 1m, such as 300ms")
	}
	return nil
}

// Line builds the line before ctx ends; it never fails: every problem
// gives Fallback. Claude Code's JSON is read from o.Stdin alongside the
// gateway call.
func Line(ctx context.Context, o Options) string {
	stdin, loc := o.Stdin, o.Location
	if loc == nil {
		loc = time.Local
	}
	model := make(chan string, 1)
	if stdin != nil {
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
	st, err := fetch(ctx, o)
	name := ""
	select {
	case name = <-model:
	case <-ctx.Done():
	}
	line := Fallback
	if err == nil {
		line = formatStatus(st, loc)
	}
	if name = strings.TrimSpace(name); name != "" && len(name) <= 64 {
		line = name + " · " + line
	}
	return line
}

func fetch(ctx context.Context, o Options) (meStatus, error) {
	base := strings.TrimRight(o.Getenv(EnvBaseURL), "/")
	u, err := url.Parse(base)
	if base == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return meStatus{}, errors.New("ANTHROPIC_BASE_URL is not a gateway URL")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/me", nil)
	if err != nil {
		return meStatus{}, err
	}
	for _, line := range strings.Split(o.Getenv(EnvCustomHeaders), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) != "" {
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	hc := o.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
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
