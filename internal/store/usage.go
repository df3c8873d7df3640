package store

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/shopspring/decimal"
)

// UsageEvent is one request that reached an upstream.
type UsageEvent struct {
	// RequestID identifies the request; events are idempotent on it.
	RequestID string
	// EventTime is fixed by the producer, so a re-delivered event is equal.
	EventTime   time.Time
	UserID      uuid.UUID
	AccessKeyID uuid.UUID
	SessionID   string // x-claude-code-session-id
	AgentID     string // x-claude-code-agent-id
	// ParentAgentID is x-claude-code-parent-agent-id ('' when not sent).
	ParentAgentID string
	// AgentSpawns counts the answer's calls of Claude Code's subagent tool.
	AgentSpawns    int
	ClientVersion  string // from User-Agent
	Kind           RequestKind
	RequestedModel string
	BedrockModelID string
	Provider       Provider
	Region         string
	Fallback       bool
	FallbackReason string // e.g. plan_429, breaker_open
	Stream         bool
	// Status is the HTTP status returned; 0 when there was none.
	Status             int
	InputTokens        int64
	OutputTokens       int64
	CacheReadTokens    int64
	CacheWrite5mTokens int64
	CacheWrite1hTokens int64
	CostUSD            decimal.Decimal
	PriceFlag          PriceFlag
	// TTFTMs is the time to the first byte of the answer; nil when unknown.
	TTFTMs    *int
	LatencyMs int
	// Aborted is set when the client went away before the end.
	Aborted bool
	// BudgetAction is what a budget did to the request: "" (nothing),
	// downgrade (RequestedModel is the model served, OriginalModel the one
	// asked for) or plan_only (Bedrock was withheld).
	BudgetAction  string
	OriginalModel string
	// TeamID is the team the user was in when the request was served; nil
	// when in none.
	TeamID *uuid.UUID
}

// Validate checks what the schema would reject, so an ingester can set a
// malformed event aside instead of failing its whole batch.
func (e UsageEvent) Validate() error {
	switch {
	case e.RequestID == "" || len(e.RequestID) > 200:
		return invalidf("usage event request id %q", e.RequestID)
	case e.EventTime.IsZero():
		return invalidf("usage event %s: no event time", e.RequestID)
	case !e.Kind.Valid():
		return invalidf("usage event %s: kind %q", e.RequestID, e.Kind)
	case !e.Provider.Valid():
		return invalidf("usage event %s: provider %q", e.RequestID, e.Provider)
	case !e.PriceFlag.Valid():
		return invalidf("usage event %s: price flag %q", e.RequestID, e.PriceFlag)
	case e.Status < 0 || e.Status > 999:
		return invalidf("usage event %s: status %d", e.RequestID, e.Status)
	case e.InputTokens < 0 || e.OutputTokens < 0 || e.CacheReadTokens < 0 ||
		e.CacheWrite5mTokens < 0 || e.CacheWrite1hTokens < 0:
		return invalidf("usage event %s: negative token count", e.RequestID)
	case e.AgentSpawns < 0 || e.AgentSpawns > 32767:
		return invalidf("usage event %s: agent spawns %d", e.RequestID, e.AgentSpawns)
	case e.BudgetAction != "" && e.BudgetAction != BudgetDowngrade && e.BudgetAction != BudgetPlanOnly:
		return invalidf("usage event %s: budget action %q", e.RequestID, e.BudgetAction)
	case e.CostUSD.IsNegative():
		return invalidf("usage event %s: negative cost", e.RequestID)
	case e.LatencyMs < 0 || e.TTFTMs != nil && *e.TTFTMs < 0:
		return invalidf("usage event %s: negative duration", e.RequestID)
	}
	return nil
}

// Usage is the usage repository: events, rollups, partitions and queries.
type Usage struct{ q *Queries }

// Usage returns the usage repository.
func (q *Queries) Usage() Usage { return Usage{q} }

// insertChunk bounds the rows sent in one statement.
const insertChunk = 5000

// insertEventsSQL inserts a batch given as parallel arrays in one statement:
// the batch's first occurrence of each request id is offered to
// usage_dedupe; only the ids it accepts (never seen before, whatever their
// event_time) are inserted into usage_events and added to the rollups. A
// data-modifying CTE runs exactly once whether or not it is referenced, and
// the rollup upserts see only the rows this statement inserted, so replays
// and concurrent duplicates can never count twice.
//
// Rows reach the unique indexes in key order, so concurrent batches lock in
// the same order rather than deadlocking.
const insertEventsSQL = `
WITH input AS (
	SELECT * FROM unnest(
		$1::text[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bool[], $14::text[],
		$15::bool[], $16::int[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[],
		$21::bigint[], $22::numeric[], $23::text[], $24::int[], $25::int[], $26::bool[],
		$27::text[], $28::smallint[], $29::text[], $30::text[], $31::uuid[]
	) WITH ORDINALITY AS t(request_id, event_time, user_id, access_key_id, session_id, agent_id,
		client_version, kind, requested_model, bedrock_model_id, provider, region, fallback,
		fallback_reason, stream, status, input_tokens, output_tokens, cache_read_tokens,
		cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, price_flag, ttft_ms, latency_ms,
		aborted, parent_agent_id, agent_spawns, budget_action, original_model, team_id, ord)
),
firsts AS (
	SELECT DISTINCT ON (request_id) * FROM input ORDER BY request_id, ord
),
fresh AS (
	INSERT INTO usage_dedupe (request_id, event_time)
	SELECT request_id, event_time FROM firsts ORDER BY request_id
	ON CONFLICT DO NOTHING
	RETURNING request_id
),
ins AS (
	INSERT INTO usage_events (request_id, event_time, user_id, access_key_id, session_id, agent_id,
		client_version, kind, requested_model, bedrock_model_id, provider, region, fallback,
		fallback_reason, stream, status, input_tokens, output_tokens, cache_read_tokens,
		cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, price_flag, ttft_ms, latency_ms, aborted,
		parent_agent_id, agent_spawns, budget_action, original_model, team_id)
	SELECT f.request_id, f.event_time, f.user_id, f.access_key_id, f.session_id, f.agent_id,
		f.client_version, f.kind, f.requested_model, f.bedrock_model_id, f.provider, f.region, f.fallback,
		f.fallback_reason, f.stream, f.status, f.input_tokens, f.output_tokens, f.cache_read_tokens,
		f.cache_write_5m_tokens, f.cache_write_1h_tokens, f.cost_usd, f.price_flag, f.ttft_ms, f.latency_ms,
		f.aborted, f.parent_agent_id, f.agent_spawns, f.budget_action, f.original_model, f.team_id
	FROM firsts f JOIN fresh USING (request_id)
	ORDER BY f.event_time, f.request_id
	RETURNING request_id, event_time, user_id, access_key_id, requested_model, provider, fallback, status, aborted,
		input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd
),
hourly AS (
	INSERT INTO usage_hourly AS h (bucket, user_id, access_key_id, model, provider, requests,
		input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
		cost_usd, fallbacks, errors, aborted)
	SELECT date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
		user_id, access_key_id, requested_model, provider, count(*),
		sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens),
		sum(cache_write_1h_tokens), sum(cost_usd), count(*) FILTER (WHERE fallback),
		count(*) FILTER (WHERE status = 0 OR status >= 400), count(*) FILTER (WHERE aborted)
	FROM ins
	GROUP BY 2, 1, 3, 4, 5
	ORDER BY 2, 1, 3, 4, 5
	ON CONFLICT (user_id, bucket, access_key_id, model, provider) DO UPDATE SET
		requests = h.requests + EXCLUDED.requests,
		input_tokens = h.input_tokens + EXCLUDED.input_tokens,
		output_tokens = h.output_tokens + EXCLUDED.output_tokens,
		cache_read_tokens = h.cache_read_tokens + EXCLUDED.cache_read_tokens,
		cache_write_5m_tokens = h.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
		cache_write_1h_tokens = h.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
		cost_usd = h.cost_usd + EXCLUDED.cost_usd,
		fallbacks = h.fallbacks + EXCLUDED.fallbacks,
		errors = h.errors + EXCLUDED.errors,
		aborted = h.aborted + EXCLUDED.aborted
),
daily AS (
	INSERT INTO usage_daily AS d (bucket, user_id, access_key_id, model, provider, requests,
		input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
		cost_usd, fallbacks, errors, aborted)
	SELECT date_trunc('day', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
		user_id, access_key_id, requested_model, provider, count(*),
		sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens),
		sum(cache_write_1h_tokens), sum(cost_usd), count(*) FILTER (WHERE fallback),
		count(*) FILTER (WHERE status = 0 OR status >= 400), count(*) FILTER (WHERE aborted)
	FROM ins
	GROUP BY 2, 1, 3, 4, 5
	ORDER BY 2, 1, 3, 4, 5
	ON CONFLICT (user_id, bucket, access_key_id, model, provider) DO UPDATE SET
		requests = d.requests + EXCLUDED.requests,
		input_tokens = d.input_tokens + EXCLUDED.input_tokens,
		output_tokens = d.output_tokens + EXCLUDED.output_tokens,
		cache_read_tokens = d.cache_read_tokens + EXCLUDED.cache_read_tokens,
		cache_write_5m_tokens = d.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
		cache_write_1h_tokens = d.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
		cost_usd = d.cost_usd + EXCLUDED.cost_usd,
		fallbacks = d.fallbacks + EXCLUDED.fallbacks,
		errors = d.errors + EXCLUDED.errors,
		aborted = d.aborted + EXCLUDED.aborted
)
SELECT request_id FROM ins`

// eventColumns holds a chunk of events as the parallel arrays of
// insertEventsSQL.
type eventColumns struct {
	requestID, sessionID, agentID, clientVersion, kind, requestedModel, bedrockModelID,
	provider, region, fallbackReason, priceFlag []string
	eventTime                                            []time.Time
	userID, keyID                                        [][16]byte
	fallback, stream, aborted                            []bool
	status, latency                                      []int32
	ttft                                                 []*int32
	input, output, cacheRead, cacheWrite5m, cacheWrite1h []int64
	cost                                                 []decimal.Decimal
	parentAgentID                                        []string
	agentSpawns                                          []int16
	budgetAction, originalModel                          []string
	teamID                                               []pgtype.UUID
}

func newEventColumns(evs []UsageEvent) *eventColumns {
	n := len(evs)
	c := &eventColumns{
		requestID: make([]string, n), sessionID: make([]string, n), agentID: make([]string, n),
		clientVersion: make([]string, n), kind: make([]string, n), requestedModel: make([]string, n),
		bedrockModelID: make([]string, n), provider: make([]string, n), region: make([]string, n),
		fallbackReason: make([]string, n), priceFlag: make([]string, n), eventTime: make([]time.Time, n),
		userID: make([][16]byte, n), keyID: make([][16]byte, n), fallback: make([]bool, n),
		stream: make([]bool, n), aborted: make([]bool, n), status: make([]int32, n),
		latency: make([]int32, n), ttft: make([]*int32, n), input: make([]int64, n),
		output: make([]int64, n), cacheRead: make([]int64, n), cacheWrite5m: make([]int64, n),
		cacheWrite1h: make([]int64, n), cost: make([]decimal.Decimal, n),
		parentAgentID: make([]string, n), agentSpawns: make([]int16, n),
		budgetAction: make([]string, n), originalModel: make([]string, n),
		teamID: make([]pgtype.UUID, n),
	}
	ttfts := make([]int32, n)
	for i, e := range evs {
		c.requestID[i], c.eventTime[i], c.userID[i], c.keyID[i] = e.RequestID, e.EventTime, e.UserID, e.AccessKeyID
		c.sessionID[i], c.agentID[i], c.clientVersion[i] = e.SessionID, e.AgentID, e.ClientVersion
		c.kind[i], c.requestedModel[i], c.bedrockModelID[i] = string(e.Kind), e.RequestedModel, e.BedrockModelID
		c.provider[i], c.region[i], c.fallback[i], c.fallbackReason[i] = string(e.Provider), e.Region, e.Fallback, e.FallbackReason
		c.stream[i], c.status[i] = e.Stream, int32(e.Status)
		c.input[i], c.output[i], c.cacheRead[i] = e.InputTokens, e.OutputTokens, e.CacheReadTokens
		c.cacheWrite5m[i], c.cacheWrite1h[i] = e.CacheWrite5mTokens, e.CacheWrite1hTokens
		c.cost[i], c.priceFlag[i], c.latency[i], c.aborted[i] = e.CostUSD, string(e.PriceFlag), int32(e.LatencyMs), e.Aborted
		c.parentAgentID[i], c.agentSpawns[i] = e.ParentAgentID, int16(e.AgentSpawns)
		c.budgetAction[i], c.originalModel[i] = e.BudgetAction, e.OriginalModel
		if e.TeamID != nil {
			c.teamID[i] = pgtype.UUID{Bytes: *e.TeamID, Valid: true}
		}
		if e.TTFTMs != nil {
			ttfts[i] = int32(*e.TTFTMs)
			c.ttft[i] = &ttfts[i]
		}
	}
	return c
}

func (c *eventColumns) args() []any {
	return []any{c.requestID, c.eventTime, c.userID, c.keyID, c.sessionID, c.agentID, c.clientVersion,
		c.kind, c.requestedModel, c.bedrockModelID, c.provider, c.region, c.fallback, c.fallbackReason,
		c.stream, c.status, c.input, c.output, c.cacheRead, c.cacheWrite5m, c.cacheWrite1h, c.cost,
		c.priceFlag, c.ttft, c.latency, c.aborted, c.parentAgentID, c.agentSpawns, c.budgetAction, c.originalModel, c.teamID}
}

// InsertEvents stores a batch of events idempotently and updates the hourly
// and daily rollups for the events it stored, all in one transaction (a
// savepoint inside WithTx). It returns how many events were new: an event
// whose request id was stored before — in this batch, an earlier batch, or
// with a different event time — is skipped and counted nowhere. Every event
// must pass Validate, else nothing is stored. The monthly partitions the
// batch needs are created first.
func (u Usage) InsertEvents(ctx context.Context, events []UsageEvent) (int, error) {
	ids, err := u.InsertNewEvents(ctx, events)
	return len(ids), err
}

// InsertNewEvents is InsertEvents returning the request ids of the events
// that were new (in no particular order), for callers that account for them.
func (u Usage) InsertNewEvents(ctx context.Context, events []UsageEvent) ([]string, error) {
	if len(events) == 0 {
		return nil, nil
	}
	months := map[int64]time.Time{}
	for i := range events {
		if err := events[i].Validate(); err != nil {
			return nil, fmt.Errorf("store: insert usage events: event %d: %w", i, err)
		}
		m := monthStart(events[i].EventTime)
		months[m.Unix()] = m
	}
	for _, m := range months {
		if err := u.ensurePartition(ctx, m); err != nil {
			return nil, err
		}
	}
	chunks := make([]*eventColumns, 0, (len(events)+insertChunk-1)/insertChunk)
	for start := 0; start < len(events); start += insertChunk {
		chunks = append(chunks, newEventColumns(events[start:min(start+insertChunk, len(events))]))
	}
	var inserted []string
	run := func(q *Queries) error {
		inserted = inserted[:0]
		for _, c := range chunks {
			rows, err := q.db.Query(ctx, insertEventsSQL, c.args()...)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			inserted = append(inserted, ids...)
		}
		return nil
	}
	var err error
	// A deadlock between two ingesters is resolved by Postgres aborting one;
	// the aborted batch is simply run again. Inside a caller's transaction
	// the caller owns that decision.
	for attempt := 0; attempt < 3; attempt++ {
		err = u.q.tx(ctx, run)
		if err == nil || u.q.inTx || !isRetryable(err) {
			break
		}
	}
	if err != nil {
		return nil, mapErr("store: insert usage events", err)
	}
	return inserted, nil
}

// monthStart is the start of t's UTC month.
func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// ensurePartition creates the partition of month m unless this Store knows
// it exists. The DDL runs on its own pool connection, never in the caller's
// transaction, so its locks are held only for that statement.
func (u Usage) ensurePartition(ctx context.Context, m time.Time) error {
	st := u.q.state
	st.mu.Lock()
	known := st.partitions[m.Unix()]
	st.mu.Unlock()
	if known {
		return nil
	}
	if _, err := u.q.pool.Exec(ctx, `SELECT usage_ensure_partition($1)`, m); err != nil {
		return mapErr("store: ensure usage partition", err)
	}
	st.mu.Lock()
	st.partitions[m.Unix()] = true
	st.mu.Unlock()
	return nil
}

// EnsurePartitions creates the monthly partitions for t's month and the next
// one, if missing. The admin service calls it at start and daily, so a
// month's partition exists before its first event; InsertEvents also
// creates any it needs.
func (u Usage) EnsurePartitions(ctx context.Context, t time.Time) error {
	m := monthStart(t)
	for _, month := range []time.Time{m, m.AddDate(0, 1, 0)} {
		if err := u.ensurePartition(ctx, month); err != nil {
			return err
		}
	}
	return nil
}

var partitionName = regexp.MustCompile(`^usage_events_([0-9]{4})([0-9]{2})$`)

// Partitions lists the monthly partitions by month start, oldest first.
func (u Usage) Partitions(ctx context.Context) ([]time.Time, error) {
	names, err := u.partitionNames(ctx)
	if err != nil {
		return nil, err
	}
	months := make([]time.Time, 0, len(names))
	for _, n := range names {
		months = append(months, n.month)
	}
	return months, nil
}

type partition struct {
	name  string
	month time.Time
}

func (u Usage) partitionNames(ctx context.Context) ([]partition, error) {
	rows, err := u.q.db.Query(ctx, `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'usage_events'::regclass`)
	if err != nil {
		return nil, mapErr("store: list usage partitions", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr("store: list usage partitions", err)
	}
	var out []partition
	for _, n := range names {
		m := partitionName.FindStringSubmatch(n)
		if m == nil {
			continue // the default partition
		}
		y, _ := strconv.Atoi(m[1])
		mo, _ := strconv.Atoi(m[2])
		out = append(out, partition{name: n, month: time.Date(y, time.Month(mo), 1, 0, 0, 0, 0, time.UTC)})
	}
	slices.SortFunc(out, func(a, b partition) int { return a.month.Compare(b.month) })
	return out, nil
}

// DropPartitionsBefore is the retention job: it drops every monthly
// partition that ends at or before the start of t's UTC month, deletes older
// rows from the default partition, and forgets their request ids in
// usage_dedupe, in one transaction. The rollups are kept. It returns the
// months dropped.
func (u Usage) DropPartitionsBefore(ctx context.Context, t time.Time) ([]time.Time, error) {
	boundary := monthStart(t)
	var dropped []time.Time
	err := u.q.tx(ctx, func(q *Queries) error {
		parts, err := q.Usage().partitionNames(ctx)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if !p.month.Before(boundary) {
				break
			}
			if _, err := q.db.Exec(ctx, `DROP TABLE `+pgx.Identifier{p.name}.Sanitize()); err != nil {
				return err
			}
			dropped = append(dropped, p.month)
		}
		if _, err := q.db.Exec(ctx, `DELETE FROM usage_events_default WHERE event_time < $1`, boundary); err != nil {
			return err
		}
		_, err = q.db.Exec(ctx, `DELETE FROM usage_dedupe WHERE event_time < $1`, boundary)
		return err
	})
	if err != nil {
		return nil, mapErr("store: drop usage partitions", err)
	}
	st := u.q.state
	st.mu.Lock()
	for _, m := range dropped {
		delete(st.partitions, m.Unix())
	}
	st.mu.Unlock()
	return dropped, nil
}
