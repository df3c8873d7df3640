// Package insights owns the arithmetic that turns usage rows into answers
// about Claude Code sessions: the agent tree of a session (the main agent
// and the subagents it spawned, with each node's own cost, tokens, models,
// duration and fallbacks) and prompt-cache economics (hit rate, dollars
// saved against no caching, cache writes never read back, cache breaks).
//
// It is pure: the admin service reads the rows and the price rates in
// effect for each (the same lookup the ingester prices rows with) and hands
// them here. Dollar amounts are exact decimals: rates are USD per million
// tokens, so every product is exact and the division by a million only
// moves the decimal point; results are rounded to 6 decimal places (the
// precision of stored costs) once, at the end. docs/sessions.md defines
// every figure.
package insights

import (
	"time"

	"github.com/shopspring/decimal"
)

// Rates are USD per million tokens, as in a price row.
type Rates struct {
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h decimal.Decimal
}

// Request is one usage row as the analyses need it.
type Request struct {
	RequestID string
	// UserID identifies the developer (the chain key of session-less rows).
	UserID string
	// SessionID is Claude Code's session ('' when the client sent none).
	SessionID string
	// AgentID is x-claude-code-agent-id: '' for the main agent (Claude Code
	// sends the header only from subagents).
	AgentID string
	// ParentAgentID is x-claude-code-parent-agent-id, when sent.
	ParentAgentID string
	// AgentSpawns counts the answer's subagent tool calls (Agent/Task).
	AgentSpawns int
	// Time is when the request reached the gateway; Latency how long its
	// answer took, so Time+Latency is when the answer ended.
	Time    time.Time
	Latency time.Duration
	Model   string
	// Provider is "anthropic" or "bedrock".
	Provider       string
	Fallback       bool
	FallbackReason string
	// Status is the upstream's HTTP status (0 when none came).
	Status int
	// CountTokens marks count_tokens requests: unbilled, never part of a
	// cache chain.
	CountTokens bool

	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int64
	// Cost is the stored cost of the row (already rounded to 6 places).
	Cost decimal.Decimal
	// Rates are the prices the row was billed at.
	Rates Rates
}

// End is when the request's answer ended.
func (r Request) End() time.Time { return r.Time.Add(r.Latency) }

// billed reports whether the row carries usage worth analysing: an answered
// Messages request.
func (r Request) billed() bool { return !r.CountTokens && r.Status == 200 }

// usd is tokens × rate per million tokens, exact (the division by a
// million is a shift of the decimal point).
func usd(tokens int64, ratePerMTok decimal.Decimal) decimal.Decimal {
	if tokens == 0 {
		return decimal.Zero
	}
	return ratePerMTok.Mul(decimal.NewFromInt(tokens)).Shift(-6)
}

// Round6 rounds a dollar amount to the 6 decimal places costs are stored
// with.
func Round6(d decimal.Decimal) decimal.Decimal { return d.Round(6) }
