// Package usagestream owns the path of usage events from extproc to the
// admin service through Redis: the stream's names and entry format (JSON,
// version 1, of every usage.Event field), the Producer that extproc
// publishes through (a never-blocking usage.Sink with a bounded in-memory
// buffer that rides out Redis outages), and the Consumer that the admin
// service's ingester reads with (a consumer group with at-least-once
// delivery: entries are acknowledged only after the handler committed
// them, and entries left by a dead consumer are claimed by a live one).
//
// Exactly-once in Postgres is the handler's job: the admin ingester stores
// events idempotently by request id (admin/ingest), so a redelivered or
// re-published event is skipped.
//
// Redis layout, under the configured prefix (CCPROXY_REDIS_PREFIX):
//
//	<prefix>usage:stream   the stream; each entry has one field "e", the JSON event
//	<prefix>usage:dead     entries the consumer could not decode, with the
//	                       original id ("id"), payload ("e") and error ("err")
//
// The consumer group is "ingest".
package usagestream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// Version is the entry format version, the "v" field of every entry.
const Version = 1

// Field is the name of the stream entry field that holds the JSON event.
const Field = "e"

// Group is the consumer group of the admin ingesters.
const Group = "ingest"

// MaxEntrySize bounds an entry the decoder accepts. Real events are well
// under 2 KB: the router caps the model name and client version.
const MaxEntrySize = 64 << 10

// StreamKey is the usage stream's key.
func StreamKey(prefix string) string { return prefix + "usage:stream" }

// DeadLetterKey is the dead-letter stream's key.
func DeadLetterKey(prefix string) string { return prefix + "usage:dead" }

// wireEvent is the JSON form of a usage.Event. Times are RFC 3339 in UTC
// with nanoseconds and durations are integer nanoseconds, so that a decoded
// event equals the encoded one exactly. Empty strings and zero numbers are
// omitted.
type wireEvent struct {
	V              int         `json:"v"`
	RequestID      string      `json:"request_id"`
	Time           string      `json:"time"`
	UserID         uuid.UUID   `json:"user_id"`
	KeyID          uuid.UUID   `json:"key_id"`
	SessionID      string      `json:"session_id,omitempty"`
	AgentID        string      `json:"agent_id,omitempty"`
	ParentAgentID  string      `json:"parent_agent_id,omitempty"`
	AgentSpawns    int         `json:"agent_spawns,omitempty"`
	ClientVersion  string      `json:"client_version,omitempty"`
	PathKind       string      `json:"path"`
	Model          string      `json:"model,omitempty"`
	BackendModel   string      `json:"backend_model,omitempty"`
	Provider       string      `json:"provider"`
	Region         string      `json:"region,omitempty"`
	Route          string      `json:"route,omitempty"`
	Fallback       bool        `json:"fallback,omitempty"`
	FallbackReason string      `json:"fallback_reason,omitempty"`
	BudgetAction   string      `json:"budget_action,omitempty"`
	OriginalModel  string      `json:"original_model,omitempty"`
	Stream         bool        `json:"stream,omitempty"`
	Status         int         `json:"status"`
	Input          int64       `json:"input_tokens,omitempty"`
	Output         int64       `json:"output_tokens,omitempty"`
	CacheRead      int64       `json:"cache_read_tokens,omitempty"`
	CacheWrite5m   int64       `json:"cache_write_5m_tokens,omitempty"`
	CacheWrite1h   int64       `json:"cache_write_1h_tokens,omitempty"`
	CountedInput   int64       `json:"counted_input_tokens,omitempty"`
	TTFTNanos      int64       `json:"ttft_ns,omitempty"`
	LatencyNanos   int64       `json:"latency_ns,omitempty"`
	Aborted        bool        `json:"aborted,omitempty"`
	PlanLimits     *wireLimits `json:"plan_limits,omitempty"`
	// RejectedCredential is set only when Bedrock refused the credential.
	RejectedCredential *uuid.UUID `json:"rejected_credential,omitempty"`
	// TeamID is the user's team, when in one (an optional field added
	// within version 1: older decoders ignore it).
	TeamID *uuid.UUID `json:"team_id,omitempty"`
}

// wireLimits is the JSON form of usage.PlanLimits; times are unix
// milliseconds (0 when absent) and a utilization is absent when nil.
type wireLimits struct {
	Status  string   `json:"status,omitempty"`
	Claim   string   `json:"claim,omitempty"`
	U5h     *float64 `json:"u5h,omitempty"`
	U7d     *float64 `json:"u7d,omitempty"`
	Reset5h int64    `json:"reset5h,omitempty"`
	Reset7d int64    `json:"reset7d,omitempty"`
	Reset   int64    `json:"reset,omitempty"`
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func encodeLimits(l usage.PlanLimits) *wireLimits {
	if !l.Present() {
		return nil
	}
	w := &wireLimits{Status: l.Status, Claim: l.Claim, Reset5h: msOf(l.Reset5h), Reset7d: msOf(l.Reset7d), Reset: msOf(l.Reset)}
	if l.Has5h {
		w.U5h = &l.Utilization5h
	}
	if l.Has7d {
		w.U7d = &l.Utilization7d
	}
	return w
}

func decodeLimits(w *wireLimits) usage.PlanLimits {
	if w == nil {
		return usage.PlanLimits{}
	}
	l := usage.PlanLimits{Status: w.Status, Claim: w.Claim, Reset5h: timeOf(w.Reset5h), Reset7d: timeOf(w.Reset7d), Reset: timeOf(w.Reset)}
	if w.U5h != nil {
		l.Utilization5h, l.Has5h = *w.U5h, true
	}
	if w.U7d != nil {
		l.Utilization7d, l.Has7d = *w.U7d, true
	}
	return l
}

// Encode returns the entry payload of ev. Time is stored in UTC (the
// location and monotonic reading are not kept).
func Encode(ev usage.Event) []byte {
	w := wireEvent{
		V:              Version,
		RequestID:      ev.RequestID,
		Time:           ev.Time.UTC().Format(time.RFC3339Nano),
		UserID:         ev.UserID,
		KeyID:          ev.KeyID,
		SessionID:      ev.SessionID,
		AgentID:        ev.AgentID,
		ParentAgentID:  ev.ParentAgentID,
		AgentSpawns:    ev.AgentSpawns,
		ClientVersion:  ev.ClientVersion,
		PathKind:       ev.PathKind,
		Model:          ev.Model,
		BackendModel:   ev.BackendModel,
		Provider:       ev.Provider,
		Region:         ev.Region,
		Route:          ev.Route,
		Fallback:       ev.Fallback,
		FallbackReason: ev.FallbackReason,
		BudgetAction:   ev.BudgetAction,
		OriginalModel:  ev.OriginalModel,
		Stream:         ev.Stream,
		Status:         ev.Status,
		Input:          ev.Usage.InputTokens,
		Output:         ev.Usage.OutputTokens,
		CacheRead:      ev.Usage.CacheReadInputTokens,
		CacheWrite5m:   ev.Usage.CacheWrite5mInputTokens,
		CacheWrite1h:   ev.Usage.CacheWrite1hInputTokens,
		CountedInput:   ev.CountedInputTokens,
		TTFTNanos:      int64(ev.TTFT),
		LatencyNanos:   int64(ev.Latency),
		Aborted:        ev.Aborted,
		PlanLimits:     encodeLimits(ev.PlanLimits),
	}
	if ev.TeamID != uuid.Nil {
		id := ev.TeamID
		w.TeamID = &id
	}
	if ev.RejectedCredentialID != uuid.Nil {
		id := ev.RejectedCredentialID
		w.RejectedCredential = &id
	}
	b, err := json.Marshal(w)
	if err != nil {
		// Only strings, numbers, booleans and UUIDs: Marshal cannot fail.
		panic("usagestream: encode: " + err.Error())
	}
	return b
}

// ErrUndecodable wraps every Decode error.
var ErrUndecodable = errors.New("usagestream: undecodable entry")

// Time bounds of a decodable event: anything else is corrupt, and would
// make the ingester create absurd monthly partitions.
var (
	minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// maxDuration bounds TTFT and latency: they are stored as int32
// milliseconds.
// maxAgentSpawns bounds the subagent calls of one answer (the column is a
// smallint); a real answer holds a handful.
const maxAgentSpawns = 32767

const maxDuration = time.Duration(1<<31-1) * time.Millisecond

// Decode parses an entry payload from untrusted bytes. It rejects, with an
// error wrapping ErrUndecodable, anything the ingester could not store as
// is: another version, a missing or over-long request id, a bad time, an
// unknown path kind or provider, a status outside 0–999, negative counts
// or durations. Unknown fields are ignored, so a later producer may add
// fields without a new version. Over-long free-text fields (model, session
// id, …) are accepted; the ingester shortens them.
func Decode(b []byte) (usage.Event, error) {
	if len(b) > MaxEntrySize {
		return usage.Event{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrUndecodable, len(b), MaxEntrySize)
	}
	var w wireEvent
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&w); err != nil {
		return usage.Event{}, fmt.Errorf("%w: %v", ErrUndecodable, err)
	}
	if d.More() {
		return usage.Event{}, fmt.Errorf("%w: data after the JSON object", ErrUndecodable)
	}
	if w.V != Version {
		return usage.Event{}, fmt.Errorf("%w: version %d (want %d)", ErrUndecodable, w.V, Version)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return usage.Event{}, fmt.Errorf("%w: time %q", ErrUndecodable, w.Time)
	}
	t = t.UTC()
	ev := usage.Event{
		RequestID:      w.RequestID,
		Time:           t,
		UserID:         w.UserID,
		KeyID:          w.KeyID,
		SessionID:      w.SessionID,
		AgentID:        w.AgentID,
		ParentAgentID:  w.ParentAgentID,
		AgentSpawns:    w.AgentSpawns,
		ClientVersion:  w.ClientVersion,
		PathKind:       w.PathKind,
		Model:          w.Model,
		BackendModel:   w.BackendModel,
		Provider:       w.Provider,
		Region:         w.Region,
		Route:          w.Route,
		Fallback:       w.Fallback,
		FallbackReason: w.FallbackReason,
		BudgetAction:   w.BudgetAction,
		OriginalModel:  w.OriginalModel,
		Stream:         w.Stream,
		Status:         w.Status,
		Usage: usage.Usage{
			InputTokens:             w.Input,
			OutputTokens:            w.Output,
			CacheReadInputTokens:    w.CacheRead,
			CacheWrite5mInputTokens: w.CacheWrite5m,
			CacheWrite1hInputTokens: w.CacheWrite1h,
		},
		CountedInputTokens: w.CountedInput,
		TTFT:               time.Duration(w.TTFTNanos),
		Latency:            time.Duration(w.LatencyNanos),
		Aborted:            w.Aborted,
		PlanLimits:         decodeLimits(w.PlanLimits),
	}
	if w.RejectedCredential != nil {
		ev.RejectedCredentialID = *w.RejectedCredential
	}
	if w.TeamID != nil {
		ev.TeamID = *w.TeamID
	}
	if err := check(ev); err != nil {
		return usage.Event{}, fmt.Errorf("%w: request %q: %v", ErrUndecodable, ev.RequestID, err)
	}
	return ev, nil
}

func check(ev usage.Event) error {
	switch {
	case ev.RequestID == "" || len(ev.RequestID) > 200:
		return fmt.Errorf("request id of %d bytes (want 1 to 200)", len(ev.RequestID))
	case ev.Time.Before(minTime) || !ev.Time.Before(maxTime):
		return fmt.Errorf("time %s out of range", ev.Time.Format(time.RFC3339))
	case ev.PathKind != usage.PathMessages && ev.PathKind != usage.PathCountTokens:
		return fmt.Errorf("path kind %q", ev.PathKind)
	case ev.Provider != usage.ProviderAnthropic && ev.Provider != usage.ProviderBedrock:
		return fmt.Errorf("provider %q", ev.Provider)
	case ev.Status < 0 || ev.Status > 999:
		return fmt.Errorf("status %d", ev.Status)
	case ev.Usage.InputTokens < 0 || ev.Usage.OutputTokens < 0 || ev.Usage.CacheReadInputTokens < 0 ||
		ev.Usage.CacheWrite5mInputTokens < 0 || ev.Usage.CacheWrite1hInputTokens < 0 || ev.CountedInputTokens < 0:
		return errors.New("negative token count")
	case ev.BudgetAction != "" && ev.BudgetAction != usage.BudgetDowngrade && ev.BudgetAction != usage.BudgetPlanOnly:
		return fmt.Errorf("budget action %q", ev.BudgetAction)
	case ev.AgentSpawns < 0 || ev.AgentSpawns > maxAgentSpawns:
		return fmt.Errorf("agent spawns %d (want 0 to %d)", ev.AgentSpawns, maxAgentSpawns)
	case ev.TTFT < 0 || ev.Latency < 0 || ev.TTFT > maxDuration || ev.Latency > maxDuration:
		return errors.New("duration out of range")
	}
	return checkLimits(ev.PlanLimits)
}

// maxUtilization bounds a decodable utilization: the headers announce
// fractions of the limit (1 = used up), a little above 1 when a window
// overshoots; anything larger is corrupt.
const maxUtilization = 100

func checkLimits(l usage.PlanLimits) error {
	okUtil := func(has bool, u float64) bool { return !has || (u >= 0 && u <= maxUtilization) }
	okTime := func(t time.Time) bool { return t.IsZero() || (!t.Before(minTime) && t.Before(maxTime)) }
	switch {
	case !okUtil(l.Has5h, l.Utilization5h) || !okUtil(l.Has7d, l.Utilization7d):
		return errors.New("plan utilization out of range")
	case !okTime(l.Reset5h) || !okTime(l.Reset7d) || !okTime(l.Reset):
		return errors.New("plan reset out of range")
	case len(l.Status) > 32 || len(l.Claim) > 64:
		return errors.New("plan limit status or claim too long")
	}
	return nil
}
