// Package ingest is the admin service's usage ingester: the handler that
// the usage stream's consumer (internal/usagestream) hands batches of
// usage events to. For each batch it
//
//   - converts the events to usage rows, shortening over-long free text and
//     removing NUL bytes so that no event can make a batch unstorable;
//   - prices them from the rate card (store.Prices().PriceAt) by provider,
//     region and model at the event time: a model without a price of its
//     own is priced by its family or the provider default and flagged,
//     never at $0; count_tokens rows are unpriced; costs are exact
//     decimals rounded to 6 places;
//   - stores them with store.Usage().InsertNewEvents, idempotent on the
//     request id (a redelivered event is skipped and counted as a
//     duplicate), rollups included, in one transaction;
//   - records when each access key of the batch was last used
//     (store.AccessKeys().TouchLastUsed): one statement per batch, so the
//     key's last_used_at costs no database write per request;
//   - records the Plan headroom readings the events carry (the
//     anthropic-ratelimit-unified-* state of Plan answers) in
//     plan_headroom, one statement per batch, at most one row per user and
//     5-minute bucket (store.Headroom().Record);
//   - for every user with Bedrock rows in the batch, recomputes the exact
//     Bedrock spend of the current billing month and of the events' billing
//     months (store.Usage().MonthlySpend, billing time zone) and SETs the
//     Redis counter <prefix>spend:<user>:<YYYY-MM> that extproc's budget
//     check reads (internal/billing);
//   - for every budget the batch's keys, users and their teams have
//     (docs/budgets.md), recomputes the exact spend of the current window
//     and of the events' windows and SETs its Redis counter
//     <prefix>budget:<scope>:<subject>:<metric>:<window>:<start>, then
//     records each threshold crossed in budget_alerts and queues one
//     budget.threshold notification per budget, window and threshold;
//   - for events showing that Bedrock refused the gateway's credential,
//     queues a credential.refused notification (admin/notifications), at
//     most one per credential per hour.
//
// An error leaves the batch unacknowledged; the consumer delivers it again
// and the idempotent insert makes the retry safe.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/notifications"
	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/observability/telemetry"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// MaxTextLen bounds the free-text columns of a usage row (session and agent
// ids, client version, models, region, fallback reason): longer values are
// cut at a character boundary. Claude Code's values are far shorter; the
// bound keeps a hostile header from failing the indexes.
const MaxTextLen = 512

// Options configures an Ingester.
type Options struct {
	// Store is where rows go. Required.
	Store *store.Store
	// Redis receives the spend counters. Required.
	Redis redis.UniversalClient
	// Prefix starts the counter keys (CCPROXY_REDIS_PREFIX).
	Prefix string
	// Location is the billing time zone; nil means UTC.
	Location *time.Location
	// Now is the clock that decides the current billing month; nil means
	// time.Now.
	Now func() time.Time
	// EMF, when set, receives the metrics of every newly stored event as
	// CloudWatch embedded-metric lines (CCPROXY_CLOUDWATCH_EMF), under the
	// same bounded model names as the Prometheus metrics.
	EMF *emf.Writer
	// OTel, when set, receives the same metrics as OpenTelemetry
	// instruments (CCPROXY_OTEL_EXPORTER).
	OTel *telemetry.RequestMetrics
	// Logger receives the ingester's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the ingester's metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// OnNotify, when set, is called after a batch queued a notification
	// (it wakes the local webhook dispatcher).
	OnNotify func()
}

// Ingester commits usage batches; Handle is its usagestream.Handler.
type Ingester struct {
	st  *store.Store
	rdb redis.UniversalClient
	opt Options
	log *slog.Logger
	m   *metrics
}

type metrics struct {
	events      *prometheus.CounterVec
	tokens      *prometheus.CounterVec
	modelTokens *prometheus.CounterVec
	cost        *prometheus.CounterVec
	duplicates  prometheus.Counter
	rejected    prometheus.Counter
	unpriced    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_events_ingested_total",
			Help: "Usage events stored in Postgres (duplicates excluded), by provider and model (\"other\" for models without a price of their own).",
		}, []string{"provider", "model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_tokens_total",
			Help: "Tokens of the stored usage events, by provider and kind (input, output, cache_read, cache_write_5m, cache_write_1h).",
		}, []string{"provider", "kind"}),
		modelTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_model_tokens_total",
			Help: "Tokens of the stored usage events, by provider, model (\"other\" for models without a price of their own) and kind (input, output, cache_read, cache_write_5m, cache_write_1h).",
		}, []string{"provider", "model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_cost_usd_total",
			Help: "Cost in USD of the stored usage events (Bedrock: spend; anthropic: list-price equivalent of Plan usage), by provider and model.",
		}, []string{"provider", "model"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_duplicates_total",
			Help: "Usage events skipped because their request id was already stored (redeliveries).",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_rejected_total",
			Help: "Usage events that could not be stored as rows (logged with their request id).",
		}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_usage_fallback_priced_total",
			Help: "Usage events priced without a price row for their model, by how (family or default).",
		}, []string{"flag"}),
	}
	for _, c := range []prometheus.Collector{m.events, m.tokens, m.modelTokens, m.cost, m.duplicates, m.rejected, m.unpriced} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// New returns an Ingester.
func New(opts Options) (*Ingester, error) {
	if opts.Store == nil || opts.Redis == nil {
		return nil, errors.New("ingest: Options.Store and Options.Redis are required")
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	return &Ingester{st: opts.Store, rdb: opts.Redis, opt: opts, log: opts.Logger, m: m}, nil
}

// Handle stores a batch, records its keys' last use and refreshes the spend
// counters of its Bedrock users. It returns nil only when all are done.
func (in *Ingester) Handle(ctx context.Context, events []usage.Event) error {
	rows := make([]store.UsageEvent, 0, len(events))
	known := make([]bool, 0, len(events)) // the model has a price row of its own
	pr := pricer{st: in.st}
	for _, ev := range events {
		row := ToStoreEvent(ev)
		exact, err := pr.price(ctx, &row)
		if err != nil {
			return fmt.Errorf("ingest: price %s: %w", row.RequestID, err)
		}
		if err := row.Validate(); err != nil {
			// The stream decoder refuses what the schema would; this is a
			// safety net that keeps one event from blocking the stream.
			in.m.rejected.Inc()
			in.log.Error("usage event cannot be stored; skipped", "request_id", ev.RequestID, "err", err)
			continue
		}
		if row.PriceFlag == store.PriceFamily || row.PriceFlag == store.PriceDefault {
			in.m.unpriced.WithLabelValues(string(row.PriceFlag)).Inc()
		}
		rows = append(rows, row)
		known = append(known, exact)
	}
	newIDs, err := in.st.Usage().InsertNewEvents(ctx, rows)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	in.account(ctx, rows, known, newIDs)
	if err := in.notifyRefusedCredentials(ctx, events); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	// Every row, not only the new ones: a batch retried after a failed
	// touch still moves last_used_at (which only ever moves forward).
	uses := make([]store.KeyUse, len(rows))
	for i := range rows {
		uses[i] = store.KeyUse{ID: rows[i].AccessKeyID, At: rows[i].EventTime}
	}
	if err := in.st.AccessKeys().TouchLastUsed(ctx, uses); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := in.st.Headroom().Record(ctx, HeadroomSamples(events)); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := in.refreshSpend(ctx, rows); err != nil {
		return err
	}
	return in.refreshBudgets(ctx, rows)
}

// HeadroomSamples returns the Plan headroom readings of a batch: one per
// event that carried subscription rate-limit headers (store.Headroom
// keeps the newest per user and 5-minute bucket).
func HeadroomSamples(events []usage.Event) []store.HeadroomSample {
	var out []store.HeadroomSample
	for _, ev := range events {
		l := ev.PlanLimits
		if !l.Present() || ev.UserID == uuid.Nil {
			continue
		}
		s := store.HeadroomSample{
			UserID: ev.UserID, AccessKeyID: ev.KeyID, SampledAt: ev.Time.UTC(),
			Status: clean(l.Status, 32), Claim: clean(l.Claim, 64),
			Reset5h: timePtr(l.Reset5h), Reset7d: timePtr(l.Reset7d), ResetAt: timePtr(l.Reset),
		}
		if l.Has5h {
			u := l.Utilization5h
			s.Utilization5h = &u
		}
		if l.Has7d {
			u := l.Utilization7d
			s.Utilization7d = &u
		}
		out = append(out, s)
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// notifyRefusedCredentials queues credential.refused for the events that
// say Bedrock refused the gateway's credential: one per credential and UTC
// hour of the events (the outbox's dedupe key), so a burst of refused
// requests, a redelivered batch or several replicas send one notification.
// Every event of the batch is considered, not only the new ones: a batch
// retried after a failed enqueue still notifies.
func (in *Ingester) notifyRefusedCredentials(ctx context.Context, events []usage.Event) error {
	seen := map[string]bool{}
	queuedAny := false
	for _, ev := range events {
		if ev.RejectedCredentialID == uuid.Nil {
			continue
		}
		hour := ev.Time.UTC().Truncate(time.Hour)
		key := notifications.TypeCredentialRefused + ":" + ev.RejectedCredentialID.String() + ":" + hour.Format("2006010215")
		if seen[key] {
			continue
		}
		seen[key] = true
		data := map[string]any{"credential_id": ev.RejectedCredentialID.String(), "user_id": ev.UserID.String(),
			"access_key_id": ev.KeyID.String(), "region": ev.Region, "request_id": ev.RequestID, "model": ev.Model}
		who := ev.UserID.String()
		if u, err := in.st.Users().Get(ctx, ev.UserID); err == nil {
			data["user_name"] = u.Name
			who = u.Name
		}
		_, queued, err := notifications.Enqueue(ctx, in.st, notifications.Event{
			Type: notifications.TypeCredentialRefused, DedupeKey: key, OccurredAt: ev.Time, Data: data,
			Summary: "AWS Bedrock refused the gateway's Bedrock credential " + ev.RejectedCredentialID.String() +
				" (region " + ev.Region + ") used for " + who + ": their Bedrock requests fail until an administrator fixes it",
		})
		if err != nil {
			return err
		}
		queuedAny = queuedAny || queued
	}
	if queuedAny && in.opt.OnNotify != nil {
		in.opt.OnNotify()
	}
	return nil
}

// account updates the metrics for the rows that were new.
func (in *Ingester) account(ctx context.Context, rows []store.UsageEvent, known []bool, newIDs []string) {
	fresh := make(map[string]bool, len(newIDs))
	for _, id := range newIDs {
		fresh[id] = true
	}
	if dup := len(rows) - len(newIDs); dup > 0 {
		in.m.duplicates.Add(float64(dup))
	}
	var reqs []emf.Request
	for i := range rows {
		r := &rows[i]
		if !fresh[r.RequestID] {
			continue
		}
		delete(fresh, r.RequestID) // a second copy in the batch is a duplicate
		provider := string(r.Provider)
		model := "other"
		if known[i] {
			model = r.RequestedModel
		}
		in.m.events.WithLabelValues(provider, model).Inc()
		for kind, n := range map[string]int64{
			"input": r.InputTokens, "output": r.OutputTokens, "cache_read": r.CacheReadTokens,
			"cache_write_5m": r.CacheWrite5mTokens, "cache_write_1h": r.CacheWrite1hTokens,
		} {
			if n > 0 {
				in.m.tokens.WithLabelValues(provider, kind).Add(float64(n))
				in.m.modelTokens.WithLabelValues(provider, model, kind).Add(float64(n))
			}
		}
		if !r.CostUSD.IsZero() {
			in.m.cost.WithLabelValues(provider, model).Add(r.CostUSD.InexactFloat64())
		}
		if in.opt.EMF != nil || in.opt.OTel != nil {
			req := EMFRequest(r, model)
			in.opt.OTel.Record(ctx, req)
			if in.opt.EMF != nil {
				reqs = append(reqs, req)
			}
		}
	}
	if err := in.opt.EMF.Requests(ctx, reqs); err != nil {
		in.log.Warn("writing CloudWatch EMF metrics failed", "requests", len(reqs), "err", err)
	}
}

// EMFRequest is the CloudWatch metrics of a stored usage row, under the
// bounded model name model.
func EMFRequest(r *store.UsageEvent, model string) emf.Request {
	req := emf.Request{
		Provider: string(r.Provider), Model: model, Status: r.Status, Stream: r.Stream,
		Latency: time.Duration(r.LatencyMs) * time.Millisecond,
		Input:   r.InputTokens, Output: r.OutputTokens, CacheRead: r.CacheReadTokens,
		CacheWrite5m: r.CacheWrite5mTokens, CacheWrite1h: r.CacheWrite1hTokens,
		CostUSD: r.CostUSD, UserID: r.UserID.String(),
	}
	if r.TTFTMs != nil {
		req.TTFT, req.HasTTFT = time.Duration(*r.TTFTMs)*time.Millisecond, true
	}
	if r.Fallback {
		req.FallbackReason = r.FallbackReason
		if req.FallbackReason == "" {
			req.FallbackReason = "unknown"
		}
	}
	return req
}

// refreshSpend recomputes from Postgres, and SETs in Redis, the Bedrock
// spend of every user with Bedrock rows in the batch, for the current
// billing month and each month the rows fall in. It does so for
// duplicates too, so that a retried batch repairs a counter that a failed
// SET left stale.
func (in *Ingester) refreshSpend(ctx context.Context, rows []store.UsageEvent) error {
	type userMonth struct {
		user  uuid.UUID
		month string
	}
	current := billing.MonthKey(in.opt.Now(), in.opt.Location)
	todo := map[userMonth]billing.Month{}
	for i := range rows {
		r := &rows[i]
		if r.Provider != store.ProviderBedrock {
			continue
		}
		m := billing.MonthOf(r.EventTime, in.opt.Location)
		todo[userMonth{r.UserID, m.Key}] = m
		if _, ok := todo[userMonth{r.UserID, current}]; !ok {
			todo[userMonth{r.UserID, current}] = billing.MonthOf(in.opt.Now(), in.opt.Location)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	// One query per month (usually one) for all the batch's users.
	type monthUsers struct {
		m     billing.Month
		users []uuid.UUID
	}
	byMonth := map[string]*monthUsers{}
	for um, m := range todo {
		mu := byMonth[um.month]
		if mu == nil {
			mu = &monthUsers{m: m}
			byMonth[um.month] = mu
		}
		mu.users = append(mu.users, um.user)
	}
	pipe := in.rdb.Pipeline()
	for key, mu := range byMonth {
		spends, err := in.st.Usage().MonthlySpends(ctx, mu.users, store.ProviderBedrock, mu.m.Start, mu.m.End)
		if err != nil {
			return fmt.Errorf("ingest: monthly spend in %s: %w", key, err)
		}
		for _, user := range mu.users {
			pipe.Set(ctx, billing.SpendKey(in.opt.Prefix, user, key), billing.FormatSpend(spends[user]), billing.SpendTTL)
		}
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		for _, c := range cmds {
			if err = c.Err(); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("ingest: set spend counters: %w", err)
	}
	return nil
}

// ToStoreEvent converts a usage event to a usage row, unpriced. Free-text
// fields lose NUL bytes (Postgres text cannot hold them) and are cut to
// MaxTextLen bytes.
func ToStoreEvent(ev usage.Event) store.UsageEvent {
	out := store.UsageEvent{
		RequestID:          clean(ev.RequestID, 200),
		EventTime:          ev.Time.UTC(),
		UserID:             ev.UserID,
		AccessKeyID:        ev.KeyID,
		SessionID:          clean(ev.SessionID, MaxTextLen),
		AgentID:            clean(ev.AgentID, MaxTextLen),
		ParentAgentID:      clean(ev.ParentAgentID, MaxTextLen),
		AgentSpawns:        ev.AgentSpawns,
		ClientVersion:      clean(ev.ClientVersion, MaxTextLen),
		Kind:               store.RequestKind(ev.PathKind),
		RequestedModel:     clean(ev.Model, MaxTextLen),
		BedrockModelID:     clean(ev.BackendModel, MaxTextLen),
		Provider:           store.Provider(ev.Provider),
		Region:             clean(ev.Region, MaxTextLen),
		Fallback:           ev.Fallback,
		FallbackReason:     clean(ev.FallbackReason, MaxTextLen),
		Stream:             ev.Stream,
		Status:             ev.Status,
		InputTokens:        ev.Usage.InputTokens,
		OutputTokens:       ev.Usage.OutputTokens,
		CacheReadTokens:    ev.Usage.CacheReadInputTokens,
		CacheWrite5mTokens: ev.Usage.CacheWrite5mInputTokens,
		CacheWrite1hTokens: ev.Usage.CacheWrite1hInputTokens,
		LatencyMs:          int(ev.Latency.Milliseconds()),
		Aborted:            ev.Aborted,
		BudgetAction:       ev.BudgetAction,
		OriginalModel:      clean(ev.OriginalModel, MaxTextLen),
	}
	if ev.TTFT > 0 {
		ms := int(ev.TTFT.Milliseconds())
		out.TTFTMs = &ms
	}
	if ev.TeamID != uuid.Nil {
		team := ev.TeamID
		out.TeamID = &team
	}
	return out
}

// clean removes NUL bytes and invalid UTF-8 from s and cuts it to at most
// n bytes at a character boundary.
func clean(s string, n int) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Cost is the exact cost of a row's tokens at rates given per million
// tokens, rounded to 6 decimal places (pricing.Cost).
func Cost(r store.PriceRates, ev *store.UsageEvent) decimal.Decimal {
	return pricing.Cost(r, pricing.Tokens{Input: ev.InputTokens, Output: ev.OutputTokens, CacheRead: ev.CacheReadTokens,
		CacheWrite5m: ev.CacheWrite5mTokens, CacheWrite1h: ev.CacheWrite1hTokens})
}

// pricer prices the rows of one batch, remembering each lookup for the
// time range its price row is effective in.
type pricer struct {
	st    *store.Store
	cache map[priceKey][]cachedPrice
}

type priceKey struct {
	provider      store.Provider
	region, model string
}

type cachedPrice struct {
	// from and to are the price row's effective window; without a row
	// (pricing.Fallback) from is zero and the lookup holds only for at.
	from  time.Time
	to    *time.Time
	at    time.Time
	rates store.PriceRates
	flag  store.PriceFlag
}

func (c cachedPrice) covers(t time.Time) bool {
	if c.from.IsZero() {
		return t.Equal(c.at)
	}
	return !t.Before(c.from) && (c.to == nil || t.Before(*c.to))
}

// price sets the row's cost and price flag (count_tokens rows are
// unpriced) and reports whether the model has a price row of its own.
func (p *pricer) price(ctx context.Context, row *store.UsageEvent) (bool, error) {
	c, err := p.find(ctx, row)
	if err != nil {
		return false, err
	}
	if row.Kind == store.KindCountTokens {
		row.PriceFlag, row.CostUSD = store.PriceNone, decimal.Zero
	} else {
		row.PriceFlag, row.CostUSD = c.flag, Cost(c.rates, row)
	}
	return c.flag == store.PriceExact, nil
}

// find returns the price of the row's model, provider and region at its
// time.
func (p *pricer) find(ctx context.Context, row *store.UsageEvent) (cachedPrice, error) {
	key := priceKey{row.Provider, row.Region, row.RequestedModel}
	if c, ok := p.cached(key, row.EventTime); ok {
		return c, nil
	}
	c, err := p.lookup(ctx, key, row.EventTime)
	if err != nil {
		return cachedPrice{}, err
	}
	if p.cache == nil {
		p.cache = map[priceKey][]cachedPrice{}
	}
	p.cache[key] = append(p.cache[key], c)
	return c, nil
}

// RateFinder finds the rates usage rows are priced at, exactly as the
// ingester prices them (the model's own price, its family's, the
// provider's default, then pricing.Fallback()), remembering each price for the
// time range it is effective in. Analyses that split a row's cost into its
// parts (prompt-cache economics) use it. Not safe for concurrent use.
type RateFinder struct{ p pricer }

// NewRateFinder returns a RateFinder reading prices from st.
func NewRateFinder(st *store.Store) *RateFinder { return &RateFinder{p: pricer{st: st}} }

// Rates returns the rates row is priced at. A price changed after the row
// was stored (a correction of the rate card) gives the corrected rates,
// while the row keeps the cost it was stored with.
func (f *RateFinder) Rates(ctx context.Context, row *store.UsageEvent) (store.PriceRates, error) {
	r, _, err := f.Price(ctx, row)
	return r, err
}

// Price returns the rates row is priced at and the kind of price row they
// come from (store.PriceDefault for pricing.Fallback), whatever the row's
// kind: a count_tokens row is stored unpriced.
func (f *RateFinder) Price(ctx context.Context, row *store.UsageEvent) (store.PriceRates, store.PriceFlag, error) {
	c, err := f.p.find(ctx, row)
	if err != nil {
		return store.PriceRates{}, store.PriceNone, fmt.Errorf("ingest: price of %s: %w", row.RequestID, err)
	}
	return c.rates, c.flag, nil
}

func (p *pricer) cached(key priceKey, at time.Time) (cachedPrice, bool) {
	for _, c := range p.cache[key] {
		if c.covers(at) {
			return c, true
		}
	}
	return cachedPrice{}, false
}

// lookup finds the price of a model: its own row or its mapping's family
// first; then, for a model the mappings do not know, the family its name
// says (claude-opus-9 → opus); then the provider default; then
// pricing.Fallback().
func (p *pricer) lookup(ctx context.Context, k priceKey, at time.Time) (cachedPrice, error) {
	q := store.PriceQuery{Provider: k.provider, Region: k.region, Model: k.model, At: at}
	pr, flag, err := p.st.Prices().PriceAt(ctx, q)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return cachedPrice{}, err
	}
	found := err == nil
	if (!found || flag == store.PriceDefault) && pricing.FamilyOf(k.model) != "" {
		q.Family = pricing.FamilyOf(k.model)
		fp, fflag, ferr := p.st.Prices().PriceAt(ctx, q)
		switch {
		case ferr == nil && fflag != store.PriceDefault:
			pr, flag, found = fp, fflag, true
		case ferr != nil && !errors.Is(ferr, store.ErrNotFound):
			return cachedPrice{}, ferr
		}
	}
	if !found {
		return cachedPrice{at: at, rates: pricing.Fallback(), flag: store.PriceDefault}, nil
	}
	return cachedPrice{from: pr.EffectiveFrom, to: pr.EffectiveTo, rates: pr.PriceRates, flag: flag}, nil
}
