package admin

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/ingest"
	"github.com/ccproxy/ccproxy/internal/billing"
	"github.com/ccproxy/ccproxy/internal/headroom"
	"github.com/ccproxy/ccproxy/internal/pricing"
	"github.com/ccproxy/ccproxy/internal/store"
)

// Plan headroom (the subscription rate-limit state Plan answers announce)
// and seat economics (what each developer's month is worth against their
// seat). docs/dashboard.md spells out the forecast method and the
// recommendation rule.

func (s *Server) headroomRoutes(authed func(string, http.HandlerFunc)) {
	authed("GET /api/v1/users/{id}/headroom", s.handleUserHeadroom)
	authed("GET /api/v1/headroom", s.handleHeadroom)
	authed("GET /api/v1/seats", s.handleSeats)
}

// DefaultSeatPrices are the monthly list prices of the subscription seats
// (USD) when CCPROXY_SEAT_PRICES does not set them; an API seat has no
// price of its own (its traffic is its cost).
func DefaultSeatPrices() map[store.SeatType]decimal.Decimal {
	return map[store.SeatType]decimal.Decimal{
		store.SeatPro:    decimal.NewFromInt(20),
		store.SeatMax5x:  decimal.NewFromInt(100),
		store.SeatMax20x: decimal.NewFromInt(200),
		store.SeatAPI:    decimal.Zero,
	}
}

// seatPrices returns DefaultSeatPrices overridden by set.
func seatPrices(set map[store.SeatType]decimal.Decimal) map[store.SeatType]decimal.Decimal {
	out := DefaultSeatPrices()
	for k, v := range set {
		out[k] = v
	}
	return out
}

// maxHeadroomRange bounds a headroom history request: samples are kept for
// store.HeadroomRetention anyway.
const maxHeadroomRange = 35 * 24 * time.Hour

type headroomSampleJSON struct {
	SampledAt     time.Time  `json:"sampled_at"`
	Status        string     `json:"status"`
	Claim         string     `json:"claim"`
	Utilization5h *float64   `json:"utilization_5h"`
	Reset5h       *time.Time `json:"reset_5h"`
	Utilization7d *float64   `json:"utilization_7d"`
	Reset7d       *time.Time `json:"reset_7d"`
	ResetAt       *time.Time `json:"reset_at"`
}

func toSample(h store.HeadroomSample) headroomSampleJSON {
	utc := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		v := t.UTC()
		return &v
	}
	return headroomSampleJSON{SampledAt: h.SampledAt.UTC(), Status: h.Status, Claim: h.Claim,
		Utilization5h: h.Utilization5h, Reset5h: utc(h.Reset5h), Utilization7d: h.Utilization7d,
		Reset7d: utc(h.Reset7d), ResetAt: utc(h.ResetAt)}
}

type forecastJSON struct {
	Window      string     `json:"window"`
	Utilization float64    `json:"utilization"`
	Headroom    float64    `json:"headroom"`
	ResetAt     *time.Time `json:"reset_at"`
	BurnPerHour *float64   `json:"burn_per_hour"`
	LimitAt     *time.Time `json:"limit_at"`
	BeforeReset bool       `json:"limit_before_reset"`
}

type userHeadroomJSON struct {
	UserID uuid.UUID `json:"user_id"`
	// PreemptThreshold is the user's own pre-emptive failover threshold;
	// null means the gateway's default (CCPROXY_PREEMPT_THRESHOLD).
	PreemptThreshold *float64             `json:"preempt_threshold"`
	Current          *headroomSampleJSON  `json:"current"`
	Forecasts        []forecastJSON       `json:"forecasts"`
	History          []headroomSampleJSON `json:"history"`
	From             time.Time            `json:"from"`
	To               time.Time            `json:"to"`
}

func (s *Server) handleUserHeadroom(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var errs []fieldError
	_, _, from, to := s.usageFilters(r, &errs, false)
	if to.IsZero() {
		to = s.now().UTC().Add(time.Minute)
	}
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	if len(errs) == 0 && to.Sub(from) > maxHeadroomRange {
		errs = append(errs, fieldError{Field: "from", Message: "the range must not exceed 35 days"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	u, err := s.st.Users().Get(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	hist, err := s.st.Headroom().History(r.Context(), id, from, to)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := userHeadroomJSON{UserID: id, PreemptThreshold: u.PreemptThreshold, From: from, To: to,
		History: make([]headroomSampleJSON, len(hist)), Forecasts: []forecastJSON{}}
	for i, h := range hist {
		out.History[i] = toSample(h)
	}
	latest, err := s.st.Headroom().Latest(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		s.storeError(w, r, err)
		return
	default:
		cur := toSample(latest)
		out.Current = &cur
		// The forecast reads the recent readings up to the newest, whatever
		// range the history shows.
		recent, err := s.st.Headroom().History(r.Context(), id, latest.SampledAt.Add(-headroom.Lookback-store.HeadroomBucket), latest.SampledAt.Add(time.Second))
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		for _, win := range []string{headroom.Window5h, headroom.Window7d} {
			if f, ok := headroom.ForWindow(recent, win); ok {
				out.Forecasts = append(out.Forecasts, forecastJSON{Window: f.Window, Utilization: f.Utilization, Headroom: f.Headroom,
					ResetAt: f.ResetAt, BurnPerHour: f.BurnPerHour, LimitAt: f.LimitAt, BeforeReset: f.BeforeReset})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type fleetHeadroomJSON struct {
	UserID           uuid.UUID `json:"user_id"`
	Name             string    `json:"name"`
	Email            *string   `json:"email"`
	PreemptThreshold *float64  `json:"preempt_threshold"`
	headroomSampleJSON
}

// fleetHeadroomSince is how old a developer's newest reading may be to be
// listed by GET /headroom.
const fleetHeadroomSince = 7 * 24 * time.Hour

// handleHeadroom lists every developer's newest reading of the last 7
// days, the closest to a limit (highest 5-hour utilization) first.
func (s *Server) handleHeadroom(w http.ResponseWriter, r *http.Request) {
	latest, err := s.st.Headroom().LatestAll(r.Context(), s.now().Add(-fleetHeadroomSince))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	ids := make([]uuid.UUID, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	users, err := s.st.Users().UsersByID(r.Context(), ids)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	items := make([]fleetHeadroomJSON, 0, len(latest))
	for id, h := range latest {
		u, ok := users[id]
		if !ok || u.DeletedAt != nil {
			continue
		}
		items = append(items, fleetHeadroomJSON{UserID: id, Name: u.Name, Email: u.Email, PreemptThreshold: u.PreemptThreshold,
			headroomSampleJSON: toSample(h)})
	}
	util := func(f *float64) float64 {
		if f == nil {
			return -1
		}
		return *f
	}
	slices.SortFunc(items, func(a, b fleetHeadroomJSON) int {
		if ua, ub := util(a.Utilization5h), util(b.Utilization5h); ua != ub {
			return cmp.Compare(ub, ua)
		}
		return strings.Compare(a.UserID.String(), b.UserID.String())
	})
	writeJSON(w, http.StatusOK, page[fleetHeadroomJSON]{Items: items})
}

type seatJSON struct {
	UserID uuid.UUID `json:"user_id"`
	Name   string    `json:"name"`
	Email  *string   `json:"email"`
	// SeatType and SeatPriceUSD are null when no seat is recorded.
	SeatType     *string `json:"seat_type"`
	SeatPriceUSD *string `json:"seat_price_usd"`
	// PlanListUSD is the month's Plan traffic at Anthropic's list prices;
	// BedrockUSD the month's Bedrock spend; BedrockEquivalentUSD all of the
	// month's traffic (Plan's too) at Bedrock's prices.
	PlanListUSD          string `json:"plan_list_usd"`
	BedrockUSD           string `json:"bedrock_usd"`
	BedrockEquivalentUSD string `json:"bedrock_equivalent_usd"`
	Requests             int64  `json:"requests"`
	Fallbacks            int64  `json:"fallbacks"`
	// Recommendation is keep, upgrade, downgrade, switch or set_seat;
	// RecommendedSeat the seat it points to (null for keep and set_seat);
	// Reason says which rule fired, in words.
	Recommendation  string  `json:"recommendation"`
	RecommendedSeat *string `json:"recommended_seat"`
	Reason          string  `json:"reason"`
}

type seatsJSON struct {
	Month    string                    `json:"month"`
	From     time.Time                 `json:"from"`
	To       time.Time                 `json:"to"`
	Prices   map[store.SeatType]string `json:"seat_prices_usd"`
	Items    []seatJSON                `json:"items"`
	Timezone string                    `json:"timezone"`
}

// handleSeats is seat economics for one billing month (month=YYYY-MM,
// default the current one): every developer with usage in it or a seat
// recorded.
func (s *Server) handleSeats(w http.ResponseWriter, r *http.Request) {
	m := billing.MonthOf(s.now(), s.loc)
	if v := r.URL.Query().Get("month"); v != "" {
		pm, err := billing.ParseMonth(v, s.loc)
		if err != nil {
			s.invalid(w, r, []fieldError{{Field: "month", Message: "must be a month such as 2026-12"}})
			return
		}
		m = pm
	}
	ctx := r.Context()
	rows, err := s.st.Usage().UserModelTokens(ctx, m.Start, m.End)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	at := m.End.Add(-time.Second)
	if now := s.now(); now.Before(at) {
		at = now
	}
	rates := map[string]store.PriceRates{}
	type acc struct {
		plan, bedrock, equivalent decimal.Decimal
		requests, fallbacks       int64
	}
	byUser := map[uuid.UUID]*acc{}
	for _, row := range rows {
		a := byUser[row.UserID]
		if a == nil {
			a = &acc{}
			byUser[row.UserID] = a
		}
		a.requests += row.Requests
		a.fallbacks += row.Fallbacks
		a.plan = a.plan.Add(row.PlanCostUSD)
		a.bedrock = a.bedrock.Add(row.BedrockCostUSD)
		if row.Provider == store.ProviderBedrock {
			a.equivalent = a.equivalent.Add(row.BedrockCostUSD)
			continue
		}
		rt, ok := rates[row.Model]
		if !ok {
			if rt, err = s.bedrockRates(ctx, row.Model, at); err != nil {
				s.storeError(w, r, err)
				return
			}
			rates[row.Model] = rt
		}
		a.equivalent = a.equivalent.Add(ingest.Cost(rt, &store.UsageEvent{InputTokens: row.InputTokens, OutputTokens: row.OutputTokens,
			CacheReadTokens: row.CacheReadTokens, CacheWrite5mTokens: row.CacheWrite5mTokens, CacheWrite1hTokens: row.CacheWrite1hTokens}))
	}
	// Developers with a seat but no usage are listed too: an unused seat is
	// the clearest case for a downgrade.
	all, err := s.allUsers(ctx)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := seatsJSON{Month: m.Key, From: m.Start.UTC(), To: m.End.UTC(), Prices: map[store.SeatType]string{}, Items: []seatJSON{},
		Timezone: s.loc.String()}
	for st, p := range s.seatPrices {
		out.Prices[st] = p.StringFixed(2)
	}
	for _, u := range all {
		a := byUser[u.ID]
		if a == nil {
			if u.SeatType == nil {
				continue
			}
			a = &acc{}
		}
		item := seatJSON{UserID: u.ID, Name: u.Name, Email: u.Email, PlanListUSD: a.plan.StringFixed(6),
			BedrockUSD: a.bedrock.StringFixed(6), BedrockEquivalentUSD: a.equivalent.StringFixed(6),
			Requests: a.requests, Fallbacks: a.fallbacks}
		if u.SeatType != nil {
			st, p := string(*u.SeatType), s.seatPrices[*u.SeatType].StringFixed(2)
			item.SeatType, item.SeatPriceUSD = &st, &p
		}
		rec := Recommend(u.SeatType, a.plan, a.bedrock, a.fallbacks, s.seatPrices)
		item.Recommendation, item.Reason = rec.Action, rec.Reason
		if rec.Seat != "" {
			seat := string(rec.Seat)
			item.RecommendedSeat = &seat
		}
		out.Items = append(out.Items, item)
	}
	writeJSON(w, http.StatusOK, out)
}

// bedrockRates are the Bedrock rates of model at t without a region (the
// in-region price; the rate card's Bedrock default when the model has
// none).
func (s *Server) bedrockRates(ctx context.Context, model string, t time.Time) (store.PriceRates, error) {
	p, _, err := s.st.Prices().PriceAt(ctx, store.PriceQuery{Provider: store.ProviderBedrock, Model: model, At: t})
	if errors.Is(err, store.ErrNotFound) {
		return pricing.Fallback(), nil
	}
	if err != nil {
		return store.PriceRates{}, err
	}
	return p.PriceRates, nil
}

// allUsers returns every user that is not deleted.
func (s *Server) allUsers(ctx context.Context) ([]store.User, error) {
	var out []store.User
	cursor := ""
	for {
		us, next, err := s.st.Users().List(ctx, store.UserListOptions{Limit: store.MaxPageSize, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		out = append(out, us...)
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// Recommendation is the outcome of Recommend.
type Recommendation struct {
	// Action is keep, upgrade, downgrade, switch or set_seat.
	Action string
	// Seat is the recommended seat ("" for keep and set_seat).
	Seat store.SeatType
	// Reason is the rule that fired, in words.
	Reason string
}

// subscriptionTiers are the subscription seats, cheapest first.
func subscriptionTiers() []store.SeatType {
	return []store.SeatType{store.SeatPro, store.SeatMax5x, store.SeatMax20x}
}

// Recommend applies the seat rule (docs/dashboard.md, "Seat economics") to
// one developer's month: their seat, the Plan list-price equivalent of
// their Plan traffic (planList), their Bedrock spend and their fallbacks.
//
//  1. No seat recorded: set_seat.
//  2. API seat: switch to the most expensive subscription whose price is
//     at most planList (the month's API bill); keep when none is.
//  3. Subscription seat that fell back to Bedrock (fallbacks > 0) and
//     spent more there than the price step to the next tier: upgrade to it.
//  4. Subscription seat whose planList is below the price of the next
//     cheaper tier (for Pro: below Pro's price): downgrade to that tier
//     (for Pro: switch to api).
//  5. Otherwise keep.
func Recommend(seat *store.SeatType, planList, bedrock decimal.Decimal, fallbacks int64, prices map[store.SeatType]decimal.Decimal) Recommendation {
	tiers := subscriptionTiers()
	switch {
	case seat == nil:
		return Recommendation{Action: "set_seat", Reason: "no seat type recorded for this developer"}
	case *seat == store.SeatAPI:
		var best store.SeatType
		for _, t := range tiers {
			if prices[t].IsPositive() && prices[t].LessThanOrEqual(planList) {
				best = t
			}
		}
		if best != "" {
			return Recommendation{Action: "switch", Seat: best, Reason: "the month's API-priced traffic ($" + planList.StringFixed(2) +
				") costs at least the " + string(best) + " seat ($" + prices[best].StringFixed(2) + ")"}
		}
		return Recommendation{Action: "keep", Reason: "the month's API-priced traffic costs less than any subscription"}
	}
	i := 0
	for i < len(tiers) && tiers[i] != *seat {
		i++
	}
	if i+1 < len(tiers) && fallbacks > 0 {
		next := tiers[i+1]
		if step := prices[next].Sub(prices[*seat]); bedrock.GreaterThan(step) {
			return Recommendation{Action: "upgrade", Seat: next, Reason: "Plan limits sent traffic to Bedrock ($" + bedrock.StringFixed(2) +
				"), more than the step to " + string(next) + " ($" + step.StringFixed(2) + ")"}
		}
	}
	if i == 0 {
		if planList.LessThan(prices[store.SeatPro]) {
			return Recommendation{Action: "switch", Seat: store.SeatAPI, Reason: "the month's Plan traffic at API prices ($" +
				planList.StringFixed(2) + ") costs less than the Pro seat"}
		}
	} else if prev := tiers[i-1]; planList.LessThan(prices[prev]) {
		return Recommendation{Action: "downgrade", Seat: prev, Reason: "the month's Plan traffic at API prices ($" + planList.StringFixed(2) +
			") is below the price of " + string(prev) + " ($" + prices[prev].StringFixed(2) + ")"}
	}
	return Recommendation{Action: "keep", Reason: "the seat fits the month's traffic"}
}
