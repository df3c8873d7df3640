package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/shopspring/decimal"
	"github.com/spf13/cobra"
)

// usageGroup is the API's UsageGroup.
type usageGroup struct {
	Key                string `json:"key"`
	Requests           int64  `json:"requests"`
	BedrockRequests    int64  `json:"bedrock_requests"`
	InputTokens        int64  `json:"input_tokens"`
	OutputTokens       int64  `json:"output_tokens"`
	CacheReadTokens    int64  `json:"cache_read_tokens"`
	CacheWrite5mTokens int64  `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens int64  `json:"cache_write_1h_tokens"`
	PlanCostUSD        string `json:"plan_cost_usd"`
	BedrockCostUSD     string `json:"bedrock_cost_usd"`
	Fallbacks          int64  `json:"fallbacks"`
	Errors             int64  `json:"errors"`
	Aborted            int64  `json:"aborted"`
}

// usageRequest is the part of the API's UsageRequest the table shows.
type usageRequest struct {
	RequestID      string    `json:"request_id"`
	EventTime      time.Time `json:"event_time"`
	UserID         string    `json:"user_id"`
	AccessKeyID    string    `json:"access_key_id"`
	SessionID      string    `json:"session_id"`
	RequestedModel string    `json:"requested_model"`
	Provider       string    `json:"provider"`
	Region         string    `json:"region"`
	Fallback       bool      `json:"fallback"`
	Status         int       `json:"status"`
	InputTokens    int64     `json:"input_tokens"`
	OutputTokens   int64     `json:"output_tokens"`
	CostUSD        string    `json:"cost_usd"`
	LatencyMs      int       `json:"latency_ms"`
}

func (a *app) usageCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "usage", Short: "Show metered usage and cost"}
	g := addGlobals(cmd)
	cmd.AddCommand(a.usageSummary(g), a.usageRequests(g), a.usageExport(g))
	return cmd
}

// usageFilters are the flags shared by both usage commands.
type usageFilters struct{ user, key, from, to string }

func (f *usageFilters) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.user, "user", "", "only this user's usage")
	cmd.Flags().StringVar(&f.key, "key", "", "only this access key's usage")
	cmd.Flags().StringVar(&f.from, "from", "", "start, inclusive: RFC 3339 time or YYYY-MM-DD (UTC)")
	cmd.Flags().StringVar(&f.to, "to", "", "end, exclusive: RFC 3339 time or YYYY-MM-DD (UTC)")
}

func (f *usageFilters) query() (url.Values, error) {
	q := url.Values{}
	if f.user != "" {
		q.Set("user_id", f.user)
	}
	if f.key != "" {
		q.Set("key_id", f.key)
	}
	for name, v := range map[string]string{"from": f.from, "to": f.to} {
		if v == "" {
			continue
		}
		t, err := parseTime(v)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", name, err)
		}
		q.Set(name, t.Format(time.RFC3339Nano))
	}
	return q, nil
}

// parseTime accepts an RFC 3339 time or a date, which means its midnight
// UTC.
func parseTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a YYYY-MM-DD date", v)
}

func (a *app) usageSummary(g *globals) *cobra.Command {
	var f usageFilters
	var groupBy string
	cmd := &cobra.Command{
		Use:   "summary [--user ID] [--key ID] [--from T] [--to T] [--group-by day]",
		Short: "Sum tokens and cost by hour, day, model, provider or session (default: the last 30 days by day)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := f.query()
			if err != nil {
				return err
			}
			if groupBy != "" {
				q.Set("group_by", groupBy)
			}
			body, err := a.call(cmd.Context(), g, http.MethodGet, "/api/v1/usage", q, nil)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), body)
			}
			var u struct {
				From    time.Time    `json:"from"`
				To      time.Time    `json:"to"`
				GroupBy string       `json:"group_by"`
				Groups  []usageGroup `json:"groups"`
			}
			if err := decode(body, &u); err != nil {
				return err
			}
			return printSummary(cmd, u.From, u.To, u.GroupBy, u.Groups)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&groupBy, "group-by", "", "hour, day, model, provider, session, user, key or fallback_reason (default day)")
	return cmd
}

func printSummary(cmd *cobra.Command, from, to time.Time, groupBy string, groups []usageGroup) error {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Usage from %s to %s by %s\n\n", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), groupBy)
	rows := [][]string{{"KEY", "REQUESTS", "BEDROCK_REQ", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE_5M", "CACHE_WRITE_1H",
		"PLAN_USD", "BEDROCK_USD", "FALLBACKS", "ERRORS", "ABORTED"}}
	var total usageGroup
	plan, bedrock := decimal.Zero, decimal.Zero
	for _, gr := range groups {
		rows = append(rows, usageRow(gr))
		p, err := decimal.NewFromString(gr.PlanCostUSD)
		if err != nil {
			return fmt.Errorf("the server sent an invalid plan_cost_usd %q", gr.PlanCostUSD)
		}
		b, err := decimal.NewFromString(gr.BedrockCostUSD)
		if err != nil {
			return fmt.Errorf("the server sent an invalid bedrock_cost_usd %q", gr.BedrockCostUSD)
		}
		plan, bedrock = plan.Add(p), bedrock.Add(b)
		total.Requests += gr.Requests
		total.BedrockRequests += gr.BedrockRequests
		total.InputTokens += gr.InputTokens
		total.OutputTokens += gr.OutputTokens
		total.CacheReadTokens += gr.CacheReadTokens
		total.CacheWrite5mTokens += gr.CacheWrite5mTokens
		total.CacheWrite1hTokens += gr.CacheWrite1hTokens
		total.Fallbacks += gr.Fallbacks
		total.Errors += gr.Errors
		total.Aborted += gr.Aborted
	}
	total.Key, total.PlanCostUSD, total.BedrockCostUSD = "TOTAL", plan.String(), bedrock.String()
	rows = append(rows, usageRow(total))
	return table(w, rows)
}

func usageRow(gr usageGroup) []string {
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	return []string{dash(gr.Key), i(gr.Requests), i(gr.BedrockRequests), i(gr.InputTokens), i(gr.OutputTokens),
		i(gr.CacheReadTokens), i(gr.CacheWrite5mTokens), i(gr.CacheWrite1hTokens), gr.PlanCostUSD, gr.BedrockCostUSD,
		i(gr.Fallbacks), i(gr.Errors), i(gr.Aborted)}
}

func (a *app) usageRequests(g *globals) *cobra.Command {
	var f usageFilters
	var page paging
	var session, provider string
	cmd := &cobra.Command{
		Use:   "requests [--user ID] [--key ID] [--limit N]",
		Short: "List metered requests, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := f.query()
			if err != nil {
				return err
			}
			page.set(q)
			for name, v := range map[string]string{"session_id": session, "provider": provider} {
				if v != "" {
					q.Set(name, v)
				}
			}
			return listPage(cmd, a, g, "/api/v1/usage/requests", q,
				[]string{"TIME", "REQUEST_ID", "USER", "MODEL", "PROVIDER", "REGION", "FALLBACK", "STATUS", "INPUT", "OUTPUT", "COST_USD", "LATENCY_MS"},
				func(r usageRequest) []string {
					return []string{ts(&r.EventTime), r.RequestID, r.UserID, dash(r.RequestedModel), r.Provider, dash(r.Region),
						strconv.FormatBool(r.Fallback), strconv.Itoa(r.Status), strconv.FormatInt(r.InputTokens, 10),
						strconv.FormatInt(r.OutputTokens, 10), r.CostUSD, strconv.Itoa(r.LatencyMs)}
				})
		},
	}
	f.register(cmd)
	page.register(cmd)
	cmd.Flags().StringVar(&session, "session", "", "only this Claude Code session")
	cmd.Flags().StringVar(&provider, "provider", "", "only anthropic or bedrock")
	return cmd
}
